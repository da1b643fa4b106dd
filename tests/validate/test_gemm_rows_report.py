"""validate/reports/gemm_rows: the held-out GEMM measurement's CPU smoke run and its scoring."""
import pandas as pd

from tests.report_scripts import load_report_script


def test_shapes_are_held_out_from_the_suite():
    from validate.cases import suite

    measure = load_report_script("gemm_rows", "measure_rows")
    suite_shapes = {(c["n"], c["k"]) for c in suite(quick=False, cuda=True) if c["kind"].startswith("matmul")}
    assert not suite_shapes & set(measure.SHAPES)
    assert not suite_shapes & set(measure.GRAPH_SHAPES)


def test_quick_run_is_scored(tmp_path):
    measure, report = load_report_script("gemm_rows", "measure_rows"), load_report_script("gemm_rows", "make_report")
    assert measure.main([str(tmp_path), "--quick"]) == 0
    assert measure.main([str(tmp_path), "--quick"]) == 0               # resumes: nothing re-measured
    frame = pd.read_csv(tmp_path / "measurements.csv")
    assert len(frame) == 4 and set(frame["status"]) == {"ok"}
    assert report.main([str(tmp_path / "measurements.csv")]) == 0
    scored = pd.read_csv(tmp_path / "scored.csv")
    assert (scored["model_s"] > 0).all() and (scored["floor_s"] >= scored["model_s"] * (1 - 1e-12)).all()
    assert "| all rows | all | 4 |" in (tmp_path / "report.md").read_text()


def test_graph_timed_run_is_scored_apart(tmp_path):
    """`--timing graph` cases carry timing=graph (device time, CUDA-graph replays on a GPU), resume
    beside the eager ones in one CSV, and are scored in their own section with the device model (no
    host dispatch; the rejected floor is an eager-only candidate)."""
    measure, report = load_report_script("gemm_rows", "measure_rows"), load_report_script("gemm_rows", "make_report")
    assert all(c["timing"] == "graph" for c in measure.cases(quick=True, timing="graph"))
    assert measure.main([str(tmp_path), "--quick"]) == 0
    assert measure.main([str(tmp_path), "--quick", "--timing", "graph"]) == 0
    assert len(pd.read_csv(tmp_path / "measurements.csv")) == 8
    assert report.main([str(tmp_path / "measurements.csv")]) == 0
    scored = pd.read_csv(tmp_path / "scored.csv")
    graph = scored[scored["timing"] == "graph"]
    assert len(graph) == 4 and graph["floor_s"].isna().all() and (graph["model_s"] > 0).all()
    text = (tmp_path / "report.md").read_text()
    assert "| all rows | all | 4 |" in text and "## Graph-timed (device time)" in text
