"""Score the calibrated GEMM model on held-out shapes, and a candidate 64-row floor beside it.

    python validate/reports/gemm_rows/make_report.py validate/reports/gemm_rows/h200/measurements.csv \
        [--hardware h200-sxm-calibrated]

Writes report.md, scored.csv and rows.png beside the measurements. "model" is the shipped
calibrated model (`validate.predict_cases.predict_matmuls`: eager calls, max of device time and
host dispatch, as the validation suite scores kernels). "floor" is a candidate that was tried and
NOT shipped: a GEMM with more than 64 rows never faster than the same GEMM with 64 rows (FLOPs and
activation bytes scaled down). It lowered the suite's in-sample matmul error; this report is the
held-out test it failed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import hardware  # noqa: E402
from perfmodel import roofline  # noqa: E402
from perfmodel.ops import matmul_op  # noqa: E402
from perfmodel import rates  # noqa: E402
from validate.predict_cases import _precision, predict_matmuls  # noqa: E402


def floor_eager_s(case: dict, hw) -> float:
    """The candidate: above 64 rows, the larger of the model at the case's rows and at 64 rows (the
    64-row GEMM's FLOPs and activation bytes, the same weights)."""
    p = _precision(case["dtype"])
    m = float(case["m"])

    def eager(rows):
        op = matmul_op("matmul", rows, float(case["n"]), float(case["k"]), p, 1)
        return float(roofline.op_time(op, hw, p).eager_time_s)

    own = eager(m)
    return own if m <= 64 else max(own, eager(64.0))


def score(path: Path, hw_name: str) -> pd.DataFrame:
    hw = rates.at_burst(hardware.load(hw_name))  # single GEMMs timed in short bursts, as the suite prices them
    frame = pd.read_csv(path)
    frame = frame[frame["status"] == "ok"].copy()
    timing = frame["timing"] if "timing" in frame else pd.Series("", index=frame.index)
    frame["timing"] = np.where(timing.astype(object).eq("graph"), "graph", "eager")  # empty: eager calls
    cases = [{**c, "timing": "graph" if c["timing"] == "graph" else ""}
             for c in frame[["kind", "m", "n", "k", "dtype", "timing"]].to_dict("records")]
    model = np.empty(len(frame))
    for (d, timing), part in frame.groupby(["dtype", "timing"]):  # one array call per dtype and timing
        rows = np.flatnonzero((frame["dtype"].to_numpy() == d) & (frame["timing"].to_numpy() == timing))
        model[rows] = predict_matmuls([cases[i] for i in rows], hw)
    frame["model_s"] = model
    frame["floor_s"] = [floor_eager_s(c, hw) if c["timing"] != "graph" else np.nan for c in cases]
    for col in ("model", "floor"):
        frame[f"{col}_ape"] = (frame[f"{col}_s"] / frame["measured_s"] - 1).abs()
    return frame


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for label, sub in (("all rows", frame), ("m <= 64", frame[frame["m"] <= 64]),
                       ("64 < m <= 1024", frame[frame["m"] > 64])):
        for dtype, part in [("all", sub)] + list(sub.groupby("dtype")):
            rows.append({"rows": label, "dtype": dtype, "cases": len(part),
                         "model median": part["model_ape"].median(), "model p90": part["model_ape"].quantile(0.9),
                         "floor median": part["floor_ape"].median(), "floor p90": part["floor_ape"].quantile(0.9),
                         "model ratio": (part["model_s"] / part["measured_s"]).median()})
    return pd.DataFrame(rows)


