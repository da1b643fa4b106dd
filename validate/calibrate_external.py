"""Fit a calibrated spec to kernel tables measured by others (NVIDIA's aiconfigurator).

aiconfigurator's tables (validate/aiconfigurator.py) hold, per GPU and serving engine, latencies of
the engine's own GEMMs, attention backends, all-reduce and MoE layers, each timed inside CUDA-graph
replays. They pin the device side of a `Calibration`; the host side (eager dispatch) they do not
measure, so a spec fitted here prices graphed serving engines, not eager frameworks.

What comes from which table (every fitted number cites its table in the written preset):
- GEMM rates, read bandwidth, skinny-kernel parallelism, tile shape, split-K threshold and the
  per-kernel floor: the bf16 rows of the GEMM table of the `gemm_engine` (vLLM's are
  PyTorch/cuBLAS calls, as torch.compile runs them); then the fp8 rate and power roof, with the
  latency and per-row time of that engine's dynamic activation quantization every fp8 row includes
  (act_quant_engine_*), from its fp8 rows; every other engine's quantization path from its own fp8
  rows (SGLang's per-token kernel, TensorRT-LLM's FP8 QDQ path: ops.engine_quant_op);
- one attention kernel family per engine (its default backend on that GPU: FA3 for vLLM and
  SGLang on Hopper, TensorRT-LLM's FMHA/XQA): that engine's context and generation tables fit the
  family's fraction of the bf16 GEMM rate, floor per call and KV read bandwidth (a prefill family
  also its lone-unit speedup: roofline.longest_unit_s); each decode family is fitted on the rows its
  kernel ran (Engine.decode_kernels: TensorRT-LLM's XQA family on XQA's rows, its masked-MHA family
  "trtllm-mmha-decode" on the rest, or priced as XQA where fewer than MIN_FAMILY_ROWS);
- the custom all-reduce latency, per-peer barrier latency and bandwidth: the graphed custom
  all-reduce table of `ar_engine` (the shared default), and each engine's own from its own table
  (custom_allreduce_engine_*);
- NCCL's link (link_*: bandwidth, ring step, launch, NVLink SHARP over NVLink 4-5): the system's
  nccl-tests table (`NCCL_TABLE`, scored as its own engine), over NVLink only.
- one fused-MoE kernel family per kernel the MoE tables name (predict_cases.moe_family: vLLM's and
  SGLang's Triton fused_moe, TensorRT-LLM's CUTLASS MoE, FlashInfer's CUTLASS MoE): its weight
  streaming rate and fixed time per layer (moe_kernel_*), on the GEMM parameters above, from the
  rows of every engine that ran it (each row's expert-parallel rank and routing workload:
  validate/moe_routing.py).

Cases split by shape (validate.cases.split): the fit sees the calibration split only; the
residual table scores the evaluation split. Every fit here uses the robust loss
(validate.calibrate.ROBUST_LOSS): a table holds rows its engine ran on another kernel.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from hardware import fields
from hardware.spec import Calibration, Hardware
from perfmodel import engines
from perfmodel.roofline import kv_split_rule
from validate.calibrate import (ROBUST_LOSS, SUITE_ATTENTION_KERNEL, TILES, _fit_gemm_and_attention, earns_extra_term,
                                fit, unit_speedup_param)
from validate.cases import split
from validate.predict_cases import attention_family, attention_ops, moe_family, predict_many

ENGINES = ("vllm", "trtllm", "sglang")
#: The table of nccl-tests all-reduce times (the same library under every engine): fits the spec's
#: NCCL link (Calibration.link_*), scored as its own "engine".
NCCL_TABLE = "nccl"
COMMITTED = __import__("pathlib").Path(__file__).parent / "reports" / "aiconfigurator"


def cases_for(system: str, data=None) -> dict[str, list[dict]]:
    """{engine: cases} of one system: from a folder of <engine>.csv tables (the committed extracts
    by default, validate/reports/aiconfigurator/<system>), or from the installed package."""
    from pathlib import Path

    folder = Path(data) if data else COMMITTED / system
    if folder.is_dir():
        found = {e: load_cases(folder / f"{e}.csv") for e in ENGINES + (NCCL_TABLE,)
                 if (folder / f"{e}.csv").is_file()}
    else:
        from validate import aiconfigurator as aic

        found = {e: aic.read_cases(system, e, "current") for e in ENGINES + (NCCL_TABLE,)}
        found = {e: cs for e, cs in found.items() if cs}
    if not found:
        raise ValueError(f"--system: no tables for {system!r} in {folder}")
    return found


def prepared(cases: list[dict]) -> list[dict]:
    """Cases with the fields calibration needs: status, split, class; numbers as floats."""
    from validate.cases import kernel_class

    out = []
    for case in cases:
        c = {k: v for k, v in case.items() if not (isinstance(v, float) and np.isnan(v))}
        c.update(status="ok", split=split(c), **{"class": kernel_class(c)})
        out.append(c)
    return out


#: (YAML key under calibration., attribute) of the NCCL link a spec fitted to nccl-tests rows carries
#: (hardware.fields.CALIBRATION's link_* rows).
LINK_FIELDS = tuple((f.key.removeprefix("calibration."), f.attr) for f in fields.CALIBRATION
                    if f.attr.startswith("link_"))
#: YAML key of each attention kernel parameter (hardware.fields.ATTENTION).
ATTENTION_KEYS = {f.attr: f.key for f in fields.ATTENTION}
#: Calibration maps keyed by engine (YAML key under calibration., attribute): each engine's own fp8
#: quantization path and custom all-reduce (hardware.fields.CALIBRATION), with the table kind each is
#: fitted on.
ENGINE_MAPS = tuple((f.key.removeprefix("calibration."), f.attr) for f in fields.CALIBRATION if "_engine_" in f.attr)
ENGINE_MAP_TABLES = {"act_quant": "matmul", "custom_allreduce": "allreduce"}
#: The fused-MoE family maps (YAML key: attribute), keyed by family (Engine.moe_kernel).
MOE_MAPS = {f.key.removeprefix("calibration."): f.attr for f in fields.CALIBRATION if f.attr.startswith("moe_kernel_")}


def _with_sdpa_stand_in(cal: Calibration, profile) -> Calibration:
    """`cal` with PyTorch SDPA's kernel families (what torch-compile and eager profiles name) taken
    from `profile`'s FlashAttention families, per phase: the tables time no SDPA call, and without a
    family a profile would fall back to generic parameters nothing here pins. A stand-in (PyTorch
    runs FlashAttention-2 or cuDNN kernels, not FA3), cited as such (sources_of)."""
    kernels = dict(cal.attention_kernels)
    for phase in ("prefill", "decode"):
        family = profile.attention_kernel(phase)
        if family in kernels:
            kernels[f"{SUITE_ATTENTION_KERNEL}-{phase}"] = dict(kernels[family])
    return dataclasses.replace(cal, attention_kernels=kernels)

#: Rows a kernel family needs to be fitted on its own (its nine parameters, with room to spare).
MIN_FAMILY_ROWS = 12


def _unfitted_families_as_own(cal: Calibration, profile) -> Calibration:
    """`cal` with the profile's other kernel families priced as the family they stand beside where
    the tables held too few of their rows to fit them: the fallback decode family
    (Engine.decode_fallback_attention; MIN_FAMILY_ROWS) as the decode family, and the wide-head
    families (Engine.wide_head_attention; MIN_REDUCED_ROWS, or none at all on an architecture
    whose default backend takes wide heads) as the engine's own family of each phase. A kernel
    with no parameters would price at the spec's generic attention ones."""
    stand_ins = [(profile.fallback_decode_kernel, profile.attention_kernel("decode"))]
    if profile.wide_head_attention:
        stand_ins += [(f"{profile.wide_head_attention}-{phase}", profile.attention_kernel(phase))
                      for phase in ("prefill", "decode")]
    kernels = dict(cal.attention_kernels)
    for name, own in stand_ins:
        if name and name not in kernels and own in kernels:
            kernels[name] = dict(kernels[own])
    return dataclasses.replace(cal, attention_kernels=kernels)


