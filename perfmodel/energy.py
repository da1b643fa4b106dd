"""Board power and energy of a step, and what a power limit below the board's own does to its time.

The model, per device, for a phase of `time_s` seconds whose ops do F_c FLOPs on datapath class c
(16-bit tensor cores "bf16", 8/4-bit tensor cores "fp8", CUDA-core "fp32", attention kernels
"attention") and move B bytes through HBM:

    E_dyn = sum_c e_c F_c + e_B B                                     (J, the work's own energy)
    P     = P_idle + E_dyn / time_s, clipped at the board limit P_tdp  (W)
    E     = P T                                                       (J)

P_idle is the board awake and otherwise idle (clocks up, as between a step's kernels or while the
host launches them), measured with tiny kernels launched back to back: 121 W on an H200, against
78 W parked after seconds of nothing. A host-bound step spends its gaps awake.

Power as idle plus a per-unit energy times its activity is the form of Hong & Kim, "An integrated
GPU power and performance model", ISCA 2010 (runtime power = idle + sum of unit access rate x unit
power) and of AccelWattch (Kandiah et al., MICRO 2021: constant + static + dynamic per-component
energy x activity); here the units are the tensor/vector datapaths (J per FLOP per class) and HBM
(J per byte). The parameters are fitted on the steady-state power of kernels run for seconds
(validate/reports/power/fit_power.py, read through NVML on an H200). On that board every compute-bound
kernel runs at the 700 W limit, so its J/FLOP is a censored fit: the least value that puts those
kernels at the limit (the model clips there); J/byte comes from memory-bound kernels below it.

Times priced by perfmodel already run at the board limit: a calibrated spec's tensor-core rates are
its burst rates times the fraction the board sustains at its limit (perfmodel.rates.sustained_fraction;
measured). The clip at P_tdp is where that throttling shows up in energy: a phase whose modelled power
exceeds the board limit draws the limit, no more.

A deployment capped below the board limit (`nvidia-smi -pl`, `power_cap_w`) stretches a phase whose
power P exceeds the cap by (P - P_idle) / (P_cap - P_idle): the power roof of Choi, Dukhan, Liu,
Vuduc, "Algorithmic time, energy, and power on candidate HPC compute building blocks", IPDPS 2014 (the
dynamic energy of the work is fixed, so at a lower power it takes proportionally longer, and pays
idle power for the longer time). At the
board's own limit the stretch is 1 (continuous in the cap). Approximation: real DVFS lowers the
voltage with the clock, so energy per FLOP falls and this overstates the stretch of a capped phase.

Where a spec has no power calibration, `default_power_model` derives the parameters from the
datasheet (each number with its source tag). All functions are pure and broadcast over scenarios.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from hardware.spec import Hardware
from perfmodel.ops import Op, Precision, context_ops, logits_ops, step_ops, token_ops
from workloads.model import ModelSpec

#: Datapath classes of the compute energy: tensor-core 16-bit, tensor-core 8/4-bit, CUDA-core fp32.
DTYPE_CLASSES = ("bf16", "fp8", "fp32")
#: Attention kernels' FLOPs (16-bit tensor cores, plus softmax on the special-function units and the
#: tiles' on-chip traffic) have an energy of their own where calibrated; else the bf16 GEMMs'.
ATTENTION = "attention"
#: P_idle as a fraction of the TDP where no calibration gives it: the board's power while a workload
#: keeps it awake and otherwise idle (host-bound gaps, waits), not its parked idle. [measured] an H200
#: SXM draws 121.3 W of its 700 W launching tiny kernels back to back at full clock, 78.1 W parked
#: (validate/reports/power/h200/power_cases.csv, "launch" and "idle"): 17%.
IDLE_FRACTION_OF_TDP = 0.17
#: Fraction of the datasheet dense peak at which a compute-bound kernel alone draws the whole TDP.
#: [measured] the H200's bf16 GEMMs sit at their 700 W limit at 620-670 TFLOP/s sustained of the
#: datasheet's 989.5 (validate/reports/power/h200/report.md): about 0.65.
TDP_AT_PEAK_FRACTION = 0.65
#: HBM energy per byte at the board where no calibration gives it. [measured] 128 pJ/B on an H200
#: (HBM3e; validate/reports/power/h200/report.md), which includes the on-chip path (L2, crossbar,
#: SM load units) a streamed byte also pays; the DRAM access and I/O alone are ~3.9 pJ/bit on HBM2
#: (O'Connor et al., "Fine-Grained DRAM", MICRO 2017).
DEFAULT_J_PER_HBM_BYTE = 128e-12


@dataclass(frozen=True)
class PowerModel:
    """Board power parameters of one device (SI): idle W, J per FLOP per datapath class, J per HBM
    byte, the board limit (tdp_w) and the deployment's cap (cap_w <= tdp_w), and where the numbers
    came from ("calibration" or "defaults", with a tag per parameter)."""

    idle_w: float
    joules_per_flop: Mapping[str, float]
    joules_per_hbm_byte: float
    tdp_w: float
    cap_w: float
    source: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "joules_per_flop", dict(self.joules_per_flop))
        object.__setattr__(self, "tags", dict(self.tags))
        if not (np.isfinite(self.tdp_w) and self.tdp_w > self.idle_w >= 0):
            raise ValueError(f"power: board limit {self.tdp_w!r} W must be finite and above the idle power "
                             f"{self.idle_w:.4g} W")
        if not (np.isfinite(self.cap_w) and self.idle_w < self.cap_w <= self.tdp_w):
            raise ValueError(f"power cap: {self.cap_w!r} W must be above the idle power {self.idle_w:.4g} W "
                             f"and at most the board limit {self.tdp_w:g} W")
        for dtype in DTYPE_CLASSES:
            joules = self.joules_per_flop.get(dtype, np.nan)
            if not (np.isfinite(joules) and joules > 0):
                raise ValueError(f"joules_per_flop.{dtype}: {joules!r} must be a positive finite number")
        if not (np.isfinite(self.joules_per_hbm_byte) and self.joules_per_hbm_byte > 0):
            raise ValueError(f"joules_per_hbm_byte: {self.joules_per_hbm_byte!r} must be a positive finite number")


def default_power_model(hw: Hardware, cap_w: float | None = None) -> PowerModel:
    """Datasheet-derived parameters for a spec without a power calibration: idle =
    IDLE_FRACTION_OF_TDP x TDP; J/FLOP of class c = (TDP - idle) / (TDP_AT_PEAK_FRACTION x datasheet
    dense peak of c), i.e. a compute-bound kernel alone reaches the TDP at the fraction of peak the
    H200 sustains at its limit; J/byte = DEFAULT_J_PER_HBM_BYTE."""
    tdp = hw.power_w
    idle = IDLE_FRACTION_OF_TDP * tdp
    per_flop = {c: (tdp - idle) / (TDP_AT_PEAK_FRACTION * hw.peak_flops_per_s(c)) for c in DTYPE_CLASSES}
    tags = {"idle_w": f"{IDLE_FRACTION_OF_TDP:.0%} of TDP (H200 measured awake idle 121.3 W of 700 W)",
            "joules_per_flop": f"TDP reached at {TDP_AT_PEAK_FRACTION:.0%} of the datasheet peak "
                               "(H200 measured bf16 GEMMs at the limit)",
            "joules_per_hbm_byte": "H200 measured 128 pJ/B",
            "cap_w": "spec power (datasheet TDP)" if cap_w is None else "user power cap"}
    return PowerModel(idle, per_flop, DEFAULT_J_PER_HBM_BYTE, tdp, tdp if cap_w is None else cap_w, "defaults", tags)


def power_model(hw: Hardware, cap_w: float | None = None) -> PowerModel:
    """The spec's calibrated power model where its calibration has one (classes it did not measure
    keep the defaults), else `default_power_model`. `cap_w` caps a deployment below its TDP."""
    if cap_w is not None and not (np.isfinite(cap_w) and 0 < cap_w <= hw.power_w):
        raise ValueError(f"power cap: {cap_w!r} W must be above 0 and at most the board's {hw.power_w:g} W")
    cal = hw.calibration
    fallback = default_power_model(hw, cap_w)
    if cal is None or cal.idle_power_w <= 0 or not cal.joules_per_flop:
        return fallback
    source = cal.source or "measured"
    return PowerModel(cal.idle_power_w, {**fallback.joules_per_flop, **cal.joules_per_flop},
                      cal.joules_per_hbm_byte or fallback.joules_per_hbm_byte, hw.power_w,
                      hw.power_w if cap_w is None else cap_w, "calibration",
                      {"idle_w": source, "joules_per_flop": source, "joules_per_hbm_byte": source,
                       "cap_w": fallback.tags["cap_w"]})


def gemm_class(p: Precision):
    """Datapath class of a precision's GEMMs, by the roofline's rule (perfmodel.roofline
    `_by_gemm_dtype`): 8-bit tensor cores when weights and activations are <= 8 bits, 16-bit for
    16-bit activations, fp32 above. An array of class indices into DTYPE_CLASSES."""
    w, a = np.asarray(p.w_bits), np.asarray(p.a_bits)
    return np.where((w <= 8) & (a <= 8), 1, np.where(a <= 16, 0, 2))


def op_dynamic_energy_j(op: Op, p: Precision, pm: PowerModel):
    """count x (e_c FLOPs + e_B HBM bytes) of one op: GEMMs (dense and MoE experts) on their
    precision's tensor-core class, attention at its own class (ATTENTION; fp32 above 16-bit activations),
    everything else on CUDA cores (fp32); a collective's bytes cross the link, not HBM (its energy is
    the link's, not modelled), so it counts nothing."""
    if op.kind == "comm":
        return 0.0
    e = np.array([pm.joules_per_flop[c] for c in DTYPE_CLASSES])
    if op.kind in ("matmul", "moe"):
        per_flop = e[gemm_class(p)]
    elif op.kind == "attention":
        per_flop = np.where(np.asarray(p.a_bits) <= 16, pm.joules_per_flop.get(ATTENTION, e[0]), e[2])
    else:
        per_flop = e[2]
    return op.count * (np.asarray(op.flops, dtype=float) * per_flop + np.asarray(op.bytes, dtype=float)
                       * pm.joules_per_hbm_byte)