def plot(frame: pd.DataFrame, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(frame.groupby(["dtype", "n", "k"]))
    cols = 4
    fig, axes = plt.subplots((len(groups) + cols - 1) // cols, cols, figsize=(14, 3.0 * ((len(groups) + cols - 1) // cols)))
    for ax, ((dtype, n, k), g) in zip(np.ravel(axes), groups):
        g = g.sort_values("m")
        ax.plot(g["m"], g["measured_s"] * 1e6, "ko-", ms=3, label="measured")
        ax.plot(g["m"], g["model_s"] * 1e6, "-", color="#d95f02", label="model (shipped)")
        ax.plot(g["m"], g["floor_s"] * 1e6, "--", color="#1b9e77", label="candidate 64-row floor (rejected)")
        ax.axvline(64.5, color="#999999", lw=0.6)
        ax.set_xscale("log", base=2)
        ax.set_title(f"{dtype} n={int(n)} k={int(k)}", fontsize=8)
        ax.set_xlabel("rows m", fontsize=7)
        ax.set_ylabel("us", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in np.ravel(axes)[len(groups):]:
        ax.axis("off")
    np.ravel(axes)[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def graph_section(graph: pd.DataFrame) -> list[str]:
    """The graph-timed run: device time of each GEMM replayed from a CUDA graph, the regime the
    calibration is fitted in (no host dispatch), on the same held-out shapes and four small ones."""
    if graph.empty:
        return []
    lines = ["", "## Graph-timed (device time)", "",
             f"The same harness with `--timing graph`: {len(graph)} GEMMs replayed from CUDA graphs, the 6 shapes "
             "above and 4 small ones (1-15 MB of weights: 1024x1024, 2560x2560, 7168x1024, 1024x7168), none in "
             "the suite. The model is the shipped device model (tiles, GEMV blocks, fill latency).", "",
             "| rows | dtype | cases | model median | model p90 | model median ratio |", "|---|---|---|---|---|---|"]
    for _, r in summary(graph).iterrows():
        lines.append(f"| {r['rows']} | {r['dtype']} | {r['cases']} | {r['model median']:.1%} | "
                     f"{r['model p90']:.1%} | {r['model ratio']:.3f} |")
    return lines + ["", "![rows, graph-timed](rows_graph.png)"]


def write(frame: pd.DataFrame, out: Path, hw_name: str) -> None:
    graph = frame[frame["timing"] == "graph"]
    frame = frame[frame["timing"] != "graph"]
    table = summary(frame)
    env = frame.iloc[0]
    lines = ["# Calibrated GEMM model on held-out shapes (and a rejected 64-row floor)", "",
             f"Measured with `validate/reports/gemm_rows/measure_rows.py` on {env.get('device_name', 'the GPU')} "
             f"(torch {env.get('torch', '?')}), {len(frame)} cases: 6 weight shapes none of which is in the "
             "validation suite, rows 1..1024 across the m = 64 | 65 edge, bf16 and fp8. Predictions from "
             f"`{hw_name}` (fitted on the suite's run, another machine). Errors are |predicted / measured - 1|.", "",
             "| rows | dtype | cases | model median | model p90 | floor median | floor p90 |", "|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        lines.append(f"| {r['rows']} | {r['dtype']} | {r['cases']} | {r['model median']:.1%} | {r['model p90']:.1%} | "
                     f"{r['floor median']:.1%} | {r['floor p90']:.1%} |")
    above = frame[frame["m"] > 64]
    flat = above.merge(frame[frame["m"] == 64][["dtype", "n", "k", "measured_s"]], on=["dtype", "n", "k"],
                       suffixes=("", "_64"))
    below = (flat["measured_s"] < flat["measured_s_64"]).mean()
    lines += ["", f"Measured: {below:.0%} of the cases above 64 rows ran faster than the same shape at 64 rows "
              f"(median ratio {np.median(flat['measured_s'] / flat['measured_s_64']):.2f}): cuBLAS itself is not "
              "monotone in rows here, so a floor cannot be right in general.", "", "![rows](rows.png)"]
    lines += graph_section(graph)
    (out / "report.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("measurements", type=Path)
    parser.add_argument("--hardware", default="h200-sxm-calibrated")
    args = parser.parse_args(argv)
    frame = score(args.measurements, args.hardware)
    out = args.measurements.parent
    frame.to_csv(out / "scored.csv", index=False, float_format="%.6g")
    plot(frame[frame["timing"] != "graph"], out / "rows.png")
    if (frame["timing"] == "graph").any():
        plot(frame[frame["timing"] == "graph"], out / "rows_graph.png")
    write(frame, out, args.hardware)
    print(summary(frame[frame["timing"] != "graph"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
