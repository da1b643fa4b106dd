"""Compare page: several devices x models x settings side by side, with Pareto fronts."""
from __future__ import annotations

import streamlit as st
import yaml

from app import charts, views
from app.ui import common

PREFIX = "compare"
DEFAULT_DEVICES = ("h200-sxm", "h100-sxm", "a100-80gb-sxm", "l40s")
DEFAULT_MODELS = ("llama-3-8b", "qwen3-8b")
LATENCIES = {"TPOT (decode, per token)": "tpot_s", "TTFT (prefill)": "ttft_s", "End-to-end request": "e2e_s"}


def render() -> None:
    st.title("Compare deployments")
    devices, models = common.device_names(), common.model_names()
    if not devices:
        st.info("No hardware presets are installed yet; Compare works on catalog devices.")
        return
    with st.sidebar:
        picked_hw = st.multiselect("Devices", devices, [d for d in DEFAULT_DEVICES if d in devices] or devices[:1],
                                   key=f"{PREFIX}.devices")
        picked_models = st.multiselect("Models", models, [m for m in DEFAULT_MODELS if m in models] or models[:1],
                                       key=f"{PREFIX}.models")
        batches = st.text_input("Batch sizes", "1, 4, 16, 64, 256", key=f"{PREFIX}.batches")
        c = st.columns(2)
        prompt = c[0].number_input("Prompt tokens", value=2048, step=128, key=f"{PREFIX}.prompt")
        gen = c[1].number_input("Generated tokens", value=256, step=64, key=f"{PREFIX}.gen")
        w_bits = st.multiselect("Weight bits", common.W_BITS, [16, 8, 4], key=f"{PREFIX}.w_bits")
        kv_bits = st.multiselect("KV-cache bits", common.KV_BITS, [16], key=f"{PREFIX}.kv_bits")
        tps = st.multiselect("Tensor parallel", common.TPS, [1], key=f"{PREFIX}.tp")
        latency_label = st.radio("Latency axis", list(LATENCIES), key=f"{PREFIX}.latency")
        engine = common.engine_picker(PREFIX)
    if not (picked_hw and picked_models and w_bits and kv_bits and tps):
        st.info("Pick at least one device, model, weight and KV precision and tensor-parallel degree.")
        return
    try:
        grid = {"batch": views.parse_int_list(batches, "batch sizes"), "prompt": prompt, "gen": gen,
                "w_bits": sorted(w_bits), "kv_bits": sorted(kv_bits), "tp": sorted(tps), "a_bits": 16}
        views.scenario({"batch": grid["batch"], "prompt": prompt, "gen": gen})  # field checks, fast
        frame, notes = common.cached_compare(tuple(picked_hw), tuple(picked_models),
                                             tuple((k, tuple(v) if isinstance(v, list) else v)
                                                   for k, v in sorted(grid.items())), engine)
    except views.USER_ERRORS as err:
        common.show_error(err)
        return
    for note in notes:
        st.warning(note)
    if frame.empty:
        st.error("No configuration could be evaluated; see the notes above.")
        return
    _results(frame, LATENCIES[latency_label], latency_label, picked_hw, picked_models, grid, engine)


def _results(frame, latency: str, latency_label: str, devices, models, grid, engine: str) -> None:
    fits = frame[frame["fits"]]
    st.caption(f"{len(frame)} configurations priced for engine {engine}, {len(fits)} fit in device memory "
               "(only those are plotted); "
               "ringed points joined by the black line are the Pareto front.")
    if fits.empty:
        st.error("None of the configurations fits in device memory; try fewer weight bits, more tensor "
                 "parallelism or smaller batches.")
    else:
        best = fits.loc[fits["throughput_tok_s"].idxmax()]
        cheapest = fits.loc[fits["tokens_per_usd"].idxmax()]
        c = st.columns(3)
        c[0].metric("Best throughput", f"{best['throughput_tok_s']:,.0f} tok/s", help=best["config"])
        c[1].metric("Most tokens per dollar", f"{cheapest['tokens_per_usd'] / 1e6:,.2f} Mtok/$",
                    help=cheapest["config"])
        c[2].metric("Fastest " + latency_label.split(" (")[0], f"{fits[latency].min() * 1e3:.3g} ms",
                    help=fits.loc[fits[latency].idxmin(), "config"])
        left, right = st.columns(2)
        left.vega_lite_chart(spec=charts.tradeoff(fits, latency, "throughput_tok_s", f"{latency_label} (s)",
                                          "throughput (tok/s)", "Throughput vs latency"), width="stretch")
        right.vega_lite_chart(spec=charts.tradeoff(fits, latency, "tokens_per_usd", f"{latency_label} (s)",
                                           "tokens per USD", "Throughput per dollar vs latency"), width="stretch")
    columns = ["model", "hardware", "batch", "w_bits", "kv_bits", "tp", "ttft_s", "tpot_s", "e2e_s",
               "throughput_tok_s", "usd_per_mtok", "tokens_per_usd", "total_bytes", "capacity_bytes", "fits"]
    table = frame[columns].assign(pareto_throughput=False, pareto_per_usd=False)
    table.loc[fits.index, "pareto_throughput"] = views.pareto_mask(fits[latency], fits["throughput_tok_s"])
    table.loc[fits.index, "pareto_per_usd"] = views.pareto_mask(fits[latency], fits["tokens_per_usd"])
    st.dataframe(table, hide_index=True)
    doc = views.sweep_document(devices, models, grid, latency, engine)
    st.caption("The inputs YAML is a `perfmodel sweep` spec: the same grid, the fit constraint, and the "
               "throughput-vs-latency front. Reproduce with:")
    st.code(f"perfmodel sweep {PREFIX}-inputs.yaml --keep front", language="bash")
    common.export_buttons(PREFIX, yaml.safe_dump(doc, sort_keys=False), {"results": table})