def ops_dynamic_energy_j(ops: list[Op], p: Precision, pm: PowerModel):
    """Sum of `op_dynamic_energy_j` over a step's ops (J per device)."""
    return sum((op_dynamic_energy_j(op, p, pm) for op in ops), 0.0)


def board_power_w(time_s, dynamic_j, pm: PowerModel):
    """Board power of a phase run in `time_s` at the board's own limit (W): idle plus its dynamic
    energy over its time, clipped at the limit (the throttled clock the sustained rates already price)."""
    t = np.asarray(time_s, dtype=float)
    return np.minimum(pm.idle_w + np.asarray(dynamic_j) / t, pm.tdp_w)


def capped_phase(time_s, dynamic_j, pm: PowerModel) -> tuple:
    """(time, board power, energy) of a phase on one device under the deployment's cap.

    Its power at the board's own limit P (`board_power_w`) carries dynamic energy (P - P_idle) T;
    where P exceeds the cap, the phase stretches to T (P - P_idle) / (P_cap - P_idle) so that the
    same dynamic energy fits under the cap (the power roof: Choi et al., IPDPS 2014), and pays idle
    power for the longer time. Unchanged at the board's own limit."""
    t = np.asarray(time_s, dtype=float)
    power = board_power_w(t, dynamic_j, pm)
    dynamic = (power - pm.idle_w) * t
    capped = t * np.maximum(1.0, (power - pm.idle_w) / (pm.cap_w - pm.idle_w))
    energy = pm.idle_w * capped + dynamic
    return capped, energy / capped, energy


