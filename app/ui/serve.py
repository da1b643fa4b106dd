"""Serve page: one deployment under load (serving simulator): latency percentiles vs request rate,
the throughput / interactivity frontier with the SLO-meeting points, and the CLI line."""
from __future__ import annotations

import streamlit as st

from app import charts, serve_views, views
from app.ui import common

PREFIX = "serve"


@st.cache_data(show_spinner=False, max_entries=32)
def curve(*key):
    return serve_views.load_curve(*key)


def render() -> None:
    st.title("Serve under load")
    picked = common.catalog_pick(PREFIX, device="h200-sxm-calibrated")
    if picked is None:
        return
    hw, model = picked
    with st.sidebar:
        engine = common.engine_picker(PREFIX)
        c = st.columns(2)
        tp = c[0].selectbox("Tensor parallel", common.TPS, key=f"{PREFIX}.tp")
        bits = c[1].selectbox("Bits (weights, activations, KV)", (16, 8), key=f"{PREFIX}.bits")
        rate = st.number_input("Request rate (req/s)", value=10.0, format="%g", key=f"{PREFIX}.rate")
        c = st.columns(2)
        prompt = c[0].number_input("Prompt tokens", value=1024, step=128, key=f"{PREFIX}.prompt")
        gen = c[1].number_input("Output tokens", value=256, step=32, key=f"{PREFIX}.gen")
        requests = st.number_input("Requests per rate", value=500, step=100, key=f"{PREFIX}.requests")
        c = st.columns(2)
        ttft_ms = c[0].number_input("SLO p99 TTFT (ms)", value=500.0, format="%g", key=f"{PREFIX}.ttft")
        tpot_ms = c[1].number_input("SLO p99 TPOT (ms)", value=40.0, format="%g", key=f"{PREFIX}.tpot")
    key = (model, hw, engine, int(tp), int(bits), float(rate), int(requests), int(prompt), int(gen),
           float(ttft_ms) / 1e3, float(tpot_ms) / 1e3)
    try:
        frame = curve(*key)
    except views.USER_ERRORS as err:
        common.show_error(err)
        return
    from serving.curves import max_rate_meeting

    at_rate = frame.iloc[(frame["rate_req_s"] - float(rate)).abs().argmin()]
    m = st.columns(4)
    m[0].metric("TTFT p99", f"{at_rate['ttft_p99_s'] * 1e3:.1f} ms", help=f"at {float(rate):g} req/s")
    m[1].metric("TPOT p99", f"{at_rate['tpot_p99_s'] * 1e3:.2f} ms", help=f"at {float(rate):g} req/s")
    m[2].metric("Throughput", f"{at_rate['throughput_tok_s']:,.0f} tok/s")
    m[3].metric("Max rate meeting the SLO", f"{max_rate_meeting(frame):g} req/s",
                help="highest simulated rate (1/8x .. 2x the rate) whose p99 TTFT and TPOT meet the SLO")
    left, right = st.columns(2)
    for where, metric, name in ((left, "ttft", "TTFT"), (right, "tpot", "TPOT")):
        where.vega_lite_chart(spec=charts.line(serve_views.latency_long(frame, metric), "rate_req_s", "ms",
                                               "offered load (req/s)", f"{name} (ms)", f"{name} percentiles vs load",
                                               color="percentile", log_y=True), use_container_width=True)
    st.vega_lite_chart(spec=charts.line(frame, "tok_s_per_gpu", "tok_s_per_user", "tokens/s per GPU",
                                        "tokens/s per user (1 / median TPOT)", "SLO frontier (red: meets the SLO)",
                                        marked=frame[frame["meets_slo"]]), use_container_width=True)
    st.dataframe(frame, hide_index=True)
    st.caption("Reproduce on the command line (the plan command searches deployments: perfmodel plan --help):")
    st.code(serve_views.cli_line(*key), language="bash")
