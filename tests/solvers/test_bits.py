"""Closed-form and convex bit allocation: agreement, optimality conditions, bounds, ties, errors."""
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from solvers.bits import (BitGroups, Budgets, InfeasibleBudgetError, allocate_bits, allocate_within_layers,
                          gm_am_ratio)
from solvers.bits_closed import baq_unbounded, solve_closed_form, water_level
from solvers.bits_convex import ConvexBits, solve_convex
from solvers.bits_integer import round_greedy


def random_groups(seed, size=40, rmin=1.0, rmax=8.0, theta=2.0):
    rng = np.random.default_rng(seed)
    return BitGroups(params=rng.integers(16, 4096, size).astype(float), coef=np.exp(rng.normal(0, 2.5, size)),
                     theta=theta, rmin=rmin, rmax=rmax)


def test_unbounded_matches_baq_formula_and_gm_am():
    g = random_groups(0, rmin=-100, rmax=100)
    r = solve_closed_form(g, 4.0)
    np.testing.assert_allclose(r.widths, baq_unbounded(g.coef, g.params, 4.0, g.theta), atol=1e-9)
    assert r.predicted_gain == pytest.approx(gm_am_ratio(g.coef, g.params), rel=1e-9)
    assert gm_am_ratio(g.coef, g.params) < 1


def test_equal_loss_structure_and_kkt():
    g = random_groups(1, rmax=5.0)
    r = solve_closed_form(g, 3.0)
    per_weight = g.coef * np.exp2(-g.theta * r.widths)
    inside = (r.widths > g.rmin + 1e-9) & (r.widths < g.rmax - 1e-9)
    at_lo, at_hi = r.widths <= g.rmin + 1e-9, r.widths >= g.rmax - 1e-9
    assert inside.sum() > 5 and at_lo.any() and at_hi.any()
    np.testing.assert_allclose(per_weight[inside], r.loss_level, rtol=1e-9)
    # complementary slackness: a group at rmin would gain less than the multiplier by growing,
    # a group at rmax would gain more
    assert np.all(per_weight[at_lo] <= r.loss_level * (1 + 1e-9))
    assert np.all(per_weight[at_hi] >= r.loss_level * (1 - 1e-9))
    assert r.avg_bits == pytest.approx(3.0, rel=1e-12)
    assert r.stats["multiplier"] == pytest.approx(g.theta * math.log(2) * r.loss_level)


def test_closed_form_matches_cvxpy_to_1e6():
    g = random_groups(2, size=60)
    a = solve_closed_form(g, 3.5)
    b = solve_convex(g, Budgets(avg_bits=3.5))
    assert b.objective == pytest.approx(a.objective, rel=1e-6)
    np.testing.assert_allclose(b.widths, a.widths, atol=1e-4)
    # the dual of the bit budget is the closed form's multiplier (loss saved per average bit)
    assert b.stats["dloss_davg_bits"] == pytest.approx(a.stats["dloss_davg_bits"], rel=1e-4)


@pytest.mark.parametrize("seed", [3, 4])
def test_closed_form_matches_brute_force_two_groups(seed):
    g = random_groups(seed, size=2, rmin=0.0, rmax=8.0)
    n, budget = g.params, 3.0 * g.total_params
    r2 = np.linspace(0, 8, 160001)
    r1 = (budget - n[1] * r2) / n[0]
    ok = (r1 >= 0) & (r1 <= 8)
    losses = n[0] * g.coef[0] * np.exp2(-2 * r1[ok]) + n[1] * g.coef[1] * np.exp2(-2 * r2[ok])
    best = losses.min()
    r = solve_closed_form(g, 3.0)
    assert r.objective <= best * (1 + 1e-12)
    assert r.objective == pytest.approx(best, rel=1e-6)


def test_brute_force_three_groups_grid():
    g = random_groups(5, size=3, rmin=1.0, rmax=6.0)
    grid = np.linspace(1, 6, 501)
    a, b = np.meshgrid(grid, grid, indexing="ij")
    n = g.params
    c = (3.2 * g.total_params - n[0] * a - n[1] * b) / n[2]
    ok = (c >= 1) & (c <= 6)
    loss = (n[0] * g.coef[0] * np.exp2(-2 * a) + n[1] * g.coef[1] * np.exp2(-2 * b)
            + n[2] * g.coef[2] * np.exp2(-2 * c))[ok]
    r = solve_closed_form(g, 3.2)
    assert r.objective <= loss.min() * (1 + 1e-12)
    assert r.objective == pytest.approx(loss.min(), rel=1e-3)


def test_bounds_respected_and_budget_above_max():
    g = random_groups(6, rmin=np.linspace(1, 3, 40), rmax=np.linspace(5, 8, 40))
    r = solve_closed_form(g, 4.0)
    assert np.all(r.widths >= g.rmin - 1e-12) and np.all(r.widths <= g.rmax + 1e-12)
    full = solve_closed_form(g, 100.0)
    np.testing.assert_array_equal(full.widths, g.rmax)


