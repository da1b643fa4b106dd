"""The benchmark routing workloads (validate/moe_routing.py) and the MoE case predictor's use of them."""
import numpy as np
import pytest

import hardware
from validate import moe_routing
from validate.moe_routing import _level, _power_law_counts, rank0_load
from validate.predict_cases import predict_case


def test_balanced_workload_by_hand():
    # 4 tokens, 8 experts, top 2: stride 4, token t picks t and t + 4; rank 0 of 2 holds experts 0-3
    assert rank0_load(4, 8, 2, 2, "balanced") == (4.0, 4.0)
    # 2 tokens (fewer than the stride) spread over it: picks 0, 4 and 2, 6; rank 0 gets 0 and 2
    assert rank0_load(2, 8, 2, 2, "balanced") == (2.0, 2.0)
    # one rank holds all: every pair, every expert picked
    assert rank0_load(64, 8, 2, 1, "balanced") == (128.0, 8.0)


def test_uniform_routing_where_no_workload_is_named():
    assert rank0_load(64, 8, 2, 1, None) is None
    assert rank0_load(64, 8, 2, 1, "") is None


@pytest.mark.parametrize("bad, field", [(("balanced", 3), "moe_ep"), (("power_law_x", 1), "distribution"),
                                        (("zipf", 1), "distribution")])
def test_bad_workloads_name_the_field(bad, field):
    distribution, ep = bad
    with pytest.raises(ValueError, match=field):
        rank0_load(16, 8, 2, ep, distribution)


@pytest.mark.parametrize("tokens, experts, top_k, ep, alpha", [
    (16384, 8, 2, 1, 1.01), (16384, 8, 2, 4, 1.2), (48, 512, 22, 8, 1.2), (1, 128, 8, 64, 1.01),
    (3072, 256, 8, 32, 1.01)])
def test_power_law_draw_keeps_the_collectors_invariants(tokens, experts, top_k, ep, alpha):
    counts = _power_law_counts(tokens, experts, top_k, ep, alpha, np.random.default_rng(7))
    assert counts.sum() == tokens * top_k  # every pair placed
    assert counts.min() >= 0 and counts.max() <= tokens  # a token picks an expert at most once
    per_rank = counts.reshape(ep, -1).sum(axis=1)
    assert per_rank[0] == per_rank.max()  # the timed rank is the busiest


def test_power_law_load_is_the_busiest_rank_and_repeatable():
    pairs, touched = rank0_load(4096, 128, 8, 16, "power_law_1.2")
    assert pairs >= 4096 * 8 / 16  # at least the mean rank's share
    assert 1 <= touched <= 8
    assert rank0_load(4096, 128, 8, 16, "power_law_1.2") == (pairs, touched)


@pytest.mark.parametrize("seed", range(20))
def test_level_fill_equals_one_increment_at_a_time(seed):
    rng = np.random.default_rng(seed)
    row = rng.integers(0, 20, size=rng.integers(1, 12))
    cap, units = 22, int(rng.integers(0, 60))
    expected = row.copy()
    for _ in range(units):  # the collector's rule: the least-loaded expert below the cap, first first
        valid = np.flatnonzero(expected < cap)
        if not valid.size:
            break
        expected[valid[np.argmin(expected[valid])]] += 1
    assert np.array_equal(_level(row, units, cap), expected)


def test_expert_parallel_case_prices_only_its_ranks_experts():
    hw = hardware.load("h200-sxm-calibrated")
    case = {"kind": "moe", "tokens": 256, "experts": 128, "top_k": 8, "hidden": 4096, "inter": 1536,
            "moe_tp": 1, "dtype": "bf16", "distribution": "balanced"}
    one, sixteen = (predict_case({**case, "moe_ep": ep}, hw) for ep in (1, 16))
    # 16 ranks: the rank computes 128 of 2048 pairs over 8 of 128 experts
    assert sixteen < one / 4
    assert moe_routing.rank0_load(256, 128, 8, 16, "balanced") == (128.0, 8.0)
