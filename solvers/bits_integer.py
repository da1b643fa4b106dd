"""Discrete widths: each group picks one option from a candidate set (widths {2, 3, 4, 8} or formats
int4-g128 / int8 / fp8 / bf16), as a mixed-integer linear program, plus a fast greedy rounding.

MILP (the HAWQ-V3 / MixDQ formulation, with the roofline's latency): binaries x_jk (group j takes
option k), continuous t_L (time of layer L):

    minimize    sum_jk loss_jk x_jk,            loss_jk = n_j c_j 2^(-theta loss_bits_k)
    subject to  sum_k x_jk = 1                                        (one option per group)
                sum_jk n_j bits_k x_jk <= Rbar sum_j n_j              (average nominal width)
                sum_jk n_j stored_bits_k x_jk / 8 <= M                (bytes with scales)
                t_L >= compute_L,  t_L >= base_L + s_L sum_{j in L, k} n_j eff_bits_k x_jk
                fixed + sum_L (t_L + overhead_L) <= T                  (decode-step latency)
                x_ik = x_jk for tied groups i, j;  x_jk = 0 outside [rmin_j, rmax_j]
                sum_jk other_jk x_jk <= cap                 (optional caps on other measured losses)

The caps make a second objective a constraint (the epsilon-constraint method for two objectives,
Haimes, Lasdon & Wismer 1971): e.g. minimize a model's end-to-end distortion while the summed
layer-wise loss stays at or below uniform widths' (validate/reports/bits).

solved by HiGHS through `scipy.optimize.milp`. The greedy rounding starts every group at its cheapest
option and takes upgrades in order of loss saved per unit of budget used while all budgets hold;
its gap to the MILP optimum is reported by `rounding_gap`.
"""
from __future__ import annotations

import heapq
import math
import time

import numpy as np
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, milp

from solvers.bits_types import BitAllocation, BitGroups, Budgets, InfeasibleBudgetError
from solvers.bits_cost import LayerCosts, WeightFormat, bytes_of, formats_from

MILP_OPTIONS = {"mip_rel_gap": 1e-9, "time_limit": 600.0}


class _Options:
    """Per-group option tables: nominal bits, stored bits, speed-adjusted bits and loss (G x K)."""

    def __init__(self, groups: BitGroups, formats: tuple[WeightFormat, ...], loss_table=None):
        self.formats = formats
        bits = np.array([f.bits for f in formats])
        lo, hi = groups.tie_bounds()
        self.allowed = (bits[None, :] >= lo[:, None] - 1e-9) & (bits[None, :] <= hi[:, None] + 1e-9)
        if not np.all(self.allowed.any(axis=1)):
            j = int(np.flatnonzero(~self.allowed.any(axis=1))[0])
            raise ValueError(f"candidates: no width in {[f.name for f in formats]} lies within "
                             f"[{lo[j]:g}, {hi[j]:g}] for group {groups.names[j]!r}")
        self.bits = bits
        self.stored = np.array([f.bits_per_param for f in formats])
        self.eff = np.array([f.effective_bits for f in formats])
        self.loss_bits = np.array([f.loss_bits for f in formats])
        self.loss = (groups.params * groups.coef)[:, None] * np.exp2(-groups.theta * self.loss_bits)[None, :]
        if loss_table is not None:
            table = np.asarray(loss_table, dtype=float)
            if table.shape != self.loss.shape or not np.all(np.isfinite(table)) or np.any(table < 0):
                raise ValueError(f"loss_table: expected finite losses >= 0 of shape {self.loss.shape} "
                                 f"(groups x candidates), got {table.shape}")
            self.loss = table


def _resources(groups: BitGroups, opt: _Options, costs: LayerCosts | None, choice: np.ndarray) -> dict:
    """avg_bits, memory_bytes and latency_s of a choice (option index per group)."""
    n = groups.params
    out = {"avg_bits": float(n @ opt.bits[choice] / groups.total_params),
           "memory_bytes": bytes_of(n, opt.stored[choice])}
    if costs is not None:
        out["latency_s"] = costs.time_s(costs.bit_sums(groups.layers, n, opt.eff[choice]))
    return out


def _cheapest(opt: _Options, key: np.ndarray) -> np.ndarray:
    """Per group, the allowed option with the smallest `key`."""
    return np.argmin(np.where(opt.allowed, key[None, :], np.inf), axis=1)


