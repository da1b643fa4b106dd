"""The fast path (perfmodel.fastpath) equals the per-op reference path (perfmodel.steps) to a
relative 1e-9 on random scenarios of every model family, precision, engine and tp."""
import numpy as np
import pytest

import hardware
import perfmodel
import workloads
from perfmodel import engines, fastpath
from perfmodel.predict import _precision_groups
from workloads.scenario import Scenario

#: One model per family the descriptors cover: dense GQA, q/k norm, MoE, MLA + MoE, MHA + LayerNorm.
MODELS = ("llama-3-8b", "qwen3-8b", "mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v3", "opt-30b", "gpt2")
SPECS = ("h200-sxm-calibrated", "h200-sxm", "h100-sxm-calibrated")


def _scenarios(model, seed: int, n: int = 300) -> Scenario:
    """Random scenarios over two values of each precision field and tp (16 groups: each group's
    coefficients are priced once, the cost that dominates this test)."""
    rng = np.random.default_rng(seed)
    heads = [t for t in (1, 2, 4, 8) if model.n_heads % t == 0]
    longest = model.max_context // 2
    pair = lambda values: rng.choice(rng.choice(values, 2, replace=False), n)  # noqa: E731
    return Scenario(batch=rng.integers(1, 600, n), prompt=rng.integers(1, min(longest, 20000), n),
                    gen=rng.integers(1, min(longest, 3000), n), w_bits=pair([4, 8, 16]), a_bits=pair([8, 16]),
                    kv_bits=pair([4, 8, 16]), tp=pair(heads) if len(heads) > 1 else 1,
                    samples=rng.choice([1, 4], n), sparse_budget=rng.choice([0, 512], n))


@pytest.mark.parametrize("name", MODELS)
def test_fast_path_equals_the_per_op_path(name):
    """Every engine on every model; the spec rotates over calibrated and datasheet ones."""
    model = workloads.load(name)
    for seed, engine in enumerate(engines.names()):
        spec = SPECS[(seed + MODELS.index(name)) % len(SPECS)]
        hw = hardware.load(spec)
        sc = _scenarios(model, seed)
        fast = perfmodel.evaluate(model, hw, sc, engine)
        ref = perfmodel.evaluate(model, hw, sc, engine, path="reference")
        assert list(fast) == list(ref)
        for key, values in ref.items():
            if np.asarray(values).dtype.kind == "f":
                np.testing.assert_allclose(fast[key], values, rtol=1e-9, atol=0, err_msg=f"{name} {spec} {engine} {key}")
            else:
                assert np.array_equal(np.asarray(fast[key]), np.asarray(values)), (name, spec, engine, key)


def test_counts_past_the_table_and_single_scenarios_agree():
    model, hw = workloads.load("llama-3-8b"), hardware.load("h200-sxm-calibrated")
    batch = np.array([1, 3, 64, 65, 1024, 1025, 4000, 2 ** 20], dtype=float)
    sc = Scenario(batch=batch, prompt=np.array([1, 2, 7, 4096, 1, 1025, 8192, 1], dtype=float), gen=17)
    fast = perfmodel.evaluate(model, hw, sc)
    ref = perfmodel.evaluate(model, hw, sc, path="reference")
    np.testing.assert_allclose(fast["ttft_s"], ref["ttft_s"], rtol=1e-9)
    np.testing.assert_allclose(fast["tpot_s"], ref["tpot_s"], rtol=1e-9)
    one = perfmodel.predict(model, hw, Scenario(batch=65, prompt=1025, gen=9)).row()
    assert one["ttft_s"] == pytest.approx(float(ref["ttft_s"][5] if False else perfmodel.evaluate(
        model, hw, Scenario(batch=65, prompt=1025, gen=9), path="reference")["ttft_s"][0]), rel=1e-9)


