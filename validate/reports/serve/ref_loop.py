"""Reference continuous-batching engine loop (issue 14 part 5): a small server on the random-weight
model of validate/engine_model.py, fed Poisson arrivals in wall-clock time, recording per-request
timestamps and a per-iteration log, to validate the serving simulator on the same requests.

One iteration (what the simulator must mirror; see README.md):
  1. requests whose arrival time has passed join the FCFS waiting queue;
  2. waiting requests are admitted FCFS while a slot is free (slot = lowest free index);
  3. prefill: budget = token_budget - (number of decoding sequences); prefilling sequences, FCFS, each
     get a chunk min(remaining prompt, budget) run one sequence at a time (eager); a sequence whose
     prompt completes produces its first token in this iteration;
  4. one decode step (CUDA graph of the bucket = next bucket >= highest used slot + 1) for every
     sequence that was decoding at the start of the iteration; a sequence that reaches its output
     length finishes and frees its slot.
Prefill and decode run as separate kernels launches within one iteration (not one fused batch).

GPU:  python validate/reports/serve/ref_loop.py --out $OUT/serve --rates auto
Smoke: python validate/reports/serve/ref_loop.py --device cpu --layers 1 --requests 5 --out /tmp/serve
"""
from __future__ import annotations

import argparse
import bisect
import csv
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


# -- pure parts (tested without torch work) ----------------------------------------------------------

def bucket_of(n: int, buckets=BUCKETS) -> int:
    """The smallest bucket >= n (decode pads the batch up to it)."""
    if n < 1 or n > buckets[-1]:
        raise ValueError(f"batch: {n} is outside [1, {buckets[-1]}]")
    return buckets[bisect.bisect_left(buckets, n)]


def poisson_requests(rate_req_s: float, n: int, seed: int, prompt=(128, 1024), output=(32, 256)) -> list[dict]:
    """n requests with exponential inter-arrival gaps of mean 1/rate (Poisson process), prompt and
    output lengths uniform integers in the given inclusive ranges; deterministic for a seed."""
    if not rate_req_s > 0:
        raise ValueError(f"rate: {rate_req_s} must be > 0 req/s")
    rng = random.Random(f"{seed}-{rate_req_s}")
    t, out = 0.0, []
    for i in range(n):
        t += rng.expovariate(rate_req_s)
        out.append(dict(request_id=i, rate=rate_req_s, arrival_s=t,
                        prompt_tokens=rng.randint(*prompt), output_tokens=rng.randint(*output)))
    return out


@dataclass
class Seq:
    req: dict
    slot: int = -1
    prefilled: int = 0
    generated: int = 0
    scheduled_s: float = math.nan
    first_token_s: float = math.nan
    last_token_s: float = math.nan
    finish_s: float = math.nan

    @property
    def decoding(self) -> bool:
        return self.prefilled == self.req["prompt_tokens"]


@dataclass
class Scheduler:
    """Slot allocation, FCFS admission and the per-iteration prefill plan (no torch)."""
    max_slots: int
    token_budget: int
    waiting: list = field(default_factory=list)
    running: list = field(default_factory=list)
    free: list = field(default_factory=list)

    def __post_init__(self):
        self.free = list(range(self.max_slots))

    def admit(self, now_s: float) -> None:
        while self.waiting and self.free:
            seq = self.waiting.pop(0)
            self.free.sort()
            seq.slot = self.free.pop(0)
            seq.scheduled_s = now_s
            self.running.append(seq)

    def plan(self) -> tuple[list[tuple[Seq, int]], list[Seq]]:
        """(prefill chunks [(seq, tokens)], decode set) of one iteration."""
        decode = [s for s in self.running if s.decoding]
        budget = self.token_budget - len(decode)
        chunks = []
        for s in self.running:
            if budget <= 0:
                break
            if not s.decoding:
                n = min(s.req["prompt_tokens"] - s.prefilled, budget)
                chunks.append((s, n))
                budget -= n
        return chunks, decode

    def decode_bucket(self, decode: list[Seq]) -> int:
        return bucket_of(max(s.slot for s in decode) + 1) if decode else 0

    def finish(self, seq: Seq) -> None:
        self.running.remove(seq)
        self.free.append(seq.slot)


