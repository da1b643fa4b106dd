"""Offloading page: FlexGen-style placement over GPU / DRAM / disk (solvers.offload) and
LLM-in-a-flash loading for a model bigger than DRAM (solvers.flash)."""
from __future__ import annotations

import pandas as pd
import streamlit as st
import yaml

import hardware
import workloads
from app import charts, solver_views, views
from app.ui import common

PREFIX = "offload"


@st.cache_data(show_spinner="Solving the placement LPs...", max_entries=32)
def placement(hw: str, model: str, prompt: int, gen: int, overlap: str, cpu_attention: bool,
              engine: str = common.DEFAULT_ENGINE) -> dict:
    return solver_views.offload(workloads.load(model), hardware.load(hw), prompt, gen, overlap, cpu_attention, engine)


@st.cache_data(show_spinner=False, max_entries=64)
def flash(hw: str, model: str, dram_bytes: float, w_bits: float, active: float, persistence: float,
          bundling: bool, device: str) -> dict:
    return solver_views.flash_plan(workloads.load(model), hardware.load(hw), dram_bytes, w_bits, active, persistence,
                                   bundling, device)


def render() -> None:
    st.title("Offloading")
    if common.solver_missing("offload"):
        return
    flexgen_tab, flash_tab = st.tabs(["Placement on GPU / DRAM / disk (FlexGen)", "Flash to DRAM (LLM in a flash)"])
    with flexgen_tab:
        _flexgen()
    with flash_tab:
        _flash()


def _pick(prefix: str, device: str, model: str, where) -> tuple[str, str] | None:
    return common.catalog_pick(prefix, device, model, where=where)


def _flexgen() -> None:
    c = st.columns(3)
    picked = _pick(f"{PREFIX}.lp", "t4", "opt-6.7b", c[0])
    if picked is None:
        return
    hw, model = picked
    prompt = c[1].number_input("Prompt tokens", value=512, step=64, key=f"{PREFIX}.prompt")
    gen = c[1].number_input("Generated tokens", value=32, step=8, key=f"{PREFIX}.gen")
    overlap = c[2].selectbox("Overlap of transfers and compute", ["flexgen", "max", "sum"], key=f"{PREFIX}.overlap",
                             help="FlexGen's fitted form, perfect overlap (lower bound), none (upper bound)")
    cpu_attention = c[2].checkbox("Attention over off-GPU KV on the CPU", value=True, key=f"{PREFIX}.cpu_attn")
    engine = common.engine_picker(f"{PREFIX}.lp", where=c[1])
    try:
        out = placement(hw, model, int(prompt), int(gen), overlap, bool(cpu_attention), engine)
    except views.USER_ERRORS as err:
        common.show_error(err)
        return
    row = out["summary"].iloc[0]
    m = st.columns(4)
    m[0].metric("Throughput", f"{row['throughput_tok_s']:,.2f} tok/s", help="generated tokens per second")
    m[1].metric("Block", f"{int(row['gbs'])} x {int(row['n_batches'])}", help="GPU batch size x number of GPU batches")
    m[2].metric("Weights on GPU", f"{row['wg'] * 100:.0f}%", help=f"CPU {row['wc'] * 100:.0f}%, disk {row['wd'] * 100:.0f}%")
    m[3].metric("Request time", f"{row['total_s']:.3g} s", help=f"prefill {row['prefill_s']:.3g} s, "
                                                                f"decode {row['decode_s']:.3g} s")
    left, right = st.columns(2)
    place = out["placement"].assign(percent=lambda f: f["fraction"] * 100)
    left.vega_lite_chart(spec=_stacked(place), width="stretch")
    tiers = out["tiers"].melt("tier", var_name="what", value_name="GB")
    tiers["what"] = tiers["what"].str.replace("_GB", "")
    right.vega_lite_chart(spec=charts.grouped_bars(tiers, "GB", "tier", "what", "GB",
                                                   "Peak memory per tier vs capacity"), width="stretch")
    st.vega_lite_chart(spec=charts.line(out["candidates"], "block_size", "throughput_tok_s", "block size (gbs x batches)",
                                        "tok/s", "Best throughput per (gbs, batches) tried", color="gbs", log_x=True,
                                        ordinal=True), width="stretch")
    st.markdown("**Seconds per layer of each stream** (largest layer group)")
    st.dataframe(out["streams"], hide_index=True)
    cli = (f"perfmodel solve offload --model {model} --hardware {hw} --prompt {int(prompt)} --gen {int(gen)} "
           f"--overlap {overlap} --engine {engine}" + ("" if cpu_attention else " --gpu-attention"))
    st.code(cli, language="bash")
    common.export_buttons(f"{PREFIX}-lp", yaml.safe_dump({"hardware": hw, "model": model, "prompt": int(prompt),
                                                          "gen": int(gen), "overlap": overlap,
                                                          "cpu_attention": bool(cpu_attention), "engine": engine,
                                                          "cli": cli},
                                                         sort_keys=False),
                          {"policy": out["summary"], "candidates": out["candidates"]})


