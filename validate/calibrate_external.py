"""Fit a calibrated spec to kernel tables measured by others (NVIDIA's aiconfigurator).

aiconfigurator's tables (validate/aiconfigurator.py) hold, per GPU and serving engine, latencies of
the engine's own GEMMs, attention backends, all-reduce and MoE layers, each timed inside CUDA-graph
replays. They pin the device side of a `Calibration`; the host side (eager dispatch) they do not
measure, so a spec fitted here prices graphed serving engines, not eager frameworks.

What comes from which table (every fitted number cites its table in the written preset):
- GEMM rates, read bandwidth, skinny-kernel parallelism, tile shape, split-K threshold and the
  per-kernel floor: the GEMM table of the `gemm_engine` (bf16 and per-tensor fp8; vLLM's are
  PyTorch/cuBLAS calls, as torch.compile runs them);
- one attention kernel family per engine (its default backend on that GPU: FA3 for vLLM and
  SGLang on Hopper, TensorRT-LLM's FMHA/XQA): that engine's context and generation tables fit the
  family's fraction of the bf16 GEMM rate, floor per call and KV read bandwidth;
- the custom all-reduce latency and bandwidth: the graphed custom all-reduce table of `ar_engine`.
MoE tables are scored, not fitted (they test the grouped-GEMM model on the GEMM parameters).

Cases split by shape (validate.cases.split): the fit sees the calibration split only; the
residual table scores the evaluation split.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from hardware.spec import Calibration, Hardware
from perfmodel import engines
from validate.calibrate import _fit_gemm_and_attention, fit
from validate.cases import split
from validate.predict_cases import predict_many

#: aiconfigurator system names -> our datasheet presets.
SYSTEMS = {"h200_sxm": "h200-sxm", "h100_sxm": "h100-sxm", "a100_sxm": "a100-80gb-sxm", "b200_sxm": "b200",
           "l40s": "l40s"}
ENGINES = ("vllm", "trtllm", "sglang")


def prepared(cases: list[dict]) -> list[dict]:
    """Cases with the fields calibration needs: status, split, class; numbers as floats."""
    from validate.cases import kernel_class

    out = []
    for case in cases:
        c = {k: v for k, v in case.items() if not (isinstance(v, float) and np.isnan(v))}
        c.update(status="ok", split=split(c), **{"class": kernel_class(c)})
        out.append(c)
    return out


def _attention_params(cal: Calibration, family: str, bw: float) -> dict:
    return {f"attention_kernels:{family}:flops_fraction": (0.6, 0.01, 1.2),
            f"attention_kernels:{family}:overhead_s": (5e-6, 1e-8, 1e-3),
            f"attention_kernels:{family}:read_bytes_per_s": (0.8 * bw, 1e-3 * bw, 1.1 * bw),
            f"attention_kernels:{family}:unit_s": (2e-6, 1e-8, 1e-3)}


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
    cal = _fit_gemm_and_attention(gemms, base, cal, floor=True)
    cal = dataclasses.replace(cal, memory_read_bytes_per_s=cal.memory_read_bytes_per_s,
                              memory_bytes_per_s=cal.memory_read_bytes_per_s)
    for engine, cases in train.items():
        profile = engines.load(engine)
        for phase, family in (("prefill", profile.prefill_attention), ("decode", profile.decode_attention)):
            attention = [c for c in cases if c["kind"] == "attention" and c.get("phase") == phase]
            if attention:
                cal, _ = fit(attention, base, cal, _attention_params(cal, f"{family}-{phase}", bw))
    reduces = [c for c in train.get(ar_engine, []) if c["kind"] == "allreduce" and c.get("strategy") == "custom"
               and c.get("timing") == "graph"]
    if reduces:
        link = base.device_link_bytes_per_s or base.host_link_bytes_per_s
        cal, _ = fit(reduces, base, cal, {"custom_allreduce_latency_s": (5e-6, 1e-7, 1e-3),
                                          "custom_allreduce_bytes_per_s": (0.8 * link, 1e-3 * link, 2 * link)})
    return dataclasses.replace(base, name=f"{base.name}-calibrated", title=f"{base.title} (calibrated)",
                               calibration=cal)


def residuals(by_engine: dict[str, list[dict]], hw: Hardware) -> pd.DataFrame:
    """One row per case: engine, class, split, measured, predicted, ratio, APE."""
    rows = []
    for engine, cases in by_engine.items():
        cases = prepared(cases)
        predicted = predict_many(cases, hw)
        for case, pred in zip(cases, predicted):
            measured = float(case["measured_s"])
            rows.append({"engine": engine, "class": case["class"] + (f" {case['dtype']}" if case["kind"] in
                                                                     ("matmul", "moe") else ""),
                         "split": case["split"], "measured_s": measured, "predicted_s": float(pred),
                         "ratio": float(pred) / measured})
    frame = pd.DataFrame(rows)
    frame["ape"] = (frame["ratio"] - 1).abs()
    return frame


def residual_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Median and p90 APE and the median ratio per engine, class and split."""
    return (frame.groupby(["engine", "class", "split"])
            .agg(cases=("ape", "size"), median_ape=("ape", "median"), p90_ape=("ape", lambda x: x.quantile(0.9)),
                 median_ratio=("ratio", "median"))
            .reset_index())
