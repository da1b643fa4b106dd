"""The serving reference loop: bucket padding, Poisson determinism, vLLM-V1 admission under the
token budget, compact cache rows, chunked prefill + row-compacted decode agreeing with one-shot
prefill, the simulator reproducing the loop's scheduler exactly on a virtual clock, bad input, and
a CPU smoke run of loop + report."""
import math
import types

import numpy as np
import pytest
import torch

from validate.reports.serve import ref_loop as rl


def test_bucket_is_smallest_at_least_n():
    assert [rl.bucket_of(n) for n in (1, 2, 3, 5, 33, 128)] == [1, 2, 4, 8, 64, 128]
    with pytest.raises(ValueError, match="batch"):
        rl.bucket_of(257)
    assert rl.sizes_up_to(rl.PREFILL_SIZES, 300) == (16, 32, 64, 128, 256, 300)


def test_poisson_same_seed_same_requests_and_mean_gap():
    a = rl.poisson_requests(4.0, 2000, seed=1)
    assert a == rl.poisson_requests(4.0, 2000, seed=1)
    assert a != rl.poisson_requests(4.0, 2000, seed=2)
    mean_gap = a[-1]["arrival_s"] / len(a)
    assert abs(mean_gap - 0.25) < 0.02  # 1/rate within ~3 sigma/sqrt(n)
    assert all(128 <= r["prompt_tokens"] <= 1024 and 32 <= r["output_tokens"] <= 256 for r in a)


def test_admission_needs_budget_and_slots():
    s = rl.Scheduler(max_slots=2, token_budget=100)
    seqs = [rl.Seq(dict(request_id=i, prompt_tokens=80, output_tokens=4)) for i in range(3)]
    s.waiting += seqs
    chunks, decode = s.plan(0.0)
    assert [(q.slot, n) for q, n in chunks] == [(0, 80), (1, 20)] and decode == [] and s.waiting == [seqs[2]]
    seqs[0].prefilled, seqs[1].prefilled = 80, 20
    seqs[0].generated = 1
    chunks, decode = s.plan(1.0)  # one decoding sequence takes one token of the budget
    assert [(q.slot, n) for q, n in chunks] == [(1, 60)] and decode == [seqs[0]]
    assert seqs[2].slot == -1  # no free slot: still waiting


def test_compact_puts_decodes_in_the_first_rows():
    s = rl.Scheduler(max_slots=8, token_budget=1000)
    seqs = [rl.Seq(dict(request_id=i, prompt_tokens=10, output_tokens=5)) for i in range(5)]
    for i, q in enumerate(seqs):
        q.slot = i
        s.running.append(q)
    # rows 0 and 1 finished; 2 prefilling; 3 and 4 decoding
    s.running.remove(seqs[0])
    s.running.remove(seqs[1])
    seqs[3].prefilled = seqs[4].prefilled = 10
    seqs[3].generated, seqs[4].generated = 2, 3
    seqs[2].prefilled = 4
    ops = s.compact()
    assert sorted(q.slot for q in (seqs[3], seqs[4])) == [0, 1] and seqs[2].slot == 2
    assert ops == [("move", 3, 0, 11), ("move", 4, 1, 12)]
    # a prefilling sequence in the decode region trades rows with a decoding one
    seqs[2].prefilled, seqs[2].generated = 10, 1
    seqs[3].prefilled, seqs[3].generated = 3, 0  # (pretend) row 0 is now a prefill
    ops = s.compact()
    assert ops[0][0] == "swap" and {seqs[2].slot, seqs[4].slot} == {0, 1} and seqs[3].slot == 2


def test_bad_input_is_a_one_line_error(capsys):
    for argv, field in ((["--dtype", "int3"], "--dtype"), (["--fractions", "0.2,x"], "--fractions"),
                        (["--fractions", "0,1"], "--fractions"), (["--rates", "-1"], "--rates"),
                        (["--max-slots", "0"], "--max-slots"), (["--token-budget", "64", "--max-slots", "128"],
                                                                "--token-budget")):
        with pytest.raises(SystemExit) as err:
            rl.parse(["--out", "x"] + argv)
        assert err.value.code == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert field in line