#: Rows a wide-head family (Engine.wide_head_attention) needs for its reduced fit (`_reduced_attention_fit`).
MIN_REDUCED_ROWS = 5


def _is_wide_head_family(profile, family: str) -> bool:
    """Whether `family` ("<family>-<phase>") is the profile's wide-head family."""
    return bool(profile.wide_head_attention) and family.rpartition("-")[0] == profile.wide_head_attention


def _reduced_attention_fit(cases: list[dict], base: Hardware, cal: Calibration, family: str, bw: float,
                           profile) -> Calibration:
    """`cal` with a kernel family that has too few rows for its nine parameters (MIN_FAMILY_ROWS)
    fitted on three: its fraction of the bf16 GEMM rate, its floor per call and its KV read
    bandwidth (no work-unit, row or key terms). The tables hold 6-10 rows per engine and phase of
    the wide heads SGLang runs on Triton: long prefills pin the rate, short ones the floor. Decode
    rows do not pin a rate (a decode's FLOPs are a rounding error of its time), so a decode family
    takes its engine's own decode family's fraction and fits the other two."""
    fitted = {"overhead_s": (5e-6, 1e-8, 1e-3), "read_bytes_per_s": (0.5 * bw, 1e-3 * bw, 1.1 * bw)}
    start = {}
    own = cal.attention_kernels.get(profile.attention_kernel("decode"), {})
    if family.endswith("-decode") and "flops_fraction" in own:
        start["flops_fraction"] = own["flops_fraction"]
    else:
        fitted["flops_fraction"] = (0.3, 0.01, 1.2)
    cal = dataclasses.replace(cal, attention_kernels={**cal.attention_kernels, family: start})
    return fit(cases, base, cal, {f"attention_kernels:{family}:{key}": bounds for key, bounds in fitted.items()},
               loss=ROBUST_LOSS)[0]


