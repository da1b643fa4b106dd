"""Execution settings of the simulator (ServeConfig: decode/prefill padding to graph sizes, a
static cache's attention span, sequential prefill and decode forwards): hand derivations from the
step tables, padding never reduces time, monotonicity, determinism and bad input."""
import numpy as np
import pytest

import hardware
import workloads
from serving import workload as W
from serving.simulator import ServeConfig, ServeError, iteration_s, make_instance, padded, simulate

SIZES = (1, 2, 4, 8, 16, 32, 64, 128)
PREFILL = (16, 32, 64, 128, 256, 512, 1024, 2048)


@pytest.fixture(scope="module")
def model_hw():
    return workloads.load("llama-3-8b"), hardware.load("h200-sxm-calibrated")


def inst_of(model_hw, **kw):
    model, hw = model_hw
    cfg = ServeConfig(max_num_batched_tokens=2048, max_num_seqs=128, prefix_caching=False, **kw)
    return make_instance(model, hw, engine="torch-compile", cfg=cfg)


def test_padded_is_smallest_size_at_least_n():
    assert [padded(n, SIZES) for n in (1, 3, 5, 33, 128, 129)] == [1, 4, 8, 64, 128, 129]
    assert padded(7, None) == 7


def test_sequential_padded_static_iteration_by_hand(model_hw):
    """Sequential forwards: each chunk is a one-chunk prefill step at its padded length over the
    static span (c x S key pairs), then one decode step of the padded batch at context S each."""
    S = 1536
    inst = inst_of(model_hw, decode_batch_sizes=SIZES, prefill_token_sizes=PREFILL, fused_prefill_decode=False,
                   static_cache_tokens=S)
    c = inst.costs
    got = iteration_s(inst.cfg, c, 37, 37 * 500.0, [(300, 0), (90, 200)], 1)
    want = c.mixed_step_s(0, 0.0, [(512, S - 513 / 2)], 1) + c.mixed_step_s(0, 0.0, [(128, S - 129 / 2)], 1) \
        + c.decode_step_s(64, 64 * (S - 1.0))
    assert got == pytest.approx(want, rel=1e-12)


def test_defaults_price_as_the_fused_vllm_step(model_hw):
    inst = inst_of(model_hw)
    c = inst.costs
    assert iteration_s(inst.cfg, c, 10, 5000.0, [(100, 0)], 1) == c.mixed_step_s(10, 5000.0, [(100, 0)], 11)
    assert iteration_s(inst.cfg, c, 10, 5000.0, [], 0) == c.decode_step_s(10, 5000.0)


@pytest.mark.parametrize("fused", [True, False])
def test_padding_never_reduces_time_and_time_grows_with_work(model_hw, fused):
    plain = inst_of(model_hw, fused_prefill_decode=fused)
    pad = inst_of(model_hw, fused_prefill_decode=fused, decode_batch_sizes=SIZES, prefill_token_sizes=PREFILL)
    prev = 0.0
    for n in range(1, 129, 7):
        a = iteration_s(plain.cfg, plain.costs, n, n * 700.0, [], 0)
        b = iteration_s(pad.cfg, pad.costs, n, n * 700.0, [], 0)
        assert b >= a * (1 - 1e-12)
        assert b >= prev * (1 - 1e-12)  # more decodes never take less time
        prev = b
    prev = 0.0
    for chunk in range(1, 2048, 97):
        a = iteration_s(plain.cfg, plain.costs, 5, 5000.0, [(chunk, 0)], 1)
        b = iteration_s(pad.cfg, pad.costs, 5, 5000.0, [(chunk, 0)], 1)
        assert b >= a * (1 - 1e-12)
        assert b >= prev * (1 - 1e-12)
        prev = b


def test_static_cache_decode_does_not_grow_with_context(model_hw):
    """Under a static cache every decode reads the whole row: context makes no difference, and it
    costs at least the paged step at the longest real context."""
    st = inst_of(model_hw, static_cache_tokens=2048)
    pg = inst_of(model_hw)
    short = iteration_s(st.cfg, st.costs, 64, 64 * 100.0, [], 0)
    assert short == iteration_s(st.cfg, st.costs, 64, 64 * 1900.0, [], 0)
    assert short >= iteration_s(pg.cfg, pg.costs, 64, 64 * 1900.0, [], 0)


def test_sequential_costs_at_least_fused(model_hw):
    fused, seq = inst_of(model_hw), inst_of(model_hw, fused_prefill_decode=False)
    for chunks in ([(512, 0)], [(300, 0), (600, 100), (40, 0)]):
        assert iteration_s(seq.cfg, seq.costs, 50, 50 * 800.0, chunks, 1) >= \
            iteration_s(fused.cfg, fused.costs, 50, 50 * 800.0, chunks, 1)


def test_simulation_with_settings_is_deterministic_and_slower(model_hw):
    rng = np.random.default_rng(3)
    n = 200
    req = W.Requests(np.cumsum(rng.exponential(1 / 15, n)), rng.integers(128, 1025, n), rng.integers(32, 257, n),
                     np.zeros(n, np.int64))
    kw = dict(decode_batch_sizes=SIZES, prefill_token_sizes=PREFILL, fused_prefill_decode=False,
              static_cache_tokens=1536, kv_blocks=128 * 1536 // 16)
    a = simulate(inst_of(model_hw, **kw), req)
    b = simulate(inst_of(model_hw, **kw), req)
    assert np.array_equal(a.finish_s, b.finish_s) and np.array_equal(a.first_token_s, b.first_token_s)
    base = simulate(inst_of(model_hw, kv_blocks=128 * 1536 // 16), req)
    assert np.all(np.isfinite(a.finish_s)) and a.finish_s.max() >= base.finish_s.max()


def test_bad_settings_are_one_line_errors(model_hw):
    for kw, field in ((dict(decode_batch_sizes=(4, 2)), "decode_batch_sizes"),
                      (dict(prefill_token_sizes=(0, 16)), "prefill_token_sizes"),
                      (dict(fused_prefill_decode="no"), "fused_prefill_decode"),
                      (dict(static_cache_tokens=0), "static_cache_tokens")):
        with pytest.raises(ServeError, match=field) as err:
            ServeConfig(**kw)
        assert "\n" not in str(err.value)
    inst = inst_of(model_hw, static_cache_tokens=256)
    req = W.Requests(np.zeros(1), np.array([300]), np.array([10]), np.zeros(1, np.int64))
    with pytest.raises(ServeError, match="static_cache_tokens: request 0 needs 310"):
        simulate(inst, req)
