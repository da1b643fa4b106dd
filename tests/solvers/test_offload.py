"""FlexGen-style offloading: the T4 reproduction, LP vs brute force for every catalog model,
monotonicity, and the errors."""
import dataclasses
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hardware
import workloads
from perfmodel.ops import expected_experts_touched
from perfmodel.tiers import MemoryTiers
from solvers import offload as o
from solvers.offload import OffloadError, OffloadPolicy

FLEXGEN_OPT30B_TOK_S = 7.32          # FlexGen paper, OPT-30B on one T4, prompt 512, output 32
T4_SCENARIO = workloads.Scenario(prompt=512, gen=32)


@pytest.fixture(scope="module")
def t4_system():
    return o.flexgen_t4()


@pytest.fixture(scope="module")
def opt30b():
    return workloads.load("opt-30b")


@pytest.fixture(scope="module")
def published(opt30b):
    """The published policy as FlexGen's runtime placed it (whole tensors; see flexgen_runtime_weights)."""
    pol = o.FLEXGEN_OPT30B_POLICY
    return dataclasses.replace(pol, weights=o.flexgen_runtime_weights(opt30b, pol.weights), experts=None)


def test_flexgen_runtime_places_whole_tensors(opt30b):
    g, c, d = o.flexgen_runtime_weights(opt30b, (0.2, 0.8, 0.0))
    # attention: q, k, v, out of equal size -> only out_proj's midpoint (87.5%) is past 80%: 1 of 12 D^2
    D, F = opt30b.d_model, opt30b.d_ff
    small = 2 * D + 2 * D + D          # out bias, attention norm; MLP's fc1 bias lands on CPU, fc2 bias + norm on GPU
    total = 4 * D * D + 4 * D + 2 * D + 2 * D * F + F + D + 2 * D
    assert g == pytest.approx((D * D + small - 2 * D + D + 2 * D) / total, rel=1e-3)
    assert g == pytest.approx(1 / 12, rel=0.01) and d == 0.0 and g + c == pytest.approx(1.0)
    assert o.flexgen_runtime_weights(opt30b, (0, 1, 0)) == pytest.approx((0, 1, 0))


def test_flexgen_t4_published_policy_within_10_percent(t4_system, opt30b, published):
    hw, tiers = t4_system
    real = o.evaluate_policy(opt30b, hw, T4_SCENARIO, published, tiers)
    nominal = o.evaluate_policy(opt30b, hw, T4_SCENARIO, o.FLEXGEN_OPT30B_POLICY, tiers)
    assert real.throughput_tok_s == pytest.approx(FLEXGEN_OPT30B_TOK_S, rel=0.10)
    assert nominal.throughput_tok_s == pytest.approx(FLEXGEN_OPT30B_TOK_S, rel=0.10)
    assert real.fits                     # it ran on the 16 GB T4
    # decode is bound by CPU attention over the CPU-resident KV plus the weight copy (FlexGen's finding)
    assert real.streams["decode"]["cpu"] > real.streams["decode"]["gpu"]
    assert real.streams["prefill"]["gpu"] > real.streams["prefill"]["h2d"]


def test_flexgen_t4_lp_finds_a_policy_at_least_as_good(t4_system, opt30b, published):
    hw, tiers = t4_system
    reference = o.evaluate_policy(opt30b, hw, T4_SCENARIO, published, tiers)
    best = o.offload_policy(opt30b, hw, T4_SCENARIO, tiers)
    assert best.fits and best.status == "optimal"
    assert best.throughput_tok_s >= reference.throughput_tok_s
    again = o.evaluate_policy(opt30b, hw, T4_SCENARIO, best.policy, tiers)
    assert again.throughput_tok_s == pytest.approx(best.throughput_tok_s, rel=1e-6)
    assert best.candidates_frame().throughput_tok_s.max() == pytest.approx(best.throughput_tok_s, rel=1e-5)
    # the same (gbs, nb) as published, searched over fractions only, is at least as good too
    same_block = o.offload_policy(opt30b, hw, T4_SCENARIO, tiers, gbs=48, n_batches=3)
    assert same_block.throughput_tok_s >= reference.throughput_tok_s * (1 - 1e-9)


def _triples(step):
    ticks = np.round(np.arange(0, 1 + 1e-9, step), 6)
    return [(a, b, round(1 - a - b, 6)) for a in ticks for b in ticks if a + b <= 1 + 1e-9]