def _attention_params(cal: Calibration, family: str, bw: float) -> dict:
    """An attention kernel family's parameters (roofline, attention); a decode family's also the
    fixed latency of its KV stream (split-KV kernels end with a pass combining the splits) and the
    time a work unit adds per element of its head dim (its queries, output and first key/value tile:
    on aiconfigurator's H200 tables SGLang's decodes of 2-128 cached tokens ran 1.17x faster than
    one unit time priced them at head dim 64-128 and 0.7-0.9x at 192-256; with the term its decode
    cell went 12.8 -> 9.9%, on B200 9.7 -> 7.5%)."""
    stream = {f"attention_kernels:{family}:stream_latency_s": (2e-6, 1e-9, 1e-4),
              f"attention_kernels:{family}:unit_head_dim_s": (5e-9, 1e-12, 1e-7)} if family.endswith("-decode") else {}
    return {**stream, f"attention_kernels:{family}:flops_fraction": (0.6, 0.01, 1.2),
            f"attention_kernels:{family}:overhead_s": (5e-6, 1e-8, 1e-3),
            f"attention_kernels:{family}:read_bytes_per_s": (0.8 * bw, 1e-3 * bw, 1.1 * bw),
            f"attention_kernels:{family}:unit_s": (2e-6, 1e-8, 1e-3),
            f"attention_kernels:{family}:row_s": (1e-7, 1e-10, 1e-4),
            f"attention_kernels:{family}:scores_per_s": (5e12, 1e10, 1e16), **unit_speedup_param(family)}


def _l2_param(cases: list[dict], base: Hardware, family: str, bw: float) -> dict:
    """A family's L2 streaming rate as a fit parameter (perfmodel.roofline.attention_read_rate)
    where at least MIN_REDUCED_ROWS of its rows were timed on one replayed cache that fits the
    spec's L2 and moved their bytes faster than the device memory can: an op's bytes (its queries,
    outputs and cache, each once) are what a cold call must fetch from memory at least (a prefill
    kernel's re-reads of its key and value tiles hit the L2 within the call, cold or warm), so
    bytes over time above the datasheet bandwidth mean the L2 held them before the call; else
    none. aiconfigurator's L40S tables hold such rows (decodes: 0.8-2.8 TB/s over 16-96 MB where
    the GDDR6 gives 0.864); its H100, H200, A100 and B200 tables none."""
    if not base.l2_cache_bytes:
        return {}
    beyond = 0
    for case in cases:  # one at a time: a family's rows span head layouts (attention_ops takes one)
        op = attention_ops([case], base.compute_units, base.architecture)[1][0][1]
        nbytes = float(np.ravel(op.bytes)[0])
        beyond += bool(np.all(op.warm_l2)) and nbytes <= base.l2_cache_bytes and \
            nbytes / float(case["measured_s"]) > base.hbm_bytes_per_s
    if beyond < MIN_REDUCED_ROWS:
        return {}
    return {f"attention_kernels:{family}:l2_bytes_per_s": (2.0 * bw, bw, 50.0 * bw)}