def _build(groups: BitGroups, opt: _Options, budgets: dict, costs: LayerCosts | None, caps=()):
    """Objective, bounds, integrality and constraints of the MILP for `budgets` (name -> value) and
    `caps` ((table, cap) pairs)."""
    G, K = opt.loss.shape
    n, total = groups.params, groups.total_params
    L = costs.size if (costs is not None and "latency_s" in budgets) else 0
    linear_latency = L and _always_memory_bound(groups, opt, costs)
    if linear_latency:
        L = 0          # every layer is memory-bound at every option: latency is one linear row
    nx = G * K
    scale = float(np.max(opt.loss)) or 1.0
    c = np.concatenate([opt.loss.ravel() / scale, np.zeros(L)])
    upper = np.concatenate([opt.allowed.ravel().astype(float), np.full(L, np.inf)])
    lower = np.zeros(nx + L)
    rows_g = np.repeat(np.arange(G), K)
    cols = np.arange(nx)
    cons = [LinearConstraint(sp.csr_matrix((np.ones(nx), (rows_g, cols)), shape=(G, nx + L)), 1.0, 1.0)]
    if "avg_bits" in budgets:
        coef = (n[:, None] * opt.bits[None, :] / total).ravel()
        cons.append(LinearConstraint(sp.csr_matrix(np.concatenate([coef, np.zeros(L)])[None, :]), -np.inf,
                                     budgets["avg_bits"]))
    if "memory_bytes" in budgets:
        coef = (n[:, None] * opt.stored[None, :] / total).ravel()   # average stored bits: O(1) numbers
        cons.append(LinearConstraint(sp.csr_matrix(np.concatenate([coef, np.zeros(L)])[None, :]), -np.inf,
                                     budgets["memory_bytes"] * 8.0 / total))
    if L:
        tscale = max(costs.time_s(np.zeros(costs.size)), 1e-30)
        lower[nx:] = costs.compute_s / tscale
        layer_of = np.repeat(groups.layers, K)
        slope = (costs.s_per_bit[groups.layers][:, None] * n[:, None] * opt.eff[None, :]).ravel() / tscale
        block = sp.csr_matrix((-slope, (layer_of, cols)), shape=(L, nx))
        cons.append(LinearConstraint(sp.hstack([block, sp.identity(L)]).tocsr(), costs.base_s / tscale, np.inf))
        limit = (budgets["latency_s"] - costs.fixed_s - costs.overhead_s.sum()) / tscale
        cons.append(LinearConstraint(sp.csr_matrix(np.concatenate([np.zeros(nx), np.ones(L)])[None, :]),
                                     -np.inf, limit))
    if linear_latency:
        tscale = max(costs.time_s(np.zeros(costs.size)), 1e-30)
        slope = (costs.s_per_bit[groups.layers][:, None] * n[:, None] * opt.eff[None, :]).ravel() / tscale
        limit = (budgets["latency_s"] - costs.fixed_s - costs.overhead_s.sum() - costs.base_s.sum()) / tscale
        cons.append(LinearConstraint(sp.csr_matrix(slope[None, :]), -np.inf, limit))
    for table, cap in caps:
        tmax = float(np.max(table)) or 1.0
        cons.append(LinearConstraint(sp.csr_matrix(np.concatenate([table.ravel() / tmax, np.zeros(L)])[None, :]),
                                     -np.inf, cap / tmax))
    ties = [(a, b) for m in groups.tie_sets() for a, b in zip(m[:-1], m[1:])]
    if ties:
        r = np.repeat(np.arange(len(ties) * K), 2)
        cidx = np.array([[a * K + k, b * K + k] for a, b in ties for k in range(K)]).ravel()
        vals = np.tile([1.0, -1.0], len(ties) * K)
        cons.append(LinearConstraint(sp.csr_matrix((vals, (r, cidx)), shape=(len(ties) * K, nx + L)), 0.0, 0.0))
    integrality = np.concatenate([np.ones(nx), np.zeros(L)])
    return c, integrality, Bounds(lower, upper), cons, scale


def _always_memory_bound(groups, opt, costs) -> bool:
    """True when even the narrowest allowed options keep every layer's memory time above its
    compute time, so max(compute, memory) is the (linear) memory term everywhere."""
    narrowest = np.min(np.where(opt.allowed, opt.eff[None, :], np.inf), axis=1)
    sums = costs.bit_sums(groups.layers, groups.params, narrowest)
    return bool(np.all(costs.base_s + costs.s_per_bit * sums >= costs.compute_s))


