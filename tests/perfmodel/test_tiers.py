"""Memory tiers: transfer, flash and overlap formulas, and a step with layers streamed from the host."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hardware
import perfmodel
import workloads
from hardware.spec import Calibration
from perfmodel import memory, tiers
from perfmodel.tiers import MemoryTiers, TierError

P16 = perfmodel.Precision(16, 16, 16)
positive = st.floats(1e-6, 1e6, allow_nan=False)


@pytest.fixture(scope="module")
def h200():
    return hardware.load("h200-sxm")


@pytest.fixture(scope="module")
def llama():
    return workloads.load("llama-3-8b")


def test_transfer_time_is_latency_plus_bytes_over_bandwidth():
    assert tiers.transfer_time_s(50e9, 50e9, 1e-5, 3) == pytest.approx(1.0 + 3e-5)
    assert tiers.transfer_time_s(0.0, 50e9, 1e-5) == 0.0           # nothing to move, no request
    out = tiers.transfer_time_s(np.array([1e9, 2e9]), 1e9)
    np.testing.assert_allclose(out, [1.0, 2.0])


@pytest.mark.parametrize("kwargs, field", [
    (dict(nbytes=-1.0, bytes_per_s=1e9), "bytes"),
    (dict(nbytes=1.0, bytes_per_s=0.0), "bytes_per_s"),
    (dict(nbytes=float("nan"), bytes_per_s=1e9), "bytes"),
    (dict(nbytes=1.0, bytes_per_s=1e9, latency_s=-1e-6), "latency_s"),
])
def test_transfer_time_rejects_bad_values_naming_the_field(kwargs, field):
    with pytest.raises(TierError, match=f"^{field}:"):
        tiers.transfer_time_s(**kwargs)


def test_flash_throughput_limits():
    bw, lat = 6.9e9, 90e-6
    # large chunks reach the device bandwidth
    assert tiers.flash_throughput_bytes_per_s(1 << 30, 32, bw, lat) == pytest.approx(bw)
    # tiny chunks are latency-bound: q * c / latency
    c = 4096.0
    assert tiers.flash_throughput_bytes_per_s(c, 1, bw, lat) == pytest.approx(c / (lat + c / bw))
    assert tiers.flash_throughput_bytes_per_s(c, 8, bw, lat) == pytest.approx(8 * c / (lat + c / bw))


@settings(max_examples=60, deadline=None)
@given(chunk=st.floats(512, 1e8), q=st.floats(1, 256), grow=st.floats(1.01, 10))
def test_flash_throughput_rises_with_chunk_and_parallel_reads(chunk, q, grow):
    bw, lat = 3e9, 80e-6
    base = tiers.flash_throughput_bytes_per_s(chunk, q, bw, lat)
    assert tiers.flash_throughput_bytes_per_s(chunk * grow, q, bw, lat) >= base * (1 - 1e-12)
    assert tiers.flash_throughput_bytes_per_s(chunk, q * grow, bw, lat) >= base * (1 - 1e-12)
    assert base <= bw * (1 + 1e-12)
    t = tiers.flash_read_time_s(1e9, chunk, q, bw, lat)
    assert t == pytest.approx(1e9 / base)


def test_flash_rejects_parallel_reads_below_one():
    with pytest.raises(TierError, match="parallel_reads"):
        tiers.flash_throughput_bytes_per_s(4096, 0.5, 1e9, 1e-4)


@settings(max_examples=50, deadline=None)
@given(c=positive, t=positive)
def test_overlap_bounds(c, t):
    lo, hi = tiers.overlap_time_s(c, t, "max"), tiers.overlap_time_s(c, t, "sum")
    assert lo == max(c, t) and hi == pytest.approx(c + t) and lo <= hi


def test_overlap_rejects_unknown_mode():
    with pytest.raises(TierError, match="overlap: 'partial'"):
        tiers.overlap_time_s(1.0, 1.0, "partial")


@settings(max_examples=80, deadline=None)
@given(resident=st.integers(0, 6), streamed=st.integers(0, 6),
       tau=st.floats(0.01, 10), comp=st.floats(0.01, 10))
def test_pipeline_closed_form_matches_the_layer_recurrence(resident, streamed, tau, comp):
    taus = np.array([0.0] * resident + [tau] * streamed)
    comps = np.full(resident + streamed, comp)
    if len(taus) == 0:
        return
    recurrence = tiers.layer_pipeline_time_s(taus, comps)
    closed = tiers.pipeline_time_s(resident * comp, tau, comp, streamed)
    assert recurrence == pytest.approx(closed)
    lower = max((resident + streamed) * comp, streamed * tau)
    upper = (resident + streamed) * comp + streamed * tau
    assert lower * (1 - 1e-9) <= closed <= upper * (1 + 1e-9)


def test_serial_pipeline_is_the_sum_and_dispatch_gates_layers():
    taus, comps = np.array([0.0, 0.0, 2.0, 2.0]), np.array([1.0, 1.0, 1.0, 1.0])
    assert tiers.layer_pipeline_time_s(taus, comps, overlap=False) == pytest.approx(8.0)
    # a host slower than the device: layer i starts at i * dispatch, so the last ends 3 h + c
    assert tiers.layer_pipeline_time_s(np.zeros(4), np.full(4, 0.1), dispatch_s=1.0) == pytest.approx(3.1)
    # with copies, dispatch never makes a step faster, and overlap never makes it slower
    for h in (0.0, 0.5, 3.0):
        piped = tiers.layer_pipeline_time_s(taus, comps, dispatch_s=h)
        serial = tiers.layer_pipeline_time_s(taus, comps, dispatch_s=h, overlap=False)
        assert tiers.layer_pipeline_time_s(taus, comps) <= piped <= serial


def test_eager_host_dispatch_bounds_the_streamed_step(llama):
    cal = Calibration(matmul_flops_per_s={"bf16": 7e14}, memory_bytes_per_s=4e12, kernel_overhead_s=0.0,
                      layer_overhead_s=1e-3)
    hw = dataclasses.replace(hardware.load("h200-sxm"), calibration=cal)
    out = tiers.offloaded_step_time(llama, hw, 1, 1, 512, P16, np.array([0, llama.n_layers]),
                                    engine="hf-eager")
    assert np.all(out["host_s"] == pytest.approx(llama.n_layers * 1e-3))
    assert np.all(out["time_s"] >= out["host_s"]) and out["time_s"][1] == pytest.approx(out["host_s"][1], rel=0.05)
    assert np.all(out["lower_s"] <= out["time_s"] * (1 + 1e-12)) and np.all(out["time_s"] <= out["upper_s"] * (1 + 1e-12))


def test_tiers_prefer_calibrated_link_rates(h200):
    plain = MemoryTiers.from_hardware(h200)
    assert plain.h2d_bytes_per_s == h200.host_link_bytes_per_s
    cal = Calibration(matmul_flops_per_s={"bf16": 7e14}, memory_bytes_per_s=4e12, kernel_overhead_s=3e-6,
                      host_to_device_bytes_per_s=50e9, device_to_host_bytes_per_s=45e9, transfer_latency_s=8e-6)
    measured = MemoryTiers.from_hardware(dataclasses.replace(h200, calibration=cal))
    assert (measured.h2d_bytes_per_s, measured.d2h_bytes_per_s, measured.link_latency_s) == (50e9, 45e9, 8e-6)
    assert MemoryTiers.from_hardware(h200, flash_write_bytes_per_s=1e9).flash_write_bytes_per_s == 1e9


def test_tiers_reject_bad_fields(h200):
    with pytest.raises(TierError, match="unknown field"):
        MemoryTiers.from_hardware(h200, pcie_lanes=8)
    with pytest.raises(TierError, match="^h2d_bytes_per_s: 0.0"):
        MemoryTiers.from_hardware(h200, h2d_bytes_per_s=0.0)


def test_layer_bytes_add_up_to_the_checkpoint(llama):
    layers = llama.n_layers * tiers.layer_weight_bytes(llama, P16)
    rest = (llama.embedding_params() + llama.norm_params()) * 2.0
    assert layers + rest == pytest.approx(memory.weight_bytes(llama, P16))
    assert tiers.kv_layer_bytes(llama, P16, 4, 1000) == 4 * 1000 * 2 * 8 * 128 * 2


def test_split_step_time_adds_up_to_the_step(h200, llama):
    layer, rest, host = tiers.split_step_time(llama, h200, 16, 1, 512, P16)
    whole = perfmodel.step_time(llama, h200, seqs=16, new_tokens=1, past=512, p=P16)["time_s"]
    assert llama.n_layers * layer + rest == pytest.approx(whole)
    assert host == 0.0


def test_streamed_step_time(h200, llama):
    L = llama.n_layers
    resident = np.arange(0, L + 1, 8)
    out = tiers.offloaded_step_time(llama, h200, 8, 1, 512, P16, resident)
    serial = tiers.offloaded_step_time(llama, h200, 8, 1, 512, P16, resident, overlap=False)
    # all resident: no transfer; otherwise one layer's bytes per streamed layer over the link
    assert out["transfer_s"][-1] == 0 and out["time_s"][-1] == pytest.approx(out["compute_s"][-1])
    per_layer = tiers.layer_weight_bytes(llama, P16) / h200.host_link_bytes_per_s + h200.host_link_latency_s
    np.testing.assert_allclose(out["transfer_s"], (L - resident) * per_layer)
    assert np.all(np.diff(out["time_s"]) < 0)                     # more resident layers, faster
    assert np.all(out["lower_s"] <= out["time_s"] * (1 + 1e-12))
    assert np.all(out["time_s"] <= serial["time_s"] * (1 + 1e-12))
    np.testing.assert_allclose(serial["time_s"], serial["upper_s"])


def test_streamed_step_follows_the_link_bandwidth(h200, llama):
    faster = dataclasses.replace(h200, host_link_bytes_per_s=2 * h200.host_link_bytes_per_s, host_link_latency_s=0.0)
    base = dataclasses.replace(h200, host_link_latency_s=0.0)
    a = tiers.offloaded_step_time(llama, base, 8, 1, 512, P16, 0)
    b = tiers.offloaded_step_time(llama, faster, 8, 1, 512, P16, 0)
    assert b["transfer_s"] == pytest.approx(a["transfer_s"] / 2)
    assert b["time_s"] < a["time_s"]


def test_kv_on_host_streams_every_layers_cache(h200, llama):
    L = llama.n_layers
    out = tiers.offloaded_step_time(llama, h200, 32, 1, 2048, P16, L, kv_on_host=True)
    kv = tiers.kv_layer_bytes(llama, P16, 32, 2048)
    expected = L * (kv / h200.host_link_bytes_per_s + 2 * h200.host_link_latency_s)
    assert out["transfer_s"] == pytest.approx(expected)
    assert out["time_s"] >= out["transfer_s"]


def test_streamed_step_rejects_bad_resident_counts(h200, llama):
    with pytest.raises(TierError, match="resident_layers"):
        tiers.offloaded_step_time(llama, h200, 1, 1, 10, P16, llama.n_layers + 1)
    with pytest.raises(TierError, match="resident_layers"):
        tiers.offloaded_step_time(llama, h200, 1, 1, 10, P16, 2.5)
