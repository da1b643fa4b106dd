"""The serving simulator against analytic results: single-request latencies equal perfmodel's step
times, saturation throughput equals the best static batch, Little's law, conservation of requests
under preemption, determinism."""
import numpy as np
import pytest

import hardware
import perfmodel
import workloads
from perfmodel.ops import Precision
from perfmodel.steps import mean_decode_step, step_time
from serving import workload as W
from serving.costs import build_step_costs
from serving.disagg import kv_transfer_s, simulate_disaggregated, simulate_replicas, transfer_link
from serving.metrics import SLO, summarize
from serving.simulator import ServeConfig, ServeError, SpecDecode, make_instance, simulate

P16 = Precision(16, 16, 16)


@pytest.fixture(scope="module")
def setup():
    hw, model = hardware.load("h200-sxm-calibrated"), workloads.load("llama-3-8b")
    return hw, model, make_instance(model, hw)


def fixed(n, prompt, gen, arrival=None):
    arrival = np.zeros(n) if arrival is None else arrival
    return W.Requests(np.asarray(arrival, float), np.full(n, prompt), np.full(n, gen), np.zeros(n, np.int64))


@pytest.mark.parametrize("hw_name,engine,model_name,tp", [("h200-sxm-calibrated", "vllm", "llama-3-8b", 1),
                                                          ("h200-sxm", "sglang", "qwen3-8b", 2),
                                                          ("h200-sxm-calibrated", "hf-eager", "llama-3-8b", 1),
                                                          ("h200-sxm-calibrated", "trtllm", "llama-3-8b", 1)])
def test_tables_equal_step_time(hw_name, engine, model_name, tp):
    """The tabulated composition is perfmodel's step_time: prefill steps and decode steps at
    several contexts (decode attention exact at the mean context: it is affine in context, or, for
    TensorRT-LLM's kernels that split their keys by a host rule, priced at that context itself)."""
    hw, model = hardware.load(hw_name), workloads.load(model_name)
    costs = build_step_costs(model, hw, P16, tp, engine, 4096, 128)
    for prompt in (1, 300, 4096):
        ref = step_time(model, hw, seqs=1, new_tokens=prompt, past=0.0, p=P16, tp=tp, logits_tokens=1, engine=engine)
        assert costs.mixed_step_s(0, 0.0, [(prompt, 0.0)], 1) == pytest.approx(float(ref["time_s"]), rel=1e-12)
    for n, past in ((1, 10), (37, 1000), (128, 5000)):
        ref = step_time(model, hw, seqs=n, new_tokens=1, past=float(past), p=P16, tp=tp, engine=engine)
        assert costs.decode_step_s(n, n * past) == pytest.approx(float(ref["time_s"]), rel=1e-12)
    # a chunk on top of a prefix is one prefill step of `chunk` tokens with `past` cached
    ref = step_time(model, hw, seqs=1, new_tokens=512, past=2048.0, p=P16, tp=tp, logits_tokens=1, engine=engine)
    assert costs.mixed_step_s(0, 0.0, [(512, 2048.0)], 1) == pytest.approx(float(ref["time_s"]), rel=1e-12)


def test_chunks_of_one_iteration_run_as_one_varlen_kernel(setup):
    """k equal chunks priced together equal perfmodel's batched attention of k sequences (same
    FLOPs, bytes, rows and work units); unequal ones cost no more than separate kernels."""
    from perfmodel.ops import context_ops
    from perfmodel.roofline import op_time

    hw, model, inst = setup
    for chunk, k, past in ((128, 64, 0.0), (512, 16, 300.0), (2000, 3, 4000.0)):
        batched = sum(op.count * float(op_time(op, hw, P16, 1).time_s) for op in
                      context_ops(model, seqs=k, new_tokens=chunk, past=past, p=P16, tp=1, engine="vllm"))
        assert inst.costs.chunks_attention_s([(chunk, past)] * k) == pytest.approx(batched, rel=1e-12)
    mixed = [(100, 0.0), (300, 50.0), (700, 10.0)]
    assert inst.costs.chunks_attention_s(mixed) <= sum(inst.costs.chunk_attention_s(c, s) for c, s in mixed)