def test_chunked_prefill_and_compact_decode_match_one_shot():
    args = rl.parse(["--out", "x", "--device", "cpu", "--max-slots", "4", "--token-budget", "64",
                     "--min-prompt", "8", "--max-prompt", "64", "--min-output", "2", "--max-output", "8", "--dtype", "fp32"])
    r = rl.Runner(args)
    r.prepare()
    tokens = torch.randint(0, r.vocab, (40,), generator=torch.Generator().manual_seed(7))
    # one-shot 40 tokens in row 3; the same prompt in two chunks (25 + 15) in row 1

    def prefill(row, n, past, toks):
        orig = torch.randint
        torch.randint = lambda *a, **k: toks
        try:
            return r.prefill(row, n, past, 0)
        finally:
            torch.randint = orig
    one, size = prefill(3, 40, 0, tokens)
    assert size == 64
    prefill(1, 25, 0, tokens[:25])
    two, _ = prefill(1, 15, 25, tokens[25:])
    assert int(one[0]) == int(two[0])
    # rows 1 and 3 move to rows 0 and 1 (compaction), then decode the next token: both agree
    r.apply([("move", 1, 0, 40), ("move", 3, 1, 40)])
    nxt, bucket = r.decode([int(one[0])] * 2, [40, 40])
    assert bucket == 2 and nxt[0] == nxt[1]


class VirtualRunner:
    """The loop's runner interface on a virtual clock: each forward advances it by the simulator's
    price of that forward (the loop's shapes: padded chunk over the static row, padded decode)."""

    def __init__(self, inst, clock, s_max, decode_sizes, prefill_sizes):
        self.inst, self.clock, self.S = inst, clock, s_max
        self.decode_sizes, self.prefill_sizes = decode_sizes, prefill_sizes

    def prefill(self, row, n, past, seed):
        from serving.simulator import padded
        size = padded(n, self.prefill_sizes)
        self.clock.t += self.inst.costs.mixed_step_s(0, 0.0, [(size, self.S - (size + 1) / 2.0)], 1)
        return np.zeros(1, np.int64), size

    def decode(self, tokens, positions):
        size = rl.bucket_of(len(tokens), self.decode_sizes)
        self.clock.t += self.inst.costs.decode_step_s(size, size * (self.S - 1.0))
        return np.zeros(len(tokens), np.int64), size

    def apply(self, ops):
        pass

    def sync(self):
        pass


def test_simulator_reproduces_the_loop_scheduler_on_a_virtual_clock(monkeypatch):
    """The loop's scheduler driven by the simulator's per-forward prices gives exactly the
    simulator's per-request times: the two schedulers are the same rules."""
    import hardware
    import workloads
    from serving import workload as W
    from serving.simulator import ServeConfig, make_instance, simulate

    clock = types.SimpleNamespace(t=0.0)

    def sleep(s):
        clock.t += max(s, 0.0)
    monkeypatch.setattr(rl, "time", types.SimpleNamespace(perf_counter=lambda: clock.t, sleep=sleep))
    args = types.SimpleNamespace(max_slots=8, token_budget=256)
    meta = dict(config=dict(token_budget=256, max_slots=8), s_max=512,
                decode_sizes=list(rl.sizes_up_to(rl.DECODE_SIZES, 8)),
                prefill_sizes=list(rl.sizes_up_to(rl.PREFILL_SIZES, 256)))
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in rl.sim_config(meta).items()}
    inst = make_instance(workloads.load("llama-3-8b"), hardware.load("h200-sxm-calibrated"), engine="torch-compile",
                         cfg=ServeConfig(**settings))
    for rate in (5.0, 40.0, 400.0):
        reqs = rl.poisson_requests(rate, 40, 3, (20, 300), (2, 60))
        runner = VirtualRunner(inst, clock, 512, meta["decode_sizes"], meta["prefill_sizes"])
        clock.t = 0.0
        seqs = sorted(rl.serve(runner, reqs, args, lambda row: None), key=lambda s: s.req["request_id"])
        got_first = np.array([s.first_token_s for s in seqs])
        got_finish = np.array([s.finish_s for s in seqs])
        res = simulate(inst, W.Requests(np.array([r["arrival_s"] for r in reqs]),
                                        np.array([r["prompt_tokens"] for r in reqs]),
                                        np.array([r["output_tokens"] for r in reqs]), np.zeros(40, np.int64)))
        assert np.allclose(got_first, res.first_token_s, rtol=1e-9, atol=1e-9)
        assert np.allclose(got_finish, res.finish_s, rtol=1e-9, atol=1e-9)
        assert all(s.generated == s.req["output_tokens"] for s in seqs)