def _run(groups, opt, budgets, costs, objective=None, caps=()):
    c, integrality, bounds, cons, scale = _build(groups, opt, budgets, costs, caps)
    if objective is not None:
        c = np.concatenate([objective.ravel(), np.zeros(c.size - objective.size)])
    res = milp(c, integrality=integrality, bounds=bounds, constraints=cons, options=MILP_OPTIONS)
    return res, scale


def _explain_infeasible(groups, opt, budgets: dict, costs, final: bool = True) -> None:
    """Raise the error naming the smallest feasible value of a budget, given the others (when
    every budget alone is feasible: a generic error if `final`, else return for the caps' check)."""
    G, K = opt.loss.shape
    key = {"avg_bits": (opt.bits, "bits"), "memory_bytes": (opt.stored, "B"), "latency_s": (opt.eff, "s")}
    for name, value in budgets.items():
        floor = _resources(groups, opt, costs, _cheapest(opt, key[name][0]))[name]
        if value < floor * (1 - 1e-12):
            raise InfeasibleBudgetError(name, value, floor, key[name][1])
    for name, value in budgets.items():
        others = {k: v for k, v in budgets.items() if k != name}
        weight = groups.params[:, None] * key[name][0][None, :]
        res, _ = _run(groups, opt, others, costs, objective=weight / weight.max())
        if res.x is not None:
            choice = _choice(res.x, G, K)
            floor = _resources(groups, opt, costs, choice)[name]
            if value < floor * (1 - 1e-9):
                raise InfeasibleBudgetError(name, value, floor, key[name][1], why="given the other budgets")
    if final:
        raise InfeasibleBudgetError("budgets", math.nan, math.nan, why="no option set meets all budgets together")


def _cap(opt: _Options, table, cap, index: int):
    """A checked (table, cap) pair: finite, non-negative, one entry per group and option."""
    table = np.asarray(table, dtype=float)
    if table.shape != opt.loss.shape or not np.all(np.isfinite(table)) or np.any(table < 0):
        raise ValueError(f"loss_caps[{index}]: expected a table of finite losses >= 0 of shape {opt.loss.shape} "
                         f"(groups x candidates), got {table.shape}")
    if not (isinstance(cap, (int, float, np.floating)) and math.isfinite(cap) and cap >= 0):
        raise ValueError(f"loss_caps[{index}]: cap {cap!r} must be a finite number, zero or more")
    return table, float(cap)


def _explain_cap(groups, opt, budgets: dict, costs, caps) -> None:
    """Raise the error naming the smallest feasible value of the first cap that cannot be met."""
    G, K = opt.loss.shape
    for i, (table, cap) in enumerate(caps):
        others = caps[:i] + caps[i + 1:]
        res, _ = _run(groups, opt, budgets, costs, objective=table / (float(np.max(table)) or 1.0), caps=others)
        if res.x is not None:
            smallest = float(table[np.arange(G), _choice(res.x, G, K)].sum())
            if cap < smallest * (1 - 1e-9):
                raise InfeasibleBudgetError(f"loss_caps[{i}]", cap, smallest, why="given the budgets")
    raise InfeasibleBudgetError("budgets", math.nan, math.nan, why="no option set meets all budgets and caps together")


def _choice(x: np.ndarray, G: int, K: int) -> np.ndarray:
    return np.argmax(x[:G * K].reshape(G, K), axis=1)


def _result(groups, opt, costs, choice, method, status, elapsed, stats) -> BitAllocation:
    res = _resources(groups, opt, costs, choice)
    widths, loss_widths = opt.bits[choice].astype(float), opt.loss_bits[choice].astype(float)
    objective = float(opt.loss[np.arange(groups.size), choice].sum())
    return BitAllocation(status=status, method=method, widths=widths, groups=groups, objective=objective,
                         uniform_loss=groups.uniform_loss(res["avg_bits"]), bytes_=res["memory_bytes"],
                         latency_s=res.get("latency_s", math.nan),
                         formats=tuple(opt.formats[k].name for k in choice), loss_widths=loss_widths,
                         solve_time_s=elapsed, stats=stats)