def _fit_attention_family(cases: list[dict], base: Hardware, cal: Calibration, family: str, bw: float) -> Calibration:
    """`cal` with an attention kernel family fitted on the rows its kernel ran (`_attention_params`);
    a decode family also tried with a time per cached key in each work unit (key_s: a split-KV
    kernel splits a sequence's keys over a bounded number of blocks, so where few (sequence, kv
    head) pairs run, each block streams a long run of keys at one SM's rate: TensorRT-LLM's XQA
    on aiconfigurator's H200 tables takes 25-37 us over 2-8 MB of cache for batch 1-2 and one kv
    head, 0.1-0.3 TB/s, where its large rows stream 3-4 TB/s). The term is kept only where it
    earns its place (`calibrate.earns_extra_term`, the rule a power roof is kept by)."""
    params = {**_attention_params(cal, family, bw), **_l2_param(cases, base, family, bw)}
    if kv_split_rule(family, base):  # its blocks' streams and its combine pass follow the kernel's own rule
        return fit(cases, base, cal, {**params, f"attention_kernels:{family}:block_bytes_per_s": (50e9, 1e8, 1e13),
                                      f"attention_kernels:{family}:combine_s": (1e-7, 1e-11, 1e-4)},
                   loss=ROBUST_LOSS)[0]
    fitted, cost = fit(cases, base, cal, params, loss=ROBUST_LOSS)
    if not family.endswith("-decode"):
        return fitted
    keyed, keyed_cost = fit(cases, base, cal, {**params, f"attention_kernels:{family}:key_s": (1e-9, 1e-13, 1e-6)},
                            loss=ROBUST_LOSS)
    return keyed if earns_extra_term(cost, keyed_cost) else fitted


def _act_quant_params(engine: str) -> dict:
    """An engine's dynamic fp8 activation quantization: fixed latency and time per row
    (perfmodel.roofline.engine_quant_time_s)."""
    return {f"act_quant_engine_latency_s:{engine}": (3e-6, 1e-8, 1e-3),
            f"act_quant_engine_row_s:{engine}": (3e-9, 1e-11, 1e-6)}


