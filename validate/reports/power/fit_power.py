"""Fit the board power model (idle W, J per FLOP per dtype class, J per HBM byte) to measured cases.

    python validate/reports/power/fit_power.py DIR/power_cases.csv --out DIR

Reads measure_power.py's cases and fits, by non-negative least squares on relative error, the
energy of each case as perfmodel.energy models it:

    E = P_idle T + sum_c e_c F_c + e_B B

(T the run's duration, F_c its FLOPs of dtype class c, B its HBM bytes; energy measured through
NVML's counter, else mean power x T). Cases marked `holdout` stay out of the fit; the report gives
the absolute percentage error of the predicted energy per case for fitted and held-out cases (target:
median within 15%), the burst vs sustained rate and SM clock of every GEMM, and the power roof the
fit implies (the rate at which a case alone would reach the cap: perfmodel.energy.capped_time_s).
Writes DIR/power_fit.csv, DIR/power_calibration.yaml (the spec's calibration.power section) and
DIR/report.md.
"""
from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repo root, when run as a script

DTYPE_CLASSES = ("bf16", "fp8", "fp32")
PARAMS = ("idle_w",) + tuple(f"j_per_flop_{c}" for c in DTYPE_CLASSES) + ("j_per_hbm_byte",)


def _float(row: dict, key: str) -> float:
    try:
        return float(row.get(key, "") or "nan")
    except ValueError:
        return math.nan


def usable(rows: list[dict]) -> list[dict]:
    """Cases measured without error, with a finite positive energy and duration."""
    return [r for r in rows if not r.get("error") and _float(r, "energy_j") > 0 and _float(r, "duration_s") > 0]


