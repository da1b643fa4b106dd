"""Solvers that price time take a Scenario for the fields it carries (solvers.scenario_args)."""
import pytest

import hardware
import workloads
from solvers import bits_cost, flash, kv
from workloads.scenario import Scenario


@pytest.fixture(scope="module")
def setup():
    return workloads.load("qwen3-8b"), hardware.load("h200-sxm")


def test_kv_capacity_scenario_equals_explicit_fields(setup):
    model, hw = setup
    sc = Scenario(kv_bits=8, w_bits=4, tp=2)
    assert kv.max_concurrency(model, hw, 32768, scenario=sc) == kv.max_concurrency(model, hw, 32768, kv_bits=8,
                                                                                     w_bits=4, tp=2)
    assert kv.max_context(model, hw, 8, scenario=sc) == kv.max_context(model, hw, 8, kv_bits=8, w_bits=4, tp=2)
    # a different scenario gives a different answer: the fields are really read
    assert kv.max_concurrency(model, hw, 32768, scenario=Scenario(kv_bits=16)).value < \
        kv.max_concurrency(model, hw, 32768, scenario=sc).value


def test_a_field_given_both_ways_is_a_one_line_error(setup):
    model, hw = setup
    with pytest.raises(ValueError, match="kv_bits: given both"):
        kv.max_concurrency(model, hw, 1024, kv_bits=8, scenario=Scenario(kv_bits=8))
    with pytest.raises(ValueError, match="scenario: the solver takes one scenario"):
        kv.max_concurrency(model, hw, 1024, scenario=Scenario(kv_bits=[8, 16]))


def test_bits_fixed_step_and_flash_take_a_scenario(setup):
    model, hw = setup
    sc = Scenario(batch=8, prompt=2048, kv_bits=8)
    assert bits_cost.fixed_step_time_s(model, hw, scenario=sc) == bits_cost.fixed_step_time_s(
        model, hw, tokens=8, context=2048, a_bits=16, kv_bits=8)
    opt = workloads.load("opt-6.7b")
    m1 = hardware.load("m1-max")
    a = flash.plan_flash(opt, m1, 7e9, scenario=Scenario(w_bits=16, prompt=1024), max_window=8, static_steps=11)
    b = flash.plan_flash(opt, m1, 7e9, w_bits=16, context=1024, max_window=8, static_steps=11)
    assert a == b