def fit_tables(by_engine: dict[str, list[dict]], base: Hardware, gemm_engine: str = "vllm",
               ar_engine: str = "vllm", source: str = "") -> Hardware:
    """A copy of `base` calibrated on the calibration split of each engine's cases."""
    train = {e: [c for c in prepared(cs) if c["split"] == "calibration"] for e, cs in by_engine.items()}
    bw, bf16 = base.hbm_bytes_per_s, base.peak_flops_per_s("bf16")
    cal = Calibration(matmul_flops_per_s={"bf16": bf16}, memory_bytes_per_s=bw, kernel_overhead_s=2e-6,
                      source=source)
    gemms = [c for c in train.get(gemm_engine, []) if c["kind"] == "matmul"]
    if not gemms:
        raise ValueError(f"gemm_engine: {gemm_engine!r} has no GEMM cases to fit")
    bf16 = [c for c in gemms if c["dtype"] != "fp8"]
    cal = _fit_gemm_and_attention(bf16 or gemms, base, cal, floor=True, loss=ROBUST_LOSS)
    cal = _with_gemm_write_rate(bf16 or gemms, base, cal)
    fp8 = [c for c in gemms if c["dtype"] == "fp8"]
    if fp8:  # fp8 rows include the engine's own dynamic activation quantization (ops.engine_quant_op)
        peak = base.peak_flops_per_s("fp8")
        params = {"matmul_flops_per_s:fp8": (0.7 * peak, 1e-3 * peak, 1.05 * peak),
                  "sustained_flops_per_s:fp8": (0.6 * peak, 1e-3 * peak, 1.05 * peak),
                  **_act_quant_params(gemm_engine)}
        if engines.load(gemm_engine).fp8_gemm_split_k:
            cal, _ = fit(fp8, base, cal, params, loss=ROBUST_LOSS)
        else:
            cal = _tile_grid_on_both(gemms, base, cal, params)
    cal = dataclasses.replace(cal, memory_read_bytes_per_s=cal.memory_read_bytes_per_s,
                              memory_bytes_per_s=cal.memory_read_bytes_per_s)
    for engine, cases in train.items():
        if engine == NCCL_TABLE:
            continue
        own_fp8 = [c for c in cases if c["kind"] == "matmul" and c["dtype"] == "fp8"]
        if engine != gemm_engine and own_fp8:  # each engine's quantization path on its own fp8 rows
            cal, _ = fit(own_fp8, base, cal, _act_quant_params(engine), loss=ROBUST_LOSS)
        # each kernel family on the rows its kernel ran (TensorRT-LLM's decodes: XQA, or masked MHA
        # for the head groups and small grids XQA declines; predict_cases.attention_family)
        attention = [c for c in cases if c["kind"] == "attention"]
        ran = [attention_family(c, base.compute_units, base.architecture) for c in attention]
        profile = engines.load(engine)
        # the wide-head families last: a decode one takes its engine's fitted decode family's rate
        for family in sorted(dict.fromkeys(ran), key=lambda name: _is_wide_head_family(profile, name)):
            own = [c for c, name in zip(attention, ran) if name == family]
            if len(own) >= MIN_FAMILY_ROWS:
                cal = _fit_attention_family(own, base, cal, family, bw)
            elif len(own) >= MIN_REDUCED_ROWS and _is_wide_head_family(profile, family):
                cal = _reduced_attention_fit(own, base, cal, family, bw, profile)
        cal = _unfitted_families_as_own(cal, profile)
    cal = _with_sdpa_stand_in(cal, engines.load(gemm_engine))
    cal = _with_moe_families(cal, train, base)
    link = base.device_link_bytes_per_s or base.host_link_bytes_per_s
    for engine in sorted(train, key=lambda e: e != ar_engine):  # ar_engine's first: the shared default
        reduces = [c for c in train[engine] if c["kind"] == "allreduce" and c.get("strategy") == "custom"
                   and c.get("timing") == "graph"]
        if not reduces:
            continue
        if engine == ar_engine:
            cal, _ = fit(reduces, base, cal, {"custom_allreduce_latency_s": (5e-6, 1e-7, 1e-3),
                                              "custom_allreduce_peer_latency_s": (1e-7, 1e-10, 1e-4),
                                              "custom_allreduce_bytes_per_s": (0.8 * link, 1e-3 * link, 2 * link)},
                         loss=ROBUST_LOSS)
        # each engine's own kernel (the default's too, so a spec names every engine it was fitted on)
        cal, _ = fit(reduces, base, cal, {
            f"custom_allreduce_engine_latency_s:{engine}": (cal.custom_allreduce_latency_s or 5e-6, 1e-7, 1e-3),
            f"custom_allreduce_engine_peer_latency_s:{engine}": (cal.custom_allreduce_peer_latency_s or 1e-7, 1e-10,
                                                                 1e-4),
            f"custom_allreduce_engine_two_shot_peer_latency_s:{engine}": (cal.custom_allreduce_peer_latency_s or 1e-7,
                                                                          1e-10, 1e-4),
            f"custom_allreduce_engine_bytes_per_s:{engine}": (cal.custom_allreduce_bytes_per_s or 0.8 * link,
                                                              1e-3 * link, 2 * link)}, loss=ROBUST_LOSS)
    cal = _with_nccl_link(cal, train.get(NCCL_TABLE, []), base)
    return dataclasses.replace(base, name=f"{base.name}-calibrated", title=f"{base.title} (calibrated)",
                               calibration=cal)


def _with_gemm_write_rate(gemms: list[dict], base: Hardware, cal: Calibration) -> Calibration:
    """`cal` with the GEMM output write rate (Calibration.gemm_write_bytes_per_s;
    perfmodel.roofline.gemm_stream_bytes) fitted with the 16-bit rates on the tiled GEMMs (m > 64):
    the rows whose output dominates their bytes (short reductions) pin it, the compute-bound rows
    keep the rates where the stage before left them."""
    wide = [c for c in gemms if float(c["m"]) > 64]
    read = cal.read_bytes_per_s
    params = {"gemm_write_bytes_per_s": (0.8 * read, 0.05 * read, 1.5 * read), **_bf16_rate_params(cal, base)}
    return fit(wide, base, cal, params, loss=ROBUST_LOSS)[0] if wide else cal


def _bf16_rate_params(cal: Calibration, base: Hardware) -> dict:
    """Fit parameters refitting the bf16 burst rate and power roof `cal` holds, from where they are."""
    params = {}
    for name in ("matmul_flops_per_s", "sustained_flops_per_s"):
        if "bf16" in getattr(cal, name):
            params[f"{name}:bf16"] = (getattr(cal, name)["bf16"], 1e-3 * getattr(cal, name)["bf16"],
                                      1.05 * base.peak_flops_per_s("bf16"))
    return params