def test_scalar_counts_with_varying_precision_broadcast():
    """One batch and prompt priced over several tp and bit widths (the planner's fit suggestions)."""
    model, hw = workloads.load("llama-3.1-405b"), hardware.load("h200-sxm-calibrated")
    sc = Scenario(batch=3, prompt=2048, gen=64, tp=np.array([2.0, 4.0, 8.0]), w_bits=np.array([16.0, 8.0, 4.0]))
    fast, ref = perfmodel.evaluate(model, hw, sc), perfmodel.evaluate(model, hw, sc, path="reference")
    for key in ("ttft_s", "tpot_s", "total_bytes"):
        np.testing.assert_allclose(fast[key], ref[key], rtol=1e-9)


def test_grids_of_any_dimension_and_size():
    """An N-d grid (the app's compare mesh) and one over the chunk size, mixed precisions."""
    model, hw = workloads.load("qwen3-8b"), hardware.load("h200-sxm-calibrated")
    batch, w_bits, tp = np.meshgrid([1.0, 8.0, 700.0], [16.0, 4.0], [1.0, 2.0, 8.0], indexing="ij")
    for sc in (Scenario(batch=batch, prompt=3000, gen=100, w_bits=w_bits, tp=tp),
               Scenario(batch=np.resize(batch.ravel(), 70000), prompt=np.arange(1.0, 70001.0) % 5000 + 1,
                        w_bits=np.resize(w_bits.ravel(), 70000), tp=np.resize(tp.ravel(), 70000))):
        fast, ref = perfmodel.evaluate(model, hw, sc), perfmodel.evaluate(model, hw, sc, path="reference")
        for key in ("ttft_s", "tpot_s", "ttft_p90_s"):
            np.testing.assert_allclose(fast[key], ref[key], rtol=1e-9)


def test_op_structure_is_probed_not_assumed():
    """Datasheet GEMMs fold into affine terms, calibrated ones go to per-run tables, an all-reduce
    at tp 1 (no payload) folds, at tp 2 it is rescaled per count."""
    model = workloads.load("llama-3-8b")
    p, engine = perfmodel.Precision(16.0, 16.0, 16.0), engines.load("vllm")
    datasheet = fastpath.count_pricing(model, hardware.load("h200-sxm"), engine, p, 1, "tokens", "prefill")
    calibrated = fastpath.count_pricing(model, hardware.load("h200-sxm-calibrated"), engine, p, 2, "tokens", "prefill")
    assert not datasheet.gemms and not datasheet.rescaled and not datasheet.rebuilt
    assert {op_index for op_index in (g.index for g in calibrated.gemms)} and len(calibrated.rescaled) == 1


def test_bad_path_is_a_one_line_error():
    with pytest.raises(ValueError, match="path: 'slow' is not one of fast, reference"):
        perfmodel.evaluate(workloads.load("gpt2"), hardware.load("h200-sxm"), Scenario(), path="slow")


