"""The fit to aiconfigurator-style tables recovers a known calibration from synthetic measurements."""
import dataclasses

import numpy as np
import pytest

import hardware
from hardware.spec import Calibration, Hardware
from validate import calibrate_external as ce
from validate.predict_cases import attention_family, predict_many

TRUTH = Calibration(
    matmul_flops_per_s={"bf16": 700e12, "fp8": 1250e12}, sustained_flops_per_s={"bf16": 650e12, "fp8": 1100e12},
    memory_bytes_per_s=3.0e12, memory_read_bytes_per_s=3.0e12, sm_bytes_per_s=90e9,
    gemv_bytes_per_s={"bf16": 150e9, "fp8": 120e9}, kernel_overhead_s=2.5e-6, tile_m=64, tile_n=128,
    split_k_min=1024, gemv_tile_n=128, custom_allreduce_latency_s=4e-6, custom_allreduce_bytes_per_s=300e9,
    act_quant_engine_latency_s={"vllm": 3e-6}, act_quant_engine_row_s={"vllm": 8e-9},
    attention_kernels={"vllm-decode": {"flops_fraction": 0.5, "overhead_s": 8e-6, "read_bytes_per_s": 2.8e12,
                                       "unit_s": 2e-6, "unit_head_dim_s": 1e-8, "stream_latency_s": 3e-6},
                       "vllm-prefill": {"flops_fraction": 0.55, "overhead_s": 10e-6, "read_bytes_per_s": 2.0e12,
                                        "unit_s": 1e-6, "scores_per_s": 6e12, "unit_speedup": 1.2},
                       "trtllm-decode": {"flops_fraction": 0.7, "overhead_s": 4e-6, "read_bytes_per_s": 3.0e12,
                                         "unit_s": 1e-6, "row_s": 5e-8, "stream_latency_s": 5e-6,
                                         "block_bytes_per_s": 60e9, "combine_s": 3e-7}})


@pytest.fixture(scope="module")
def synthetic():
    base = hardware.load("h100-sxm")
    truth = dataclasses.replace(base, calibration=TRUTH)
    cases = [c for c in ce.cases_for("h100_sxm")["vllm"] if c["kind"] in ("matmul", "attention", "allreduce")]
    rng = np.random.default_rng(0)
    cases = [cases[i] for i in sorted(rng.choice(len(cases), 300, replace=False))]
    times = predict_many(ce.prepared(cases), truth)
    return base, truth, [dict(c, measured_s=float(t)) for c, t in zip(cases, times)]


@pytest.fixture(scope="module")
def plain_fit(synthetic):
    """The synthetic vLLM table fitted as it is (several tests read it: one fit per worker)."""
    base, _, cases = synthetic
    return ce.fit_tables({"vllm": cases}, base)


def test_fit_recovers_the_truth_on_held_out_shapes(synthetic, plain_fit):
    base, truth, cases = synthetic
    fitted = plain_fit
    held_out = [c for c in ce.prepared(cases) if c["split"] == "evaluation"]
    ratio = predict_many(held_out, fitted) / predict_many(held_out, truth)
    assert np.median(np.abs(ratio - 1)) < 0.03
    cal = fitted.calibration
    assert cal.custom_allreduce_latency_s == pytest.approx(4e-6, rel=0.05)
    assert cal.attention_kernels["vllm-decode"]["overhead_s"] == pytest.approx(8e-6, rel=0.15)
    assert cal.attention_kernels["vllm-decode"]["stream_latency_s"] == pytest.approx(3e-6, rel=0.25)
    # a decode unit's time at head dims 64-512 (2.6-7.1 us): its fixed part and its part per head-dim element
    assert cal.attention_kernels["vllm-decode"]["unit_s"] == pytest.approx(2e-6, rel=0.25)
    assert cal.attention_kernels["vllm-decode"]["unit_head_dim_s"] == pytest.approx(1e-8, rel=0.25)
    assert cal.attention_kernels["vllm-prefill"]["scores_per_s"] == pytest.approx(6e12, rel=0.25)
    # the longest tile's speed, seen only where few tiles run on the SMs
    assert cal.attention_kernels["vllm-prefill"]["unit_speedup"] == pytest.approx(1.2, rel=0.25)


