"""Test-time compute allocation: accuracy under N samples, costs, the plan, the frontier, bad input."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import comb

import workloads
from perfmodel import kinetics
from perfmodel.kinetics import KineticsError
from solvers import tts
from solvers.tts import AccuracyCurves, BudgetError, CostModel, CurveError
from tests.perfmodel.test_kinetics import h200


@pytest.fixture(scope="module")
def demo():
    return AccuracyCurves.demo()


@pytest.fixture(scope="module")
def models(demo):
    return tts.load_models(demo.models)


# -- accuracy ------------------------------------------------------------------------------------
def test_pass_at_k_values():
    assert tts.pass_at_k(0.5, 3) == pytest.approx(0.875)
    assert tts.pass_at_k(0.0, 64) == 0 and tts.pass_at_k(1.0, 1) == 1


def test_unbiased_pass_at_k_matches_the_combinatorial_form():
    for n, c, k in [(32, 5, 1), (32, 5, 8), (32, 0, 4), (32, 32, 4), (10, 7, 4)]:
        assert tts.pass_at_k_unbiased(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)
    assert tts.pass_at_k_unbiased(32, 5, 1) == pytest.approx(5 / 32)
    with pytest.raises(CurveError, match="needs at least that many samples"):
        tts.pass_at_k_unbiased(8, 2, 16)


def test_majority_vote_values():
    assert tts.majority_at_k(0.6, 1) == pytest.approx(0.6)
    assert tts.majority_at_k(0.6, 3) == pytest.approx(0.6 ** 3 + 3 * 0.6 ** 2 * 0.4)
    assert tts.majority_at_k(0.37, 2) == pytest.approx(0.37)  # p^2 + half of the 2p(1-p) ties
    assert tts.majority_at_k(0.7, 64) > 0.99 and tts.majority_at_k(0.3, 64) < 0.01


@settings(max_examples=50, deadline=None)
@given(p=st.floats(0.0, 1.0), k=st.integers(1, 64))
def test_accuracy_is_a_probability_and_pass_at_k_dominates(p, k):
    a, m = tts.pass_at_k(p, k), tts.majority_at_k(p, k)
    assert 0 <= m <= a + 1e-12 <= 1 + 1e-12
    assert tts.pass_at_k(p, k + 1) >= a - 1e-15


def test_cost_of_pass():
    assert list(tts.cost_of_pass([2.0, 3.0], [0.5, 0.0])) == [4.0, np.inf]


# -- curves ----------------------------------------------------------------------------------------
def test_demo_curves_are_labelled_synthetic(demo):
    assert "SYNTHETIC" in demo.source
    assert demo.frame["p"].between(0, 1).all()
    assert set(demo.models) == {"qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen3-14b", "qwen3-32b"}


def _curves(**columns):
    base = {"model": ["qwen3-0.6b"] * 2, "gen_len": [1024, 2048], "p": [0.2, 0.3]}
    base.update(columns)
    return AccuracyCurves(pd.DataFrame(base))


@pytest.mark.parametrize("columns, match", [
    (dict(p=[0.2, 1.3]), r"p: 1.3 in row 1 \(model 'qwen3-0.6b'\) is not a probability"),
    (dict(p=[-0.1, 0.3]), "p: -0.1 in row 0 must be a probability"),
    (dict(p=[float("nan"), 0.3]), "p: nan in row 0"),
    (dict(p=["high", 0.3]), "p: column holds non-numbers"),
    (dict(gen_len=[0, 2048]), "gen_len"),
    (dict(mean_gen=[1500, 1000]), "mean_gen: 1500 in row 0 exceeds its gen_len cap 1024"),
    (dict(sparse_budget=[-1, 0]), "sparse_budget"),
])
def test_bad_curves(columns, match):
    with pytest.raises(CurveError, match=match):
        _curves(**columns)


def test_missing_columns_and_files(tmp_path):
    with pytest.raises(CurveError, match="missing column"):
        AccuracyCurves(pd.DataFrame({"model": ["a"], "p": [0.1]}))
    with pytest.raises(CurveError, match="does not exist"):
        AccuracyCurves.from_csv(tmp_path / "nope.csv")
    with pytest.raises(CurveError, match="correct: row 0 has 9 correct of 8"):
        AccuracyCurves(pd.DataFrame({"model": ["a"], "gen_len": [10], "samples": [8], "correct": [9]}))


def test_counts_become_rates():
    curves = AccuracyCurves(pd.DataFrame({"model": ["a", "a"], "gen_len": [10, 10], "samples": [8, 8],
                                          "correct": [2, 8]}))
    assert list(curves.frame["p"]) == [0.25, 1.0]
    assert list(curves.frame["problem"]) == [0, 1]


def test_csv_round_trip(tmp_path):
    path = tmp_path / "curves.csv"
    path.write_text("# my measured curves\nmodel,gen_len,p\nqwen3-8b,4096,0.4\nqwen3-8b,8192,0.5\n")
    curves = AccuracyCurves.from_csv(path)
    assert curves.source == "my measured curves" and len(curves.frame) == 2


# -- costs and the plan ---------------------------------------------------------------------------
def test_candidate_costs_are_kinetics_costs_averaged_over_problems(models):
    frame = pd.DataFrame({"model": "qwen3-8b", "gen_len": 8192, "problem": [0, 1], "p": [0.2, 0.6],
                          "mean_gen": [3000, 7000], "prompt": [100, 300]})
    table = tts.candidates(AccuracyCurves(frame), models, samples=[4])
    m = models["qwen3-8b"]
    expected = np.mean([kinetics.kinetics_cost(m, 100, 3000, 4).efflops(), kinetics.kinetics_cost(m, 300, 7000, 4).efflops()])
    assert table["efflops"].item() == pytest.approx(expected)
    assert table["accuracy"].item() == pytest.approx(np.mean([1 - 0.8 ** 4, 1 - 0.4 ** 4]))
    assert table["cost_of_pass"].item() == pytest.approx(expected / table["accuracy"].item())


def test_seconds_and_dollars_use_the_hardware(demo, models):
    hw = h200()
    table = tts.candidates(demo, models, CostModel(unit="dollars", hardware=hw), samples=[1, 8])
    assert np.allclose(table["cost"], table["dollars"])
    assert np.allclose(table["dollars"], table["idealized_runtime_s"] * hw.price_per_hour_usd / 3600)
    # eFLOPs at the device's intensity over its peak is the idealized runtime
    assert np.allclose(table["efflops"] / 989e12, table["idealized_runtime_s"])


def test_plan_picks_the_most_accurate_candidate_within_budget(demo, models):
    cost = CostModel(params=kinetics.KINETICS_PARAMS)
    for budget in (2e14, 1e15, 1e16):
        plan = tts.plan_tts(demo, budget, models, cost)
        table = plan.to_frame()
        assert plan.best["cost"] <= budget
        assert plan.best["accuracy"] == pytest.approx(table.loc[table.cost <= budget, "accuracy"].max())
    assert tts.plan_tts(demo, 1e16, models, cost).best["accuracy"] > tts.plan_tts(demo, 2e14, models, cost).best["accuracy"]


def test_frontier_is_monotone_and_dominates(demo, models):
    plan = tts.plan_tts(demo, 1e15, models)
    front = plan.frontier
    assert np.all(np.diff(front["cost"]) >= 0) and np.all(np.diff(front["accuracy"]) > 0)
    table = plan.to_frame()
    for _, row in table.sample(200, random_state=0).iterrows():
        cheaper = front[front["cost"] <= row["cost"]]
        assert cheaper["accuracy"].max() >= row["accuracy"] - 1e-12


def test_sparse_budget_is_chosen_where_it_pays(demo, models):
    """With the demo curves, block top-k points appear on the frontier (they cost several-fold less)."""
    front = tts.plan_tts(demo, 1e15, models).frontier
    assert (front["sparse_budget"] > 0).any()


def test_plot_writes_a_png(demo, models, tmp_path):
    plan = tts.plan_tts(demo, 1e15, models, strategy="majority")
    plan.plot(tmp_path / "frontier.png")
    assert (tmp_path / "frontier.png").stat().st_size > 10_000


@pytest.mark.parametrize("budget, kwargs, match", [
    (1e9, {}, r"budget: 1e\+09 eFLOPs is below the cheapest option \(qwen3-[0-9.]+b, gen_len 2048, N 1, "),
    (-1.0, {}, "budget: -1.0 must be a finite number"),
    (float("nan"), {}, "budget"),
    (1e15, dict(strategy="vote"), "strategy"),
    (1e15, dict(samples=[0, 2]), "samples"),
])
def test_bad_plans(demo, models, budget, kwargs, match):
    with pytest.raises(BudgetError, match=match):
        tts.plan_tts(demo, budget, models, **kwargs)


def test_cost_model_errors():
    with pytest.raises(BudgetError, match="needs a hardware spec"):
        CostModel(unit="dollars")
    with pytest.raises(BudgetError, match="unit"):
        CostModel(unit="joules")


def test_generation_beyond_the_model_context_is_an_error(models):
    curves = _curves(gen_len=[1024, 65536])
    with pytest.raises(KineticsError, match="maximum context of 40960"):
        tts.plan_tts(curves, 1e18, {"qwen3-0.6b": workloads.load("qwen3-0.6b")})


def test_missing_model_spec(demo):
    with pytest.raises(CurveError, match="no model spec"):
        tts.candidates(demo, {})


def test_cli_tts(capsys, tmp_path):
    from app.cli import main

    png = tmp_path / "f.png"
    assert main(["solve", "tts", "--budget", "1e15", "--kinetics-params", "--samples", "1,4,16",
                 "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "choice:" in out and png.exists()
    assert main(["solve", "tts", "--budget", "1", "--unit", "seconds"]) == 2
    assert "needs a hardware spec" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("model,gen_len,p\nqwen3-8b,4096,1.5\n")
    assert main(["solve", "tts", "--budget", "1e15", "--curves", str(bad)]) == 2
    assert "not a probability" in capsys.readouterr().err
