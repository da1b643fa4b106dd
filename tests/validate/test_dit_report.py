"""validate/reports/dit/make_report.py: errors computed right, the sparse efficiency fit recovers a known value."""
import importlib.util
from pathlib import Path

import pandas as pd
import pytest

import hardware

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("dit_make_report", ROOT / "validate/reports/dit/make_report.py")
make_report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_report)
HW = hardware.load("h200-sxm-calibrated")


def block_row(**kw):
    base = dict(kind="block", block="flux-double", model="flux.1-dev", engine="torch-compile", dtype="bf16",
                split="heldout", height=1024, width=1024, frames=1, image_tokens=4096, text_tokens=512, tokens=4608,
                d_model=3072, heads=24, head_dim=128, d_ff=12288, density=1.0, status="ok", device_name="test")
    return {**base, **kw}


def attn_row(block, density=1.0):
    return dict(kind="attention", block=block, model="wan2.1-t2v-14b", engine="torch-compile", dtype="bf16",
                split="heldout", height=0, width=0, frames=0, image_tokens=0, text_tokens=0, tokens=32768,
                d_model=5120, heads=40, head_dim=128, d_ff=0, density=density, status="ok", device_name="test")


def test_report_errors_and_efficiency_fit(tmp_path):
    rows = []
    for block, engine, factor in (("flux-double", "torch-compile", 1.1), ("flux-single", "torch-eager", 1.1),
                                  ("wan", "torch-compile", 1.1)):
        r = block_row(block=block, engine=engine)
        if block == "wan":
            r.update(model="wan2.1-t2v-14b", image_tokens=32760, text_tokens=512, tokens=32760, d_model=5120,
                     heads=40, d_ff=13824)
        r["measured_s"] = factor * make_report.predict_block(pd.Series(r), HW)
        rows.append(r)
    true_efficiency = 0.8
    for block, density in (("sdpa", 1.0), ("reorder", 1.0), ("flex_sparse", 0.2), ("flex_sparse", 0.5),
                           ("flex_sparse", 1.0)):
        r = attn_row(block, density)
        r["measured_s"] = make_report.predict_attention(pd.Series(r), HW, true_efficiency if block == "flex_sparse" else 1.0)
        rows.append(r)
    pd.DataFrame(rows).to_csv(tmp_path / "dit.csv", index=False)
    assert make_report.main(["--data", str(tmp_path)]) == 0
    blocks, attn, efficiency = make_report.build(pd.read_csv(tmp_path / "dit.csv"), HW)
    assert make_report.summarize(blocks)["median_ape"] == pytest.approx(0.1 / 1.1)
    assert efficiency == pytest.approx(true_efficiency, rel=1e-3)
    sparse = attn[attn["block"] == "flex_sparse"]
    assert (sparse["speedup_predicted"] / sparse["speedup_measured"]).tolist() == pytest.approx([1.0] * 3, rel=1e-3)
    assert (tmp_path / "report.md").read_text().count("flex_sparse") == 3


def test_missing_data_is_a_one_line_error(tmp_path, capsys):
    assert make_report.main(["--data", str(tmp_path / "nothing")]) == 2
    assert "--data:" in capsys.readouterr().err


def test_kernel_profiler_smoke_run_writes_every_kernel_once_and_resumes(tmp_path):
    """profile_dit.py --quick (CPU ops in place of kernels): one row per op name and case, the rows of a
    case summing to its block time, and a rerun that adds nothing."""
    import subprocess
    import sys

    cmd = [sys.executable, str(ROOT / "validate/reports/dit/profile_dit.py"), "--out", str(tmp_path), "--quick"]
    assert subprocess.run(cmd, capture_output=True, cwd=ROOT).returncode == 0
    frame = pd.read_csv(tmp_path / "kernels.csv")
    assert frame["case_id"].nunique() == 2 and not frame.duplicated(["case_id", "kernel"]).any()
    for _, rows in frame.groupby("case_id"):
        assert rows["device_us_per_block"].sum() == pytest.approx(rows["block_us"].iloc[0], rel=1e-4)
    assert subprocess.run(cmd, capture_output=True, cwd=ROOT).returncode == 0
    assert len(pd.read_csv(tmp_path / "kernels.csv")) == len(frame)