def test_vanishing_load_ttft_is_one_prefill_tpot_one_decode(setup):
    """Requests 100 s apart never meet: TTFT = one prefill step, TPOT = the mean decode step over
    contexts P..P+G-2 (perfmodel's mean_decode_step, exact)."""
    hw, model, inst = setup
    prompt, gen = 700, 50
    arrival = np.arange(5) * 100.0
    res = simulate(inst, fixed(5, prompt, gen, arrival=arrival))
    prefill = float(step_time(model, hw, seqs=1, new_tokens=prompt, past=0.0, p=P16, logits_tokens=1)["time_s"])
    decode = float(mean_decode_step(model, hw, seqs=1, past_first=prompt, past_last=prompt + gen - 2, p=P16)["time_s"])
    # TTFT is a difference of two clock readings near the arrival time: exact to a few ulps of the
    # clock (400 s here: ~1e-13 s), not of the TTFT itself
    clock_ulps = 4 * np.finfo(float).eps * arrival.max()
    np.testing.assert_allclose(res.ttft_s, prefill, rtol=1e-12, atol=clock_ulps)
    np.testing.assert_allclose(res.tpot_s, decode, rtol=1e-9)
    np.testing.assert_allclose(res.e2e_s, prefill + (gen - 1) * decode, rtol=1e-9)


@pytest.mark.parametrize("prompt,gen,seqs", [(512, 128, 64), (128, 512, 256), (2048, 64, 32)])
def test_saturation_throughput_equals_best_static_batch(setup, prompt, gen, seqs):
    """4000 requests at once keep max_num_seqs running. The steady throughput (middle 60% of the
    finishes) equals the best static batch that fits (perfmodel.predict over batch 1..64) within 5%:
    both schedules do the same work per request (P prefill tokens, G - 1 decodes at the same
    contexts); they differ only in how prefill is batched (8192-token chunks mixed with decodes vs
    one 64 x 512-token step: GEMMs are at full efficiency in both) and in the batch decodes run at
    while requests churn (at most one iteration per request); prefill tokens riding along with
    memory-bound decodes make continuous batching up to 3.5% faster on these shapes (measured
    -0.1%, +3.5%, +1.6%). It cannot beat decoding alone."""
    hw, model, _ = setup
    inst = make_instance(model, hw, cfg=ServeConfig(max_num_seqs=seqs))
    res = simulate(inst, fixed(4000, prompt, gen))
    finish = np.sort(res.finish_s)
    lo, hi = int(0.2 * len(finish)), int(0.8 * len(finish))
    steady = (hi - lo) * gen / (finish[hi] - finish[lo])
    pred = perfmodel.predict(model, hw, workloads.Scenario(batch=np.arange(1, seqs + 1), prompt=prompt, gen=gen))
    best = int(np.argmax(pred["throughput_tok_s"]))
    assert pred["fits"][best]
    assert steady == pytest.approx(pred["throughput_tok_s"][best], rel=0.05)
    assert steady < pred["decode_tok_s"][best]


def test_littles_law_on_the_queue(setup):
    """Time-average queue length = arrival rate x mean wait. The simulator samples the queue once per
    iteration (after scheduling), so a request's first partial iteration is not counted: the
    integral falls short of the summed waits by at most one iteration per wait."""
    _, _, inst = setup
    req = W.generate(3000, 60.0, W.Lengths("lognormal", 600, 0.4), W.Lengths("uniform", 1, low=16, high=256), seed=3)
    res = simulate(inst, req)
    durations = res.iteration_end_s - res.iteration_start_s
    area = float(np.sum(res.queue_length * durations))
    waits = float(res.wait_s.sum())
    assert res.queue_length.max() > 5  # a loaded queue, not a trivial one
    assert 0 <= waits - area <= len(req) * durations.max() + 1e-9
    span = res.finish_s.max() - res.arrival_s.min()
    little = (len(req) / span) * res.wait_s.mean()
    assert area / span == pytest.approx(little, abs=durations.max() * len(req) / span)


@pytest.mark.parametrize("mode,spec", [("recompute", None), ("swap", None), ("recompute", SpecDecode(3, 0.7)),
                                       ("swap", SpecDecode(2, 0.5))])
