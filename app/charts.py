"""Vega-Lite charts of the planner as plain dicts, built from the frames in `app.views`.

Plain dicts rather than Altair objects: Altair wraps and validates every channel against the
Vega-Lite JSON schema, which costs 0.2-0.5 s per chart, too slow for a page that redraws on every
widget change; a dict costs microseconds and st.vega_lite_chart draws it as is. No streamlit here,
so tests build every chart and inspect it. Times are drawn in ms, memory in GB (1e9 bytes),
rates in FLOP/s on log axes.
"""
from __future__ import annotations

import math

import pandas as pd

from app import views

BOUNDS = {"domain": ["compute", "memory", "overhead", "comm"], "range": ["#d62728", "#1f77b4", "#7f7f7f", "#9467bd"]}
MEMORY_COLORS = ["#4c78a8", "#f58518", "#54a24b", "#e0e0e0"]


def records(frame: pd.DataFrame, columns: list[str]) -> list[dict]:
    """Rows as JSON-ready dicts; rows with a non-finite number are dropped (JSON has no NaN)."""
    rows = frame[list(dict.fromkeys(columns))].to_dict("records")
    return [r for r in rows if all(not (isinstance(v, float) and not math.isfinite(v)) for v in r.values())]


def q(field: str, title=None, log: bool = False, **extra) -> dict:
    """A quantitative channel."""
    out = {"field": field, "type": "quantitative", "title": title or field, **extra}
    if log:
        out["scale"] = {"type": "log"}
    return out


def n(field: str, **extra) -> dict:
    """A nominal channel."""
    return {"field": field, "type": "nominal", **extra}


def memory_bar(frame: pd.DataFrame, capacity_bytes: float, title: str = "Memory per device",
               colors: list[str] | None = None) -> dict:
    """One horizontal stacked bar (weights, KV, activations, free) with a rule at the capacity; a
    plan that does not fit runs past the rule. The bar gets a band of its own (y) and a step
    height: without them Streamlit's content-sized frame collapses a bar-only chart (and a fixed
    frame height squashes the band to nothing)."""
    data = frame.assign(device="per device")
    cap = [{"GB": capacity_bytes / 1e9, "label": f"capacity {capacity_bytes / 1e9:.0f} GB"}]
    x = q("GB", "GB (1e9 bytes)")
    return {
        "title": title, "height": {"step": 36},
        "layer": [
            {"data": {"values": records(data, ["component", "GB", "order", "device"])}, "mark": "bar",
             "encoding": {"x": {**x, "stack": "zero"}, "y": n("device", title=None),
                          "color": n("component", legend={"orient": "bottom", "title": None},
                                     scale={"domain": list(frame["component"]), "range": colors or MEMORY_COLORS}),
                          "order": q("order"), "tooltip": [n("component"), q("GB", format=".2f")]}},
            {"data": {"values": cap}, "mark": {"type": "rule", "color": "#d62728", "strokeWidth": 3},
             "encoding": {"x": x, "tooltip": [n("label")]}},
            {"data": {"values": cap}, "mark": {"type": "text", "align": "right", "dx": -4, "dy": -24,
                                               "color": "#d62728"},
             "encoding": {"x": x, "text": n("label")}},
        ],
    }


OP_ROW_PX = 22  # pixels per op row: a 11 px label with room around it


def op_times(frame: pd.DataFrame, title: str) -> dict:
    """Time per op of one step (all layers), colored by the bound each op hit."""
    data = frame[frame["time_s"] > 0].assign(time_ms=lambda f: f["time_s"] * 1e3,
                                               share_pct=lambda f: f["share"] * 100)
    # a fixed height of one row per op: Streamlit sizes a chart with a height "step" to its default
    # height, and Vega then drops every other op label where the rows overlap (issue 16)
    return {
        "title": title, "height": OP_ROW_PX * max(len(data), 1),
        "data": {"values": records(data, ["op", "kind", "count", "bound", "time_ms", "share_pct"])},
        "mark": "bar",
        "encoding": {"x": q("time_ms", "time per step (ms)"),
                     "y": n("op", sort="-x", title=None, axis={"labelOverlap": False, "labelLimit": 0}),
                     "color": n("bound", scale=BOUNDS),
                     "tooltip": [n("op"), n("kind"), q("count"), n("bound"), q("time_ms", format=".4f"),
                                 q("share_pct", "share %", format=".1f")]},
    }


