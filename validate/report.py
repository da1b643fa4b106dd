"""Predicted vs measured: per-case table, per-class error statistics, plots, Markdown report.

Errors are absolute percentage errors, |predicted / measured - 1|. Statistics are reported per
kernel class and overall, for the datasheet spec (uncalibrated) and the calibrated one, on the
calibration and the evaluation split separately (the evaluation split was never seen by the fit).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from hardware.spec import Hardware
from hardware.units import format_si
from validate.predict_cases import predict_frame


def compare(measured: pd.DataFrame, datasheet: Hardware, calibrated: Hardware) -> pd.DataFrame:
    """One row per successful case: measured, both predictions and their ratios and errors."""
    ok = measured[measured["status"] == "ok"].copy()
    ok["measured_s"] = ok["measured_s"].astype(float)
    ok = predict_frame(ok, datasheet, "datasheet_s")
    ok = predict_frame(ok, calibrated, "calibrated_s")
    for which in ("datasheet", "calibrated"):
        ok[f"{which}_ratio"] = ok[f"{which}_s"] / ok["measured_s"]
        ok[f"{which}_ape"] = (ok[f"{which}_ratio"] - 1).abs()
    return ok.assign(**{"class": report_class(ok)})


def report_class(frame: pd.DataFrame) -> pd.Series:
    """The class a case is scored under: its kernel class, marked "(eager)" for kernels launched one
    by one where the run also timed kernels inside CUDA graphs (the two measure different things:
    device time, or the host's dispatch when it is slower), and with the engine profile for
    whole-model steps of any profile but transformers' eager one."""
    timing = _text_column(frame, "timing")
    engine = _text_column(frame, "engine")
    steps = frame["class"].astype(str).str.startswith("model_step")
    eager = (timing != "graph") & ~steps & (frame["kind"] != "launch") & (timing == "graph").any()
    label = frame["class"].astype(str) + np.where(eager, " (eager)", "")
    return label + np.where(steps & (engine != "") & (engine != "hf-eager"), " " + engine, "")


def _text_column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A text column with "" where empty (NaN or absent)."""
    if name not in frame:
        return pd.Series("", index=frame.index)
    return frame[name].astype(object).where(frame[name].notna(), "").astype(str)


def error_table(cmp: pd.DataFrame) -> pd.DataFrame:
    """Median and 90th-percentile APE per class and split, datasheet and calibrated."""
    rows = []
    kernels = cmp[~cmp["class"].str.startswith("model_step") & ~cmp["class"].str.endswith("(eager)")]
    groups = [("all kernels", kernels)] + [(cls, g) for cls, g in cmp.groupby("class")]
    for cls, group in groups:
        for split_name, part in group.groupby("split"):
            rows.append({
                "class": cls, "split": split_name, "cases": len(part),
                "datasheet_median_ape": part["datasheet_ape"].median(),
                "datasheet_p90_ape": part["datasheet_ape"].quantile(0.9),
                "calibrated_median_ape": part["calibrated_ape"].median(),
                "calibrated_p90_ape": part["calibrated_ape"].quantile(0.9),
                "calibrated_median_ratio": part["calibrated_ratio"].median(),
            })
    return pd.DataFrame(rows)


def plot_predicted_vs_measured(cmp: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 6), sharex=True, sharey=True)
    for ax, which in zip(axes, ("datasheet", "calibrated")):
        for cls, g in cmp.groupby("class"):
            ev = g[g["split"] == "evaluation"]
            ax.scatter(ev["measured_s"], ev[f"{which}_s"], s=12, label=cls, alpha=0.8)
        lo, hi = cmp["measured_s"].min() / 2, cmp["measured_s"].max() * 2
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.plot([lo, hi], [lo * 1.15, hi * 1.15], "k:", lw=0.6)
        ax.plot([lo, hi], [lo / 1.15, hi / 1.15], "k:", lw=0.6)
        ax.set(xscale="log", yscale="log", xlabel="measured (s)", ylabel="predicted (s)",
               title=f"{which} spec, evaluation cases")
        ax.grid(True, which="both", alpha=0.2)
    axes[1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_roofline(cmp: pd.DataFrame, datasheet: Hardware, calibrated: Hardware, path: Path) -> None:
    """Achieved FLOP/s of measured GEMM and attention cases against their arithmetic intensity,
    with the datasheet and calibrated bf16 roofs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from perfmodel.ops import matmul_op
    from validate.predict_cases import _precision, case_attention_model
    from perfmodel.ops import attention_op

    points = []
    for r in cmp.to_dict("records"):
        if r["kind"] == "matmul":
            p = _precision(r["dtype"])
            op = matmul_op("mm", float(r["m"]), float(r["n"]), float(r["k"]), p, 1)
        elif r["kind"] == "attention":
            p = _precision(r["dtype"])
            model = case_attention_model(r)
            op = attention_op(model, seqs=float(r["batch"]), new_tokens=float(r["q_len"]),
                              past=float(r["kv_len"]) - float(r["q_len"]), p=p, tp=1)
        else:
            continue
        points.append((r["class"] + ("" if r["kind"] != "matmul" else f" {r['dtype']}"),
                       float(op.flops) / float(op.bytes), float(op.flops) / r["measured_s"]))
    if not points:
        return
    frame = pd.DataFrame(points, columns=["label", "intensity", "flops_per_s"])
    fig, ax = plt.subplots(figsize=(8, 6))
    for label, g in frame.groupby("label"):
        ax.scatter(g["intensity"], g["flops_per_s"], s=10, label=label, alpha=0.7)
    x = np.logspace(np.log10(frame["intensity"].min() / 2), np.log10(frame["intensity"].max() * 2), 200)
    for hw, style, name in ((datasheet, "k-", "datasheet"), (calibrated, "r--", "calibrated")):
        peak = hw.calibration.matmul_flops_per_s.get("bf16") if hw.calibration else hw.peak_flops_per_s("bf16")
        bw = hw.calibration.memory_bytes_per_s if hw.calibration else hw.hbm_bytes_per_s
        ax.plot(x, np.minimum(peak, x * bw), style, lw=1, label=f"{name} bf16 roof")
    ax.set(xscale="log", yscale="log", xlabel="arithmetic intensity (FLOP / byte)", ylabel="achieved FLOP/s",
           title=f"Roofline: measured points on {calibrated.title}")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%" if np.isfinite(x) else "n/a"


def markdown(cmp: pd.DataFrame, errors: pd.DataFrame, measured: pd.DataFrame, calibrated: Hardware) -> str:
    cal = calibrated.calibration
    device = measured["device_name"].dropna().iloc[0] if len(measured) else "?"
    failed = measured[measured["status"] != "ok"]
    ev = errors[errors["split"] == "evaluation"].set_index("class")
    lines = [
        f"# Validation report: {device}",
        "",
        f"Measured with `perfmodel validate run` (torch {measured['torch'].iloc[0]}, CUDA {_cell(measured, 'cuda')}, "
        f"driver {_cell(measured, 'driver')}), {len(measured)} cases, {len(failed)} failed; "
        f"{int((cmp['split'] == 'calibration').sum())} calibration and {int((cmp['split'] == 'evaluation').sum())} "
        "evaluation cases (disjoint: split by shape, and by model for whole steps; validate/cases.py). "
        "Errors are |predicted / measured - 1|.",
        "",
        "## Headline (evaluation cases, never seen by the calibration)",
        "",
    ]
    if "all kernels" in ev.index:
        row = ev.loc["all kernels"]
        lines.append(f"- All kernel cases: median APE {_pct(row['calibrated_median_ape'])}, p90 "
                     f"{_pct(row['calibrated_p90_ape'])} calibrated (datasheet roofline: median "
                     f"{_pct(row['datasheet_median_ape'])}, p90 {_pct(row['datasheet_p90_ape'])}).")
    for cls in [c for c in ev.index if c.startswith("model_step")]:
        row = ev.loc[cls]
        phase, _, engine = cls.removeprefix("model_step_").partition(" ")
        lines.append(f"- Whole-model {phase} steps ({engine or 'hf-eager'}): median APE "
                     f"{_pct(row['calibrated_median_ape'])}, p90 {_pct(row['calibrated_p90_ape'])} "
                     f"(datasheet: {_pct(row['datasheet_median_ape'])}).")
    lines += ["", "## Error per kernel class", "",
              "| class | split | cases | datasheet median | datasheet p90 | calibrated median | calibrated p90 | calibrated median ratio |",
              "|---|---|---|---|---|---|---|---|"]
    for r in errors.to_dict("records"):
        lines.append(f"| {r['class']} | {r['split']} | {r['cases']} | {_pct(r['datasheet_median_ape'])} | "
                     f"{_pct(r['datasheet_p90_ape'])} | {_pct(r['calibrated_median_ape'])} | "
                     f"{_pct(r['calibrated_p90_ape'])} | {r['calibrated_median_ratio']:.3f} |")
    lines += ["", "## Calibrated parameters", "",
              "| parameter | value |", "|---|---|"]
    for dtype, rate in cal.matmul_flops_per_s.items():
        lines.append(f"| GEMM rate {dtype} | {format_si(rate, 'FLOP/s')} (datasheet {_datasheet_rate(calibrated, dtype)}) |")
    lines += [f"| memory bandwidth | {cal.memory_bytes_per_s / 1e9:.0f} GB/s (datasheet {calibrated.hbm_bytes_per_s / 1e9:.0f} GB/s) |",
              f"| kernel floor | {cal.kernel_overhead_s * 1e6:.2f} us |",
              f"| GEMM tile for wave quantization | {cal.tile_m} x {cal.tile_n} over {calibrated.compute_units} SMs |",
              f"| attention fraction of GEMM rate | {cal.attention_flops_fraction:.3f} |",
              f"| eager host dispatch per layer | {cal.layer_overhead_s * 1e6:.1f} us |",
              f"| host to device (pinned / pageable) | {cal.host_to_device_bytes_per_s / 1e9:.1f} / {cal.host_to_device_pageable_bytes_per_s / 1e9:.1f} GB/s |",
              f"| device to host (pinned / pageable) | {cal.device_to_host_bytes_per_s / 1e9:.1f} / {cal.device_to_host_pageable_bytes_per_s / 1e9:.1f} GB/s |",
              f"| transfer latency | {cal.transfer_latency_s * 1e6:.1f} us |",
              "", "## Plots", "", "![predicted vs measured](predicted_vs_measured.png)", "",
              "![roofline](roofline.png)", ""]
    if len(failed):
        lines += ["## Failed cases", "", "| case | error |", "|---|---|"]
        for r in failed.head(40).to_dict("records"):
            lines.append(f"| {r['case_id']} | {str(r['error'])[:160]} |")
        lines.append("")
    worst = cmp[cmp["split"] == "evaluation"].sort_values("calibrated_ape", ascending=False).head(15)
    lines += ["## Worst evaluation cases (calibrated)", "", "| case | measured | predicted | ratio |", "|---|---|---|---|"]
    for r in worst.to_dict("records"):
        lines.append(f"| {r['case_id']} | {r['measured_s'] * 1e6:.1f} us | {r['calibrated_s'] * 1e6:.1f} us | "
                     f"{r['calibrated_ratio']:.3f} |")
    lines += ["", "Per-case numbers: `comparison.csv`; per-class statistics: `errors.csv`.", ""]
    return "\n".join(lines)


def _cell(frame: pd.DataFrame, column: str) -> str:
    """The first value of a metadata column, '-' when absent or empty (a CPU run has no CUDA or driver:
    the CSV reads those cells as NaN, which is truthy)."""
    if column not in frame.columns or not len(frame):
        return "-"
    value = frame[column].iloc[0]
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "" \
        else str(value)


def _datasheet_rate(hw: Hardware, dtype: str) -> str:
    try:
        return format_si(hw.peak_flops_per_s(dtype if dtype in hw.flops_per_s else 'bf16'), "FLOP/s")
    except ValueError:
        return "-"


def write_report(measured: pd.DataFrame, datasheet: Hardware, calibrated: Hardware, out_dir: Path) -> Path:
    """Write comparison.csv, errors.csv, the two plots and report.md into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cmp = compare(measured, datasheet, calibrated)
    errors = error_table(cmp)
    cmp.to_csv(out_dir / "comparison.csv", index=False)
    errors.to_csv(out_dir / "errors.csv", index=False)
    plot_predicted_vs_measured(cmp, out_dir / "predicted_vs_measured.png")
    plot_roofline(cmp, datasheet, calibrated, out_dir / "roofline.png")
    path = out_dir / "report.md"
    path.write_text(markdown(cmp, errors, measured, calibrated))
    return path
