"""perfmodel.shapes and perfmodel.rates: hand derivations and the one-source contracts."""
import dataclasses

import numpy as np
import pytest

import hardware
import workloads
from hardware.spec import Calibration
from perfmodel import memory, rates, shapes
from perfmodel.ops import Precision, attention_op, token_ops
from perfmodel.roofline import matmul_dtype_rate
from solvers import flash


@pytest.fixture(scope="module")
def llama8b():
    return workloads.load("llama-3.1-8b")        # 32 layers, 8 kv heads of 128


def test_kv_bytes_per_device_gqa_replicates_kv_heads_when_tp_exceeds_them(llama8b):
    tp = np.array([1, 2, 4, 8, 16, 32])
    per_layer = shapes.kv_bytes_per_token_per_layer_per_device(llama8b, 16, tp)
    # 2 (K and V) x ceil(8 / tp) heads x 128 x 2 bytes: tp 16 and 32 still hold one head each
    np.testing.assert_array_equal(per_layer, 2 * np.array([8, 4, 2, 1, 1, 1]) * 128 * 2)
    whole = shapes.kv_bytes_per_token_per_device(llama8b, 8, tp)
    np.testing.assert_array_equal(whole, 32 * 2 * np.array([8, 4, 2, 1, 1, 1]) * 128 * 1)
    assert shapes.kv_bytes_per_token_per_device(llama8b, 16) == llama8b.kv_bytes_per_token(16)


def test_kv_bytes_mla_latent_is_replicated():
    ds = workloads.load("deepseek-v3")
    latent = ds.kv_lora_rank + ds.qk_rope_head_dim                      # 512 + 64
    for tp in (1, 8, 64):
        assert shapes.kv_bytes_per_token_per_layer_per_device(ds, 16, tp) == latent * 2
    assert shapes.attention_dims(ds) == (latent, ds.kv_lora_rank)
    assert shapes.kv_heads_per_device(ds, 8) == 1


def test_heads_per_device(llama8b):
    assert shapes.query_heads_per_device(llama8b, 4) == 8
    np.testing.assert_array_equal(shapes.kv_heads_per_device(llama8b, np.array([1, 3, 16])), [8, 3, 1])
    assert shapes.attention_dims(llama8b) == (128, 128)


def _mimo_like():
    """MiMo-V2-Flash's global attention layout (64 heads, 4 kv heads, query-key 192, value 128) on
    a llama-style layer, as a config.json gives it."""
    return workloads.ModelSpec.from_hf_config({
        "model_type": "llama", "hidden_size": 4096, "num_attention_heads": 64, "num_key_value_heads": 4,
        "head_dim": 192, "v_head_dim": 128, "num_hidden_layers": 2, "intermediate_size": 8192,
        "vocab_size": 1000}, name="mimo-like")


def test_value_heads_of_their_own_width():
    model = _mimo_like()
    assert model.value_head_dim == 128 and shapes.attention_dims(model) == (192, 128)
    # the cache holds 192-wide keys and 128-wide values per kv head, replicated past 4 devices
    tp = np.array([1, 2, 8])
    np.testing.assert_array_equal(shapes.kv_elements_per_token_per_layer_per_device(model, tp),
                                  np.array([4, 2, 1]) * (192 + 128))
    assert model.kv_elements_per_token == 4 * 320
    # q and k projections 192 wide per head, v 128, the output projection reads 64 x 128
    D = 4096
    assert model.attention_params() == D * (64 * 192 + 4 * 192 + 4 * 128) + 64 * 128 * D
    ops = {op.name: op for op in token_ops(model, tokens=1.0, p=Precision(16, 16, 16), tp=1, engine="vllm")[0]}
    assert ops["qkv_proj"].n == 64 * 192 + 4 * 192 + 4 * 128 and ops["o_proj"].k == 64 * 128
    # QK^T at 192 and PV at 128 per pair
    op = attention_op(model, seqs=1.0, new_tokens=1.0, past=99.0, p=Precision(16, 16, 16), tp=1)
    assert op.flops == pytest.approx(2.0 * 64 * 100 * (192 + 128))


def test_rotary_width_counts_the_kv_heads_a_device_keeps(llama8b):
    # 32 query heads over tp and ceil(8 / tp) kv heads, 128 wide each (was (32 + ceil(8 / tp)) / tp)
    for tp, heads in ((1, 40), (2, 20), (8, 5), (16, 3)):
        assert shapes.rotary_width(llama8b, tp) == heads * 128