@pytest.mark.parametrize("name", workloads.names())
def test_lp_beats_brute_force_on_every_catalog_model(name):
    """On a small case per model: the LP's optimum is feasible, at least as good as every feasible
    point of a grid of fractions, and equal to the cost model evaluated at the LP's policy."""
    model = workloads.load(name)
    hw = hardware.load("t4")
    sc = workloads.Scenario(prompt=64, gen=4)
    dense = _triples(0.25)
    experts = _triples(0.5) if model.is_moe else [None]
    rows = [[*w, *c, *h, *(e if e is not None else w)]
            for w, c, h, e in itertools.product(dense, dense, dense, experts)]
    grid = o.evaluate_fractions(model, hw, sc, 2, 2, np.array(rows))
    lp = o.offload_policy(model, hw, sc, gbs=2, n_batches=2)
    check = o.evaluate_policy(model, hw, sc, lp.policy)
    assert lp.fits and check.fits
    assert check.throughput_tok_s == pytest.approx(lp.throughput_tok_s, rel=1e-6)
    # the LP's own objective agrees with the cost model evaluated at its solution
    (lp_objective,) = lp.candidates_frame().throughput_tok_s
    assert lp_objective == pytest.approx(lp.throughput_tok_s, rel=1e-5)
    feasible = grid[grid.fits]
    if len(feasible):
        assert lp.throughput_tok_s >= feasible.throughput_tok_s.max() * (1 - 1e-6)


@settings(max_examples=12, deadline=None)
@given(link=st.floats(1.0, 8.0), gpu=st.floats(1.0, 4.0), dram=st.floats(1.0, 4.0))
def test_throughput_is_monotonic_in_bandwidth_and_memory(link, gpu, dram):
    model = workloads.load("qwen3-14b")
    hw = hardware.load("t4")
    sc = workloads.Scenario(prompt=128, gen=8)
    base_tiers = MemoryTiers.from_hardware(hw, dram_capacity_bytes=40e9)
    grid = dict(gbs=(2, 8), n_batches=(1, 2, 4))
    base = o.offload_policy(model, hw, sc, base_tiers, **grid).throughput_tok_s
    faster = dataclasses.replace(base_tiers, h2d_bytes_per_s=base_tiers.h2d_bytes_per_s * link)
    bigger = dataclasses.replace(base_tiers, hbm_capacity_bytes=base_tiers.hbm_capacity_bytes * gpu,
                                 dram_capacity_bytes=base_tiers.dram_capacity_bytes * dram)
    assert o.offload_policy(model, hw, sc, faster, **grid).throughput_tok_s >= base * (1 - 1e-9)
    assert o.offload_policy(model, hw, sc, bigger, **grid).throughput_tok_s >= base * (1 - 1e-9)


def test_overlap_modes_bound_each_other(t4_system, opt30b, published):
    hw, tiers = t4_system
    times = {mode: o.evaluate_policy(opt30b, hw, T4_SCENARIO, published, tiers, overlap=mode).total_s
             for mode in ("max", "flexgen", "sum")}
    assert times["max"] <= times["flexgen"] <= times["sum"]
    assert times["max"] < times["sum"]


def test_cpu_attention_choice_changes_where_attention_runs(t4_system, opt30b, published):
    hw, tiers = t4_system
    on_cpu = o.evaluate_policy(opt30b, hw, T4_SCENARIO, published, tiers)
    on_gpu = o.evaluate_policy(opt30b, hw, T4_SCENARIO, dataclasses.replace(published, cpu_attention=False), tiers)
    assert on_gpu.streams["decode"]["cpu"] == 0.0 and on_cpu.streams["decode"]["cpu"] > 0
    # copying the whole CPU-resident cache each step costs more link time than queries and outputs
    assert on_gpu.streams["decode"]["h2d"] > on_cpu.streams["decode"]["h2d"]


def test_touch_probabilities_match_uniform_routing():
    model = workloads.load("mixtral-8x7b")
    for tokens in (1, 4, 64):
        touch = o.touch_probabilities(model, tokens)
        assert touch.sum() == pytest.approx(expected_experts_touched(model.n_experts, model.top_k, tokens))
    skewed = o.touch_probabilities(model, 4, popularity=np.arange(1, 9))
    assert np.all(np.diff(skewed) <= 0) and skewed.sum() < o.touch_probabilities(model, 4).sum()
    with pytest.raises(OffloadError, match="expert_popularity"):
        o.touch_probabilities(model, 4, popularity=[1, 2, 3])


