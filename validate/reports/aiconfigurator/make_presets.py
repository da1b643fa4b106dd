"""Calibrated presets for GPUs we cannot measure here, fitted to NVIDIA aiconfigurator's tables.

    python validate/reports/aiconfigurator/make_presets.py

For H100 SXM, A100 80GB, B200 and L40S: `perfmodel calibrate --from aiconfigurator` on the committed
case tables (validate/reports/aiconfigurator/<system>/<engine>.csv; GEMM and all-reduce from vLLM's
tables, attention per engine), written to hardware/presets/<preset>-calibrated.yaml. For the H200,
the same fit is compared with our own graph-timed calibration (validate/reports/h200): parameters
side by side, and each spec scoring the other's evaluation cases. Writes report.md and
residuals.csv beside this script.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repo root, when run as a script

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

import hardware  # noqa: E402
from hardware.spec import Hardware, to_yaml_dict  # noqa: E402
from validate import calibrate_external as ce  # noqa: E402
from validate.commands import SYSTEMS, power_section  # noqa: E402
from validate.predict_cases import predict_many  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
#: The systems `perfmodel calibrate --from aiconfigurator` knows, but the H200 (calibrated from our
#: own measurements, and compared below).
PRESETS = {system: base for system, base in SYSTEMS.items() if system != "h200_sxm"}
OURS = ROOT / "validate" / "reports" / "h200"
#: Board power measured on our own machines (validate/reports/power/<dir>, measure_power.py then
#: fit_power.py): the preset carries it (energy model, and the fraction of the burst GEMM rate the
#: board sustains at its power limit, which every serving prediction applies), as
#: `perfmodel validate calibrate --power` does for the H200. aiconfigurator's tables are burst
#: timings (short CUDA-graph replays) and say nothing of power.
POWER = {"h100_sxm": ROOT / "validate" / "reports" / "power" / "h100" / "power_calibration.yaml"}


def fit(system: str, base: str) -> tuple[Hardware, pd.DataFrame]:
    by_engine = ce.cases_for(system)
    hw = ce.calibrated_preset(by_engine, hardware.load(base).datasheet())
    frame = ce.residuals(by_engine, hw).assign(system=system)  # kernels timed in bursts: before the power
    return (with_power(hw, POWER[system]) if system in POWER else hw), frame


def with_power(hw: Hardware, path: Path) -> Hardware:
    """`hw` with the calibration.power section (and measured attention families) of a
    power_calibration.yaml, each number citing that file."""
    values = power_section(str(path), hw.calibration)
    cited = (f"{path.relative_to(ROOT)}: board power through NVML while each kernel ran back to back on our "
             "own machine (validate/reports/power/measure_power.py, fit_power.py)")
    cal = dataclasses.replace(hw.calibration, **values)
    sources = dict(hw.sources)
    sources["calibration.power.idle"] = cited
    for field, table in (("energy_per_flop", cal.joules_per_flop), ("sustained_fraction", cal.sustained_fraction)):
        sources.update({f"calibration.power.{field}.{key}": cited for key in table})
    sources["calibration.power.energy_per_hbm_byte"] = cited
    measured = yaml.safe_load(path.read_text()).get("attention_kernels") or {}
    for family in measured:  # the family's own numbers cite the file, the rest its parent family's
        parent = family.rsplit("-", 1)[0]
        for attr in cal.attention_kernels[family]:
            key = ce.ATTENTION_KEYS[attr]
            sources[f"calibration.attention_kernels.{family}.{key}"] = cited if key in measured[family] else \
                hw.sources.get(f"calibration.attention_kernels.{parent}.{key}", "")
    return dataclasses.replace(hw, calibration=cal, sources=sources)


def write_spec(hw: Hardware, path: Path, system: str) -> None:
    header = (f"# Calibrated from NVIDIA aiconfigurator's measured kernel tables ({system}); base spec: "
              f"{hw.name.removesuffix('-calibrated')}. Written by "
              "validate/reports/aiconfigurator/make_presets.py (`perfmodel calibrate --from aiconfigurator`).\n")
    path.write_text(header + yaml.safe_dump(to_yaml_dict(hw), sort_keys=False))


def table(frame: pd.DataFrame) -> list[str]:
    ev = ce.residual_table(frame)
    ev = ev[ev["split"] == "evaluation"]
    lines = ["| engine | class | cases | median APE | p90 APE | median predicted / measured |", "|---|---|---|---|---|---|"]
    for r in ev.to_dict("records"):
        lines.append(f"| {r['engine']} | {r['class']} | {r['cases']} | {100 * r['median_ape']:.1f}% | "
                     f"{100 * r['p90_ape']:.1f}% | {r['median_ratio']:.3f} |")
    return lines


def h200_comparison(aic: Hardware) -> list[str]:
    """Our graph-timed H200 calibration against the one fitted to aiconfigurator's H200 tables."""
    ours = Hardware.from_yaml(OURS / "h200-sxm-calibrated.yaml")
    a, o = aic.calibration, ours.calibration
    rows = [("bf16 GEMM rate (burst)", a.matmul_flops_per_s["bf16"] / 1e12, o.matmul_flops_per_s["bf16"] / 1e12, "TFLOP/s"),
            ("fp8 GEMM rate (burst)", a.matmul_flops_per_s.get("fp8", np.nan) / 1e12,
             o.matmul_flops_per_s.get("fp8", np.nan) / 1e12, "TFLOP/s"),
            ("bf16 power roof", a.sustained_flops_per_s.get("bf16", np.nan) / 1e12,
             o.sustained_flops_per_s.get("bf16", np.nan) / 1e12, "TFLOP/s"),
            ("read bandwidth", a.read_bytes_per_s / 1e9, o.read_bytes_per_s / 1e9, "GB/s"),
            ("kernel floor", a.kernel_overhead_s * 1e6, o.kernel_overhead_s * 1e6, "us"),
            ("per-block streaming (tiled)", a.sm_bytes_per_s / 1e9, o.sm_bytes_per_s / 1e9, "GB/s"),
            ("tile", f"{a.tile_m}x{a.tile_n}", f"{o.tile_m}x{o.tile_n}", ""),
            ("split-K threshold", a.split_k_min, o.split_k_min, "")]
    lines = ["| parameter | fitted to aiconfigurator (vLLM GEMM tables) | fitted to our suite (torch GEMMs) | unit |",
             "|---|---|---|---|"]
    for name, x, y, unit in rows:
        fmt = (lambda v: f"{v:.3g}") if isinstance(x, float) else str
        lines.append(f"| {name} | {fmt(x)} | {fmt(y) if isinstance(y, float) else y} | {unit} |")
    # cross-prediction: each spec on the other side's evaluation GEMMs
    suite = pd.read_csv(OURS / "measurements.csv", keep_default_na=False, na_values=[""])
    suite = suite[(suite["kind"] == "matmul") & (suite["timing"] == "graph") & (suite["split"] == "evaluation")
                  & (suite["status"] == "ok")]
    cases = [{k: v for k, v in r.items() if not (isinstance(v, float) and np.isnan(v))} for r in suite.to_dict("records")]
    measured = suite["measured_s"].to_numpy(float)
    aic_cases = [c for c in ce.prepared(ce.cases_for("h200_sxm")["vllm"]) if c["kind"] == "matmul"
                 and c["split"] == "evaluation"]
    aic_measured = np.array([float(c["measured_s"]) for c in aic_cases])

    def ape(pred, meas):
        e = np.abs(pred / meas - 1)
        return f"{100 * np.median(e):.1f}% / {100 * np.quantile(e, 0.9):.1f}%"
    lines += ["", "GEMMs of the evaluation split, median / p90 APE:", "",
              "| cases | aiconfigurator-fitted spec | our suite's spec |", "|---|---|---|",
              f"| our suite, graph-timed ({len(cases)}) | {ape(predict_many(cases, aic), measured)} | "
              f"{ape(predict_many(cases, ours), measured)} |",
              f"| aiconfigurator vLLM H200 ({len(aic_cases)}) | {ape(predict_many(aic_cases, aic), aic_measured)} | "
              f"{ape(predict_many(aic_cases, ours), aic_measured)} |"]
    return lines


