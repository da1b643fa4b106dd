"""SLO planner: the cheapest deployment that serves a request rate within TTFT and TPOT percentiles.

Search space: hardware x GPU count x tensor parallelism x engine x bits x (max_num_batched_tokens,
max_num_seqs) x aggregated (count / tp replicas, round-robin) or disaggregated (x prefill + y decode
instances of tp GPUs each). Price: the hardware preset's $/h per device x count.

Each configuration is first checked analytically, from the same step-time tables the simulator
uses, and dropped without simulation when it cannot meet the target:
1. memory: the weights leave no KV cache (make_instance refuses);
2. latency floor: the prefill alone of the prompt at the SLO's percentile exceeds the TTFT
   objective, or one decode step at batch 1 at that context exceeds the TPOT objective (no load
   makes a request faster than alone; `_floors`);
3. capacity: the rate exceeds what the replicas could sustain at their largest decode batch
   (n = min(max_num_seqs, KV blocks / blocks per request), throughput <= n / decode step(n)) or,
   disaggregated, what the prefill instances could prefill at full token budgets;
4. saturation: the rate per replica exceeds MAX_UTILIZATION (90%) of the throughput the instance
   sustains when saturated (`saturation_req_s`: a simulation of requests of the target's lengths
   all arriving at once, its steady completion rate; disaggregated: the smaller of x prefill-only
   and y decode-only saturation rates). Above it a short run cannot see the queue diverge (the
   wait of an M/D/1 queue is already 4.5 service times at 90% and unbounded at 100%), and
   operating there leaves no headroom for bursts.
The survivors run a short simulation (`requests` requests per replica, default 200) and are
judged on its percentiles. Approximation: a short run underestimates the tail of a queue that
diverges slowly (load just above capacity); check 3 removes loads above the decode capacity, and
the chosen configuration can be confirmed with a long `perfmodel serve` run (the CLI prints it).
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

import numpy as np

from perfmodel.ops import Precision
from serving import workload
from serving.metrics import SLO, summarize

#: Bits tried by default: bf16 and fp8 (weights, activations and KV cache).
DEFAULT_BITS = (16, 8)
DEFAULT_HARDWARE = ("h200-sxm-calibrated", "h100-sxm-calibrated", "a100-80gb-sxm-calibrated", "l40s-calibrated",
                    "b200-calibrated")
#: Highest offered load, as a fraction of the saturation throughput, the planner accepts (check 4).
MAX_UTILIZATION = 0.9
DEFAULT_COUNTS = (1, 2, 4, 8)
DEFAULT_ENGINES = ("vllm", "sglang")
DEFAULT_BUDGETS = ((2048, 128), (8192, 256))


@dataclass(frozen=True)
class Target:
    """What must be met: rate (req/s), lengths, and TTFT / TPOT objectives at a percentile."""

    rate_req_s: float
    prompt: workload.Lengths
    gen: workload.Lengths
    slo: SLO
    percentile: int = 99


def _instance(cache: dict, model, hw_name: str, tp: int, engine: str, bits: int, budget: int, seqs: int):
    import hardware
    from serving.simulator import ServeConfig, ServeError, make_instance

    key = (hw_name, tp, engine, bits, budget, seqs)
    if key not in cache:
        try:
            hw = hardware.load(hw_name)
            cache[key] = make_instance(model, hw, p=Precision(bits, bits, bits), tp=tp, engine=engine,
                                       cfg=ServeConfig(max_num_batched_tokens=budget, max_num_seqs=seqs))
        except (ServeError, ValueError) as err:
            cache[key] = str(err)
    return cache[key]


def _floors(inst, prompt: int, gen: int, prompt_q: int) -> tuple[float, float, float]:
    """(one prefill alone of the prompt at the SLO's percentile, one decode step at batch 1 at that
    context, best decode throughput per instance at the mean lengths). A request is never faster
    than alone and both times grow with the prompt, so the percentile's request alone bounds the
    percentile's latency from below (later chunks, which see a longer past, are priced as the first)."""
    c = inst.costs
    chunk = min(prompt_q, inst.cfg.max_num_batched_tokens)
    prefill = c.mixed_step_s(0, 0.0, [(chunk, 0.0)], 1) * math.ceil(prompt_q / chunk)
    decode = c.decode_step_s(1, float(prompt_q))
    per_request_blocks = math.ceil((prompt + gen) / inst.cfg.block_tokens)
    n = max(1, min(inst.cfg.max_num_seqs, inst.blocks // per_request_blocks))
    best = n / c.decode_step_s(n, n * (prompt + gen / 2))
    return prefill, decode, best


def saturation_point(inst, prompts: np.ndarray, gens: np.ndarray, kind: str = "both") -> tuple[float, float]:
    """(requests/s, median TPOT) of one instance when saturated: all requests (the given lengths)
    arrive at t = 0; the completion rate over the middle 60% of completions (past the start, before
    the drain). kind "prefill" runs prefill only (output 1 token; TPOT 0), "decode" hands requests
    in with their cache."""
    from serving.simulator import simulate
    from serving.workload import Requests

    n = len(prompts)
    outputs = np.ones(n, np.int64) if kind == "prefill" else gens
    res = simulate(inst, Requests(np.zeros(n), prompts, outputs, np.zeros(n, np.int64)), prefilled=kind == "decode")
    finish = np.sort(res.finish_s)
    lo, hi = int(0.2 * n), int(0.8 * n)
    tpot = float(np.median(res.tpot_s[res.output_tokens > 1])) if kind != "prefill" else 0.0
    return (hi - lo) / max(finish[hi] - finish[lo], 1e-12), tpot


def saturation_req_s(inst, prompts: np.ndarray, gens: np.ndarray, kind: str = "both") -> float:
    """Requests/s one instance completes when saturated (`saturation_point`)."""
    return saturation_point(inst, prompts, gens, kind)[0]


def configurations(hardware_names, counts, tps, engines, bits, budgets, disagg: bool = True):
    """Every (hardware, count, tp, engine, bits, budget, seqs, mode, x, y) of the search."""
    for hw, count, tp, engine, b, (budget, seqs) in itertools.product(hardware_names, counts, tps, engines, bits, budgets):
        if tp > count or count % tp:
            continue
        replicas = count // tp
        yield (hw, count, tp, engine, b, budget, seqs, "aggregated", replicas, 0)
        if disagg:
            for x in range(1, replicas):
                yield (hw, count, tp, engine, b, budget, seqs, "disaggregated", x, replicas - x)


def plan(model, target: Target, *, hardware_names=DEFAULT_HARDWARE, counts=DEFAULT_COUNTS, tps=(1, 2, 4, 8),
         engines=DEFAULT_ENGINES, bits=DEFAULT_BITS, budgets=DEFAULT_BUDGETS, requests: int = 200, seed: int = 0,
         disagg: bool = True):
    """Evaluate the search space (module doc); returns a pandas DataFrame, one row per
    configuration, with `status` ("meets", "misses", or why it was pruned) and the metrics."""
    import pandas as pd

    from perfmodel.checks import ParallelismError
    from serving.disagg import simulate_disaggregated, simulate_replicas

    q = f"p{target.percentile}"
    prompts = workload.Lengths.draw(target.prompt, np.random.default_rng(seed), 1000)
    mean_prompt = int(round(float(prompts.mean())))
    prompt_q = int(np.percentile(prompts, target.percentile))
    mean_gen = int(round(float(workload.Lengths.draw(target.gen, np.random.default_rng(seed + 1), 1000).mean())))
    cache, rows, saturated = {}, [], {}
    need_tok_s = target.rate_req_s * mean_gen
    sat_n = 4 * max(seqs for _, seqs in budgets)
    sat_prompts = workload.Lengths.draw(target.prompt, np.random.default_rng(seed + 2), sat_n)
    sat_gens = workload.Lengths.draw(target.gen, np.random.default_rng(seed + 3), sat_n)

    def capacity(inst, key, kind):
        if (key, kind) not in saturated:
            n = max(200, 4 * inst.cfg.max_num_seqs)
            saturated[(key, kind)] = saturation_point(inst, sat_prompts[:n], sat_gens[:n], kind)
        return saturated[(key, kind)]

    for hw, count, tp, engine, b, budget, seqs, mode, x, y in configurations(hardware_names, counts, tps, engines,
                                                                              bits, budgets, disagg):
        row = dict(hardware=hw, gpus=count, tp=tp, engine=engine, bits=b, max_num_batched_tokens=budget,
                   max_num_seqs=seqs, mode=mode, prefill_instances=x if mode == "disaggregated" else 0,
                   decode_instances=y if mode == "disaggregated" else count // tp)
        try:
            inst = _instance(cache, model, hw, tp, engine, b, budget, seqs)
        except ParallelismError as err:
            inst = str(err)
        if isinstance(inst, str):
            rows.append(row | {"status": "pruned: " + inst.split(":")[0] + " (does not fit / not allowed)"})
            continue
        row["usd_per_hour"] = inst.hw.price_per_hour_usd * count
        prefill, decode, best = _floors(inst, mean_prompt, mean_gen, min(prompt_q, inst.model.max_context - 1))
        decoders = y if mode == "disaggregated" else count // tp
        status = None
        if target.slo.ttft_s is not None and prefill > target.slo.ttft_s:
            status = "pruned: one prefill exceeds the TTFT objective"
        elif target.slo.tpot_s is not None and decode > target.slo.tpot_s:
            status = "pruned: one decode step exceeds the TPOT objective"
        elif decoders * best < need_tok_s:
            status = "pruned: decode capacity below the rate"
            row["decode_bound_req_s"] = decoders * best / mean_gen
        elif mode == "disaggregated":
            c = inst.costs
            prefill_tok_s = x * budget / c.mixed_step_s(0, 0.0, [(budget, 0.0)], 1)
            if prefill_tok_s < target.rate_req_s * mean_prompt:
                status = "pruned: prefill capacity below the rate"
        key = (hw, tp, engine, b, budget, seqs)
        if status is None:
            if mode == "aggregated":
                most, sat_tpot = capacity(inst, key, "both")
                most *= count // tp
            else:
                sat_tpot = capacity(inst, key, "decode")[1]
                most = min(x * capacity(inst, key, "prefill")[0], y * capacity(inst, key, "decode")[0])
            # the saturated operating point, for the Pareto front (aiconfigurator's axes)
            row |= {"saturation_req_s": most, "tok_s_per_gpu": most * mean_gen / count,
                    "tok_s_per_user": 1.0 / sat_tpot if sat_tpot > 0 else math.inf}
            if target.rate_req_s > MAX_UTILIZATION * most:
                status = f"pruned: rate above {MAX_UTILIZATION:.0%} of the saturation throughput"
        if status:
            rows.append(row | {"status": status, "prefill_alone_s": prefill, "decode_alone_s": decode})
            continue
        replicas = count // tp
        n = requests * (replicas if mode == "aggregated" else 1)
        req = workload.generate(n, target.rate_req_s, target.prompt, target.gen, seed=seed)
        if mode == "aggregated":
            res = simulate_replicas(inst, req, replicas, seed=seed) if replicas > 1 else \
                simulate_replicas(inst, req, 1, seed=seed)
        else:
            res = simulate_disaggregated(inst, inst, req, x, y, seed=seed)
        s = summarize(res, target.slo)
        ok = (target.slo.ttft_s is None or s["ttft_s"][q] <= target.slo.ttft_s) and \
            (target.slo.tpot_s is None or s["tpot_s"][q] <= target.slo.tpot_s)
        rows.append(row | {"status": "meets" if ok else "misses", "ttft_s": s["ttft_s"][q], "tpot_s": s["tpot_s"][q],
                           "ttft_p50_s": s["ttft_s"]["p50"], "tpot_p50_s": s["tpot_s"]["p50"],
                           "throughput_tok_s": s["throughput_tok_s"],
                           "user_tok_s_at_rate": 1.0 / s["tpot_s"]["p50"] if s["tpot_s"]["p50"] > 0 else math.inf,
                           "usd_per_mtok": row["usd_per_hour"] / 3600 / s["throughput_tok_s"] * 1e6,
                           "prefill_alone_s": prefill, "decode_alone_s": decode})
    return pd.DataFrame(rows)


def pareto_front(frame):
    """Configurations not beaten on both tokens/s per GPU and tokens/s per user, each at its saturated
    operating point (the most it serves per GPU, and the median speed each user then sees): the
    throughput / interactivity trade-off of the search space, whatever the target rate."""
    if "tok_s_per_gpu" not in frame:
        return frame.iloc[0:0]
    sim = frame[frame["tok_s_per_gpu"].notna()]
    if sim.empty:
        return sim
    # ties (replicas of one instance serve the same per GPU) go to the cheapest deployment
    sim = sim.sort_values(["tok_s_per_gpu", "tok_s_per_user", "usd_per_hour"], ascending=[False, False, True])
    best_user, keep = -math.inf, []
    for idx, r in sim.iterrows():
        if r["tok_s_per_user"] > best_user:
            keep.append(idx)
            best_user = r["tok_s_per_user"]
    return sim.loc[keep]


def cheapest(frame):
    """The cheapest configuration that meets the target (ties: more throughput), or None."""
    ok = frame[frame["status"] == "meets"]
    if ok.empty:
        return None
    return ok.sort_values(["usd_per_hour", "throughput_tok_s"], ascending=[True, False]).iloc[0]


def best_achievable(frame) -> dict:
    """The lowest TTFT and TPOT percentiles any simulated configuration reached, and where."""
    sim = frame[frame["status"].isin(["meets", "misses"])]
    out = {}
    for key in ("ttft_s", "tpot_s"):
        if key in sim and sim[key].notna().any():
            r = sim.loc[sim[key].idxmin()]
            out[key] = (float(r[key]), f"{r['hardware']} x{r['gpus']} tp{r['tp']} {r['engine']} {r['mode']}")
    for col, how in (("saturation_req_s", ""), ("decode_bound_req_s", ", an upper bound from decoding alone")):
        if col in frame and frame[col].notna().any():
            r = frame.loc[frame[col].idxmax()]
            out["rate"] = (float(r[col]), f"{r['hardware']} x{r['gpus']} tp{r['tp']} {r['engine']} {r['mode']}{how}")
            break
    for key, col in (("ttft_s", "prefill_alone_s"), ("tpot_s", "decode_alone_s")):
        if key not in out and col in frame and frame[col].notna().any():
            r = frame.loc[frame[col].idxmin()]
            out[key] = (float(r[col]), f"{r['hardware']} x{r['gpus']} tp{r['tp']} {r['engine']} (alone, no load)")
    return out


def timed_plan(model, target: Target, **kwargs):
    start = time.perf_counter()
    frame = plan(model, target, **kwargs)
    return frame, time.perf_counter() - start
