"""Planning answers over the sweep: the cheapest deployment is the brute-force cheapest, limits hold,
the best batch is the best feasible one, and failures say which limit nothing meets."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import hardware
import perfmodel
import workloads
from app.cli import main
from planning import recommend, sweep
from planning.recommend import NoFeasibleConfigError
from planning.sweep import SweepError

DEVICES = ["h200-sxm", "a100-80gb-sxm", "l40s", "l4"]
BATCH = {"start": 1, "stop": 96, "step": 1}
MODEL = "llama-3-8b"


@pytest.fixture(scope="module")
def rec():
    return recommend.cheapest(workloads.load(MODEL), 30000, DEVICES, prompt=1024, gen=128, max_tpot_s=0.03,
                              max_ttft_s=1.0, w_bits=(8, 16), kv_bits=(16,), tp=(1, 2, 4), batch=BATCH)


def test_cheapest_meets_target_and_limits(rec):
    best = rec.best
    assert best["ttft_s"] <= 1.0 and best["tpot_s"] <= 0.03 and best["fits"]
    assert best["replicas"] * best["throughput_tok_s"] >= 30000
    assert (best["replicas"] - 1) * best["throughput_tok_s"] < 30000  # no spare replica
    price = hardware.load(best["hardware"]).price_per_hour_usd
    assert math.isclose(best["usd_per_hour_total"], best["replicas"] * best["tp"] * price)
    # the row is the cost model's own prediction for that configuration
    sc = workloads.Scenario(batch=best["batch"], prompt=1024, gen=128, w_bits=best["w_bits"], kv_bits=16, tp=best["tp"])
    direct = perfmodel.evaluate(workloads.load(MODEL), hardware.load(best["hardware"]), sc)
    assert direct["tpot_s"][0] == best["tpot_s"]


def test_cheapest_equals_brute_force(rec):
    """Every configuration that meets the limits costs at least the recommendation."""
    cheapest = math.inf
    for name in DEVICES:
        hw = hardware.load(name)
        batch, tp, w = np.meshgrid(np.arange(1, 97), [1, 2, 4], [8, 16], indexing="ij")
        sc = workloads.Scenario(batch=batch.ravel(), prompt=1024, gen=128, w_bits=w.ravel(), kv_bits=16, tp=tp.ravel())
        out = perfmodel.evaluate(workloads.load(MODEL), hw, sc)
        ok = out["fits"] & (out["tpot_s"] <= 0.03) & (out["ttft_s"] <= 1.0) & (out["tp"] <= hw.devices_per_node)
        cost = np.ceil(30000 / out["throughput_tok_s"]) * out["tp"] * hw.price_per_hour_usd
        if ok.any():
            cheapest = min(cheapest, cost[ok].min())
    assert math.isclose(rec.best["usd_per_hour_total"], cheapest)


def test_options_are_ranked_one_per_device(rec):
    frame = rec.to_frame()
    assert frame["hardware"].is_unique
    assert (np.diff(frame["usd_per_hour_total"].to_numpy()) >= 0).all()
    assert (frame["tp"] <= frame["hardware"].map({d: hardware.load(d).devices_per_node for d in DEVICES})).all()


def test_requests_per_second_is_tokens_per_second_over_gen():
    kw = dict(hardware=["h200-sxm"], prompt=512, gen=100, samples=2, w_bits=(16,), kv_bits=(16,), tp=(1,),
              batch={"start": 1, "stop": 32, "step": 1})
    by_rps = recommend.cheapest(workloads.load(MODEL), requests_per_s=10, **kw)
    by_rate = recommend.cheapest(workloads.load(MODEL), 2000, **kw)
    assert by_rps.target_tok_s == 2000
    # NaN-aware: a datasheet spec has no prediction intervals (NaN band columns)
    assert pd.Series(by_rps.best).equals(pd.Series(by_rate.best))


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one of target_tok_s"),
    ({"target_tok_s": 10, "requests_per_s": 1}, "exactly one of target_tok_s"),
    ({"target_tok_s": -5}, "target_tok_s: -5 must be a number > 0"),
    ({"target_tok_s": 10, "max_tpot_s": 0}, "max_tpot_s: 0 must be"),
])
def test_bad_targets(kwargs, message):
    with pytest.raises(SweepError, match=message):
        recommend.cheapest(workloads.load(MODEL), hardware=["l4"], **kwargs)


def test_unmeetable_latency_names_the_limit_and_the_best_reached():
    with pytest.raises(NoFeasibleConfigError, match=r"meets tpot_s <= 1e-05: the lowest is [0-9.e-]+ s \(h200-sxm"):
        recommend.cheapest(workloads.load(MODEL), 1000, ["h200-sxm"], max_tpot_s=1e-5, tp=(1, 2),
                           batch={"start": 1, "stop": 8, "step": 1})


def test_model_that_fits_nowhere_says_so():
    with pytest.raises(NoFeasibleConfigError, match=r"fits on no swept device: the smallest footprint is [0-9.]+ GB"):
        recommend.cheapest(workloads.load("llama-3.1-70b"), 1000, ["t4"], tp=(1,), w_bits=(4,), kv_bits=(8,),
                           batch={"start": 1, "stop": 4, "step": 1})


def test_best_batch_is_the_best_feasible_batch():
    table = recommend.best_batch(workloads.load(MODEL), ["h200-sxm", "l4", "l40s"], prompt=1024, gen=128,
                                 max_tpot_s=0.02, w_bits=(8,), batch={"start": 1, "stop": 512, "step": 1})
    assert len(table) == 3
    for _, row in table.iterrows():
        hw = hardware.load(row["hardware"])
        batch = np.arange(1, 513)
        out = perfmodel.evaluate(workloads.load(MODEL), hw,
                                 workloads.Scenario(batch=batch, prompt=1024, gen=128, w_bits=8))
        ok = out["fits"] & (out["tpot_s"] <= 0.02)
        if not ok.any():  # the L4 streams 8 GB of int8 weights at 300 GB/s: > 20 ms a token
            assert row["hardware"] == "l4" and math.isnan(row["batch"]) and "tpot_s <= 0.02" in row["limited_by"]
            continue
        best = batch[ok][np.argmax(out["throughput_tok_s"][ok])]  # tp 1: per device = per deployment
        assert row["batch"] == best
        nxt = int(best)  # index of batch best + 1
        if nxt < len(batch):
            reasons = ([] if out["fits"][nxt] else ["memory"]) + ([] if out["tpot_s"][nxt] <= 0.02 else ["tpot_s <= 0.02"])
            assert row["limited_by"] == (", ".join(reasons) or "saturated")


def test_best_batch_reports_why_nothing_is_feasible():
    table = recommend.best_batch(workloads.load("llama-3.1-70b"), ["l4"], batch={"start": 1, "stop": 4, "step": 1})
    assert math.isnan(table["batch"].iloc[0]) and table["limited_by"].iloc[0] == "memory"


def test_best_batch_at_the_end_of_the_range():
    table = recommend.best_batch(workloads.load("qwen3-0.6b"), ["h200-sxm"], batch={"start": 1, "stop": 8, "step": 1})
    assert table["batch"].iloc[0] == 8 and table["limited_by"].iloc[0] == "batch range"


def test_cli_recommend_and_best_batch(capsys):
    code = main(["recommend", "--model", MODEL, "--hardware", "h200-sxm,l40s", "--rate", "5000", "--max-tpot", "0.03",
                 "--max-batch", "64", "--tp", "1,2", "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0 and "best:" in text and "devices" in text
    code = main(["best-batch", "--model", MODEL, "--hardware", "l4", "--max-batch", "64", "--w-bits", "8",
                 "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0 and "limited_by" in text and "l4" in text


def test_cli_recommend_errors_exit_2(capsys):
    assert main(["recommend", "--model", MODEL, "--hardware", "l4", "--no-progress"]) == 2
    assert "exactly one of" in capsys.readouterr().err
    assert main(["recommend", "--model", MODEL, "--rate", "100", "--tp", "one", "--no-progress"]) == 2
    assert "--tp: 'one' must be a whole number from 1 to 4,096" in capsys.readouterr().err

