"""Fit the board power model (idle W, J per FLOP per datapath class, J per HBM byte) and the fraction of
its burst tensor-core rate a board sustains at its power limit, from measured cases.

    python validate/reports/power/fit_power.py DIR/power_cases.csv --out DIR

Reads measure_power.py's cases (each kernel run for ~3 s, power read through NVML). The fit is on the
steady state, the tail of each run (NVML's power reading is a ~1 s moving average, so a run's mean
power still carries the ramp from the previous case):

    P_tail - P_idle = sum_c e_c R_c + e_B B_rate

(R_c the tail FLOP/s on datapath class c, B_rate the tail HBM bytes/s; P_idle the awake board's tail
power while tiny kernels are launched back to back, the "launch" case, or in runs without it the
idle case's tail power, measured, not fitted), by non-negative least squares on relative error over
the cases not marked `holdout`. The report scores the predicted tail power of every case (fitted and held out) and a
baseline without physics (every busy case at the fitted cases' median power).

The sustained fraction of a class is the median, over its GEMMs that ran at the power limit (tail
power within 3% of it, SM clock pulled down), of tail rate / first-0.1-s rate: what perfmodel.rates.sustained_fraction
multiplies the burst-timed calibrated rates by.

The run's longest bidirectional SDPA case also gives the bidirectional attention kernel family's
rate relative to the calibrated bf16 GEMM rate (`bidirectional_attention_fraction`; diffusion
transformers' and text encoders' attention runs it).

Writes DIR/power_fit.csv, DIR/power_calibration.yaml (the spec's calibration.power section, written
by the spec's own field table, and the bidirectional attention family) and DIR/report.md.
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

#: Energy classes: tensor-core GEMMs (16-bit, 8-bit), CUDA-core fp32, and attention kernels (their
#: FLOPs on 16-bit tensor cores, with softmax and on-chip traffic of their own: priced apart).
DTYPE_CLASSES = ("bf16", "fp8", "fp32", "attention")
PARAMS = tuple(f"j_per_flop_{c}" for c in DTYPE_CLASSES) + ("j_per_hbm_byte",)
#: A GEMM counts as running at the power limit when its tail power is within this fraction of the cap.
AT_LIMIT = 0.03


def _float(row: dict, key: str) -> float:
    try:
        return float(row.get(key, "") or "nan")
    except ValueError:
        return math.nan


def usable(rows: list[dict]) -> list[dict]:
    """Cases measured without error, with a finite positive tail power and duration."""
    return [r for r in rows if not r.get("error") and _float(r, "tail_power_w") > 0 and _float(r, "duration_s") > 0]


#: Cases that measure the board's baseline power rather than work.
BASELINE_KINDS = ("idle", "launch")


def _tail_power_of(rows: list[dict], case_id: str) -> float | None:
    found = [_float(r, "tail_power_w") for r in usable(rows) if r.get("id") == case_id]
    return found[0] if found else None


def parked_idle_w(rows: list[dict]) -> float:
    """Parked idle power: the tail power of the case named "idle" (nothing launched for seconds)."""
    idle = _tail_power_of(rows, "idle")
    if idle is None:
        raise ValueError("cases: no usable 'idle' case; the idle power is measured, not fitted")
    return idle


def idle_w(rows: list[dict]) -> float:
    """The model's P_idle: the board's power while a workload keeps it awake and otherwise idle, the
    tail power of the "launch" case (tiny kernels launched back to back from Python). A step's idle
    moments (host-bound gaps, waits between kernels) are spent awake, not parked: on the H200 the
    host-bound eager fp8 FLUX block drew 259 W for a call its device was busy a fifth of
    (validate/reports/dit/h200). Runs without a launch case fall back to the parked idle power."""
    awake = _tail_power_of(rows, "launch")
    return awake if awake is not None else parked_idle_w(rows)


def busy(rows: list[dict]) -> list[dict]:
    return [r for r in usable(rows) if r.get("kind") not in BASELINE_KINDS]


def design(rows: list[dict]) -> np.ndarray:
    """One row per case: [R_bf16, R_fp8, R_fp32, B_rate], its tail FLOP/s on its class and HBM bytes/s."""
    a = np.zeros((len(rows), len(PARAMS)))
    for i, r in enumerate(rows):
        if r.get("dtype_class") in DTYPE_CLASSES:
            a[i, DTYPE_CLASSES.index(r["dtype_class"])] = np.nan_to_num(_float(r, "tail_flops_per_s"))
        a[i, -1] = np.nan_to_num(_float(r, "tail_bytes_per_s"))
    return a


def held_out(row: dict) -> bool:
    return str(row.get("holdout", "0")) in ("1", "True")


def at_limit(row: dict, cap_w: float) -> bool:
    """Whether a case ran at the board limit: its steady power within AT_LIMIT of it and, where the
    run read the SM clock, the clock pulled below its maximum (a memory-bound kernel can draw close
    to the limit at full clock, and then its power is a reading, not a bound)."""
    clock, top = _float(row, "sm_clock_mhz_mean"), _float(row, "sm_clock_mhz_max")
    throttled = not (math.isfinite(clock) and math.isfinite(top)) or clock < (1 - AT_LIMIT) * top
    return _float(row, "tail_power_w") >= (1 - AT_LIMIT) * cap_w and throttled


def fit(rows: list[dict], cap_w: float = 700.0) -> dict:
    """The power model from steady-state powers, treating cases at the board limit as censored.

    A case below the limit reads its power; a case at the limit reads only that its demand reached
    the limit (the clock drops until it does). So: (1) non-negative least squares of P_tail - P_idle
    = A theta on relative error over the fitted cases below the limit; (2) each class's J/FLOP is then
    raised, where needed, to the least value at which every fitted case of that class at the limit is
    predicted at or above its measured power (the model clips at the limit), i.e. the largest
    (P_tail - P_idle - the other terms) / rate over them. Attention's J/FLOP is set by (2) alone. Columns are scaled to unit norm for (1) (J per
    FLOP and per byte are orders of magnitude apart). A parameter no fitted case exercises is NaN."""
    idle = idle_w(rows)
    train = [r for r in busy(rows) if not held_out(r)]
    below = [r for r in train if not at_limit(r, cap_w)]
    if len(below) < 2:
        raise ValueError(f"cases: {len(below)} usable fitted cases below the power limit; need at least 2 "
                         "(a CPU smoke run records no power)")
    power = np.array([_float(r, "tail_power_w") for r in below])
    weighted = design(below) / power[:, None]
    norms = np.linalg.norm(weighted, axis=0)
    # attention's J/FLOP comes from its compute-bound cases only (censored, step 2): below the limit
    # an attention kernel is a decode, whose few FLOPs would soak up its bytes' error
    used = (norms > 0) & (np.array(PARAMS) != "j_per_flop_attention")
    theta = np.full(len(PARAMS), np.nan)
    scaled, _ = nnls(weighted[:, used] / norms[used], (power - idle) / power)
    theta[used] = scaled / norms[used]
    for i, c in enumerate(DTYPE_CLASSES):
        capped = [r for r in train if at_limit(r, cap_w) and r.get("dtype_class") == c]
        for r in capped:
            x = design([r])[0]
            others = float(np.nan_to_num(np.delete(theta, i)) @ np.delete(x, i))
            needed = (_float(r, "tail_power_w") - idle - others) / x[i]
            theta[i] = needed if not np.isfinite(theta[i]) else max(theta[i], needed)
    return {"idle_w": idle, **dict(zip(PARAMS, theta))}


def predict_power(rows: list[dict], params: dict, cap_w: float = math.inf) -> np.ndarray:
    """Model tail power (W) of each case, clipped at the board limit (parameters no fitted case
    exercised count as zero)."""
    theta = np.nan_to_num(np.array([params[p] for p in PARAMS]))
    return np.minimum(params["idle_w"] + design(rows) @ theta, cap_w)


def score(rows: list[dict], params: dict, cap_w: float = math.inf) -> list[dict]:
    """Per busy case: measured and predicted tail power, APE, whether it was held out and whether it
    ran at the limit."""
    rows = busy(rows)
    predicted = predict_power(rows, params, cap_w)
    return [dict(id=r["id"], holdout="1" if held_out(r) else "0", at_limit="1" if at_limit(r, cap_w) else "0",
                 measured_w=_float(r, "tail_power_w"), predicted_w=float(p),
                 ape=abs(float(p) / _float(r, "tail_power_w") - 1.0))
            for r, p in zip(rows, predicted)]


def sustained_fractions(rows: list[dict], cap_w: float) -> dict:
    """Per class, the median tail / first-chunk rate of its GEMMs that ran at the power limit."""
    out = {}
    for c in DTYPE_CLASSES:
        ratios = [_float(r, "tail_flops_per_s") / _float(r, "first_chunk_flops_per_s") for r in busy(rows)
                  if r.get("kind") == "gemm" and r.get("dtype_class") == c
                  and at_limit(r, cap_w) and _float(r, "first_chunk_flops_per_s") > 0]
        if ratios:
            out[c] = min(1.0, statistics.median(ratios))
    return out


#: The attention kernel family the power run's SDPA cases time (torch SDPA, bidirectional: no mask).
BIDIRECTIONAL_FAMILY = "sdpa-prefill-bidirectional"


def bidirectional_attention_fraction(rows: list[dict], bf16_gemm_flops_per_s: float) -> float:
    """Rate of bidirectional (unmasked) SDPA prefill as a fraction of the spec's calibrated bf16 GEMM
    rate: the first-0.1-s (burst, as the calibration's kernels are timed) rate of the longest
    bidirectional case (its steady kernel rate; per-call floors and waves are the family's other
    terms). NaN without such a case. The calibration's own `sdpa-prefill` family is fitted on causal
    prefill, which runs at a lower fraction (the masked diagonal tiles)."""
    cases = [r for r in busy(rows) if r.get("kind") == "attention" and _float(r, "m") > 1
             and _float(r, "first_chunk_flops_per_s") > 0]
    if not cases or not bf16_gemm_flops_per_s > 0:
        return math.nan
    longest = max(cases, key=lambda r: _float(r, "n"))
    return _float(longest, "first_chunk_flops_per_s") / bf16_gemm_flops_per_s


def yaml_section(params: dict, fractions: dict, source: str, attention_fraction: float = math.nan) -> str:
    """The calibration.power section of a hardware spec, each value written by its row of
    hardware.fields.CALIBRATION (the reader's units)."""
    from hardware import fields

    rows = {f.attr: f for f in fields.CALIBRATION}
    per_flop = {c: params[f"j_per_flop_{c}"] for c in DTYPE_CLASSES
                if math.isfinite(params[f"j_per_flop_{c}"]) and params[f"j_per_flop_{c}"] > 0}
    lines = [f"# calibration.power fitted by validate/reports/power/fit_power.py on {source}", "power:",
             f"  idle: {rows['idle_power_w'].file_text(params['idle_w'])} [measured]", "  energy_per_flop:"]
    lines += [f"    {c}: {rows['joules_per_flop'].file_text(j)} [measured]" for c, j in per_flop.items()]
    lines += [f"  energy_per_hbm_byte: {rows['joules_per_hbm_byte'].file_text(params['j_per_hbm_byte'])} [measured]"]
    if fractions:
        lines += ["  sustained_fraction:"]
        lines += [f"    {c}: {rows['sustained_fraction'].file_text(v)} [measured]" for c, v in fractions.items()]
    if math.isfinite(attention_fraction):
        lines += ["# the bidirectional SDPA family (its other parameters: the calibration's sdpa-prefill entry)",
                  "attention_kernels:", f"  {BIDIRECTIONAL_FAMILY}:", f"    flops_fraction: {attention_fraction:.6g} [measured]"]
    return "\n".join(lines) + "\n"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def constant_power_baseline(rows: list[dict]) -> tuple[float, float]:
    """(W, held-out median APE) of the model with no physics, P = W for every busy case, W the median
    tail power of the fitted busy cases: kernels that all run at the board limit draw the same power
    whatever their FLOPs and bytes, so this baseline scores well where they do, and the per-FLOP and
    per-byte coefficients earn their keep only on cases below the limit."""
    rows = busy(rows)
    watts = [_float(r, "tail_power_w") for r in rows if not held_out(r)]
    if not watts:
        return math.nan, math.nan
    w = statistics.median(watts)
    held = [abs(w / _float(r, "tail_power_w") - 1.0) for r in rows if held_out(r)]
    return w, _median(held)


def report(rows: list[dict], params: dict, fractions: dict, scored: list[dict], source: str, cap_w: float) -> str:
    held = [s for s in scored if s["holdout"] == "1"]
    held_below = [s["ape"] for s in held if s["at_limit"] == "0"]
    base_w, base_ape = constant_power_baseline(rows)
    lines = ["# Board power model fitted on measured kernels", "",
             f"Source: {source}. Model (perfmodel/energy.py): P = min(P_limit, P_idle + sum_c e_c R_c + e_B B_rate) at "
             "the steady state (tail of each ~3 s run), P_idle the awake board's measured power (the launch "
             "case; the parked idle case beside it). Cases below the "
             f"{cap_w:g} W limit are fitted by non-negative least squares on relative error; a case at the limit only says "
             "its demand reached it (censored), so each class's J/FLOP is raised to the least value that puts its "
             "fitted cases at the limit there. Held-out cases are in neither step.", "",
             "| parameter | value |", "|---|---|",
             f"| idle power (awake: P_idle) | {params['idle_w']:.4g} W |",
             f"| idle power (parked, not used) | {parked_idle_w(rows):.4g} W |"]
    lines += [f"| energy per FLOP, {c} | {params[f'j_per_flop_{c}'] * 1e12:.4g} pJ |" for c in DTYPE_CLASSES]
    lines += [f"| energy per HBM byte | {params['j_per_hbm_byte'] * 1e12:.4g} pJ |"]
    lines += [f"| sustained fraction at the limit, {c} | {v:.3f} |" for c, v in fractions.items()]
    lines += ["", f"Steady power APE, held-out cases: median {_median([s['ape'] for s in held]):.1%} (n={len(held)}); "
              f"held out and below the limit (where the per-FLOP and per-byte terms are tested): median "
              f"{_median(held_below):.1%} (n={len(held_below)}). Baseline without physics (P = {base_w:.0f} W for "
              f"every busy case): held-out median {base_ape:.1%}. Energy per call of whole DiT blocks, none of them "
              "fitted here, is scored in validate/reports/dit.", "",
              "| case | held out | at limit | measured W | predicted W | APE |", "|---|---|---|---|---|---|"]
    lines += [f"| {s['id']} | {'yes' if s['holdout'] == '1' else ''} | {'yes' if s['at_limit'] == '1' else ''} | "
              f"{s['measured_w']:.4g} | {s['predicted_w']:.4g} | {s['ape']:.1%} |" for s in scored]
    lines += ["", "Burst vs sustained (first 0.1 s chunk after 1 s idle vs the median of the last 70% of the run); "
              "the sustained fraction of a class is the median ratio of its cases at the limit:", "",
              "| case | burst TFLOP/s | sustained TFLOP/s | sustained / burst | SM MHz mean (min-max) | "
              "power W (tail) | at limit |", "|---|---|---|---|---|---|---|"]
    for r in busy(rows):
        if r.get("kind") not in ("gemm", "attention") or r.get("dtype_class") not in DTYPE_CLASSES:
            continue
        burst, tail = _float(r, "first_chunk_flops_per_s"), _float(r, "tail_flops_per_s")
        lines.append(f"| {r['id']} | {burst / 1e12:.4g} | {tail / 1e12:.4g} | {tail / burst:.3f} | "
                     f"{_float(r, 'sm_clock_mhz_mean'):.0f} ({_float(r, 'sm_clock_mhz_min'):.0f}-"
                     f"{_float(r, 'sm_clock_mhz_max'):.0f}) | {_float(r, 'tail_power_w'):.0f} | "
                     f"{'yes' if at_limit(r, cap_w) else ''} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cases", help="power_cases.csv written by measure_power.py")
    p.add_argument("--out", required=True, help="directory for power_fit.csv, power_calibration.yaml, report.md")
    p.add_argument("--cap-w", type=float, default=700.0, help="board power limit in W (H200: 700)")
    p.add_argument("--hardware", default="h200-sxm-calibrated",
                   help="calibrated spec whose bf16 GEMM rate the bidirectional attention fraction is relative to")
    args = p.parse_args(argv)
    path = Path(args.cases)
    if not path.is_file():
        print(f"fit_power: cases: {path} is not a file", file=sys.stderr)
        return 2
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    try:
        params = fit(rows, args.cap_w)
    except ValueError as err:
        print(f"fit_power: {err}", file=sys.stderr)
        return 2
    devices = sorted({r.get("device", "") for r in usable(rows)} - {""})
    source = f"{path.name} ({', '.join(devices) or 'unknown device'})"
    scored = score(rows, params, args.cap_w)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "power_fit.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(scored[0]))
        writer.writeheader()
        writer.writerows(scored)
    fractions = sustained_fractions(rows, args.cap_w)
    import hardware

    spec = hardware.load(args.hardware)
    attention = bidirectional_attention_fraction(rows, spec.calibration.matmul_flops_per_s.get("bf16", 0.0)
                                                 if spec.calibration else 0.0)
    (out / "power_calibration.yaml").write_text(yaml_section(params, fractions, source, attention))
    text = report(rows, params, fractions, scored, source, args.cap_w)
    (out / "report.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