def test_a_decode_familys_time_per_key_is_fitted_where_its_units_stream_keys(synthetic, plain_fit):
    """A split-KV decode kernel whose units each stream a run of keys at one SM's rate (key_s) takes
    that term on where it lowers the family's cost, and recovers it; without one in the truth, the
    fit of the same rows (the module's synthetic table) needs none to price the held-out rows."""
    base, truth, cases = synthetic
    keyed = dataclasses.replace(truth, calibration=dataclasses.replace(TRUTH, attention_kernels={
        **TRUTH.attention_kernels, "vllm-decode": {**TRUTH.attention_kernels["vllm-decode"], "key_s": 2e-9}}))
    measured = predict_many(ce.prepared(cases), keyed)
    fitted = ce.fit_tables({"vllm": [dict(c, measured_s=float(t)) for c, t in zip(cases, measured)]}, base)
    assert fitted.calibration.attention_kernels["vllm-decode"]["key_s"] == pytest.approx(2e-9, rel=0.3)
    decodes = [c for c in ce.prepared(cases) if c["split"] == "evaluation" and c.get("phase") == "decode"]
    assert np.median(np.abs(predict_many(decodes, fitted) / predict_many(decodes, keyed) - 1)) < 0.03
    assert plain_fit.calibration.attention_kernels["vllm-decode"].get("key_s", 0.0) < 1e-11


def test_a_decode_familys_l2_rate_is_fitted_where_its_replayed_rows_beat_the_memory(synthetic):
    """aiconfigurator times attention on one replayed cache: rows whose cache fits the L2 stream it
    from there (perfmodel.roofline.attention_read_rate). Made so on a spec with a 400 MB L2 and a
    20 TB/s L2 rate, the decode family's fit recovers that rate beside its read bandwidth; on a spec
    without an L2 size, or for rows that never beat the device memory (the same rows, measured cold),
    the term is not offered."""
    base, _, cases = synthetic
    big_l2 = dataclasses.replace(base, l2_cache_bytes=400e6)
    kernels = dict(TRUTH.attention_kernels)
    kernels["vllm-decode"] = {**kernels["vllm-decode"], "l2_bytes_per_s": 20e12}
    truth = dataclasses.replace(big_l2, calibration=dataclasses.replace(TRUTH, attention_kernels=kernels))
    decode = [c for c in ce.prepared(cases) if c["kind"] == "attention" and c["phase"] == "decode"]
    decode = [dict(c, measured_s=float(t)) for c, t in zip(decode, predict_many(decode, truth))]
    start = dataclasses.replace(TRUTH, attention_kernels={k: v for k, v in kernels.items() if k != "vllm-decode"})
    bw = big_l2.hbm_bytes_per_s
    fitted = ce._fit_attention_family(decode, big_l2, start, "vllm-decode", bw).attention_kernels["vllm-decode"]
    assert fitted["l2_bytes_per_s"] == pytest.approx(20e12, rel=0.2)
    assert fitted["read_bytes_per_s"] == pytest.approx(2.8e12, rel=0.1)
    assert ce._l2_param(decode, dataclasses.replace(base, l2_cache_bytes=0.0), "vllm-decode", bw) == {}
    cold = [dict(c, measured_s=float(t)) for c, t in zip(decode, predict_many(decode, dataclasses.replace(
        big_l2, calibration=TRUTH)))]
    assert ce._l2_param(cold, big_l2, "vllm-decode", bw) == {}


