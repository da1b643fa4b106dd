"""Fit a `Calibration` from measured cases: what the datasheet does not say.

Each fitter minimises the squared log ratio of predicted to measured time (scale-free, so a 10 us
kernel and a 10 ms kernel weigh alike) over the calibration split only; evaluation cases are never
seen. Steps, each on its own kernel class, in dependency order:

1. memory: achieved bandwidth and per-kernel floor, time = overhead + bytes / bw, from device copies,
   elementwise and norm kernels (different kernel counts per byte separate the two);
2. host link: per direction and pinned / pageable, time = latency + bytes / bw;
3. GEMMs: a tile shape (wave quantization over the SMs) and an achieved rate per dtype, from matmuls;
   weight-only formats get their own rate;
4. attention: the fraction of the GEMM rate FlashAttention reaches, from prefill attention;
5. framework: the eager per-layer host dispatch, from whole-model steps.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from scipy import optimize

from hardware.spec import Calibration, Hardware
from validate.predict_cases import predict_case

TILE_CANDIDATES = ((64, 64), (64, 128), (128, 64), (128, 128), (128, 256), (256, 128))


def log_error(cases: list[dict], hw: Hardware) -> float:
    """Sum of squared log(predicted / measured) over cases."""
    if not cases:
        return 0.0
    pred = np.array([predict_case(c, hw) for c in cases])
    meas = np.array([float(c["measured_s"]) for c in cases])
    return float(np.sum(np.log(pred / meas) ** 2))


def fit_scalar(loss: Callable[[float], float], lo: float, hi: float) -> float:
    """Minimise loss(x) for x in [lo, hi] searching in log space (rates span decades)."""
    res = optimize.minimize_scalar(lambda z: loss(float(np.exp(z))), bounds=(np.log(lo), np.log(hi)),
                                   method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def fit_overhead_and_rate(cases: list[dict], make: Callable[[float, float], Hardware], rate0: float,
                          overhead0: float) -> tuple[float, float]:
    """Jointly fit (rate, overhead) for time = overhead + work / rate on `cases`."""
    def residuals(z):
        hw = make(float(np.exp(z[0])), float(np.exp(z[1])))
        pred = np.array([predict_case(c, hw) for c in cases])
        return np.log(pred / np.array([float(c["measured_s"]) for c in cases]))

    res = optimize.least_squares(residuals, x0=[np.log(rate0), np.log(overhead0)], method="trf",
                                 bounds=([np.log(rate0 / 100), np.log(1e-8)], [np.log(rate0 * 10), np.log(1e-2)]))
    return float(np.exp(res.x[0])), float(np.exp(res.x[1]))


def _of(cases: list[dict], *classes: str, kind: str | None = None) -> list[dict]:
    return [c for c in cases if c["class"] in classes or (kind and c["kind"] == kind)]


def _with(hw: Hardware, cal: Calibration, **changes) -> Hardware:
    return dataclasses.replace(hw, calibration=dataclasses.replace(cal, **changes))


def calibrate(measured: list[dict], base: Hardware, source: str = "") -> Hardware:
    """A copy of `base` whose Calibration is fitted on the calibration-split cases of `measured`."""
    cases = [c for c in measured if c.get("status") == "ok" and c.get("split") == "calibration"]
    if not cases:
        raise ValueError("measurements: no successful calibration-split cases to fit")
    peak_bf16 = base.peak_flops_per_s("bf16")
    cal = Calibration(matmul_flops_per_s={"bf16": peak_bf16}, memory_bytes_per_s=base.hbm_bytes_per_s,
                      kernel_overhead_s=2e-6, source=source)

    memory_cases = _of(cases, "copy_d2d", "elementwise", "norm")
    if memory_cases:
        bw, overhead = fit_overhead_and_rate(
            memory_cases, lambda r, o: _with(base, cal, memory_bytes_per_s=r, kernel_overhead_s=o),
            base.hbm_bytes_per_s, 2e-6)
        cal = dataclasses.replace(cal, memory_bytes_per_s=bw, kernel_overhead_s=overhead)

    cal = _fit_transfers(cases, base, cal)
    cal = _fit_matmuls(cases, base, cal)

    prefill = _of(cases, "attention_prefill")
    if prefill:
        frac = fit_scalar(lambda f: log_error(prefill, _with(base, cal, attention_flops_fraction=f)), 0.05, 1.5)
        cal = dataclasses.replace(cal, attention_flops_fraction=frac)

    steps = _of(cases, "model_step_prefill", "model_step_decode")
    if steps:
        per_layer = fit_scalar(lambda t: log_error(steps, _with(base, cal, layer_overhead_s=t)), 1e-7, 1e-2)
        cal = dataclasses.replace(cal, layer_overhead_s=per_layer)
    return dataclasses.replace(base, name=f"{base.name}-calibrated", title=f"{base.title} (calibrated)",
                               calibration=cal)


def _fit_transfers(cases: list[dict], base: Hardware, cal: Calibration) -> Calibration:
    fields = {("h2d", 1): "host_to_device_bytes_per_s", ("d2h", 1): "device_to_host_bytes_per_s",
              ("h2d", 0): "host_to_device_pageable_bytes_per_s", ("d2h", 0): "device_to_host_pageable_bytes_per_s"}
    latencies = []
    for (direction, pinned), field in fields.items():
        group = [c for c in cases if c["kind"] == "copy" and c["direction"] == direction
                 and int(float(c["pinned"])) == pinned]
        if len(group) < 2:
            continue
        rate, latency = fit_overhead_and_rate(
            group, lambda r, o: _with(base, cal, **{field: r}, transfer_latency_s=o), base.host_link_bytes_per_s, 1e-5)
        cal = dataclasses.replace(cal, **{field: rate})
        latencies.append(latency)
    if latencies:
        cal = dataclasses.replace(cal, transfer_latency_s=float(np.median(latencies)))
    return cal


def _fit_matmuls(cases: list[dict], base: Hardware, cal: Calibration) -> Calibration:
    gemms = [c for c in cases if c["kind"] == "matmul"]
    if not gemms:
        return cal
    dtypes = sorted({c["dtype"] for c in gemms})
    best = None
    for tile_m, tile_n in TILE_CANDIDATES if base.compute_units > 1 else ((1, 1),):
        trial = dataclasses.replace(cal, tile_m=tile_m, tile_n=tile_n)
        rates, total = {}, 0.0
        for dtype in dtypes:
            group = [c for c in gemms if c["dtype"] == dtype]
            peak = base.peak_flops_per_s(dtype)
            rate = fit_scalar(lambda r: log_error(group, _with(base, trial, matmul_flops_per_s={**rates, dtype: r})),
                              peak / 100, peak * 1.5)
            rates[dtype] = rate
            total += log_error(group, _with(base, trial, matmul_flops_per_s=rates))
        if best is None or total < best[0]:
            best = (total, dataclasses.replace(trial, matmul_flops_per_s=rates))
    cal = best[1]
    for w_bits, key in ((8, "w8a16"), (4, "w4a16")):
        group = [c for c in cases if c["kind"] == "matmul_wo" and int(float(c["w_bits"])) == w_bits]
        if group:
            rates = dict(cal.matmul_flops_per_s)
            peak = base.peak_flops_per_s("bf16")
            rate = fit_scalar(lambda r: log_error(group, _with(base, cal, matmul_flops_per_s={**rates, key: r})),
                              peak / 1000, peak * 1.5)
            cal = dataclasses.replace(cal, matmul_flops_per_s={**rates, key: rate})
    return cal
