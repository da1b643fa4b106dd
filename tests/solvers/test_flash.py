"""LLM in a flash: the paper's OPT-6.7B accounting, windowing, bundling, the solver and its errors."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hardware
import workloads
from solvers import flash
from solvers.flash import FlashError, NeuronActivity


@pytest.fixture(scope="module")
def opt67():
    return workloads.load("opt-6.7b")


@pytest.fixture(scope="module")
def m1():
    return hardware.load("m1-max")


def test_dram_parts_match_the_papers_opt_6_7b_shares(opt67):
    """Paper section 4.1: attention 32.3%, FFN 64.62%, embeddings 3%, predictor 1.25% of the model."""
    parts = flash.dram_parts(opt67, 32, predictor_rank=128)
    share = {k: v / parts["total"] for k, v in parts.items()}
    assert share["attention"] == pytest.approx(0.323, abs=0.005)
    assert share["ffn"] == pytest.approx(0.6462, abs=0.005)
    assert share["embeddings"] == pytest.approx(0.03, abs=0.005)
    assert share["predictor"] == pytest.approx(0.0125, abs=0.001)


def test_window_statistics_match_the_paper():
    """Paper: with a = 10% and k = 5, 24% of the FFN stays in DRAM and 2.4% is loaded per token."""
    act = NeuronActivity(0.10, 0.7)
    assert flash.resident_fraction(act, 5) == pytest.approx(0.24, abs=0.005)
    assert flash.new_fraction(act, 5) == pytest.approx(0.024, rel=0.10)
    assert flash.new_fraction(act, 0) == 0.10 and flash.resident_fraction(act, 0) == pytest.approx(0.10)


@settings(max_examples=60, deadline=None)
@given(a=st.floats(0.01, 0.5), extra=st.floats(0, 1), k=st.integers(0, 40))
def test_window_trades_dram_for_loads(a, extra, k):
    act = NeuronActivity(a, a + extra * (1 - a))
    assert flash.new_fraction(act, k + 1) <= flash.new_fraction(act, k) * (1 + 1e-12)
    assert flash.resident_fraction(act, k + 1) >= flash.resident_fraction(act, k) * (1 - 1e-12)
    # a neuron loaded now is active now: loads never exceed the active share
    assert flash.new_fraction(act, k) <= a * (1 + 1e-12)


def test_independent_tokens():
    act = NeuronActivity(0.2, 0.2)
    assert flash.new_fraction(act, 3) == pytest.approx(0.2 * 0.8 ** 3)
    assert flash.resident_fraction(act, 3) == pytest.approx(1 - 0.8 ** 4)


def test_bundling_reads_bigger_chunks_and_is_faster(opt67, m1):
    bundled = flash.flash_token_latency(opt67, m1, 5, w_bits=32, bundling=True)
    split = flash.flash_token_latency(opt67, m1, 5, w_bits=32, bundling=False)
    assert bundled["new_neurons"] == split["new_neurons"]
    assert bundled["io_s"] < split["io_s"]


def test_token_latency_parts(opt67, m1):
    out = flash.flash_token_latency(opt67, m1, np.arange(0, 9), w_bits=32)
    assert np.all(np.diff(out["io_s"]) <= 0) and np.all(np.diff(out["dram_bytes"]) >= 0)
    np.testing.assert_allclose(out["latency_s"], out["io_s"] + out["memory_s"] + out["compute_s"])
    pinned = flash.flash_token_latency(opt67, m1, 0, static_fraction=1.0, w_bits=32)
    assert pinned["io_s"] == 0 and pinned["memory_s"] == 0


def test_plan_fits_the_budget_and_beats_naive(opt67, m1):
    total = flash.dram_parts(opt67, 32, 128)["total"]
    plan = flash.plan_flash(opt67, m1, 0.52 * total, w_bits=32)
    assert plan.dram_bytes <= 0.52 * total
    assert plan.speedup > 1 and plan.window >= 1
    # the plan is the best point of the grid it searched
    grid = flash.flash_token_latency(opt67, m1, np.arange(65)[:, None], np.linspace(0, 1, 201)[None, :], w_bits=32)
    fits = grid["dram_bytes"] <= 0.52 * total
    assert plan.latency_s == pytest.approx(np.min(np.where(fits, grid["latency_s"], np.inf)))
    frame = plan.to_frame()
    assert {"window", "static_fraction", "io_s", "memory_s", "compute_s", "latency_s", "speedup"} <= set(frame)


@settings(max_examples=10, deadline=None)
@given(low=st.floats(0.45, 0.8), more=st.floats(1.0, 1.5))
def test_more_dram_never_slows_down(low, more):
    model, hw = workloads.load("opt-6.7b"), hardware.load("m1-max")
    total = flash.dram_parts(model, 16, 128)["total"]
    a = flash.plan_flash(model, hw, low * total, max_window=16, static_steps=51)
    b = flash.plan_flash(model, hw, min(low * more, 1.0) * total, max_window=16, static_steps=51)
    assert b.latency_s <= a.latency_s * (1 + 1e-12)


def test_gpu_device_pays_the_host_link(opt67):
    hw = hardware.load("rtx-4090")
    gpu = flash.flash_token_latency(opt67, hw, 5, device="gpu")
    cpu = flash.flash_token_latency(opt67, hw, 5, device="cpu")
    assert gpu["io_s"] > cpu["io_s"] and gpu["compute_s"] < cpu["compute_s"]


def test_budget_below_the_resident_minimum(opt67, m1):
    with pytest.raises(FlashError, match=r"below the resident minimum of .* GB for opt-6.7b \(attention .* missing"):
        flash.plan_flash(opt67, m1, 2e9)


def test_model_larger_than_flash(opt67, m1):
    small = dataclasses.replace(m1, flash_capacity_bytes=10e9)
    with pytest.raises(FlashError, match=r"flash: opt-6.7b needs 13.\d GB, m1-max has 10.0 GB; missing 3.\d GB"):
        flash.plan_flash(opt67, small, 8e9)


@pytest.mark.parametrize("call, match", [
    (lambda m, hw: NeuronActivity(1.5), "active_fraction: 1.5"),
    (lambda m, hw: NeuronActivity(0.2, 0.1), "persistence: 0.1"),
    (lambda m, hw: flash.flash_token_latency(m, hw, -1), "window: -1"),
    (lambda m, hw: flash.flash_token_latency(m, hw, 1, static_fraction=2.0), "static_fraction: 2.0"),
    (lambda m, hw: flash.flash_token_latency(m, hw, 1, device="npu"), "device: 'npu'"),
    (lambda m, hw: flash.flash_token_latency(m, hw, 1, w_bits=0), "w_bits: 0"),
    (lambda m, hw: flash.plan_flash(m, hw, float("nan")), "dram_budget_bytes: nan"),
])
def test_bad_input_errors_name_the_field(opt67, m1, call, match):
    with pytest.raises(FlashError, match=match):
        call(opt67, m1)