def solve_milp(groups: BitGroups, candidates, budgets: Budgets, costs: LayerCosts | None = None,
               loss_table=None, loss_caps=()) -> BitAllocation:
    """Exact optimum over the candidate widths or formats (HiGHS branch and bound). `loss_table`
    (groups x candidates) replaces the loss model with measured losses (HAWQ-V3 style).
    `loss_caps`: (table, cap) pairs, each table groups x candidates of another loss whose sum over
    the chosen options must stay at or below cap (the epsilon-constraint method)."""
    if budgets.latency_s is not None and costs is None:
        raise ValueError("latency_s: a latency budget needs a LayerCosts (hardware and layer shapes)")
    opt = _Options(groups, formats_from(candidates), loss_table)
    caps = tuple(_cap(opt, table, cap, i) for i, (table, cap) in enumerate(loss_caps))
    active = budgets.active()
    start = time.perf_counter()
    res, _ = _run(groups, opt, active, costs, caps=caps)
    elapsed = time.perf_counter() - start
    if res.status == 2 or res.x is None:
        _explain_infeasible(groups, opt, active, costs, final=not caps)
        _explain_cap(groups, opt, active, costs, caps)
    if res.status not in (0, 1):
        raise RuntimeError(f"milp: HiGHS ended with status {res.status} ({res.message})")
    G, K = opt.loss.shape
    status = "optimal" if res.status == 0 else "time_limit"
    return _result(groups, opt, costs, _choice(res.x, G, K), "milp", status, elapsed,
                   {"solver": "HiGHS", "mip_gap": float(getattr(res, "mip_gap", math.nan) or 0.0),
                    "nodes": int(getattr(res, "mip_node_count", 0) or 0)})


def round_greedy(groups: BitGroups, candidates, budgets: Budgets, costs: LayerCosts | None = None,
                 loss_table=None) -> BitAllocation:
    """Greedy upgrades from the narrowest options: always the step that saves the most loss per unit
    of budget (each budget's use over its slack at the start), stopping a group at its first step
    that breaks a budget (wider options cost more). Optimal for one linear budget when the losses are
    convex in it, up to the last item (the knapsack remainder); `rounding_gap` measures the rest.
    Ties are not supported here (use `solve_milp`)."""
    if budgets.latency_s is not None and costs is None:
        raise ValueError("latency_s: a latency budget needs a LayerCosts (hardware and layer shapes)")
    if groups.tie_sets():
        raise ValueError("tie: the greedy rounding does not handle tied groups; use solve_milp")
    start = time.perf_counter()
    opt = _Options(groups, formats_from(candidates), loss_table)
    active = budgets.active()
    if len(active) == 1 and "latency_s" not in active:
        return _greedy_one_budget(groups, opt, costs, active, start)
    order = np.argsort(opt.bits, kind="stable")                 # options by nominal width
    choice = order[np.argmax(opt.allowed[:, order], axis=1)]     # narrowest allowed option
    used = _resources(groups, opt, costs, choice)
    if any(used[name] > value * (1 + 1e-12) for name, value in active.items()):
        _explain_infeasible(groups, opt, active, costs)
    state = _GreedyState(groups, opt, costs, active, choice, used, order)
    heap = [item for j in range(groups.size) if (item := state.next_step(j)) is not None]
    heapq.heapify(heap)
    while heap:
        _, j, k = heapq.heappop(heap)
        if state.take_if_fits(j, k) and (item := state.next_step(j)) is not None:
            heapq.heappush(heap, item)
    return _result(groups, opt, costs, state.choice, "greedy", "feasible", time.perf_counter() - start,
                   {"upgrades": state.upgrades})


def _greedy_one_budget(groups, opt, costs, active, start) -> BitAllocation:
    """The same greedy, vectorized for one linear budget (the multiple-choice knapsack's classic
    rule, Sinha & Zoltners 1979): per group, the lower convex hull of its (cost, loss) options;
    all hull steps sorted by loss saved per cost; the longest prefix that fits, then a pass that
    adds any later step that still fits."""
    name, limit = next(iter(active.items()))
    per_option = opt.bits / groups.total_params if name == "avg_bits" else opt.stored / 8.0
    cost = groups.params[:, None] * per_option[None, :]
    loss = np.where(opt.allowed, opt.loss, np.inf)
    cost = np.where(opt.allowed, cost, np.inf)
    cheapest = cost == cost.min(axis=1, keepdims=True)
    choice = np.argmin(np.where(cheapest, loss, np.inf), axis=1)   # cheapest option, least loss among equals
    rows = np.arange(groups.size)
    used = float(cost[rows, choice].sum())
    if used > limit * (1 + 1e-12):
        _explain_infeasible(groups, opt, active, costs)
    steps_j, steps_from, steps_to, ratios, dcost = [], [], [], [], []
    current = choice.copy()
    for _ in range(opt.bits.size):                          # walk each group's hull, all groups at once
        c0, l0 = cost[rows, current], loss[rows, current]
        gain = (l0[:, None] - loss) / np.where(cost > c0[:, None], cost - c0[:, None], np.nan)
        gain = np.where(np.isfinite(gain) & (gain > 0), gain, -np.inf)
        best = np.argmax(gain, axis=1)
        ok = np.isfinite(gain[rows, best])
        if not ok.any():
            break
        j = rows[ok]
        steps_j.append(j), steps_from.append(current[ok]), steps_to.append(best[ok])
        ratios.append(gain[j, best[ok]]), dcost.append(cost[j, best[ok]] - c0[ok])
        current = np.where(ok, best, current)
    if steps_j:
        j, k_from, k_to = np.concatenate(steps_j), np.concatenate(steps_from), np.concatenate(steps_to)
        ratio, dc = np.concatenate(ratios), np.concatenate(dcost)
        order = np.argsort(-ratio, kind="stable")
        j, k_from, k_to, dc = j[order], k_from[order], k_to[order], dc[order]
        fits = used + np.cumsum(dc) <= limit * (1 + 1e-12)
        prefix = int(np.argmin(fits)) if not fits.all() else fits.size
        for a, b in zip(j[:prefix], k_to[:prefix]):
            choice[a] = b
        used += float(dc[:prefix].sum())
        for a, f, b, d in zip(j[prefix:], k_from[prefix:], k_to[prefix:], dc[prefix:]):
            if choice[a] == f and used + d <= limit * (1 + 1e-12):
                choice[a], used = b, used + d
    return _result(groups, opt, costs, choice, "greedy", "feasible", time.perf_counter() - start,
                   {"budget": name})


