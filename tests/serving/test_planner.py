"""The planner's analytic pruning is sound (a pruned configuration, simulated anyway, misses) and
its choice is the cheapest of those that meet the SLO."""
import numpy as np
import pytest

import hardware
import workloads
from perfmodel.ops import Precision
from serving import planner, workload
from serving.disagg import simulate_replicas
from serving.metrics import SLO, summarize
from serving.simulator import ServeConfig, make_instance


def test_pruned_configurations_would_miss_and_cheapest_is_cheapest():
    model = workloads.load("llama-3-8b")
    target = planner.Target(3.0, workload.Lengths("fixed", 2048), workload.Lengths("fixed", 32), SLO(0.15, 0.05))
    frame = planner.plan(model, target, hardware_names=("h200-sxm-calibrated", "l40s-calibrated"), counts=(1, 2),
                         tps=(1, 2), engines=("vllm",), bits=(16,), budgets=((2048, 128),), requests=60)
    pruned = frame[frame["status"] == "pruned: one prefill exceeds the TTFT objective"]
    assert len(pruned) and (frame["status"] == "meets").any()
    for _, row in pruned.iterrows():
        inst = make_instance(model, hardware.load(row["hardware"]), p=Precision(16, 16, 16), tp=int(row["tp"]),
                             cfg=ServeConfig(max_num_batched_tokens=2048, max_num_seqs=128))
        replicas = int(row["gpus"] // row["tp"])
        req = workload.generate(60 * replicas, target.rate_req_s, target.prompt, target.gen)
        assert summarize(simulate_replicas(inst, req, replicas))["ttft_s"]["p99"] > target.slo.ttft_s
    best = planner.cheapest(frame)
    meets = frame[frame["status"] == "meets"]
    assert best["usd_per_hour"] == meets["usd_per_hour"].min()
    assert best["ttft_s"] <= 0.15 and best["tpot_s"] <= 0.05
    front = planner.pareto_front(frame)
    sim = frame[frame["tok_s_per_gpu"].notna()]
    for _, r in sim.iterrows():  # brute force: a point off the front is dominated by one on it
        on = ((front["tok_s_per_gpu"] >= r["tok_s_per_gpu"]) & (front["tok_s_per_user"] >= r["tok_s_per_user"])).any()
        assert on
    assert np.all(np.diff(front["tok_s_per_gpu"].to_numpy()) <= 0)


def test_saturation_rate_is_what_an_overloaded_engine_completes():
    """Offered 1.5x its saturation rate, an engine completes requests at that rate (within 5%: the
    Poisson run's decode batch is as full as the all-at-once one) and its queue grows; at half
    the rate the queue stays bounded."""
    hw, model = hardware.load("h200-sxm-calibrated"), workloads.load("llama-3-8b")
    inst = make_instance(model, hw, cfg=ServeConfig(max_num_seqs=64, max_num_batched_tokens=4096))
    prompts, gens = np.full(400, 1024), np.full(400, 128)
    mu = planner.saturation_req_s(inst, prompts, gens)
    over = simulate_replicas(inst, workload.generate(1500, 1.5 * mu, 1024, 128, seed=1), 1)
    done = np.sort(over.finish_s)
    assert (900 - 300) / (done[900] - done[300]) == pytest.approx(mu, rel=0.05)
    assert over.wait_s[-300:].mean() > 10 * over.wait_s[:300].mean()
    under = simulate_replicas(inst, workload.generate(1500, 0.5 * mu, 1024, 128, seed=1), 1)
    assert under.wait_s[-300:].mean() < 2 * under.wait_s[:300].mean() + 0.05