def _with_moe_families(cal: Calibration, train: dict[str, list[dict]], base: Hardware) -> Calibration:
    """`cal` with each fused-MoE kernel family's weight streaming and fixed time per layer
    (Calibration.moe_kernel_*) fitted to the MoE rows its kernel ran, over every engine's table
    (FlashInfer's CUTLASS MoE runs under vLLM and SGLang alike: predict_cases.moe_family), on the
    GEMM parameters fitted before; a family with fewer than MIN_FAMILY_ROWS rows keeps the generic
    grouped GEMM."""
    moes = [c for cases in train.values() for c in cases if c["kind"] == "moe"]
    ran = [moe_family(c) for c in moes]
    read = cal.read_bytes_per_s
    for family in sorted(set(ran) - {""}):
        own = [c for c, name in zip(moes, ran) if name == family]
        if len(own) >= MIN_FAMILY_ROWS:
            cal, _ = fit(own, base, cal, {f"moe_kernel_bytes_per_s:{family}": (read, 1e-3 * read, 2 * read),
                                          f"moe_kernel_latency_s:{family}": (5e-6, 1e-8, 1e-3)}, loss=ROBUST_LOSS)
    return cal


def _with_nccl_link(cal: Calibration, reduces: list[dict], base: Hardware) -> Calibration:
    """`cal` with NCCL's all-reduce link over NVLink fitted to nccl-tests rows (perfmodel.collectives
    .fit_link_calibration: bandwidth, ring step, launch), with NVLink SHARP where the device link has
    it (collectives.NVLS_LINKS; NCCL runs it by default there). Unchanged without rows and over PCIe:
    aiconfigurator's L40S rows fall from 20 GB/s of bus bandwidth on 2 GPUs to 5.6 on 4 and 1.3 on 8
    (the GPUs share the host's PCIe bridges), which one link bandwidth cannot say (a fit gives 6 GB/s
    and misses by 63% where the datasheet link misses by 41%)."""
    from perfmodel import collectives

    kind = collectives.LinkCalibration.from_hardware(base).link
    if not reduces or kind != "nvlink":
        return cal
    algorithms = ("ring", "nvls") if base.device_link in collectives.NVLS_LINKS else ("ring",)
    link = collectives.fit_link_calibration(["all_reduce"] * len(reduces), [float(c["bytes"]) for c in reduces],
                                            [float(c["tp"]) for c in reduces],
                                            [float(c["measured_s"]) for c in reduces], link=kind,
                                            algorithms_options=(algorithms,))
    # a launch under a nanosecond is none (the fit's lower bound, not a measured cost)
    return dataclasses.replace(cal, link_bytes_per_s=link.bytes_per_s, link_step_latency_s=link.step_latency_s,
                               link_launch_s=round(link.launch_s, 9), link_nvls=int("nvls" in link.algorithms))


def _tile_grid_on_both(gemms: list[dict], base: Hardware, cal: Calibration, fp8_params: dict) -> Calibration:
    """The fp8 stage where the engine's fp8 GEMMs are CUTLASS tiles that never split the reduction
    (perfmodel.roofline.split_k_allowed): their times show the tile count and the per-tile streaming
    rate that split-K and the skinny kernel hide in the bf16 rows (on which two grids can fit
    alike: a synthetic table made on 64 x 128 tiles and 90 GB/s per tile fitted 128 x 256 and
    150 GB/s on its bf16 rows). So the grid is chosen again on the GEMMs of both dtypes, the
    per-tile rate fitted with the fp8 rates and quantization path per grid, the bf16 rates refitted."""
    bw = base.hbm_bytes_per_s
    params = {**fp8_params, "sm_bytes_per_s": (cal.sm_bytes_per_s or 0.02 * bw, 1e-4 * bw, bw),
              **_bf16_rate_params(cal, base)}
    best = None
    for tile_m, tile_n in TILES:
        fitted, cost = fit(gemms, base, dataclasses.replace(cal, tile_m=tile_m, tile_n=tile_n), params,
                           loss=ROBUST_LOSS)
        if best is None or cost < best[0]:
            best = (cost, fitted)
    return best[1]


