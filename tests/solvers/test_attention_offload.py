"""Attention offloading (Lamina): link bandwidth, achievable batch, throughput per dollar, errors."""
import dataclasses

import pytest

import hardware
import perfmodel
import workloads
from solvers import attention_offload as ao
from solvers.attention_offload import AttentionOffloadError

SC = workloads.Scenario(prompt=4096, gen=512)


@pytest.fixture(scope="module")
def setup():
    return workloads.load("llama-3.1-70b"), hardware.load("h100-sxm"), hardware.load("h20")


def test_min_link_bandwidth_formula(setup):
    model, _, _ = setup
    p = perfmodel.Precision(16, 16, 16)
    G = model.gqa_group
    expected = (2 + 2 / G) * 2 * model.d_model * 64 * model.n_layers / (0.1 * (0.02 + 0.03))
    assert ao.min_link_bytes_per_s(model, 64, p, 0.02, 0.03, alpha=0.1) == pytest.approx(expected)
    # GQA shrinks the K/V part of the traffic: MHA (G = 1) needs more than GQA at equal times
    mha = dataclasses.replace(model, n_kv_heads=model.n_heads)
    assert ao.link_bytes_per_step(mha, 64, p) > ao.link_bytes_per_step(model, 64, p)


def test_disaggregated_setup(setup):
    model, compute, mem = setup
    res = ao.attention_offload(model, compute, mem, SC, n_compute=2, n_memory=4)
    row = res.lamina
    frame = res.to_frame()
    assert list(frame.setup) == ["disaggregated", "homogeneous h100-sxm", "homogeneous h20"]
    # achievable batch: the memory devices' HBM over one finished sequence's KV share
    per_seq = perfmodel.memory.kv_cache_bytes(model, perfmodel.Precision(16, 16, 16), 4608, 4)
    assert row["batch"] == int(0.9 * mem.hbm_capacity_bytes // per_seq)
    assert row["step_s"] == pytest.approx(row["t_model_s"] + row["t_attn_s"] + row["t_link_s"])
    assert row["step_pipelined_s"] == pytest.approx(max(row["t_model_s"], row["t_attn_s"], row["t_link_s"]))
    assert row["usd_per_hour"] == pytest.approx(2 * compute.price_per_hour_usd + 4 * mem.price_per_hour_usd)
    # homogeneous setups never cost more than the disaggregated one
    assert (frame.usd_per_hour <= row["usd_per_hour"] + 1e-9).all()
    assert row["tokens_per_usd"] == pytest.approx(row["tok_s"] * 3600 / row["usd_per_hour"])


def test_more_memory_devices_hold_a_larger_batch(setup):
    model, compute, mem = setup
    small = ao.attention_offload(model, compute, mem, SC, n_compute=2, n_memory=2).lamina
    large = ao.attention_offload(model, compute, mem, SC, n_compute=2, n_memory=8).lamina
    assert large["batch"] > small["batch"]
    assert large["t_attn_s"] / large["batch"] < small["t_attn_s"] / small["batch"]


def test_faster_link_is_never_slower(setup):
    model, compute, mem = setup
    slow = ao.attention_offload(model, compute, mem, SC, 2, 4, batch=64, link_bytes_per_s=10e9).lamina
    fast = ao.attention_offload(model, compute, mem, SC, 2, 4, batch=64, link_bytes_per_s=100e9).lamina
    assert fast["tok_s"] > slow["tok_s"] and fast["min_link_bytes_per_s"] == slow["min_link_bytes_per_s"]


def test_weights_must_fit_on_the_compute_devices(setup):
    model, compute, mem = setup
    with pytest.raises(AttentionOffloadError, match=r"compute devices: llama-3.1-70b needs .* missing"):
        ao.attention_offload(model, compute, mem, SC, n_compute=1, n_memory=4)


def test_one_sequence_must_fit_on_the_memory_devices(setup):
    model, compute, mem = setup
    tiny = dataclasses.replace(mem, hbm_capacity_bytes=1e9)
    with pytest.raises(AttentionOffloadError, match=r"memory devices: one sequence .* missing"):
        ao.attention_offload(model, compute, tiny, SC, n_compute=2, n_memory=1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_compute=0), "n_compute: 0"),
    (dict(n_memory=2.5), "n_memory: 2.5"),
    (dict(batch=10 ** 7), "batch: 10000000 exceeds"),
    (dict(alpha=0.0), "alpha: 0.0"),
    (dict(link_bytes_per_s=-1.0), "link_bytes_per_s: -1.0"),
    (dict(memory_fraction=0), "memory_fraction: 0"),
])
def test_bad_input_errors_name_the_field(setup, kwargs, match):
    model, compute, mem = setup
    base = dict(n_compute=2, n_memory=4)
    with pytest.raises(AttentionOffloadError, match=match):
        ao.attention_offload(model, compute, mem, SC, **{**base, **kwargs})