def main() -> int:
    frames, lines = [], ["# Calibrated presets from NVIDIA aiconfigurator's kernel tables", "",
                         "Every number of each preset cites the table it was fitted to (its `sources`). Cases are "
                         "split by shape (validate/cases.py); the fit saw the calibration half, the tables below "
                         "score the evaluation half. Regenerate: "
                         "`python validate/reports/aiconfigurator/make_presets.py`.", ""]
    for system, base in PRESETS.items():
        hw, frame = fit(system, base)
        write_spec(hw, ROOT / "hardware" / "presets" / f"{base}-calibrated.yaml", system)
        frames.append(frame)
        lines += [f"## {hw.title} (`{hw.name}`, from `{system}`)", ""] + table(frame) + [""]
        print(f"{system}: hardware/presets/{base}-calibrated.yaml", flush=True)
    aic, frame = fit("h200_sxm", "h200-sxm")
    write_spec(aic, HERE / "h200_sxm" / "h200-sxm-aiconfigurator.yaml", "h200_sxm")
    frames.append(frame)
    lines += ["## NVIDIA H200 SXM 141GB: fitted to aiconfigurator's tables (`validate/reports/aiconfigurator/h200_sxm/"
              "h200-sxm-aiconfigurator.yaml`), then compared with our own graph-timed calibration", ""] + \
        table(frame) + [""]
    lines += h200_comparison(aic) + [""]
    pd.concat(frames).to_csv(HERE / "residuals.csv", index=False, float_format="%.6g")
    (HERE / "report.md").write_text("\n".join(lines))
    print(f"report: {HERE / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
