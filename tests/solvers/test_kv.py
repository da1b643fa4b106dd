"""KV budget solvers: capacity closed forms, least-compressed setting, budget split (closed form vs cvxpy)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import workloads
from perfmodel import longctx
from solvers import kv
from solvers.kv import KVBudgetError
from tests.perfmodel.test_kinetics import h200


@pytest.fixture(scope="module")
def llama():
    return workloads.load("llama-3.1-8b")


# -- capacity ------------------------------------------------------------------------------------
def test_max_concurrency_by_hand(llama):
    hw = h200()
    cap = kv.max_concurrency(llama, hw, 32768)
    free = hw.hbm_capacity_bytes - longctx.reserved_bytes(llama)
    assert cap.value == int(free // (32 * 2 * 8 * 128 * 2 * 32768))
    assert cap.value == longctx.concurrency_limit(llama, hw, 32768)
    assert kv.max_concurrency(llama, hw, 32768, kv_bits=8).value >= 2 * cap.value
    assert kv.max_concurrency(llama, hw, 32768, tp=2).value > 2 * cap.value


def test_max_context_is_the_inverse_of_max_concurrency(llama):
    hw = h200()
    ctx = kv.max_context(llama, hw, 16)
    assert ctx.bound_by == "hbm"
    assert kv.max_concurrency(llama, hw, ctx.value).value >= 16
    assert kv.max_concurrency(llama, hw, ctx.value + 64).value < 16


def test_max_context_capped_by_the_model(llama):
    cap = kv.max_context(llama, h200(), 1)
    assert cap.value == llama.max_context and cap.bound_by == "model max_context"


def test_smaller_hbm_budget_means_fewer_users(llama):
    hw = h200()
    assert kv.max_concurrency(llama, hw, 8192, hbm_budget_bytes=60e9).value < kv.max_concurrency(llama, hw, 8192).value


@pytest.mark.parametrize("call, match", [
    (lambda m, hw: kv.max_concurrency(m, hw, 32768, hbm_budget_bytes=10e9), "needs .* GB per device for weights"),
    (lambda m, hw: kv.max_concurrency(m, hw, 32768, hbm_budget_bytes=200e9), "exceeds .* of HBM"),
    (lambda m, hw: kv.max_concurrency(m, hw, 32768, hbm_budget_bytes=20e9), "one user at 32768 tokens needs"),
    (lambda m, hw: kv.max_concurrency(m, hw, 10 ** 6), "maximum context"),
    (lambda m, hw: kv.max_context(m, hw, 0), "users"),
    (lambda m, hw: kv.max_context(m, hw, 10 ** 7), "users need"),
])
def test_impossible_capacity_requests(llama, call, match):
    with pytest.raises(KVBudgetError if "context" not in match else ValueError, match=match):
        call(llama, h200())


# -- cheapest setting ------------------------------------------------------------------------------
def test_no_compression_when_the_target_is_loose(llama):
    best = kv.cheapest_kv_setting(llama, h200(), 8192, users=4, latency_target_s=1.0)
    assert (best.kv_bits, best.keep_tokens, best.think_ratio, best.sparse_budget) == (16, 8192, 0, 0)
    assert best.halvings == 0


def test_memory_target_is_met_with_the_least_compression(llama):
    hw = h200()
    target = 40e9
    best = kv.cheapest_kv_setting(llama, hw, 131072, users=64, memory_target_bytes=target)
    assert best.kv_bytes <= target
    frame = best.to_frame()
    assert (frame["kv_bytes"] <= target).all()
    assert best.halvings == frame["halvings"].min()
    # uncompressed needs 64 x 16 GiB: at least log2(1100 / 40) ~ 4.8 halvings are required
    assert best.halvings >= np.log2(64 * 131072 * 131072 / target)


def test_latency_target_is_met(llama):
    best = kv.cheapest_kv_setting(llama, h200(), 65536, users=32, latency_target_s=0.012)
    assert best.decode_s_per_token <= 0.012
    full = longctx.decode_time_s(llama, h200(), 65536, 32)
    assert full > 0.012  # the target needed compression


def test_weights_steer_the_choice(llama):
    hw = h200()
    avoid_quant = kv.cheapest_kv_setting(llama, hw, 65536, users=16, memory_target_bytes=20e9,
                                         weights={"kv_bits": 10.0, "think": 10.0})
    assert avoid_quant.kv_bits == 16 and avoid_quant.think_ratio == 0
    avoid_evict = kv.cheapest_kv_setting(llama, hw, 65536, users=16, memory_target_bytes=20e9,
                                         weights={"evict": 10.0})
    assert avoid_evict.keep_tokens == 65536


def test_sparse_reads_cut_latency_not_memory(llama):
    hw = h200()
    dense = kv.kv_setting_costs(llama, hw, 65536, 32, 16, 65536, 0.0, 0)
    sparse = kv.kv_setting_costs(llama, hw, 65536, 32, 16, 65536, 0.0, 2048)
    assert sparse["decode_s_per_token"] < dense["decode_s_per_token"] / 3
    assert sparse["kv_bytes"] >= dense["kv_bytes"]  # plus the representative keys


def test_stored_bits():
    assert kv.stored_kv_bits(16, 0.0) == 16
    assert kv.stored_kv_bits(4, 0.0, quant_group=128) == 4.25
    assert kv.stored_kv_bits(16, 0.5) == 12  # half the key channels: 3/4 of the KV


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "give latency_target_s or memory_target_bytes"),
    (dict(latency_target_s=1e-6), "fastest reachable"),
    (dict(memory_target_bytes=1e3), "smallest reachable"),
    (dict(latency_target_s=-1.0), "latency_target_s"),
    (dict(latency_target_s=1.0, kv_bits=(16, 32)), "kv_bits"),
    (dict(latency_target_s=1.0, think_ratios=(1.0,)), "think_ratios"),
    (dict(latency_target_s=1.0, weights={"speed": 1}), "unknown knob"),
])
def test_cheapest_setting_errors(llama, kwargs, match):
    with pytest.raises(KVBudgetError, match=match):
        kv.cheapest_kv_setting(llama, h200(), 32768, users=8, **kwargs)


def test_cheapest_setting_when_nothing_fits_in_hbm(llama):
    with pytest.raises(KVBudgetError, match="even the most compressed setting needs"):
        kv.cheapest_kv_setting(llama, h200(), 131072, users=100_000, latency_target_s=10.0)


# -- split -----------------------------------------------------------------------------------------
def test_unbounded_closed_form():
    w = np.array([8.0, 1.0])
    split = kv.split_kv_budget(w, 3000, alpha=2.0)
    # b proportional to w^(1/3): 2 : 1
    assert split.budgets == pytest.approx([2000, 1000])
    # stationarity: w_i alpha b_i^(-alpha-1) equal across groups
    grad = w * 2.0 * split.budgets ** -3.0
    assert grad[0] == pytest.approx(grad[1]) and split.multiplier == pytest.approx(grad[0])


CASES = [dict(), dict(lower=128, upper=8192), dict(lower=1500), dict(upper=2100), dict(alpha=0.5, lower=64),
         dict(alpha=3.0, upper=4000), dict(unit_cost=np.linspace(1, 2, 32), lower=32)]


@pytest.mark.parametrize("kwargs", CASES)
def test_closed_form_agrees_with_cvxpy(kwargs):
    w = np.linspace(3, 1, 32) ** 2
    a = kv.split_kv_budget(w, 32 * 2048, **kwargs)
    b = kv.split_kv_budget(w, 32 * 2048, method="cvxpy", **kwargs)
    assert b.status == "optimal"
    assert a.budgets == pytest.approx(b.budgets, rel=2e-4, abs=1e-3)
    assert a.objective == pytest.approx(b.objective, rel=1e-6)
    assert a.multiplier == pytest.approx(b.multiplier, rel=1e-3)
    spent = np.broadcast_to(kwargs.get("unit_cost", 1.0), 32) @ a.budgets
    assert spent == pytest.approx(32 * 2048, rel=1e-9)


@settings(max_examples=25, deadline=None)
@given(w=st.lists(st.floats(0.01, 100.0), min_size=2, max_size=12), alpha=st.floats(0.3, 4.0),
       per=st.floats(50.0, 5000.0))
def test_closed_form_is_optimal_against_perturbations(w, alpha, per):
    """Moving budget between any two groups never lowers the loss (KKT optimality), bounds respected."""
    w = np.array(w)
    total = per * len(w)
    split = kv.split_kv_budget(w, total, lower=10.0, upper=3 * per, alpha=alpha)
    b = split.budgets
    assert np.all(b >= 10.0 - 1e-9) and np.all(b <= 3 * per + 1e-9)
    assert b.sum() == pytest.approx(min(total, 3 * per * len(w)), rel=1e-9)
    base = split.objective
    delta = 0.01 * per
    for i, j in [(0, 1), (1, 0), (len(w) - 1, 0)]:
        moved = b.copy()
        moved[i] += delta
        moved[j] -= delta
        if moved[i] <= 3 * per and moved[j] >= 10.0:
            assert np.sum(kv.power_loss(w, moved, alpha)) >= base * (1 - 1e-12)


def test_more_important_layers_get_more():
    w = np.array([1.0, 4.0, 2.0])
    b = kv.split_kv_budget(w, 900).budgets
    assert b[1] > b[2] > b[0]


def test_zero_importance_gets_its_lower_bound():
    split = kv.split_kv_budget([0.0, 1.0, 1.0], 1000, lower=10)
    assert split.budgets[0] == 10
    assert split.budgets[1:] == pytest.approx([495, 495])
    cvx = kv.split_kv_budget([0.0, 1.0, 1.0], 1000, lower=10, method="cvxpy")
    assert cvx.budgets == pytest.approx(split.budgets, rel=1e-4)


def test_budget_above_the_upper_bounds():
    split = kv.split_kv_budget([1.0, 2.0], 10_000, upper=1000)
    assert split.status == "budget-exceeds-upper-bounds"
    assert list(split.budgets) == [1000, 1000]


def test_rounding_to_blocks_spends_at_most_the_total():
    w = np.linspace(3, 1, 32)
    split = kv.split_kv_budget(w, 32 * 2048, lower=128, upper=8192)
    rounded = kv.round_split(split, 16)
    assert np.all(rounded % 16 == 0)
    assert rounded.sum() <= 32 * 2048 and rounded.sum() > 32 * 2048 - 16
    assert np.abs(rounded - split.budgets).max() <= 16
    frame = split.to_frame()
    assert list(frame.columns) == ["group", "importance", "budget", "share", "loss"]
    assert frame["share"].sum() == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(importance=[1.0, -1.0], total=100), "importance: -1 for group 'layer1' must be finite, zero or more"),
    (dict(importance=[1.0, float("nan")], total=100), "importance: nan"),
    (dict(importance=[], total=100), "at least one group"),
    (dict(importance=[1.0, 1.0], total=100, lower=60), "lower bounds alone need 120"),
    (dict(importance=[1.0, 1.0], total=100, lower=10, upper=5), "exceeds upper"),
    (dict(importance=[1.0, 1.0], total=100, alpha=0), "alpha"),
    (dict(importance=[1.0, 1.0], total=-5), "total"),
    (dict(importance=[1.0, 1.0], total=100, method="magic"), "method"),
    (dict(importance=[1.0, 1.0], total=100, names=["a"]), "names"),
])
def test_split_errors(kwargs, match):
    with pytest.raises(KVBudgetError, match=match):
        kv.split_kv_budget(**kwargs)


# -- CLI -------------------------------------------------------------------------------------------
def _cli(capsys, *argv):
    from app.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_capacity_and_errors(capsys):
    code, out, _ = _cli(capsys, "solve", "kv", "capacity", "--model", "qwen3-8b", "--hardware", "h200-sxm",
                        "--context", "32768")
    assert code == 0 and "users at 32768 tokens" in out
    code, _, err = _cli(capsys, "solve", "kv", "capacity", "--model", "qwen3-8b", "--context", "100000")
    assert code == 2 and "maximum context of 40960" in err
    code, _, err = _cli(capsys, "solve", "kv", "capacity", "--model", "qwen3-8b", "--context", "1000",
                        "--hbm-budget", "10 parsec")
    assert code == 2 and "--hbm-budget" in err


def test_cli_serve_setting_split(capsys, tmp_path):
    code, out, _ = _cli(capsys, "solve", "kv", "serve", "--model", "llama-3.1-70b", "--context", "32768",
                        "--tp", "2,8")
    assert code == 0 and "max users" in out and len(out.strip().splitlines()) == 4
    code, out, _ = _cli(capsys, "solve", "kv", "setting", "--model", "llama-3.1-8b", "--context", "65536",
                        "--users", "16", "--memory", "20 GB", "--json")
    import json

    assert code == 0 and json.loads(out)["kv_bytes"] <= 20e9
    csv = tmp_path / "imp.csv"
    csv.write_text("group,importance\nL0,3\nL1,1\n")
    code, out, _ = _cli(capsys, "solve", "kv", "split", "--importance", str(csv), "--total", "4096",
                        "--step", "16", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["group"] for r in rows] == ["L0", "L1"] and sum(r["rounded"] for r in rows) == 4096
    code, _, err = _cli(capsys, "solve", "kv", "split", "--importance", "1,x", "--total", "10")
    assert code == 2 and "--importance" in err
