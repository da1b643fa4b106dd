"""Roofline time of each op: max(compute, memory) + kernel overhead, reporting the bound.

time = max(FLOPs / rate, bytes / bandwidth) + kernels * overhead (Williams, Waterman & Patterson
2009, "Roofline"; the max form is the lower bound of the JAX scaling book's chapter 1, assuming
perfect overlap of compute and memory inside a kernel).

Uncalibrated (datasheet) specs use peak rates and no overhead. A calibrated spec uses the measured
rates, a per-kernel floor, and wave quantization for GEMMs: the GPU runs output tiles of
tile_m x tile_n on `compute_units` SMs in waves, so a GEMM whose tile count is just over a multiple
of the SM count pays for a whole extra wave; skinny GEMMs with fewer tiles than SMs split the
reduction dimension (split-K) across the idle SMs (NVIDIA, "Matrix Multiplication Background
User's Guide", sections on tile and wave quantization).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hardware.spec import Hardware
from perfmodel import comm
from perfmodel.ops import Op, Precision

BOUNDS = np.array(["compute", "memory", "overhead", "comm"])


@dataclass(frozen=True)
class OpTime:
    """Times of one occurrence of an op (seconds, arrays broadcast over scenarios)."""

    compute_s: object
    memory_s: object
    overhead_s: object
    comm_s: object

    @property
    def time_s(self):
        return np.maximum(self.compute_s, self.memory_s) + self.overhead_s + self.comm_s


def matmul_dtype_rate(hw: Hardware, w_bits, a_bits, calibrated: bool = True):
    """FLOP/s of the GEMM path the precisions select: fp8/int8 tensor cores when both weights and
    activations are 8-bit or less, bf16 for 16-bit activations, fp32 above. Weight-only formats
    (w8a16, w4a16) dequantize inside the kernel at a rate only measurement tells; a calibrated spec
    carries it, a datasheet spec uses the bf16 peak. Calibrated rates win over peaks."""
    table = dict(hw.calibration.matmul_flops_per_s) if (calibrated and hw.calibration) else {}

    def rate(dtype, fallback=None):
        return table.get(dtype) or (table.get(fallback) if fallback else None) or hw.peak_flops_per_s(fallback or dtype)

    w, a = np.asarray(w_bits), np.asarray(a_bits)
    low = (w <= 8) & (a <= 8)
    act_rate = np.where(a <= 16, rate("bf16"), rate("fp32"))
    weight_only = np.where(w <= 4, rate("w4a16", "bf16"), np.where(w <= 8, rate("w8a16", "bf16"), act_rate))
    return np.where(low, rate("fp8"), np.where((w < a) & (a <= 16), weight_only, act_rate))


def wave_efficiency(m, n, k, hw: Hardware):
    """Useful fraction of the tensor-core work a GEMM's tiles occupy (1.0 for a datasheet spec).

    tiles = ceil(m / tm) ceil(n / tn); when tiles < SMs the reduction is split over
    floor(SMs / tiles) slices (split-K); waves = ceil(tiles * splits / SMs). Efficiency =
    m n k / (waves * SMs * tm * tn * k / splits). The m tile shrinks to the next power of two of m
    for skinny GEMMs (libraries pick small tiles for decode shapes).
    """
    cal = hw.calibration
    if cal is None or cal.tile_m <= 1:
        return 1.0
    sms = hw.compute_units
    m = np.maximum(np.asarray(m, dtype=float), 1.0)
    tm = np.minimum(cal.tile_m, np.maximum(16.0, 2.0 ** np.ceil(np.log2(m))))
    tiles = np.ceil(m / tm) * np.ceil(np.maximum(n, 1.0) / cal.tile_n)
    splits = np.clip(np.floor(sms / tiles), 1.0, np.maximum(np.floor(np.asarray(k, float) / 256.0), 1.0))
    waves = np.ceil(tiles * splits / sms)
    return (m * n) / (waves * sms * tm * cal.tile_n / splits)


def op_time(op: Op, hw: Hardware, p: Precision, tp=1) -> OpTime:
    """Compute, memory, overhead and communication time of one occurrence of `op`."""
    cal = hw.calibration
    bandwidth = cal.memory_bytes_per_s if cal else hw.hbm_bytes_per_s
    overhead = op.kernels * cal.kernel_overhead_s if cal else 0.0
    if op.kind == "comm":
        return OpTime(0.0, 0.0, 0.0, comm.allreduce_time_s(op.comm_bytes, tp, hw))
    if op.kind in ("matmul", "moe"):
        rate = matmul_dtype_rate(hw, p.w_bits, p.a_bits) * wave_efficiency(op.m, op.n, op.k, hw)
    elif op.kind == "attention":
        rate = matmul_dtype_rate(hw, 16, 16) * (cal.attention_flops_fraction if cal else 1.0)
    else:
        rate = hw.peak_flops_per_s("fp32")
    return OpTime(op.flops / rate, op.bytes / bandwidth, overhead, 0.0)


def mean_max_affine(u0, u1, v0, v1):
    """Exact mean over t in [0, 1] of max(u(t), v(t)) for affine u, v with endpoint values u0, u1,
    v0, v1. Decode time is affine in context for each op's compute and memory terms, so the mean
    decode step over a generation is exact without stepping through every token."""
    w0, w1 = np.subtract(u0, v0), np.subtract(u1, v1)
    p0, p1 = np.maximum(w0, 0.0), np.maximum(w1, 0.0)
    same_sign = w0 * w1 >= 0
    spread = np.where(same_sign, 1.0, np.abs(w0) + np.abs(w1))
    positive_mean = np.where(same_sign, (p0 + p1) / 2, (p0 ** 2 + p1 ** 2) / (2 * spread))
    return (np.add(v0, v1)) / 2 + positive_mean
