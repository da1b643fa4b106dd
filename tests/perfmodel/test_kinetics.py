"""Kinetics eFLOPs cost: the paper's reference values, its qualitative findings, and bad input."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import workloads
from hardware.spec import Calibration, Hardware
from perfmodel import kinetics
from perfmodel.kinetics import B200_INTENSITY, KINETICS_PARAMS, KineticsError, kinetics_cost, phi
from perfmodel.ops import Precision

SMALL = ("qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b")


def h200(**changes) -> Hardware:
    """An H200-like spec built directly (datasheet numbers), independent of the preset files."""
    hw = Hardware(name="h200-test", title="H200 test", kind="gpu", flops_per_s={"fp32": 67e12, "bf16": 989e12, "fp8": 1979e12},
                  hbm_capacity_bytes=141e9, hbm_bytes_per_s=4.8e12, dram_capacity_bytes=2e12,
                  dram_bytes_per_s=300e9, flash_capacity_bytes=30e12, flash_read_bytes_per_s=7e9,
                  flash_latency_s=1e-4, host_link_bytes_per_s=64e9, host_link_latency_s=1e-5,
                  cpu_flops_per_s=5e12, cpu_cores=112, price_per_hour_usd=4.0, power_w=700.0,
                  devices_per_node=8, device_link="nvlink4", device_link_bytes_per_s=450e9)
    return dataclasses.replace(hw, **changes)


def model(name):
    return workloads.load(name)


# REFERENCES.md, Kinetics: Lin = 128, N = 1, I = 562.5, paper parameter counts; Tera-eFLOPs.
REFERENCE = [("qwen3-0.6b", 4096, 583), ("qwen3-0.6b", 32768, 35_079), ("qwen3-8b", 4096, 812),
             ("qwen3-8b", 32768, 45_734), ("qwen3-14b", 4096, 950), ("qwen3-14b", 32768, 51_276),
             ("qwen3-32b", 4096, 1_601), ("qwen3-32b", 32768, 83_065)]


@pytest.mark.parametrize("name, gen, tera", REFERENCE)
def test_reference_costs_within_one_percent(name, gen, tera):
    cost = kinetics_cost(model(name), 128, gen, 1, params=KINETICS_PARAMS[name])
    assert cost.efflops(B200_INTENSITY) / 1e12 == pytest.approx(tera, rel=0.01)


def test_reference_best_of_8():
    cost = kinetics_cost(model("qwen3-8b"), 128, 32768, 8, params=KINETICS_PARAMS["qwen3-8b"])
    assert cost.efflops() / 1e12 == pytest.approx(363_437, rel=0.01)


@pytest.mark.parametrize("name, value", [("qwen3-0.6b", 705), ("qwen3-8b", 84)])
def test_reference_phi(name, value):
    assert phi(model(name), 128, 32768, params=KINETICS_PARAMS[name]) == pytest.approx(value, rel=0.01)


def test_phi_is_the_cost_ratio_without_the_prompt_reads():
    """The closed form equals the exact term ratio once the prompt-KV read (2 I Lin D Lout) is removed."""
    m = model("qwen3-4b")
    cost = kinetics_cost(m, 300, 8192, 1)
    prompt_reads = B200_INTENSITY * m.kv_bytes_per_token(16) * 300 * 8192
    exact = (cost.efflops() - cost.linear_flops - prompt_reads) / cost.linear_flops
    assert phi(m, 300, 8192) == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("gen", [4096, 8192, 16384, 32768])
def test_attention_dominates_long_generations_on_small_models(name, gen):
    """Kinetics' finding: Phi > 10 for Lout >= 4096 on the small models, with either parameter count."""
    m = model(name)
    assert phi(m, 128, gen, params=KINETICS_PARAMS[name]) > 10
    assert phi(m, 128, gen) > 10
    assert kinetics_cost(m, 128, gen).attention_to_linear() > 10


