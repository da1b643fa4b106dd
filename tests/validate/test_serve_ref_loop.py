"""Pure parts of the serving reference loop: bucket padding, Poisson determinism, scheduler
bookkeeping, and that chunked prefill + per-slot decode agree with one-shot prefill."""
import pytest
import torch

from validate.reports.serve import ref_loop as rl


def test_bucket_is_smallest_at_least_n():
    assert [rl.bucket_of(n) for n in (1, 2, 3, 5, 33, 128)] == [1, 2, 4, 8, 64, 128]
    with pytest.raises(ValueError, match="batch"):
        rl.bucket_of(129)


def test_poisson_same_seed_same_requests_and_mean_gap():
    a = rl.poisson_requests(4.0, 2000, seed=1)
    assert a == rl.poisson_requests(4.0, 2000, seed=1)
    assert a != rl.poisson_requests(4.0, 2000, seed=2)
    mean_gap = a[-1]["arrival_s"] / len(a)
    assert abs(mean_gap - 0.25) < 0.02  # 1/rate within ~3 sigma/sqrt(n)
    assert all(128 <= r["prompt_tokens"] <= 1024 and 32 <= r["output_tokens"] <= 256 for r in a)


def test_scheduler_budget_slots_and_lowest_free_slot():
    s = rl.Scheduler(max_slots=2, token_budget=100)
    seqs = [rl.Seq(dict(request_id=i, prompt_tokens=80, output_tokens=4)) for i in range(3)]
    s.waiting += seqs
    s.admit(0.0)
    assert [q.slot for q in s.running] == [0, 1] and s.waiting == [seqs[2]]
    chunks, decode = s.plan()
    assert [(q.slot, n) for q, n in chunks] == [(0, 80), (1, 20)] and decode == []
    seqs[0].prefilled, seqs[1].prefilled = 80, 20
    chunks, decode = s.plan()  # one decoding sequence takes one token of the budget
    assert [(q.slot, n) for q, n in chunks] == [(1, 60)] and decode == [seqs[0]]
    assert s.decode_bucket([seqs[1]]) == 2  # padded up to the highest used slot
    s.finish(seqs[0])
    s.admit(1.0)
    assert seqs[2].slot == 0 and seqs[2].scheduled_s == 1.0


def test_chunked_prefill_and_slot_decode_match_one_shot():
    args = rl.parse(["--out", "x", "--device", "cpu", "--model", "llama-3-8b-tiny", "--max-slots", "4",
                     "--max-prompt", "64", "--max-output", "8", "--dtype", "fp32"])
    r = rl.Runner(args)
    tokens = torch.randint(0, r.vocab, (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        one = int(rl.prefill_fn(r.engine, r.caches, 3, tokens, 0)[0])
        rl.prefill_fn(r.engine, r.caches, 1, tokens[:, :25], 0)
        two = int(rl.prefill_fn(r.engine, r.caches, 1, tokens[:, 25:], 25)[0])
        assert one == two
        # decode of the next token in slots 1 and 3 (batch padded to 4) agrees in both slots
        nxt = r.decode(4, [one, one], [1, 3], [40, 40])
    assert nxt[0] == nxt[1]


def test_report_of_a_simulator_equal_to_the_measurement_has_ratio_one(tmp_path):
    from validate.reports.serve import make_report as mr
    (tmp_path / "requests.csv").write_text("request_id,rate,arrival_s,prompt_tokens,output_tokens\n"
                                           "0,1.0,0.0,100,3\n1,1.0,1.0,100,3\n")
    (tmp_path / "per_request.csv").write_text(
        "request_id,rate,arrival_s,prompt_tokens,output_tokens,scheduled_s,first_token_s,last_token_s,finish_s,tokens\n"
        "0,1.0,0.0,100,3,0.0,0.1,0.3,0.3,3\n1,1.0,1.0,100,3,1.0,1.2,1.4,1.4,3\n")
    (tmp_path / "sim.csv").write_text("request_id,rate,ttft_s,tpot_s,e2e_s\n0,1.0,0.1,0.1,0.3\n1,1.0,0.2,0.1,0.4\n")
    assert mr.main(["--data", str(tmp_path), "--sim", str(tmp_path / "sim.csv")]) == 0
    text = (tmp_path / "report.md").read_text()
    assert text.count("| 1.000 |") == 5  # every metric: simulated == measured
    assert "| 1 | throughput tok/s | 4.3 |" in text  # 6 tokens over 1.4 s
