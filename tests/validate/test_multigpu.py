"""validate.multigpu on CPU with gloo and 2 processes, the link fit, and the report generator."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import workloads
from perfmodel import collectives as C
from tests.report_scripts import load_report_script
from validate import calibrate_links, multigpu

ROOT = Path(__file__).resolve().parents[2]
LLAMA = str(workloads.CATALOG_DIR / "configs" / "llama-3-8b.json")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick gloo run of the whole suite (2 processes), shared by the tests below."""
    out = tmp_path_factory.mktemp("multigpu")
    saved = {k: os.environ.get(k) for k in multigpu.NO_MULTICAST_ENV}
    try:
        assert multigpu.main(["--backend", "gloo", "--quick", "--world-size", "2", "--model", LLAMA,
                              "--out", str(out)]) == 0
        env_after = {k: os.environ.get(k) for k in multigpu.NO_MULTICAST_ENV}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return out, env_after


def read(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / name)


def test_collectives_run_and_sum_correctly(quick_run):
    out, _ = quick_run
    frame = read(out, "collectives.csv")
    assert sorted(frame["collective"].unique()) == sorted(multigpu.COLLECTIVES)
    assert len(frame) == 4 * 3  # four collectives x three quick sizes on 2 processes
    assert frame["correct"].astype(str).eq("True").all()
    assert (frame["time_s"] > 0).all() and (frame["time_min_s"] <= frame["time_max_s"]).all()
    assert (frame["size_bytes"] % (2 * 4) == 0).all()  # fp32 elements split evenly over 2 ranks
    np.testing.assert_allclose(frame["bus_bytes_per_s"],
                               [C.measured_bus_bytes_per_s(c, s, 2, t) for c, s, t in
                                zip(frame["collective"], frame["size_bytes"], frame["time_s"])])


def test_tp_forward_matches_unsharded_forward(quick_run):
    out, _ = quick_run
    checks = read(out, "tp_checks.csv")
    assert sorted(checks["phase"]) == ["decode", "prefill"]
    assert (checks["tp"] == 2).all()
    assert (checks["max_rel_err"] < 1e-5).all() and checks["ok"].astype(str).eq("True").all()


def test_tp_steps_written_for_each_degree_and_variant(quick_run):
    out, _ = quick_run
    steps = read(out, "tp_steps.csv")
    assert set(steps["status"]) == {"ok"} and (steps["time_s"] > 0).all()
    assert sorted(set(zip(steps["tp"], steps["comm"]))) == [(1, 1), (2, 0), (2, 1)]
    comm = steps[(steps["tp"] == 2) & (steps["comm"] == 1)]
    assert (comm["allreduce_bytes"] == comm["batch"] * comm["new_tokens"] * comm["d_model"] * 4).all()
    assert (comm["n_allreduce"] == 2 * comm["n_layers"]).all()


def test_multicast_stays_off(quick_run):
    out, env_after = quick_run
    assert env_after == multigpu.NO_MULTICAST_ENV
    assert json.loads((out / "meta.json").read_text())["env"] == multigpu.NO_MULTICAST_ENV


def test_report_from_the_quick_run(quick_run, tmp_path):
    out, _ = quick_run
    report = load_report_module()
    path = report.build_report(out, "h200-sxm" if (ROOT / "hardware/presets/h200-sxm.yaml").exists() else
                               str(ROOT / "hardware/presets/h100-sxm.yaml"), tmp_path)
    text = path.read_text()
    for heading in ("## Collectives", "## Sharding check", "## Tensor-parallel steps"):
        assert heading in text
    for name in ("collectives.png", "tp_steps.png", "collectives_predicted.csv", "tp_predicted.csv"):
        assert (tmp_path / name).stat().st_size > 0
    tp = pd.read_csv(tmp_path / "tp_predicted.csv")
    with_comm = tp[(tp["tp"] == 2) & (tp["comm"] == 1)]
    assert (with_comm["predicted_comm_s"] > 0).all()
    # a datasheet spec has no host time: the all-reduces add their device time to the step
    np.testing.assert_allclose(with_comm["predicted_s"],
                               with_comm["predicted_compute_s"] + with_comm["predicted_comm_s"])
    np.testing.assert_allclose(with_comm["hybrid_predicted_s"],
                               with_comm["measured_nocomm_s"] + with_comm["predicted_comm_s"])
    assert C.LinkCalibration.from_json(tmp_path / "link_calibration.json").bytes_per_s > 0