def test_exact_parameter_counts_differ_from_the_papers_where_the_head_is_stored_twice():
    m = model("qwen3-0.6b")
    assert m.param_count() == 596_049_920
    assert KINETICS_PARAMS["qwen3-0.6b"] == pytest.approx(m.param_count() + m.vocab_size * m.d_model, rel=1e-3)
    assert KINETICS_PARAMS["qwen3-4b"] == pytest.approx(model("qwen3-4b").param_count(), rel=1e-3)


@pytest.mark.parametrize("name", ["qwen3-0.6b", "qwen3-8b", "qwen3-32b"])
@pytest.mark.parametrize("budget", [1024, 2048])
def test_block_topk_sparse_cuts_cost_several_fold(name, budget):
    m = model(name)
    dense = kinetics_cost(m, 128, 32768).efflops()
    sparse = kinetics_cost(m, 128, 32768, sparse_budget=budget, block_size=16).efflops()
    assert dense / sparse > 3


def test_sparse_cost_matches_the_papers_block_topk_form_inside_its_range():
    """Kinetics block top-k: attended = B Lout - (B - Lin)^2 / 2; selection = (2 Lin + Lout)/bs Lout H d L
    FLOPs and (2 Lin + N Lout)/bs Lout K d L bytes (bf16), all written out here from the paper's terms."""
    m = model("qwen3-8b")
    P, H, K, dL, I = 8.19e9, 32, 8, 128 * 36, B200_INTENSITY
    Lin, bs, B = 128, 16, 1024
    for Lout, N in [(4096, 1), (32768, 1), (32768, 8), (2048, 4)]:
        kept = B * Lout - 0.5 * (B - Lin) ** 2
        compute = (2 * P * Lout + 4 * kept * H * dL + (2 * Lin + Lout) / bs * Lout * H * dL) * N
        memory = 4 * kept * K * dL * N + (2 * Lin + N * Lout) / bs * Lout * K * dL
        cost = kinetics_cost(m, Lin, Lout, N, params=P, sparse_budget=B, block_size=bs)
        assert cost.efflops(I) == pytest.approx(compute + I * memory, rel=1e-3)


def test_budget_above_the_context_attends_like_dense():
    m = model("qwen3-1.7b")
    dense = kinetics_cost(m, 100, 500)
    sparse = kinetics_cost(m, 100, 500, sparse_budget=10_000)
    assert sparse.attention_flops == pytest.approx(dense.attention_flops)
    assert sparse.selection_flops > 0  # the scoring still runs


@settings(max_examples=60, deadline=None)
@given(prompt=st.integers(0, 20000), gen=st.integers(1, 20000), budget=st.integers(1, 50000))
def test_attended_tokens_properties(prompt, gen, budget):
    dense = kinetics.attended_tokens(prompt, gen)
    sparse = kinetics.attended_tokens(prompt, gen, budget)
    assert sparse <= dense * (1 + 1e-12)
    assert sparse <= budget * gen * (1 + 1e-12)
    assert kinetics.attended_tokens(prompt, gen, budget + 1) >= sparse
    # against the discrete sum over decode steps t = 1..gen of min(prompt + t, budget)
    t = np.arange(1, gen + 1)
    assert abs(sparse - np.minimum(prompt + t, budget).sum()) <= gen


def test_shared_prefix_reads_the_prompt_once():
    m = model("qwen3-8b")
    shared = kinetics_cost(m, 2000, 1000, 8)
    private = kinetics_cost(m, 2000, 1000, 8, shared_prefix=False)
    extra = 7 * 2000 * 1000 * m.kv_bytes_per_token(16)
    assert private.kv_read_bytes - shared.kv_read_bytes == pytest.approx(extra)
    assert private.attention_flops == pytest.approx(shared.attention_flops)