def test_each_decode_family_is_fitted_on_the_rows_its_kernel_ran(synthetic):
    """TensorRT-LLM's XQA runs head groups of 2-32 where its block heuristic allows; its other rows
    ran the masked MHA kernel (here: a family 5 times slower, with a larger floor) and must not move
    the XQA fit, while they fit the masked MHA family of their own (perfmodel.engines.Engine
    .decode_kernels); each held-out row is then priced with the kernel that ran it. Both kernels
    split their keys by their own rules (roofline.split_blocks): XQA's block stream rate
    (block_bytes_per_s) and combine time per block (combine_s) are recovered too."""
    base, truth, cases = synthetic
    trt = [c for c in ce.cases_for("h100_sxm")["trtllm"] if c["kind"] == "attention" and c.get("phase") == "decode"]
    ran = [attention_family(c, base.compute_units) for c in trt]
    assert {"trtllm-decode", "trtllm-mmha-decode"} == set(ran)
    kernels = dict(truth.calibration.attention_kernels)
    mmha = kernels["trtllm-mmha-decode"] = dict(kernels["trtllm-decode"], overhead_s=12e-6)
    mmha["read_bytes_per_s"] /= 5.0
    both = dataclasses.replace(truth, calibration=dataclasses.replace(truth.calibration, attention_kernels=kernels))
    times = predict_many(ce.prepared(trt), both)
    rows = [dict(c, measured_s=float(t)) for c, t in zip(trt, times)]
    fitted = ce.fit_tables({"vllm": cases, "trtllm": rows}, base)
    for family in ("trtllm-decode", "trtllm-mmha-decode"):
        held_out = [c for c, name in zip(ce.prepared(rows), ran) if name == family and c["split"] == "evaluation"]
        ratio = predict_many(held_out, fitted) / predict_many(held_out, both)
        assert len(held_out) >= 5 and np.median(np.abs(ratio - 1)) < 0.03, family
    assert fitted.calibration.attention_kernels["trtllm-mmha-decode"]["overhead_s"] == pytest.approx(12e-6, rel=0.15)
    xqa = fitted.calibration.attention_kernels["trtllm-decode"]
    assert xqa["block_bytes_per_s"] == pytest.approx(60e9, rel=0.3) and xqa["combine_s"] == pytest.approx(3e-7, rel=0.3)


def test_a_fallback_family_with_too_few_rows_prices_as_the_decode_family(synthetic):
    """Where the tables hold fewer masked-MHA rows than a fit needs (MIN_FAMILY_ROWS), the fallback
    family is written as the decode family's parameters, not left to the spec's generic ones."""
    base, truth, cases = synthetic
    trt = [c for c in ce.cases_for("h100_sxm")["trtllm"] if c["kind"] == "attention" and c.get("phase") == "decode"]
    xqa = [c for c in trt if attention_family(c, base.compute_units) == "trtllm-decode"]
    times = predict_many(ce.prepared(xqa), truth)
    fitted = ce.fit_tables({"vllm": cases, "trtllm": [dict(c, measured_s=float(t)) for c, t in zip(xqa, times)]},
                           base).calibration.attention_kernels
    assert fitted["trtllm-mmha-decode"] == fitted["trtllm-decode"]


def test_each_engines_custom_allreduce_is_fitted_on_its_own_table(synthetic):
    """Two engines' custom all-reduce tables made by different kernels (the second 2.5 us, 0.2 us per
    further peer in its one-shot barrier and 0.9 us in its two-shot's, 400 GB/s, where the first is
    4 us, none and 300 GB/s): each engine's own parameters are recovered, the first engine's are the
    shared default, and each engine's cases are predicted with its own."""
    base, truth, cases = synthetic
    own = {"custom_allreduce_engine_latency_s": {"trtllm": 2.5e-6},
           "custom_allreduce_engine_bytes_per_s": {"trtllm": 400e9},
           "custom_allreduce_engine_peer_latency_s": {"trtllm": 2e-7},
           "custom_allreduce_engine_two_shot_peer_latency_s": {"trtllm": 9e-7}}
    other = dataclasses.replace(truth, calibration=dataclasses.replace(TRUTH, **own))
    reduces = [dict(c, engine="trtllm") for c in cases if c["kind"] == "allreduce"]
    times = predict_many(ce.prepared(reduces), other)
    tables = {"vllm": cases, "trtllm": [dict(c, measured_s=float(t)) for c, t in zip(reduces, times)]}
    cal = ce.fit_tables(tables, base).calibration
    assert cal.custom_allreduce_engine_latency_s["trtllm"] == pytest.approx(2.5e-6, rel=0.05)
    assert cal.custom_allreduce_engine_bytes_per_s["trtllm"] == pytest.approx(400e9, rel=0.05)
    assert cal.custom_allreduce_engine_peer_latency_s["trtllm"] == pytest.approx(2e-7, rel=0.1)
    assert cal.custom_allreduce_engine_two_shot_peer_latency_s["trtllm"] == pytest.approx(9e-7, rel=0.1)
    assert cal.custom_allreduce_engine_peer_latency_s["vllm"] < 2e-8  # its table has none
    assert cal.custom_allreduce_engine_latency_s["vllm"] == pytest.approx(4e-6, rel=0.05)
    assert cal.custom_allreduce_latency_s == pytest.approx(4e-6, rel=0.05)  # the default: vLLM's
    fitted = dataclasses.replace(base, calibration=cal)
    frame = ce.residuals(tables, fitted)
    assert frame[frame["class"] == "allreduce_custom"]["ape"].median() < 0.02


