"""validate/reports/gemm_rows: the held-out GEMM measurement's CPU smoke run and its scoring."""
import importlib.util
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parents[2] / "validate" / "reports" / "gemm_rows"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"gemm_rows_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_shapes_are_held_out_from_the_suite():
    from validate.cases import suite

    measure = _load("measure_rows")
    suite_shapes = {(c["n"], c["k"]) for c in suite(quick=False, cuda=True) if c["kind"].startswith("matmul")}
    assert not suite_shapes & set(measure.SHAPES)


def test_quick_run_is_scored(tmp_path):
    measure, report = _load("measure_rows"), _load("make_report")
    assert measure.main([str(tmp_path), "--quick"]) == 0
    assert measure.main([str(tmp_path), "--quick"]) == 0               # resumes: nothing re-measured
    frame = pd.read_csv(tmp_path / "measurements.csv")
    assert len(frame) == 4 and set(frame["status"]) == {"ok"}
    assert report.main([str(tmp_path / "measurements.csv")]) == 0
    scored = pd.read_csv(tmp_path / "scored.csv")
    assert (scored["model_s"] > 0).all() and (scored["floor_s"] >= scored["model_s"] * (1 - 1e-12)).all()
    assert "| all rows | all | 4 |" in (tmp_path / "report.md").read_text()
