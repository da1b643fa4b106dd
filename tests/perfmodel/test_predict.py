"""Request metrics: properties that must hold for any device, model and scenario."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hardware
import perfmodel
import workloads
from perfmodel.predict import DoesNotFitError, mean_decode_step, step_time
from perfmodel.ops import Precision, step_ops
from perfmodel.roofline import mean_max_affine
from workloads import Scenario

MODELS = ["llama-3-8b", "qwen3-0.6b", "mixtral-8x7b", "deepseek-v3", "opt-6.7b", "falcon-7b", "gpt2"]
DEVICES = ["h200-sxm", "h200-sxm-calibrated", "a100-80gb-sxm", "l4", "mi300x"]
scenarios = st.fixed_dictionaries({
    "batch": st.integers(1, 256), "prompt": st.integers(1, 4096), "gen": st.integers(1, 1024),
    "w_bits": st.sampled_from([4, 8, 16]), "kv_bits": st.sampled_from([8, 16]), "tp": st.sampled_from([1, 2, 8])})
FAST = settings(max_examples=25, deadline=None)


def _predict(model, device, **kw):
    return perfmodel.evaluate(workloads.load(model), hardware.load(device), Scenario(**kw))


@FAST
@given(sc=scenarios, model=st.sampled_from(MODELS), device=st.sampled_from(DEVICES),
       factor=st.floats(1.0, 8.0))
def test_more_bandwidth_or_flops_is_never_slower(sc, model, device, factor):
    hw = hardware.load(device)
    faster_mem = dataclasses.replace(hw, hbm_bytes_per_s=hw.hbm_bytes_per_s * factor)
    faster_flops = dataclasses.replace(hw, flops_per_s={k: v * factor for k, v in hw.flops_per_s.items()})
    if hw.calibration:  # calibrated rates win over peaks: scale those too
        cal = hw.calibration
        faster_mem = dataclasses.replace(faster_mem, calibration=dataclasses.replace(
            cal, memory_bytes_per_s=cal.memory_bytes_per_s * factor,
            memory_read_bytes_per_s=cal.memory_read_bytes_per_s * factor, sm_bytes_per_s=cal.sm_bytes_per_s * factor,
            norm_bytes_per_s=cal.norm_bytes_per_s * factor, concat_bytes_per_s=cal.concat_bytes_per_s * factor))
        faster_flops = dataclasses.replace(faster_flops, calibration=dataclasses.replace(
            cal, matmul_flops_per_s={k: v * factor for k, v in cal.matmul_flops_per_s.items()}))
    m, s = workloads.load(model), Scenario(**sc)
    base = perfmodel.evaluate(m, hw, s)
    for other in (faster_mem, faster_flops):
        fast = perfmodel.evaluate(m, other, s)
        assert np.all(fast["ttft_s"] <= base["ttft_s"] * (1 + 1e-12))
        assert np.all(fast["tpot_s"] <= base["tpot_s"] * (1 + 1e-12))


@FAST
@given(sc=scenarios, model=st.sampled_from(MODELS), device=st.sampled_from(DEVICES), extra=st.integers(1, 4096))
def test_more_tokens_are_never_cheaper(sc, model, device, extra):
    base = _predict(model, device, **sc)
    more_prompt = _predict(model, device, **{**sc, "prompt": sc["prompt"] + extra})
    more_gen = _predict(model, device, **{**sc, "gen": sc["gen"] + extra})
    if not _crosses_kernel_switch(model, device, sc, sc["prompt"] + extra):
        assert np.all(more_prompt["ttft_s"] >= base["ttft_s"] * (1 - 1e-12))
    assert np.all(more_gen["e2e_s"] >= base["e2e_s"] * (1 - 1e-12))
    assert np.all(more_prompt["kv_bytes"] > base["kv_bytes"])


def _crosses_kernel_switch(model, device, sc, prompt) -> bool:
    """Whether some prefill GEMM goes from <= 128 rows to > 64 rows on a calibrated spec: past 128
    rows a second row of tiles doubles the blocks streaming weights, which the model prices as
    faster streaming (tests/perfmodel/test_roofline.py; cuBLAS shows such edges too,
    validate/reports/gemm_rows/h200)."""
    if hardware.load(device).calibration is None:
        return False
    spec, p = workloads.load(model), Precision(sc["w_bits"], 16, sc["kv_bits"])

    def rows(tokens):
        ops = step_ops(spec, seqs=sc["batch"], new_tokens=tokens, past=0.0, p=p, tp=sc["tp"], sparse_budget=0,
                       logits_tokens=sc["batch"])
        return np.array([float(np.max(op.m)) for op in ops if op.kind in ("matmul", "moe")])

    before, after = rows(sc["prompt"]), rows(prompt)
    return bool(np.any((before <= 128) & (after > np.maximum(before, 64))))


@FAST
@given(model=st.sampled_from(MODELS), bits=st.sampled_from([4, 8, 16]), scale=st.sampled_from([2, 4]))
def test_bits_scale_bytes_linearly(model, bits, scale):
    m = workloads.load(model)
    from perfmodel.memory import kv_cache_bytes, weight_bytes
    p1, p2 = Precision(16, 16, bits), Precision(16, 16, bits * scale)
    assert kv_cache_bytes(m, p2, 1000) == pytest.approx(scale * kv_cache_bytes(m, p1, 1000))
    # linear weights scale with bits (8 and 16 carry no group overhead); embeddings and norms stay 16-bit
    w8, w16 = weight_bytes(m, Precision(8, 16, 16)), weight_bytes(m, Precision(16, 16, 16))
    fixed = m.embedding_params() * 2 + (m.n_layers * m.norms_per_layer + 1) * m.norm_params() * 2
    assert (w16 - fixed) == pytest.approx(2 * (w8 - fixed))


@FAST
@given(model=st.sampled_from(MODELS), device=st.sampled_from(DEVICES))
def test_vectorized_equals_scalar(model, device):
    rng = np.random.default_rng(0)
    n = 6
    cols = dict(batch=rng.integers(1, 64, n), prompt=rng.integers(1, 2048, n), gen=rng.integers(1, 512, n),
                w_bits=rng.choice([4, 8, 16], n), tp=rng.choice([1, 2, 4], n))
    vec = _predict(model, device, **cols)
    for i in range(n):
        one = _predict(model, device, **{k: v[i] for k, v in cols.items()})
        for key in ("ttft_s", "tpot_s", "e2e_s", "total_bytes", "max_batch"):
            assert vec[key][i] == pytest.approx(one[key][0], rel=1e-12)


@pytest.mark.parametrize("device", ["h200-sxm", "h200-sxm-calibrated"])
def test_mean_decode_equals_stepping_through_every_token(device):
    m, hw, p = workloads.load("llama-3-8b"), hardware.load(device), Precision(16, 16, 16)
    batch, prompt, gen = 32, 4000, 200
    steps = [float(step_time(m, hw, seqs=batch, new_tokens=1.0, past=prompt + j,
                             p=p)["time_s"]) for j in range(gen - 1)]
    mean = float(mean_decode_step(m, hw, seqs=batch, past_first=prompt, past_last=prompt + gen - 2, p=p)["time_s"])
    assert mean == pytest.approx(np.mean(steps), rel=1e-3)


def test_mean_max_affine_exact():
    t = np.linspace(0, 1, 200001)
    for u0, u1, v0, v1 in [(0, 2, 1, 1), (3, 1, 0, 4), (1, 1, 2, 2), (0, 0, 0, 0), (5, 6, 1, 2)]:
        brute = np.mean(np.maximum(u0 + (u1 - u0) * t, v0 + (v1 - v0) * t))
        assert mean_max_affine(u0, u1, v0, v1) == pytest.approx(brute, abs=1e-4)


def test_mean_max_affine_arrays_equal_floats_row_by_row():
    """The array form (each row's branch chosen apart: crossing rows fixed up after the common
    one) gives each row the doubles of the float form, for crossing and one-signed rows,
    broadcast operands and 0-d arrays."""
    rng = np.random.default_rng(3)
    u0, u1, v0, v1 = rng.random((4, 2000))
    u1[::7] = v1[::7]  # touching ends: w1 = 0
    arrays = mean_max_affine(u0, u1, v0, v1)
    assert 0 < np.mean((u0 - v0) * (u1 - v1) < 0) < 1
    assert [float(x) for x in arrays] == [mean_max_affine(*map(float, row)) for row in zip(u0, u1, v0, v1)]
    broadcast = mean_max_affine(u0, 0.5, v0, v1)
    assert [float(x) for x in broadcast] == [mean_max_affine(float(a), 0.5, float(c), float(d))
                                             for a, c, d in zip(u0, v0, v1)]
    for row in ((0.0, 2.0, 1.0, 1.0), (3.0, 1.0, 0.0, 4.0), (5.0, 6.0, 1.0, 2.0)):
        assert float(mean_max_affine(*map(np.asarray, row))) == mean_max_affine(*row)


def test_decode_is_memory_bound_and_prefill_compute_bound_on_h200():
    row = perfmodel.predict(workloads.load("llama-3-8b"), hardware.load("h200-sxm"),
                            Scenario(batch=1, prompt=2048, gen=128)).row(0)
    assert row["decode_bound"] == "memory" and row["prefill_bound"] == "compute"
    # batch-1 decode reads every weight once: TPOT ~ weights / bandwidth
    weights = 8_030_261_248 * 2 - 128256 * 4096 * 2
    assert row["tpot_s"] == pytest.approx(weights / 4.8e12, rel=0.05)


def test_memory_fit_and_max_batch():
    m, hw = workloads.load("llama-3.1-70b"), hardware.load("h200-sxm")
    pred = perfmodel.predict(m, hw, Scenario(batch=[1, 4096], prompt=32768, gen=512, tp=[1, 1]))
    # 141 GB of bf16 weights and one 33K-token context's 11 GB of KV do not fit in 151 GB
    assert list(pred["fits"]) == [False, False]
    with pytest.raises(DoesNotFitError, match=r"needs .* GB per device .* has 151.4 GB"):
        pred.require_fit()
    two = perfmodel.predict(m, hw, Scenario(batch=8, prompt=4096, gen=512, tp=2))
    assert bool(two["fits"][0]) and two["max_batch"][0] >= 8


def test_context_above_model_maximum_is_an_error():
    with pytest.raises(ValueError, match="exceeds gpt2's maximum context of 1024"):
        perfmodel.predict(workloads.load("gpt2"), hardware.load("h200-sxm"), Scenario(prompt=1000, gen=100))


def test_breakdown_rows_sum_to_the_step():
    m, hw = workloads.load("qwen3-8b"), hardware.load("h200-sxm-calibrated")
    pred = perfmodel.predict(m, hw, Scenario(batch=4, prompt=512, gen=2))
    frame = pred.breakdown("prefill")
    assert frame["time_s"].sum() == pytest.approx(pred["ttft_s"][0], rel=1e-9)
    assert set(frame["bound"]) <= {"compute", "memory", "overhead", "comm"}


def test_chunked_threaded_evaluation_equals_one_pass():
    from perfmodel.engines import DEFAULT_ENGINE, load
    from perfmodel.predict import CHUNK, _evaluate

    rng = np.random.default_rng(1)
    n = CHUNK + 1234
    sc = Scenario(batch=rng.integers(1, 128, n), prompt=rng.integers(1, 4096, n), gen=rng.integers(1, 512, n),
                  w_bits=rng.choice([4, 16], n))
    m, hw = workloads.load("llama-3-8b"), hardware.load("h200-sxm-calibrated")
    whole = _evaluate(m, hw, sc, load(DEFAULT_ENGINE))
    for workers in (1, 2):
        chunked = perfmodel.evaluate(m, hw, sc, workers=workers, path="reference")
        fast = perfmodel.evaluate(m, hw, sc, workers=workers)
        for key in ("ttft_s", "tpot_s", "total_bytes", "decode_bound"):
            assert np.array_equal(chunked[key], whole[key])
        for key in ("ttft_s", "tpot_s", "total_bytes"):  # the fast path: equal to rounding
            np.testing.assert_allclose(fast[key], whole[key], rtol=1e-12)
        assert np.array_equal(fast["decode_bound"], whole["decode_bound"])


def test_kept_pool_is_reentrant_and_reports_chunk_errors():
    """evaluate keeps its worker pool between calls: a call from one of the pool's own threads
    runs on that thread (waiting on its own pool could deadlock), every chunk's columns equal a
    one-thread evaluation bit for bit, and an error in a later chunk reaches the caller."""
    import importlib

    predict = importlib.import_module("perfmodel.predict")
    rng = np.random.default_rng(3)
    n = 2 * predict.CHUNK + 17
    sc = Scenario(batch=rng.integers(1, 300, n), prompt=rng.integers(1, 5000, n), gen=rng.integers(1, 900, n),
                  w_bits=rng.choice([4, 8, 16], n), tp=rng.choice([1, 2], n))
    m, hw = workloads.load("llama-3-8b"), hardware.load("h200-sxm-calibrated")
    perfmodel.evaluate(m, hw, sc, workers=1)  # grows the priced tables to these counts (their pieces
    # may then be cut elsewhere: equal to rounding, not bit for bit, to an evaluation before)
    one = perfmodel.evaluate(m, hw, sc, workers=1)
    two = perfmodel.evaluate(m, hw, sc, workers=2)
    inside = predict._pool(2).submit(perfmodel.evaluate, m, hw, sc, workers=2).result(timeout=120)
    for result in (two, inside):
        assert list(result) == list(one)
        for key, values in one.items():
            assert np.array_equal(np.asarray(result[key]), np.asarray(values)), key

    real = predict._metrics

    def failing(model, hw, part, engine, groups=None, dest=None):
        if np.shares_memory(part.batch, sc.batch[-1:]):  # the last chunk (a view of the sweep's rows)
            raise RuntimeError("chunk failed")
        return real(model, hw, part, engine, groups, dest)

    predict._metrics = failing
    try:
        with pytest.raises(RuntimeError, match="chunk failed"):
            perfmodel.evaluate(m, hw, sc, workers=2)
    finally:
        predict._metrics = real


def _evaluate_in_child(n: int) -> float:
    sc = Scenario(batch=np.arange(1, n + 1) % 64 + 1, prompt=512, gen=64)
    result = perfmodel.evaluate(workloads.load("llama-3-8b"), hardware.load("h200-sxm-calibrated"), sc, workers=2)
    return float(result["tpot_s"].sum())


def test_forked_child_makes_its_own_pool():
    """A child forked after evaluate made its pool has the pool's object but not its threads: it
    must make its own (else its chunks would wait forever)."""
    import multiprocessing

    from perfmodel.predict import CHUNK

    n = 2 * CHUNK + 5
    here = _evaluate_in_child(n)  # the parent's pool exists now
    with multiprocessing.get_context("fork").Pool(1) as children:
        assert children.apply_async(_evaluate_in_child, (n,)).get(timeout=60) == here


def test_one_degree_verdicts_equal_the_array_rules_every_call():
    """check_parallelism of one number (its verdict kept per model and spec) refuses and allows
    the same degrees as the array rules, on every call, with the same message; check_context of
    one scenario refuses past the model's context like an array of them."""
    from perfmodel.checks import ParallelismError, check_parallelism, tp_allowed
    from perfmodel.predict import check_context

    hw = hardware.load("h200-sxm")
    for name in ("llama-3-8b", "gpt2", "deepseek-v3"):
        model = workloads.load(name)
        degrees = np.arange(1.0, 17.0)
        allowed = tp_allowed(model, hw, degrees)
        for _ in range(2):
            for tp, ok in zip(degrees, allowed):
                if ok:
                    check_parallelism(model, hw, float(tp))
                    continue
                with pytest.raises(ParallelismError) as one:
                    check_parallelism(model, hw, float(tp))
                with pytest.raises(ParallelismError) as many:
                    check_parallelism(model, hw, np.array([tp]))
                assert str(one.value) == str(many.value) and f"tp: {tp:g}" in str(one.value)
    model = workloads.load("llama-3-8b")
    check_context(model, Scenario(prompt=model.max_context - 10, gen=10))
    for sc in (Scenario(prompt=model.max_context - 10, gen=11), Scenario(prompt=[1, model.max_context - 10], gen=11)):
        with pytest.raises(ValueError, match=f"prompt \\+ gen: {model.max_context + 1} tokens exceeds"):
            check_context(model, sc)
