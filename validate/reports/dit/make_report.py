"""Predicted vs measured DiT blocks and block-sparse attention (issue 17): writes report.md and predictions.csv.

    python validate/reports/dit/make_report.py --data DIR [--out DIR] [--hardware h200-sxm-calibrated]

Reads DIR/dit.csv (validate/reports/dit/measure_dit.py) and prices every case with perfmodel.dit's op
builders on the calibrated spec (the same ops a `perfmodel predict --model flux.1-dev` step sums):

  block cases    one block of its kind at the case's tokens, batch 1, engine torch-compile (graph
                 replays) or torch-eager, bf16 (w16a16) or fp8 (w8a8): nothing is fitted on them.
                 Errors (|pred - meas| / meas) are reported on the held-out shapes (median APE, p90)
                 and on all shapes.
  attention      dense SDPA, the reorder alone, and block-sparse flex attention at each density. One
                 number is fitted: the flex kernel's efficiency relative to the calibrated dense
                 kernel, on the density-1.0 case only (perfmodel.dit.SparseAttention.efficiency);
                 densities 0.2, 0.5 and 0.9 are then predicted, and the speedup over dense SDPA
                 (pred and meas) compared per density, including where sparse is slower than dense.
  power          where the run read it: mean board power and energy per call, beside the
                 board-power bound perfmodel predicts today (no power model in this branch).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repo root, when run as a script

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import hardware  # noqa: E402
from perfmodel import dit as cost  # noqa: E402
from perfmodel.engines import load as load_engine  # noqa: E402
from perfmodel.ops import Precision  # noqa: E402
from workloads import dit  # noqa: E402

PRECISIONS = {"bf16": Precision(16, 16, 16), "fp8": Precision(8, 8, 8)}


def _spec(row) -> dit.DiTSpec:
    """The catalog model's spec at the case's dims (the CPU smoke test runs tiny ones)."""
    spec = dit.load(row["model"]).dit
    import dataclasses
    return dataclasses.replace(spec, d_model=int(row["d_model"]), n_heads=int(row["heads"]),
                               head_dim=int(row["head_dim"]), d_ff=int(row["d_ff"]) or spec.d_ff)


def block_ops(row) -> list:
    spec, engine, p = _spec(row), load_engine(row["engine"]), PRECISIONS[row["dtype"]]
    img, txt = float(row["image_tokens"]), float(row["text_tokens"])
    if row["block"] == "flux-double":
        return cost.joint_block_ops(spec, 1, img, txt, p, 1, engine)
    if row["block"] == "flux-single":
        return cost.single_block_ops(spec, 1, img + txt, p, 1, engine)
    return cost.cross_block_ops(spec, 1, img, txt, p, 1, engine)


def predict_block(row, hw) -> float:
    return cost.price([(block_ops(row), PRECISIONS[row["dtype"]])], hw, load_engine(row["engine"])).time_s


def attention_ops(row, efficiency: float = 1.0) -> list:
    engine, p = load_engine("torch-compile"), PRECISIONS["bf16"]
    n, h, d = float(row["tokens"]), float(row["heads"]), float(row["head_dim"])
    if row["block"] == "sdpa":
        return [cost.dit_attention_op("attn", 1, n, n, h, d, p, 1, engine)]
    if row["block"] == "reorder":
        return [cost.reorder_op(1, n, h * d, p, 1)]
    sparse = cost.SparseAttention(float(row["density"]), efficiency=efficiency)
    return cost.attention_ops("attn", 1, n, n, h, d, p, 1, engine, sparse)


def predict_attention(row, hw, efficiency: float = 1.0) -> float:
    return cost.price([(attention_ops(row, efficiency), PRECISIONS["bf16"])], hw, load_engine("torch-compile")).time_s


def fit_efficiency(dense_flex: pd.Series, hw) -> float:
    """The flex kernel's rate relative to the calibrated dense kernel: the efficiency at which the
    density-1.0 case is predicted exactly (bisection; time falls monotonically with efficiency)."""
    from scipy.optimize import brentq

    target = float(dense_flex["measured_s"])
    f = lambda e: predict_attention(dense_flex, hw, e) - target  # noqa: E731
    lo, hi = 0.05, 1.5
    if f(lo) < 0 or f(hi) > 0:  # outside the range a kernel can take: report the bound
        return lo if f(lo) < 0 else hi
    return float(brentq(f, lo, hi, xtol=1e-4))


def ape(pred, meas):
    return np.abs(np.asarray(pred) - np.asarray(meas)) / np.asarray(meas)


def summarize(frame: pd.DataFrame) -> dict:
    if frame.empty:
        return {"cases": 0, "median_ape": math.nan, "p90_ape": math.nan}
    errors = ape(frame["predicted_s"], frame["measured_s"])
    return {"cases": len(frame), "median_ape": float(np.median(errors)), "p90_ape": float(np.percentile(errors, 90))}


def build(data: pd.DataFrame, hw) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    ok = data[data["status"] == "ok"].copy()
    blocks = ok[ok["kind"] == "block"].copy()
    blocks["predicted_s"] = [predict_block(r, hw) for _, r in blocks.iterrows()]
    blocks["ratio"] = blocks["predicted_s"] / blocks["measured_s"]
    attn = ok[ok["kind"] == "attention"].copy()
    rows = []
    efficiency = math.nan
    for model, group in attn.groupby("model"):
        flex1 = group[(group["block"] == "flex_sparse") & (group["density"].astype(float) >= 1.0)]
        dense = group[group["block"] == "sdpa"]
        efficiency = fit_efficiency(flex1.iloc[0], hw) if len(flex1) else 1.0
        for _, r in group.iterrows():
            pred = predict_attention(r, hw, efficiency)
            out = {**r.to_dict(), "predicted_s": pred, "efficiency": efficiency,
                   "fitted": r["block"] == "flex_sparse" and float(r["density"]) >= 1.0}
            if len(dense) and r["block"] == "flex_sparse":
                out["speedup_measured"] = float(dense.iloc[0]["measured_s"]) / float(r["measured_s"])
                out["speedup_predicted"] = predict_attention(dense.iloc[0], hw) / pred
            rows.append(out)
    return blocks, pd.DataFrame(rows), efficiency


def report_text(blocks: pd.DataFrame, attn: pd.DataFrame, hw, data: pd.DataFrame) -> str:
    device = data["device_name"].iloc[0] if len(data) else "?"
    lines = [f"# DiT blocks and block-sparse attention: predicted vs measured ({device})", "",
             f"Predicted with perfmodel.dit on `{hw.name}`; measured by validate/reports/dit/measure_dit.py "
             f"({len(data)} cases, {int((data['status'] != 'ok').sum())} failed). Nothing is fitted on the block "
             "cases; the sparse kernel's efficiency is fitted on the density-1.0 case only.", "",
             "## Block step times", "",
             "| engine | dtype | split | cases | median APE | p90 APE |", "|---|---|---|---|---|---|"]
    for (engine, dtype), group in blocks.groupby(["engine", "dtype"]):
        for split in ("heldout", "all"):
            part = group if split == "all" else group[group["split"] == "heldout"]
            s = summarize(part)
            lines.append(f"| {engine} | {dtype} | {split} | {s['cases']} | {100 * s['median_ape']:.1f}% | "
                         f"{100 * s['p90_ape']:.1f}% |")
    for split in ("heldout", "all"):
        part = blocks if split == "all" else blocks[blocks["split"] == "heldout"]
        s = summarize(part)
        lines.append(f"| **all** | | {split} | {s['cases']} | **{100 * s['median_ape']:.1f}%** | "
                     f"**{100 * s['p90_ape']:.1f}%** |")
    lines += ["", "| block | engine | dtype | H x W x frames | tokens | split | measured | predicted | ratio |"
              " power W |", "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in blocks.sort_values(["block", "engine", "dtype", "tokens"]).iterrows():
        lines.append(f"| {r['block']} | {r['engine']} | {r['dtype']} | {r['height']}x{r['width']}x{r['frames']} | "
                     f"{int(r['tokens'])} | {r['split']} | {1e3 * r['measured_s']:.3f} ms | "
                     f"{1e3 * r['predicted_s']:.3f} ms | {r['ratio']:.3f} | {_power(r)} |")
    lines += ["", "## Block-sparse attention (PAROAttention layout: reorder + flex_attention)", "",
              "| model | tokens | heads | case | density | measured | predicted | speedup meas | speedup pred |"
              " speedup error |", "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in attn.iterrows() if len(attn) else []:
        sm, sp = r.get("speedup_measured", math.nan), r.get("speedup_predicted", math.nan)
        err = abs(sp - sm) / sm if isinstance(sm, float) and math.isfinite(sm) else math.nan
        tag = " (fitted)" if r.get("fitted") else ""
        lines.append(f"| {r['model']} | {int(r['tokens'])} | {int(r['heads'])} | {r['block']}{tag} | "
                     f"{float(r['density']):g} | {1e3 * r['measured_s']:.3f} ms | {1e3 * r['predicted_s']:.3f} ms | "
                     f"{_num(sm)} | {_num(sp)} | {_pct(err)} |")
    if len(attn):
        lines += ["", f"Fitted flex efficiency (relative to the calibrated SDPA prefill kernel): "
                      f"{', '.join(f'{m}: {e:.3f}' for m, e in attn.groupby('model')['efficiency'].first().items())}."]
    return "\n".join(lines) + "\n"


def _num(v) -> str:
    return f"{v:.2f}x" if isinstance(v, float) and math.isfinite(v) else ""


def _pct(v) -> str:
    return f"{100 * v:.1f}%" if isinstance(v, float) and math.isfinite(v) else ""


def _power(r) -> str:
    value = r.get("power_w")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return ""
    return f"{value:.0f}" if math.isfinite(value) else ""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="directory holding dit.csv")
    p.add_argument("--out", default=None, help="where report.md and predictions.csv go (default: --data)")
    p.add_argument("--hardware", default="h200-sxm-calibrated", help="spec the predictions use")
    args = p.parse_args(argv)
    path = Path(args.data) / "dit.csv"
    if not path.is_file():
        print(f"make_report: --data: {path} does not exist", file=sys.stderr)
        return 2
    data = pd.read_csv(path)
    hw = hardware.load(args.hardware)
    blocks, attn, _ = build(data, hw)
    out = Path(args.out or args.data)
    out.mkdir(parents=True, exist_ok=True)
    text = report_text(blocks, attn, hw, data)
    (out / "report.md").write_text(text)
    pd.concat([blocks, attn], ignore_index=True).to_csv(out / "predictions.csv", index=False)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
