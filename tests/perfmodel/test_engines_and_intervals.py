"""Engine profiles as data, prediction intervals, and the defects issue 13 listed."""
import dataclasses

import numpy as np
import pytest
import yaml

import hardware
import perfmodel
import workloads
from hardware.spec import Calibration, Hardware, SpecError, to_yaml_dict
from perfmodel import collectives, engines, intervals
from perfmodel.ops import Precision, matmul_op, step_ops
from perfmodel.roofline import matmul_dtype_rate, op_time

BF16 = Precision(16, 16, 16)


# -- profiles ------------------------------------------------------------------------------------

def test_every_shipped_profile_loads_and_cites_its_sources():
    names = engines.names()
    assert {"hf-eager", "torch-compile", "vllm", "trtllm", "sglang"} <= set(names)
    assert engines.DEFAULT_ENGINE == "vllm" and "compile" in "torch-compile"
    for name in names:
        e = engines.load(name)
        assert e.name == name and e.sources, name
        assert e.prefill_attention and e.decode_attention


def test_a_profile_rejects_unknown_fields_and_bad_values():
    with pytest.raises(engines.EngineError, match="unknown field 'norm_kernel'"):
        engines.from_dict({"name": "x", "norm_kernel": 1})
    with pytest.raises(engines.EngineError, match="allreduce"):
        engines.from_dict({"name": "x", "allreduce": "mpi"})
    with pytest.raises(engines.EngineError, match="step_host_s"):
        engines.from_dict({"name": "x", "step_host_s": -1.0})
    with pytest.raises(engines.EngineError, match=r"act_quant_bytes = -2\.0 must be a finite number, zero or more"):
        engines.from_dict({"name": "x", "act_quant_bytes": -2.0})
    with pytest.raises(engines.EngineError, match=r"decode_kernel_max_group = -1 must be a finite number, zero or more"):
        engines.from_dict({"name": "x", "decode_kernel_max_group": -1})
    with pytest.raises(engines.EngineError, match=r"fp8_gemm_split_k = 'maybe' must be true or false"):
        engines.from_dict({"name": "x", "fp8_gemm_split_k": "maybe"})
    with pytest.raises(engines.EngineError, match=r"decode_fallback_attention = 1 must be text"):
        engines.from_dict({"name": "x", "decode_fallback_attention": 1})
    with pytest.raises(engines.EngineError, match=r"wide_head_architecture = 'hoper' is not one of .*hopper"):
        engines.from_dict({"name": "x", "wide_head_architecture": "hoper"})
    with pytest.raises(engines.EngineError, match="not a known profile"):
        engines.load("tgi")


def test_graphs_are_used_up_to_the_profiles_capture_size():
    vllm = engines.load("vllm")
    assert list(vllm.graphed(np.array([1, 512, 513]))) == [True, True, False]
    assert not engines.load("hf-eager").graphed(1) and engines.load("torch-compile").graphed(1e6)


def test_fusion_is_what_the_profiles_say():
    m = workloads.load("llama-3-8b")
    kernels = {e: sum(op.count * op.kernels for op in step_ops(m, seqs=4, new_tokens=1, past=1024, p=BF16,
                                                               engine=e))
               for e in ("hf-eager", "torch-compile", "trtllm")}
    assert kernels["hf-eager"] > 3 * kernels["torch-compile"] > 3 * kernels["trtllm"] / 1.5
    names = {op.name for op in step_ops(m, seqs=4, new_tokens=1, past=1024, p=BF16, engine="trtllm")}
    assert "rope" not in names and "kv_write" not in names and "residual_add" not in names


def test_host_time_is_paid_only_where_the_engine_pays_it():
    m, hw = workloads.load("llama-3-8b"), hardware.load("h200-sxm-calibrated")
    step = perfmodel.step_time
    compiled = step(m, hw, seqs=1, new_tokens=1.0, past=2048.0, p=BF16, engine="torch-compile")
    eager = step(m, hw, seqs=1, new_tokens=1.0, past=2048.0, p=BF16, engine="hf-eager")
    assert float(compiled["host_s"]) == 0.0 and float(eager["host_s"]) > float(eager["time_s"]) * 0.5
    # a vllm prefill of more tokens than its largest graph dispatches from the host, hidden by the device
    big = step(m, hw, seqs=1, new_tokens=4096.0, past=0.0, p=BF16, engine="vllm")
    assert float(big["host_s"]) > 0 and float(big["time_s"]) >= float(big["host_s"])


