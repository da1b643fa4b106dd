"""The validation suite end to end on the CPU: measure (small sizes), calibrate, report; resume;
failures recorded; `perfmodel validate predict` on cases measured elsewhere."""
import csv

import numpy as np
import pandas as pd
import pytest

from app.cli import main
from validate import runner
from validate.cases import PARAM_COLUMNS, case_id, split, suite


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("validate")
    assert main(["validate", "all", "--quick", "--out", str(out)]) == 0
    return out


def test_end_to_end_writes_a_finite_report(quick_run):
    for name in ("measurements.csv", "local-cpu-calibrated.yaml", "report.md", "comparison.csv", "errors.csv",
                 "predicted_vs_measured.png", "roofline.png"):
        assert (quick_run / name).exists(), name
    cmp = pd.read_csv(quick_run / "comparison.csv")
    assert len(cmp) > 20
    for column in ("measured_s", "datasheet_s", "calibrated_s"):
        assert np.all(np.isfinite(cmp[column])) and np.all(cmp[column] > 0)
    errors = pd.read_csv(quick_run / "errors.csv")
    assert np.all(np.isfinite(errors["calibrated_median_ape"]))
    assert "median APE" in (quick_run / "report.md").read_text()


def test_rerun_resumes_without_remeasuring(quick_run):
    before = (quick_run / "measurements.csv").read_text()
    assert main(["validate", "run", "--quick", "--out", str(quick_run)]) == 0
    assert (quick_run / "measurements.csv").read_text() == before


def test_calibrated_spec_is_accepted_by_predict(quick_run, capsys):
    assert main(["predict", "--hardware", str(quick_run / "local-cpu-calibrated.yaml"), "--model", "qwen3-0.6b",
                 "--json"]) == 0


def test_failed_case_is_recorded_and_the_run_goes_on(tmp_path):
    cases = [dict(kind="elementwise", op="add", elements=1024, dtype="fp32"),
             dict(kind="elementwise", op="no-such-op", elements=1024, dtype="fp64"),
             dict(kind="elementwise", op="add", elements=4096, dtype="fp32")]
    path = runner.run(cases, tmp_path / "m.csv", progress=False)
    rows = list(csv.DictReader(path.open()))
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert "KeyError" in rows[1]["error"] and float(rows[0]["measured_s"]) > 0


def test_old_files_are_migrated_not_lost(tmp_path):
    path = tmp_path / "m.csv"
    old_columns = [c for c in runner.RECORD_COLUMNS if c != "kernels"]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=old_columns)
        w.writeheader()
        w.writerow({"case_id": "x", "kind": "elementwise", "status": "ok", "measured_s": "1e-5"})
    runner.migrate(path)
    rows = list(csv.DictReader(path.open()))
    assert tuple(rows[0].keys()) == runner.RECORD_COLUMNS and rows[0]["case_id"] == "x"


def test_splits_are_disjoint_and_stable():
    cases = suite(cuda=True)
    ids = [case_id(c) for c in cases]
    assert len(set(ids)) == len(ids)
    parts = {split(c) for c in cases}
    assert parts == {"calibration", "evaluation"}
    evaluation = sum(split(c) == "evaluation" for c in cases) / len(cases)
    assert 0.2 < evaluation < 0.45


def test_predict_cases_from_elsewhere(tmp_path, capsys):
    path = tmp_path / "cases.csv"
    pd.DataFrame([
        dict(kind="matmul", m=1, n=4096, k=4096, dtype="bf16", measured_s=3.5e-5),
        dict(kind="attention", phase="decode", batch=8, heads=32, kv_heads=8, q_len=1, kv_len=8192, head_dim=128,
             dtype="bf16", measured_s=2.5e-4),
        dict(kind="model_step", model="llama-3-8b", layers=32, phase="decode", batch=1, q_len=1, kv_len=512,
             dtype="bf16", measured_s=0.03),
    ]).to_csv(path, index=False)
    out = tmp_path / "pred.csv"
    assert main(["validate", "predict", str(path), "--hardware", "h200-sxm-calibrated", "-o", str(out)]) == 0
    pred = pd.read_csv(out)
    assert np.all(pred["predicted_s"] > 0) and "ratio" in pred.columns
    assert set(PARAM_COLUMNS[:5]) <= set(pred.columns) | set(PARAM_COLUMNS)


def test_predict_cases_bad_input(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    pd.DataFrame([dict(kind="matmul", m=-1, n=4, k=4, dtype="bf16")]).to_csv(path, index=False)
    assert main(["validate", "predict", str(path), "-o", str(tmp_path / "o.csv")]) == 2
    assert "m = -1" in capsys.readouterr().err
    pd.DataFrame([dict(kind="model_step", model="llama-3-8b", layers=2, phase="warmup", batch=1, q_len=1,
                       kv_len=8, dtype="bf16")]).to_csv(path, index=False)
    assert main(["validate", "predict", str(path), "-o", str(tmp_path / "o.csv")]) == 2
    assert "row 1: model_step phase = 'warmup' is not one of prefill, decode" in capsys.readouterr().err
    pd.DataFrame([dict(kind="conv2d")]).to_csv(path, index=False)
    assert main(["validate", "predict", str(path), "-o", str(tmp_path / "o.csv")]) == 2
    assert "row 1: case kind = 'conv2d' is not one of" in capsys.readouterr().err


def test_attention_value_heads_blank_or_their_own_width(tmp_path, capsys):
    """v_head_dim may be left blank (value heads as wide as head_dim) or give the value heads'
    width, which prices PV and the values' bytes at that width; a bad one is named."""
    path = tmp_path / "cases.csv"
    row = dict(kind="attention", phase="prefill", batch=1, heads=16, kv_heads=1, q_len=4096, kv_len=4096,
               head_dim=192, dtype="bf16", timing="graph")
    pd.DataFrame([row, {**row, "v_head_dim": 128}]).to_csv(path, index=False)
    out = tmp_path / "pred.csv"
    assert main(["validate", "predict", str(path), "--hardware", "h200-sxm", "-o", str(out)]) == 0
    alike, narrow = pd.read_csv(out)["predicted_s"]
    assert narrow < alike  # QK^T at 192 either way, PV at 128 instead of 192
    pd.DataFrame([{**row, "v_head_dim": 0.5}]).to_csv(path, index=False)
    assert main(["validate", "predict", str(path), "-o", str(out)]) == 2
    assert "row 1: attention v_head_dim = 0.5 must be a whole number from 1 to 4,096 (or blank)" in capsys.readouterr().err


def test_resume_sets_done_cases_by_status_and_recorded_ones_by_id(tmp_path):
    """done_ids skips what measured ok (failed cases are retried unless asked); recorded_ids, for
    tables without a status column (kernel profiles), skips every case id written; a missing file
    is an empty set."""
    from validate.runner import append_records, done_ids, recorded_ids

    path = tmp_path / "cases.csv"
    assert done_ids(path) == recorded_ids(path) == set()
    append_records(path, [{"case_id": "a", "status": "ok"}, {"case_id": "b", "status": "failed"},
                          {"case_id": "a", "status": "ok"}], ("case_id", "status"))
    assert done_ids(path) == {"a"} and done_ids(path, failed=True) == {"a", "b"}
    kernels = tmp_path / "kernels.csv"
    append_records(kernels, [{"case_id": "x", "kernel": "k1"}, {"case_id": "x", "kernel": "k2"},
                             {"case_id": "y", "kernel": "k1"}], ("case_id", "kernel"))
    assert recorded_ids(kernels) == {"x", "y"}
