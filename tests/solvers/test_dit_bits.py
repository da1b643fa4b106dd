"""Bits solvers on DiT layers: the layer table, MixDQ-style measured loss tables, ViDiT-Q-style
capped second metrics, memory budgets, and the mixed model priced by perfmodel.dit."""
import numpy as np
import pytest

import hardware
from perfmodel import dit as cost
from solvers import dit_bits
from workloads import dit

PIXART = dit.load("pixart-sigma")


def test_layer_table_counts_every_block_weight_by_hand():
    flux = dit.load("flux.1-dev")
    D, F = 3072, 12288
    joint = 2 * (6 * D * D + 4 * D * D + 2 * D * F)
    single = 3 * D * D + (3 * D + F) * D + (D + F) * D
    table = dit_bits.dit_layer_table(flux)
    assert table["params"].sum() == 19 * joint + 38 * single
    assert table["layer"].nunique() == 57


def test_sensitive_layers_get_more_bits_within_the_budget():
    table = dit_bits.dit_layer_table(PIXART)
    coef = np.where(table["name"].str.endswith("fc2"), 100.0, 1.0)
    result = dit_bits.allocate_dit_bits(PIXART, [4, 8], coef=coef, avg_bits=6)
    widths = result.widths
    assert result.avg_bits <= 6 + 1e-9
    assert widths.max() == 8 and widths[table["name"].str.endswith("fc2").to_numpy()].min() == 8


def test_measured_loss_table_and_memory_budget():
    """MixDQ: one layer collapses at 4 bits (measured), the rest do not care; a memory budget of
    ~4.4 bits (int4-g128 stores 4.25) keeps that one at 8."""
    table = dit_bits.dit_layer_table(PIXART)
    losses = np.tile([1.0, 0.9], (len(table), 1))
    losses[5] = [1e6, 1.0]
    budget = table["params"].sum() * 4.4 / 8
    result = dit_bits.allocate_dit_bits(PIXART, ["int4-g128", "int8"], loss_table=losses,
                                        memory_budget_bytes=budget)
    assert result.bytes_ <= budget and result.widths[5] == 8
    assert (result.widths == 4).sum() >= len(table) - 20


def test_capped_second_metric():
    """ViDiT-Q: minimize one metric, cap another (here the second metric only tolerates 8-bit
    layers 0-3, so the cap forces them up although the first metric prefers 4)."""
    table = dit_bits.dit_layer_table(PIXART)
    first = np.tile([0.0, 1.0], (len(table), 1))
    second = np.zeros((len(table), 2))
    second[:4, 0] = 1.0
    result = dit_bits.allocate_dit_bits(PIXART, [4, 8], loss_table=first, avg_bits=8, loss_caps=((second, 0.5),))
    assert (result.widths[:4] == 8).all() and (result.widths[4:] == 4).all()


def test_mixed_model_prices_between_the_uniform_ones():
    table = dit_bits.dit_layer_table(PIXART)
    coef = np.random.default_rng(0).lognormal(0, 1.5, len(table))
    result = dit_bits.allocate_dit_bits(PIXART, [4, 8, 16], coef=coef, avg_bits=8)
    mixed = dit_bits.layer_precisions(PIXART, result)
    hw = hardware.load("h200-sxm-calibrated")
    bf16 = cost.predict_dit(PIXART, hw)
    mix = cost.predict_dit(PIXART, hw, layer_precision=mixed)
    w4 = cost.predict_dit(PIXART, hw, w_bits=4, a_bits=8)
    assert w4.memory["weights"] < mix.memory["weights"] < bf16.memory["weights"]
    assert mix.step.time_s <= bf16.step.time_s


def test_bad_coef_length_is_an_error():
    with pytest.raises(ValueError, match="coef: expected 196 values"):
        dit_bits.allocate_dit_bits(PIXART, [4, 8], coef=[1.0, 2.0], avg_bits=6)