# -- prediction intervals -------------------------------------------------------------------------

def test_band_of_a_step_without_step_evidence_sums_its_classes_comonotone():
    bands = {"matmul": {"p10": 0.9, "p90": 1.2}, "vector": {"p10": 0.8, "p90": 1.5}}
    lo, hi = intervals.band(10.0, {"matmul": 6.0, "vector": 3.0}, bands, "decode", "vllm")
    assert lo == pytest.approx(6 * 0.9 + 3 * 0.8 + 1.0) and hi == pytest.approx(6 * 1.2 + 3 * 1.5 + 1.0)


def test_band_uses_whole_validated_steps_of_the_same_engine_first():
    bands = {"matmul": {"p10": 0.5, "p90": 2.0}, "model_step_decode torch-compile": {"p10": 0.9, "p90": 1.1}}
    assert intervals.band(10.0, {"matmul": 10.0}, bands, "decode", "torch-compile") == (9.0, 11.0)
    assert intervals.band(10.0, {"matmul": 10.0}, bands, "decode", "vllm") == (5.0, 20.0)


def test_no_bands_no_interval():
    lo, hi = intervals.band(np.ones(3), {}, {}, "decode", "vllm")
    assert np.isnan(lo).all() and np.isnan(hi).all()


def test_calibrated_predictions_carry_a_band_around_them_and_datasheet_ones_none():
    m, sc = workloads.load("llama-3-8b"), workloads.Scenario(batch=[1, 16], prompt=1024, gen=64)
    row = perfmodel.predict(m, hardware.load("h200-sxm-calibrated"), sc).to_frame()
    assert (row["tpot_p10_s"] <= row["tpot_s"]).all() and (row["tpot_s"] <= row["tpot_p90_s"]).all()
    assert (row["ttft_p10_s"] < row["ttft_p90_s"]).all()
    bare = perfmodel.predict(m, hardware.load("h200-sxm"), sc).to_frame()
    assert "tpot_p10_s" not in bare  # no validated error, no interval columns (never NaN)


def test_error_bands_and_attention_kernels_round_trip_through_yaml():
    hw = hardware.load("h200-sxm-calibrated")
    again = Hardware.from_dict(yaml.safe_load(yaml.safe_dump(to_yaml_dict(hw))))
    assert again.calibration.error_bands.keys() == hw.calibration.error_bands.keys()
    for cls, q in hw.calibration.error_bands.items():
        assert again.calibration.error_bands[cls]["p90"] == pytest.approx(q["p90"], rel=1e-5)
    for family, params in hw.calibration.attention_kernels.items():
        for key, value in params.items():
            assert again.calibration.attention_kernels[family][key] == pytest.approx(value, rel=1e-9)


def test_a_band_must_be_ordered():
    with pytest.raises(SpecError, match="error_bands"):
        Calibration(matmul_flops_per_s={"bf16": 1e15}, memory_bytes_per_s=1e12, kernel_overhead_s=1e-6,
                    error_bands={"matmul": {"p10": 1.2, "p90": 0.9}})


# -- defects the issue listed ----------------------------------------------------------------------

def test_fp8_decode_is_not_slower_than_bf16_on_the_calibrated_h200():
    m, hw = workloads.load("llama-3-8b"), hardware.load("h200-sxm-calibrated")
    for batch in (1, 4, 16):
        fp8 = perfmodel.predict(m, hw, workloads.Scenario(batch=batch, prompt=2048, gen=64, w_bits=8, a_bits=8))
        bf16 = perfmodel.predict(m, hw, workloads.Scenario(batch=batch, prompt=2048, gen=64))
        assert fp8["tpot_s"][0] < bf16["tpot_s"][0], batch


def test_deepseek_v3_decode_is_monotone_in_batch():
    m, hw = workloads.load("deepseek-v3"), hardware.load("h200-sxm-calibrated")
    sc = workloads.Scenario(batch=np.arange(1, 257), prompt=2048, gen=256, tp=8, w_bits=8, a_bits=8)
    tpot = perfmodel.predict(m, hw, sc)["tpot_s"]
    assert np.all(np.diff(tpot) >= -1e-12 * tpot[:-1])