def residuals(by_engine: dict[str, list[dict]], hw: Hardware) -> pd.DataFrame:
    """One row per case: engine, class, split, measured, predicted, ratio, APE. Rows a collector timed
    eagerly (vLLM's and SGLang's `*_eager` all-reduce rows: the custom op dispatched from Python, about
    20 us whatever the size) are scored under their own "(eager)" class, as the suite's eager kernels
    are (validate.report.report_class): a spec fitted on graph-timed tables carries no host dispatch."""
    from validate.report import report_class

    frames = []
    for engine, cases in by_engine.items():
        cases = prepared(cases)
        predicted = predict_many(cases, hw)
        frame = pd.DataFrame({"engine": engine, "kind": [c["kind"] for c in cases],
                              "timing": [c.get("timing") or "" for c in cases], "class": [c["class"] for c in cases],
                              "dtype": [c.get("dtype", "") for c in cases], "split": [c["split"] for c in cases],
                              "measured_s": [float(c["measured_s"]) for c in cases], "predicted_s": predicted})
        eager = np.where(report_class(frame).str.endswith(" (eager)"), " (eager)", "")
        typed = frame["kind"].isin(("matmul", "moe"))  # GEMMs and MoE layers scored per dtype
        frame["class"] = frame["class"] + np.where(typed, " " + frame["dtype"].astype(str), "") + eager
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    frame["ratio"] = frame["predicted_s"] / frame["measured_s"]
    frame["ape"] = (frame["ratio"] - 1).abs()
    return frame[["engine", "class", "split", "measured_s", "predicted_s", "ratio", "ape"]]


def residual_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Median and p90 APE and the median ratio per engine, class and split."""
    return (frame.groupby(["engine", "class", "split"])
            .agg(cases=("ape", "size"), median_ape=("ape", "median"), p90_ape=("ape", lambda x: x.quantile(0.9)),
                 median_ratio=("ratio", "median"))
            .reset_index())


def sources_of(by_engine: dict[str, list[dict]], gemm_engine: str, ar_engine: str, cal: Calibration) -> dict:
    """Per calibration path (as the YAML spells it), the tables the fitted number comes from."""
    def cited(found: set) -> str:
        return "; ".join(sorted(found)) + " (fit on the shape-split calibration half: validate/calibrate_external.py)"

    def tables(engine: str, kind: str, phase: str | None = None) -> str:
        return cited({c.get("source", "") for c in by_engine.get(engine, [])
                      if c["kind"] == kind and (phase is None or c.get("phase") == phase)})

    gemm = tables(gemm_engine, "matmul")
    out = {f"calibration.{group}.{d}": gemm for group, table in (("matmul", cal.matmul_flops_per_s),
                                                                   ("sustained_matmul", cal.sustained_flops_per_s),
                                                                   ("gemv", cal.gemv_bytes_per_s)) for d in table}
    for key in ("memory_bandwidth", "memory_read_bandwidth", "sm_bandwidth", "kernel_overhead", "tile_m", "tile_n",
                "split_k_min", "gemv_tile_n", "gemm_latency", "gemm_write_bandwidth"):
        out[f"calibration.{key}"] = gemm
    for key, attr in ENGINE_MAPS:
        kind = ENGINE_MAP_TABLES[key.partition("_engine_")[0]]
        out.update({f"calibration.{key}.{engine}": tables(engine, kind) for engine in getattr(cal, attr)})
    for family in cal.attention_kernels:
        engine, phase = family.partition("-")[0], family.rpartition("-")[2]  # "trtllm-mmha-decode"
        stand_in = engine == SUITE_ATTENTION_KERNEL  # the GEMM engine's family of the phase (_with_sdpa_stand_in)
        measured = tables(gemm_engine if stand_in else engine, "attention", phase)
        if stand_in:
            measured = f"stand-in for PyTorch's SDPA, not measured: {gemm_engine}'s FlashAttention: {measured}"
        for attr in cal.attention_kernels[family]:
            out[f"calibration.attention_kernels.{family}.{ATTENTION_KEYS[attr]}"] = measured
    for family in cal.moe_kernel_bytes_per_s:  # every engine's MoE rows its kernel ran (_with_moe_families)
        ran = cited({c.get("source", "") for cases in by_engine.values() for c in cases
                     if c["kind"] == "moe" and moe_family(c) == family})
        out.update({f"calibration.{key}.{family}": ran for key in MOE_MAPS})
    for key in ("custom_allreduce_latency", "custom_allreduce_peer_latency", "custom_allreduce_bandwidth"):
        out[f"calibration.{key}"] = tables(ar_engine, "allreduce")
    if cal.link_bytes_per_s:
        for key, _ in LINK_FIELDS:
            out[f"calibration.{key}"] = tables(NCCL_TABLE, "allreduce")
    return out


def calibrated_preset(by_engine: dict[str, list[dict]], base: Hardware, gemm_engine: str = "vllm",
                      ar_engine: str = "vllm") -> Hardware:
    """`fit_tables` with per-number sources and the evaluation split's error bands (per class,
    over every engine's cases)."""
    from validate.calibrate import error_bands

    source = "aiconfigurator tables, fitted by validate/calibrate_external.py"
    hw = fit_tables(by_engine, base, gemm_engine, ar_engine, source)
    evaluation = [c for cs in by_engine.values() for c in prepared(cs)]
    bands = error_bands(evaluation, hw)
    cal = dataclasses.replace(hw.calibration, error_bands=bands)
    sources = {**hw.sources, **sources_of(by_engine, gemm_engine, ar_engine, cal)}
    sources.update({f"calibration.error_bands.{c}.{q}": "measured / predicted on the shape-split evaluation half "
                    "of the same tables (validate/reports/aiconfigurator)" for c in bands for q in ("p10", "p90")})
    return dataclasses.replace(hw, calibration=cal, sources=sources)