class _GreedyState:
    """Current options and resource use, with per-layer bit sums for incremental latency checks."""

    def __init__(self, groups, opt, costs, budgets, choice, used, order):
        self.g, self.opt, self.costs, self.budgets, self.order = groups, opt, costs, budgets, order
        self.rank = np.argsort(order)                 # position of each option in `order`
        self.choice, self.upgrades = choice.copy(), 0
        self.used = dict(used)
        if costs is not None:
            self.sums = costs.bit_sums(groups.layers, groups.params, opt.eff[choice])
            self.layer_t = costs.layer_time_s(self.sums)
        self.weight = {k: 1.0 / max(v - used[k], 1e-300) for k, v in budgets.items()}

    def _delta(self, j, k) -> dict:
        n, o, cur = self.g.params[j], self.opt, self.choice[j]
        d = {"avg_bits": n * (o.bits[k] - o.bits[cur]) / self.g.total_params,
             "memory_bytes": n * (o.stored[k] - o.stored[cur]) / 8.0}
        if self.costs is not None:
            c, L = self.costs, self.g.layers[j]
            d["_sum"] = self.sums[L] + n * (o.eff[k] - o.eff[cur])
            d["_t"] = max(c.compute_s[L], c.base_s[L] + c.s_per_bit[L] * d["_sum"]) + c.overhead_s[L]
            d["latency_s"] = d["_t"] - self.layer_t[L]
        return d

    def next_step(self, j):
        """(-loss saved per budget used, j, k) for group j's next wider allowed option that lowers the
        loss, or None."""
        cur = self.choice[j]
        for k in self.order[self.rank[cur] + 1:]:
            if self.opt.allowed[j, k] and self.opt.loss[j, k] < self.opt.loss[j, cur]:
                d = self._delta(j, k)
                cost = sum(self.weight[b] * max(d[b], 0.0) for b in self.budgets) or 1e-300
                return (-(self.opt.loss[j, cur] - self.opt.loss[j, k]) / cost, j, int(k))
        return None

    def take_if_fits(self, j, k) -> bool:
        d = self._delta(j, k)
        if any(self.used[b] + d[b] > v * (1 + 1e-12) for b, v in self.budgets.items()):
            return False
        for b in ("avg_bits", "memory_bytes", "latency_s"):
            if b in d and b in self.used:
                self.used[b] += d[b]
        if self.costs is not None:
            L = self.g.layers[j]
            self.sums[L], self.layer_t[L] = d["_sum"], d["_t"]
        self.choice[j] = k
        self.upgrades += 1
        return True


def rounding_gap(groups: BitGroups, candidates, budgets: Budgets, costs: LayerCosts | None = None) -> dict:
    """Greedy vs exact: objectives, relative gap and solve times."""
    exact = solve_milp(groups, candidates, budgets, costs)
    greedy = round_greedy(groups, candidates, budgets, costs)
    return {"milp_objective": exact.objective, "greedy_objective": greedy.objective,
            "gap": greedy.objective / exact.objective - 1.0 if exact.objective > 0 else 0.0,
            "milp_s": exact.solve_time_s, "greedy_s": greedy.solve_time_s}
