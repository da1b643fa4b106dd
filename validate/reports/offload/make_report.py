"""Predicted vs measured decode steps with weights or KV streamed from host memory (measure_offload.py).

    python validate/reports/offload/make_report.py RUN_DIR [--hardware h200-sxm | spec.yaml] [--out DIR]

Reads RUN_DIR/offload.csv, model_config.json and meta.json; writes report.md, offload_predicted.csv and
offload.png (into --out, default RUN_DIR). Every step case is predicted by
`perfmodel.tiers.offloaded_step_time` (the roofline of transformers' eager step, the `hf-eager` engine profile,
plus each streamed layer's copy over the host link, pipelined one layer ahead with overlap, serial
without), three ways:

- datasheet: the --hardware spec without calibration (peak rates, the link's datasheet bandwidth);
- spec: the --hardware spec as given (its Calibration when it has one: measured GEMM and memory rates,
  kernel floors, per-layer host dispatch, measured host-to-device bandwidth);
- link-calibrated (the headline when the run has copy rows): the spec with its host-to-device
  bandwidth and copy latency fitted on this run's pinned-copy rows (t = latency + bytes / bandwidth,
  least squares in relative error), never on the step cases it then predicts.
Target (issue 5): every step case within 15%.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repo root, when run as a script

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import hardware  # noqa: E402
import perfmodel  # noqa: E402
from hardware.spec import Hardware  # noqa: E402
from hardware.units import format_si  # noqa: E402
from perfmodel import tiers  # noqa: E402
from workloads.model import ModelSpec  # noqa: E402

TARGET = 0.15
BF16 = perfmodel.Precision(16, 16, 16)
STEP_KINDS = ("weights", "kv", "kv_base")


def fit_link(copies: pd.DataFrame) -> tuple[float, float] | None:
    """(bytes/s, latency s) of t = latency + bytes / bandwidth, least squares in relative error;
    None when the copy timings do not rise with size (noise on a busy CPU smoke test)."""
    t = copies.time_s.to_numpy(float)
    x = copies.bytes_per_step.to_numpy(float)
    A = np.stack([1 / t, x / t], axis=1)
    (latency, inv_bw), *_ = np.linalg.lstsq(A, np.ones_like(t), rcond=None)
    if inv_bw <= 0:
        return None
    return 1.0 / inv_bw, max(float(latency), 0.0)


def with_link(hw: Hardware, bytes_per_s: float, latency_s: float) -> Hardware:
    """The spec with its host-to-device rate and copy latency replaced by measured ones."""
    if hw.calibration is not None:
        cal = dataclasses.replace(hw.calibration, host_to_device_bytes_per_s=bytes_per_s, transfer_latency_s=latency_s)
        return dataclasses.replace(hw, calibration=cal)
    return dataclasses.replace(hw, host_link_bytes_per_s=bytes_per_s, host_link_latency_s=latency_s)


def predict_rows(steps: pd.DataFrame, model: ModelSpec, hw: Hardware) -> pd.DataFrame:
    """Predicted step time (and its bounds) of every case on `hw`."""
    out = []
    for row in steps.itertuples():
        L = int(row.layers)
        resident = L if row.kind != "weights" else int(row.resident_layers)
        m = dataclasses.replace(model, n_layers=L)
        pred = tiers.offloaded_step_time(m, hw, float(row.batch), 1.0, float(row.kv_len), BF16, resident,
                                         kv_on_host=row.kind == "kv", overlap=bool(row.overlap),
                                         engine="hf-eager")
        out.append({k: float(pred[k]) for k in ("time_s", "compute_s", "transfer_s", "lower_s", "upper_s", "host_s")})
    return pd.DataFrame(out, index=steps.index)


def compare(run: Path, hw: Hardware) -> tuple[pd.DataFrame, dict]:
    data = pd.read_csv(run / "offload.csv")
    model = ModelSpec.from_hf_config(json.loads((run / "model_config.json").read_text()), name="measured")
    steps = data[data.kind.isin(STEP_KINDS)].copy()
    copies = data[data.kind == "copy"]
    specs = {"datasheet": hw.datasheet(), "spec": hw}
    info = {"headline": "spec"}
    fitted = fit_link(copies) if len(copies) >= 2 else None
    if fitted:
        bw, lat = fitted
        specs["link_calibrated"] = with_link(hw, bw, lat)
        info.update(headline="link_calibrated", fitted_bytes_per_s=bw, fitted_latency_s=lat)
    elif len(copies):
        info["link_note"] = "the copy rows do not rise with size, so no link was fitted"
    for name, spec in specs.items():
        pred = predict_rows(steps, model, spec)
        steps[f"pred_{name}_s"] = pred.time_s
        steps[f"ratio_{name}"] = pred.time_s / steps.time_s
        if name == info["headline"]:
            for k in ("compute_s", "transfer_s", "lower_s", "upper_s", "host_s"):
                steps[f"{k[:-2]}_pred_s"] = pred[k]
    info["specs"] = list(specs)
    return steps, info


def error_summary(steps: pd.DataFrame, specs: list) -> pd.DataFrame:
    rows = []
    for kind, group in [("all", steps)] + list(steps.groupby("kind")):
        for name in specs:
            ape = (group[f"ratio_{name}"] - 1).abs()
            rows.append({"cases": kind, "prediction": name, "n": len(group), "median_ape": ape.median(),
                         "max_ape": ape.max(), "within_15pct": (ape <= TARGET).mean(),
                         "median_ratio": group[f"ratio_{name}"].median()})
    return pd.DataFrame(rows)


def plot(steps: pd.DataFrame, headline: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    ax = axes[0]
    for kind, marker in (("weights", "o"), ("kv", "s"), ("kv_base", "^")):
        g = steps[steps.kind == kind]
        ax.scatter(g.time_s * 1e3, g[f"pred_{headline}_s"] * 1e3, marker=marker, label=kind, alpha=0.8)
    lim = [steps.time_s.min() * 1e3 * 0.7, steps.time_s.max() * 1e3 * 1.4]
    ax.plot(lim, lim, "k-", lw=0.8)
    ax.fill_between(lim, [v * (1 - TARGET) for v in lim], [v * (1 + TARGET) for v in lim], color="grey", alpha=0.2,
                    label="±15%")
    ax.set(xscale="log", yscale="log", xlabel="measured step (ms)", ylabel=f"predicted step, {headline} (ms)",
           title="decode step: predicted vs measured")
    ax.legend()
    ax = axes[1]
    w = steps[(steps.kind == "weights")]
    for (batch, overlap), g in w.groupby(["batch", "overlap"]):
        g = g.sort_values("resident_fraction")
        line, = ax.plot(g.resident_fraction, g[f"pred_{headline}_s"] * 1e3, "-" if overlap else "--")
        ax.plot(g.resident_fraction, g.time_s * 1e3, "o" if overlap else "x", color=line.get_color(),
                label=f"batch {batch}, {'overlap' if overlap else 'serial'}")
    ax.set(xlabel="resident fraction of layers", ylabel="step (ms)",
           title="weights streamed over the host link (lines: model)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def markdown(steps: pd.DataFrame, summary: pd.DataFrame, info: dict, meta: dict, hw: Hardware) -> str:
    head = info["headline"]
    overall = summary[(summary.cases == "all") & (summary.prediction == head)].iloc[0]
    lines = [f"# Offloading: predicted vs measured decode steps ({meta.get('device', '?')})", "",
             f"Run: `measure_offload.py` ({meta.get('model', '?')}, torch {meta.get('torch', '?')}"
             f"{', QUICK smoke test on CPU' if meta.get('quick') else ''}); spec `{hw.name}`"
             f"{' (calibrated)' if hw.is_calibrated else ' (datasheet)'}. Predictions: "
             "`perfmodel.tiers.offloaded_step_time` with the `hf-eager` engine profile.", "",
             f"**Headline ({head.replace('_', '-')}):** median error {_pct(overall.median_ape)}, worst "
             f"{_pct(overall.max_ape)}, {_pct(overall.within_15pct)} of {int(overall.n)} step cases within 15% "
             f"(target: all within 15%).", ""]
    if "link_note" in info:
        lines += [f"Link calibration skipped: {info['link_note']}.", ""]
    if "fitted_bytes_per_s" in info:
        lines += [f"Host-to-device link fitted on the run's pinned-copy rows: {format_si(info['fitted_bytes_per_s'], 'B/s')}"
                  f", latency {info['fitted_latency_s'] * 1e6:.1f} us (spec: "
                  f"{format_si(tiers.host_to_device_bytes_per_s(hw), 'B/s')}, {tiers.link_latency_s(hw) * 1e6:.1f} us).", ""]
    lines += ["## Error by case kind", "", "| cases | prediction | n | median error | worst | within 15% | median ratio |",
              "|---|---|---|---|---|---|---|"]
    for r in summary.itertuples():
        lines.append(f"| {r.cases} | {r.prediction} | {r.n} | {_pct(r.median_ape)} | {_pct(r.max_ape)} | "
                     f"{_pct(r.within_15pct)} | {r.median_ratio:.3f} |")
    lines += ["", "## Every case (times in ms)", "",
              "| kind | batch | kv_len | resident | overlap | streamed | measured | predicted | ratio | bounds "
              "(perfect overlap .. none) | host dispatch |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in steps.sort_values(["kind", "batch", "kv_len", "resident_fraction", "overlap"]).itertuples():
        lines.append(
            f"| {r.kind} | {r.batch} | {r.kv_len} | {r.resident_fraction:.2f} | {r.overlap} | "
            f"{format_si(r.bytes_per_step, 'B')} | {r.time_s * 1e3:.3f} | {getattr(r, f'pred_{head}_s') * 1e3:.3f} | "
            f"{getattr(r, f'ratio_{head}'):.3f} | {r.lower_pred_s * 1e3:.3f} .. {r.upper_pred_s * 1e3:.3f} | "
            f"{r.host_pred_s * 1e3:.3f} |")
    lines += ["", "![predicted vs measured](offload.png)", "",
              "Columns: `resident` is the share of decoder layers whose weights stay on the GPU (weights cases); "
              "`streamed` the bytes copied from pinned host memory per step. `kv` cases copy every layer's cache "
              "in each step; `kv_base` are the same steps with the cache resident.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="directory written by measure_offload.py")
    ap.add_argument("--hardware", default="h200-sxm", help="preset name or calibrated spec YAML")
    ap.add_argument("--out", type=Path, default=None, help="where to write the report (default: the run directory)")
    args = ap.parse_args(argv)
    out = args.out or args.run
    out.mkdir(parents=True, exist_ok=True)
    hw = hardware.load(args.hardware)
    meta = json.loads((args.run / "meta.json").read_text()) if (args.run / "meta.json").exists() else {}
    steps, info = compare(args.run, hw)
    summary = error_summary(steps, info["specs"])
    steps.to_csv(out / "offload_predicted.csv", index=False)
    plot(steps, info["headline"], out / "offload.png")
    (out / "report.md").write_text(markdown(steps, summary, info, meta, hw))
    print(summary[summary.cases == "all"].to_string(index=False))
    print(f"make_report: wrote {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