def roofline(points: pd.DataFrame, roof_list: list[dict], title: str = "Roofline") -> dict:
    """Log-log roofline: each op at (FLOP per byte, achieved FLOP/s) under the device's roofs."""
    lo, hi = points["intensity_flop_per_byte"].min(), points["intensity_flop_per_byte"].max()
    for r in roof_list:  # extend the axis to the ridge points so the roofs' corners are visible
        ridge = r["flops_per_s"] / r["bytes_per_s"]
        lo, hi = min(lo, ridge), max(hi, ridge)
    lines = views.roof_lines(roof_list, lo, hi)
    labels = lines.loc[lines.groupby("roof")["intensity_flop_per_byte"].idxmax()]
    x = q("intensity_flop_per_byte", "arithmetic intensity (FLOP/byte)", log=True, axis={"format": "~g"})
    y_roof = q("flops_per_s", "achieved FLOP/s", log=True, axis={"format": "~s"})
    cols = ["phase", "op", "kind", "bound", "intensity_flop_per_byte", "achieved_flops_per_s", "time_s"]
    return {
        "title": title, "height": 380,
        "layer": [
            {"data": {"values": records(lines, ["roof", "intensity_flop_per_byte", "flops_per_s"])},
             "mark": {"type": "line", "strokeDash": [4, 3], "color": "#444"},
             "encoding": {"x": x, "y": y_roof, "detail": n("roof"), "tooltip": [n("roof")]}},
            {"data": {"values": records(labels, ["roof", "intensity_flop_per_byte", "flops_per_s"])},
             "mark": {"type": "text", "align": "right", "dy": -6, "fontSize": 10},
             "encoding": {"x": x, "y": y_roof, "text": n("roof")}},
            {"data": {"values": records(points, cols)}, "mark": {"type": "point", "filled": True, "size": 70},
             "encoding": {"x": x, "y": q("achieved_flops_per_s", "achieved FLOP/s", log=True, axis={"format": "~s"}),
                          "color": n("phase", scale={"domain": ["prefill", "decode"], "range": ["#e45756", "#4c78a8"]},
                                     legend={"orient": "bottom"}),
                          "shape": n("kind", legend={"orient": "bottom"}),
                          "tooltip": [n("phase"), n("op"), n("kind"), n("bound"),
                                      q("intensity_flop_per_byte", format=".3g"),
                                      q("achieved_flops_per_s", format=".3e"), q("time_s", format=".3e")]}},
        ],
    }


def tradeoff(frame: pd.DataFrame, x: str, y: str, x_title: str, y_title: str, title: str) -> dict:
    """Scatter of configurations with the Pareto front (lower x, higher y) drawn as a step line and
    its points ringed."""
    data = frame.assign(pareto=views.pareto_mask(frame[x], frame[y]))
    front = data[data["pareto"]].sort_values(x)
    xs, ys = q(x, x_title, log=True), q(y, y_title, log=True)
    tooltip = [n("config"), q(x, format=".4g"), q(y, format=".4g"), n("pareto")]
    cols = ["config", "hardware", "model", x, y, "pareto"]
    return {
        "title": title, "height": 360,
        "layer": [
            {"data": {"values": records(front, cols)}, "mark": {"type": "line", "interpolate": "step-after",
                                                                "color": "#222"},
             "encoding": {"x": xs, "y": ys}},
            {"data": {"values": records(data, cols)}, "mark": {"type": "point", "filled": True, "size": 60,
                                                               "opacity": 0.75},
             "encoding": {"x": xs, "y": ys, "color": n("hardware"), "shape": n("model"), "tooltip": tooltip}},
            {"data": {"values": records(front, cols)}, "mark": {"type": "point", "size": 180, "color": "#222",
                                                                "strokeWidth": 1.5},
             "encoding": {"x": xs, "y": ys, "tooltip": tooltip}},
        ],
    }