def test_zero_coefficient_groups_take_the_lowest_width():
    g = BitGroups(params=[100, 100, 100], coef=[0.0, 1.0, 4.0], rmin=2, rmax=8)
    r = solve_closed_form(g, 4.0)
    assert r.widths[0] == 2.0 and r.avg_bits == pytest.approx(4.0)
    assert r.widths[2] > r.widths[1]


def test_ties_merge_exactly_and_agree_with_cvxpy():
    g0 = random_groups(7, size=12)
    tie = np.array([0, 0, 0, -1, 1, 1, -1, -1, -1, 2, 2, -1])
    g = BitGroups(g0.params, g0.coef, rmin=1, rmax=8, tie=tie)
    a = solve_closed_form(g, 3.0)
    for label in (0, 1, 2):
        assert np.ptp(a.widths[tie == label]) == 0
    b = solve_convex(g, Budgets(avg_bits=3.0))
    assert b.objective == pytest.approx(a.objective, rel=1e-6)
    np.testing.assert_allclose(b.widths, a.widths, atol=1e-4)
    assert a.objective >= solve_closed_form(g0, 3.0).objective   # a constraint never helps


def test_infeasible_bit_budget_names_smallest():
    g = random_groups(8, rmin=2.0)
    with pytest.raises(InfeasibleBudgetError, match=r"avg_bits: 1.5 bits is infeasible; the smallest feasible "
                                                     r"avg_bits is 2 bits") as err:
        solve_closed_form(g, 1.5)
    assert err.value.smallest == pytest.approx(2.0)
    with pytest.raises(InfeasibleBudgetError, match="avg_bits"):
        solve_convex(g, Budgets(avg_bits=1.5))


def test_convex_memory_budget_infeasible_and_binding():
    g = random_groups(9)
    floor = g.total_params * (1.0 + 0.25) / 8
    with pytest.raises(InfeasibleBudgetError, match=r"memory_bytes: .* the smallest feasible memory_bytes is"):
        solve_convex(g, Budgets(memory_bytes=0.9 * floor))
    # a memory budget equal to 3 average bits plus scales is the bit budget in other units
    r = solve_convex(g, Budgets(memory_bytes=g.total_params * 3.25 / 8))
    assert r.avg_bits == pytest.approx(3.0, rel=1e-6)
    assert r.objective == pytest.approx(solve_closed_form(g, 3.0).objective, rel=1e-6)
    assert r.bytes_ == pytest.approx(g.total_params * 3.25 / 8, rel=1e-6)


def test_convex_resolve_with_parameters_is_monotone():
    g = random_groups(10)
    problem = ConvexBits(g, Budgets(avg_bits=3.0))
    losses = [problem.solve(avg_bits=b).objective for b in (2.5, 3.0, 4.0)]
    assert losses[0] > losses[1] > losses[2]
    with pytest.raises(ValueError, match="latency_s"):
        problem.solve(latency_s=1e-3)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), low=st.floats(1.2, 5.0), extra=st.floats(0.0, 2.0),
       theta=st.floats(1.5, 2.5))
def test_more_budget_never_raises_the_loss(seed, low, extra, theta):
    g = random_groups(seed, size=25, theta=theta)
    a, b = solve_closed_form(g, low), solve_closed_form(g, low + extra)
    assert b.objective <= a.objective * (1 + 1e-12)
    assert a.avg_bits <= low * (1 + 1e-12) and np.all(a.widths >= g.rmin) and np.all(a.widths <= g.rmax)
    assert a.objective <= g.uniform_loss(low) * (1 + 1e-12)   # optimal beats uniform when uniform is allowed


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(1e-6, 1e6), min_size=2, max_size=30), st.floats(-5, 20))
def test_water_level_hits_the_target(coefs, shift):
    a = np.log2(np.array(coefs)) / 2
    n = np.ones_like(a)
    lo, hi = 0.0, 8.0
    target = float(np.clip(len(a) * 4.0 + shift, 0.0, 8.0 * len(a)))
    u, _ = water_level(a, n, lo, hi, target)
    assert np.clip(a + u, lo, hi).sum() == pytest.approx(target, rel=1e-9, abs=1e-9)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"params: -1.0 for group 'g1' must be finite and greater than 0"):
        BitGroups(params=[1, -1], coef=[1, 1])
    with pytest.raises(ValueError, match=r"coef: nan for group 'g0'"):
        BitGroups(params=[1, 1], coef=[math.nan, 1])
    with pytest.raises(ValueError, match="rmin: 5 exceeds rmax 4"):
        BitGroups(params=[1], coef=[1], rmin=5, rmax=4)
    with pytest.raises(ValueError, match="avg_bits: -1"):
        solve_closed_form(random_groups(0), -1)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['coef'\]"):
        BitGroups.from_frame(pd.DataFrame({"params": [1.0]}))
    g = BitGroups(params=[1, 1], coef=[1, 1], rmin=[1, 5], rmax=[3, 8], tie=np.array([0, 0]))
    with pytest.raises(ValueError, match="bounds do not overlap"):
        solve_closed_form(g, 4)


