"""Fit a `Calibration` from measured cases: what the datasheet does not say.

Every fit minimises the squared log ratio of predicted to measured time (scale-free: a 10 us kernel
and a 10 ms step weigh alike) over the calibration split only; evaluation cases are never seen.
Parameters are fitted in log space with bounds (scipy.optimize.least_squares, trust-region
reflective), each group on the kernel classes that identify it, in dependency order.

Device and host are fitted apart. Where the measurements hold kernels timed inside CUDA-graph
replays (timing="graph", a GPU suite), every device parameter (rates, floors, tiles) comes from
those alone, free of host dispatch; kernels launched one by one from eager PyTorch then fit only
the host's costs (dispatch per op, Python per layer and per step), with the device side fixed. A
CPU suite, which has no graphs, fits both from its eager cases as before.

1. launch floor: the device-side cost of a kernel, from tiny kernels replayed in a CUDA graph, then
   refined with the streaming bandwidth on graph-timed copies and elementwise kernels;
2. streaming memory and eager dispatch: time = max(floor + bytes / bw, ops x dispatch), from device
   copies and elementwise kernels (small sizes pin the dispatch, large ones the bandwidth);
3. normalisation kernels' and cache concatenation's bandwidths, from norm and kv_append cases
   (and PyTorch's row-per-block LayerNorm: one block's rate and its row latency, from its cases);
4. host link per direction, pinned and pageable: time = latency + bytes / bw;
5. GEMMs and attention jointly: achieved rate per dtype, read bandwidth, per-thread-block bandwidth,
   the GEMM kernels' fill latency,
   attention's fraction of the GEMM rate and its extra floor, with the tile shape and split-K
   threshold chosen on a grid (wave quantization and parallelism);
6. weight-only formats: a rate and a dequantization bandwidth each;
7. the eager framework's host overhead per layer and per step, from whole-model steps.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools

import numpy as np
from scipy import optimize

from hardware.spec import Calibration, Hardware
from perfmodel.roofline import streams_unit_keys
from validate.cases import text
from validate.predict_cases import CaseSet, graphed, predict_many

TILES = ((64, 128), (128, 128), (128, 256), (256, 128))
SPLIT_K_MIN = (256, 512, 1024, 2048, 4096, 8192)


def log_residuals(cases: CaseSet, hw: Hardware, measured: np.ndarray) -> np.ndarray:
    """log(predicted / measured) of every case of a CaseSet (grouped once, for a fit's many calls),
    `measured` its cases' times in their order."""
    return np.log(cases.predict(hw) / measured)


def _set(cal: Calibration, path: str, value: float) -> Calibration:
    """Set a field ('memory_bytes_per_s'), a dict entry ('matmul_flops_per_s:bf16') or an entry of
    a nested dict ('attention_kernels:vllm:overhead_s')."""
    if path.count(":") == 2:
        field, outer, key = path.split(":")
        table = getattr(cal, field)
        return dataclasses.replace(cal, **{field: {**table, outer: {**table.get(outer, {}), key: value}}})
    if ":" in path:
        field, key = path.split(":")
        return dataclasses.replace(cal, **{field: {**getattr(cal, field), key: value}})
    return dataclasses.replace(cal, **{path: value})


#: Robust loss for fits on tables others measured (validate.calibrate_external): scipy's soft_l1 on
#: log(predicted / measured) at scale ROBUST_SCALE behaves as least squares for cases within ~10%
#: and grows linearly beyond, so the few rows a table's engine ran on another kernel (FA3's
#: unsupported head dims, TensorRT-LLM's MMHA where its XQA heuristic declines) do not drag the
#: main kernel's fit; the score is a median APE, which such rows do not move either.
ROBUST_LOSS, ROBUST_SCALE = "soft_l1", 0.1


def fit(cases: list[dict], base: Hardware, cal: Calibration, params: dict[str, tuple[float, float, float]],
        loss: str = "linear") -> tuple[Calibration, float]:
    """Fit `params` {path: (initial, low, high)} on `cases` (log residuals; `loss` "linear": least
    squares, or ROBUST_LOSS); returns the calibration and the cost."""
    if not cases or not params:
        return cal, 0.0
    paths = list(params)
    lo = np.log([params[p][1] for p in paths])
    hi = np.log([params[p][2] for p in paths])
    x0 = np.clip(np.log([params[p][0] for p in paths]), lo + 1e-9, hi - 1e-9)

    def build(z) -> Calibration:
        out = cal
        for path, value in zip(paths, np.exp(z)):
            out = _set(out, path, float(value))
        return out

    grouped, measured = CaseSet(cases), np.array([float(c["measured_s"]) for c in cases])

    def residuals(z):
        return log_residuals(grouped, dataclasses.replace(base, calibration=build(z)), measured)

    # max(device, host) terms make the cost piecewise smooth: start from three points a factor
    # of three apart and keep the best
    best = None
    for shift in (0.0, 1.1, -1.1):
        start = np.clip(x0 + shift, lo + 1e-9, hi - 1e-9)
        robust = {} if loss == "linear" else {"loss": loss, "f_scale": ROBUST_SCALE}
        res = optimize.least_squares(residuals, start, bounds=(lo, hi), method="trf", x_scale=1.0, diff_step=1e-3,
                                     **robust)
        if best is None or res.cost < best.cost:
            best = res
    return build(best.x), float(2 * best.cost)


def _of(cases: list[dict], *classes: str) -> list[dict]:
    return [c for c in cases if c["class"] in classes]


def _suite_attention(cases: list[dict], phase: str) -> list[dict]:
    """The suite's own SDPA cases of a phase: those naming no engine (cases that name an engine ran
    that engine's kernel family, fitted apart: _fit_masked_attention)."""
    return [c for c in _of(cases, f"attention_{phase}") if not text(c, "engine")]


#: The attention kernel family the suite's SDPA cases time (PyTorch's FlashAttention-2 path).
SUITE_ATTENTION_KERNEL = "sdpa"


def device_and_host_cases(cases: list[dict]) -> tuple[list[dict], list[dict]]:
    """(cases that fit device parameters, cases that fit host parameters): graph-timed kernels and
    eager ones where a suite has both; all of them for both where it has no graph-timed kernels."""
    graph = [c for c in cases if graphed(c) and c["kind"] != "model_step"]
    if not graph:
        return cases, cases
    eager = [c for c in cases if not graphed(c) and c["kind"] not in ("launch",)]
    return graph + _of(cases, "launch"), eager


def calibrate(measured: list[dict], base: Hardware, source: str = "") -> Hardware:
    """A copy of `base` whose Calibration is fitted on the calibration-split cases of `measured`."""
    cases = [c for c in measured if c.get("status") == "ok" and c.get("split") == "calibration"]
    if not cases:
        raise ValueError("measurements: no successful calibration-split cases to fit")
    device, host = device_and_host_cases(cases)
    separate = device is not host
    bw, bf16 = base.hbm_bytes_per_s, base.peak_flops_per_s("bf16")
    cal = Calibration(matmul_flops_per_s={"bf16": bf16}, memory_bytes_per_s=bw, kernel_overhead_s=2e-6,
                      source=source)
    launches = _of(cases, "launch")
    if launches:
        per_kernel = [float(c["measured_s"]) / float(c["kernels"]) for c in launches]
        cal = dataclasses.replace(cal, kernel_overhead_s=float(np.median(per_kernel)))
    streaming = _of(device, "copy_d2d", "elementwise")
    if separate:  # graph-timed: the floor of a real (DRAM-touching) kernel, then the host's dispatch
        cal, _ = fit(streaming, base, cal, {"memory_bytes_per_s": (0.9 * bw, 1e-3 * bw, 1.2 * bw),
                                            "kernel_overhead_s": (cal.kernel_overhead_s, 1e-8, 1e-4)})
        cal, _ = fit(_of(host, "copy_d2d", "elementwise"), base, cal, {"dispatch_s": (1e-5, 1e-8, 1e-2)})
    else:
        cal, _ = fit(streaming, base, cal, {
            "memory_bytes_per_s": (0.9 * bw, 1e-3 * bw, 1.2 * bw), "dispatch_s": (1e-5, 1e-8, 1e-2)})
    norms = _of(device, "norm")
    cal, _ = fit(norms, base, cal, {"norm_bytes_per_s": (0.5 * bw, 1e-4 * bw, 1.2 * bw)})
    if any(c["op"] == "layernorm" for c in norms):  # PyTorch's row-per-block LayerNorm kernel
        cal, _ = fit([c for c in norms if c["op"] == "layernorm"], base, cal, {
            "row_norm_bytes_per_s": (1e-3 * bw, 1e-6 * bw, bw), "row_norm_latency_s": (1e-6, 1e-9, 1e-4)})
    cal, _ = fit(_of(device, "kv_append"), base, cal, {"concat_bytes_per_s": (0.5 * bw, 1e-4 * bw, 1.2 * bw)})
    cal = _fit_transfers(host, base, cal)
    cal = _fit_gemm_and_attention(device, base, cal)
    cal = _fit_weight_only(device, base, cal)
    cal = _fit_engine_kernels(device, base, cal)
    if base.compute_units > 1:  # the suite's SDPA cases are this family's own measurements, per phase
        cal = dataclasses.replace(cal, attention_kernels={**cal.attention_kernels, SUITE_ATTENTION_KERNEL: {
            "flops_fraction": cal.attention_flops_fraction, "overhead_s": max(cal.attention_overhead_s, 1e-9),
            "read_bytes_per_s": cal.read_bytes_per_s}})
        cal = _fit_attention_phases(device, base, cal)
    cal, _ = fit(_of(host, "model_step_prefill", "model_step_decode"), base, cal, {
        "layer_overhead_s": (1e-4, 1e-8, 1e-1), "step_overhead_s": (1e-3, 1e-8, 1.0)})
    return dataclasses.replace(base, name=f"{base.name}-calibrated", title=f"{base.title} (calibrated)",
                               calibration=cal)


def _fit_transfers(cases: list[dict], base: Hardware, cal: Calibration) -> Calibration:
    fields = {("h2d", 1): "host_to_device_bytes_per_s", ("d2h", 1): "device_to_host_bytes_per_s",
              ("h2d", 0): "host_to_device_pageable_bytes_per_s", ("d2h", 0): "device_to_host_pageable_bytes_per_s"}
    copies = [c for c in cases if c["kind"] == "copy" and c["direction"] != "d2d"]
    link = base.host_link_bytes_per_s
    params = {"transfer_latency_s": (1e-5, 1e-8, 1e-3)}
    for (direction, pinned), field in fields.items():
        if any(c["direction"] == direction and int(float(c["pinned"])) == pinned for c in copies):
            params[field] = (0.5 * link, 0.001 * link, 2 * link)
    return fit(copies, base, cal, params)[0] if len(params) > 1 else cal


def _gemm_dtype(case: dict) -> str:
    """The GEMM path a case's dtype runs in the cost model: fp16 and bf16 share the 16-bit tensor
    cores (equal peaks on every preset), so 16-bit cases all inform the bf16 rate."""
    return "bf16" if case["dtype"] == "fp16" else case["dtype"]


def _fit_gemm_and_attention(cases: list[dict], base: Hardware, cal: Calibration, floor: bool = False,
                            loss: str = "linear") -> Calibration:
    """Staged, because each regime identifies different parameters: skinny GEMMs (m <= 64) and decode
    attention pin the read bandwidth and the GEMV parallelism; large GEMMs pin each dtype's rate
    and, on a grid, the tile shape; prefill attention pins its fraction of the GEMM rate. With
    `floor` the skinny GEMMs also fit the per-kernel floor (tables of GEMMs alone, with no small
    streaming kernels to pin it). `loss`: as `fit`'s, for every stage."""
    fitting = functools.partial(fit, loss=loss)
    gemms = [c for c in cases if c["kind"] == "matmul"]
    skinny = [c for c in gemms if float(c["m"]) <= 64]
    wide = [c for c in gemms if float(c["m"]) > 64]
    bw = base.hbm_bytes_per_s
    gpu = base.compute_units > 1
    memory = {"memory_read_bytes_per_s": (0.95 * bw, 1e-3 * bw, 1.1 * bw)}
    if _suite_attention(cases, "decode"):  # the generic attention floor, where SDPA cases pin it
        memory["attention_overhead_s"] = (1e-5, 1e-8, 1e-2)
    if gpu:
        memory["sm_bytes_per_s"] = (0.02 * bw, 0.001 * bw, 1.0 * bw)
        if not floor:  # GEMMs alone (floor): a fill latency and the launch floor are one constant
            memory["gemm_latency_s"] = (2e-6, 1e-8, 1e-4)
    if floor:
        memory["kernel_overhead_s"] = (cal.kernel_overhead_s, 1e-7, 1e-4)
    best = None
    for gemv_tile, split in itertools.product((64, 128, 256) if gpu else (1,), SPLIT_K_MIN if gpu else (1,)):
        trial = dataclasses.replace(cal, tile_m=128 if gpu else 1, tile_n=128 if gpu else 1,
                                    gemv_tile_n=gemv_tile if gpu else 0, split_k_min=split)
        fitted, cost = fitting(skinny + _suite_attention(cases, "decode"), base, trial, memory)
        if best is None or cost < best[0]:
            best = (cost, fitted)
    cal = best[1]
    # per dtype, the skinny-GEMM kernel's own per-block rate (cuBLAS runs other kernels for fp32/fp8);
    # the 16- and 8-bit ones together with the GEMM kernels' fill latency they share (fitted on GEMMs
    # alone, as from external tables (floor), a fill latency and the launch floor are one constant)
    def gemv_rate(dtype):
        return {f"gemv_bytes_per_s:{dtype}": (cal.sm_bytes_per_s or 0.02 * bw, 1e-4 * bw, bw)}

    dtypes = sorted({_gemm_dtype(c) for c in skinny}) if gpu else []
    tensor_core = [d for d in dtypes if d != "fp32"]
    if tensor_core and not floor:
        params = {"gemm_latency_s": (cal.gemm_latency_s or 2e-6, 1e-8, 1e-4)}
        for dtype in tensor_core:
            params.update(gemv_rate(dtype))
        cal, _ = fitting([c for c in skinny if _gemm_dtype(c) in tensor_core], base, cal, params)
        dtypes = [d for d in dtypes if d not in tensor_core]
    for dtype in dtypes:
        cal, _ = fitting([c for c in skinny if _gemm_dtype(c) == dtype], base, cal, gemv_rate(dtype))
    dtypes = sorted({_gemm_dtype(c) for c in gemms} | {"bf16"})
    rates = {f"matmul_flops_per_s:{d}": (0.8 * base.peak_flops_per_s(d), 1e-3 * base.peak_flops_per_s(d),
                                         1.05 * base.peak_flops_per_s(d))
             # fp16 and bf16 share the 16-bit tensor-core path in the cost model (equal peaks on
             # every preset), so 16-bit cases all inform the bf16 rate
             for d in dtypes}
    best = None
    for tile_m, tile_n in TILES if gpu else ((1, 1),):
        fitted, cost = fitting(wide or gemms, base, dataclasses.replace(cal, tile_m=tile_m, tile_n=tile_n), rates)
        if best is None or cost < best[0]:
            best = (cost, fitted)
    cal = _with_power_roofs(wide or gemms, base, best[1], dtypes, fitting) if gpu else best[1]
    return fitting(_suite_attention(cases, "prefill"), base, cal, {"attention_flops_fraction": (0.6, 0.01, 1.2)})[0]


#: Fraction of a fit's cost an extra term must remove to be kept (`earns_extra_term`).
EXTRA_TERM_GAIN = 0.01


def earns_extra_term(cost: float, extended_cost: float) -> bool:
    """Whether a fit with an extra term (a power roof, a decode family's time per key) lowers the
    cost of the fit without it by EXTRA_TERM_GAIN: a term that explains little trades off with the
    rates beside it, and the simpler account of the data wins the tie."""
    return extended_cost < (1.0 - EXTRA_TERM_GAIN) * cost


def _with_power_roofs(gemms: list[dict], base: Hardware, cal: Calibration, dtypes: list, fitting) -> Calibration:
    """`cal` with each dtype's power roof (Calibration.sustained_flops_per_s: large GEMMs run below
    the burst rate once the board reaches its power limit) fitted with its rate on its own GEMMs,
    from the rate fitted without it, and kept only where it earns its place (`earns_extra_term`):
    a roof and a rate trade off exactly on shapes that never reach the roof (one shape of fp32
    GEMMs at a few m fits a 7% higher rate under a roof as well as the true rate without one)."""
    for d in dtypes:
        own = [c for c in gemms if _gemm_dtype(c) == d]
        peak = base.peak_flops_per_s(d)
        rate = {f"matmul_flops_per_s:{d}": (cal.matmul_flops_per_s[d], 1e-3 * peak, 1.05 * peak)}
        _, cost = fitting(own, base, cal, rate)
        roofed, roofed_cost = fitting(own, base, cal, {**rate, f"sustained_flops_per_s:{d}": (0.75 * peak, 1e-3 * peak,
                                                                                               1.05 * peak)})
        if earns_extra_term(cost, roofed_cost):
            cal = roofed
    return cal


def unit_speedup_param(family: str) -> dict:
    """The fit parameter of a family's lone-unit speedup (perfmodel.roofline.unit_score_s: its longest
    unit bounds the kernel), starting at its fair share of the SM; none for a family whose units
    split their keys (decode, a masked static cache: roofline.streams_unit_keys)."""
    if not streams_unit_keys(family):
        return {}
    return {f"attention_kernels:{family}:unit_speedup": (1.0, 0.1, 100.0)}


def _fit_attention_phases(cases: list[dict], base: Hardware, cal: Calibration) -> Calibration:
    """The suite's attention kernel family per phase ("sdpa-prefill", "sdpa-decode": prefill and
    decode run different kernels, e.g. cuDNN's wgmma prefill and its split-KV decode with a
    reduction): rate fraction, floor, KV read bandwidth and work-unit time, each on its own cases."""
    bw = base.hbm_bytes_per_s
    for phase in ("prefill", "decode"):
        family = f"{SUITE_ATTENTION_KERNEL}-{phase}"
        start = dict(cal.attention_kernels[SUITE_ATTENTION_KERNEL])
        cal = dataclasses.replace(cal, attention_kernels={**cal.attention_kernels, family: start})
        params = {f"attention_kernels:{family}:flops_fraction": (start["flops_fraction"], 0.01, 1.2),
                  f"attention_kernels:{family}:overhead_s": (start["overhead_s"], 1e-8, 1e-3),
                  f"attention_kernels:{family}:read_bytes_per_s": (start["read_bytes_per_s"], 1e-3 * bw, 1.1 * bw),
                  f"attention_kernels:{family}:unit_s": (2e-6, 1e-8, 1e-3),
                  f"attention_kernels:{family}:row_s": (1e-7, 1e-10, 1e-4), **unit_speedup_param(family)}
        cal, _ = fit(_suite_attention(cases, phase), base, cal, params)
    return _fit_masked_attention(cases, base, cal)


def _fit_masked_attention(cases: list[dict], base: Hardware, cal: Calibration) -> Calibration:
    """Attention over a masked static cache ("sdpa-masked-<phase>", the kernels of engine profiles
    that name that family, e.g. torch-compile-static-cache): the suite family's five parameters plus
    a time per cached key per work unit (the masked kernel does not split the keys over SMs: at batch
    1 its 8 units each stream 1024-8192 keys), per phase, fitted on the cases that ran it."""
    from validate.predict_cases import attention_family

    bw = base.hbm_bytes_per_s
    for phase in ("prefill", "decode"):
        family = f"{SUITE_ATTENTION_KERNEL}-masked-{phase}"
        own = [c for c in _of(cases, f"attention_{phase}") if text(c, "engine") and attention_family(c) == family]
        if len(own) < 6:  # six parameters: fewer cases leave the family to fall back (Calibration.attention_kernel)
            continue
        # its units all stream the whole cache (key_s): no longest unit of its own (roofline.has_longest_unit)
        start = {k: v for k, v in cal.attention_kernels[f"{SUITE_ATTENTION_KERNEL}-{phase}"].items() if k != "unit_speedup"}
        cal = dataclasses.replace(cal, attention_kernels={**cal.attention_kernels, family: start})
        params = {f"attention_kernels:{family}:flops_fraction": (start["flops_fraction"], 0.01, 1.2),
                  f"attention_kernels:{family}:overhead_s": (start["overhead_s"], 1e-8, 1e-3),
                  f"attention_kernels:{family}:read_bytes_per_s": (start["read_bytes_per_s"], 1e-3 * bw, 1.1 * bw),
                  f"attention_kernels:{family}:unit_s": (start.get("unit_s", 2e-6), 1e-8, 1e-3),
                  f"attention_kernels:{family}:row_s": (start.get("row_s", 1e-7), 1e-10, 1e-4),
                  # each unit streams its sequence's whole masked cache: a time per cached key
                  f"attention_kernels:{family}:key_s": (1e-8, 1e-12, 1e-5)}
        cal, _ = fit(own, base, cal, params)
    return cal


def _fit_engine_kernels(cases: list[dict], base: Hardware, cal: Calibration) -> Calibration:
    """Kernels of compiled engine steps: the whole-tensor reduction of per-tensor fp8 quantization,
    then whole MoE layers (grouped-GEMM weight streaming and the fixed routing time)."""
    bw = base.hbm_bytes_per_s
    cal, _ = fit(_of(cases, "act_quant"), base, cal, {"reduction_bytes_per_s": (0.01 * bw, 1e-5 * bw, 1.1 * bw)})
    return fit(_of(cases, "moe"), base, cal, {"grouped_bytes_per_s": (0.6 * bw, 1e-3 * bw, 1.1 * bw),
                                               "moe_routing_s": (2e-5, 1e-8, 1e-2)})[0]


def _fit_weight_only(cases: list[dict], base: Hardware, cal: Calibration) -> Calibration:
    bf16, bw = base.peak_flops_per_s("bf16"), base.hbm_bytes_per_s
    for w_bits, key in ((8, "w8a16"), (4, "w4a16")):
        group = [c for c in cases if c["kind"] == "matmul_wo" and int(float(c["w_bits"])) == w_bits]
        cal, _ = fit(group, base, cal, {f"matmul_flops_per_s:{key}": (0.1 * bf16, 1e-4 * bf16, 1.05 * bf16),
                                        f"dequant_bytes_per_s:{key}": (0.5 * bw, 1e-3 * bw, 1.1 * bw)})
    return cal


#: Kernel classes of the suite mapped to the residual classes of perfmodel.intervals.
BAND_OF_CLASS = {"matmul": "matmul", "attention_prefill": "attention_prefill", "attention_decode": "attention_decode",
                 "elementwise": "vector", "norm": "vector", "kv_append": "vector", "copy_d2d": "vector",
                 "allreduce_custom": "allreduce", "allreduce_nccl": "allreduce"}
MIN_BAND_CASES = 5


def band_class(case: dict) -> str | None:
    """The residual class (perfmodel.intervals) a measured case informs, or None. Kernels count
    only as the device sees them (graph-timed, where the suite has such cases: eager kernel times
    carry host dispatch that intervals do not band)."""
    from perfmodel import intervals

    if case["kind"] == "model_step":
        return intervals.step_class(case["phase"], text(case, "engine") or "hf-eager")
    return BAND_OF_CLASS.get(case["class"])


def error_bands(measured: list[dict], hw: Hardware) -> dict:
    """{residual class: {p10, p90}} of measured / predicted over the evaluation split (cases the fit
    never saw), for classes with at least MIN_BAND_CASES cases: the prediction intervals of
    perfmodel.intervals. Where graph-timed kernels exist, eager kernels are left out."""
    cases = [c for c in measured if c.get("status") == "ok" and c.get("split") == "evaluation"]
    if any(graphed(c) for c in cases):  # nccl-tests time NCCL's all-reduce on the device without graphs;
        # an engine's custom all-reduce timed eagerly (aiconfigurator's *_eager rows) carries host dispatch
        cases = [c for c in cases if graphed(c) or c["kind"] == "model_step"
                 or (c["kind"] == "allreduce" and text(c, "strategy") != "custom")]
    ratios = np.array([float(c["measured_s"]) for c in cases]) / predict_many(cases, hw) if cases else []
    groups: dict[str, list[float]] = {}
    for case, ratio in zip(cases, ratios):
        cls = band_class(case)
        if cls and np.isfinite(ratio) and ratio > 0:
            groups.setdefault(cls, []).append(float(ratio))
    return {cls: {"p10": float(np.quantile(r, 0.1)), "p90": float(np.quantile(r, 0.9))}
            for cls, r in sorted(groups.items()) if len(r) >= MIN_BAND_CASES}


def with_error_bands(measured: list[dict], hw: Hardware) -> Hardware:
    """`hw` whose calibration carries the error bands of its own evaluation split."""
    cal = dataclasses.replace(hw.calibration, error_bands={})
    bare = dataclasses.replace(hw, calibration=cal)
    return dataclasses.replace(hw, calibration=dataclasses.replace(cal, error_bands=error_bands(measured, bare)))
