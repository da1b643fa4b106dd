"""Bit allocation for diffusion transformers: the bits solvers (solvers/bits*.py) on DiT layers.

Two published recipes map onto the existing solvers:

- MixDQ (Zhao et al. 2024, arXiv 2405.17873): per-layer sensitivities measured by quantizing one
  layer at a time, then an integer program choosing each layer's width under a memory budget.
  Here: `allocate_dit_bits(..., loss_table=...)` -> solvers.bits_integer.solve_milp with the
  measured table (groups x candidate widths) replacing the 2^(-theta R) loss model.
- ViDiT-Q's metric-decoupled mixed precision (Zhao et al. 2024, arXiv 2406.02540): sensitivities
  measured per quality metric (e.g. content vs temporal), one minimized and the others capped.
  Here: `loss_caps=((table_b, cap_b), ...)`: solve_milp's epsilon-constraint.

The groups are the block linears of the transformer, one per layer instance (`dit_layer_table`);
their bytes come from each candidate format. The chosen widths turn into perfmodel.dit per-layer
precisions (`layer_precisions`) so `predict_dit` prices the mixed model's step and memory.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from perfmodel.ops import Precision
from solvers.bits import BitAllocation, BitGroups, Budgets
from workloads.dit import DiTPipeline


def block_linears(pipe: DiTPipeline) -> dict[str, list[tuple[str, int, int]]]:
    """(name, rows, cols) of the linears of one block of each kind (modulation linears included:
    they hold 6 D^2 per joint-block stream). Mirrors perfmodel.dit's block ops."""
    s = pipe.dit
    D, F = s.d_model, s.d_ff
    stream = lambda p, mod: [(p + "mod", mod * D, D), (p + "qkv", 3 * D, D), (p + "out", D, D),  # noqa: E731
                             (p + "fc1", F, D), (p + "fc2", D, F)]
    return {"joint": stream("img_", 6) + stream("txt_", 6),
            "dual": stream("img_", 9) + stream("txt_", 6) + [("img_qkv2", 3 * D, D), ("img_out2", D, D)],
            "single": [("mod", 3 * D, D), ("lin1", 3 * D + F, D), ("lin2", D, D + F)],
            "cross": [("qkv", 3 * D, D), ("out", D, D), ("cross_q", D, D), ("cross_kv", 2 * D, D),
                      ("cross_out", D, D), ("fc1", F, D), ("fc2", D, F)],
            "cogvideox": [("mod", 12 * D, s.time_embed_dim), ("qkv", 3 * D, D), ("out", D, D), ("fc1", F, D),
                          ("fc2", D, F)]}


def block_order(pipe: DiTPipeline) -> list[str]:
    """The block kind of each layer, in execution order (perfmodel.dit's layer groups)."""
    s = pipe.dit
    return (["dual"] * s.dual_attention_layers + ["joint"] * (s.joint_layers - s.dual_attention_layers) +
            ["single"] * s.single_layers + ["cross"] * s.cross_layers + ["cogvideox"] * s.cogvideox_layers)


def dit_layer_table(pipe: DiTPipeline) -> pd.DataFrame:
    """One row per block linear instance: name ("blocks.{i}.{linear}"), layer (block index), kind,
    rows, cols, params."""
    table = block_linears(pipe)
    rows = [{"name": f"blocks.{i}.{name}", "layer": i, "kind": kind, "rows": r, "cols": c, "params": float(r * c)}
            for i, kind in enumerate(block_order(pipe)) for name, r, c in table[kind]]
    return pd.DataFrame(rows)


def allocate_dit_bits(pipe: DiTPipeline, candidates, *, coef=None, loss_table=None, avg_bits: float | None = None,
                      memory_budget_bytes: float | None = None, loss_caps=(), theta: float = 2.0) -> BitAllocation:
    """Widths for every block linear from `candidates` (widths or format names), by the MILP.

    coef: sensitivity per linear (loss per weight at zero bits, the 2^(-theta R) model), or
    loss_table: measured loss per linear and candidate (MixDQ); loss_caps: (table, cap) pairs of
    other metrics kept at or below their caps (ViDiT-Q's decoupled metrics). Budgets: average bits
    and/or bytes of the block weights."""
    from solvers.bits_integer import solve_milp

    layers = dit_layer_table(pipe)
    if coef is None and loss_table is None:
        raise ValueError("coef: give per-layer sensitivities (coef) or a measured loss_table")
    coef = np.ones(len(layers)) if coef is None else np.asarray(coef, dtype=float)
    if coef.shape != (len(layers),):
        raise ValueError(f"coef: expected {len(layers)} values (one per block linear of {pipe.name}), got {coef.shape}")
    groups = BitGroups(params=layers["params"].to_numpy(), coef=coef, theta=theta, names=tuple(layers["name"]),
                       layer=layers["layer"].to_numpy(dtype=np.int64))
    return solve_milp(groups, candidates, Budgets(avg_bits, memory_budget_bytes), loss_table=loss_table,
                      loss_caps=loss_caps)


def layer_precisions(pipe: DiTPipeline, allocation: BitAllocation, a_bits: float = 8) -> tuple:
    """perfmodel.dit layer groups ((kind, 1, Precision), ...) from an allocation: each block's
    weight bits are its linears' parameter-weighted mean width (the bytes a block streams),
    activations at `a_bits` where every linear of the block is 8-bit or less, else 16."""
    frame = dit_layer_table(pipe).assign(width=allocation.widths)
    groups = []
    for (layer, kind), block in frame.groupby(["layer", "kind"], sort=True):
        w = float(np.average(block["width"], weights=block["params"]))
        a = a_bits if block["width"].max() <= 8 else 16
        groups.append((kind, 1, Precision(w, a, a)))
    return tuple(groups)
