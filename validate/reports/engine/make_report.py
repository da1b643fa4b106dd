"""Score whole engine steps measured on a GPU against the calibrated spec, per engine profile.

    python validate/reports/engine/make_report.py [RUN_DIR] [--hardware SPEC]

RUN_DIR (default validate/reports/engine/h200) holds steps.csv and meta.json from
measure_engine.py. Every step is predicted by `perfmodel.step_time` with the engine profile it ran
as (torch-compile, torch-eager-graph, torch-eager) on the calibrated spec, whose device parameters
were fitted on graph-timed kernels only (validate/reports/h200): no step was seen by any fit, and
the models' shapes are held out (validate/cases.py). Writes RUN_DIR/scored.csv and RUN_DIR/report.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repo root, when run as a script

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import hardware  # noqa: E402
from validate.predict_cases import predict_frame  # noqa: E402

HERE = Path(__file__).resolve().parent
#: The shipped preset: the graph-timed kernel calibration (validate/reports/h200) plus the board's
#: power section (validate/reports/power/h200), which prices steps under load.
SPEC = "h200-sxm-calibrated"


def scored(steps: pd.DataFrame, hw) -> pd.DataFrame:
    ok = steps[steps["status"] == "ok"].copy()
    out = predict_frame(ok, hw)
    out["ratio"] = out["predicted_s"] / out["measured_s"]
    out["ape"] = (out["ratio"] - 1).abs()
    return out


def summary(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return (frame.groupby(keys).agg(cases=("ape", "size"), median_ape=("ape", "median"),
                                    p90_ape=("ape", lambda x: x.quantile(0.9)), median_ratio=("ratio", "median"))
            .reset_index())


def markdown(frame: pd.DataFrame, meta: dict, spec: str, kernel_counts: bool = True) -> str:
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    lines = [f"# Whole engine steps on an {meta.get('device_name', 'unknown GPU')}: predicted vs measured", "",
             f"Measured by `validate/reports/engine/measure_engine.py` ({meta.get('device_name')}, torch "
             f"{meta.get('torch')}, CUDA {meta.get('cuda')}, driver {meta.get('driver')}); the run's ceilings: "
             f"bf16 8192^3 GEMM {meta.get('ceilings', {}).get('gemm_tflops', float('nan')):.0f} TFLOP/s, 1 GiB device copy "
             f"{meta.get('ceilings', {}).get('copy_gbps_read_plus_write', float('nan')):.0f} GB/s (read + write). Predicted by "
             f"`perfmodel.step_time` on `{spec}` with each step's engine profile. Device parameters come from "
             "graph-timed kernels only (the spec's sources name them); no step was fitted, so every step is held "
             "out (on our own H200 calibration Llama-3.2-1B's shapes and Qwen3-30B-A3B's MoE layer are outside "
             "its kernel fit too). Errors are |predicted / measured - 1|.", "",
             "| engine | phase | cases | median APE | p90 APE | median predicted / measured |", "|---|---|---|---|---|---|"]
    for r in summary(frame, ["engine", "phase"]).to_dict("records"):
        lines.append(f"| {r['engine']} | {r['phase']} | {r['cases']} | {pct(r['median_ape'])} | {pct(r['p90_ape'])} | "
                     f"{r['median_ratio']:.3f} |")
    lines += ["", "## torch-compile by model and dtype", "",
              "| model | dtype | phase | cases | median APE | p90 APE | median predicted / measured |",
              "|---|---|---|---|---|---|---|"]
    compiled = frame[frame["engine"] == "torch-compile"]
    for r in summary(compiled, ["model", "dtype", "phase"]).to_dict("records"):
        lines.append(f"| {r['model']} | {r['dtype']} | {r['phase']} | {r['cases']} | {pct(r['median_ape'])} | "
                     f"{pct(r['p90_ape'])} | {r['median_ratio']:.3f} |")
    worst = compiled.sort_values("ape", ascending=False).head(12)
    lines += ["", "## Worst torch-compile steps", "", "| model | dtype | phase | batch | q_len | kv_len | measured | "
              "predicted | ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for r in worst.to_dict("records"):
        lines.append(f"| {r['model']} | {r['dtype']} | {r['phase']} | {r['batch']:g} | {r['q_len']:g} | {r['kv_len']:g} | "
                     f"{r['measured_s'] * 1e3:.3f} ms | {r['predicted_s'] * 1e3:.3f} ms | {r['ratio']:.3f} |")
    lines += ["", ("Kernel counts per decoder layer (torch.profiler): `kernel_counts.csv`. " if kernel_counts else "")
              + "Per-step numbers: `scored.csv`.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", nargs="?", default=str(HERE / "h200"))
    p.add_argument("--hardware", default=SPEC)
    args = p.parse_args(argv)
    run = Path(args.run)
    steps = pd.read_csv(run / "steps.csv", keep_default_na=False, na_values=[""])
    meta = json.loads((run / "meta.json").read_text()) if (run / "meta.json").exists() else {}
    hw = hardware.Hardware.from_yaml(args.hardware) if args.hardware.endswith(".yaml") else hardware.load(args.hardware)
    frame = scored(steps, hw)
    frame.to_csv(run / "scored.csv", index=False, float_format="%.6g")
    spec = Path(args.hardware).name if args.hardware.endswith(".yaml") else args.hardware
    (run / "report.md").write_text(markdown(frame, meta, spec, (run / "kernel_counts.csv").exists()))
    print(summary(frame, ["engine", "phase"]).to_string(index=False))
    return 0 if np.isfinite(frame["predicted_s"]).all() else 1


if __name__ == "__main__":
    sys.exit(main())