# -- the model with per-slot positions -----------------------------------------------------------------

def _attention(h, w, k_cache, v_cache, cos_t, sin_t, write, mask, dims):
    """em.attention with per-sequence positions: `write(cache, new)` stores K/V, `mask` [B,1,T,S]
    (True = attend) replaces the single-offset causal flag, so one batch holds sequences of
    different lengths (decode) or a prefill chunk after cached tokens."""
    import torch.nn.functional as F
    from validate import engine_model as em
    B, T, _ = h.shape
    H, K, d = dims.heads, dims.kv_heads, dims.head_dim
    q, k, v = em.linear(h, w["qkv"]).split([H * d, K * d, K * d], dim=-1)
    q, k, v = q.view(B, T, H, d), k.view(B, T, K, d), v.view(B, T, K, d)
    if dims.qk_norm:
        q, k = em.rms_norm(q, w["q_norm"], dims.eps), em.rms_norm(k, w["k_norm"], dims.eps)
    q, k = em.rope(q, cos_t, sin_t), em.rope(k, cos_t, sin_t)
    write(k_cache, k.transpose(1, 2))
    write(v_cache, v.transpose(1, 2))
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k_cache, v_cache, attn_mask=mask, enable_gqa=True)
    return em.linear(o.transpose(1, 2).reshape(B, T, H * d), w["o"])


def _forward(engine, tokens, caches, cos_t, sin_t, write, mask):
    import torch.nn.functional as F
    from validate import engine_model as em
    x = F.embedding(tokens, engine.embed)
    residual = x.new_zeros(x.shape)
    for w, (kc, vc) in zip(engine.layers, caches):
        h, residual = em.add_rmsnorm(x, residual, w["attn_norm"], engine.dims.eps)
        x = _attention(h, w, kc, vc, cos_t, sin_t, write, mask, engine.dims)
        h, residual = em.add_rmsnorm(x, residual, w["mlp_norm"], engine.dims.eps)
        x = em.moe(h, w, engine.dims) if engine.dims.experts else em.mlp(h, w)
    h, _ = em.add_rmsnorm(x[:, -1], residual[:, -1], engine.final_norm, engine.dims.eps)
    return F.linear(h, engine.lm_head).argmax(-1)


def decode_fn(engine, caches, tokens, pos):
    """One decode token for rows [0, B) of the slot cache; tokens [B,1], pos [B] (padded rows: 0).
    Attention spans the whole static cache under a mask (cost ~ S_max, not the context)."""
    import torch
    B = tokens.shape[0]
    view = [(k[:B], v[:B]) for k, v in caches]
    rows = torch.arange(B, device=tokens.device)
    S = view[0][0].shape[2]
    mask = (torch.arange(S, device=tokens.device)[None, :] <= pos[:, None])[:, None, None, :]

    def write(cache, new):  # new [B, K, 1, d] at each row's own position
        cache[rows, :, pos] = new[:, :, 0]
    return _forward(engine, tokens, view, engine.cos[pos][:, None], engine.sin[pos][:, None], write, mask)


def prefill_fn(engine, caches, slot: int, tokens, past: int):
    """A prefill chunk of T tokens of one sequence after `past` cached tokens (bottom-right causal)."""
    import torch
    T = tokens.shape[1]
    S = past + T
    view = [(k[slot:slot + 1, :, :S], v[slot:slot + 1, :, :S]) for k, v in caches]
    q_pos = torch.arange(past, S, device=tokens.device)
    mask = (torch.arange(S, device=tokens.device)[None, :] <= q_pos[:, None])[None, None]

    def write(cache, new):
        cache[:, :, past:S] = new
    return _forward(engine, tokens, view, engine.cos[past:S], engine.sin[past:S], write, mask)


