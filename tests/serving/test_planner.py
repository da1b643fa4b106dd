"""The planner's analytic pruning is sound (a pruned configuration, simulated anyway, misses) and
its choice is the cheapest of those that meet the SLO."""
import numpy as np

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
    sim = frame[frame["status"].isin(["meets", "misses"])]
    for _, r in sim.iterrows():  # brute force: a point off the front is dominated by one on it
        on = ((front["tok_s_per_gpu"] >= r["tok_s_per_gpu"]) & (front["tok_s_per_user"] >= r["tok_s_per_user"])).any()
        assert on
    assert np.all(np.diff(front["tok_s_per_gpu"].to_numpy()) <= 0)
