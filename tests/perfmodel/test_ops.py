"""Per-op FLOP and byte counts against hand derivations (2 FLOPs per multiply-add)."""
import numpy as np
import pytest

import workloads
from perfmodel.ops import (Precision, attention_op, attention_pairs, expected_experts_touched, matmul_op, moe_ops,
                           step_ops)

BF16 = Precision(16, 16, 16)


def test_matmul_counts():
    op = matmul_op("x", 8, 4096, 1024, BF16, 1)
    assert op.flops == 2 * 8 * 4096 * 1024
    assert op.weight_bytes == 4096 * 1024 * 2
    assert op.act_bytes == 8 * (4096 + 1024) * 2


def test_sub_8_bit_weights_pay_group_scales():
    op = matmul_op("x", 1, 4096, 4096, Precision(4, 16, 16, 128), 1)
    # 4 bits plus a 16-bit scale and 16-bit zero per 128 weights = 4.25 bits
    assert op.weight_bytes == pytest.approx(4096 * 4096 * 4.25 / 8)
    assert matmul_op("x", 1, 4096, 4096, Precision(8, 16, 16), 1).weight_bytes == 4096 * 4096


def test_causal_pairs():
    assert attention_pairs(1, 99) == 100                  # decode: one query sees the 99 cached + itself
    assert attention_pairs(4, 0) == 1 + 2 + 3 + 4          # prefill of 4 tokens, causal
    assert attention_pairs(2, 10) == 11 + 12


def test_gqa_decode_attention_by_hand():
    m = workloads.load("llama-3-8b")  # H 32, K 8, d 128
    op = attention_op(m, seqs=2, new_tokens=1, past=1023, p=BF16, tp=1)
    assert op.flops == 2 * 2 * 32 * 1024 * (128 + 128)
    # K and V of 1024 tokens read once, the new token's K and V written once
    assert op.kv_bytes == 2 * (2 * 8 * 128) * (1024 + 1) * 2
    assert op.count == 32


def test_mla_attention_uses_the_latent():
    ds = workloads.load("deepseek-v3")
    op = attention_op(ds, seqs=1, new_tokens=1, past=99, p=BF16, tp=1)
    assert op.kv_bytes == 576 * (100 + 1) * 2
    assert op.flops == 2 * 128 * 100 * (576 + 512)


def test_sparse_budget_caps_the_context():
    m = workloads.load("qwen3-8b")
    dense = attention_op(m, seqs=1, new_tokens=1, past=32767, p=BF16, tp=1)
    sparse = attention_op(m, seqs=1, new_tokens=1, past=32767, p=BF16, tp=1, sparse_budget=2048)
    assert sparse.kv_bytes == pytest.approx(dense.kv_bytes * (2048 + 1) / (32768 + 1))


def test_dense_step_flops_match_2_params_per_token():
    m = workloads.load("llama-3-8b")
    tokens = 16
    ops = step_ops(m, seqs=tokens, new_tokens=1, past=0, p=BF16, logits_tokens=tokens)
    linear = sum(o.count * o.flops for o in ops if o.kind == "matmul")
    # every linear weight once per token (embedding lookup is not a matmul; the LM head is)
    weights = m.param_count() - m.vocab_size * m.d_model - (2 * m.n_layers + 1) * m.d_model
    assert linear == 2 * tokens * weights


def test_tensor_parallel_splits_work():
    m = workloads.load("llama-3.1-70b")
    one = sum(o.count * o.flops for o in step_ops(m, seqs=8, new_tokens=1, past=100, p=BF16,
                                                  tp=1) if o.kind == "matmul")
    four = sum(o.count * o.flops for o in step_ops(m, seqs=8, new_tokens=1, past=100, p=BF16,
                                                   tp=4) if o.kind == "matmul")
    assert four == pytest.approx(one / 4)
    comm = [o for o in step_ops(m, seqs=8, new_tokens=1, past=100, p=BF16, tp=4) if o.kind == "comm"][0]
    assert comm.count == 2 * 80 and comm.comm_bytes == 8 * 8192 * 2


def test_moe_reads_only_touched_experts():
    mix = workloads.load("mixtral-8x7b")
    assert expected_experts_touched(8, 2, 1) == pytest.approx(2)
    assert expected_experts_touched(8, 2, 1000) == pytest.approx(8)
    one = [o for o in step_ops(mix, seqs=1, new_tokens=1, past=0, p=BF16) if o.name == "experts"][0]
    assert one.weight_bytes == pytest.approx(2 * 3 * 4096 * 14336 * 2)
    assert one.flops == 2 * 1 * 2 * 3 * 4096 * 14336


def test_expert_parallelism_splits_the_routed_pairs_and_experts():
    mix = workloads.load("mixtral-8x7b")
    tokens = 64.0
    whole = {o.name: o for o in moe_ops(mix, tokens, BF16, tp=1)}["experts"]
    half = {o.name: o for o in moe_ops(mix, tokens, BF16, tp=1, ep=2)}["experts"]
    # each device holds 4 of the 8 experts whole: half the pairs and half the touched experts
    assert half.flops == pytest.approx(whole.flops / 2)
    assert half.groups == pytest.approx(whole.groups / 2)
    assert half.weight_bytes == pytest.approx(whole.weight_bytes / 2)
    assert half.m == pytest.approx(whole.m)  # the same rows per touched expert
    # a known routing replaces the expectation: 10 pairs over 3 experts
    known = {o.name: o for o in moe_ops(mix, tokens, BF16, tp=2, ep=2, routed=(10.0, 3.0))}["experts"]
    assert known.groups == 3.0 and known.m == pytest.approx(10 / 3)
    assert known.flops == pytest.approx(2 * 10 * 3 * 4096 * 14336 / 2)
    assert known.weight_bytes == pytest.approx(3 * 3 * 4096 * 14336 / 2 * 2)


def test_eager_profile_has_more_kernels_and_bytes():
    m = workloads.load("llama-3-8b")
    fused = step_ops(m, seqs=4, new_tokens=1, past=512, p=BF16, engine="vllm")
    eager = step_ops(m, seqs=4, new_tokens=1, past=512, p=BF16, engine="hf-eager")
    assert sum(o.count * o.kernels for o in eager) > 2 * sum(o.count * o.kernels for o in fused)
    assert sum(o.count * o.bytes for o in eager) > sum(o.count * o.bytes for o in fused)
    assert sum(o.count * o.flops for o in eager if o.kind == "matmul") == \
        pytest.approx(sum(o.count * o.flops for o in fused if o.kind == "matmul"))


def test_ops_broadcast_over_arrays():
    m = workloads.load("qwen3-8b")
    batch = np.array([1, 8, 64])
    ops = step_ops(m, seqs=batch, new_tokens=1, past=1024, p=BF16)
    for op in ops:
        assert np.shape(op.flops) in ((), (3,))