def predicted_vs_measured(report: pd.DataFrame, variant: str) -> dict:
    """Log-log predicted vs measured time per case, with the y = x line of a perfect model."""
    data = report.assign(measured_ms=report["measured_s"] * 1e3, predicted_ms=report[variant] * 1e3)
    lo = float(min(data["measured_ms"].min(), data["predicted_ms"].min()))
    hi = float(max(data["measured_ms"].max(), data["predicted_ms"].max()))
    xs, ys = q("measured_ms", "measured (ms)", log=True), q("predicted_ms", f"{variant} (ms)", log=True)
    return {
        "title": f"{variant} vs measured", "height": 380,
        "layer": [
            {"data": {"values": [{"measured_ms": lo, "predicted_ms": lo}, {"measured_ms": hi, "predicted_ms": hi}]},
             "mark": {"type": "line", "color": "#888", "strokeDash": [4, 3]}, "encoding": {"x": xs, "y": ys}},
            {"data": {"values": records(data, ["case", "kernel_class", "measured_ms", "predicted_ms"])},
             "mark": {"type": "point", "filled": True, "opacity": 0.7},
             "encoding": {"x": xs, "y": ys, "color": n("kernel_class"),
                          "tooltip": [n("case"), n("kernel_class"), q("measured_ms", format=".4g"),
                                      q("predicted_ms", format=".4g")]}},
        ],
    }


def line(frame: pd.DataFrame, x: str, y: str, x_title: str, y_title: str, title: str, color: str | None = None,
         log_x: bool = False, log_y: bool = False, marked: pd.DataFrame | None = None, ordinal: bool = False) -> dict:
    """A line chart (one line per `color` value; `ordinal` sorts numeric colors as numbers),
    optionally with highlighted points `marked`."""
    cols = [c for c in (x, y, color) if c]
    enc = {"x": q(x, x_title, log=log_x), "y": q(y, y_title, log=log_y),
           "tooltip": [q(x, format=".4g"), q(y, format=".4g")] + ([n(color)] if color else [])}
    if color:
        enc["color"] = {"field": color, "type": "ordinal" if ordinal else "nominal"}
    layers = [{"data": {"values": records(frame, cols)}, "mark": {"type": "line", "point": True}, "encoding": enc}]
    if marked is not None and len(marked):
        layers.append({"data": {"values": records(marked, cols)},
                       "mark": {"type": "point", "size": 200, "color": "#d62728", "strokeWidth": 2},
                       "encoding": {"x": enc["x"], "y": enc["y"], "tooltip": enc["tooltip"]}})
    return {"title": title, "height": 340, "layer": layers}


def bars(frame: pd.DataFrame, x: str, y: str, x_title: str, title: str, color: str | None = None) -> dict:
    """Horizontal bars of `x` per category `y`."""
    cols = [c for c in (x, y, color) if c]
    enc = {"x": q(x, x_title), "y": n(y, sort=None, title=None), "tooltip": [n(y), q(x, format=".4g")]}
    if color:
        enc["color"] = n(color)
    return {"title": title, "height": {"step": 18}, "data": {"values": records(frame, cols)}, "mark": "bar",
            "encoding": enc}


def grouped_bars(frame: pd.DataFrame, x: str, y: str, group: str, x_title: str, title: str) -> dict:
    """Horizontal bars of `x` per category `y`, one bar per `group` value side by side."""
    return {"title": title, "height": {"step": 16, "for": "position"},
            "data": {"values": records(frame, [x, y, group])}, "mark": "bar",
            "encoding": {"x": q(x, x_title), "y": n(y, title=None), "yOffset": n(group), "color": n(group),
                         "tooltip": [n(y), n(group), q(x, format=".4g")]}}