@pytest.mark.parametrize("w_bits, group, expected", [(16, 128, 2.0), (8, 128, 1.0), (4, 128, (4 + 0.25) / 8),
                                                     (3, 64, (3 + 0.5) / 8)])
def test_group_overhead_is_32_bits_per_group_below_8_bits(w_bits, group, expected):
    assert shapes.weight_bytes_per_param(w_bits, group) == pytest.approx(expected, rel=1e-15)
    assert Precision(w_bits, 16, 16, group).weight_bytes_per_param == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("name", ["llama-3.1-8b", "mixtral-8x7b", "deepseek-v3", "opt-6.7b"])
@pytest.mark.parametrize("w_bits, tp", [(16, 1), (4, 1), (8, 4), (4, 8)])
def test_weight_bytes_is_memory_weight_bytes_and_sums_layers(name, w_bits, tp):
    model, p = workloads.load(name), Precision(w_bits, 16, 16)
    total = shapes.weight_bytes(model, p, tp)
    assert total == memory.weight_bytes(model, p, tp)
    # L mean layers + 16-bit embeddings / LM head split over tp + 16-bit final norm
    parts = model.n_layers * shapes.layer_weight_bytes(model, p, tp) + model.embedding_params() * 2.0 / tp \
        + model.norm_params() * 2.0
    assert total == pytest.approx(parts, rel=1e-12)
    if tp == 1 and w_bits == 16:
        assert total == pytest.approx(2.0 * model.param_count(), rel=1e-12)


def test_fp32_checkpoint_keeps_fp32_embeddings(llama8b):
    assert shapes.weight_bytes(llama8b, Precision(32, 32, 16)) == pytest.approx(4.0 * llama8b.param_count(), rel=1e-12)


def test_rates_calibrated_else_datasheet():
    h200 = hardware.load("h200-sxm")
    cal = Calibration(matmul_flops_per_s={"bf16": 7e14}, memory_bytes_per_s=4e12, kernel_overhead_s=0.0, host_to_device_bytes_per_s=50e9,
                      device_to_host_bytes_per_s=0.0, host_to_device_pageable_bytes_per_s=20e9)
    assert rates.memory_bytes_per_s(h200.datasheet()) == h200.hbm_bytes_per_s
    assert rates.matmul_flops_per_s(h200.datasheet(), "bf16") == h200.peak_flops_per_s("bf16")
    assert rates.host_link_bytes_per_s(h200.datasheet(), "h2d", pinned=False) == h200.host_link_bytes_per_s
    hw = dataclasses.replace(h200, calibration=cal)
    assert rates.matmul_flops_per_s(hw, "bf16") == 7e14
    assert rates.matmul_flops_per_s(hw, "fp8") == h200.peak_flops_per_s("fp8")   # not measured: datasheet
    assert rates.matmul_flops_per_s(hw, "bf16", calibrated=False) == h200.peak_flops_per_s("bf16")
    assert rates.memory_bytes_per_s(hw) == 4e12
    assert rates.host_to_device_bytes_per_s(hw) == 50e9
    assert rates.host_link_bytes_per_s(hw, "h2d", pinned=False) == 20e9
    assert rates.device_to_host_bytes_per_s(hw) == h200.host_link_bytes_per_s     # 0 = not measured
    assert rates.host_link_bytes_per_s(hw, "d2h", pinned=False) == h200.host_link_bytes_per_s
    with pytest.raises(ValueError, match="direction"):
        rates.host_link_bytes_per_s(h200, "up")


def test_flash_gpu_uses_the_models_dtype_rate_not_the_fastest():
    hw = hardware.load("rtx-4090")
    assert max(hw.flops_per_s.values()) > hw.peak_flops_per_s("bf16")     # the old pick was the fp8/int4 peak
    flops, _, _ = flash._rates(hw, "gpu", 16)
    assert flops == matmul_dtype_rate(hw, 16, 16) == hw.peak_flops_per_s("bf16")
    assert flash._rates(hw, "gpu", 4)[0] == hw.peak_flops_per_s("bf16")   # weight-only 4-bit dequantizes to bf16


def test_flash_weights_count_16_bit_embeddings_and_group_overhead(llama8b):
    parts = flash.dram_parts(llama8b, 4, 0)
    assert parts["total"] == shapes.weight_bytes(llama8b, Precision(4, 16, 16))
    assert parts["embeddings"] == llama8b.embedding_params() * 2.0