def step_dynamic_energy_j(model: ModelSpec, hw: Hardware, *, seqs, new_tokens, past, p: Precision, tp=1,
                          sparse_budget=0, logits_tokens=None, engine="torch-compile", pm: PowerModel | None = None):
    """Dynamic energy (J per device) of one forward step: the ops `perfmodel.steps.step_time` prices
    (ops.step_ops with the same arguments)."""
    pm = pm or power_model(hw)
    return ops_dynamic_energy_j(step_ops(model, seqs=seqs, new_tokens=new_tokens, past=past, p=p, tp=tp,
                                         sparse_budget=sparse_budget, logits_tokens=logits_tokens,
                                         engine=engine), p, pm)


def mean_decode_dynamic_energy_j(model: ModelSpec, hw: Hardware, *, seqs, past_first, past_last, p: Precision,
                                 tp=1, sparse_budget=0, engine="torch-compile", pm: PowerModel | None = None):
    """Mean dynamic energy (J per device) of a decode step over contexts past_first..past_last, the
    ops `perfmodel.steps.mean_decode_step` prices: token and logits ops once, the context ops' FLOPs
    and bytes being affine in the context, their mean is the mean of the two ends (exact)."""
    pm = pm or power_model(hw)
    before, after = token_ops(model, tokens=seqs * 1.0, p=p, tp=tp, engine=engine, phase="decode")
    fixed = ops_dynamic_energy_j(before + after + logits_ops(model, logits_tokens=seqs, p=p, tp=tp, engine=engine),
                                 p, pm)
    ends = [ops_dynamic_energy_j(context_ops(model, seqs=seqs, new_tokens=1.0, past=past, p=p, tp=tp,
                                             sparse_budget=sparse_budget, engine=engine), p, pm)
            for past in (past_first, past_last)]
    return fixed + (ends[0] + ends[1]) / 2


