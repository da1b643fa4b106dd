"""validate/reports/attention: the measurement script's CPU smoke mode and the report's models."""
import pandas as pd
import pytest

import hardware
from tests.report_scripts import load_report_script


@pytest.fixture(scope="module")
def report():
    return load_report_script("attention", "make_report")


def test_quick_run_and_report(tmp_path, report):
    measure = load_report_script("attention", "measure_attention")
    assert measure.main([str(tmp_path), "--quick"]) == 0
    frame = pd.read_csv(tmp_path / "attention.csv")
    assert {"ceiling", "floor", "dense", "sparse"} <= set(frame["kind"])
    assert set(frame.loc[frame.kind == "sparse", "part"]) == {"total", "score", "topk", "gather", "attention"}
    assert (frame["time_s"] > 0).all()
    assert report.main([str(tmp_path)]) == 0
    out = pd.read_csv(tmp_path / "attention_predicted.csv")
    assert len(out) == (frame["kind"].isin(["dense", "sparse"])).sum()
    assert out[["predicted_s", "predicted_spec_s", "predicted_datasheet_s"]].gt(0).all().all()
    assert "QUICK smoke run" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "attention.png").stat().st_size > 5_000


def _frame(rows):
    base = dict(heads=32, kv_heads=8, head_dim=128, budget=0, block=0, bytes=0, batch=0, kv_len=0, repeats=10,
                device="test")
    return pd.DataFrame([{**base, **r} for r in rows])


CEILINGS = [dict(kind="ceiling", part="copy", bytes=4e9, time_s=1e-3),             # 4 TB/s
            dict(kind="ceiling", part="gather", bytes=2e9, time_s=1e-3),           # 2 TB/s
            dict(kind="floor", part="dense", time_s=20e-6), dict(kind="floor", part="score", time_s=15e-6),
            dict(kind="floor", part="topk", time_s=30e-6), dict(kind="floor", part="gather", time_s=12e-6),
            dict(kind="floor", part="attention", time_s=20e-6)]


def test_run_calibrated_model_is_bytes_over_measured_bandwidth_above_the_floor(report):
    kv = 2 * 64 * 8 * 131072 * 128 * 2  # 34.4 GB of K and V
    big = dict(kind="dense", part="total", batch=64, kv_len=131072, time_s=kv / 4e12)
    tiny = dict(kind="dense", part="total", batch=1, kv_len=1024, time_s=20e-6)
    out = report.predictions(_frame(CEILINGS + [big, tiny]), hardware.load("h200-sxm"))
    assert out["ratio_s"].iloc[0] == pytest.approx(1.0, rel=0.01)   # bandwidth-bound: (S+1)/S of the bytes
    assert out["predicted_s"].iloc[1] == pytest.approx(20e-6)         # floor-bound
    assert out["predicted_datasheet_s"].iloc[0] == pytest.approx(kv / 4.8e12, rel=0.01)


def test_gather_is_charged_read_plus_write_at_the_gather_rate(report):
    row = dict(kind="sparse", part="gather", batch=16, kv_len=65536, budget=4096, block=16, time_s=1.0)
    out = report.predictions(_frame(CEILINGS + [row]), hardware.load("h200-sxm"))
    moved = 2 * (2 * 16 * 8 * 4096 * 128 * 2)  # read and write the selected K and V
    assert out["predicted_s"].iloc[0] == pytest.approx(moved / 2e12)
    total = dict(row, part="total")
    parts = report.predictions(_frame(CEILINGS + [dict(row, part=p) for p in ("score", "topk", "gather", "attention")]
                                      + [total]), hardware.load("h200-sxm"))
    assert parts["predicted_s"].iloc[-1] == pytest.approx(parts["predicted_s"].iloc[:-1].sum())


def test_missing_ceilings_is_a_clear_error(report):
    with pytest.raises(ValueError, match="no ceiling row"):
        report.predictions(_frame([dict(kind="dense", part="total", batch=1, kv_len=1024, time_s=1e-5)]),
                           hardware.load("h200-sxm"))


def test_sparse_pipeline_with_every_block_selected_is_dense_attention():
    import torch

    measure = load_report_script("attention", "measure_attention")
    torch.manual_seed(0)
    s = measure.make_sets(2, 256, 16, torch.device("cpu"), cuda=False)[0]
    s = {k: v.float() if v is not None else v for k, v in s.items()}  # fp32: compare without bf16 rounding
    dense = measure.dense(s)
    assert dense.shape == (2, 32, 1, 128)  # 32 query heads over 8 kv heads (GQA)
    assert torch.allclose(measure.sparse_total(s, 256, 16), dense, atol=1e-5)
    # with a smaller budget it attends to the selected blocks only
    idx = measure.select(measure.score(s), 4)
    k, v = measure.gather(s, idx, 16)
    assert k.shape == (2, 8, 64, 128)
    blocks = s["k"].view(2, 8, 16, 16, 128)
    assert torch.equal(k.view(2, 8, 4, 16, 128)[0, 3, 1], blocks[0, 3, idx[0, 3, 1]])