def load_report_module():
    return load_report_script("multigpu", "make_report")


def test_eager_steps_take_the_larger_of_device_and_host_time():
    import dataclasses

    import hardware
    from hardware.spec import Calibration

    report = load_report_module()
    cal = Calibration(matmul_flops_per_s={"bf16": 7e14}, memory_bytes_per_s=4e12, kernel_overhead_s=2e-6,
                      dispatch_s=6e-6, layer_overhead_s=30e-6)
    hw = dataclasses.replace(hardware.load(str(ROOT / "hardware/presets/h200-sxm.yaml")), calibration=cal)
    link = C.LinkCalibration(bytes_per_s=360e9, step_latency_s=4e-6, launch_s=5e-6, host_s=15e-6)
    row = dict(model=LLAMA, n_layers=4, d_model=4096, n_heads=32, n_kv_heads=8, head_dim=128, d_ff=14336,
               vocab_size=128256, act_bytes=2, phase="decode", batch=1, new_tokens=1, past=1024, tp=8, comm=1)
    eager, graph = (report.predict_step(pd.Series({**row, "mode": m}), hw, link) for m in ("eager", "graph"))
    comm = float(C.tp_step_comm_time_s(1, 4096, 4, 8, link))
    assert graph["predicted_comm_s"] == pytest.approx(comm) and graph["predicted_host_s"] == 0
    assert graph["predicted_s"] == pytest.approx(graph["predicted_compute_s"] + comm)
    # batch-1 decode of 4 layers at TP 8 is host-bound when every kernel is dispatched from Python
    assert eager["predicted_host_s"] > graph["predicted_s"]
    assert eager["predicted_s"] == pytest.approx(eager["predicted_host_s"])
    nocomm = report.predict_step(pd.Series({**row, "mode": "eager", "comm": 0}), hw, link)
    assert eager["predicted_host_s"] - nocomm["predicted_host_s"] == pytest.approx(8 * 15e-6)
    assert eager["predicted_comm_added_s"] == pytest.approx(8 * 15e-6)


# -- link calibration on synthetic measurements ----------------------------------------------------

