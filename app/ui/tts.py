"""Test-time scaling page: model, samples, generation length and sparse budget for a per-request
budget (solvers.tts, on Kinetics costs)."""
from __future__ import annotations

import pandas as pd
import streamlit as st
import yaml

import hardware
from app import charts, solver_views, views
from app.ui import common

PREFIX = "tts"
UNITS = {"eFLOPs (Kinetics)": "efflops", "seconds": "seconds", "dollars": "dollars"}
DEFAULT_BUDGET = {"efflops": 1e15, "seconds": 10.0, "dollars": 0.01}


@st.cache_data(show_spinner=False, max_entries=64)
def solve(curves_csv: str | None, budget: float, unit: str, hw: str | None, strategy: str, samples: tuple) -> dict:
    return solver_views.tts_plan(curves_csv, budget, unit, hardware.load(hw) if hw else None, strategy, samples)


def render() -> None:
    st.title("Test-time scaling")
    if common.solver_missing("tts"):
        return
    devices = common.device_names()
    with st.sidebar:
        upload = st.file_uploader("Accuracy curves CSV (model, gen_len, p or samples+correct, ...)", type=["csv"],
                                  key=f"{PREFIX}.upload")
        unit_label = st.radio("Budget unit", list(UNITS), key=f"{PREFIX}.unit")
        unit = UNITS[unit_label]
        budget = st.number_input(f"Budget per request ({unit})", value=DEFAULT_BUDGET[unit], format="%g",
                                 key=f"{PREFIX}.budget.{unit}")
        hw = st.selectbox("Device (sets eFLOPs intensity; needed for seconds and dollars)", ["(none)"] + devices,
                          index=1 + common.default_index(devices, "b200") if devices else 0, key=f"{PREFIX}.device")
        strategy = st.radio("Strategy", ["pass@k", "majority"], horizontal=True, key=f"{PREFIX}.strategy")
        samples_text = st.text_input("Samples N to consider", "1, 2, 4, 8, 16, 32, 64", key=f"{PREFIX}.samples")
    if upload is None:
        st.caption("SYNTHETIC demo accuracy curves shipped with the solver (not measurements); upload measured "
                   "per-problem success rates to plan a real deployment.")
    csv_text = upload.getvalue().decode("utf-8", errors="replace") if upload is not None else None
    device = None if hw == "(none)" else hw
    try:
        samples = views.parse_int_list(samples_text, "samples")
        out = solve(csv_text, float(budget), unit, device, strategy, tuple(samples))
    except views.USER_ERRORS as err:
        common.show_error(err)
        return
    _show(out, {"curves": upload.name if upload else "demo", "budget": float(budget), "unit": unit,
                "hardware": device, "strategy": strategy, "samples": samples})


def _show(out: dict, inputs: dict) -> None:
    best, unit = out["best"], out["unit"]
    m = st.columns(4)
    m[0].metric("Expected accuracy", f"{best['accuracy']:.3f}", help=inputs["strategy"])
    m[1].metric("Model", best["model"])
    m[2].metric("Samples x generation cap", f"{int(best['samples'])} x {int(best['gen_len']):,}",
                help="sparse budget " + (f"{int(best['sparse_budget'])} tokens" if best["sparse_budget"] else "dense"))
    m[3].metric(f"Cost ({unit})", f"{best['cost']:.4g}", help=f"cost-of-pass {best['cost_of_pass']:.4g} {unit}")
    frontier = out["frontier"]
    table = out["table"]
    spec = charts.line(frontier, "cost", "accuracy", f"cost per request ({unit})", "expected accuracy",
                       "Accuracy-cost frontier (chosen point ringed)", log_x=True,
                       marked=frontier[(frontier["model"] == best["model"]) & (frontier["cost"] == best["cost"])])
    x, y = spec["layer"][0]["encoding"]["x"], spec["layer"][0]["encoding"]["y"]   # one axis title for all layers
    spec["layer"].insert(0, {"data": {"values": charts.records(table.sample(min(len(table), 1500), random_state=0),
                                                               ["cost", "accuracy", "model"])},
                             "mark": {"type": "point", "opacity": 0.35, "size": 18},
                             "encoding": {"x": x, "y": y, "color": charts.n("model")}})
    spec["layer"].append({"data": {"values": [{"cost": inputs["budget"]}]},
                          "mark": {"type": "rule", "color": "#d62728", "strokeDash": [4, 3]},
                          "encoding": {"x": x}})
    st.vega_lite_chart(spec=spec, width="stretch")
    st.caption(f"curves: {out['source']}")
    st.dataframe(frontier, hide_index=True)
    cli = (f"perfmodel solve tts --curves {'demo' if inputs['curves'] == 'demo' else inputs['curves']} "
           f"--budget {inputs['budget']:g} --unit {unit} --strategy {inputs['strategy']} "
           f"--samples {','.join(str(s) for s in inputs['samples'])}"
           + (f" --hardware {inputs['hardware']}" if inputs["hardware"] else ""))
    st.code(cli, language="bash")
    common.export_buttons(PREFIX, yaml.safe_dump({**inputs, "cli": cli}, sort_keys=False),
                          {"frontier": frontier, "best": pd.DataFrame([best])})
