"""Effective rates of a device: the one place that chooses "calibrated (measured) rate, else datasheet".

A calibrated spec (`hardware.spec.Calibration`, fitted by `validate.calibrate`) carries rates measured
on the device; a datasheet spec only peaks. Every rate here returns the measured one when the spec is
calibrated (and `calibrated` is not switched off) and the datasheet number otherwise. The GEMM rate is
per dtype: the dtype a model's precisions select (`perfmodel.roofline.matmul_dtype_rate`) picks it, so
a bf16 model runs at the bf16 rate, never at the fastest dtype the device lists.
"""
from __future__ import annotations

from hardware.spec import Hardware


def _calibration(hw: Hardware, calibrated: bool):
    return hw.calibration if calibrated else None


def matmul_flops_per_s(hw: Hardware, dtype: str, calibrated: bool = True) -> float:
    """Dense GEMM FLOP/s for `dtype`: the calibrated rate when measured for that dtype, else the
    datasheet peak (`Hardware.peak_flops_per_s`, which falls back across dtypes as its docstring says)."""
    cal = _calibration(hw, calibrated)
    return (cal.matmul_flops_per_s.get(dtype) if cal else None) or hw.peak_flops_per_s(dtype)


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