def test_preemption_never_loses_a_request(setup, mode, spec):
    hw, model, _ = setup
    inst = make_instance(model, hw, cfg=ServeConfig(kv_blocks=1500, preemption=mode, spec=spec))
    req = W.generate(1500, 80.0, 512, W.Lengths("uniform", 1, low=1, high=400), seed=5)
    res = simulate(inst, req)
    assert res.preemptions.sum() > 0
    assert np.all(np.isfinite(res.finish_s)) and np.all(np.isfinite(res.first_token_s))
    assert np.all(res.arrival_s <= res.first_token_s) and np.all(res.first_token_s <= res.finish_s)
    assert res.kv_used_blocks.max() <= 1500
    assert res.kv_used_blocks[-1] == 0  # every block allocated was freed: none leaked
    # every output token was produced: total tokens of the decode iterations cover the outputs
    assert summarize(res)["requests"] == 1500


@pytest.mark.parametrize("mode", ["recompute", "swap"])
def test_handed_in_requests_decode_without_prefill(setup, mode):
    """A decode instance (prefilled=True) admits requests with their cache: the first token is the
    arrival; under memory pressure it still finishes every request and frees every block."""
    hw, model, _ = setup
    inst = make_instance(model, hw, cfg=ServeConfig(kv_blocks=1500, preemption=mode))
    res = simulate(inst, W.generate(800, 80.0, 512, W.Lengths("uniform", 1, low=2, high=400), seed=5), prefilled=True)
    assert res.preemptions.sum() > 0 and res.kv_used_blocks[-1] == 0
    assert np.array_equal(res.first_token_s, res.arrival_s) and np.all(np.isfinite(res.finish_s))


def test_same_seed_same_result(setup):
    hw, model, _ = setup
    inst = make_instance(model, hw, cfg=ServeConfig(spec=SpecDecode(3, 0.6), max_num_seqs=64))
    a = W.generate(300, 20.0, W.Lengths("lognormal", 400, 0.5), 64, seed=11, burst_cv=2.0, prefix_fraction=0.3)
    b = W.generate(300, 20.0, W.Lengths("lognormal", 400, 0.5), 64, seed=11, burst_cv=2.0, prefix_fraction=0.3)
    c = W.generate(300, 20.0, W.Lengths("lognormal", 400, 0.5), 64, seed=12, burst_cv=2.0, prefix_fraction=0.3)
    assert np.array_equal(a.arrival_s, b.arrival_s) and not np.array_equal(a.arrival_s, c.arrival_s)
    ra, rb = simulate(inst, a, seed=1), simulate(inst, b, seed=1)
    assert np.array_equal(ra.finish_s, rb.finish_s) and np.array_equal(ra.first_token_s, rb.first_token_s)


def test_speculative_tokens_per_step_match_leviathan(setup):
    """A lone request emits (1 - a^(k+1)) / (1 - a) tokens per verification step on average."""
    hw, model, _ = setup
    k, alpha, gen = 4, 0.8, 4001
    inst = make_instance(model, hw, cfg=ServeConfig(spec=SpecDecode(k, alpha)))
    res = simulate(inst, fixed(1, 100, gen), seed=2)
    steps = int(res.iteration_decodes.sum())
    expected = (1 - alpha ** (k + 1)) / (1 - alpha)
    per_step = (gen - 1) / steps
    # std of one step's tokens is < k / 2: four standard errors over `steps` samples
    assert per_step == pytest.approx(expected, abs=4 * (k / 2) / np.sqrt(steps))


def test_prefix_cache_skips_shared_prefill(setup):
    _, _, inst = setup
    shared = simulate(inst, W.generate(200, 2.0, 2048, 16, seed=4, prefix_fraction=0.9))
    alone = simulate(inst, W.generate(200, 2.0, 2048, 16, seed=4, prefix_fraction=0.0))
    assert np.median(shared.ttft_s) < 0.5 * np.median(alone.ttft_s)


def test_static_batch_matches_prediction(setup):
    """A static batch of 8 arriving together: all first tokens at once, then G - 1 decodes."""
    hw, model, _ = setup
    inst = make_instance(model, hw, cfg=ServeConfig(static=True, max_num_seqs=8, max_num_batched_tokens=8 * 256))
    res = simulate(inst, fixed(16, 256, 32))
    assert res.preemptions.sum() == 0 and res.kv_used_blocks[-1] == 0
    first = np.sort(res.first_token_s)
    assert np.all(first[:8] == first[0]) and np.all(first[8:] == first[8]) and first[8] >= res.finish_s[:8].max()
    pred = perfmodel.predict(model, hw, workloads.Scenario(batch=8, prompt=256, gen=32)).row(0)
    # the batch's prompts run as one variable-length attention kernel: exactly the batched prefill step
    assert first[0] == pytest.approx(pred["ttft_s"], rel=1e-12)
    assert res.finish_s[:8].max() == pytest.approx(pred["e2e_s"], rel=1e-9)