def with_engine_kernels(onto: Hardware, fitted: Hardware) -> Hardware:
    """`onto` (a spec calibrated on our own suite) carrying the serving engines' own kernels that
    `fitted` (a spec fitted to the same GPU's engine tables) measured: each engine's attention
    families, fp8 quantization path, custom all-reduce and fused-MoE families (absolute rates and
    times), and NCCL's link fitted to nccl-tests rows
    where `onto` has none, with their sources. An attention family's
    time must not move: its rate fraction is rescaled from `fitted`'s bf16 rate to `onto`'s, and its
    floor (beyond the launch floor) shifted by the two specs' launch floors; the rest are absolute
    times and rates. Our suite times PyTorch's kernels only, so without this an engine profile on
    `onto` would price its attention with the generic fit."""
    mine, theirs = onto.calibration, fitted.calibration
    scale = theirs.matmul_flops_per_s["bf16"] / mine.matmul_flops_per_s["bf16"]
    shift = theirs.kernel_overhead_s - mine.kernel_overhead_s
    converted = " (converted to this spec's bf16 rate and launch floor)"
    families, sources = dict(mine.attention_kernels), dict(onto.sources)
    for family, params in theirs.attention_kernels.items():
        if family.partition("-")[0] not in ENGINES:
            continue  # the SDPA stand-ins: our suite measured SDPA itself
        families[family] = {**params, "flops_fraction": params["flops_fraction"] * scale,
                            "overhead_s": max(params["overhead_s"] + shift, 0.0)}
        for attr in params:
            path = f"calibration.attention_kernels.{family}.{ATTENTION_KEYS[attr]}"
            sources[path] = fitted.sources.get(path, "") + (converted if attr in ("flops_fraction", "overhead_s") else "")
    maps = {}
    for key, attr in (*ENGINE_MAPS, *MOE_MAPS.items()):
        maps[attr] = {**getattr(mine, attr), **getattr(theirs, attr)}
        sources.update({f"calibration.{key}.{e}": fitted.sources.get(f"calibration.{key}.{e}", "")
                        for e in getattr(theirs, attr)})
    links = {}
    if theirs.link_bytes_per_s and not mine.link_bytes_per_s:  # NCCL's link: the same library under every engine
        links = {attr: getattr(theirs, attr) for _, attr in LINK_FIELDS}
        sources.update({f"calibration.{key}": fitted.sources.get(f"calibration.{key}", "") for key, _ in LINK_FIELDS})
    cal = dataclasses.replace(mine, attention_kernels=families, **maps, **links)
    return dataclasses.replace(onto, calibration=cal, sources=sources)


def load_cases(path) -> list[dict]:
    """Cases of one committed CSV (validate/reports/aiconfigurator/<system>/<engine>.csv)."""
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    return [{k: v for k, v in r.items() if not (isinstance(v, float) and np.isnan(v))}
            for r in frame.to_dict("records")]