def prediction_energy(prediction, power_cap_w: float | None = None) -> dict:
    """Energy and power of a `perfmodel.predict` Prediction's requests (arrays over its scenarios).

    Per device: prefill energy = phase_energy_j(ttft, prefill dynamic energy); one decode step's
    likewise with tpot (`capped_phase`); the batch over all `tp` devices = tp x (E_prefill + (gen - 1) x E_decode), the
    step count of e2e_s. Returns energy_j (the whole batch), energy_per_request_j (per prompt),
    joules_per_token (per generated token, evaluate()'s token count), avg_power_w (per device over
    the request), prefill_power_w and decode_power_w (per device, under the cap), and the times
    under the cap: ttft_capped_s, tpot_capped_s, e2e_capped_s (equal to the uncapped ones at the
    board's own limit)."""
    from perfmodel.predict import precision

    model, hw, sc, c = prediction.model, prediction.hardware, prediction.scenario, prediction.columns
    engine = prediction.engine or "torch-compile"
    pm = power_model(hw, power_cap_w)
    p = precision(sc)
    decode_seqs = sc.batch * sc.samples
    pre_j = step_dynamic_energy_j(model, hw, seqs=sc.batch, new_tokens=sc.prompt, past=0.0, p=p, tp=sc.tp,
                                  logits_tokens=sc.batch, engine=engine, pm=pm)
    dec_j = mean_decode_dynamic_energy_j(model, hw, seqs=decode_seqs, past_first=sc.prompt,
                                         past_last=sc.prompt + np.maximum(sc.gen - 2, 0), p=p, tp=sc.tp,
                                         sparse_budget=sc.sparse_budget, engine=engine, pm=pm)
    shape = (-1,)
    pre_j, dec_j = (np.broadcast_to(x, sc.shape).reshape(shape) if np.ndim(x) else np.full(max(sc.size, 1), x)
                    for x in (pre_j, dec_j))
    gen, tp, batch, samples = c["gen"], c["tp"], c["batch"], c["samples"]
    ttft_cap, prefill_w, prefill_j = capped_phase(c["ttft_s"], pre_j, pm)
    tpot_cap, decode_w, decode_j = capped_phase(c["tpot_s"], dec_j, pm)
    energy = tp * (prefill_j + (gen - 1) * decode_j)
    e2e_cap = ttft_cap + (gen - 1) * tpot_cap
    return {"energy_j": energy, "energy_per_request_j": energy / batch,
            "joules_per_token": energy / (batch * samples * gen), "avg_power_w": energy / tp / e2e_cap,
            "prefill_power_w": prefill_w, "decode_power_w": decode_w,
            "ttft_capped_s": ttft_cap, "tpot_capped_s": tpot_cap, "e2e_capped_s": e2e_cap}
