"""Sensitivities for bit allocation from real data: Hessian proxies of every Linear layer's input.

For a Linear layer y = W x, quantizing W to Q changes the output by (W - Q) x; over the calibration
tokens the mean squared change is the layer-wise loss (GPTQ, Frantar et al. 2022, arXiv 2210.17323)

    loss = tr((W - Q) H (W - Q)^T),      H = (1/n) sum_t x_t x_t^T     (GPTQ writes 2/n X X^T)

Keeping only H's diagonal splits it over input columns: l_j = H_jj ||W_:j - Q_:j||^2 (the
"GPTQ-style diagonal"; GPTQ's own per-column error with its sequential compensation is
||W_:j - Q_:j||^2 / U_jj^2, U the Cholesky factor of H^-1, offered as kind="gptq"). From one
round-to-nearest pass at a uniform width Rbar, BAQ (arXiv 2506.05664) fits each group's coefficient
c_j = l_j(Rbar) / n_j * 2^(theta Rbar) for the loss model n_j c_j 2^(-theta R_j) the solvers use.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from validate.quantize import linear_layers, quantize_rtn


@dataclass(frozen=True)
class Hessian:
    """Mean input outer product of one Linear layer over `tokens` calibration tokens (float64)."""

    name: str
    matrix: torch.Tensor
    tokens: int


def collect_hessians(module: nn.Module, batches: Iterable, include=None) -> dict[str, Hessian]:
    """Run `batches` through `module` and accumulate X^T X of every Linear layer's input.

    A batch is a mapping of keyword arguments (e.g. a tokenizer's output) or a tensor / tuple of
    positional arguments. When a dict batch has an "attention_mask" of the input's leading shape,
    padding tokens are left out (they never reach the model's output)."""
    layers = linear_layers(module, include)
    if not layers:
        raise ValueError("module: no nn.Linear layers matched")
    sums = {name: torch.zeros(m.in_features, m.in_features, dtype=torch.float64) for name, m in layers.items()}
    counts = dict.fromkeys(layers, 0)
    mask_box = [None]

    def hook(name):
        def record(_module, inputs, _output):
            x = inputs[0].detach()
            mask = mask_box[0]
            if mask is not None and x.shape[:-1] == mask.shape:
                x = x[mask.bool()]
            x = x.reshape(-1, x.shape[-1]).to(torch.float64)
            sums[name] += x.T @ x
            counts[name] += x.shape[0]
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in layers.items()]
    try:
        with torch.no_grad():
            for batch in batches:
                if isinstance(batch, Mapping):   # a dict or a tokenizer's BatchEncoding
                    mask_box[0] = batch.get("attention_mask")
                    module(**batch)
                else:
                    mask_box[0] = None
                    module(*batch) if isinstance(batch, (tuple, list)) else module(batch)
    finally:
        for h in handles:
            h.remove()
    if not any(counts.values()):
        raise ValueError("batches: no calibration tokens reached the Linear layers")
    return {name: Hessian(name, sums[name] / max(counts[name], 1), counts[name]) for name in layers}


def layer_loss(weight: torch.Tensor, qweight: torch.Tensor, hessian: Hessian) -> float:
    """tr((W - Q) H (W - Q)^T): mean squared output error of the layer over the tokens of H."""
    d = (weight.detach() - qweight.detach()).to(torch.float64)
    return float(((d @ hessian.matrix) * d).sum())


def column_losses(weight: torch.Tensor, qweight: torch.Tensor, hessian: Hessian, kind: str = "diag",
                  damp: float = 0.01) -> np.ndarray:
    """Per-input-column loss: H_jj ||dW_:j||^2 ("diag"), or ||dW_:j||^2 / U_jj^2 ("gptq", with GPTQ's
    dampening of `damp` x the mean diagonal)."""
    d2 = ((weight.detach() - qweight.detach()).to(torch.float64) ** 2).sum(dim=0)
    h = hessian.matrix
    if kind == "diag":
        return (torch.diagonal(h) * d2).numpy()
    if kind == "gptq":
        eye = torch.eye(h.shape[0], dtype=h.dtype)
        damped = h + damp * torch.diagonal(h).mean() * eye
        upper = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(damped)), upper=True)
        return (d2 / torch.diagonal(upper) ** 2).numpy()
    raise ValueError(f"kind: {kind!r} is not 'diag' or 'gptq'")


