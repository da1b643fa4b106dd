"""Widgets every page shares: device, model and engine pickers, scenario inputs, cached predictions, exports.

Cached functions key on plain values (preset name or spec YAML text, catalog name or config JSON
text, scenario numbers) because the spec objects hold read-only mappings that do not hash or pickle;
a widget change that returns to a seen configuration re-renders from the cache.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd
import streamlit as st
import yaml

import hardware
import workloads
from app import views
from perfmodel.engines import DEFAULT_ENGINE

PREFERRED_DEVICE = "h200-sxm"
PREFERRED_MODEL = "llama-3-8b"
W_BITS = (16, 8, 4, 3, 2)
A_BITS = (16, 8)
KV_BITS = (16, 8, 4)
TPS = (1, 2, 4, 8)


@dataclass(frozen=True)
class Choice:
    """A resolved device or model: the cache key, the name the CLI takes, and any inline data
    (a custom spec's mapping, an uploaded config's dict) that the YAML export carries."""

    key: tuple
    ref: str
    inline: dict | None
    label: str


# -- cached computations ----------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=512)
def cached_plan(hw_key: tuple, model_key: tuple, inputs: tuple, engine: str = DEFAULT_ENGINE) -> dict:
    model, hw = views.resolve_model(model_key), views.resolve_hardware(hw_key)
    return views.plan(model, hw, views.scenario(dict(inputs)), engine)


@st.cache_data(show_spinner=False, max_entries=64)
def cached_compare(hw_names: tuple, model_names: tuple, grid_items: tuple,
                   engine: str = DEFAULT_ENGINE) -> tuple[pd.DataFrame, list[str]]:
    pairs = [(workloads.load(m), hardware.load(h)) for h in hw_names for m in model_names]
    return views.compare(pairs, {k: list(v) if isinstance(v, tuple) else v for k, v in grid_items}, engine)


@st.cache_data(show_spinner=False)
def device_names() -> list[str]:
    return hardware.names()


@st.cache_data(show_spinner=False)
def model_names() -> list[str]:
    return workloads.names()


def default_index(options: list[str], preferred: str) -> int:
    return options.index(preferred) if preferred in options else 0


# -- device ------------------------------------------------------------------------------------
def device_picker(prefix: str, where=st.sidebar, form_area=None) -> Choice | None:
    """Catalog preset, a spec typed into the form, or an uploaded YAML file; None (with the
    reasons shown) when the custom spec does not validate."""
    names = device_names()
    modes = (["Catalog"] if names else []) + ["Custom", "Upload YAML"]
    mode = where.radio("Device", modes, horizontal=True, key=f"{prefix}.device_mode")
    if not names:
        where.info("No hardware presets are installed; enter or upload a spec.")
    if mode == "Catalog":
        name = where.selectbox("Preset", names, index=default_index(names, PREFERRED_DEVICE), key=f"{prefix}.device")
        return Choice(("preset", name), name, None, hardware.load(name).title)
    area = form_area or st
    if mode == "Upload YAML":
        return _uploaded_spec(prefix, where, area)
    base = where.selectbox("Start from", ["(blank)"] + names, index=1 + default_index(names, PREFERRED_DEVICE)
                           if names else 0, key=f"{prefix}.device_base")
    return _spec_form(prefix, area, None if base == "(blank)" else hardware.load(base))


def _spec_form(prefix: str, area, base) -> Choice | None:
    """The custom-spec form: one text box per field, each validated on its own, its message shown
    right under it."""
    defaults = views.form_defaults(base)
    tag = base.name if base else "blank"
    values, slots = {}, {}
    with area.expander("Custom device spec (human units: '4.8 TB/s', '141 GB', '2 us', '3.5 USD/h')", expanded=True):
        top = st.columns(3)
        values["name"] = top[0].text_input("Name", defaults["name"], key=f"{prefix}.spec.{tag}.name")
        values["kind"] = top[1].selectbox("Kind", list(views.KINDS), index=list(views.KINDS).index(defaults["kind"]),
                                          key=f"{prefix}.spec.{tag}.kind")
        links = list(views.DEVICE_LINK_KINDS)
        values["device_link.kind"] = top[2].selectbox("Device link", links,
                                                      index=links.index(defaults["device_link.kind"]),
                                                      key=f"{prefix}.spec.{tag}.link")
        cols = st.columns(3)
        for i, field in enumerate(views.SPEC_FIELDS):
            with cols[i % 3]:
                values[field.path] = st.text_input(field.label, defaults[field.path],
                                                   key=f"{prefix}.spec.{tag}.{field.path}")
                slots[field.path] = st.empty()
    doc = views.spec_from_form(values)
    hw, errors = views.build_spec(doc, origin="custom spec")
    for path, message in errors.items():
        (slots.get(path) or area).error(message)
    if hw is None:
        area.warning(f"The custom spec has {len(errors)} invalid field(s); fix them to see the plan.")
        return None
    return Choice(("yaml", yaml.safe_dump(doc, sort_keys=False)), f"{hw.name}.yaml", doc, hw.title)


def _uploaded_spec(prefix: str, where, area) -> Choice | None:
    upload = where.file_uploader("Spec YAML (schema of hardware/presets)", type=["yaml", "yml"],
                                 key=f"{prefix}.device_upload")
    if upload is None:
        area.info("Upload a hardware spec YAML (same schema as hardware/presets/*.yaml) to plan on it.")
        return None
    text = upload.getvalue().decode("utf-8", errors="replace")
    hw, errors = views.parse_spec_yaml(text, origin=upload.name)
    if hw is None:
        area.error(f"{upload.name}: {len(errors)} invalid field(s):\n\n"
                   + "\n".join(f"- `{path}`: {msg}" for path, msg in errors.items()))
        return None
    return Choice(("yaml", text), upload.name, yaml.safe_load(text), hw.title)


# -- model -------------------------------------------------------------------------------------
def model_picker(prefix: str, where=st.sidebar, area=None) -> Choice | None:
    area = area or st
    mode = where.radio("Model", ["Catalog", "Upload config.json"], horizontal=True, key=f"{prefix}.model_mode")
    if mode == "Catalog":
        names = model_names()
        name = where.selectbox("Catalog model", names, index=default_index(names, PREFERRED_MODEL),
                               key=f"{prefix}.model")
        return Choice(("catalog", name), name, None, name)
    upload = where.file_uploader("HF config.json", type=["json"], key=f"{prefix}.model_upload")
    if upload is None:
        area.info("Upload a Hugging Face config.json (read locally; nothing is downloaded).")
        return None
    name = upload.name.rsplit(".", 1)[0]
    text = upload.getvalue().decode("utf-8", errors="replace")
    try:
        model = views.model_from_config_text(text, name)
    except views.USER_ERRORS as err:
        area.error(str(err))
        return None
    return Choice(("config", text, name), upload.name, json.loads(text), model.name)


# -- engine ------------------------------------------------------------------------------------
def engine_picker(prefix: str, where=st.sidebar) -> str:
    """The engine profile that prices the page's steps (perfmodel.engines), the default preselected;
    the help lists every profile's title and description."""
    names = views.engine_names()
    return where.selectbox("Engine", names, index=default_index(names, DEFAULT_ENGINE), key=f"{prefix}.engine",
                           help=views.engine_help())


