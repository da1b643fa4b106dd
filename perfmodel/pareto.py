"""The Pareto front: one exact implementation every module that ranks configurations calls
(`perfmodel.sweep`'s fronts, the app's planner charts, `solvers.tts`' cost-accuracy frontier)."""
from __future__ import annotations

import numpy as np


def pareto_mask(points, senses) -> np.ndarray:
    """Rows of `points` (n x d) not dominated by any other row, exactly.

    Row a dominates b when a is at least as good in every objective and better in one ("max" larger,
    "min" smaller); equal rows do not dominate each other, so both stay. Rows with a NaN or infinite
    objective cannot be compared and are left out. d = 2 is an O(n log n) sort-and-sweep; higher d
    filters in lexicographic order against the front so far (Kung, Luccio & Preparata 1975 give the
    idea: a dominator always sorts lexicographically before what it dominates).
    """
    x = np.asarray(points, dtype=float)
    if x.ndim != 2 or x.shape[1] != len(senses) or not senses:
        raise ValueError(f"pareto: points of shape {x.shape} do not match {len(senses)} objective(s)")
    # minimised from here; columns kept contiguous: numpy reduces a (n, 2) array's columns slowly
    cols = [-x[:, j] if s == "max" else x[:, j].copy() for j, s in enumerate(senses)]
    finite = np.logical_and.reduce([np.isfinite(c) for c in cols])
    mask = np.zeros(len(x), dtype=bool)
    candidates = np.flatnonzero(finite)
    if len(cols) > 1 and len(candidates) > 64:
        live = [c[candidates] for c in cols]
        candidates = candidates[~_dominated_cols(live, _anchors(live))]
    sub = np.column_stack([c[candidates] for c in cols])
    if len(sub):
        kept = sub[:, 0] == sub[:, 0].min() if x.shape[1] == 1 else (
            _front_2d(sub) if x.shape[1] == 2 else _front_nd(sub))
        mask[candidates[kept]] = True
    return mask


def _anchors(cols: list[np.ndarray], n: int = 8) -> np.ndarray:
    """A few strong rows to drop most dominated rows with before the exact pass: the minimisers of
    weighted sums of the range-scaled objectives (axis weights and random positive ones). Dropping rows
    that any row dominates is exact whatever the anchors: a dropped row's dominator, or one that
    dominates it in turn, survives, and dominance is transitive. Returns anchors x objectives."""
    d = len(cols)
    scaled = [(c - c.min()) / (np.ptp(c) or 1.0) for c in cols]
    weights = np.vstack([np.eye(d), np.random.default_rng(0).random((n, d)) + 0.05])
    picks = sorted({int(np.argmin(sum(w[j] * scaled[j] for j in range(d)))) for w in weights})
    return np.array([[c[i] for c in cols] for i in picks])


def _dominated_cols(cols: list[np.ndarray], anchors: np.ndarray) -> np.ndarray:
    """Rows (given as objective columns) that some anchor dominates."""
    out = np.zeros(len(cols[0]), dtype=bool)
    for a in anchors:
        no_worse = np.logical_and.reduce([a[j] <= c for j, c in enumerate(cols)])
        better = np.logical_or.reduce([a[j] < c for j, c in enumerate(cols)])
        out |= no_worse & better
    return out


def _front_2d(x: np.ndarray) -> np.ndarray:
    """Sort by (f1, f2); a row is on the front when its f2 is the least of its f1-tie group and
    strictly below every f2 seen at smaller f1."""
    order = np.lexsort((x[:, 1], x[:, 0]))
    a, b = x[order, 0], x[order, 1]
    new_group = np.r_[True, a[1:] != a[:-1]]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(a)), 0))
    best_before = np.r_[np.inf, np.minimum.accumulate(b)][group_start]
    keep = (b == b[group_start]) & (b < best_before)
    mask = np.zeros(len(a), dtype=bool)
    mask[order] = keep
    return mask


def _front_nd(x: np.ndarray, block: int = 512) -> np.ndarray:
    """Blocks of rows in lexicographic order; a row survives if no front row of earlier blocks and no
    row of its own block dominates it (a dominated dominator is itself dominated by a front row)."""
    order = np.lexsort(x.T[::-1])
    xs = x[order]
    keep = np.zeros(len(xs), dtype=bool)
    front = np.empty((0, x.shape[1]))
    for lo in range(0, len(xs), block):
        rows = xs[lo:lo + block]
        ok = ~(_dominated_by(rows, front) | _dominated_by(rows, rows))
        keep[lo:lo + block] = ok
        front = np.vstack([front, rows[ok]])
    mask = np.zeros(len(xs), dtype=bool)
    mask[order] = keep
    return mask


def _dominated_by(rows: np.ndarray, others: np.ndarray, cells: int = 1 << 21) -> np.ndarray:
    """For each row, whether any of `others` dominates it. Loops over objectives on rows x others
    matrices (numpy reduces slowly over a short last axis); slices of `others` bound the memory."""
    out = np.zeros(len(rows), dtype=bool)
    step = max(1, cells // max(1, len(rows)))
    for lo in range(0, len(others), step):
        o = others[lo:lo + step]
        no_worse = np.ones((len(rows), len(o)), dtype=bool)
        better = np.zeros((len(rows), len(o)), dtype=bool)
        for j in range(rows.shape[1]):
            mine, theirs = rows[:, j, None], o[None, :, j]
            no_worse &= theirs <= mine
            better |= theirs < mine
        out |= np.any(no_worse & better, axis=1)
    return out