def test_calibration_recovers_a_known_link_on_held_out_sizes(tmp_path):
    true = C.LinkCalibration(bytes_per_s=360e9, step_latency_s=4e-6, launch_s=6e-6,
                             efficiency={"all_gather": 0.9, "all_to_all": 0.75})
    rng = np.random.default_rng(7)
    rows = []
    for name in C.COLLECTIVES:
        for n in (2, 4, 8):
            for k in range(12, 31):
                used = (2 ** k // (2 * n)) * n * 2
                t = float(C.collective_time_s(name, used, n, true)) * np.exp(rng.normal(0, 0.02))
                rows.append(dict(collective=name, n_devices=n, nominal_bytes=2 ** k, size_bytes=used, time_s=t,
                                 host_s=1.2e-5, correct=True))
    pd.DataFrame(rows).to_csv(tmp_path / "collectives.csv", index=False)
    fit = calibrate_links.calibrate(tmp_path)
    cal, held = (set(fit.frame.loc[fit.frame.split == s, "nominal_bytes"]) for s in ("calibration", "held-out"))
    assert cal.isdisjoint(held) and min(cal) == 4096 and max(held) == 2 ** 29
    assert fit.held_out_median_error() < 0.03
    assert fit.link.bytes_per_s == pytest.approx(360e9, rel=0.03)
    assert fit.link.host_s == pytest.approx(1.2e-5)
    assert fit.summary().set_index("collective").loc["all", "datasheet_median_abs_error"] > 0.1


def test_calibration_ignores_incorrect_results(tmp_path):
    pd.DataFrame([dict(collective="all_reduce", n_devices=2, nominal_bytes=4096, size_bytes=4096, time_s=1e-5,
                       correct=False)]).to_csv(tmp_path / "collectives.csv", index=False)
    with pytest.raises(ValueError, match="no correct, positive timings"):
        calibrate_links.load_collectives(tmp_path)
    with pytest.raises(FileNotFoundError, match="collectives.csv"):
        calibrate_links.load_collectives(tmp_path / "nowhere")


# -- configuration --------------------------------------------------------------------------------

def args(**changes) -> argparse.Namespace:
    return multigpu.parse_args(["--out", "x", "--model", LLAMA, *sum(([f"--{k.replace('_', '-')}", str(v)]
                                                                        for k, v in changes.items()), [])])


def test_full_configuration_defaults():
    cfg = multigpu.config_from_args(args(), available_gpus=8)
    assert cfg.world_size == 8 and cfg.counts == tuple(range(2, 9))
    assert cfg.sizes[0] == 4096 and cfg.sizes[-1] == 2 ** 30 and len(cfg.sizes) == 19
    assert cfg.tps == (1, 2, 4, 8) and cfg.modes == ("eager", "graph")
    assert multigpu.load_spec(LLAMA, 8, tiny=False).n_layers == 8


@pytest.mark.parametrize("changes, gpus, match", [
    (dict(world_size=1, backend="gloo"), 0, "world-size: 1"),
    (dict(world_size=4), 2, "only 2 CUDA devices"),
    (dict(tp="3"), 8, "tp: 3"),
    (dict(counts="1,2"), 8, "counts"),
    (dict(min_size="4 parsecs"), 8, "min-size"),
    (dict(collectives="broadcast"), 8, "broadcast"),
    (dict(modes="graph", backend="gloo"), 0, "modes"),
])
def test_bad_configuration_names_the_option(changes, gpus, match):
    with pytest.raises(ValueError, match=match):
        multigpu.config_from_args(args(**changes), available_gpus=gpus)


def test_sizes_and_model_checks(monkeypatch):
    assert multigpu.parse_bytes("4KiB", "x") == 4096 and multigpu.parse_bytes("1GiB", "x") == 2 ** 30
    assert multigpu.size_ladder(4096, 65536) == (4096, 8192, 16384, 32768, 65536)
    with pytest.raises(ValueError, match="not a dense Llama-architecture"):
        multigpu.load_spec(str(workloads.CATALOG_DIR / "configs" / "mixtral-8x7b.json"), 2, tiny=False)
    import torch

    if torch.cuda.device_count() < 2:
        for key in multigpu.NO_MULTICAST_ENV:  # main() sets them; monkeypatch restores them afterwards
            monkeypatch.delenv(key, raising=False)
        with pytest.raises(ValueError, match="nccl needs 2 or more CUDA devices"):
            multigpu.main(["--out", "unused"])


def reference_attention(q, k, v, past):
    """Plain softmax attention with K / V repeated per query head and an explicit causal mask."""
    import torch

    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    T, S = q.shape[2], k.shape[2]
    allowed = torch.arange(S)[None, :] <= (past + torch.arange(T))[:, None]
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v


@pytest.mark.parametrize("T, past", [(1, 7), (5, 0), (3, 4)])
def test_gqa_attention_matches_reference(T, past):
    import torch

    g = torch.Generator().manual_seed(T + past)
    q = torch.randn(2, 8, T, 16, generator=g)
    k, v = (torch.randn(2, 2, past + T, 16, generator=g) for _ in range(2))
    torch.testing.assert_close(multigpu.attention(q, k, v, past), reference_attention(q, k, v, past),
                               rtol=1e-5, atol=1e-5)


def test_existing_results_are_not_mixed(tmp_path):
    (tmp_path / "collectives.csv").write_text("old\n")
    cfg = multigpu.SuiteConfig(out=str(tmp_path), run_tp=False)
    with pytest.raises(ValueError, match="already holds collectives.csv"):
        multigpu.prepare_output(cfg, overwrite=False)
    multigpu.prepare_output(cfg, overwrite=True)
    assert not (tmp_path / "collectives.csv").exists()