# -- scenario ----------------------------------------------------------------------------------
def scenario_inputs(prefix: str, where=st.sidebar) -> dict:
    """Batch, lengths, precisions, TP. No min_value on the numbers on purpose: the Scenario's
    own validation answers a bad value with a message naming the field (and tests rely on it)."""
    where.subheader("Workload")
    c = where.columns(2)
    out = {"batch": c[0].number_input("Batch", value=16, step=1, key=f"{prefix}.batch"),
           "samples": c[1].number_input("Samples (best-of-N)", value=1, step=1, key=f"{prefix}.samples"),
           "prompt": c[0].number_input("Prompt tokens", value=2048, step=128, key=f"{prefix}.prompt"),
           "gen": c[1].number_input("Generated tokens", value=256, step=64, key=f"{prefix}.gen")}
    where.subheader("Precision and parallelism")
    c = where.columns(2)
    out["w_bits"] = c[0].selectbox("Weight bits", W_BITS, key=f"{prefix}.w_bits")
    out["a_bits"] = c[1].selectbox("Activation bits", A_BITS, key=f"{prefix}.a_bits")
    out["kv_bits"] = c[0].selectbox("KV-cache bits", KV_BITS, key=f"{prefix}.kv_bits")
    out["tp"] = c[1].selectbox("Tensor parallel", TPS, key=f"{prefix}.tp")
    return out


# -- exports -----------------------------------------------------------------------------------
def export_buttons(prefix: str, inputs_yaml: str, results: dict[str, pd.DataFrame], where=st) -> None:
    """Download buttons: the inputs as YAML, each results frame as CSV."""
    cols = where.columns(1 + len(results))
    cols[0].download_button("Inputs (YAML)", inputs_yaml, file_name=f"{prefix}-inputs.yaml",
                            mime="application/x-yaml", key=f"{prefix}.dl.inputs")
    for col, (name, frame) in zip(cols[1:], results.items()):
        col.download_button(f"{name} (CSV)", frame.to_csv(index=False), file_name=f"{prefix}-{name}.csv",
                            mime="text/csv", key=f"{prefix}.dl.{name}")


def metric_of(where):
    """`where.metric` without the keyword arguments this Streamlit version lacks (delta_arrow came in
    a later release than the oldest one pyproject allows)."""
    import inspect

    method = where.metric
    known = set(inspect.signature(method).parameters)

    def metric(*args, **kwargs):
        return method(*args, **{k: v for k, v in kwargs.items() if k in known})

    return metric


def show_error(err: Exception, where=st) -> None:
    """A user error as one message (never a traceback)."""
    message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    where.error(message)


# -- solver pages -----------------------------------------------------------------------------
def solver_missing(page: str) -> bool:
    """Say "not available yet" (and return True) when a solver page's modules cannot be imported."""
    from app import solver_views

    missing = solver_views.missing_modules(page)
    if missing:
        st.info(f"not available yet: this page needs {', '.join(missing)}, which is not installed or not "
                "written yet.")
    return bool(missing)


def catalog_pick(prefix: str, device: str = PREFERRED_DEVICE, model: str = PREFERRED_MODEL,
                 where=st.sidebar) -> tuple[str, str] | None:
    """A catalog device and model (solver pages work on catalog entries)."""
    devices, models = device_names(), model_names()
    if not devices:
        st.info("No hardware presets are installed yet.")
        return None
    hw = where.selectbox("Device", devices, index=default_index(devices, device), key=f"{prefix}.device")
    name = where.selectbox("Model", models, index=default_index(models, model), key=f"{prefix}.model")
    return hw, name
