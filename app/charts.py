"""Altair (Vega-Lite) charts of the planner, built from the frames in `app.views`.

Pure functions of DataFrames: no streamlit here, so a test can build every chart and inspect its
spec. Times are drawn in milliseconds, memory in GB (1e9 bytes), rates in FLOP/s (log axes).
"""
from __future__ import annotations

import altair as alt
import pandas as pd

from app import views

BOUND_COLORS = alt.Scale(domain=["compute", "memory", "overhead", "comm"],
                         range=["#d62728", "#1f77b4", "#7f7f7f", "#9467bd"])


def memory_bar(frame: pd.DataFrame, capacity_bytes: float, title: str = "Memory per device") -> alt.LayerChart:
    """One horizontal stacked bar (weights, KV, activations, free) with a rule at the capacity;
    a plan that does not fit runs past the rule. The bar has a band of its own (y) and a fixed
    step height: without them Streamlit's content-sized container collapses a bar-only chart."""
    data = frame.assign(device="per device")
    bar = alt.Chart(data).mark_bar().encode(
        x=alt.X("GB:Q", stack="zero", title="GB (1e9 bytes)"),
        y=alt.Y("device:N", title=None),
        color=alt.Color("component:N", legend=alt.Legend(orient="bottom", title=None),
                        scale=alt.Scale(domain=list(frame["component"]),
                                        range=["#4c78a8", "#f58518", "#54a24b", "#e0e0e0"])),
        order=alt.Order("order:Q"),
        tooltip=["component", alt.Tooltip("GB:Q", format=".2f")],
    )
    cap = pd.DataFrame({"GB": [capacity_bytes / 1e9], "label": [f"capacity {capacity_bytes / 1e9:.0f} GB"]})
    rule = alt.Chart(cap).mark_rule(color="#d62728", strokeWidth=3).encode(x="GB:Q", tooltip=["label"])
    text = alt.Chart(cap).mark_text(align="right", dx=-4, dy=-24, color="#d62728").encode(x="GB:Q", text="label")
    return (bar + rule + text).properties(height=alt.Step(36), title=title)


def op_times(frame: pd.DataFrame, title: str) -> alt.Chart:
    """Time per op of one step (all layers), colored by the bound each op hit."""
    data = frame.assign(time_ms=frame["time_s"] * 1e3, share_pct=frame["share"] * 100)
    data = data[data["time_s"] > 0]
    return alt.Chart(data).mark_bar().encode(
        x=alt.X("time_ms:Q", title="time per step (ms)"),
        y=alt.Y("op:N", sort="-x", title=None),
        color=alt.Color("bound:N", scale=BOUND_COLORS),
        tooltip=["op", "kind", "count", "bound", alt.Tooltip("time_ms:Q", format=".4f"),
                 alt.Tooltip("share_pct:Q", format=".1f", title="share %")],
    ).properties(title=title, height=alt.Step(16))