def test_disaggregated_and_replicas(setup):
    _, model, inst = setup
    req = W.generate(600, 30.0, 1024, 64, seed=8)
    agg = simulate_replicas(inst, req, 2)
    dis = simulate_disaggregated(inst, inst, req, 1, 1)
    for res in (agg, dis):
        assert np.all(np.isfinite(res.finish_s)) and np.all(res.first_token_s <= res.finish_s)
    link = transfer_link(inst, 2)
    assert link.name == "nvlink4"
    moved = kv_transfer_s(inst, 1024, link)
    assert moved == pytest.approx(link.latency_s + 1024 * model.n_layers * 2 * 8 * 128 * 2 / link.bytes_per_s)
    # TPOT of the disaggregated decode includes the transfer, TTFT is the prefill instance's
    assert np.all(dis.tpot_s >= moved / 63 - 1e-12)


def test_bad_input_is_one_line():
    with pytest.raises(W.WorkloadError, match="rate"):
        W.generate(10, -1.0)
    with pytest.raises(W.WorkloadError, match="requests"):
        W.generate(0, 1.0)
    with pytest.raises(W.WorkloadError, match="prefix_fraction"):
        W.generate(10, 1.0, prefix_fraction=1.0)
    with pytest.raises(ServeError, match="max_num_batched_tokens"):
        ServeConfig(max_num_batched_tokens=64, max_num_seqs=128)
    hw, model = hardware.load("h200-sxm-calibrated"), workloads.load("llama-3-8b")
    with pytest.raises(W.WorkloadError, match="context window"):
        simulate(make_instance(model, hw), fixed(2, 8000, 500))
    with pytest.raises(ServeError, match="does not fit"):
        make_instance(workloads.load("llama-3.1-70b"), hardware.load("l4"))


def test_trace_round_trip_and_errors(tmp_path):
    req = W.generate(50, 5.0, W.Lengths("uniform", 1, low=10, high=90), 20, seed=1, prefix_fraction=0.2)
    W.write_trace(req, tmp_path / "t.csv")
    back = W.load_trace(tmp_path / "t.csv")
    assert np.allclose(back.arrival_s, req.arrival_s) and np.array_equal(back.prompt_tokens, req.prompt_tokens)
    (tmp_path / "t.jsonl").write_text('{"arrival_s": 0.5, "input_len": 10, "output_len": 3}\n'
                                      '{"arrival_s": 0.1, "input_len": 12, "output_len": 4}\n')
    j = W.load_trace(tmp_path / "t.jsonl")
    assert j.arrival_s.tolist() == [0.1, 0.5] and j.prompt_tokens.tolist() == [12, 10]
    (tmp_path / "empty.csv").write_text("arrival_s,prompt_tokens,output_tokens\n")
    with pytest.raises(W.WorkloadError, match="no requests"):
        W.load_trace(tmp_path / "empty.csv")
    (tmp_path / "bad.csv").write_text("arrival_s,prompt_tokens\n0,5\n")
    with pytest.raises(W.WorkloadError, match="output_tokens"):
        W.load_trace(tmp_path / "bad.csv")
    (tmp_path / "neg.csv").write_text("arrival_s,prompt_tokens,output_tokens\n0,-5,3\n")
    with pytest.raises(W.WorkloadError, match="prompt_tokens"):
        W.load_trace(tmp_path / "neg.csv")


def test_goodput_counts_requests_meeting_both_objectives(setup):
    _, _, inst = setup
    res = simulate(inst, W.generate(400, 25.0, 1024, 64, seed=2))
    slo = SLO(ttft_s=float(np.median(res.ttft_s)), tpot_s=1.0)
    s = summarize(res, slo)
    span = res.finish_s.max() - res.arrival_s.min()
    assert s["goodput_req_s"] == pytest.approx(np.sum(res.ttft_s <= slo.ttft_s) / span)
