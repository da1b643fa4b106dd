"""Long-context serving analysis: published KV sizes, capacity, prefill/decode/swap times, errors."""
import dataclasses

import numpy as np
import pytest

import workloads
from hardware.spec import Calibration
from perfmodel import longctx, memory
from perfmodel.longctx import LongContextError
from perfmodel.ops import Precision
from tests.perfmodel.test_kinetics import h200

GiB = 2 ** 30


@pytest.mark.parametrize("name, gib", [("qwen3-0.6b", 3.5), ("qwen3-32b", 8.0)])
def test_published_qwen3_kv_sizes_exactly(name, gib):
    """Kinetics / Qwen3: KV of one 32K-token context, bf16."""
    assert longctx.kv_bytes_per_user(workloads.load(name), 32768) == gib * GiB


def test_kv_per_user_splits_over_tp_until_kv_heads_are_replicated():
    m = workloads.load("qwen3-8b")  # 8 kv heads
    one = longctx.kv_bytes_per_user(m, 32768)
    assert longctx.kv_bytes_per_user(m, 32768, tp=np.array([2, 4, 8])) == pytest.approx(one / np.array([2, 4, 8]))
    falcon = workloads.load("falcon-7b")  # multi-query: one kv head, replicated on every device
    assert longctx.kv_bytes_per_user(falcon, 2048, tp=2) == longctx.kv_bytes_per_user(falcon, 2048)
    assert longctx.kv_bytes_per_user(m, 32768, kv_bits=8) == one / 2


def test_concurrency_limit_by_hand():
    m, hw = workloads.load("llama-3-8b"), h200()
    p = Precision(16, 16, 16)
    free = hw.hbm_capacity_bytes - memory.weight_bytes(m, p) - memory.activation_bytes(m, p, 8192, 1)
    per_user = 32 * 2 * 8 * 128 * 2 * 8000
    assert longctx.concurrency_limit(m, hw, 8000) == np.floor(free / per_user)
    assert longctx.concurrency_limit(m, hw, 8000, hbm_fraction=0.9) < longctx.concurrency_limit(m, hw, 8000)


def test_tensor_parallelism_raises_capacity_more_than_linearly_when_weights_dominate():
    m, hw = workloads.load("qwen3-32b"), h200()
    c1, c2, c4 = longctx.concurrency_limit(m, hw, 32768, tp=np.array([1, 2, 4]))
    assert c2 > 2 * c1 and c4 > 2 * c2
    assert c1 >= 1


def test_prefill_is_at_least_two_p_s_over_peak_and_attention_adds_with_context():
    m, hw = workloads.load("llama-3-8b"), h200()
    s = np.array([1024.0, 8192.0])
    t = longctx.prefill_time_s(m, hw, s)
    linear_only = 2 * m.param_count() * s / 989e12
    assert np.all(t >= linear_only * 0.95)
    assert t[1] / linear_only[1] > t[0] / linear_only[0]  # the quadratic attention term grows


def test_decode_at_batch_one_is_weights_plus_kv_over_bandwidth():
    m, hw = workloads.load("llama-3-8b"), h200()
    p = Precision(16, 16, 16)
    t = longctx.decode_time_s(m, hw, 8000)
    # every weight is read once except the embedding table, of which decode reads one row
    streamed = memory.weight_bytes(m, p) - m.vocab_size * m.d_model * 2
    expected = (streamed + longctx.kv_bytes_per_user(m, 8000)) / 4.8e12
    assert t == pytest.approx(expected, rel=0.02)
    assert longctx.decode_time_s(m, hw, 8000, 32) > t
    assert longctx.decode_time_s(m, hw, 32000, sparse_budget=2048) < longctx.decode_time_s(m, hw, 32000)


def test_swap_time_is_kv_over_the_host_link():
    m, hw = workloads.load("qwen3-8b"), h200()
    kv = longctx.kv_bytes_per_user(m, 32768)
    assert longctx.kv_swap_time_s(m, hw, 32768) == pytest.approx(kv / 64e9 + 1e-5)
    assert longctx.kv_swap_time_s(m, hw, 32768, tp=4) == pytest.approx(kv / 4 / 64e9 + 1e-5)
    cal = Calibration(matmul_flops_per_s={"bf16": 780e12}, memory_bytes_per_s=4.3e12, kernel_overhead_s=5e-6,
                      host_to_device_bytes_per_s=50e9, device_to_host_bytes_per_s=40e9, transfer_latency_s=2e-5)
    measured = dataclasses.replace(hw, calibration=cal)
    assert longctx.kv_swap_time_s(m, measured, 32768, direction="in") == pytest.approx(kv / 50e9 + 2e-5)
    assert longctx.kv_swap_time_s(m, measured, 32768, direction="out") == pytest.approx(kv / 40e9 + 2e-5)


def test_analyze_sweeps_context_and_tp():
    m, hw = workloads.load("llama-3.1-70b"), h200()
    plan = longctx.analyze(m, hw, [32768, 131072], tp=[[1], [2], [4], [8]])
    frame = plan.to_frame()
    assert len(frame) == 8
    assert not frame.loc[(frame.tp == 1), "fits"].any()  # 141 GB of bf16 weights and a 32K context exceed one H200
    assert frame.loc[(frame.tp == 8), "fits"].all()
    assert (frame.loc[~frame.fits, "throughput_tok_s_at_limit"] == 0).all()
    assert frame.notna().all().all()
    at_8 = frame[frame.tp == 8].set_index("context")
    assert at_8.loc[32768, "concurrency"] > at_8.loc[131072, "concurrency"]
    # swapping a user back in is far cheaper than recomputing its prefill at these lengths
    assert (frame["prefill_over_swap_in"] > 10).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(context=65536), "maximum context of 40960"),
    (dict(context=4096, tp=16), "tp: 16 exceeds the 8 devices"),
    (dict(context=0), "context"),
    (dict(context=4096, batch=0), "batch"),
    (dict(context=4096, tp=1.5), "tp"),
    (dict(context=4096, hbm_fraction=1.5), "hbm_fraction"),
])
def test_bad_requests_are_clear_errors(kwargs, match):
    with pytest.raises(LongContextError, match=match):
        longctx.analyze(workloads.load("qwen3-8b"), h200(), **kwargs)


def test_swap_direction_is_checked():
    with pytest.raises(LongContextError, match="direction"):
        longctx.kv_swap_time_s(workloads.load("qwen3-8b"), h200(), 1024, direction="sideways")
