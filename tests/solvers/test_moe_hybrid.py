"""MoE-Lens-style CPU-GPU hybrid bound: resources, capacity, monotonicity, errors."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hardware
import workloads
from perfmodel.tiers import MemoryTiers
from solvers.moe_hybrid import RESOURCES, MoEHybridError, moe_hybrid_bound

SC = workloads.Scenario(prompt=512, gen=256)


@pytest.fixture(scope="module")
def mixtral():
    return workloads.load("mixtral-8x7b")


@pytest.fixture(scope="module")
def h100():
    return hardware.load("h100-sxm")


def test_bound_is_the_tightest_resource(mixtral, h100):
    frame = moe_hybrid_bound(mixtral, h100, SC).to_frame()
    caps = frame[[f"{r}_tok_s" for r in RESOURCES]].min(axis=1)
    np.testing.assert_allclose(frame.throughput_tok_s, caps)
    for _, row in frame.iterrows():
        assert row[f"{row.bound}_tok_s"] == pytest.approx(row.throughput_tok_s)
    assert np.all(np.diff(frame.throughput_tok_s) >= -1e-9)      # larger batches never lower the bound


def test_capacity_sets_the_largest_batch(mixtral, h100):
    tiers = MemoryTiers.from_hardware(h100, dram_capacity_bytes=200e9)
    res = moe_hybrid_bound(mixtral, h100, SC, tiers=tiers)
    weights = 2 * mixtral.param_count()
    kv = mixtral.kv_bytes_per_token(16) * (512 + 256)
    assert res.max_batch == int((0.9 * 200e9 - weights) // kv)
    assert res.to_frame().batch.max() == res.max_batch
    assert res.best["batch"] == res.max_batch


@settings(max_examples=15, deadline=None)
@given(scale=st.floats(1.0, 10.0), which=st.sampled_from(["h2d_bytes_per_s", "dram_bytes_per_s", "cpu_flops_per_s"]))
def test_more_bandwidth_or_compute_never_lowers_the_bound(scale, which):
    model, hw = workloads.load("qwen3-30b-a3b"), hardware.load("h100-sxm")
    base = MemoryTiers.from_hardware(hw, dram_capacity_bytes=256e9)
    better = dataclasses.replace(base, **{which: getattr(base, which) * scale})
    a = moe_hybrid_bound(model, hw, SC, batch=[1, 64, 512], tiers=base).to_frame()
    b = moe_hybrid_bound(model, hw, SC, batch=[1, 64, 512], tiers=better).to_frame()
    assert np.all(b.throughput_tok_s >= a.throughput_tok_s * (1 - 1e-12))


def test_gpu_resident_weights_cut_pcie_traffic(mixtral, h100):
    none = moe_hybrid_bound(mixtral, h100, SC, batch=[16], gpu_weight_fraction=0.0).rows[0]
    half = moe_hybrid_bound(mixtral, h100, SC, batch=[16], gpu_weight_fraction=0.5).rows[0]
    assert half["pcie_s"] < none["pcie_s"] and half["gpu_s"] >= none["gpu_s"]


def test_issue16_dense_model_is_refused(h100):
    """Issue 16: moe-hybrid on a dense model ran silently; MoE-Lens' split needs experts (offload
    placement of dense models is `solve offload`)."""
    with pytest.raises(MoEHybridError, match="llama-3.1-70b is a dense model"):
        moe_hybrid_bound(workloads.load("llama-3.1-70b"), h100, SC, batch=[8])


def test_weights_that_do_not_fit_in_dram(h100):
    tiers = MemoryTiers.from_hardware(h100, dram_capacity_bytes=500e9)
    with pytest.raises(MoEHybridError, match=r"DRAM: deepseek-v3 needs .* missing"):
        moe_hybrid_bound(workloads.load("deepseek-v3"), h100, SC, tiers=tiers)


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch=[0]), "batch: "),
    (dict(batch=[10 ** 9]), "exceeds"),
    (dict(gpu_weight_fraction=1.5), "gpu_weight_fraction: 1.5"),
    (dict(memory_fraction=2.0), "memory_fraction: 2.0"),
    (dict(sc=workloads.Scenario(prompt=[1, 2])), "one scenario"),
])
def test_bad_input_errors_name_the_field(mixtral, h100, kwargs, match):
    kwargs = {"sc": SC, **kwargs}
    with pytest.raises(MoEHybridError, match=match):
        moe_hybrid_bound(mixtral, h100, **kwargs)