def test_popular_experts_stay_on_the_gpu():
    """With skewed routing, keeping a share of experts on the GPU saves more link bytes than with
    uniform routing: the GPU holds the popular ones."""
    model = workloads.load("qwen3-30b-a3b")
    hw = hardware.load("t4")
    sc = workloads.Scenario(prompt=64, gen=8)
    popularity = 1.0 / np.arange(1, model.n_experts + 1)
    half = OffloadPolicy(1, 1, (1, 0, 0), (1, 0, 0), (1, 0, 0), (0.5, 0.5, 0))
    none = OffloadPolicy(1, 1, (1, 0, 0), (1, 0, 0), (1, 0, 0), (0.0, 1.0, 0))
    saved = {}
    for label, pop in (("uniform", None), ("skewed", popularity)):
        a = o.evaluate_policy(model, hw, sc, half, expert_popularity=pop).streams["decode"]["h2d"]
        b = o.evaluate_policy(model, hw, sc, none, expert_popularity=pop).streams["decode"]["h2d"]
        saved[label] = 1 - a / b
    assert saved["uniform"] == pytest.approx(0.5, rel=1e-6)
    assert saved["skewed"] > saved["uniform"]


def test_result_frames(t4_system, opt30b, published):
    hw, tiers = t4_system
    res = o.offload_policy(opt30b, hw, T4_SCENARIO, tiers, gbs=(16, 32), n_batches=(1, 2))
    frame = res.to_frame()
    assert len(frame) == 1
    for column in ("gbs", "n_batches", "wg", "cc", "throughput_tok_s", "gpu_peak_bytes", "cpu_peak_bytes",
                   "disk_peak_bytes", "fits"):
        assert column in frame
    assert list(res.streams_frame().index) == ["prefill", "decode"]
    assert set(res.candidates_frame().gbs) == {16, 32}
    moe = o.offload_policy(workloads.load("mixtral-8x7b"), hardware.load("t4"), workloads.Scenario(prompt=64, gen=4),
                           gbs=2, n_batches=1)
    assert "gpu_experts" in moe.to_frame()


def test_model_that_does_not_fit_even_on_disk(t4_system):
    hw, _ = t4_system
    small = MemoryTiers.from_hardware(hw, flash_capacity_bytes=100e9)
    with pytest.raises(OffloadError, match=r"does not fit even on disk: llama-3.1-405b needs .* missing \d"):
        o.offload_policy(workloads.load("llama-3.1-405b"), hw, workloads.Scenario(prompt=64, gen=4), small)


def test_gpu_budget_below_the_resident_minimum(t4_system, opt30b):
    hw, _ = t4_system
    tiny = MemoryTiers.from_hardware(hw, hbm_capacity_bytes=1e9)
    with pytest.raises(OffloadError, match=r"GPU memory below the resident minimum: .* needs \d.* GB .* has 0.90 GB"):
        o.offload_policy(opt30b, hw, T4_SCENARIO, tiny)


def test_fixed_fractions_that_cannot_fit(t4_system, opt30b):
    hw, tiers = t4_system
    with pytest.raises(OffloadError, match="no placement fits"):
        o.offload_policy(opt30b, hw, T4_SCENARIO, tiers, gbs=1, n_batches=1, fixed={"wg": 1.0})


@pytest.mark.parametrize("call, match", [
    (lambda m, hw: OffloadPolicy(0, 1), "gbs: 0"),
    (lambda m, hw: OffloadPolicy(4, 1, weights=(0.5, 0.6, 0.0)), "weights: .* sum to 1.1"),
    (lambda m, hw: OffloadPolicy(4, 1, kv=(0.5, 0.5)), "kv: "),
    (lambda m, hw: o.offload_policy(m, hw, T4_SCENARIO, overlap="partial"), "overlap: 'partial'"),
    (lambda m, hw: o.offload_policy(m, hw, T4_SCENARIO, memory_fraction=1.5), "memory_fraction: 1.5"),
    (lambda m, hw: o.offload_policy(m, hw, T4_SCENARIO, fixed={"xg": 0.1}), "fixed: xg"),
    (lambda m, hw: o.offload_policy(m, hw, T4_SCENARIO, gbs=[0]), "gbs: "),
    (lambda m, hw: o.offload_policy(m, hw, workloads.Scenario(prompt=[64, 128])), "one scenario"),
    (lambda m, hw: o.offload_policy(m, hw, workloads.Scenario(prompt=4000, gen=200)), "prompt \\+ gen"),
    (lambda m, hw: o.evaluate_fractions(m, hw, T4_SCENARIO, 1, 1, np.ones((2, 12))), "sum to 1"),
    (lambda m, hw: o.evaluate_policy(m, hw, T4_SCENARIO, "policy"), "policy: expected an OffloadPolicy"),
    (lambda m, hw: o.flexgen_runtime_weights(workloads.load("mixtral-8x7b"), (1, 0, 0)), "dense, non-MLA"),
])
def test_bad_input_errors_name_the_field(t4_system, opt30b, call, match):
    with pytest.raises(OffloadError, match=match):
        call(opt30b, t4_system[0])