def sensitivity_table(module: nn.Module, hessians: dict[str, Hessian], avg_bits: float, theta: float = 2.0,
                      per: str = "column", kind: str = "diag"):
    """Loss coefficients ready for the solvers, one row per group (a pandas DataFrame).

    per="column": one group per input column of each layer (n_j = rows), loss from `column_losses`;
    per="layer": one group per layer (n = rows x cols), loss = the full tr(dW H dW^T).
    Columns: name, layer, column, params, coef, rows, cols, loss_at (the measured loss at avg_bits)."""
    import pandas as pd

    if per not in ("column", "layer"):
        raise ValueError(f"per: {per!r} is not 'column' or 'layer'")
    layers = linear_layers(module)
    frames = []
    for name, hess in hessians.items():
        if name not in layers:
            raise ValueError(f"hessians: {name!r} is not a Linear layer of the module")
        w = layers[name].weight
        q = quantize_rtn(w, avg_bits)
        rows, cols = w.shape
        if per == "column":
            loss = column_losses(w, q, hess, kind)
            frames.append(pd.DataFrame({"name": [f"{name}:{j}" for j in range(cols)], "layer": name,
                                        "column": np.arange(cols), "params": float(rows), "loss_at": loss}))
        else:
            frames.append(pd.DataFrame({"name": [name], "layer": name, "column": -1,
                                        "params": float(rows * cols), "loss_at": [layer_loss(w, q, hess)]}))
        frames[-1]["rows"], frames[-1]["cols"] = float(rows), float(cols)
    table = pd.concat(frames, ignore_index=True)
    table["coef"] = table["loss_at"] / table["params"] * 2.0 ** (theta * avg_bits)
    return table[["name", "layer", "column", "params", "coef", "rows", "cols", "loss_at"]]


def output_sensitivity(module: nn.Module, names, widths, run, distance, path=None, quantize=quantize_rtn):
    """End-to-end sensitivity table: the model's output distortion when ONE layer is quantized.

    For every layer in `names` and width in `widths`, that layer alone is rounded (`quantize(weight,
    width)`), `run()` produces the model's output and `distance(output, reference)` scores it against the
    full-precision `run()`. This is ZeroQ's sensitivity (Cai et al., CVPR 2020, arXiv 2001.00281: KL of
    the outputs with layer i alone at k bits) with any output distance, and the HAWQ / MixDQ integer
    programs' objective when summed over layers (REFERENCES.md). The sum assumes the layers' effects
    add up, which holds while the distortion is small; the study report measures how well it holds.

    Why it is needed: a layer-wise loss tr(dW H dW^T) is in the units of that layer's output, and the
    output of an attention query projection reaches the model's output through a softmax while a
    value projection's goes straight into the residual stream, so the layer-wise losses of different
    layers are not comparable (validate/reports/bits/report.md). Within one layer they are.

    `path`: a CSV that receives each (layer, width, distortion) row as it is measured; an existing
    file is resumed (its rows are kept, only the missing pairs run). Returns a DataFrame indexed by
    layer with one column per width."""
    import pandas as pd

    widths = [float(w) for w in widths]
    layers = linear_layers(module)
    missing = [n for n in names if n not in layers]
    if missing:
        raise ValueError(f"names: {missing[0]!r} is not a Linear layer of the module")
    done = {}
    if path is not None and Path(path).exists():
        previous = pd.read_csv(path)
        done = {(str(r.layer), float(r.width)): float(r.distortion) for r in previous.itertuples()}
    pending = any((name, width) not in done for name in names for width in widths)
    with torch.no_grad():
        reference = run() if pending else None      # a fully resumed table needs no forward pass
        for name in names:
            weight = layers[name].weight
            original = None
            for width in widths:
                if (name, width) in done:
                    continue
                if original is None:
                    original = weight.detach().clone()
                try:
                    weight.copy_(quantize(original, width))
                    value = float(distance(run(), reference))
                finally:
                    weight.copy_(original)
                if not np.isfinite(value):
                    raise ValueError(f"distance: {value!r} for layer {name!r} at {width:g} bits is not finite")
                done[(name, width)] = value
                if path is not None:
                    _append_row(path, {"layer": name, "width": width, "distortion": value})
    table = pd.DataFrame([[done[(n, w)] for w in widths] for n in names], index=list(names), columns=widths)
    table.index.name = "layer"
    return table


def _append_row(path, row: dict) -> None:
    """Append one row to a CSV, writing the header when the file is new (a crash loses nothing measured)."""
    path = Path(path)
    new = not path.exists()
    with path.open("a") as handle:
        if new:
            handle.write(",".join(row) + "\n")
        handle.write(",".join(str(v) for v in row.values()) + "\n")
        handle.flush()
