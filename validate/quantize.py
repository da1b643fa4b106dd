"""Round-to-nearest weight quantization with per-column widths, to check bit allocations on real weights.

The usual asymmetric min-max integer grid (as in GPTQ's quantizer, Frantar et al. 2022,
arXiv 2210.17323, and PyTorch's affine quantization), one grid per output row and width: row i's
range [lo_i, hi_i] = [min(min_j w_ij, 0), max(max_j w_ij, 0)] is cut into N_j levels, with
N_j = max(1, round(2^R_j)) for input column j (BAQ's rule for non-integer widths, arXiv 2506.05664;
an integer R gives the usual 2^R levels), and an INTEGER zero point so that 0 is a grid value:

    s_ij = (hi_i - lo_i) / (N_j - 1),   z_ij = round(-lo_i / s_ij),
    q_ij = s_ij * (clamp(round(w_ij / s_ij) + z_ij, 0, N_j - 1) - z_ij).

A column with one level is pruned (q = 0). The scale and zero point are per row in a real kernel
(16-bit scale, the same for every allocation), so they are not counted as bits.

Why the integer zero point matters (found on MiniLM, validate/reports/bits/report.md): with a grid
lo_i + k s that does not contain 0, the bulk of a row's weights (concentrated near 0 on the scale of
s at 3-4 bits) share one rounding offset; FFN-down inputs are GELU outputs with a common positive
mean, so those equal-signed errors add up coherently over the columns. That made the layer loss up
to 17x the integer-grid one and 90% of it lay in H's off-diagonal terms, which no per-column
(diagonal) loss model can see.
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
    lo = torch.clamp(w.min(dim=1, keepdim=True).values, max=0.0)
    hi = torch.clamp(w.max(dim=1, keepdim=True).values, min=0.0)
    n = torch.as_tensor(levels, dtype=torch.float64)[None, :]
    step = (hi - lo) / torch.clamp(n - 1, min=1.0)
    step = torch.where(step > 0, step, torch.ones_like(step))   # an all-zero row: any step is exact
    zero = torch.round(-lo / step)
    q = step * (torch.clamp(torch.round(w / step) + zero, torch.zeros_like(n), n - 1) - zero)
    q = torch.where(n == 1, torch.zeros_like(q), q)
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
