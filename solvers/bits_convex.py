"""Bit allocation as a convex program (cvxpy): the BAQ loss with memory, latency and tie constraints.

    minimize    sum_j n_j c_j 2^(-theta R_j)                     (convex: exp of an affine function)
    subject to  sum_j n_j R_j <= Rbar sum_j n_j                  (average width)
                sum_j n_j (R_j + o) / 8 <= M                      (bytes of weights with scales)
                fixed + sum_L max(compute_L, base_L + s_L sum_{j in L} n_j (R_j + o)) + overhead_L <= T
                rmin_j <= R_j <= rmax_j,  R_i = R_j for tied groups

Every constraint is convex (affine, or a max of affines below a constant), so the problem is a DCP
exponential-cone program (Boyd & Vandenberghe, "Convex Optimization", 4.3 and 5.5). Budgets are
`cp.Parameter`s so an app can re-solve without rebuilding. The objective is scaled by the uniform
allocation's loss, which keeps the solver's tolerances meaningful whatever the units of c.
"""
from __future__ import annotations

import math
import time

import numpy as np

from solvers.bits_types import BitAllocation, BitGroups, Budgets, InfeasibleBudgetError
from solvers.bits_cost import GROUP_OVERHEAD_BITS, LayerCosts, bytes_of, with_costs

#: Clarabel (interior point, exponential cones) with tolerances tight enough that the bit-budget-only
#: case matches the closed form to 1e-6 relative.
SOLVER_OPTIONS = {"solver": "CLARABEL", "tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10,
                  "max_iter": 500}


class ConvexBits:
    """The problem built once; `solve(...)` sets the budget parameters and solves again."""

    def __init__(self, groups: BitGroups, budgets: Budgets, costs: LayerCosts | None = None,
                 overhead_bits: float | None = None):
        import cvxpy as cp

        if budgets.latency_s is not None and costs is None:
            raise ValueError("latency_s: a latency budget needs a LayerCosts (hardware and layer shapes)")
        self.groups, self.costs, self.budgets = groups, costs, budgets
        self.overhead = GROUP_OVERHEAD_BITS if overhead_bits is None else float(overhead_bits)
        g, total = groups, groups.total_params
        self.lo, self.hi = g.tie_bounds()
        ref = budgets.avg_bits if budgets.avg_bits is not None else float(np.mean(self.lo + self.hi) / 2)
        scale = g.uniform_loss(ref) or 1.0
        weights = g.params * g.coef * np.exp2(-g.theta * ref) / scale

        widths = cp.Variable(g.size, name="widths")
        self.widths = widths
        loss = cp.sum(cp.multiply(weights, cp.exp(-g.theta * math.log(2) * (widths - ref))))
        constraints = [widths >= self.lo, widths <= self.hi]
        constraints += [widths[m[1:]] == widths[m[0]] for m in g.tie_sets()]
        share = g.params / total                       # average-width weights, O(1) numbers
        self.params, self.budget_constraints = {}, {}
        if budgets.avg_bits is not None:
            self.params["avg_bits"] = cp.Parameter(nonneg=True, name="avg_bits")
            constraints.append(share @ widths <= self.params["avg_bits"])
            self.budget_constraints["avg_bits"] = constraints[-1]
        if budgets.memory_bytes is not None:
            # bytes / (total / 8) is the average stored width: also O(1)
            self.params["memory_bytes"] = cp.Parameter(nonneg=True, name="memory_bytes")
            constraints.append(share @ widths + self.overhead <= self.params["memory_bytes"] * (8.0 / total))
            self.budget_constraints["memory_bytes"] = constraints[-1]
        if budgets.latency_s is not None:
            self.params["latency_s"] = cp.Parameter(nonneg=True, name="latency_s")
            constraints.append(self._latency_expr(widths) <= self.params["latency_s"] / self._time_scale())
            self.budget_constraints["latency_s"] = constraints[-1]
        self.problem = cp.Problem(cp.Minimize(loss), constraints)
        self.scale = scale

    def _marginal(self, name: str) -> float:
        """Loss saved per unit of budget (the constraint's dual, back in the caller's units)."""
        dual = float(np.asarray(self.budget_constraints[name].dual_value)) * self.scale
        per_unit = {"avg_bits": 1.0, "memory_bytes": 8.0 / self.groups.total_params}
        return dual * per_unit[name] if name in per_unit else dual / self._time_scale()

    def _time_scale(self) -> float:
        """Latency at the lower bounds, so the constraint reads in O(1) numbers."""
        return max(self._latency_at(self.lo), 1e-30)

    def _latency_expr(self, widths):
        import cvxpy as cp
        import scipy.sparse as sp

        c, g = self.costs, self.groups
        layers = g.layers
        incidence = sp.csr_matrix((g.params, (layers, np.arange(g.size))), shape=(c.size, g.size))
        bit_sums = incidence @ (widths + self.overhead)
        times = cp.maximum(c.compute_s, c.base_s + cp.multiply(c.s_per_bit, bit_sums))
        return (c.fixed_s + cp.sum(times) + c.overhead_s.sum()) / self._time_scale()

    def _latency_at(self, widths) -> float:
        g = self.groups
        return self.costs.time_s(self.costs.bit_sums(g.layers, g.params, widths + self.overhead))

    def check_feasible(self, budgets: Budgets) -> None:
        """Every cost is increasing in every width, so the lowest widths are feasible iff anything
        is; each budget's smallest feasible value is its cost there."""
        g, lo = self.groups, self.lo
        floors = {"avg_bits": (g.average_bits(lo), "bits"),
                  "memory_bytes": (bytes_of(g.params, lo + self.overhead), "B")}
        if self.costs is not None:
            floors["latency_s"] = (self._latency_at(lo), "s")
        for name, value in budgets.active().items():
            floor, unit = floors[name]
            if value < floor * (1 - 1e-12):
                raise InfeasibleBudgetError(name, value, floor, unit)

    def solve(self, **budgets) -> BitAllocation:
        """Solve with the budgets given at construction, or new values for them (same keys)."""
        values = {**self.budgets.active(), **budgets}
        unknown = set(values) - set(self.params)
        if unknown:
            raise ValueError(f"budget: {sorted(unknown)} was not part of this problem; rebuild with it")
        self.check_feasible(Budgets(**values))
        for name, value in values.items():
            self.params[name].value = value
        start = time.perf_counter()
        options = dict(SOLVER_OPTIONS)
        solver = options.pop("solver")
        self.problem.solve(solver=solver, **options)
        elapsed = time.perf_counter() - start
        status = self.problem.status
        if self.widths.value is None or status not in ("optimal", "optimal_inaccurate"):
            raise RuntimeError(f"cvxpy: solver {solver} ended with status {status!r}")
        widths = np.clip(np.asarray(self.widths.value, dtype=float), self.lo, self.hi)
        g = self.groups
        result = BitAllocation(
            status=status, method="cvxpy", widths=widths, groups=g, objective=g.total_loss(widths),
            uniform_loss=g.uniform_loss(g.average_bits(widths)), solve_time_s=elapsed,
            stats={"solver": solver, "iterations": self.problem.solver_stats.num_iters,
                   **{f"dloss_d{k}": self._marginal(k) for k in self.budget_constraints}})
        return with_costs(result, self.costs, self.overhead)


def solve_convex(groups: BitGroups, budgets: Budgets, costs: LayerCosts | None = None,
                 overhead_bits: float | None = None) -> BitAllocation:
    """Build and solve once (see `ConvexBits` to re-solve with new budgets)."""
    return ConvexBits(groups, budgets, costs, overhead_bits).solve()
