"""Effective rates of a device: the one place that chooses "calibrated (measured) rate, else datasheet".

A calibrated spec (`hardware.spec.Calibration`, fitted by `validate.calibrate`) carries rates measured
on the device; a datasheet spec only peaks. Every rate here returns the measured one when the spec is
calibrated (and `calibrated` is not switched off) and the datasheet number otherwise. The GEMM rate is
per dtype: the dtype a model's precisions select (`perfmodel.roofline.matmul_dtype_rate`) picks it, so
a bf16 model runs at the bf16 rate, never at the fastest dtype the device lists.
"""
from __future__ import annotations

import dataclasses

from hardware.spec import Hardware


def _calibration(hw: Hardware, calibrated: bool):
    return hw.calibration if calibrated else None


def matmul_flops_per_s(hw: Hardware, dtype: str, calibrated: bool = True) -> float:
    """Dense GEMM FLOP/s for `dtype`: the calibrated rate when measured for that dtype (times the
    fraction the board sustains at its power limit, `sustained_fraction`), else the datasheet peak
    (`Hardware.peak_flops_per_s`, which falls back across dtypes as its docstring says)."""
    cal = _calibration(hw, calibrated)
    measured = cal.matmul_flops_per_s.get(dtype) if cal else None
    return measured * sustained_fraction(hw, dtype) if measured else hw.peak_flops_per_s(dtype)


#: The power class of each compute dtype: the datapath whose burst rate the power limit throttles
#: (16-bit tensor cores, 8/4-bit tensor cores, CUDA-core fp32).
POWER_CLASS = {"bf16": "bf16", "fp16": "bf16", "fp8": "fp8", "int8": "fp8", "fp4": "fp8", "int4": "fp8",
               "fp32": "fp32", "tf32": "fp32"}


def sustained_fraction(hw: Hardware, dtype: str) -> float:
    """Fraction of the calibrated (burst) rate of `dtype`'s datapath that a compute-bound kernel keeps
    under continuous load at the board's power limit (Calibration.sustained_fraction, measured by
    validate/reports/power: an H200's bf16 and fp8 GEMMs of every shape drop to 0.89-0.91 of their
    burst rate within ~0.2 s as the SM clock falls from 1980 to ~1450 MHz at 700 W; fp32 GEMMs,
    GEMVs and copies stay at full clock). 1 where not calibrated, and for `at_burst` specs.

    Why here: the calibration's kernels are timed in short bursts (graph replays of a few ms each),
    while a deployment under load, a compiled model's steps and a diffusion model's denoising loop
    run for seconds at the limit; every step prediction prices the board as it runs under load."""
    cal = hw.calibration
    return float(cal.sustained_fraction.get(POWER_CLASS.get(dtype, dtype), 1.0)) if cal is not None else 1.0


_BURST: dict[int, tuple[Hardware, Hardware]] = {}


def at_burst(hw: Hardware) -> Hardware:
    """`hw` as an isolated kernel timed in a short burst sees it: the calibration without its
    sustained fractions (the validation of single kernels and the fits on them use this)."""
    cal = hw.calibration
    if cal is None or not cal.sustained_fraction:
        return hw
    hit = _BURST.get(id(hw))
    if hit is None or hit[0] is not hw:
        hit = _BURST[id(hw)] = (hw, dataclasses.replace(hw, calibration=dataclasses.replace(cal, sustained_fraction={})))
    return hit[1]


def memory_bytes_per_s(hw: Hardware, calibrated: bool = True) -> float:
    """Device-memory (HBM) bandwidth: the measured streaming rate when calibrated, else the datasheet."""
    cal = _calibration(hw, calibrated)
    return cal.memory_bytes_per_s if cal else hw.hbm_bytes_per_s


def host_to_device_bytes_per_s(hw: Hardware, calibrated: bool = True) -> float:
    """Host-to-device copy bandwidth from pinned host memory: measured when calibrated (and nonzero),
    else the host link's datasheet peak."""
    cal = _calibration(hw, calibrated)
    return (cal.host_to_device_bytes_per_s if cal else 0.0) or hw.host_link_bytes_per_s


def device_to_host_bytes_per_s(hw: Hardware, calibrated: bool = True) -> float:
    """Device-to-host copy bandwidth into pinned host memory: measured when calibrated (and nonzero),
    else the link's datasheet peak (PCIe is symmetric)."""
    cal = _calibration(hw, calibrated)
    return (cal.device_to_host_bytes_per_s if cal else 0.0) or hw.host_link_bytes_per_s


def host_link_latency_s(hw: Hardware, calibrated: bool = True) -> float:
    """Fixed cost of one host-link copy: measured when calibrated (and nonzero), else the datasheet."""
    cal = _calibration(hw, calibrated)
    return (cal.transfer_latency_s if cal else 0.0) or hw.host_link_latency_s


_PAGEABLE_FIELDS = {"h2d": "host_to_device_pageable_bytes_per_s", "d2h": "device_to_host_pageable_bytes_per_s"}


def host_link_bytes_per_s(hw: Hardware, direction: str = "h2d", pinned: bool = True,
                          calibrated: bool = True) -> float:
    """Host-link rate of one direction ("h2d" or "d2h") from pinned or pageable host memory: the rate
    `validate.calibrate` measured for that direction and memory kind, else the link's datasheet peak
    (a datasheet has one number for both kinds)."""
    if direction not in _PAGEABLE_FIELDS:
        raise ValueError(f"direction: {direction!r} must be 'h2d' or 'd2h'")
    if pinned:
        return host_to_device_bytes_per_s(hw, calibrated) if direction == "h2d" \
            else device_to_host_bytes_per_s(hw, calibrated)
    cal = _calibration(hw, calibrated)
    return (getattr(cal, _PAGEABLE_FIELDS[direction]) if cal else 0.0) or hw.host_link_bytes_per_s