def test_w4a4_runs_at_the_fp4_rate_where_the_device_has_one():
    b200 = hardware.load("b200")
    assert "fp4" in b200.flops_per_s
    assert float(matmul_dtype_rate(b200, 4, 4)) == b200.flops_per_s["fp4"]
    assert float(matmul_dtype_rate(b200, 8, 8)) == b200.flops_per_s["fp8"]
    h200 = hardware.load("h200-sxm")  # no fp4 tensor cores: the fp8 rate
    assert float(matmul_dtype_rate(h200, 4, 4)) == h200.peak_flops_per_s("fp8")


def test_fp32_gemm_at_128_rows_splits_k_instead_of_idling_sms():
    hw = hardware.load("h200-sxm-calibrated")
    p = Precision(32, 32, 16)
    small, big = (op_time(matmul_op("w", m, 4096.0, 4096.0, p, 1), hw, p) for m in (128.0, 4096.0))
    per_flop_small = float(small.compute_s) / (2 * 128 * 4096 * 4096)
    per_flop_big = float(big.compute_s) / (2 * 4096 * 4096 * 4096)
    assert per_flop_small < 2.0 * per_flop_big  # the wave model without split-K made it ~4x


def test_custom_allreduce_beats_nccl_on_small_messages_and_falls_back_above_its_limit():
    hw = hardware.load("h200-sxm")
    small = 64 * 1024
    assert float(collectives.custom_allreduce_time_s(small, 8, hw)) < \
        0.5 * float(collectives.allreduce_time_s(small, 8, hw))
    big = 64 * 2 ** 20
    assert float(collectives.custom_allreduce_time_s(big, 8, hw)) == float(collectives.allreduce_time_s(big, 8, hw))
    assert float(collectives.custom_allreduce_time_s(small, 1, hw)) == 0.0


def test_the_power_roof_caps_large_gemms_only():
    hw = hardware.load("h200-sxm-calibrated")
    cal = hw.calibration
    assert cal.sustained_flops_per_s["bf16"] < cal.matmul_flops_per_s["bf16"]
    uncapped = dataclasses.replace(hw, calibration=dataclasses.replace(cal, sustained_flops_per_s={}))
    big, small = matmul_op("w", 8192.0, 8192.0, 8192.0, BF16, 1), matmul_op("w", 128.0, 4096.0, 4096.0, BF16, 1)
    assert float(op_time(big, hw, BF16).compute_s) > float(op_time(big, uncapped, BF16).compute_s)
    assert float(op_time(small, hw, BF16).compute_s) == float(op_time(small, uncapped, BF16).compute_s)


def test_tensorrt_llms_xqa_runs_groups_of_2_to_32_where_its_heuristic_allows():
    """TensorRT-LLM's decode family (XQA) runs 2-32 query heads per kv head, and only where kv heads
    x batch x max(history // 128, 1) x 4 reaches the SM count (its mayHavePerfGain); plain MHA,
    larger groups and small decodes run its masked MHA kernel. Other engines' decode families run all."""
    trt, vllm = engines.load("trtllm"), engines.load("vllm")
    at = dict(kv_heads=8.0, batch=16.0, history=4096.0, compute_units=132.0)
    assert trt.runs_decode_kernel(group=8.0, **at)
    assert not trt.runs_decode_kernel(group=1.0, **at) and not trt.runs_decode_kernel(group=64.0, **at)
    assert trt.runs_decode_kernel(group=32.0, **at)
    # 1 kv head x 8 sequences x 4 blocks of 128 x 4 = 128 < 132 SMs; one more sequence reaches it
    assert not trt.runs_decode_kernel(group=8.0, kv_heads=1.0, batch=8.0, history=512.0, compute_units=132.0)
    assert trt.runs_decode_kernel(group=8.0, kv_heads=1.0, batch=9.0, history=512.0, compute_units=132.0)
    assert vllm.runs_decode_kernel(group=64.0, kv_heads=1.0, batch=1.0, history=1.0, compute_units=132.0)
    # a history under one block of 128 still counts one block: 8 kv heads x 5 sequences x 1 x 4 >= 132
    assert trt.runs_decode_kernel(group=4.0, kv_heads=8.0, batch=5.0, history=16.0, compute_units=132.0)
    assert not trt.runs_decode_kernel(group=4.0, kv_heads=8.0, batch=4.0, history=16.0, compute_units=132.0)


