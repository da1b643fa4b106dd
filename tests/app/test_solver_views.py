"""The solver pages' helpers, and that what the pages export reproduces their numbers from the CLI."""
from __future__ import annotations

import json
import shlex

import numpy as np
import pandas as pd
import pytest

import hardware
import workloads
from app import cli, solver_views, views


def run_cli(line: str, capsys, tmp_path) -> str:
    argv = shlex.split(line)
    assert argv[0] == "perfmodel"
    assert cli.main(argv[1:]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("candidates, latency_s", [(None, None), ([2, 3, 4, 8], None), (None, 1.2e-3)])
def test_bits_cli_line_reproduces_the_page(candidates, latency_s, capsys, tmp_path):
    model, hw = workloads.load("llama-3.2-1b"), hardware.load("h200-sxm")
    frame = solver_views.demo_sensitivities(model, 0)
    out = solver_views.allocate(frame, model, hw, 4.0, candidates, latency_s)
    path = tmp_path / "sens.csv"
    frame.to_csv(path, index=False)
    line = solver_views.bits_cli(str(path), 4.0, "h200-sxm", "llama-3.2-1b", candidates, latency_s) + " --json"
    printed = json.loads(run_cli(line, capsys, tmp_path))
    for key in ("avg_bits", "objective", "bytes", "latency_s"):
        assert printed[key] == pytest.approx(out["result"][key], rel=1e-6), key
    if latency_s:
        assert printed["latency_s"] <= latency_s * (1 + 1e-6)


def test_allocation_without_layer_shapes_has_bytes_but_no_latency():
    frame = pd.DataFrame({"name": ["a", "b", "c"], "params": [1e3, 1e3, 2e3], "coef": [1.0, 4.0, 0.5]})
    out = solver_views.allocate(frame, workloads.load("llama-3-8b"), hardware.load("h200-sxm"), 4.0)
    assert np.isnan(out["result"]["latency_s"]) and np.isnan(out["uniform"]["latency_s"])
    assert out["result"]["bytes"] > 0
    widths = out["table"].set_index("name")["width"]
    # equal-loss structure (BAQ): widths differ by log2 of the coefficient ratios / theta
    assert widths["b"] - widths["a"] == pytest.approx(np.log2(4.0) / 2.0)


def test_read_sensitivities_names_what_is_missing():
    with pytest.raises(ValueError, match=r"missing column\(s\) \['coef'\]"):
        solver_views.read_sensitivities("params\n1\n", "s.csv")


def test_compare_sweep_spec_gives_the_same_front_through_perfmodel_sweep():
    from planning import sweep

    grid = {"batch": [1, 8, 64], "prompt": 1024, "gen": 128, "w_bits": [16, 4], "kv_bits": [16], "tp": [1],
            "a_bits": 16}
    devices = ["h200-sxm", "l4"]
    doc = views.sweep_document(devices, ["llama-3-8b"], grid, "tpot_s")
    front = sweep.run(sweep.SweepSpec.from_dict(doc)).front
    frame, _ = views.compare([(workloads.load("llama-3-8b"), hardware.load(h)) for h in devices], grid)
    fits = frame[frame["fits"]]
    ours = fits[views.pareto_mask(fits["tpot_s"], fits["throughput_tok_s"])]
    key = ["hardware", "batch", "w_bits"]
    assert sorted(map(tuple, ours[key].to_numpy().tolist())) == sorted(map(tuple, front[key].to_numpy().tolist()))


def test_kv_helpers_agree_with_each_other():
    model, hw = workloads.load("llama-3.1-8b"), hardware.load("h200-sxm")
    cap = solver_views.kv_capacity(model, hw, 32768, 8)
    users = int(cap.iloc[0]["value"])
    table = solver_views.serving_table(model, hw, [32768, 10**9], [1])   # the too-long context is left out
    assert list(table["context"]) == [32768]
    assert int(table["concurrency"].iloc[0]) == users
    split = solver_views.kv_split(solver_views.demo_importance(4), 4096.0, lower=64.0, upper=4096.0)
    assert split["budget"].sum() == pytest.approx(4096.0)
    assert list(split["budget"]) == sorted(split["budget"], reverse=True)   # more important layers keep more


def test_offload_frames_are_consistent_with_the_policy():
    out = solver_views.offload(workloads.load("opt-6.7b"), hardware.load("t4"), 512, 32)
    row = out["summary"].iloc[0]
    placement = out["placement"]
    assert np.allclose(placement.groupby("data")["fraction"].sum(), 1.0)
    weights = placement[placement["data"] == "weights"].set_index("tier")["fraction"]
    assert weights["gpu"] == pytest.approx(row["wg"])
    assert out["candidates"]["throughput_tok_s"].max() == pytest.approx(row["throughput_tok_s"])
    assert (out["tiers"]["peak_GB"] <= out["tiers"]["capacity_GB"] * (1 + 1e-9)).all()


def test_tts_uploaded_curves_and_bad_ones():
    csv = ("model,gen_len,problem,p\n"
           "qwen3-0.6b,1024,0,0.2\nqwen3-0.6b,1024,1,0.4\nqwen3-0.6b,4096,0,0.5\nqwen3-0.6b,4096,1,0.6\n")
    out = solver_views.tts_plan(csv, 1e15, "efflops", None, "pass@k", [1, 4])
    assert out["best"]["model"] == "qwen3-0.6b" and 0 < out["best"]["accuracy"] <= 1
    with pytest.raises(ValueError, match=r"p: 1.6 in row 3 .* is not a probability"):
        solver_views.tts_plan(csv.replace("0.6\n", "1.6\n"), 1e15, "efflops", None, "pass@k", [1])