class Runner:
    """Builds the engine, captures one decode CUDA graph per bucket (CUDA) and runs steps."""

    def __init__(self, args):
        import torch
        from validate import engine_model as em
        from validate.reports.engine.measure_engine import model_spec
        self.torch, self.cuda = torch, args.device == "cuda"
        self.dev = torch.device(args.device)
        self.s_max = -(-(args.max_prompt + args.max_output + 1) // 256) * 256
        spec = model_spec(args.model, args.layers)
        self.engine = em.build(spec, args.dtype, args.max_slots, self.s_max, self.dev)
        self.caches = self.engine.caches(args.max_slots, self.s_max)
        self.buckets = [b for b in BUCKETS if b <= args.max_slots]
        self.graphs = {}
        self.vocab = spec.vocab_size
        if self.cuda:
            for b in self.buckets:
                tok = torch.zeros(b, 1, dtype=torch.long, device=self.dev)
                pos = torch.zeros(b, dtype=torch.long, device=self.dev)
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    for _ in range(2):
                        decode_fn(self.engine, self.caches, tok, pos)
                torch.cuda.current_stream().wait_stream(s)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    out = decode_fn(self.engine, self.caches, tok, pos)
                self.graphs[b] = (g, tok, pos, out)
            torch.cuda.synchronize()

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def decode(self, bucket: int, tokens: list[int], slots: list[int], positions: list[int]) -> list[int]:
        torch = self.torch
        tok = torch.zeros(bucket, 1, dtype=torch.long)
        pos = torch.zeros(bucket, dtype=torch.long)
        for t, s, p in zip(tokens, slots, positions):
            tok[s, 0], pos[s] = t, p
        if self.cuda:
            g, tok_s, pos_s, out = self.graphs[bucket]
            tok_s.copy_(tok, non_blocking=True)
            pos_s.copy_(pos, non_blocking=True)
            g.replay()
        else:
            with torch.inference_mode():
                out = decode_fn(self.engine, self.caches, tok, pos)
        out = out.tolist()
        return [out[s] for s in slots]

    def prefill(self, slot: int, n: int, past: int, seed: int) -> int:
        torch = self.torch
        g = torch.Generator().manual_seed(seed)
        tokens = torch.randint(0, self.vocab, (1, n), generator=g).to(self.dev)
        with torch.inference_mode():
            return int(prefill_fn(self.engine, self.caches, slot, tokens, past)[0])


def serve(runner: Runner, reqs: list[dict], args, log_iter) -> list[Seq]:
    """Replays `reqs` in wall-clock time through the scheduler; returns the finished sequences."""
    sched = Scheduler(args.max_slots, args.token_budget)
    pending = [Seq(r) for r in sorted(reqs, key=lambda r: r["arrival_s"])]
    done, last_tok = [], {}
    t0 = time.perf_counter()
    while pending or sched.waiting or sched.running:
        now = time.perf_counter() - t0
        while pending and pending[0].req["arrival_s"] <= now:
            sched.waiting.append(pending.pop(0))
        if not sched.waiting and not sched.running:
            time.sleep(max(0.0, pending[0].req["arrival_s"] - now))
            continue
        sched.admit(now)
        chunks, decode = sched.plan()
        start = time.perf_counter() - t0
        for seq, n in chunks:
            tok = runner.prefill(seq.slot, n, seq.prefilled, seq.req["request_id"])
            seq.prefilled += n
            if seq.decoding:
                last_tok[seq.req["request_id"]] = tok
        bucket = sched.decode_bucket(decode)
        if decode:
            out = runner.decode(bucket, [last_tok[s.req["request_id"]] for s in decode], [s.slot for s in decode],
                                [s.req["prompt_tokens"] + s.generated - 1 for s in decode])
        runner.sync()
        end = time.perf_counter() - t0
        for seq, n in chunks:
            if seq.decoding and seq.generated == 0:
                seq.generated, seq.first_token_s = 1, end
                seq.last_token_s = end
        for s, tok in zip(decode, out if decode else []):
            last_tok[s.req["request_id"]] = tok
            s.generated += 1
            s.last_token_s = end
        for s in list(sched.running):
            if s.decoding and s.generated >= s.req["output_tokens"]:
                s.finish_s = end
                sched.finish(s)
                done.append(s)
        log_iter(dict(rate=reqs[0]["rate"], start_s=start, duration_s=end - start,
                      prefill_tokens=sum(n for _, n in chunks), prefill_seqs=len(chunks),
                      decode_batch=len(decode), bucket=bucket, waiting=len(sched.waiting)))
    return done


# -- output ------------------------------------------------------------------------------------------

def _append(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            w.writeheader()
        w.writerows(rows)
        f.flush()


def rates_done(out: Path) -> set[float]:
    p = out / "per_request.csv"
    if not p.exists():
        return set()
    with p.open() as f:
        return {float(r["rate"]) for r in csv.DictReader(f)}


def capacity_req_s(runner: Runner, args) -> float:
    """Saturation estimate: the largest bucket's decode step time gives tokens/s; divided by the
    mean output length, plus the prefill of the mean prompt timed once."""
    b = runner.buckets[-1]
    runner.decode(b, [0] * b, list(range(b)), [1] * b)
    runner.sync()
    t = time.perf_counter()
    for _ in range(3):
        runner.decode(b, [0] * b, list(range(b)), [1] * b)
    runner.sync()
    step_s = (time.perf_counter() - t) / 3
    mean_prompt = (args.min_prompt + args.max_prompt) // 2
    t = time.perf_counter()
    runner.prefill(0, min(mean_prompt, args.token_budget), 0, 0)
    runner.sync()
    prefill_s = time.perf_counter() - t
    mean_out = (args.min_output + args.max_output) / 2
    return 1.0 / (step_s * mean_out / b + prefill_s)


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--model", default=None, help="default llama-3-8b (cuda), llama-3-8b-tiny (cpu)")
    p.add_argument("--layers", type=int, default=None, help="default: the model's own")
    p.add_argument("--dtype", default="bf16")
    p.add_argument("--rates", default="auto", help="'auto' (fractions of measured capacity) or req/s list a,b,c")
    p.add_argument("--fractions", default="0.2,0.6,1.0,1.3")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--max-slots", type=int, default=128)
    p.add_argument("--token-budget", type=int, default=2048)
    p.add_argument("--min-prompt", type=int, default=128)
    p.add_argument("--max-prompt", type=int, default=1024)
    p.add_argument("--min-output", type=int, default=32)
    p.add_argument("--max-output", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.model is None:
        a.model = "llama-3-8b" if a.device == "cuda" else "llama-3-8b-tiny"
    if a.device == "cpu" and a.layers is None:
        a.layers = 1
    if a.max_slots not in BUCKETS:
        p.error(f"--max-slots: {a.max_slots} must be one of {BUCKETS}")
    return a


def main(argv=None) -> int:
    args = parse(argv)
    import torch
    import workloads
    if args.layers is None:
        args.layers = workloads.load(args.model).n_layers
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    runner = Runner(args)
    setup_s = time.perf_counter() - t
    meta_p = out / "meta.json"
    meta = json.loads(meta_p.read_text()) if meta_p.exists() else {}
    if args.rates == "auto":
        cap = meta.get("capacity_req_s") or capacity_req_s(runner, args)
        rates = [round(cap * float(f), 3) for f in args.fractions.split(",")]
    else:
        cap, rates = meta.get("capacity_req_s"), [float(r) for r in args.rates.split(",")]
    meta.update(config=vars(args), capacity_req_s=cap, rates=rates, torch=torch.__version__,
                setup_s=setup_s, s_max=runner.s_max, buckets=runner.buckets,
                gpu=torch.cuda.get_device_name() if args.device == "cuda" else "cpu")
    meta_p.write_text(json.dumps(meta, indent=1))
    done = rates_done(out)
    for rate in rates:
        if rate in done:
            print(f"rate {rate}: done, skipped")
            continue
        reqs = poisson_requests(rate, args.requests, args.seed, (args.min_prompt, args.max_prompt),
                                (args.min_output, args.max_output))
        _append(out / "requests.csv", reqs)
        iters = []
        t = time.perf_counter()
        seqs = serve(runner, reqs, args, iters.append)
        _append(out / "iterations.csv", iters)
        _append(out / "per_request.csv", [dict(
            request_id=s.req["request_id"], rate=rate, arrival_s=s.req["arrival_s"],
            prompt_tokens=s.req["prompt_tokens"], output_tokens=s.req["output_tokens"],
            scheduled_s=s.scheduled_s, first_token_s=s.first_token_s, last_token_s=s.last_token_s,
            finish_s=s.finish_s, tokens=s.generated) for s in sorted(seqs, key=lambda s: s.req["request_id"])])
        print(f"rate {rate} req/s: {len(seqs)} requests, {len(iters)} iterations, {time.perf_counter() - t:.1f} s",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    sys.exit(main())
