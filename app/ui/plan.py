"""Plan page: one model on one device; latency, throughput, cost, memory, where the time goes."""
from __future__ import annotations

import pandas as pd
import streamlit as st
import yaml

from app import charts, views
from app.ui import common

PREFIX = "plan"


def render() -> None:
    st.title("Plan a deployment")
    with st.sidebar:
        device = common.device_picker(PREFIX)
        model = common.model_picker(PREFIX)
        engine = common.engine_picker(PREFIX)
        inputs = common.scenario_inputs(PREFIX)
    if device is None or model is None:
        return
    try:
        views.scenario(inputs)
        result = common.cached_plan(device.key, model.key, tuple(sorted(inputs.items())), engine)
    except views.USER_ERRORS as err:
        common.show_error(err)
        return
    row = result["row"]
    st.caption(f"{model.label} on {device.label} x{int(row['tp'])}, engine {engine}, "
               f"{'calibrated spec' if result['summary']['calibrated'][0] else 'datasheet roofline (uncalibrated)'}")
    _headline(result)
    st.vega_lite_chart(spec=charts.memory_bar(views.memory_frame(row), row["capacity_bytes"]), width="stretch")
    _details(result)
    _exports(device, model, inputs, result, engine)


def _headline(result: dict) -> None:
    row, texts = result["row"], views.metric_texts(result["row"])
    if result["does_not_fit"]:
        st.error(result["does_not_fit"])
        if result["suggestions"]:
            st.markdown("**What would fit:** " + "; ".join(result["suggestions"]) + ".")
    cols = st.columns(5)
    fits = not result["does_not_fit"]
    cols[0].metric("TTFT", texts["TTFT"] if fits else "does not fit", help="time to first token (prefill)")
    cols[1].metric("TPOT", texts["TPOT"] if fits else "does not fit", help="mean time per output token (decode)")
    cols[2].metric("Throughput", texts["Throughput"] if fits else "does not fit",
                   help="generated tokens per second over the whole request, all sequences")
    cols[3].metric("Cost per Mtok", texts["Cost"] if fits else "does not fit",
                   help="USD per million generated tokens at the device's hourly price")
    cols[4].metric("Memory", texts["Memory"], help="per device: weights + KV cache + activations / capacity")
    st.caption(texts["Band"])
    if texts["Energy"]:
        st.caption(texts["Energy"])
    st.caption(f"prefill is {row['prefill_bound']}-bound, decode is {row['decode_bound']}-bound; "
               f"max batch that fits: {int(row['max_batch'])}")


def _details(result: dict) -> None:
    left, right = st.columns(2)
    with left:
        points = views.roofline_points(result["prefill"], result["decode"])
        st.vega_lite_chart(spec=charts.roofline(points, result["roofs"]), width="stretch")
        st.caption("Each op of the prefill and of the mid-generation decode step at its arithmetic intensity "
                   "and the FLOP/s it achieves in the model, under the device's roofs (dashed).")
    with right:
        decode, prefill = st.tabs(["Decode step (TPOT)", "Prefill step (TTFT)"])
        decode.vega_lite_chart(spec=charts.op_times(result["decode"], "Time per op, decode at mid-generation"),
                            width="stretch")
        prefill.vega_lite_chart(spec=charts.op_times(result["prefill"], "Time per op, prefill"), width="stretch")
    with st.expander("Per-op tables"):
        for phase in ("prefill", "decode"):
            st.markdown(f"**{phase}**")
            st.dataframe(views.breakdown_table(result[phase]), hide_index=True)


def _exports(device: common.Choice, model: common.Choice, inputs: dict, result: dict, engine: str) -> None:
    st.subheader("Reproduce")
    st.code(views.cli_command(device.ref, model.ref, inputs, engine), language="bash")
    if device.inline is not None:
        st.download_button(f"Device spec ({device.ref})", yaml.safe_dump(device.inline, sort_keys=False),
                           file_name=device.ref, mime="application/x-yaml", key=f"{PREFIX}.dl.spec")
    doc = views.plan_document(device.ref, model.ref, inputs, device.inline, model.inline, engine)
    breakdown = pd.concat([views.breakdown_table(result[p]).assign(phase=p) for p in ("prefill", "decode")],
                          ignore_index=True)
    common.export_buttons(PREFIX, doc, {"results": result["summary"], "per-op": breakdown})
