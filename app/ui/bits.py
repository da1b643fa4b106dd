"""Bit allocation page: per-layer widths under a bit, memory or latency budget (solvers.bits)."""
from __future__ import annotations

import math

import streamlit as st
import yaml

import hardware
import workloads
from app import charts, solver_views, views
from app.ui import common

PREFIX = "bits"
CANDIDATE_SETS = {"continuous widths (closed form / convex)": None, "integer widths 2, 3, 4, 8 (MILP)": [2, 3, 4, 8],
                  "formats int4-g128, int8, fp8, bf16 (MILP)": ["int4-g128", "int8", "fp8", "bf16"]}


@st.cache_data(show_spinner="Solving the bit allocation...", max_entries=64)
def solve(hw: str, model: str, csv_text: str | None, seed: int, avg_bits: float, candidates: tuple | None,
          latency_s: float | None, memory_bytes: float | None, scope: str = "model",
          engine: str = common.DEFAULT_ENGINE) -> dict:
    m = workloads.load(model)
    frame = solver_views.demo_sensitivities(m, seed) if csv_text is None else \
        solver_views.read_sensitivities(csv_text, "uploaded sensitivities")
    out = solver_views.allocate(frame, m, hardware.load(hw), avg_bits, list(candidates) if candidates else None,
                                latency_s, memory_bytes, scope, engine)
    return out | {"sensitivities": frame}


def render() -> None:
    st.title("Bit allocation")
    if common.solver_missing("bits"):
        return
    picked = common.catalog_pick(PREFIX)
    if picked is None:
        return
    hw, model = picked
    with st.sidebar:
        upload = st.file_uploader("Sensitivities CSV (params, coef[, name, layer, rows, cols])", type=["csv"],
                                  key=f"{PREFIX}.upload")
        avg_bits = st.number_input("Average bits per weight", value=4.0, step=0.25, key=f"{PREFIX}.avg_bits")
        mode = st.radio("Widths", list(CANDIDATE_SETS), key=f"{PREFIX}.mode")
        within = st.checkbox("Each layer keeps the average (per-column tables)", key=f"{PREFIX}.within",
                             help="BAQ's scope: only the groups of one layer trade bits with each other. Layer-wise "
                                  "losses of different layers are not in common units, so per-column widths should "
                                  "be allocated inside each layer (validate/reports/bits). Bit budget only.")
        latency_ms = st.number_input("Decode-step latency budget (ms, 0 = none)", value=0.0, step=0.1,
                                     key=f"{PREFIX}.latency")
        memory_gb = st.number_input("Weight memory budget (GB, 0 = none)", value=0.0, step=0.5, key=f"{PREFIX}.memory")
        engine = common.engine_picker(PREFIX)
    if upload is None:
        st.caption(f"SYNTHETIC demo sensitivities: {model}'s linear layers with exact sizes and log-normal loss "
                   "coefficients (fixed seed); upload measured ones to plan a real model.")
    csv_text = upload.getvalue().decode("utf-8", errors="replace") if upload is not None else None
    candidates = CANDIDATE_SETS[mode]
    inputs = {"hardware": hw, "model": model, "sensitivities": upload.name if upload else "synthetic demo (seed 0)",
              "avg_bits": float(avg_bits), "candidates": candidates,
              "latency_budget_s": latency_ms / 1e3 if latency_ms else None,
              "memory_budget_bytes": memory_gb * 1e9 if memory_gb else None, "scope": "layer" if within else "model",
              "engine": engine}
    try:
        out = solve(hw, model, csv_text, 0, float(avg_bits), tuple(candidates) if candidates else None,
                    inputs["latency_budget_s"], inputs["memory_budget_bytes"], inputs["scope"], engine)
    except views.USER_ERRORS as err:
        common.show_error(err)
        return
    _show(out, inputs)


def _show(out: dict, inputs: dict) -> None:
    r, uniform = out["result"], out["uniform"]
    c = st.columns(4)
    c[0].metric("Average bits", f"{r['avg_bits']:.3f}", help=f"method {r['method']}, status {r['status']}")
    c[1].metric("Predicted loss vs uniform", f"{r['predicted_gain']:.3f}x",
                help="loss of this allocation over uniform widths at the same average (< 1 is better)")
    common.metric_of(c[2])("Quantized weights", f"{r['bytes'] / 1e9:.2f} GB",
                **views.metric_delta((r["bytes"] - uniform["bytes"]) / 1e9, "{:+.2f} GB vs uniform", lower_is_better=True))
    if math.isfinite(r["latency_s"]):
        common.metric_of(c[3])("Decode step (modeled)", f"{r['latency_s'] * 1e3:.3f} ms",
                    **views.metric_delta((r["latency_s"] - uniform["latency_s"]) * 1e3, "{:+.3f} ms vs uniform",
                                         lower_is_better=True),
                    help=f"perfmodel's decode step at batch 1 with these widths, engine {inputs['engine']}")
    else:
        c[3].metric("Decode step (modeled)", "n/a", help="needs layer shapes: rows and cols columns, or layer names "
                                                         "of the chosen model such as layers.0.qkv_proj")
    table = out["table"]
    st.vega_lite_chart(spec=charts.line(table, "index", "width", "group (in table order)", "bits",
                                        "Width per group", color="kind"), width="stretch")
    st.dataframe(table, hide_index=True)
    cli = solver_views.bits_cli(f"{PREFIX}-sensitivities.csv", inputs["avg_bits"], inputs["hardware"],
                                inputs["model"], inputs["candidates"], inputs["latency_budget_s"],
                                inputs["memory_budget_bytes"], inputs["scope"], inputs["engine"])
    st.caption("Reproduce from the CLI with the sensitivities CSV below:")
    st.code(cli, language="bash")
    common.export_buttons(PREFIX, yaml.safe_dump({**inputs, "cli": cli}, sort_keys=False),
                          {"sensitivities": out["sensitivities"], "widths": table, "summary": out["summary"]})
