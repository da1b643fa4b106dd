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
  energy         where the run read power: energy per call predicted by perfmodel.energy (the power
                 model of validate/reports/power, nothing fitted here) vs measured, and the power
                 model alone at the measured time.
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
from perfmodel import energy, rates  # noqa: E402
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


def block_cost(row, hw) -> cost.StageCost:
    return cost.price([(block_ops(row), PRECISIONS[row["dtype"]])], hw, load_engine(row["engine"]))


def predict_block(row, hw) -> float:
    return block_cost(row, hw).time_s


def block_energy(row, hw) -> dict:
    """Predicted energy per call of a block case two ways (perfmodel.energy): the whole prediction
    (predicted time and the board power it implies), and the power model alone on the measured time
    (sustained time per call where the run measured it), which isolates the power model's error."""
    stage, pm = block_cost(row, hw), energy.power_model(hw)
    measured_t = _float(row.get("sustained_s")) if math.isfinite(_float(row.get("sustained_s"))) else row["measured_s"]
    return {"predicted_energy_j": float(energy.capped_phase(stage.time_s, stage.dynamic_j, pm)[2]),
            "predicted_power_w": float(energy.board_power_w(stage.time_s, stage.dynamic_j, pm)),
            "model_power_at_measured_time_w": float(energy.board_power_w(measured_t, stage.dynamic_j, pm))}


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


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
    """A single attention kernel (or the reorder) timed in a short burst: priced on the burst spec
    (perfmodel.rates.at_burst), as the validation prices every single-kernel case; the blocks are
    priced under load, as a denoising loop runs them."""
    return cost.price([(attention_ops(row, efficiency), PRECISIONS["bf16"])], rates.at_burst(hw),
                      load_engine("torch-compile")).time_s


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
    if len(blocks):
        blocks = blocks.join(pd.DataFrame([block_energy(r, hw) for _, r in blocks.iterrows()], index=blocks.index))
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
    lines += energy_lines(blocks)
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
        lines += ["", f"Fitted flex efficiency (relative to the calibrated bidirectional SDPA kernel): "
                      f"{', '.join(f'{m}: {e:.3f}' for m, e in attn.groupby('model')['efficiency'].first().items())}."]
    return "\n".join(lines) + "\n"


def energy_lines(blocks: pd.DataFrame) -> list[str]:
    """Energy per call, predicted (perfmodel.energy with the predicted time) vs measured (board power x
    time per call under sustained load), and the power model alone at the measured time. Nothing here
    is fitted on these cases: the power model comes from validate/reports/power."""
    if "power_w" not in blocks or not np.isfinite(blocks["power_w"].astype(float)).any():
        return []
    ok = blocks[np.isfinite(blocks["power_w"].astype(float))]
    measured_j = ok["energy_j"].astype(float)
    full = ape(ok["predicted_energy_j"], measured_j)
    alone = ape(ok["model_power_at_measured_time_w"], ok["power_w"].astype(float))
    source = ", ".join(sorted(set(ok.get("power_source", pd.Series(["nvml_power_samples"])).fillna("nvml_power_samples")
                                  .astype(str).replace("", "nvml_power_samples"))))
    lines = ["", "## Energy per call", "",
             f"Measured: board power over the second half of each case's sustained loop ({source}) x its time per "
             "call. Predicted: perfmodel.energy (power model fitted on validate/reports/power; nothing fitted here) on "
             "the predicted time. 'power model alone' prices the measured time, isolating the power model.", "",
             f"Energy per call APE: median {100 * np.median(full):.1f}%, p90 {100 * np.percentile(full, 90):.1f}% "
             f"({len(ok)} cases; target median 15%). Power model alone: median {100 * np.median(alone):.1f}%, "
             f"p90 {100 * np.percentile(alone, 90):.1f}%.", "",
             "| block | engine | dtype | tokens | measured W | model W at measured time | measured J/call | "
             "predicted J/call | ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for _, r in ok.sort_values(["block", "engine", "dtype", "tokens"]).iterrows():
        lines.append(f"| {r['block']} | {r['engine']} | {r['dtype']} | {int(r['tokens'])} | {float(r['power_w']):.0f} | "
                     f"{r['model_power_at_measured_time_w']:.0f} | {float(r['energy_j']):.4g} | "
                     f"{r['predicted_energy_j']:.4g} | {r['predicted_energy_j'] / float(r['energy_j']):.3f} |")
    return lines


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