def design(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(A, E): one row per case, columns [T, F_bf16, F_fp8, F_fp32, B], and measured energy (J)."""
    a = np.zeros((len(rows), len(PARAMS)))
    for i, r in enumerate(rows):
        calls = _float(r, "calls") if r.get("kind") != "idle" else 0.0
        a[i, 0] = _float(r, "duration_s")
        if r.get("dtype_class") in DTYPE_CLASSES:
            a[i, 1 + DTYPE_CLASSES.index(r["dtype_class"])] = _float(r, "flops_per_call") * calls
        a[i, -1] = _float(r, "bytes_per_call") * calls if calls else 0.0
    return a, np.array([_float(r, "energy_j") for r in rows])


def fit(rows: list[dict]) -> dict:
    """Non-negative least squares of E = A theta on relative error (each case weighted by 1/E), on
    the cases not marked holdout. Columns are scaled to unit norm first so that watts and joules per
    FLOP (15 orders of magnitude apart) condition alike. A parameter no fitted case exercises (no
    fp32 case, say) comes back NaN rather than a meaningless zero."""
    rows = usable(rows)
    train = [r for r in rows if str(r.get("holdout", "0")) not in ("1", "True")]
    if len(train) < 2:
        raise ValueError(f"cases: {len(train)} usable fitted cases with measured energy; need at least 2 "
                         "(a CPU smoke run records no power)")
    a, e = design(train)
    weighted = a / e[:, None]
    norms = np.linalg.norm(weighted, axis=0)
    used = norms > 0
    theta = np.full(len(PARAMS), np.nan)
    scaled, _ = nnls(weighted[:, used] / norms[used], np.ones(len(train)))
    theta[used] = scaled / norms[used]
    return dict(zip(PARAMS, theta))


def predict_energy(rows: list[dict], params: dict) -> np.ndarray:
    """Model energy (J) of each case under fitted parameters (unexercised ones count as zero)."""
    a, _ = design(rows)
    theta = np.nan_to_num(np.array([params[p] for p in PARAMS]))
    return a @ theta


def score(rows: list[dict], params: dict) -> list[dict]:
    """Per usable case: measured and predicted energy, APE, and whether it was held out."""
    rows = usable(rows)
    predicted = predict_energy(rows, params)
    return [dict(id=r["id"], holdout=str(r.get("holdout", "0")), measured_j=_float(r, "energy_j"),
                 predicted_j=float(p), ape=abs(float(p) / _float(r, "energy_j") - 1.0))
            for r, p in zip(rows, predicted)]


def yaml_section(params: dict, source: str) -> str:
    """The calibration.power section of a hardware spec (hardware/spec.py reads it)."""
    per_flop = "\n".join(f"    {c}: {params[f'j_per_flop_{c}'] * 1e12:.6g} [measured]" for c in DTYPE_CLASSES
                         if math.isfinite(params[f"j_per_flop_{c}"]) and params[f"j_per_flop_{c}"] > 0)
    return (f"# calibration.power fitted by validate/reports/power/fit_power.py on {source}\n"
            f"power:\n  idle: {params['idle_w']:.6g} W [measured]\n  pj_per_flop:\n{per_flop}\n"
            f"  pj_per_hbm_byte: {params['j_per_hbm_byte'] * 1e12:.6g} [measured]\n")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def constant_power_baseline(rows: list[dict]) -> tuple[float, float]:
    """(W, held-out median APE) of the model with no physics, E = W x T, W the median power of the
    fitted non-idle cases: kernels that all run at the board cap spend energy in proportion to time
    whatever their FLOPs and bytes, and then this baseline scores as well as the fit does, so the
    held-out APE alone does not test the per-FLOP and per-byte coefficients."""
    rows = usable(rows)
    watts = [_float(r, "energy_j") / _float(r, "duration_s") for r in rows
             if str(r.get("holdout", "0")) != "1" and r.get("kind") != "idle"]
    if not watts:
        return math.nan, math.nan
    w = statistics.median(watts)
    held = [abs(w * _float(r, "duration_s") / _float(r, "energy_j") - 1.0) for r in rows
            if str(r.get("holdout", "0")) == "1"]
    return w, _median(held)


def report(rows: list[dict], params: dict, scored: list[dict], source: str, cap_w: float) -> str:
    fitted = [s["ape"] for s in scored if s["holdout"] != "1"]
    held = [s["ape"] for s in scored if s["holdout"] == "1"]
    base_w, base_ape = constant_power_baseline(rows)
    lines = ["# Board power model fitted on measured kernels", "",
             f"Source: {source}. Model (perfmodel/energy.py): E = P_idle T + sum_c e_c F_c + e_B B, fitted by "
             "non-negative least squares on relative error; held-out cases are not in the fit.", "",
             "| parameter | value |", "|---|---|",
             f"| idle power | {params['idle_w']:.4g} W |"]
    lines += [f"| energy per FLOP, {c} | {params[f'j_per_flop_{c}'] * 1e12:.4g} pJ |" for c in DTYPE_CLASSES]
    lines += [f"| energy per HBM byte | {params['j_per_hbm_byte'] * 1e12:.4g} pJ |", "",
              f"Energy APE: fitted cases median {_median(fitted):.1%} (n={len(fitted)}), held-out median "
              f"{_median(held):.1%} (n={len(held)}), all median {_median(fitted + held):.1%}; target 15%. "
              f"Baseline without physics (E = {base_w:.0f} W x T, the fitted non-idle cases' median power): "
              f"held-out median {base_ape:.1%}.", "",
              "| case | held out | measured J | predicted J | APE |", "|---|---|---|---|---|"]
    lines += [f"| {s['id']} | {'yes' if s['holdout'] == '1' else ''} | {s['measured_j']:.4g} | "
              f"{s['predicted_j']:.4g} | {s['ape']:.1%} |" for s in scored]
    lines += ["", "Burst vs sustained (first 0.1 s chunk after 1 s idle vs the median of the last 70% of the run), "
              f"and the rate at which the fitted model reaches the {cap_w:g} W cap with that case's bytes per FLOP:", "",
              "| case | burst TFLOP/s | sustained TFLOP/s | sustained / burst | SM MHz mean (min-max) | "
              "power W (tail) | model power-roof TFLOP/s |", "|---|---|---|---|---|---|---|"]
    for r in usable(rows):
        if r.get("kind") != "gemm" or r.get("dtype_class") not in DTYPE_CLASSES:
            continue
        burst, tail = _float(r, "first_chunk_flops_per_s"), _float(r, "tail_flops_per_s")
        e_flop = params[f"j_per_flop_{r['dtype_class']}"]
        bytes_per_flop = _float(r, "bytes_per_call") / max(_float(r, "flops_per_call"), 1e-30)
        dyn = (cap_w - params["idle_w"]) / (np.nan_to_num(e_flop) + params["j_per_hbm_byte"] * bytes_per_flop)
        lines.append(f"| {r['id']} | {burst / 1e12:.4g} | {tail / 1e12:.4g} | {tail / burst:.3f} | "
                     f"{_float(r, 'sm_clock_mhz_mean'):.0f} ({_float(r, 'sm_clock_mhz_min'):.0f}-"
                     f"{_float(r, 'sm_clock_mhz_max'):.0f}) | {_float(r, 'tail_power_w'):.0f} | {dyn / 1e12:.4g} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cases", help="power_cases.csv written by measure_power.py")
    p.add_argument("--out", required=True, help="directory for power_fit.csv, power_calibration.yaml, report.md")
    p.add_argument("--cap-w", type=float, default=700.0, help="board power limit in W (H200: 700)")
    args = p.parse_args(argv)
    path = Path(args.cases)
    if not path.is_file():
        print(f"fit_power: cases: {path} is not a file", file=sys.stderr)
        return 2
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    try:
        params = fit(rows)
    except ValueError as err:
        print(f"fit_power: {err}", file=sys.stderr)
        return 2
    devices = sorted({r.get("device", "") for r in usable(rows)} - {""})
    source = f"{path.name} ({', '.join(devices) or 'unknown device'})"
    scored = score(rows, params)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "power_fit.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(scored[0]))
        writer.writeheader()
        writer.writerows(scored)
    (out / "power_calibration.yaml").write_text(yaml_section(params, source))
    text = report(rows, params, scored, source, args.cap_w)
    (out / "report.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