@pytest.mark.parametrize("name", MODELS)
def test_single_scenarios_take_the_scalar_route_and_equal_the_per_op_path(name):
    """A Scenario of scalars is priced in Python floats (StackedPricing._at); every column equals
    the per-op path's, for counts inside and past the direct table, tp > 1 (a rescaled all-reduce),
    sparse attention and samples, on every spec kind and two engines."""
    model = workloads.load(name)
    rng = np.random.default_rng(MODELS.index(name))
    heads = [t for t in (1, 2, 4, 8) if model.n_heads % t == 0]
    longest = model.max_context // 2
    for case, engine in enumerate(("vllm", engines.names()[MODELS.index(name) % len(engines.names())])):
        hw = hardware.load(SPECS[(case + MODELS.index(name)) % len(SPECS)])
        for batch, prompt in ((3, 7), (64, 1), (5, 300), (2000, 1), (int(rng.integers(1, 64)), int(rng.integers(longest // 2, longest)))):
            sc = Scenario(batch=batch, prompt=min(prompt, longest), gen=int(rng.integers(1, 500)), w_bits=16 if case else 8,
                          tp=heads[-1] if batch % 2 else 1, samples=2 if batch == 5 else 1,
                          sparse_budget=512 if batch == 64 else 0)
            fast, ref = perfmodel.evaluate(model, hw, sc, engine), perfmodel.evaluate(model, hw, sc, engine, path="reference")
            assert list(fast) == list(ref)
            for key, values in ref.items():
                assert len(fast[key]) == 1, key
                if np.asarray(values).dtype.kind == "f":
                    np.testing.assert_allclose(fast[key], values, rtol=1e-9, atol=0, err_msg=f"{name} {engine} {sc} {key}")
                else:
                    assert np.array_equal(np.asarray(fast[key]), np.asarray(values)), (name, engine, key)


def test_gemm_runs_where_a_term_switches_inside_the_run():
    """Every token count from the table's end to 2400 (runs of tile_m rows where a GEMM turns
    from tile- to power- or memory-limited inside the run are priced GEMM by GEMM, the others as
    one line per run): fast == per-op at each count, for two precision groups."""
    model, hw = workloads.load("llama-3-8b"), hardware.load("h200-sxm-calibrated")
    prompt = np.arange(fastpath.DIRECT_COUNTS + 1.0, 2401.0)
    sc = Scenario(batch=1, prompt=np.concatenate([prompt, prompt]), gen=2,
                  w_bits=np.repeat([16.0, 8.0], prompt.size), a_bits=np.repeat([16.0, 8.0], prompt.size),
                  tp=np.repeat([1.0, 2.0], prompt.size))
    fast, ref = perfmodel.evaluate(model, hw, sc), perfmodel.evaluate(model, hw, sc, path="reference")
    for key in ("ttft_s", "prefill_compute_s", "prefill_memory_s", "ttft_p90_s"):
        np.testing.assert_allclose(fast[key], ref[key], rtol=1e-9, atol=0, err_msg=key)
    groups = ((16.0, 16.0, 16.0, 128.0, 1.0), (8.0, 8.0, 16.0, 128.0, 2.0))
    stacked = fastpath.stacked_pricing(model, hw, engines.load(perfmodel.engines.DEFAULT_ENGINE), groups, "tokens", "prefill")
    cells = stacked._any_cells
    table = stacked._stacked_cells(int(np.ceil(2400 / cells.tile_m)))
    assert table.switching.any() and not table.switching.all()  # both kinds of run are exercised


@pytest.mark.parametrize("spec", ["h200-sxm-calibrated", "h200-sxm"])
def test_fused_runs_equal_the_terms_priced_apart(spec):
    """The affine folds, GEMM runs and all-reduce pieces summed per (group, run) (`FusedRuns`)
    give what their own tables give, at every count from the direct table's end past the runs
    where a GEMM switches term or an all-reduce changes algorithm, in four precision groups of
    two tps; and the per-op path agrees."""
    model, hw = workloads.load("llama-3-8b"), hardware.load(spec)
    engine = engines.load(perfmodel.engines.DEFAULT_ENGINE)
    groups = ((16.0, 16.0, 16.0, 128.0, 1.0), (8.0, 16.0, 8.0, 128.0, 2.0), (4.0, 16.0, 16.0, 128.0, 4.0),
              (16.0, 16.0, 8.0, 128.0, 8.0))
    stacked = fastpath.stacked_pricing(model, hw, engine, groups, "tokens", "prefill")
    x = np.concatenate([np.arange(fastpath.DIRECT_COUNTS + 1.0, 20001.0), [65536.0, 1.0e6 + 3.0, 3.0e7]])
    x = np.tile(x, len(groups))
    group = np.repeat(np.arange(len(groups)), x.size // len(groups))
    fused = stacked._fused_runs(x, {})
    assert fused is not None and len(fused.line_of) >= 2
    # some runs switch inside (tiles on the calibrated spec, all-reduce algorithms): their counts
    # are pieces of their own; and a pricing whose switching runs are left to `_structured`
    # (where `_count_pieces` declines) gives the same
    assert fused.counted and not fused.switching
    uncounted = fastpath.StackedPricing(stacked.pricings, hw, stacked.tps, groups)
    uncounted._count_pieces = lambda fused, rows: None
    assert uncounted._fused_runs(x, {}).switching
    apart = stacked._structured(x, group, {})
    for pricing in (stacked, uncounted):
        together = pricing._add_fused(pricing._fused_runs(x, {}), x, group, {})
        assert list(together) == list(apart)
        for key in apart:
            np.testing.assert_allclose(together[key], apart[key], rtol=1e-13, atol=0, err_msg=key)
    rows = np.arange(0, x.size, 97)
    sc = Scenario(batch=1, prompt=x[rows], gen=1, w_bits=np.array(groups)[group[rows], 0],
                  kv_bits=np.array(groups)[group[rows], 2], tp=np.array(groups)[group[rows], 4])
    fast, ref = perfmodel.evaluate(model, hw, sc), perfmodel.evaluate(model, hw, sc, path="reference")
    for key in ("ttft_s", "prefill_compute_s", "prefill_memory_s"):
        np.testing.assert_allclose(fast[key], ref[key], rtol=1e-9, atol=0, err_msg=key)


def test_run_pieces_rebuild_every_row_bit_for_bit():
    """`_row_pieces` keys rows by their bits: each row's piece holds its exact values (0.0 and
    -0.0 apart), switching rows share piece 0, and the ids take the smallest unsigned type."""
    rng = np.random.default_rng(5)
    columns = np.repeat(rng.random((4, 300)), rng.integers(1, 40, 300), axis=1)
    columns[:, 7] = 0.0
    columns[:, 8] = -0.0
    switching = np.zeros(columns.shape[1], dtype=bool)
    switching[[3, 50, 51]] = True
    columns[:, switching] = 0.0
    piece, values = fastpath._row_pieces([(columns[:, :100], switching[:100]), (columns[:, 100:], switching[100:])], 4)
    assert np.array_equal(values[:, piece].view(np.int64), columns.view(np.int64))
    assert np.all(piece[switching] == 0) and np.all(piece[~switching] != 0)
    assert piece[7] != piece[8] and values.shape[1] == len({columns[:, j].tobytes() for j in np.flatnonzero(~switching)}) + 1
    assert piece.dtype == np.uint16 and values.shape[1] > 256


# opt-30b's NCCL all-reduce on the A100's fitted ring link crosses a protocol kink past the table (on
# NVLink 4-5 the fitted link runs NVLS there: one line, no kink to find)
@pytest.mark.parametrize("name, spec, engine", [("llama-3-8b", "h200-sxm-calibrated", "vllm"),
                                                ("opt-30b", "a100-80gb-sxm-calibrated", "torch-compile"),
                                                ("qwen3-30b-a3b", "h200-sxm-calibrated", "sglang")])
def test_allreduce_pieces_equal_the_per_op_path_at_every_count(name, spec, engine):
    """Rescaled all-reduces past the table come from lines over pieces of runs found by
    bisection (StackedPricing._rescaled_pieces): at every token count from the table's end to
    6000 and at counts spread to 2e7, for tp 2, 4 and 8, the prefill step equals the per-op
    path's, and some group's all-reduce is more than one line (a kink is crossed), each
    group's pieces few."""
    model, hw = workloads.load(name), hardware.load(spec)
    dense = np.arange(fastpath.DIRECT_COUNTS + 1.0, 6001.0)
    spread = np.unique(np.round(np.geomspace(6001.0, 2e7, 600)))
    prompt = np.concatenate([dense, spread])
    tps = np.array([2.0, 4.0, 8.0])
    sc = Scenario(batch=1, prompt=np.tile(prompt, tps.size), gen=2, tp=np.repeat(tps, prompt.size))
    fast = perfmodel.evaluate(model, hw, sc, engine)
    ref = perfmodel.evaluate(model, hw, sc, engine, path="reference")
    for key in ("ttft_s", "prefill_compute_s", "prefill_memory_s", "ttft_p10_s", "ttft_p90_s"):
        if key in ref:
            np.testing.assert_allclose(fast[key], ref[key], rtol=1e-9, atol=0, err_msg=key)
    assert np.array_equal(np.asarray(fast["prefill_bound"]), np.asarray(ref["prefill_bound"]))
    groups = tuple((16.0, 16.0, 16.0, 128.0, tp) for tp in tps)
    stacked = fastpath.stacked_pricing(model, hw, engines.load(engine), groups, "tokens", "prefill")
    pieces = stacked._rescaled_pieces(int(np.ceil(2e7 / fastpath.RUN_COUNTS)))
    per_group = [np.unique(row[row > 0]).size for row in pieces.piece.reshape(-1, pieces.width)]
    assert max(per_group) > 1 and all(n < 200 for n in per_group), per_group  # kinks crossed, few pieces


@pytest.mark.parametrize("name", MODELS)
def test_context_lines_equal_the_per_op_path(name):
    """Decode steps whose context ops come from ContextLines (sequences within the table, dense
    attention) and prefills whose attention comes from PrefillLines (polynomials of the prompt):
    every column equals the per-op path's, for the engines and specs where those ops fit; a
    chunk mixing such rows with rows past the table and sparse rows too."""
    model = workloads.load(name)
    rng = np.random.default_rng(100 + MODELS.index(name))
    heads = [t for t in (1, 2, 4, 8) if model.n_heads % t == 0]
    longest = model.max_context // 2
    checked = 0
    for spec, engine in (("h200-sxm-calibrated", "vllm"), ("h100-sxm-calibrated", "torch-compile"), ("h200-sxm", "trtllm"),
                         ("h200-sxm-calibrated", "trtllm")):  # the last: XQA's split work (ContextLines.split_work)
        hw, n = hardware.load(spec), 200
        sc = Scenario(batch=rng.integers(1, 257, n), prompt=rng.integers(1, min(longest, 8000), n),
                      gen=rng.integers(1, min(longest, 2000), n), w_bits=rng.choice([4, 16], n),
                      kv_bits=rng.choice([8, 16], n), tp=rng.choice(heads[-2:], n), samples=rng.choice([1, 4], n))
        mixed = sc.replace(batch=np.where(np.arange(n) % 7 == 0, 3000, sc.batch),
                           sparse_budget=np.where(np.arange(n) % 5 == 0, 256, 0))
        for scenarios in (sc, mixed):
            groups = _precision_groups(scenarios)[0]
            checked += fastpath.context_lines(model, hw, engines.load(engine), groups) is not None
            checked += fastpath.prefill_lines(model, hw, engines.load(engine), groups) is not None
            fast = perfmodel.evaluate(model, hw, scenarios, engine)
            ref = perfmodel.evaluate(model, hw, scenarios, engine, path="reference")
            for key, values in ref.items():
                if np.asarray(values).dtype.kind == "f":
                    np.testing.assert_allclose(fast[key], values, rtol=1e-9, atol=0, err_msg=f"{name} {spec} {engine} {key}")
                else:
                    assert np.array_equal(np.asarray(fast[key]), np.asarray(values)), (name, spec, engine, key)
    assert checked >= 4  # the lines priced these steps (the datasheet spec's at least)


def test_precision_groups_match_distinct_rows_across_chunks():
    """Group coding chunk by chunk (small whole numbers counted, fractional bit widths and large
    quant groups sorted), on one thread and on a pool: the groups are the distinct rows of the
    five fields, each once, and each scenario's index names its own row."""
    from concurrent.futures import ThreadPoolExecutor

    from perfmodel.predict import CHUNK, GROUP_FIELDS

    rng = np.random.default_rng(7)
    n = 2 * CHUNK + 123
    sc = Scenario(batch=1, w_bits=rng.choice([4.0, 4.25, 8.0, 16.0], n), kv_bits=rng.choice([8, 16], n),
                  tp=rng.choice([1, 2, 8], n), quant_group=rng.choice([64, 128, 10 ** 9], n))
    with ThreadPoolExecutor(2) as pool:
        runs = (None, lambda fn, items: list(pool.map(fn, items)))
        for run in runs:
            groups, index = _precision_groups(sc, run)
            rows = np.stack([np.broadcast_to(getattr(sc, name), (n,)) for name in GROUP_FIELDS], axis=1)
            assert {tuple(r) for r in rows} == set(groups) and len(groups) == len(set(groups))
            assert np.array_equal(np.array(groups)[index], rows)


def test_precision_groups_by_span_arithmetic_match_distinct_rows():
    """Whole bit widths and tp over small spans are coded by arithmetic (`_span_groups`), one
    thread and a pool: the same groups, in the same order, as the levels' coding, and every
    scenario's index names its own row; a fractional width falls back to the levels."""
    from concurrent.futures import ThreadPoolExecutor

    from perfmodel.predict import CHUNK, GROUP_FIELDS, _level_groups, _span_groups

    rng = np.random.default_rng(11)
    n = 2 * CHUNK + 77
    sc = Scenario(batch=1, w_bits=rng.choice([4, 8, 16], n), a_bits=rng.choice([8, 16], n),
                  kv_bits=rng.choice([8, 16], n), tp=rng.choice([1, 2, 8], n))
    serial = lambda fn, items: [fn(item) for item in items]  # noqa: E731
    with ThreadPoolExecutor(2) as pool:
        for run in (serial, lambda fn, items: list(pool.map(fn, items))):
            groups, index = _span_groups(sc, run)
            rows = np.stack([np.broadcast_to(getattr(sc, name), (n,)) for name in GROUP_FIELDS], axis=1)
            assert {tuple(r) for r in rows} == set(groups) and len(groups) == len(set(groups))
            assert np.array_equal(np.array(groups)[index], rows)
            levels, by_levels = _level_groups(sc, run)
            assert levels == groups and np.array_equal(by_levels, index)
    assert _span_groups(sc.replace(w_bits=np.where(np.arange(n) == n - 1, 4.5, sc.w_bits)), serial) is False


def test_grid_with_scalar_prompt_on_every_engine_and_spec_kind():
    """The compare page's shape: a 4-d grid of batch, bits and tp with one prompt and gen (the
    lines then see array sequences and a number for the prompt; an op's components may be zero
    everywhere), on a datasheet and a calibrated spec, every engine."""
    model = workloads.load("llama-3-8b")
    mesh = np.meshgrid([1.0, 8.0, 64.0], [16.0, 8.0], [16.0, 8.0], [1.0, 2.0], indexing="ij")
    sc = Scenario(batch=mesh[0], w_bits=mesh[1], kv_bits=mesh[2], tp=mesh[3], prompt=1000, gen=8)
    for spec in ("h200-sxm", "h100-sxm-calibrated"):
        hw = hardware.load(spec)
        for engine in engines.names():
            fast, ref = perfmodel.evaluate(model, hw, sc, engine), perfmodel.evaluate(model, hw, sc, engine, path="reference")
            for key in ("ttft_s", "tpot_s", "prefill_compute_s", "decode_memory_s"):
                np.testing.assert_allclose(fast[key], ref[key], rtol=1e-9, atol=0, err_msg=f"{spec} {engine} {key}")


def test_scalar_counts_with_array_prompts_and_generations():
    """One batch with prompts and generations as arrays (the sweep's context rows): the lines see
    number sequences and groups but array prompts and contexts."""
    model, hw = workloads.load("llama-3-8b"), hardware.load("h200-sxm-calibrated")
    for prompt, gen in ((np.array([512.0]), 7), (np.array([1.0, 300.0, 5000.0]), np.array([2.0, 90.0, 1.0])),
                        (700, np.array([1.0, 64.0]))):
        sc = Scenario(batch=3, prompt=prompt, gen=gen)
        fast, ref = perfmodel.evaluate(model, hw, sc), perfmodel.evaluate(model, hw, sc, path="reference")
        for key in ("ttft_s", "tpot_s", "e2e_s", "decode_compute_s"):
            np.testing.assert_allclose(fast[key], ref[key], rtol=1e-9, atol=0, err_msg=key)


def test_dominant_polynomial_needs_every_coefficient_at_least_the_others():
    """A context op's time is its compute (or memory) polynomial without a maximum only where each
    coefficient is at least the other's in every column (then it is at least the other at every
    context >= 0); a crossing in any column keeps the maximum."""
    compute = np.array([[1.0, 2.0], [3.0, 1.0]])  # rows: c0, c1; columns: table columns
    memory = compute - 0.5
    assert fastpath._dominant(compute, memory) == "compute"
    assert fastpath._dominant(memory, compute) == "memory"
    crossing = compute.copy()
    crossing[1, 1] = 0.2  # column 1: compute 2 + 0.2 S, memory 1.5 + 0.5 S: they cross at S = 5/3
    assert fastpath._dominant(crossing, memory) == ""
    contexts = np.array([0.0, 10.0])
    assert np.all(np.diff(np.sign((2.0 + 0.2 * contexts) - (1.5 + 0.5 * contexts))) != 0)


@pytest.mark.parametrize("engine", ["vllm", "sglang", "trtllm", "torch-compile"])
def test_work_unit_attention_stays_on_the_tables(engine):
    """Attention families with work-unit terms (the serving engines' own kernels in the committed
    H200 spec, the suite's SDPA decode family) come from the fast path's tables, their work term
    beside the dot products' line (ContextLines.work) or priced per scenario (PrefillWork): before,
    such a family fell back to per-op pricing (exact, but the default scalar predict took 182 us
    against 91). Equality with the per-op path is test_context_lines_equal_the_per_op_path's."""
    model, hw = workloads.load("llama-3-8b"), hardware.load("h200-sxm-calibrated")
    groups = ((16.0, 16.0, 16.0, 128.0, 1.0), (8.0, 8.0, 8.0, 128.0, 2.0))
    profile = engines.load(engine)
    decode, prefill = fastpath.context_lines(model, hw, profile, groups), fastpath.prefill_lines(model, hw, profile, groups)
    assert decode is not None and prefill is not None
    # the work terms are there (not dropped): TensorRT-LLM's XQA splits its keys by its own rule
    # (roofline.KV_SPLIT_RULES), priced per scenario (ContextLines.split_work), the others as lines
    assert (decode.split_work if engine == "trtllm" else decode.work_rows) and prefill.work


@pytest.mark.parametrize("spec", SPECS)
def test_one_scenario_takes_the_sweep_route_s_numbers(spec):
    """A Scenario of scalars (the scalar route: the plan's route in Python floats) and the same
    scenario as a row of an array (the sweep's route) give the same numbers to a few ulps: counts in
    the direct table and past it (fused runs, tp 2's all-reduce among them), and past the runs one
    scenario fuses on its own (`_SCALAR_FUSED_RUNS`: its terms one by one)."""
    model, hw = workloads.load("llama-3.1-8b"), hardware.load(spec)
    longest = (fastpath._SCALAR_FUSED_RUNS + fastpath._RUN_Q0 + 8) * fastpath.RUN_COUNTS
    for batch, prompt, tp, engine in ((3, 7, 1, "vllm"), (8, 2048, 2, "vllm"), (64, 700, 1, "hf-eager"),
                                      (40, longest // 40, 1, "vllm")):
        one = perfmodel.evaluate(model, hw, Scenario(batch=batch, prompt=prompt, gen=33, tp=tp), engine)
        rows = perfmodel.evaluate(model, hw, Scenario(batch=[batch, 1], prompt=prompt, gen=33, tp=tp), engine)
        assert list(one) == list(rows)
        for key, values in one.items():
            if np.asarray(values).dtype.kind == "f":
                np.testing.assert_allclose(values[0], rows[key][0], rtol=1e-15, atol=0, err_msg=f"{spec} {batch} {key}")
            else:
                assert values[0] == rows[key][0], (spec, batch, key)


def test_float_columns_are_the_table_s_columns():
    """`float_column` reads a kept list of Python floats for a small table and the array itself for
    one too large to keep: the same doubles either way."""
    rng = np.random.default_rng(5)
    for shape in ((9, fastpath.DIRECT_COUNTS + 1), (4, fastpath._MAX_FLOAT_CELLS)):
        table = rng.random(shape)
        for at in (0, 17, shape[1] - 1):
            assert fastpath.float_column(table, at) == table[:, at].tolist()