def test_cost_broadcasts_over_a_sweep():
    gens = np.array([1024, 4096, 16384])
    cost = kinetics_cost(model("qwen3-0.6b"), 128, gens[:, None], np.array([1, 4, 16])[None, :])
    assert cost.efflops().shape == (3, 3)
    assert np.all(np.diff(cost.efflops(), axis=0) > 0) and np.all(np.diff(cost.efflops(), axis=1) > 0)
    assert len(cost.to_frame()) == 9


def test_kv_bits_scale_memory_not_compute():
    m = model("qwen3-8b")
    full, half = kinetics_cost(m, 128, 8192), kinetics_cost(m, 128, 8192, kv_bits=8)
    assert half.kv_read_bytes == pytest.approx(full.kv_read_bytes / 2)
    assert half.compute_flops == pytest.approx(full.compute_flops)


def test_seconds_and_dollars_on_a_device():
    hw = h200()
    cost = kinetics_cost(model("qwen3-8b"), 128, 8192, 4)
    seconds = cost.device_seconds(hw)
    assert seconds == pytest.approx(cost.compute_flops / 989e12 + cost.memory_bytes / 4.8e12)
    assert seconds == pytest.approx(cost.efflops(kinetics.intensity(hw)) / 989e12)
    assert cost.dollars(hw) == pytest.approx(seconds * 4.0 / 3600)


def test_calibrated_rates_win_over_datasheet():
    cal = Calibration(matmul_flops_per_s={"bf16": 780e12}, memory_bytes_per_s=4.3e12, kernel_overhead_s=5e-6)
    hw = h200(calibration=cal)
    assert kinetics.intensity(hw) == pytest.approx(780e12 / 4.3e12)
    assert kinetics.intensity(hw, calibrated=False) == pytest.approx(989e12 / 4.8e12)
    cost = kinetics_cost(model("qwen3-0.6b"), 128, 4096)
    assert cost.device_seconds(hw) > cost.device_seconds(hw.datasheet())


@pytest.mark.parametrize("kwargs, field", [
    (dict(prompt=-1, gen=10), "prompt"), (dict(prompt=10, gen=0), "gen"), (dict(prompt=float("nan"), gen=10), "prompt"),
    (dict(prompt=10, gen=10, samples=0), "samples"), (dict(prompt=10, gen=10, samples=1.5), "samples"),
    (dict(prompt=10, gen=10, params=-5), "params"), (dict(prompt=10, gen=10, sparse_budget=-1), "sparse_budget"),
    (dict(prompt=10, gen=10, block_size=0), "block_size"), (dict(prompt=10, gen=10, kv_bits=0), "kv_bits"),
])
def test_bad_input_names_the_field(kwargs, field):
    with pytest.raises(KineticsError, match=field):
        kinetics_cost(model("qwen3-8b"), **kwargs)


def test_context_above_the_model_maximum_is_an_error():
    with pytest.raises(KineticsError, match="maximum context of 40960"):
        kinetics_cost(model("qwen3-8b"), 128, 65536)
    with pytest.raises(KineticsError, match="intensity"):
        kinetics_cost(model("qwen3-8b"), 128, 1024).efflops(0)


def test_sparse_attention_ops_count_the_gather_twice():
    m = model("llama-3-8b")
    p = Precision(16, 16, 16)
    ops = {op.name: op for op in kinetics.sparse_attention_ops(m, 4, 65536, 2048, 16, p)}
    kv_token = 2 * 8 * 128 * 2  # one layer, bf16
    assert ops["kv_gather"].bytes == pytest.approx(2 * 4 * 2048 * kv_token)
    assert ops["block_score"].kv_bytes == pytest.approx(4 * 65536 / 16 * 8 * 128 * 2)
    assert ops["sparse_attention"].kv_bytes == pytest.approx(4 * 2049 * kv_token)
    fused = kinetics.sparse_attention_ops(m, 4, 65536, 2048, 16, p, materialized_gather=False)
    assert "kv_gather" not in {op.name for op in fused}