def test_cpu_smoke_loop_then_report(tmp_path):
    """The whole pipeline on CPU: a tiny model serving 2 rates, resumed (nothing redone), then
    report.md with the 5 metrics of each rate."""
    from tests.report_scripts import load_report_script
    argv = ["--device", "cpu", "--requests", "4", "--rates", "30,90", "--min-prompt", "20", "--max-prompt", "100",
            "--min-output", "3", "--max-output", "6", "--max-slots", "4", "--token-budget", "64", "--out", str(tmp_path)]
    assert rl.main(argv) == 0
    rows = (tmp_path / "per_request.csv").read_text().splitlines()
    assert len(rows) == 1 + 8
    assert rl.main(argv) == 0  # resume: both rates skipped
    assert (tmp_path / "per_request.csv").read_text().splitlines() == rows
    for line in rows[1:]:
        r = dict(zip(rows[0].split(","), line.split(",")))
        assert float(r["arrival_s"]) <= float(r["first_token_s"]) <= float(r["finish_s"])
        assert r["tokens"] == r["output_tokens"]
    mr = load_report_script("serve", "make_report")
    assert mr.main(["--data", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert sum(line.startswith("| 30 |") for line in text.splitlines()) == 5
    assert sum(line.startswith("| 90 |") for line in text.splitlines()) == 5
    assert "of 10 metrics within 15%" in text
    assert not math.isnan(float(text.split("| 30 | 4 | ttft_p50 (ms) | ")[1].split(" |")[0]))


def test_folded_gqa_attention_equals_sdpa_gqa():
    """attend (query heads folded into rows, additive bias) == SDPA's enable_gqa with the boolean mask."""
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(0)
    B, T, H, K, S, d = 2, 3, 8, 2, 16, 4
    q = torch.randn(B, T, H, d, generator=g)
    k, v = torch.randn(B, K, S, d, generator=g), torch.randn(B, K, S, d, generator=g)
    mask = torch.rand(B, 1, T, S, generator=g) < 0.6
    mask[..., 0] = True
    ref = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, attn_mask=mask, enable_gqa=True)
    got = rl.attend(q, k, v, rl.gqa_bias(mask, H // K, torch.float32))
    assert torch.allclose(got, ref.transpose(1, 2).reshape(B, T, H * d), atol=1e-5)


def test_forward_table_prices_each_captured_forward():
    """A measured replay equal to the simulator's price of that forward reads ratio 1.000."""
    import hardware
    import workloads
    from serving.simulator import ServeConfig, iteration_s, make_instance
    from tests.report_scripts import load_report_script
    mr = load_report_script("serve", "make_report")
    meta = dict(config=dict(token_budget=256, max_slots=8), s_max=512, decode_sizes=[1, 2, 4, 8],
                prefill_sizes=[16, 32, 64, 128, 256])
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in rl.sim_config(meta).items()}
    inst = make_instance(workloads.load("llama-3-8b"), hardware.load("h200-sxm-calibrated"), engine="torch-compile",
                         cfg=ServeConfig(**settings))
    meta["forward_s"] = {"decode_8": iteration_s(inst.cfg, inst.costs, 8, 0.0, [], 0),
                         "prefill_256": 2 * iteration_s(inst.cfg, inst.costs, 0, 0.0, [(256, 0)], 1)}
    text = mr.forward_table(meta, inst)
    assert "| decode_8 |" in text and text.split("| decode_8 |")[1].split("\n")[0].endswith("| 1.000 |")
    assert text.split("| prefill_256 |")[1].split("\n")[0].endswith("| 0.500 |")
    # a 512-position static row makes decode_8 cost more than 8 rows of 1 position would
    assert iteration_s(inst.cfg, inst.costs, 8, 0.0, [], 0) > inst.costs.decode_step_s(8, 8.0)
