"""Load curves: one configuration simulated at a series of request rates (same seed and lengths),
summarized per rate; what `perfmodel serve --plot` draws and the app's Serve page charts."""
from __future__ import annotations

import numpy as np

from serving import workload
from serving.metrics import SLO, summarize
from serving.simulator import Instance, simulate

#: Rates of a load sweep, as multiples of the target rate.
LOAD_FACTORS = (0.125, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)


def load_curve(inst: Instance, rates, requests: int, prompt, gen, *, seed: int = 0, slo: SLO | None = None,
               burst_cv: float = 1.0, prefix_fraction: float = 0.0, simulate_fn=None):
    """A DataFrame, one row per rate: TTFT / TPOT / e2e percentiles, throughput, tokens/s per GPU and
    per user (1 / median TPOT), goodput and whether the SLO's p99s are met. `simulate_fn(inst,
    requests)` replaces the single-instance simulation (replicas, disaggregation)."""
    import pandas as pd

    rows = []
    for rate in rates:
        req = workload.generate(requests, float(rate), prompt, gen, seed=seed, burst_cv=burst_cv,
                                prefix_fraction=prefix_fraction)
        res = (simulate_fn or (lambda i, r: simulate(i, r, seed=seed)))(inst, req)
        s = summarize(res, slo)
        row = {"rate_req_s": float(rate), "throughput_tok_s": s["throughput_tok_s"],
               "tok_s_per_user": 1.0 / s["tpot_s"]["p50"] if s["tpot_s"]["p50"] > 0 else 0.0,
               "preempted": s["preempted"], "kv_utilization_max": s["kv_utilization"]["max"]}
        for key in ("ttft_s", "tpot_s", "e2e_s"):
            for q in ("p50", "p90", "p99"):
                row[f"{key[:-2]}_{q}_s"] = s[key][q]
        if slo is not None and slo.given:
            row["goodput_req_s"] = s["goodput_req_s"]
            row["meets_slo"] = bool((slo.ttft_s is None or s["ttft_s"]["p99"] <= slo.ttft_s)
                                    and (slo.tpot_s is None or s["tpot_s"]["p99"] <= slo.tpot_s))
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame["tok_s_per_gpu"] = frame["throughput_tok_s"] / inst.tp
    return frame


def max_rate_meeting(frame) -> float:
    """The highest simulated rate whose p99s meet the SLO (0 when none does)."""
    if "meets_slo" not in frame:
        return float("nan")
    ok = frame[frame["meets_slo"]]
    return float(ok["rate_req_s"].max()) if len(ok) else 0.0


def rates_around(rate: float, factors=LOAD_FACTORS) -> np.ndarray:
    return np.asarray(factors, float) * float(rate)
