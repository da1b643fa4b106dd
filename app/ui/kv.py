"""KV budgets page: capacity, long-context serving, cheapest KV compression, per-layer split
(solvers.kv, perfmodel.longctx)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st
import yaml

import hardware
import workloads
from app import charts, solver_views, views
from app.ui import common

PREFIX = "kv"
CONTEXTS = (4096, 8192, 16384, 32768, 65536, 131072)


@st.cache_data(show_spinner=False, max_entries=128)
def capacity(hw, model, context, users, kv_bits, w_bits, tp):
    return solver_views.kv_capacity(workloads.load(model), hardware.load(hw), context, users, kv_bits, w_bits, tp)


@st.cache_data(show_spinner=False, max_entries=64)
def serving(hw, model, kv_bits, w_bits, engine=common.DEFAULT_ENGINE):
    return solver_views.serving_table(workloads.load(model), hardware.load(hw), CONTEXTS, common.TPS, 1, w_bits,
                                      kv_bits, engine)


@st.cache_data(show_spinner=False, max_entries=64)
def setting(hw, model, context, users, latency_s, memory_bytes, w_bits, tp, engine=common.DEFAULT_ENGINE):
    return solver_views.kv_setting(workloads.load(model), hardware.load(hw), context, users, latency_s, memory_bytes,
                                   w_bits, tp, engine)


def render() -> None:
    st.title("KV budgets")
    if common.solver_missing("kv"):
        return
    picked = common.catalog_pick(PREFIX, model="llama-3.1-8b")
    if picked is None:
        return
    hw, model = picked
    with st.sidebar:
        c = st.columns(2)
        kv_bits = c[0].selectbox("KV-cache bits", common.KV_BITS, key=f"{PREFIX}.kv_bits")
        w_bits = c[1].selectbox("Weight bits", common.W_BITS, key=f"{PREFIX}.w_bits")
        tp = c[0].selectbox("Tensor parallel", common.TPS, key=f"{PREFIX}.tp")
        engine = common.engine_picker(PREFIX)
    cap_tab, serve_tab, setting_tab, split_tab = st.tabs(["Capacity", "Long-context serving", "Cheapest KV setting",
                                                          "Per-layer split"])
    inputs = {"hardware": hw, "model": model, "kv_bits": kv_bits, "w_bits": w_bits, "tp": tp, "engine": engine}
    with cap_tab:
        _capacity(inputs)
    with serve_tab:
        _serving(inputs)
    with setting_tab:
        _setting(inputs)
    with split_tab:
        _split(inputs)


def _capacity(inputs: dict) -> None:
    c = st.columns(2)
    context = c[0].number_input("Context per user (tokens)", value=32768, step=1024, key=f"{PREFIX}.context")
    users = c[1].number_input("Concurrent users", value=8, step=1, key=f"{PREFIX}.users")
    try:
        frame = capacity(inputs["hardware"], inputs["model"], int(context), int(users), float(inputs["kv_bits"]),
                         float(inputs["w_bits"]), int(inputs["tp"]))
    except views.USER_ERRORS as err:
        common.show_error(err)
        return
    users_row, context_row = frame.iloc[0], frame.iloc[1]
    m = st.columns(3)
    m[0].metric(f"Max users at {int(context):,} tokens", f"{int(users_row['value']):,}",
                help=f"bound by {users_row['bound_by']}")
    m[1].metric(f"Max context for {int(users):,} users", f"{int(context_row['value']):,} tokens",
                help=f"bound by {context_row['bound_by']}")
    m[2].metric("KV per user", f"{users_row['kv_bytes_per_user'] / 1e9:.2f} GB",
                help=f"per device; weights and activations reserve {users_row['reserved_bytes'] / 1e9:.1f} GB")
    used = users_row["kv_bytes_per_user"] * users_row["value"]
    parts = pd.DataFrame({"component": ["weights + activations", f"KV of {int(users_row['value'])} users", "free"],
                          "bytes": [users_row["reserved_bytes"], used,
                                    max(users_row["budget_bytes"] - users_row["reserved_bytes"] - used, 0.0)]})
    parts = parts.assign(GB=parts["bytes"] / 1e9, order=range(3))
    st.vega_lite_chart(spec=charts.memory_bar(parts, users_row["budget_bytes"], "HBM per device at the user limit",
                                              colors=["#4c78a8", "#f58518", "#e0e0e0"]), width="stretch")
    cli = (f"perfmodel solve kv capacity --model {inputs['model']} --hardware {inputs['hardware']} --context {int(context)} "
           f"--kv-bits {inputs['kv_bits']} --w-bits {inputs['w_bits']} --tp {inputs['tp']}")
    st.code(cli, language="bash")
    common.export_buttons(f"{PREFIX}-capacity", yaml.safe_dump({**inputs, "context": int(context), "users": int(users),
                                                                "cli": cli}, sort_keys=False), {"capacity": frame})


def _serving(inputs: dict) -> None:
    try:
        frame = serving(inputs["hardware"], inputs["model"], float(inputs["kv_bits"]), float(inputs["w_bits"]),
                        inputs["engine"])
    except views.USER_ERRORS as err:
        common.show_error(err)
        return
    shown = frame.assign(tp=frame["tp"].astype(int).astype(str))
    left, right = st.columns(2)
    left.vega_lite_chart(spec=charts.line(shown[shown["concurrency"] > 0], "context", "concurrency", "context (tokens)",
                                          "max concurrent users", "Concurrency limit", color="tp", log_x=True,
                                          log_y=True), width="stretch")
    right.vega_lite_chart(spec=charts.line(shown, "context", "decode_s_per_token", "context (tokens)",
                                           "decode s / token (batch 1)", "Decode latency", color="tp", log_x=True),
                          width="stretch")
    st.dataframe(frame, hide_index=True)
    cli = (f"perfmodel solve kv serve --model {inputs['model']} --hardware {inputs['hardware']} "
           f"--context {','.join(str(int(c)) for c in sorted(set(frame['context'])))} "
           f"--tp {','.join(str(t) for t in common.TPS)} --w-bits {inputs['w_bits']} --kv-bits {inputs['kv_bits']} "
           f"--engine {inputs['engine']}")
    st.code(cli, language="bash")
    common.export_buttons(f"{PREFIX}-serve", yaml.safe_dump({**inputs, "cli": cli}, sort_keys=False), {"serving": frame})


def _setting(inputs: dict) -> None:
    c = st.columns(4)
    context = c[0].number_input("Context (tokens)", value=32768, step=1024, key=f"{PREFIX}.set_context")
    users = c[1].number_input("Users", value=32, step=1, key=f"{PREFIX}.set_users")
    latency_ms = c[2].number_input("Decode latency target (ms, 0 = none)", value=20.0, step=1.0,
                                   key=f"{PREFIX}.set_latency")
    memory_gb = c[3].number_input("KV memory target (GB, 0 = none)", value=0.0, step=1.0, key=f"{PREFIX}.set_memory")
    try:
        out = setting(inputs["hardware"], inputs["model"], int(context), int(users),
                      latency_ms / 1e3 if latency_ms else None, memory_gb * 1e9 if memory_gb else None,
                      float(inputs["w_bits"]), int(inputs["tp"]), inputs["engine"])
    except views.USER_ERRORS as err:
        common.show_error(err)
        return
    best, cands = out["best"], out["candidates"]
    m = st.columns(4)
    m[0].metric("KV bits", f"{best['kv_bits']:g}")
    m[1].metric("Tokens kept", f"{best['keep_tokens']:,}", help="token eviction budget per user (H2O / SnapKV)")
    m[2].metric("Decode per token", f"{best['decode_s_per_token'] * 1e3:.3g} ms")
    m[3].metric("KV for all users", f"{best['kv_bytes'] / 1e9:.2f} GB",
                help=f"key pruning {best['think_ratio']:g}, sparse budget {best['sparse_budget'] or 'dense'}, "
                     f"{best['halvings']:.2f} weighted halvings of compression")
    chosen = cands.head(1)
    data = cands.assign(kv_GB=cands["kv_bytes"] / 1e9, decode_ms=cands["decode_s_per_token"] * 1e3)
    st.vega_lite_chart(spec=charts.line(data.sort_values("kv_GB"), "kv_GB", "decode_ms", "KV for all users (GB)",
                                        "decode ms / token", "Candidates meeting the target (chosen: ringed)",
                                        marked=data.head(1)), width="stretch")
    st.dataframe(cands, hide_index=True)
    cli = (f"perfmodel solve kv setting --model {inputs['model']} --hardware {inputs['hardware']} --context "
           f"{int(context)} --users {int(users)}" + (f" --latency '{latency_ms:g} ms'" if latency_ms else "")
           + (f" --memory '{memory_gb:g} GB'" if memory_gb else "")
           + f" --w-bits {inputs['w_bits']} --tp {inputs['tp']} --engine {inputs['engine']}")
    st.code(cli, language="bash")
    common.export_buttons(f"{PREFIX}-setting", yaml.safe_dump({**inputs, "cli": cli}, sort_keys=False),
                          {"candidates": cands, "chosen": chosen})


def _split(inputs: dict) -> None:
    model = workloads.load(inputs["model"])
    c = st.columns(4)
    per_layer = c[0].number_input("Mean tokens kept per layer", value=2048, step=256, key=f"{PREFIX}.split_mean")
    lower = c[1].number_input("Lower bound per layer", value=128, step=64, key=f"{PREFIX}.split_lower")
    upper = c[2].number_input("Upper bound per layer", value=8192, step=256, key=f"{PREFIX}.split_upper")
    alpha = c[3].number_input("Loss exponent alpha", value=1.0, step=0.25, key=f"{PREFIX}.split_alpha")
    upload = st.file_uploader("Importance CSV (column importance[, group])", type=["csv"], key=f"{PREFIX}.split_upload")
    try:
        if upload is None:
            importance, names = solver_views.demo_importance(model.n_layers), [f"layer{i}" for i in range(model.n_layers)]
            st.caption("SYNTHETIC demo importance: falling linearly from 2 (first layer) to 1 (last), the shape "
                       "PyramidKV reports; upload measured importances to plan a real split.")
        else:
            table = pd.read_csv(upload, comment="#")
            if "importance" not in table.columns:
                raise ValueError(f"{upload.name}: needs an 'importance' column; has {list(table.columns)}")
            importance = table["importance"].to_numpy(float)
            names = list(table["group"].astype(str)) if "group" in table.columns else None
        frame = solver_views.kv_split(importance, float(per_layer) * len(importance), float(lower), float(upper),
                                      float(alpha), names)
    except views.USER_ERRORS + (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        common.show_error(err)
        return
    st.metric("Predicted loss sum", f"{frame['loss'].sum():.4g}", help="sum_i w_i b_i^-alpha")
    st.vega_lite_chart(spec=charts.bars(frame, "budget", "group", "tokens kept", "Token budget per group"),
                       width="stretch")
    st.dataframe(frame, hide_index=True)
    total = float(per_layer) * len(importance)
    importance_text = ",".join(f"{v:g}" for v in np.asarray(importance, float))
    cli = (f"perfmodel solve kv split --importance {importance_text} --total {total:g} --lower {lower:g} "
           f"--upper {upper:g} --alpha {alpha:g}")
    st.code(cli, language="bash")
    common.export_buttons(f"{PREFIX}-split", yaml.safe_dump({"importance": [float(v) for v in importance],
                                                             "total": total, "lower": float(lower),
                                                             "upper": float(upper), "alpha": float(alpha), "cli": cli},
                                                            sort_keys=False), {"split": frame})
