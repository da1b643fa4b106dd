"""Closed-form bit allocation (BAQ, arXiv 2506.05664): clipped water-filling with one multiplier.

Minimise sum_j n_j c_j 2^(-theta R_j) s.t. sum_j n_j R_j <= B, rmin_j <= R_j <= rmax_j. The
Lagrangian's stationarity gives, for every group not at a bound, the same loss per weight

    c_j 2^(-theta R_j) = l*        (the equal-loss structure; multiplier lambda = theta ln2 l*)

so R_j = clip(a_j + u, rmin_j, rmax_j) with a_j = log2(c_j) / theta and one water level
u = -log2(l*) / theta. The budget sum_j n_j R_j(u) is continuous, piecewise linear and increasing
in u; its root is found exactly (to rounding) by safeguarded Newton steps on that piecewise-linear
function: each step lands on the root of the current linear piece, a bracket keeps it honest.
Without bounds this is R_j = Rbar + log2(c_j / GM(c)) / theta and the loss ratio to uniform is
GM(c) / AM(c). Ties (groups sharing a width) merge exactly: one group with sum n and mean c.
"""
from __future__ import annotations

import math
import time

import numpy as np

from solvers.bits_types import BitAllocation, BitGroups, InfeasibleBudgetError, wsum


def baq_unbounded(coef, params, avg_bits: float, theta: float = 2.0) -> np.ndarray:
    """Widths without bounds: R_j = Rbar + log2(c_j / GM_n(c)) / theta (GM weighted by n)."""
    c, n = np.asarray(coef, dtype=float), np.asarray(params, dtype=float)
    log_gm = wsum(n, np.log2(c)) / n.sum()
    return avg_bits + (np.log2(c) - log_gm) / theta


def water_level(a, n, lo, hi, target: float, max_iter: int = 200) -> tuple[float, int]:
    """Root u of sum_j n_j clip(a_j + u, lo_j, hi_j) = target, with n @ lo <= target <= n @ hi.

    Safeguarded Newton on an increasing piecewise-linear function: from u, the slope is the weight
    of the groups not clipped; the step to the root of that line is taken when it stays inside the
    bracket, else the bracket is bisected. Bounds may be scalars (faster) or arrays. Buffers are
    reused across iterations: at a million groups, fresh arrays cost more than the arithmetic."""
    left = lo - float(np.max(a)) if np.ndim(lo) == 0 else float(np.min(lo - a))   # sum there = n @ lo
    right = hi - float(np.min(a)) if np.ndim(hi) == 0 else float(np.max(hi - a))  # sum there = n @ hi
    total = float(n.sum())
    dot = lambda v: wsum(n, v)  # noqa: E731
    x, r, inside = np.empty_like(a), np.empty_like(a), np.empty(a.shape, dtype=bool)
    u = (target - dot(a)) / total                                 # the unbounded optimum's level
    u = min(max(u, left), right)
    tol = 1e-13 * max(abs(target), total)
    for it in range(1, max_iter + 1):
        np.add(a, u, out=x)
        np.clip(x, lo, hi, out=r)
        f = dot(r) - target
        if abs(f) <= tol:
            return u, it
        np.equal(r, x, out=inside)
        slope = dot(inside)
        left, right = (u, right) if f < 0 else (left, u)
        step = u - f / slope if slope > 0 else math.nan
        u_next = step if left < step < right else 0.5 * (left + right)
        if u_next == u or right - left <= 1e-15 * max(1.0, abs(u)):
            return u_next, it
        u = u_next
    return u, max_iter


def solve_closed_form(groups: BitGroups, avg_bits: float) -> BitAllocation:
    """Exact optimum under an average-bit budget and per-group bounds (ties merged)."""
    if not (isinstance(avg_bits, (int, float, np.floating)) and math.isfinite(avg_bits) and avg_bits > 0):
        raise ValueError(f"avg_bits: {avg_bits!r} must be a finite number greater than zero")
    start = time.perf_counter()
    lo, hi = groups.tie_bounds() if groups.tie is not None else (groups.rmin, groups.rmax)
    n, c, reps, index = _merge_ties(groups)
    widths_m, u, iterations = _fill(n, c, lo[reps], hi[reps], avg_bits * groups.total_params, groups.theta,
                                    groups.total_params)
    widths = widths_m if index is None else widths_m[index]
    level = float(np.exp2(-groups.theta * u)) if math.isfinite(u) else 0.0
    loss = groups.total_loss(widths)
    return BitAllocation(
        status="optimal", method="closed_form", widths=widths, groups=groups, objective=loss,
        uniform_loss=groups.uniform_loss(groups.average_bits(widths)), loss_level=level,
        solve_time_s=time.perf_counter() - start,
        stats={"iterations": iterations, "multiplier": groups.theta * math.log(2) * level,
               "dloss_davg_bits": groups.theta * math.log(2) * level * groups.total_params,
               "at_rmin": int(np.count_nonzero(widths <= lo)), "at_rmax": int(np.count_nonzero(widths >= hi))})


def _fill(n, c, lo, hi, budget: float, theta: float, total: float):
    """Widths, water level and iterations for (merged) groups; raises when the budget is too small."""
    floor = wsum(n, lo)
    if budget < floor * (1 - 1e-12):
        raise InfeasibleBudgetError("avg_bits", budget / total, floor / total, "bits")
    if budget >= wsum(n, hi):
        return hi.copy(), math.inf, 0
    if np.all(c > 0):
        a = np.log2(c)
        a /= theta
        lo_s, hi_s = _scalar_if_uniform(lo), _scalar_if_uniform(hi)
        u, it = water_level(a, n, lo_s, hi_s, budget)
        a += u
        return np.clip(a, lo_s, hi_s, out=a), u, it
    live = c > 0
    widths = lo.copy()   # a group without loss keeps its lowest width
    if not np.any(live):
        return widths, math.inf, 0
    a = np.log2(c[live]) / theta
    u, it = water_level(a, n[live], lo[live], hi[live], budget - wsum(n[~live], lo[~live]))
    widths[live] = np.clip(a + u, lo[live], hi[live])
    return widths, u, it


def _scalar_if_uniform(bound: np.ndarray):
    """The bound as a scalar when all groups share it (np.clip is much faster with scalars)."""
    first = bound.flat[0]
    return float(first) if np.all(bound == first) else bound


def _merge_ties(groups: BitGroups):
    """Merged sizes and coefficients, the representative group of each merged group, and the merged
    index of every group (identity without ties)."""
    sets = groups.tie_sets()
    if not sets:
        return groups.params, groups.coef, slice(None), None
    rep = np.arange(groups.size)
    for members in sets:
        rep[members] = members[0]
    reps, index = np.unique(rep, return_inverse=True)
    n = np.bincount(index, weights=groups.params)
    c = np.bincount(index, weights=groups.params * groups.coef) / n
    return n, c, reps, index
