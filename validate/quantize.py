"""Round-to-nearest weight quantization with per-column widths, to check bit allocations on real weights.

Each output row i gets an asymmetric grid spanning [min_i, max_i] of that row; input column j uses
N_j = max(1, round(2^R_j)) levels of it (BAQ's rule for non-integer widths, arXiv 2506.05664; an
integer R gives the usual 2^R levels), step_ij = (max_i - min_i) / (N_j - 1), and

    q_ij = min_i + step_ij * clamp(round((w_ij - min_i) / step_ij), 0, N_j - 1).

A column with one level takes the row's midpoint. The row range and offset are kept in full
precision (a 16-bit scale and offset per row in a real kernel: the same for every allocation).
"""
from __future__ import annotations

import copy
from typing import Mapping

import numpy as np
import torch
from torch import nn


def levels_of(bits) -> np.ndarray:
    """Quantization levels for widths: max(1, round(2^R))."""
    bits = np.asarray(bits, dtype=float)
    if np.any(~np.isfinite(bits)) or np.any(bits < 0):
        raise ValueError(f"bits: widths must be finite and zero or more, got {bits[~np.isfinite(bits) | (bits < 0)][:3]}")
    return np.maximum(1.0, np.round(np.exp2(bits)))


def quantize_rtn(weight: torch.Tensor, bits) -> torch.Tensor:
    """`weight` (rows x cols) rounded with `bits` per column (a scalar or one per column)."""
    if weight.ndim != 2:
        raise ValueError(f"weight: expected a 2-D matrix, got shape {tuple(weight.shape)}")
    cols = weight.shape[1]
    levels = levels_of(bits)
    if levels.ndim == 0:
        levels = np.full(cols, float(levels))
    if levels.shape != (cols,):
        raise ValueError(f"bits: expected one width per column ({cols}), got {levels.shape[0]}")
    w = weight.detach().to(torch.float64)
    lo, hi = w.min(dim=1, keepdim=True).values, w.max(dim=1, keepdim=True).values
    n = torch.as_tensor(levels, dtype=torch.float64)[None, :]
    step = (hi - lo) / torch.clamp(n - 1, min=1.0)
    step = torch.where(step > 0, step, torch.ones_like(step))   # constant rows: any step is exact
    q = lo + step * torch.clamp(torch.round((w - lo) / step), torch.zeros_like(n), n - 1)
    q = torch.where(n == 1, (lo + hi) / 2, q)
    return q.to(weight.dtype)


def quantize_fp8(weight: torch.Tensor) -> torch.Tensor:
    """e4m3 with one absmax scale per output row (the common fp8 weight layout)."""
    w = weight.detach().to(torch.float32)
    scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-30) / 448.0   # 448 = largest e4m3 value
    return ((w / scale).to(torch.float8_e4m3fn).to(torch.float32) * scale).to(weight.dtype)


def linear_layers(module: nn.Module, include=None) -> dict[str, nn.Linear]:
    """Named nn.Linear submodules, optionally only those whose name contains one of `include`."""
    out = {name: m for name, m in module.named_modules() if isinstance(m, nn.Linear)}
    if include:
        out = {k: v for k, v in out.items() if any(s in k for s in include)}
    return out


def quantize_model(module: nn.Module, bits: Mapping[str, object], inplace: bool = False) -> nn.Module:
    """A copy of `module` (or the module itself) with the named Linear layers' weights rounded to
    `bits[name]` (a width, one width per input column, or "fp8")."""
    target = module if inplace else copy.deepcopy(module)
    layers = linear_layers(target)
    unknown = [k for k in bits if k not in layers]
    if unknown:
        raise ValueError(f"bits: {unknown[0]!r} is not a Linear layer of the model (have e.g. {next(iter(layers), None)!r})")
    with torch.no_grad():
        for name, width in bits.items():
            w = layers[name].weight
            w.copy_(quantize_fp8(w) if isinstance(width, str) and width == "fp8" else quantize_rtn(w, width))
    return target
