"""Bit allocation: the one entry point `allocate_bits`, and `allocate_within_layers`.

The problem data and result (`BitGroups`, `Budgets`, `BitAllocation`, `InfeasibleBudgetError`) and
the loss model they carry (BAQ, arXiv 2506.05664) live in `solvers.bits_types`; they are importable
from here too, the names users know.

Solvers (each returns a `BitAllocation`):
- `solvers.bits_closed.solve_closed_form`: bit budget + bounds (+ ties), exact water-filling.
- `solvers.bits_convex.solve_convex`: cvxpy, adds memory and decode-latency budgets.
- `solvers.bits_integer.solve_milp` / `round_greedy`: widths or formats from a candidate set.
- `allocate_within_layers`: any of those per layer, each layer keeping its own average (BAQ's scope).
"""
from __future__ import annotations

import time

import numpy as np

from solvers.bits_types import (THETA, TABLE_RANGES, BitAllocation, BitGroups, Budgets, InfeasibleBudgetError,
                                gm_am_ratio, wsum)

__all__ = ["THETA", "TABLE_RANGES", "BitAllocation", "BitGroups", "Budgets", "InfeasibleBudgetError",
           "allocate_bits", "allocate_within_layers", "gm_am_ratio", "wsum"]


def allocate_within_layers(groups: BitGroups, avg_bits, solve) -> BitAllocation:
    """BAQ's own scope (arXiv 2506.05664, and its repo: one allocation per linear layer): every layer
    keeps its own average width and only the groups inside it (e.g. its input columns) trade bits.

    Each layer is an independent problem with its own multiplier, so the result is the optimum under
    the per-layer budgets sum_{j in l} n_j R_j <= Rbar_l sum_{j in l} n_j. The layers' losses are never
    compared with each other, which is what makes this scope safe when layer-wise losses are not in
    common units (a layer's output error does not reach the model's output with the same weight as
    another's; validate/reports/bits/report.md measures how much that matters).

    avg_bits: one width for every layer, or a sequence with one width per layer (in the order of the
    layer codes, e.g. a per-layer allocation's widths: the two-level "per layer, then per column").
    solve: (BitGroups, average) -> BitAllocation for one layer, e.g. `solve_closed_form`, or
    `lambda g, a: round_greedy(g, [2, 3, 4, 8], Budgets(avg_bits=a))` for integer widths."""
    start = time.perf_counter()
    layer_ids = np.unique(groups.layers)
    targets = np.broadcast_to(np.asarray(avg_bits, dtype=float), layer_ids.shape) if np.ndim(avg_bits) == 0 \
        else np.asarray(avg_bits, dtype=float)
    if targets.shape != layer_ids.shape:
        raise ValueError(f"avg_bits: expected one width or {layer_ids.size} (one per layer), got {targets.size}")
    if groups.tie is not None:
        for members in groups.tie_sets():
            if np.unique(groups.layers[members]).size > 1:
                raise ValueError(f"tie: groups {[groups.names[i] for i in members[:4]]} share a width across layers; "
                                 "each layer is solved on its own here")
    widths = np.empty(groups.size)
    objective = uniform = 0.0
    statuses, methods = set(), set()
    for layer, target in zip(layer_ids, targets):
        index = np.flatnonzero(groups.layers == layer)
        part = groups.take(index)
        try:
            result = solve(part, float(target))
        except InfeasibleBudgetError as err:
            raise InfeasibleBudgetError(f"avg_bits of layer {groups.names[index[0]]!r}", err.requested, err.smallest,
                                        "bits") from None
        widths[index] = result.widths
        objective += result.objective
        uniform += result.uniform_loss
        statuses.add(result.status)
        methods.add(result.method)
    status = "optimal" if statuses == {"optimal"} else ", ".join(sorted(statuses))
    return BitAllocation(status=status, method="within_layers:" + "+".join(sorted(methods)), widths=widths,
                         groups=groups, objective=objective, uniform_loss=uniform,
                         solve_time_s=time.perf_counter() - start, stats={"layers": int(layer_ids.size)})


def allocate_bits(sens, avg_bits: float | None = None, *, theta: float = THETA, rmin: float = 0.0,
                  rmax: float = 16.0, hardware=None, model=None, memory_budget_bytes: float | None = None,
                  latency_budget_s: float | None = None, candidates=None, tokens: int = 1,
                  context: int = 0, costs=None, overhead_bits: float | None = None,
                  scope: str = "model", engine=None) -> BitAllocation:
    """Optimal widths for `sens` (a `BitGroups` or a table with params and coef columns).

    Picks the solver: candidates (widths like [2, 3, 4, 8] or format names like ["int4-g128",
    "int8", "fp8", "bf16"]) -> MILP; only a bit budget -> closed form; otherwise cvxpy. Latency
    budgets need `costs` (a `LayerCosts`) or `hardware` plus layer shapes (rows / cols columns);
    `engine` (a perfmodel.engines name or profile; default DEFAULT_ENGINE) prices the rest of the
    decode step when `costs` are built here from `hardware` and `model`.
    """
    from solvers import bits_cost

    groups = sens if isinstance(sens, BitGroups) else BitGroups.from_frame(sens, theta, rmin, rmax)
    budgets = Budgets(avg_bits, memory_budget_bytes, latency_budget_s)
    if scope not in ("model", "layer"):
        raise ValueError(f"scope: {scope!r} is not 'model' or 'layer'")
    if scope == "layer":
        if budgets.avg_bits is None or budgets.memory_bytes is not None or budgets.latency_s is not None:
            raise ValueError("scope: 'layer' takes an average-bit budget only (each layer keeps that average)")
        if candidates is not None:
            from solvers.bits_integer import solve_milp
            result = allocate_within_layers(groups, budgets.avg_bits,
                                            lambda g, a: solve_milp(g, candidates, Budgets(avg_bits=a)))
        else:
            from solvers.bits_closed import solve_closed_form
            result = allocate_within_layers(groups, budgets.avg_bits, solve_closed_form)
        return bits_cost.with_costs(result, costs, overhead_bits) if costs is not None else result
    if costs is None and hardware is not None and not isinstance(sens, BitGroups):
        costs = bits_cost.costs_from_frame(sens, hardware, model=model, tokens=tokens, context=context,
                                           **({} if engine is None else {"engine": engine}))
    if budgets.latency_s is not None and costs is None:
        raise ValueError("latency_budget_s: needs hardware and layer shapes (rows, cols) or a LayerCosts")
    if candidates is not None:
        from solvers.bits_integer import solve_milp
        return solve_milp(groups, candidates, budgets, costs=costs)
    if budgets.memory_bytes is None and budgets.latency_s is None:
        from solvers.bits_closed import solve_closed_form
        result = solve_closed_form(groups, budgets.avg_bits)
        return bits_cost.with_costs(result, costs, overhead_bits) if costs is not None else result
    from solvers.bits_convex import solve_convex
    return solve_convex(groups, budgets, costs=costs, overhead_bits=overhead_bits)