def test_allocate_bits_dispatch_and_frame():
    frame = pd.DataFrame({"name": ["a", "b", "c"], "params": [1000.0, 2000.0, 500.0], "coef": [1.0, 10.0, 0.1]})
    r = allocate_bits(frame, avg_bits=4)
    assert r.method == "closed_form"
    table = r.to_frame()
    assert list(table["name"]) == ["a", "b", "c"] and table["width"].iloc[1] > table["width"].iloc[0]
    assert r.bytes_ != r.bytes_  # no cost model asked: NaN
    r2 = allocate_bits(frame, avg_bits=4, memory_budget_bytes=3500 * 4.0 / 8)
    assert r2.method == "cvxpy" and r2.bytes_ <= 3500 * 4.0 / 8 * (1 + 1e-6)
    r3 = allocate_bits(frame, avg_bits=4, candidates=[2, 4, 8])
    assert r3.method == "milp" and set(r3.widths) <= {2.0, 4.0, 8.0}


def _layered(seed, layers=5, per_layer=30):
    rng = np.random.default_rng(seed)
    size = layers * per_layer
    return BitGroups(params=rng.integers(16, 4096, size).astype(float), coef=np.exp(rng.normal(0, 2.5, size)),
                     rmin=1.0, rmax=8.0, layer=np.repeat(np.arange(layers), per_layer))


@pytest.mark.parametrize("seed", range(3))
def test_within_layers_keeps_each_layer_average_and_equal_loss(seed):
    groups = _layered(seed)
    result = allocate_within_layers(groups, 3.5, solve_closed_form)
    assert result.status == "optimal" and result.stats["layers"] == 5
    for layer in range(5):
        idx = np.flatnonzero(groups.layers == layer)
        part = groups.take(idx)
        assert part.average_bits(result.widths[idx]) == pytest.approx(3.5, rel=1e-9)
        alone = solve_closed_form(part, 3.5)
        np.testing.assert_allclose(result.widths[idx], alone.widths, rtol=1e-12)
        # equal-loss structure inside the layer: unclipped groups share one loss per weight
        per_weight = part.coef * np.exp2(-2.0 * result.widths[idx])
        free = (result.widths[idx] > 1.0 + 1e-9) & (result.widths[idx] < 8.0 - 1e-9)
        assert np.ptp(per_weight[free]) <= 1e-9 * per_weight[free].max()
    # one model-wide budget is a relaxation of the per-layer budgets: never a higher optimum
    assert solve_closed_form(groups, 3.5).objective <= result.objective * (1 + 1e-12)
    assert result.objective <= result.uniform_loss


def test_within_layers_per_layer_targets_integer_widths_and_errors():
    groups = _layered(7, layers=3, per_layer=12)
    targets = [2.0, 4.0, 6.0]
    result = allocate_within_layers(groups, targets,
                                    lambda g, a: round_greedy(g, [1, 2, 3, 4, 5, 6, 7, 8], Budgets(avg_bits=a)))
    assert result.method == "within_layers:greedy"
    assert set(np.unique(result.widths)) <= set(range(1, 9))
    for layer, target in enumerate(targets):
        idx = np.flatnonzero(groups.layers == layer)
        assert groups.take(idx).average_bits(result.widths[idx]) <= target + 1e-12
    with pytest.raises(ValueError, match=r"avg_bits: expected one width or 3 \(one per layer\), got 2"):
        allocate_within_layers(groups, [3.0, 4.0], solve_closed_form)
    with pytest.raises(InfeasibleBudgetError, match=r"avg_bits of layer 'g12': 0.5 bits is infeasible; .* 1 bits"):
        allocate_within_layers(groups, [3.0, 0.5, 3.0], solve_closed_form)
    tied = BitGroups(params=groups.params, coef=groups.coef, rmin=1.0, rmax=8.0, layer=groups.layer,
                     tie=np.where(np.arange(groups.size) % 12 == 0, 0, -1))
    with pytest.raises(ValueError, match="share a width across layers"):
        allocate_within_layers(tied, 3.0, solve_closed_form)


def test_allocate_bits_layer_scope():
    groups = _layered(3, layers=4, per_layer=10)
    closed = allocate_bits(groups, 3.0, scope="layer")
    assert closed.method == "within_layers:closed_form"
    milp = allocate_bits(groups, 3.0, scope="layer", candidates=[2, 3, 4, 5])
    assert milp.method == "within_layers:milp" and set(np.unique(milp.widths)) <= {2, 3, 4, 5}
    assert milp.objective >= closed.objective * (1 - 1e-9)       # integer widths never beat the relaxation
    with pytest.raises(ValueError, match="scope: 'layer' takes an average-bit budget only"):
        allocate_bits(groups, 3.0, scope="layer", memory_budget_bytes=1e6)
    with pytest.raises(ValueError, match="scope: 'whole' is not 'model' or 'layer'"):
        allocate_bits(groups, 3.0, scope="whole")
