"""The Serve page's computations, without streamlit (tests call them directly): a load curve of one
deployment from the serving simulator, its long-format latency tables, and the CLI line that
reproduces the page."""
from __future__ import annotations

import pandas as pd

import hardware
import workloads
from perfmodel.ops import Precision


def load_curve(model: str, device: str, engine: str, tp: int, bits: int, rate: float, requests: int, prompt: int,
               gen: int, slo_ttft_s: float | None, slo_tpot_s: float | None, seed: int = 0) -> pd.DataFrame:
    """serving.curves.load_curve at 1/8x .. 2x the rate (one instance, vLLM-style defaults)."""
    from serving.curves import load_curve as curve
    from serving.curves import rates_around
    from serving.metrics import SLO
    from serving.simulator import make_instance

    slo = SLO(slo_ttft_s, slo_tpot_s)
    inst = make_instance(workloads.load(model), hardware.load(device), p=Precision(bits, bits, bits), tp=tp,
                         engine=engine)
    return curve(inst, rates_around(rate), requests, prompt, gen, seed=seed, slo=slo)


def latency_long(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (rate, percentile) of `metric` ("ttft" or "tpot"), in ms, for a line per percentile."""
    parts = [pd.DataFrame({"rate_req_s": frame["rate_req_s"], "percentile": q, "ms": frame[f"{metric}_{q}_s"] * 1e3})
             for q in ("p50", "p90", "p99")]
    return pd.concat(parts, ignore_index=True)


def cli_line(model: str, device: str, engine: str, tp: int, bits: int, rate: float, requests: int, prompt: int,
             gen: int, slo_ttft_s: float | None, slo_tpot_s: float | None, seed: int = 0) -> str:
    slo = "".join(f" --slo-{k} {v * 1e3:g}ms" for k, v in (("ttft", slo_ttft_s), ("tpot", slo_tpot_s)) if v)
    return (f"perfmodel serve --model {model} --hardware {device} --engine {engine} --tp {tp} --w-bits {bits} "
            f"--a-bits {bits} --kv-bits {bits} --rate {rate:g} --requests {requests} --prompt {prompt} --gen {gen} "
            f"--seed {seed}{slo} --plot load.png")
