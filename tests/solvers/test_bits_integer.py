"""MILP and greedy rounding: exhaustive-search optimum, formats, latency, ties, bounds, infeasibility."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from solvers.bits import BitGroups, Budgets, InfeasibleBudgetError
from solvers.bits_cost import FORMATS, formats_from, layer_costs
from solvers.bits_integer import _always_memory_bound, _Options, round_greedy, rounding_gap, solve_milp
from tests.solvers.bits_fixtures import gpu, random_groups


def exhaustive(groups, candidates, budgets, costs=None):
    """Best option per group by enumerating every combination (the reference the MILP must match)."""
    formats = formats_from(candidates)
    n = groups.params
    best = (np.inf, None)
    for combo in itertools.product(range(len(formats)), repeat=groups.size):
        f = [formats[k] for k in combo]
        bits = np.array([x.bits for x in f])
        if np.any(bits < groups.rmin - 1e-9) or np.any(bits > groups.rmax + 1e-9):
            continue
        if any(np.ptp(bits[m]) > 0 for m in groups.tie_sets()):
            continue
        if budgets.avg_bits is not None and n @ bits > budgets.avg_bits * n.sum() * (1 + 1e-9):
            continue
        if budgets.memory_bytes is not None and n @ [x.bits_per_param for x in f] / 8 > budgets.memory_bytes * (1 + 1e-9):
            continue
        if budgets.latency_s is not None:
            eff = np.array([x.effective_bits for x in f])
            if costs.time_s(costs.bit_sums(groups.layers, n, eff)) > budgets.latency_s * (1 + 1e-9):
                continue
        loss = float(np.sum(n * groups.coef * np.exp2(-groups.theta * np.array([x.loss_bits for x in f]))))
        if loss < best[0]:
            best = (loss, combo)
    return best


@pytest.mark.parametrize("seed", range(4))
def test_milp_equals_exhaustive_search_widths(seed):
    g = random_groups(seed, size=6, rmin=0, rmax=16)
    budget = Budgets(avg_bits=3.6 + 0.3 * seed)
    r = solve_milp(g, [2, 3, 4, 8], budget)
    best, _ = exhaustive(g, [2, 3, 4, 8], budget)
    assert r.objective == pytest.approx(best, rel=1e-9)
    assert r.avg_bits <= budget.avg_bits * (1 + 1e-9)


@pytest.mark.parametrize("seed,tokens", [(0, 1), (1, 1), (2, 256), (0, 700), (1, 700)])
def test_milp_equals_exhaustive_with_formats_and_latency(seed, tokens):
    """tokens=1: memory-bound (latency is one linear row); 256 and 700: some layers are compute-bound
    at narrow formats (the layer-time variables of the max() are needed)."""
    rng = np.random.default_rng(seed)
    rows, cols = rng.choice([1024, 2048, 4096], 5), rng.choice([1024, 2048, 4096], 5)
    g = BitGroups(params=rows * cols, coef=np.exp(rng.normal(0, 2, 5)), rmin=0, rmax=16)
    costs = layer_costs(rows, cols, gpu(calibrated=tokens > 1), tokens=tokens, fixed_s=2e-5)
    names = list(FORMATS)
    t_all = [costs.time_s(costs.bit_sums(g.layers, g.params, np.full(5, FORMATS[f].effective_bits))) for f in names]
    budget = Budgets(latency_s=float(np.mean(t_all[:2])), memory_bytes=float(g.total_params * 9 / 8))
    r = solve_milp(g, names, budget, costs=costs)
    assert _always_memory_bound(g, _Options(g, formats_from(names)), costs) == (tokens == 1)
    best, combo = exhaustive(g, names, budget, costs)
    assert r.objective == pytest.approx(best, rel=1e-9)
    assert r.latency_s <= budget.latency_s * (1 + 1e-9) and r.bytes_ <= budget.memory_bytes * (1 + 1e-9)
    assert set(r.formats) <= set(names)


def test_milp_ties_and_bounds():
    g0 = random_groups(11, size=6, rmin=0, rmax=16)
    tie = np.array([0, 0, -1, 1, 1, -1])
    g = BitGroups(g0.params, g0.coef, rmin=[0, 0, 3, 0, 0, 0], rmax=[16, 16, 4, 16, 16, 3], tie=tie)
    budget = Budgets(avg_bits=4.0)
    r = solve_milp(g, [2, 3, 4, 8], budget)
    assert r.widths[0] == r.widths[1] and r.widths[3] == r.widths[4]
    assert 3 <= r.widths[2] <= 4 and r.widths[5] <= 3
    best, _ = exhaustive(g, [2, 3, 4, 8], budget)
    assert r.objective == pytest.approx(best, rel=1e-9)


def test_milp_infeasible_names_smallest_budget():
    g = random_groups(12, size=8, rmin=0, rmax=16)
    with pytest.raises(InfeasibleBudgetError, match=r"avg_bits: 1.5 bits is infeasible; the smallest feasible "
                                                     r"avg_bits is 2 bits"):
        solve_milp(g, [2, 4, 8], Budgets(avg_bits=1.5))
    # each budget alone is feasible, together they are not: fp8 meets latency, int4 meets bytes
    rows = cols = np.full(8, 2048.0)
    g = BitGroups(rows * cols, np.ones(8), rmin=0, rmax=16)
    costs = layer_costs(rows, cols, gpu(), tokens=1)
    fast = {"int4": formats_from(["int4-g128"])[0]}
    slow_int4 = fast["int4"].__class__("int4-slow", 4, 4.25, 4, 0.25, "test: a slow kernel")
    lat_fp8 = costs.time_s(costs.bit_sums(g.layers, g.params, np.full(8, 8.0)))
    with pytest.raises(InfeasibleBudgetError, match="given the other budgets"):
        solve_milp(g, [slow_int4, "fp8"], Budgets(latency_s=lat_fp8, memory_bytes=g.total_params * 5 / 8), costs)


def test_latency_needs_costs():
    with pytest.raises(ValueError, match="latency_s: a latency budget needs"):
        solve_milp(random_groups(0, size=3), [2, 4], Budgets(latency_s=1e-3))


def test_unknown_candidate_and_out_of_bounds():
    g = random_groups(0, size=3, rmin=5, rmax=6)
    with pytest.raises(ValueError, match="candidates: 'int3-foo' is neither a width nor a format"):
        solve_milp(g, ["int3-foo"], Budgets(avg_bits=4))
    with pytest.raises(ValueError, match=r"no width in \['int2', 'int4'\] lies within \[5, 6\]"):
        solve_milp(g, [2, 4], Budgets(avg_bits=4))


@pytest.mark.parametrize("seed", range(3))
def test_greedy_is_feasible_and_close(seed):
    g = random_groups(seed, size=60, rmin=0, rmax=16)
    budget = Budgets(avg_bits=3.5)
    gap = rounding_gap(g, [1, 2, 3, 4, 5, 6, 8], budget)
    assert 0 <= gap["gap"] < 0.05
    r = round_greedy(g, [1, 2, 3, 4, 5, 6, 8], budget)
    assert r.avg_bits <= 3.5 * (1 + 1e-12)


def test_greedy_with_latency_respects_it():
    rng = np.random.default_rng(3)
    rows, cols = rng.choice([1024, 4096], 30), rng.choice([1024, 4096], 30)
    g = BitGroups(rows * cols, np.exp(rng.normal(0, 2, 30)), rmin=0, rmax=16)
    costs = layer_costs(rows, cols, gpu(calibrated=True), tokens=4)
    t8 = costs.time_s(costs.bit_sums(g.layers, g.params, np.full(30, 8.0)))
    budget = Budgets(latency_s=t8)
    greedy = round_greedy(g, list(FORMATS), budget, costs)
    exact = solve_milp(g, list(FORMATS), budget, costs)
    assert greedy.latency_s <= t8 * (1 + 1e-12) and exact.latency_s <= t8 * (1 + 1e-9)
    assert exact.objective <= greedy.objective * (1 + 1e-9)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 1000), low=st.floats(2.0, 6.0), extra=st.floats(0.0, 3.0))
def test_milp_more_budget_never_raises_the_loss(seed, low, extra):
    g = random_groups(seed, size=10, rmin=0, rmax=16)
    a = solve_milp(g, [2, 3, 4, 8], Budgets(avg_bits=low))
    b = solve_milp(g, [2, 3, 4, 8], Budgets(avg_bits=low + extra))
    assert b.objective <= a.objective * (1 + 1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_vectorized_greedy_equals_heap_greedy(seed):
    """One budget takes the vectorized path; adding a slack second budget forces the heap path."""
    g = random_groups(seed, size=300, rmin=0, rmax=16)
    cands = [1, 2, 3, 4, 6, 8]
    fast = round_greedy(g, cands, Budgets(avg_bits=3.3))
    slow = round_greedy(g, cands, Budgets(avg_bits=3.3, memory_bytes=g.total_params * 100.0))
    assert fast.stats["budget"] == "avg_bits" and "upgrades" in slow.stats
    assert fast.objective == pytest.approx(slow.objective, rel=1e-9)


def test_measured_loss_table_replaces_the_model():
    g = random_groups(4, size=5, rmin=0, rmax=16)
    rng = np.random.default_rng(0)
    table = np.sort(rng.uniform(0, 10, (5, 3)), axis=1)[:, ::-1]   # losses fall with width
    r = solve_milp(g, [2, 4, 8], Budgets(avg_bits=4.0), loss_table=table)
    best = min((sum(table[j, k] for j, k in enumerate(combo)), combo)
               for combo in itertools.product(range(3), repeat=5)
               if g.params @ np.array([2, 4, 8])[list(combo)] <= 4.0 * g.total_params * (1 + 1e-12))
    assert r.objective == pytest.approx(best[0], rel=1e-9)
    assert round_greedy(g, [2, 4, 8], Budgets(avg_bits=4.0), loss_table=table).objective >= r.objective * (1 - 1e-9)
    with pytest.raises(ValueError, match=r"loss_table: expected finite losses >= 0 of shape \(5, 3\)"):
        solve_milp(g, [2, 4, 8], Budgets(avg_bits=4.0), loss_table=table[:, :2])


@pytest.mark.parametrize("seed", range(4))
def test_loss_cap_milp_equals_exhaustive_search(seed):
    """Minimize one measured table while another stays under a cap (epsilon-constraint): the MILP
    optimum equals brute force over every combination."""
    rng = np.random.default_rng(10 + seed)
    g = random_groups(seed, size=5, rmin=0, rmax=16)
    widths = [2, 3, 4, 6]
    primary = rng.uniform(0.1, 1.0, (5, 4)) * np.exp2(-1.5 * np.array(widths))[None, :]
    other = rng.uniform(0.1, 1.0, (5, 4)) * np.exp2(-2.0 * np.array(widths))[None, :]
    uniform = np.full(5, widths.index(3))
    cap = float(other[np.arange(5), uniform].sum())
    budget = Budgets(avg_bits=3.0)
    r = solve_milp(g, widths, budget, loss_table=primary, loss_caps=[(other, cap)])
    best = math.inf
    for combo in itertools.product(range(4), repeat=5):
        combo = np.array(combo)
        if g.average_bits(np.array(widths)[combo]) > 3.0 + 1e-9 or other[np.arange(5), combo].sum() > cap * (1 + 1e-9):
            continue
        best = min(best, float(primary[np.arange(5), combo].sum()))
    assert r.objective == pytest.approx(best, rel=1e-9)
    chosen = np.searchsorted(widths, r.widths)
    assert other[np.arange(5), chosen].sum() <= cap * (1 + 1e-9)
    assert r.objective <= primary[np.arange(5), uniform].sum() + 1e-15     # uniform is feasible


def test_loss_cap_errors_name_the_smallest_feasible_cap():
    g = random_groups(1, size=4, rmin=0, rmax=16)
    other = np.tile(np.exp2(-2.0 * np.array([2, 4, 8])), (4, 1))
    with pytest.raises(InfeasibleBudgetError, match=r"loss_caps\[0\]: 1e-06 is infeasible; the smallest feasible "
                                                     r"loss_caps\[0\] is 0.0.* \(given the budgets\)"):
        solve_milp(g, [2, 4, 8], Budgets(avg_bits=4.0), loss_caps=[(other, 1e-6)])
    with pytest.raises(ValueError, match=r"loss_caps\[0\]: expected a table of finite losses >= 0 of shape \(4, 3\)"):
        solve_milp(g, [2, 4, 8], Budgets(avg_bits=4.0), loss_caps=[(other[:2], 1.0)])
    with pytest.raises(ValueError, match=r"loss_caps\[0\]: cap nan must be a finite number"):
        solve_milp(g, [2, 4, 8], Budgets(avg_bits=4.0), loss_caps=[(other, float("nan"))])