def roofline(points: pd.DataFrame, roof_list: list[dict], title: str = "Roofline") -> alt.LayerChart:
    """Log-log roofline: each op at (FLOP per byte, achieved FLOP/s) under the device's roofs."""
    lo, hi = points["intensity_flop_per_byte"].min(), points["intensity_flop_per_byte"].max()
    for r in roof_list:  # extend the axis to the ridge points so the roofs' corners are visible
        ridge = r["flops_per_s"] / r["bytes_per_s"]
        lo, hi = min(lo, ridge), max(hi, ridge)
    lines = views.roof_lines(roof_list, lo, hi)
    x = alt.X("intensity_flop_per_byte:Q", scale=alt.Scale(type="log"), title="arithmetic intensity (FLOP/byte)",
              axis=alt.Axis(format="~g"))
    roof = alt.Chart(lines).mark_line(strokeDash=[4, 3]).encode(
        x=x, y=alt.Y("flops_per_s:Q", scale=alt.Scale(type="log"), title="achieved FLOP/s",
                     axis=alt.Axis(format="~s")),
        detail="roof:N", strokeOpacity=alt.value(0.8), tooltip=["roof"],
        color=alt.value("#444"))
    label_data = lines.loc[lines.groupby("roof")["intensity_flop_per_byte"].idxmax()]
    labels = alt.Chart(label_data).mark_text(align="right", dy=-6, fontSize=10).encode(
        x=x, y="flops_per_s:Q", text="roof:N")
    dots = alt.Chart(points).mark_point(filled=True, size=70).encode(
        x=x, y="achieved_flops_per_s:Q",
        color=alt.Color("phase:N", scale=alt.Scale(domain=["prefill", "decode"], range=["#e45756", "#4c78a8"]),
                        legend=alt.Legend(orient="bottom")),
        shape=alt.Shape("kind:N", legend=alt.Legend(orient="bottom")),
        tooltip=["phase", "op", "kind", "bound", alt.Tooltip("intensity_flop_per_byte:Q", format=".3g"),
                 alt.Tooltip("achieved_flops_per_s:Q", format=".3e"), alt.Tooltip("time_s:Q", format=".3e")],
    )
    return (roof + labels + dots).properties(title=title, height=380)


def tradeoff(frame: pd.DataFrame, x: str, y: str, x_title: str, y_title: str, title: str) -> alt.LayerChart:
    """Scatter of configurations with the Pareto front (lower x, higher y) drawn as a step line
    and its points ringed."""
    data = frame.assign(pareto=views.pareto_mask(frame[x], frame[y]))
    front = data[data["pareto"]].sort_values(x)
    xs = alt.X(f"{x}:Q", scale=alt.Scale(type="log"), title=x_title)
    ys = alt.Y(f"{y}:Q", scale=alt.Scale(type="log"), title=y_title)
    tooltip = ["config", alt.Tooltip(f"{x}:Q", format=".4g"), alt.Tooltip(f"{y}:Q", format=".4g"), "pareto"]
    dots = alt.Chart(data).mark_point(filled=True, size=60, opacity=0.75).encode(
        x=xs, y=ys, color="hardware:N", shape="model:N", tooltip=tooltip)
    line = alt.Chart(front).mark_line(interpolate="step-after", color="#222").encode(x=xs, y=ys)
    rings = alt.Chart(front).mark_point(size=180, color="#222", strokeWidth=1.5).encode(x=xs, y=ys,
                                                                                       tooltip=tooltip)
    return (line + dots + rings).properties(title=title, height=360)


def predicted_vs_measured(report: pd.DataFrame, variant: str) -> alt.LayerChart:
    """Log-log predicted vs measured time per case, with the y = x line of a perfect model."""
    data = report.assign(measured_ms=report["measured_s"] * 1e3, predicted_ms=report[variant] * 1e3)
    lo = float(min(data["measured_ms"].min(), data["predicted_ms"].min()))
    hi = float(max(data["measured_ms"].max(), data["predicted_ms"].max()))
    scale = alt.Scale(type="log")
    diag = alt.Chart(pd.DataFrame({"measured_ms": [lo, hi], "predicted_ms": [lo, hi]})).mark_line(
        color="#888", strokeDash=[4, 3]).encode(x=alt.X("measured_ms:Q", scale=scale),
                                                y=alt.Y("predicted_ms:Q", scale=scale))
    dots = alt.Chart(data).mark_point(filled=True, opacity=0.7).encode(
        x=alt.X("measured_ms:Q", scale=scale, title="measured (ms)"),
        y=alt.Y("predicted_ms:Q", scale=scale, title=f"{variant} (ms)"),
        color="kernel_class:N",
        tooltip=["case", "kernel_class", alt.Tooltip("measured_ms:Q", format=".4g"),
                 alt.Tooltip("predicted_ms:Q", format=".4g")])
    return (diag + dots).properties(title=f"{variant} vs measured", height=380)