def _stacked(place: pd.DataFrame) -> dict:
    return {"title": "Where each kind of data lives", "height": {"step": 28},
            "data": {"values": charts.records(place, ["data", "tier", "percent"])}, "mark": "bar",
            "encoding": {"x": charts.q("percent", "% of it", stack="zero"), "y": charts.n("data", title=None),
                         "color": charts.n("tier", scale={"domain": list(solver_views.TIER_NAMES),
                                                          "range": ["#54a24b", "#4c78a8", "#9d755d"]}),
                         "tooltip": [charts.n("data"), charts.n("tier"), charts.q("percent", format=".1f")]}}


def _flash() -> None:
    c = st.columns(3)
    picked = _pick(f"{PREFIX}.flash", "m1-max", "opt-6.7b", c[0])
    if picked is None:
        return
    hw, model = picked
    dram_gb = c[1].number_input("DRAM budget for the model (GB)", value=7.0, step=0.5, key=f"{PREFIX}.dram")
    w_bits = c[1].selectbox("Weight bits", common.W_BITS, key=f"{PREFIX}.flash_w_bits")
    active = c[2].number_input("FFN neurons active per token", value=0.10, step=0.01, key=f"{PREFIX}.active")
    persistence = c[2].number_input("Persistence of an active neuron", value=0.7, step=0.05, key=f"{PREFIX}.persist")
    bundling = c[0].checkbox("Row-column bundling", value=True, key=f"{PREFIX}.bundling")
    device = c[0].radio("Compute on", ["cpu", "gpu"], horizontal=True, key=f"{PREFIX}.flash_device")
    try:
        out = flash(hw, model, float(dram_gb) * 1e9, float(w_bits), float(active), float(persistence), bool(bundling),
                    device)
    except views.USER_ERRORS as err:
        common.show_error(err)
        return
    row = out["summary"].iloc[0]
    m = st.columns(4)
    m[0].metric("Latency per token", f"{row['latency_s'] * 1e3:.3g} ms")
    m[1].metric("Speed-up over naive loading", f"{row['speedup']:.2f}x",
                help=f"naive: {row['naive_latency_s'] * 1e3:.3g} ms per token")
    m[2].metric("Window", f"{int(row['window'])} tokens", help="active neurons of the last tokens kept in DRAM")
    m[3].metric("DRAM used", f"{row['dram_bytes'] / 1e9:.2f} GB", help=f"static share {row['static_fraction']:.2f}")
    st.vega_lite_chart(spec={"title": "Per-token latency", "height": {"step": 30},
                             "data": {"values": charts.records(out["parts"], ["plan", "part", "ms"])}, "mark": "bar",
                             "encoding": {"x": charts.q("ms", "ms per token", stack="zero"),
                                          "y": charts.n("plan", title=None), "color": charts.n("part"),
                                          "tooltip": [charts.n("part"), charts.q("ms", format=".4g")]}},
                       width="stretch")
    st.dataframe(out["summary"], hide_index=True)
    cli = (f"perfmodel solve flash --model {model} --hardware {hw} --dram-budget '{dram_gb:g} GB' --w-bits {w_bits} "
           f"--active {active:g} --persistence {persistence:g} --device {device}"
           + ("" if bundling else " --no-bundling"))
    st.code(cli, language="bash")
    common.export_buttons(f"{PREFIX}-flash", yaml.safe_dump({"hardware": hw, "model": model, "dram_budget_GB": dram_gb,
                                                             "w_bits": w_bits, "active": active,
                                                             "persistence": persistence, "bundling": bool(bundling),
                                                             "device": device, "cli": cli}, sort_keys=False),
                          {"flash": out["summary"]})
