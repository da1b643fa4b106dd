"""Predicted vs measured decode attention (dense and block top-k sparse) from measure_attention.py.

    python validate/reports/attention/make_report.py RUN_DIR [--hardware h200-sxm | spec.yaml] [--out DIR]

Reads RUN_DIR/attention.csv (+ meta.json) and writes report.md, attention_predicted.csv and
attention.png (into --out, default RUN_DIR).

Each case is predicted three ways, from the same op accounting (perfmodel.ops.attention_op for dense;
perfmodel.kinetics.sparse_attention_ops for sparse: score, topk, a materialized gather that reads and
writes the selected KV, and attention over it):

- datasheet: roofline on the --hardware spec without calibration (peak FLOP/s, datasheet HBM bytes/s,
  no kernel floors).
- spec: the core roofline with the --hardware spec as given (uses its Calibration if it has one:
  measured rates, per-kernel overhead x kernel count).
- run-calibrated (the headline): each kernel sequence takes max(its floor, bytes / bandwidth), with
  everything measured in the same run on separate ceiling cases, never on the evaluated ones:
  bandwidth = the device-copy rate (read + write bytes / time) for streaming kernels and the rate
  of a large standalone block gather for the gather (gathers move 4-KB blocks through index
  arithmetic, not one stream); floor = the part's time at a tiny size (launch + dispatch cost of
  eager PyTorch, which back-to-back CUDA events expose when the kernel is shorter). Attention FLOPs
  use the spec's calibrated GEMM rate when present, else the datasheet peak.
Target (issue 6): every case within 15%.
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
import workloads  # noqa: E402
from perfmodel import rates  # noqa: E402
from hardware.spec import Calibration, Hardware  # noqa: E402
from hardware.units import format_si  # noqa: E402
from perfmodel import kinetics  # noqa: E402
from perfmodel.ops import Precision, attention_op  # noqa: E402
from perfmodel.roofline import op_time  # noqa: E402

TARGET = 0.15
BF16 = Precision(16, 16, 16)
PART_OF_OP = {"block_score": "score", "block_topk": "topk", "kv_gather": "gather", "sparse_attention": "attention"}


def model_for(row) -> workloads.ModelSpec:
    """A GQA attention of the measured shape (llama-3-8b's config with the recorded head counts)."""
    return dataclasses.replace(workloads.load("llama-3-8b"), n_heads=int(row["heads"]),
                               n_kv_heads=int(row["kv_heads"]), head_dim=int(row["head_dim"]))


def case_ops(row) -> dict:
    """Ops of one case by part name: dense {"total": op}; sparse {"score", "topk", "gather", "attention"}."""
    m, b, s = model_for(row), float(row["batch"]), float(row["kv_len"])
    if row["kind"] == "dense":
        return {"total": attention_op(m, seqs=b, new_tokens=1.0, past=s - 1.0, p=BF16, tp=1)}
    ops = kinetics.sparse_attention_ops(m, b, s, float(row["budget"]), float(row["block"]), BF16)
    return {PART_OF_OP[op.name]: op for op in ops}


def op_seconds(op, hw: Hardware) -> float:
    return float(np.asarray(op_time(op, hw, BF16).time_s))


@dataclasses.dataclass(frozen=True)
class RunCeilings:
    """What the run measured on its ceiling cases."""

    copy_bytes_per_s: float
    gather_bytes_per_s: float
    floors_s: dict

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> "RunCeilings":
        ceil = frame[frame["kind"] == "ceiling"].set_index("part")
        floors = frame[frame["kind"] == "floor"].set_index("part")["time_s"].to_dict()
        missing = {"copy", "gather"} - set(ceil.index)
        if missing:
            raise ValueError(f"attention.csv: no ceiling row(s) {sorted(missing)}; rerun measure_attention.py")
        rate = lambda part: float(ceil.loc[part, "bytes"] / ceil.loc[part, "time_s"])  # noqa: E731
        return cls(rate("copy"), rate("gather"), floors)

    def hardware(self, spec: Hardware, rate: str) -> Hardware:
        """`spec` with the run's streaming (or gather) bandwidth and no per-kernel overhead (floors
        are applied per part instead); GEMM rates stay the spec's (calibrated when it has them)."""
        base = spec.calibration
        matmul = dict(base.matmul_flops_per_s) if base else {"bf16": spec.peak_flops_per_s("bf16")}
        cal = Calibration(matmul_flops_per_s=matmul, kernel_overhead_s=0.0,
                          memory_bytes_per_s=self.copy_bytes_per_s if rate == "copy" else self.gather_bytes_per_s,
                          attention_flops_fraction=base.attention_flops_fraction if base else 1.0,
                          source="measure_attention.py ceilings")
        return dataclasses.replace(spec, calibration=cal)


def predict_row(row, spec: Hardware, run: RunCeilings) -> dict:
    ops = case_ops(row)
    stream, gather = run.hardware(spec, "copy"), run.hardware(spec, "gather")
    floor_key = {"total": "dense"}
    calibrated = {}
    for part, op in ops.items():
        roof = op_seconds(op, gather if part == "gather" else stream)
        calibrated[part] = max(run.floors_s.get(floor_key.get(part, part), 0.0), roof)
    pick = lambda parts: parts[row["part"]] if row["part"] in parts else sum(parts.values())  # noqa: E731
    return {
        "predicted_datasheet_s": pick({p: op_seconds(op, spec.datasheet()) for p, op in ops.items()}),
        "predicted_spec_s": pick({p: op_seconds(op, spec) for p, op in ops.items()}),
        "predicted_s": pick(calibrated),
        "bytes_modeled": pick({p: float(np.asarray(op.bytes)) for p, op in ops.items()}),
    }


def predictions(frame: pd.DataFrame, spec: Hardware) -> pd.DataFrame:
    run = RunCeilings.from_frame(frame)
    cases = frame[frame["kind"].isin(["dense", "sparse"])].reset_index(drop=True)
    pred = pd.DataFrame([predict_row(r, spec, run) for _, r in cases.iterrows()], index=cases.index)
    out = pd.concat([cases, pred], axis=1)
    for col in ("predicted_s", "predicted_spec_s", "predicted_datasheet_s"):
        out[col.replace("predicted", "ratio")] = out[col] / out["time_s"]
    out["within_target"] = (out["ratio_s"] - 1).abs() <= TARGET
    out["achieved_bytes_per_s"] = out["bytes_modeled"] / out["time_s"]
    return out


def summary(out: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (kind, part), g in out.groupby(["kind", "part"], sort=False):
        rows.append({"kind": kind, "part": part, "cases": len(g),
                     "median |err| run-calibrated": f"{100 * (g['ratio_s'] - 1).abs().median():.1f}%",
                     "within 15%": f"{int(g['within_target'].sum())}/{len(g)}",
                     "median |err| spec": f"{100 * (g['ratio_spec_s'] - 1).abs().median():.1f}%",
                     "median |err| datasheet": f"{100 * (g['ratio_datasheet_s'] - 1).abs().median():.1f}%"})
    return pd.DataFrame(rows)


def plot(out: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    totals = out[out["part"] == "total"]
    for kind, marker in (("dense", "o"), ("sparse", "s")):
        g = totals[totals["kind"] == kind]
        ax1.scatter(g["time_s"] * 1e6, g["predicted_s"] * 1e6, marker=marker, s=18, label=f"{kind} (run-calibrated)")
        ax1.scatter(g["time_s"] * 1e6, g["predicted_datasheet_s"] * 1e6, marker=marker, s=10, alpha=0.35,
                    label=f"{kind} (datasheet)")
    shown = totals[["time_s", "predicted_s", "predicted_datasheet_s"]].to_numpy()
    lo, hi = shown.min() * 1e6 / 2, shown.max() * 1e6 * 2
    xs = np.array([lo, hi])
    ax1.plot(xs, xs, "k-", lw=1)
    ax1.fill_between(xs, xs * (1 - TARGET), xs * (1 + TARGET), color="grey", alpha=0.2, label="+-15%")
    ax1.set(xscale="log", yscale="log", xlabel="measured (us)", ylabel="predicted (us)",
            title="decode attention, one layer: predicted vs measured")
    ax1.legend(fontsize=7)
    dense = out[out["kind"] == "dense"]
    for batch, g in dense.groupby("batch"):
        g = g.sort_values("kv_len")
        line = ax2.plot(g["kv_len"], g["time_s"] * 1e6, "o", ms=4, label=f"B={batch} measured")[0]
        ax2.plot(g["kv_len"], g["predicted_s"] * 1e6, "-", color=line.get_color(), lw=1)
    sparse = out[(out["kind"] == "sparse") & (out["part"] == "total") & (out["budget"] == out["budget"].max())]
    for batch, g in sparse.groupby("batch"):
        g = g[g["block"] == g["block"].min()].sort_values("kv_len")
        ax2.plot(g["kv_len"], g["time_s"] * 1e6, "s", ms=4, mfc="none", color="grey")
        ax2.plot(g["kv_len"], g["predicted_s"] * 1e6, ":", color="grey", lw=1)
    ax2.set(xscale="log", yscale="log", xlabel="KV length (tokens)", ylabel="time (us)",
            title="dense (filled, lines = model); sparse top budget (open, dotted)")
    ax2.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown(frame: pd.DataFrame) -> str:
    """A pipe table (pandas' to_markdown needs tabulate, which the core does not install)."""
    cell = lambda v: f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v)  # noqa: E731
    rows = [" | ".join(map(str, frame.columns)), " | ".join("---" for _ in frame.columns)]
    rows += [" | ".join(cell(v) for v in r) for r in frame.itertuples(index=False)]
    return "\n".join(f"| {r} |" for r in rows)


def write_report(out: pd.DataFrame, run: RunCeilings, spec: Hardware, meta: dict, dest: Path) -> str:
    worst = out.assign(err=(out["ratio_s"] - 1).abs()).sort_values("err", ascending=False).head(8)
    cols = ["kind", "part", "batch", "kv_len", "budget", "block", "time_s", "predicted_s", "ratio_s"]
    within = int(out["within_target"].sum())
    lines = [
        "# Decode attention on the device: predicted vs measured",
        "",
        f"Device: {meta.get('device_name', '?')}, torch {meta.get('torch', '?')}"
        f"{', QUICK smoke run (not a measurement)' if meta.get('quick') else ''}. Spec: `{spec.name}`"
        f"{' (calibrated)' if spec.is_calibrated else ' (datasheet)'}.",
        "Shapes: one layer, 32 query heads, 8 kv heads, head dim 128, bf16, one new token per sequence. "
        "Method and models: see measure_attention.py and make_report.py docstrings.",
        "",
        "## Ceilings measured in this run (used by the run-calibrated model)",
        "",
        f"- device copy: {format_si(run.copy_bytes_per_s, 'B/s')} (read + write); datasheet HBM "
        f"{format_si(spec.hbm_bytes_per_s, 'B/s')}",
        f"- standalone block gather: {format_si(run.gather_bytes_per_s, 'B/s')} (read + write), "
        f"{run.gather_bytes_per_s / run.copy_bytes_per_s:.2f} of the copy rate",
        "- floors (time at a tiny size): " + ", ".join(f"{k} {v * 1e6:.1f} us" for k, v in run.floors_s.items()),
        "",
        f"## Result: {within}/{len(out)} cases within {TARGET:.0%} (run-calibrated)",
        "",
        markdown(summary(out)),
        "",
        "## Largest errors (run-calibrated)",
        "",
        markdown(worst[cols]),
        "",
        "Files: attention.csv (measured), attention_predicted.csv (every case, all three predictions, "
        "ratios, achieved bytes/s), attention.png.",
    ]
    text = "\n".join(lines) + "\n"
    (dest / "report.md").write_text(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="directory with attention.csv from measure_attention.py")
    ap.add_argument("--hardware", default="h200-sxm", help="preset name or spec YAML (a calibrated one if you have it)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    dest = args.out or args.run
    dest.mkdir(parents=True, exist_ok=True)
    frame = pd.read_csv(args.run / "attention.csv")
    meta_path = args.run / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    spec = rates.at_burst(hardware.load(args.hardware))  # single kernels timed in short bursts
    out = predictions(frame, spec)
    out.to_csv(dest / "attention_predicted.csv", index=False)
    plot(out, dest / "attention.png")
    print(write_report(out, RunCeilings.from_frame(frame), spec, meta, dest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