def test_nccls_link_is_fitted_on_the_nccl_tests_table(synthetic, plain_fit):
    """The nccl-tests table (its own "engine") fits NCCL's link: bandwidth, ring step and launch,
    with NVLink SHARP on an NVLink 4 switch (H100); held-out sizes are then predicted by it."""
    base, truth, cases = synthetic
    known = dataclasses.replace(truth, calibration=dataclasses.replace(
        TRUTH, link_bytes_per_s=380e9, link_step_latency_s=4e-6, link_launch_s=5e-6, link_nvls=1))
    shapes = ce.cases_for("h100_sxm")[ce.NCCL_TABLE]
    times = predict_many(ce.prepared(shapes), known)
    tables = {"vllm": cases, ce.NCCL_TABLE: [dict(c, measured_s=float(t)) for c, t in zip(shapes, times)]}
    cal = ce.fit_tables(tables, base).calibration
    assert cal.link_nvls == 1
    assert cal.link_bytes_per_s == pytest.approx(380e9, rel=0.05)
    assert cal.link_step_latency_s == pytest.approx(4e-6, rel=0.2)
    frame = ce.residuals(tables, dataclasses.replace(base, calibration=cal))
    assert frame[frame["class"] == "allreduce_nccl"]["ape"].median() < 0.02
    assert not plain_fit.calibration.link_bytes_per_s  # no table: the datasheet link


def test_each_engines_fp8_quantization_path_is_fitted_on_its_own_rows(synthetic):
    """vLLM's fp8 rows (per-tensor scale: 3 us and 8 ns per row) fit its quantization path with the
    fp8 rate; a second engine's rows made with another path (SGLang's per-token kernel: 6 us, 1 ns
    per row) fit that engine's own, and each engine's rows are predicted with its own path. (On a
    spec of no named architecture: on a Hopper spec vLLM's fp8 rows take their own tiles
    (Engine.fp8_gemm_tiles_hopper) and no longer pin the calibrated grid, which this synthetic table's
    bf16 rows alone do not identify; SGLang's grid-priced rows then carry the grid's error.)"""
    base, truth, cases = synthetic
    base, truth = (dataclasses.replace(spec, architecture="") for spec in (base, truth))
    cases = [dict(c, measured_s=float(t)) for c, t in zip(cases, predict_many(ce.prepared(cases), truth))]
    cal = ce.fit_tables({"vllm": cases}, base).calibration
    assert cal.act_quant_engine_latency_s["vllm"] == pytest.approx(3e-6, rel=0.15)
    assert cal.act_quant_engine_row_s["vllm"] == pytest.approx(8e-9, rel=0.15)
    other = dataclasses.replace(truth, calibration=dataclasses.replace(
        TRUTH, act_quant_engine_latency_s={"sglang": 6e-6}, act_quant_engine_row_s={"sglang": 1e-9}))
    fp8 = [dict(c, engine="sglang", act_quant=1) for c in cases if c["kind"] == "matmul" and c["dtype"] == "fp8"]
    times = predict_many(ce.prepared(fp8), other)
    tables = {"vllm": cases, "sglang": [dict(c, measured_s=float(t)) for c, t in zip(fp8, times)]}
    cal = ce.fit_tables(tables, base).calibration
    assert cal.act_quant_engine_latency_s["sglang"] == pytest.approx(6e-6, rel=0.15)
    assert cal.act_quant_engine_row_s["sglang"] == pytest.approx(1e-9, rel=0.3)
    frame = ce.residuals(tables, dataclasses.replace(base, calibration=cal))
    assert frame[frame["class"] == "matmul fp8"].groupby("engine")["ape"].median().max() < 0.03