def test_each_measured_decode_is_priced_with_the_kernel_that_ran_it():
    """Engine.decode_kernels names XQA's family or the masked MHA fallback per row (arrays too); a
    step prediction picks by the model's head group alone (attention_kernel with group)."""
    trt, vllm = engines.load("trtllm"), engines.load("vllm")
    names = trt.decode_kernels(group=np.array([1.0, 8.0, 8.0]), kv_heads=8.0, batch=np.array([16.0, 16.0, 1.0]),
                               history=np.array([4096.0, 4096.0, 100.0]), compute_units=132.0)
    assert list(names) == ["trtllm-mmha-decode", "trtllm-decode", "trtllm-mmha-decode"]
    assert trt.attention_kernel("decode", group=1.0) == "trtllm-mmha-decode"
    assert trt.attention_kernel("decode", group=71.0) == "trtllm-mmha-decode"  # Falcon-7B's multi-query
    assert trt.attention_kernel("decode", group=4.0) == trt.attention_kernel("decode") == "trtllm-decode"
    assert trt.attention_kernel("prefill", group=1.0) == "trtllm-prefill"
    assert vllm.attention_kernel("decode", group=1.0) == "vllm-decode"
    assert vllm.decode_kernels(group=1.0, kv_heads=8.0, batch=1.0, history=1.0, compute_units=132.0) == "vllm-decode"


def test_heads_wider_than_the_engines_families_take_run_its_wide_head_family():
    """FlashAttention-3 (Hopper's default) takes head dims up to 256: there SGLang runs wider heads on
    its Triton backend and vLLM on FA4, in both phases and whatever the head group
    (Engine.wide_head_attention); MLA's
    absorbed attention (head_dim None) keeps its own kernels; an engine without the rule never switches."""
    sgl, vllm, trt = engines.load("sglang"), engines.load("vllm"), engines.load("trtllm")
    assert sgl.attention_kernel("prefill", head_dim=512.0) == "sglang-triton-prefill"
    assert sgl.attention_kernel("decode", group=8.0, head_dim=512.0) == "sglang-triton-decode"
    assert sgl.attention_kernel("decode", head_dim=256.0) == "sglang-decode"
    assert sgl.attention_kernel("decode", head_dim=None) == "sglang-decode"
    assert vllm.attention_kernel("prefill", head_dim=512.0) == "vllm-fa4-prefill"
    assert trt.attention_kernel("prefill", head_dim=512.0) == "trtllm-prefill"
    # Blackwell's default backends take wide heads: a prediction that knows the device keeps the family
    assert sgl.attention_kernel("prefill", head_dim=512.0, architecture="blackwell") == "sglang-prefill"
    assert sgl.attention_kernel("prefill", head_dim=512.0, architecture="hopper") == "sglang-triton-prefill"
    rows = sgl.decode_kernels(group=8.0, kv_heads=1.0, batch=4.0, history=100.0, compute_units=132.0, head_dim=512.0)
    assert rows == "sglang-triton-decode"
    # a step of a 512-wide-head model names the wide family; the same model at 128 does not
    wide = dataclasses.replace(workloads.load("llama-3-8b"), head_dim=512)
    kernels = {op.kernel for op in step_ops(wide, seqs=2, new_tokens=1, past=100, p=Precision(16, 16, 16),
                                            engine="sglang") if op.kind == "attention"}
    assert kernels == {"sglang-triton-decode"}


def test_8_and_4_bit_gemms_write_16_bit_outputs():
    """An fp8 or fp4 GEMM reads its activations at their width and writes bf16 (the engines' scaled
    GEMMs take a bf16 out_dtype); 16- and 32-bit GEMMs write their own width."""
    m, n, k = 64.0, 4096.0, 1024.0
    for bits, out in ((4, 2.0), (8, 2.0), (16, 2.0), (32, 4.0)):
        op = matmul_op("w", m, n, k, Precision(bits, bits, 16), 1)
        assert op.out_bytes == m * n * out
        assert op.act_bytes == pytest.approx(m * k * bits / 8 + m * n * out)
