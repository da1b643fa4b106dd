"""Visual generation page: a text-to-image or text-to-video request of a diffusion transformer
(workloads.dit, perfmodel.dit) on one device, and the same request on every preset."""
from __future__ import annotations

import streamlit as st
import yaml

from app import dit_views
from app.ui import common
from perfmodel import dit as cost
from workloads import dit

PREFIX = "visual"


@st.cache_data(show_spinner=False, max_entries=128)
def cached(inputs: tuple, hw: str):
    pred = dit_views.predict(dict(inputs), hw)
    return (dit_views.metric_texts(pred), dit_views.stage_frame(pred), dit_views.class_frame(pred),
            pred.to_dict())


@st.cache_data(show_spinner=False, max_entries=32)
def cached_presets(inputs: tuple):
    return dit_views.every_preset(dict(inputs))


def render() -> None:
    st.title("Visual generation")
    names = dit.names()
    devices = common.device_names()
    with st.sidebar:
        model = st.selectbox("Diffusion model", names, index=names.index("flux.1-dev"), key=f"{PREFIX}.model")
        pipe = dit.load(model)
        hw = st.selectbox("Device", devices, index=common.default_index(devices, "h200-sxm-calibrated"),
                          key=f"{PREFIX}.device")
        engine = st.selectbox("Engine", list(cost.DIT_ENGINES), key=f"{PREFIX}.engine")
        height = st.number_input("Height (px)", 16, 16384, pipe.height, step=16, key=f"{PREFIX}.{model}.h")
        width = st.number_input("Width (px)", 16, 16384, pipe.width, step=16, key=f"{PREFIX}.{model}.w")
        frames = st.number_input("Frames", 1, 10000, pipe.frames, step=4, key=f"{PREFIX}.{model}.f",
                                 disabled=not pipe.is_video)
        steps = st.number_input("Steps", 1, 10000, pipe.steps, key=f"{PREFIX}.{model}.steps")
        cfg = st.checkbox("Classifier-free guidance (2 passes per step)", pipe.cfg, key=f"{PREFIX}.{model}.cfg")
        batch = st.number_input("Batch (images / videos)", 1, 1024, 1, key=f"{PREFIX}.batch")
        devices_n = st.selectbox("GPUs per request (sequence parallel)", [1, 2, 4, 8], key=f"{PREFIX}.devices")
        w_bits = st.selectbox("Weight bits", [16, 8, 4], key=f"{PREFIX}.w")
        a_bits = st.selectbox("Activation bits", [16, 8], key=f"{PREFIX}.a")
        density = st.slider("Sparse attention density", 0.05, 1.0, 1.0, 0.05, key=f"{PREFIX}.density")
        cached_fraction = st.slider("Cached block outputs per step", 0.0, 0.9, 0.0, 0.05, key=f"{PREFIX}.cache")
    inputs = {"model": model, "height": int(height), "width": int(width), "frames": int(frames), "steps": int(steps),
              "cfg": bool(cfg), "batch": int(batch), "engine": engine, "devices": int(devices_n),
              "w_bits": int(w_bits), "a_bits": int(a_bits), "density": float(density),
              "cached_fraction": float(cached_fraction)}
    key = tuple(sorted(inputs.items()))
    try:
        texts, stages, classes, out = cached(key, hw)
    except ValueError as err:
        common.show_error(err)
        return
    cols = st.columns(len(texts))
    for col, (label, value) in zip(cols, texts.items()):
        col.metric(label, value)
    st.caption(f"{out['image_tokens']:,} image tokens + {out['context_tokens']} text tokens per sample; "
               f"{out['params'] / 1e9:.2f} B parameters; energy from the board power model ({out['power_model']}), "
               f"{out['avg_power_w']:.0f} W average per device.")
    if not out["fits"]:
        st.warning(f"Needs {out['memory_bytes']['total'] / 1e9:.1f} GB per device, has "
                   f"{out['memory_bytes']['capacity'] / 1e9:.1f} GB.")
    st.subheader("Where the time goes")
    st.dataframe(stages, hide_index=True)
    st.subheader("One step per op class")
    st.dataframe(classes, hide_index=True)
    st.subheader("The same request on every preset")
    st.dataframe(cached_presets(key), hide_index=True)
    cli = dit_views.cli_command(inputs, hw)
    st.code(cli, language="bash")
    common.export_buttons(PREFIX, yaml.safe_dump({**inputs, "hardware": hw, "cli": cli}, sort_keys=False),
                          {"stages": stages, "classes": classes})