def test_the_gemm_write_rate_is_fitted_on_the_gemms_whose_output_dominates(synthetic):
    """Tables made with GEMM outputs written at 1.5 TB/s (reads at 3 TB/s) fit that write rate
    (Calibration.gemm_write_bytes_per_s), and the held-out GEMMs are predicted as the truth
    predicts them."""
    base, truth, cases = synthetic
    slow = dataclasses.replace(truth, calibration=dataclasses.replace(TRUTH, gemm_write_bytes_per_s=1.5e12))
    gemms = [c for c in cases if c["kind"] == "matmul"]
    rows = [dict(c, measured_s=float(t)) for c, t in zip(gemms, predict_many(ce.prepared(gemms), slow))]
    fitted = ce.fit_tables({"vllm": rows}, base)
    assert fitted.calibration.gemm_write_bytes_per_s == pytest.approx(1.5e12, rel=0.1)
    held_out = [c for c in ce.prepared(rows) if c["split"] == "evaluation"]
    ratio = predict_many(held_out, fitted) / predict_many(held_out, slow)
    assert np.median(np.abs(ratio - 1)) < 0.03


def test_a_wide_head_family_is_fitted_on_its_few_rows_where_the_engine_runs_it(synthetic):
    """SGLang's 512-wide heads ran its Triton backend on Hopper (Engine.wide_head_attention): rows made
    with a Triton family of known rate fraction, floor and read bandwidth fit those three
    (`_reduced_attention_fit`: the tables hold too few rows for nine); on a Blackwell spec the same
    heads ran SGLang's own family, so no wide family is fitted there and its name prices as the own one."""
    base, truth, cases = synthetic
    sgl = [c for c in ce.cases_for("h100_sxm")["sglang"] if c["kind"] == "attention"]
    wide = [c for c in sgl if float(c["head_dim"]) > 256 and c.get("phase") == "prefill"]
    narrow = [c for c in sgl if float(c["head_dim"]) <= 256 and c.get("phase") == "prefill"][:60]
    triton = {"flops_fraction": 0.1, "overhead_s": 7e-6, "read_bytes_per_s": 1.6e12}
    kernels = {**TRUTH.attention_kernels, "sglang-prefill": dict(TRUTH.attention_kernels["vllm-prefill"]),
               "sglang-triton-prefill": triton}
    made = dataclasses.replace(truth, calibration=dataclasses.replace(TRUTH, attention_kernels=kernels))
    rows = [dict(c, measured_s=float(t)) for c, t in zip(wide + narrow, predict_many(ce.prepared(wide + narrow), made))]
    fitted = ce.fit_tables({"vllm": cases, "sglang": rows}, base)
    family = fitted.calibration.attention_kernels["sglang-triton-prefill"]
    assert set(family) == set(triton)
    # its rate: a fraction of the fitted bf16 GEMM rate, as the truth's is of its own
    assert family["flops_fraction"] * fitted.calibration.matmul_flops_per_s["bf16"] == pytest.approx(
        0.1 * TRUTH.matmul_flops_per_s["bf16"], rel=0.1)
    assert family["overhead_s"] == pytest.approx(7e-6, rel=0.25)
    held_out = [c for c in ce.prepared(rows) if c["split"] == "evaluation" and float(c["head_dim"]) > 256]
    assert np.median(np.abs(predict_many(held_out, fitted) / predict_many(held_out, made) - 1)) < 0.05
    blackwell = dataclasses.replace(base, architecture="blackwell")
    own = ce.fit_tables({"vllm": cases, "sglang": rows}, blackwell).calibration.attention_kernels
    assert own["sglang-triton-prefill"] == own["sglang-prefill"]


