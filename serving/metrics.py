"""Aggregate serving metrics of a simulation: latency percentiles, throughput, goodput under an SLO.

Definitions follow vLLM's benchmark_serving.py: TTFT = first token - arrival; TPOT = (finish -
first token) / (output tokens - 1) over requests of more than one output token; e2e = finish -
arrival; throughput = output tokens / (last finish - first arrival); goodput = requests per second
that meet every SLO given (DistServe's definition, Zhong et al. 2024, arXiv 2401.09670).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class SLO:
    """Per-request latency objectives (seconds); None = not constrained."""

    ttft_s: float | None = None
    tpot_s: float | None = None

    def __post_init__(self):
        for name in ("ttft_s", "tpot_s"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0):
                raise ValueError(f"slo_{name[:-2]}: {v!r} must be a positive time in seconds")

    @property
    def given(self) -> bool:
        return self.ttft_s is not None or self.tpot_s is not None

    def met(self, ttft, tpot):
        ok = np.ones(np.shape(ttft), dtype=bool)
        if self.ttft_s is not None:
            ok &= ttft <= self.ttft_s
        if self.tpot_s is not None:
            ok &= tpot <= self.tpot_s
        return ok


def percentiles(values, weights=None) -> dict:
    """{p50, p90, p99, mean} of values (weighted: each value counted `weights` times)."""
    values = np.asarray(values, float)
    if values.size == 0:
        return {f"p{q}": 0.0 for q in PERCENTILES} | {"mean": 0.0}
    if weights is None:
        out = {f"p{q}": float(np.percentile(values, q)) for q in PERCENTILES}
        return out | {"mean": float(values.mean())}
    weights = np.asarray(weights, float)
    keep = weights > 0
    values, weights = values[keep], weights[keep]
    if values.size == 0:
        return {f"p{q}": 0.0 for q in PERCENTILES} | {"mean": 0.0}
    order = np.argsort(values)
    values, cum = values[order], np.cumsum(weights[order])
    out = {f"p{q}": float(values[np.searchsorted(cum, q / 100 * cum[-1])]) for q in PERCENTILES}
    return out | {"mean": float(np.average(values, weights=weights))}


def summarize(result, slo: SLO | None = None) -> dict:
    """One simulation's aggregate metrics (all times in seconds)."""
    span = float(result.finish_s.max() - np.nanmin(result.arrival_s))
    multi = result.output_tokens > 1
    durations, weights = result.itl_s()
    busy = result.iteration_end_s - result.iteration_start_s
    total = busy.sum()
    out = {
        "requests": int(len(result.arrival_s)),
        "duration_s": span,
        "ttft_s": percentiles(result.ttft_s),
        "tpot_s": percentiles(result.tpot_s[multi]),
        "itl_s": percentiles(durations, weights),
        "e2e_s": percentiles(result.e2e_s),
        "wait_s": percentiles(result.wait_s),
        "throughput_tok_s": float(result.output_tokens.sum() / span),
        "request_rate_req_s": float(len(result.arrival_s) / span),
        "preempted": int(result.preemptions.sum()),
        "preempted_requests": int((result.preemptions > 0).sum()),
        "kv_capacity_blocks": int(result.kv_capacity_blocks),
        "kv_utilization": {"mean": float(np.sum(result.kv_used_blocks * busy) / total / result.kv_capacity_blocks)
                           if total > 0 else 0.0,
                           "max": float(result.kv_used_blocks.max() / result.kv_capacity_blocks)},
        "queue_length": {"mean": float(np.sum(result.queue_length * busy) / span) if span > 0 else 0.0,
                         "max": int(result.queue_length.max())},
        "iterations": int(len(busy)),
    }
    if slo is not None and slo.given:
        met = slo.met(result.ttft_s, np.where(multi, result.tpot_s, 0.0))
        out["slo"] = {"ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s}
        out["slo_attainment"] = float(met.mean())
        out["goodput_req_s"] = float(met.sum() / span)
    return out
