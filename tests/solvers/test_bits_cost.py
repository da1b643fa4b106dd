"""Bytes and decode latency of an allocation agree with perfmodel's roofline; latency budgets."""
import math

import numpy as np
import pandas as pd
import pytest

from perfmodel.ops import Precision, matmul_op, step_ops
from perfmodel.predict import step_time
from perfmodel.roofline import op_time
from solvers.bits import BitGroups, Budgets, InfeasibleBudgetError, allocate_bits
from solvers.bits_closed import solve_closed_form
from solvers.bits_convex import solve_convex
from solvers.bits_cost import (FORMATS, GROUP_OVERHEAD_BITS, costs_from_frame, layer_costs, model_layer_table,
                               width_format)
from tests.solvers.bits_fixtures import gpu, small_model


@pytest.mark.parametrize("calibrated", [False, True])
@pytest.mark.parametrize("bits", [3, 4, 8, 16])
def test_layer_time_matches_roofline_op(calibrated, bits):
    hw = gpu(calibrated)
    rows, cols = np.array([4096.0, 14336.0, 1024.0]), np.array([4096.0, 4096.0, 8192.0])
    costs = layer_costs(rows, cols, hw, tokens=16)
    stored = bits + (GROUP_OVERHEAD_BITS if bits < 8 else 0.0)
    ours = costs.layer_time_s(rows * cols * stored)
    p = Precision(bits, 16, 16, 128)
    ref = np.asarray(op_time(matmul_op("w", 16, rows, cols, p, 1), hw, p).time_s)
    np.testing.assert_allclose(ours, ref, rtol=1e-12)


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_model_step_latency_matches_perfmodel(bits):
    """Allocated linears at a uniform width + the fixed rest = perfmodel's decode step with those
    linears at that width (LM head and router held at 16 bits, as GPTQ/AWQ checkpoints keep them)."""
    hw, model = gpu(calibrated=True), small_model()
    table = model_layer_table(model).assign(coef=1.0)
    table["params"] = table["rows"] * table["cols"]
    costs = costs_from_frame(table, hw, model=model, tokens=4, context=1024)
    g = BitGroups.from_frame(table)
    stored = bits + (GROUP_OVERHEAD_BITS if bits < 8 else 0.0)
    ours = costs.time_s(costs.bit_sums(g.layers, g.params, np.full(g.size, stored)))
    p16, p = Precision(16, 16, 16), Precision(bits, 16, 16)
    ref = float(np.asarray(step_time(model, hw, seqs=4, new_tokens=1, past=1024, p=p16)["time_s"]))
    for a, b in zip(step_ops(model, seqs=4, new_tokens=1, past=1024, p=p16), step_ops(model, seqs=4,
                             new_tokens=1, past=1024, p=p)):
        if a.kind == "matmul" and a.name not in ("lm_head", "router"):
            ref += a.count * (float(np.asarray(op_time(b, hw, p).time_s)) - float(np.asarray(op_time(a, hw, p16).time_s)))
    assert ours == pytest.approx(ref, rel=1e-12)
    assert len(table) == model.n_layers * 2 or len(table) == model.n_layers * 4


def memory_bound_groups():
    rows, cols = np.array([4096.0, 4096.0, 14336.0, 4096.0]), np.array([4096.0, 1024.0, 4096.0, 14336.0])
    return BitGroups(rows * cols, [1.0, 8.0, 0.5, 2.0], rmin=1, rmax=8), layer_costs(rows, cols, gpu(), tokens=1)


def test_latency_budget_equals_bit_budget_when_memory_bound():
    """Decode at batch 1 is memory-bound: latency is affine in sum n R, so a latency budget equal to
    the closed form's latency gives the closed form's allocation."""
    g, costs = memory_bound_groups()
    closed = solve_closed_form(g, 3.0)
    t = costs.time_s(costs.bit_sums(g.layers, g.params, closed.widths + GROUP_OVERHEAD_BITS))
    r = solve_convex(g, Budgets(latency_s=t), costs=costs)
    assert r.latency_s == pytest.approx(t, rel=1e-6)
    assert r.objective == pytest.approx(closed.objective, rel=1e-6)
    np.testing.assert_allclose(r.widths, closed.widths, atol=1e-4)
    assert r.stats["dloss_dlatency_s"] > 0   # a looser latency budget buys loss


def test_latency_infeasible_states_smallest():
    g, costs = memory_bound_groups()
    t_min = costs.time_s(costs.bit_sums(g.layers, g.params, g.rmin + GROUP_OVERHEAD_BITS))
    with pytest.raises(InfeasibleBudgetError, match=r"latency_s: .* ms is infeasible; the smallest feasible "
                                                     r"latency_s is .* ms") as err:
        solve_convex(g, Budgets(latency_s=0.5 * t_min), costs=costs)
    assert err.value.smallest == pytest.approx(t_min)


def test_compute_bound_layers_do_not_buy_latency():
    """At a large batch the GEMMs are compute-bound: fewer bits do not make them faster, so a
    latency budget at the compute floor leaves the bit budget in charge."""
    rows, cols = np.array([4096.0, 4096.0]), np.array([4096.0, 4096.0])
    costs = layer_costs(rows, cols, gpu(), tokens=4096)
    g = BitGroups(rows * cols, [1.0, 4.0], rmin=1, rmax=8)
    floor = costs.time_s(costs.bit_sums(g.layers, g.params, g.rmax + 1))
    r = solve_convex(g, Budgets(avg_bits=4.0, latency_s=floor), costs=costs)
    assert r.objective == pytest.approx(solve_closed_form(g, 4.0).objective, rel=1e-6)


def test_allocate_bits_with_hardware_and_shapes():
    frame = pd.DataFrame({"name": ["q", "k", "up", "down"], "layer": ["q", "k", "up", "down"],
                          "rows": [4096, 1024, 14336, 4096], "cols": [4096, 4096, 4096, 14336],
                          "coef": [1.0, 3.0, 0.2, 0.8]})
    frame["params"] = frame["rows"] * frame["cols"]
    r = allocate_bits(frame, avg_bits=4.0, hardware=gpu())
    assert r.method == "closed_form" and math.isfinite(r.latency_s) and r.bytes_ > 0
    tight = allocate_bits(frame, avg_bits=4.0, hardware=gpu(), latency_budget_s=0.9 * r.latency_s)
    assert tight.latency_s == pytest.approx(0.9 * r.latency_s, rel=1e-6) and tight.objective > r.objective
    milp = allocate_bits(frame, avg_bits=8, hardware=gpu(), latency_budget_s=1.5 * r.latency_s,
                         candidates=["int4-g128", "int8", "fp8", "bf16"])
    assert milp.latency_s <= 1.5 * r.latency_s * (1 + 1e-9) and set(milp.formats) <= set(FORMATS)
    with pytest.raises(ValueError, match="latency_budget_s: needs hardware"):
        allocate_bits(frame, avg_bits=4.0, latency_budget_s=1e-3)


def test_formats_and_widths():
    assert FORMATS["int4-g128"].bits_per_param == 4.25
    assert FORMATS["bf16"].loss_bits == math.inf
    w3 = width_format(3)
    assert w3.bits_per_param == 3.25 and w3.loss_bits == 3
    assert width_format(8).bits_per_param == 8
    with pytest.raises(ValueError, match="rows, cols"):
        costs_from_frame(pd.DataFrame({"params": [1.0], "coef": [1.0]}), gpu())