def test_each_moe_family_is_fitted_on_the_rows_its_kernel_ran(synthetic):
    """MoE rows made with two fused-MoE families (Triton under vLLM at 2.5 TB/s and 15 us a layer,
    FlashInfer's CUTLASS MoE under vLLM and SGLang alike at 0.6 TB/s and 30 us) fit each family's
    streaming rate and fixed time on the rows its kernel ran, across engines; each held-out row is
    priced with its own family, and the preset cites the MoE tables for both numbers."""
    base, truth, cases = synthetic
    moe = dataclasses.replace(truth, calibration=dataclasses.replace(
        TRUTH, moe_kernel_bytes_per_s={"vllm-triton": 2.5e12, "flashinfer-cutlass": 0.6e12},
        moe_kernel_latency_s={"vllm-triton": 15e-6, "flashinfer-cutlass": 30e-6}))
    rng = np.random.default_rng(1)
    rows = []
    for i in range(160):
        experts, top_k, hidden, inter = [(8, 2, 4096, 14336), (128, 8, 2048, 768), (256, 8, 4096, 2048),
                                         (64, 6, 2048, 1408), (16, 1, 5120, 8192)][i % 5]
        kernel, engine = [("vllm_unquantizedfusedmoe_triton_tritonexperts", "vllm"),
                          ("vllm_modeloptfp8moe_flashinfer_cutlass_flashinferexperts", "vllm"),
                          ("sglang_flashinfer_cutlass_moe", "sglang")][i % 3]
        rows.append({"kind": "moe", "tokens": int(2 ** rng.integers(0, 14)), "experts": experts, "top_k": top_k,
                     "hidden": hidden, "inter": inter, "moe_tp": int(2 ** rng.integers(0, 3)),
                     "moe_ep": [1, 2, 4][i % 3 if experts % 4 == 0 else 0], "dtype": "bf16",
                     "distribution": ["balanced", "power_law_1.2"][i % 2], "timing": "graph",
                     "kernel": kernel, "engine": engine, "source": f"table of {engine}"})
    times = predict_many(ce.prepared(rows), moe)
    measured = [dict(c, measured_s=float(t)) for c, t in zip(rows, times)]
    tables = {"vllm": cases + [c for c in measured if c["engine"] == "vllm"],
              "sglang": [c for c in measured if c["engine"] == "sglang"]}
    hw = ce.calibrated_preset(tables, base)
    cal = hw.calibration
    assert cal.moe_kernel_bytes_per_s["vllm-triton"] == pytest.approx(2.5e12, rel=0.1)
    assert cal.moe_kernel_latency_s["vllm-triton"] == pytest.approx(15e-6, rel=0.2)
    assert cal.moe_kernel_bytes_per_s["flashinfer-cutlass"] == pytest.approx(0.6e12, rel=0.1)
    assert cal.moe_kernel_latency_s["flashinfer-cutlass"] == pytest.approx(30e-6, rel=0.2)
    held_out = [c for c in ce.prepared(measured) if c["split"] == "evaluation"]
    ratio = predict_many(held_out, hw) / np.array([c["measured_s"] for c in held_out])
    assert np.median(np.abs(ratio - 1)) < 0.03
    assert "table of sglang" in hw.sources["calibration.moe_kernel_bandwidth.flashinfer-cutlass"]
    assert "table of vllm" in hw.sources["calibration.moe_kernel_latency.flashinfer-cutlass"]


def test_pytorch_sdpa_families_stand_in_from_the_gemm_engines_and_say_so(synthetic):
    """The tables time no SDPA call: torch-compile's families (sdpa-<phase>) are vLLM's, cited as a
    stand-in, and the generic attention floor nothing pins is left unfitted (0)."""
    base, _, cases = synthetic
    hw = ce.calibrated_preset({"vllm": cases}, base)
    cal = hw.calibration
    for phase in ("prefill", "decode"):
        assert cal.attention_kernels[f"sdpa-{phase}"] == cal.attention_kernels[f"vllm-{phase}"]
        assert hw.sources[f"calibration.attention_kernels.sdpa-{phase}.overhead"].startswith("stand-in")
    assert cal.attention_overhead_s == 0.0


def test_eagerly_timed_rows_are_scored_apart(synthetic):
    """A collector's eager rows (host dispatch in their time) get their own "(eager)" class."""
    base, truth, cases = synthetic
    reduces = [c for c in cases if c["kind"] == "allreduce" and c.get("timing") == "graph"][:6]
    eager = [dict({k: v for k, v in c.items() if k != "timing"}, measured_s=20e-6) for c in reduces]
    frame = ce.residuals({"vllm": reduces + eager}, truth)
    assert sorted(frame["class"].unique()) == ["allreduce_custom", "allreduce_custom (eager)"]
    assert (frame["class"] == "allreduce_custom (eager)").sum() == len(eager)


def test_the_preset_cites_a_table_for_every_fitted_number(synthetic):
    base, _, cases = synthetic
    hw = ce.calibrated_preset({"vllm": cases}, base)
    for path in ("calibration.matmul.bf16", "calibration.kernel_overhead", "calibration.custom_allreduce_latency",
                 "calibration.custom_allreduce_engine_latency.vllm", "calibration.act_quant_engine_row.vllm",
                 "calibration.attention_kernels.vllm-decode.overhead",
                 "calibration.attention_kernels.vllm-decode.stream_latency"):
        assert "aiconfigurator" in hw.sources[path], path


@pytest.mark.parametrize("argv, fragment", [
    (["calibrate", "--from", "aiconfigurator", "--system", "nope"], "--system: 'nope' has no datasheet preset"),
    (["calibrate", "--from", "aiconfigurator", "--system", "h100_sxm", "--engine", "tgi"],
     "--engine: 'tgi' has no tables for h100_sxm"),
    (["validate", "report", "--out", "validate/reports/h200", "--steps", "/nope.csv"],
     "--steps: file '/nope.csv' does not exist"),
])
def test_bad_external_calibration_input_is_one_line(argv, fragment, capsys, tmp_path):
    from app.cli import main

    extra = ["-o", str(tmp_path / "x.yaml")] if argv[0] == "calibrate" else []
    assert main(argv + extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err
    assert not (tmp_path / "x.yaml").exists()


def test_engine_kernels_carried_into_our_spec_keep_their_times():
    """Our H200 spec with the engines' kernels of the spec fitted to aiconfigurator's H200 tables
    (with_engine_kernels): every engine's attention cases, fp8 GEMM quantization path and custom
    all-reduce cost what the fitted spec says (rates rescaled, floors shifted), each with a source."""
    fitted = Hardware.from_yaml(ce.COMMITTED / "h200_sxm" / "h200-sxm-aiconfigurator.yaml")
    ours = hardware.load("h200-sxm-calibrated")
    engines = ("vllm", "trtllm", "sglang")
    bare = dataclasses.replace(ours.calibration, attention_kernels={
        f: p for f, p in ours.calibration.attention_kernels.items() if f.partition("-")[0] not in engines},
        **{attr: {} for _, attr in (*ce.ENGINE_MAPS, *ce.MOE_MAPS.items())})
    merged = ce.with_engine_kernels(dataclasses.replace(ours, calibration=bare), fitted)
    for engine, cases in ce.cases_for("h200_sxm").items():
        if engine == ce.NCCL_TABLE:
            continue
        attention = [c for c in ce.prepared(cases) if c["kind"] == "attention"][:40]
        assert np.allclose(predict_many(attention, merged), predict_many(attention, fitted), rtol=1e-9)
        assert merged.calibration.act_quant_engine_latency_s[engine] == fitted.calibration.act_quant_engine_latency_s[engine]
        assert "aiconfigurator" in merged.sources[f"calibration.attention_kernels.{engine}-decode.flops_fraction"]
    assert merged.calibration.attention_kernels["sdpa-decode"] == ours.calibration.attention_kernels["sdpa-decode"]
    # each fused-MoE family the engines' MoE tables fitted, with its source
    assert set(fitted.calibration.moe_kernel_bytes_per_s) >= {"vllm-triton", "sglang-triton", "trtllm-cutlass"}
    for attr in ce.MOE_MAPS.values():
        assert getattr(merged.calibration, attr) == getattr(fitted.calibration, attr)
    assert "moe_perf" in merged.sources["calibration.moe_kernel_bandwidth.vllm-triton"]
    # NCCL's link, fitted to the nccl-tests table, comes along (the same library under every engine)
    assert fitted.calibration.link_bytes_per_s > 0 and fitted.calibration.link_nvls == 1
    assert len(ce.LINK_FIELDS) == 4
    assert [getattr(merged.calibration, a) for _, a in ce.LINK_FIELDS] == \
        [getattr(fitted.calibration, a) for _, a in ce.LINK_FIELDS]
    assert "nccl_perf" in merged.sources["calibration.link_bandwidth"]


@pytest.mark.parametrize("spec, fragment", [
    ("/nope.yaml", "--engine-kernels: file '/nope.yaml' does not exist"),
    ("hardware/presets/h200-sxm.yaml", "has no calibration with a bf16 GEMM rate"),
])
def test_bad_engine_kernels_spec_is_one_line_before_any_fit(spec, fragment, capsys, tmp_path):
    """`validate calibrate --engine-kernels` with a missing file or a datasheet spec (nothing fitted
    to carry): one line naming the flag, exit 2, and no spec written (checked before the fit)."""
    import shutil

    from app.cli import main

    shutil.copy("validate/reports/h200/measurements.csv", tmp_path / "measurements.csv")
    assert main(["validate", "calibrate", "--out", str(tmp_path), "--engine-kernels", spec]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err
    assert not list(tmp_path.glob("*.yaml"))
