"""Reference continuous-batching engine loop (issue 14 part 5): a small server on the random-weight
model of validate/engine_model.py, fed Poisson arrivals in wall-clock time, recording per-request
timestamps and a per-iteration log, to validate the serving simulator on the same requests.

It runs like a vLLM-V1-style engine (vllm/v1/core/sched/scheduler.py) whose costs the simulator's
`torch-compile` profile prices: every forward is torch.compile'd (inductor) and replayed from a CUDA
graph captured per shape before the timed replay starts, prefill chunks padded to fixed sizes. The
default compile is static (one graph per captured shape, widths and head counts known to inductor,
as engines compile them); --compile dynamic makes every dim symbolic, which left inductor's fused
norm/RoPE/SiLU kernels 1.5-1.8x slower on the H200 (validate/reports/serve/h200/profile: triton
time per forward, loop-dynamic vs loop-static and the engine) and is kept to reproduce the first
compiled run (validate/reports/serve/h200-dynamic).

One iteration (what the simulator must mirror; serving.simulator.ServeConfig in `sim_config`):
  1. requests whose arrival time has passed join the FCFS waiting queue;
  2. budget = token_budget - (number of decoding sequences) (each decode counts one token, as vLLM's
     max_num_batched_tokens); running prefills, in admission order, get a chunk of
     min(remaining prompt, budget); then waiting requests are admitted FCFS while budget > 0 and
     fewer than max_slots sequences run, each getting its first chunk the same way;
  3. each prefill chunk runs as its own forward (one sequence, padded to the next of PREFILL_SIZES),
     one after another; a sequence whose prompt completes emits its first token in this iteration;
  4. one decode forward for every sequence that was decoding at the start of the iteration, padded
     to the next of DECODE_SIZES >= the number of decodes (the cache rows are kept compact: decoding
     sequences occupy rows [0, n), see `Scheduler.compact`);
  5. a synchronize; all tokens of the iteration get its end time; finished sequences free their row.
Attention (prefill and decode) spans the whole static cache row of S_max positions under a mask.

GPU:   python validate/reports/serve/ref_loop.py --out $OUT/serve --rates auto
Smoke: python validate/reports/serve/ref_loop.py --device cpu --requests 5 --rates 4 --out /tmp/serve
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

#: Decode batch sizes captured as CUDA graphs; a batch is padded to the next one (vLLM pads its
#: decode batch to the next of cudagraph_capture_sizes the same way, vllm/config/compilation.py).
DECODE_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
#: Prefill chunk lengths compiled and captured; a chunk is padded to the next one.
PREFILL_SIZES = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
DTYPES = ("bf16", "fp16", "fp32")


# -- pure parts (tested without torch work) ----------------------------------------------------------

def bucket_of(n: int, buckets=DECODE_SIZES) -> int:
    """The smallest bucket >= n (decode pads the batch up to it)."""
    if n < 1 or n > buckets[-1]:
        raise ValueError(f"batch: {n} is outside [1, {buckets[-1]}]")
    return buckets[bisect.bisect_left(buckets, n)]


def sizes_up_to(sizes, top: int) -> tuple[int, ...]:
    """The sizes below `top`, then `top` itself: every n in [1, top] has a size >= n."""
    return tuple(s for s in sizes if s < top) + (top,)


def cache_tokens(max_prompt: int, max_output: int) -> int:
    """S_max of a static cache row: the longest prompt plus output, + 1 for the scratch column padded
    tokens write to, rounded up to 256 as gpt-fast sizes its cache."""
    return -(-(max_prompt + max_output + 1) // 256) * 256


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

    @property
    def cached(self) -> int:
        """Tokens whose K/V sit in the cache row: the prefilled prompt plus one per decode step run."""
        return self.prefilled + max(self.generated - 1, 0)


@dataclass
class Scheduler:
    """FCFS admission under a token budget, the per-iteration prefill plan and compact cache rows
    (no torch)."""
    max_slots: int
    token_budget: int
    waiting: list = field(default_factory=list)
    running: list = field(default_factory=list)

    def plan(self, now_s: float) -> tuple[list[tuple[Seq, int]], list[Seq]]:
        """(prefill chunks [(seq, tokens)], decode set) of one iteration; admits waiting requests
        (vLLM V1: running requests first, then waiting ones while budget and slots last)."""
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
        while self.waiting and budget > 0 and len(self.running) < self.max_slots:
            s = self.waiting.pop(0)
            s.scheduled_s = now_s
            s.slot = self._free_row()
            self.running.append(s)
            n = min(s.req["prompt_tokens"], budget)
            chunks.append((s, n))
            budget -= n
        return chunks, decode

    def _free_row(self) -> int:
        used = {s.slot for s in self.running}
        return next(i for i in range(self.max_slots) if i not in used)

    def finish(self, seq: Seq) -> None:
        self.running.remove(seq)

    def compact(self) -> list[tuple]:
        """Moves that put the n decoding sequences in rows [0, n) and the prefilling ones right
        after, so a decode batch is rows [0, n) of the cache padded only to its size bucket.
        Returns ("move", src, dst, tokens) and ("swap", a, b, tokens_a, tokens_b) in order;
        updates the slots."""
        dec = [s for s in self.running if s.decoding]
        pre = [s for s in self.running if not s.decoding]
        n_dec, n_run = len(dec), len(self.running)
        ops = []
        by_row = {s.slot: s for s in self.running}
        holes = [r for r in range(n_dec) if r not in by_row or not by_row[r].decoding]
        for s in [s for s in dec if s.slot >= n_dec]:
            h = holes.pop(0)
            other = by_row.get(h)
            if other is None:
                ops.append(("move", s.slot, h, s.cached))
                del by_row[s.slot]
            else:  # a prefilling sequence sits in the decode region: trade rows
                ops.append(("swap", s.slot, h, s.cached, other.cached))
                other.slot, by_row[s.slot] = s.slot, other
            s.slot, by_row[h] = h, s
        empty = [r for r in range(n_dec, n_run) if r not in by_row]
        for s in [s for s in pre if s.slot >= n_run]:
            dst = empty.pop(0)
            ops.append(("move", s.slot, dst, s.cached))
            del by_row[s.slot]
            s.slot, by_row[dst] = dst, s
        return ops


# -- the model over a static cache of rows ---------------------------------------------------------

def _rope(x, cos, sin):
    """em.rope with per-token positions: x [B, T, n, d]; cos/sin [B, T, d/2] (fp32)."""
    import torch
    x1, x2 = x.float().chunk(2, dim=-1)
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1).to(x.dtype)


def attend(q, keys, values, bias):
    """GQA attention under an additive mask without expanding K/V: the G = H/K query heads that
    share a KV head are folded into its query rows ([B, K, G*T, d]), so SDPA runs a masked fused
    kernel over the cache as it is (SDPA's enable_gqa with a mask can fall back to the unfused math
    path, which copies K/V per query head). q [B, T, H, d]; keys/values [B, K, S, d]; bias
    [B, 1, G*T, S] (0 = attend, -inf = not; query head h = k G + g uses KV head k). Returns [B, T, H*d]."""
    import torch.nn.functional as F
    B, T, H, d = q.shape
    K = keys.shape[1]
    G = H // K
    qf = q.view(B, T, K, G, d).permute(0, 2, 3, 1, 4).reshape(B, K, G * T, d)
    o = F.scaled_dot_product_attention(qf, keys, values, attn_mask=bias)
    return o.view(B, K, G, T, d).permute(0, 3, 1, 2, 4).reshape(B, T, H * d)


def gqa_bias(mask, groups: int, dtype):
    """The additive bias `attend` takes from a boolean mask [B, 1, T, S] (True = attend): 0 / -inf,
    repeated for the G query heads folded into the rows ([B, 1, G*T, S])."""
    import torch
    B, _, T, S = mask.shape
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))
    return bias[:, :, None].expand(B, 1, groups, T, S).reshape(B, 1, groups * T, S)


def layer(x, residual, w, k_all, v_all, rows, wpos, mask, cos, sin, dims, gather: bool):
    """One decoder layer (em.layer_forward's order: add+RMSNorm, fused QKV, RoPE, cache write, SDPA,
    o_proj, add+RMSNorm, MLP) over cache rows. Token i of the flattened [B*T] batch writes its K/V
    at (rows[i], wpos[i]) of this layer's cache [R, K, S_max, d]. Keys: rows [0, B) of the cache as
    a view (decode, gather=False) or rows `rows` gathered (one prefill sequence, gather=True). mask:
    gqa_bias of [B, 1, T, S_max] (True = attend): causal attention over each sequence's positions."""
    import torch.nn.functional as F
    from validate import engine_model as em
    B, T, _ = x.shape
    H, K, d = dims.heads, dims.kv_heads, dims.head_dim
    h, residual = em.add_rmsnorm(x, residual, w["attn_norm"], dims.eps)
    q, k, v = em.linear(h, w["qkv"]).split([H * d, K * d, K * d], dim=-1)
    q, k, v = q.view(B, T, H, d), k.view(B, T, K, d), v.view(B, T, K, d)
    if dims.qk_norm:
        q, k = em.rms_norm(q, w["q_norm"], dims.eps), em.rms_norm(k, w["k_norm"], dims.eps)
    q, k = _rope(q, cos, sin), _rope(k, cos, sin)
    k_all[rows, :, wpos] = k.reshape(B * T, K, d)
    v_all[rows, :, wpos] = v.reshape(B * T, K, d)
    keys = k_all.index_select(0, rows[:1]) if gather else k_all[:B]
    values = v_all.index_select(0, rows[:1]) if gather else v_all[:B]
    x = em.linear(attend(q, keys, values, mask), w["o"])
    h, residual = em.add_rmsnorm(x, residual, w["mlp_norm"], dims.eps)
    return (em.moe(h, w, dims) if dims.experts else em.mlp(h, w)), residual


class Runner:
    """The model, a static cache of `max_slots` rows x S_max positions (the last position is a
    scratch column padded tokens write to; no real query attends it), and one forward per shape:
    compiled, warmed up and captured as a CUDA graph before anything is timed (CUDA)."""

    def __init__(self, args, log=print):
        import torch
        from validate import engine_model as em
        from validate.reports.engine.measure_engine import model_spec
        self.torch, self.cuda, self.log = torch, args.device == "cuda", log
        self.dev = torch.device(args.device)
        self.s_max = cache_tokens(args.max_prompt, args.max_output)
        self.scratch = self.s_max - 1
        spec = model_spec(args.model, args.layers)
        self.engine = em.build(spec, args.dtype, 1, self.s_max, self.dev, kv_tokens=1)
        d = self.engine.dims
        dt = self.engine.embed.dtype
        shape = (spec.n_layers, args.max_slots, d.kv_heads, self.s_max, d.head_dim)
        # one tensor per K and V over all layers: a row move is one copy kernel each
        self.k_all = torch.zeros(shape, dtype=dt, device=self.dev)
        self.v_all = torch.zeros(shape, dtype=dt, device=self.dev)
        self.decode_sizes = sizes_up_to(DECODE_SIZES, args.max_slots)
        self.prefill_sizes = sizes_up_to(PREFILL_SIZES, args.token_budget)
        self.vocab = spec.vocab_size
        self.layer = layer
        if args.compile != "none":
            self.layer = torch.compile(layer, fullgraph=True, dynamic=args.compile == "dynamic")
        self.graphs = {}
        self.warmup = {}

    # inputs are written into per-shape static buffers, then the shape's graph replays (CUDA) or
    # the forward runs directly (CPU)
    def _buffers(self, phase: str, size: int) -> dict:
        torch, dev = self.torch, self.dev
        if phase == "decode":
            B, T = size, 1
            rows = torch.arange(size, device=dev)
        else:
            B, T = 1, size
            rows = torch.zeros(1, device=dev, dtype=torch.long)
        return dict(tokens=torch.zeros(B, T, dtype=torch.long, device=dev),
                    wpos=torch.full((B * T,), self.scratch, dtype=torch.long, device=dev),
                    qpos=torch.full((B, T), self.scratch, dtype=torch.long, device=dev),
                    rows=rows, last=torch.zeros(1, dtype=torch.long, device=dev))

    def _forward(self, phase: str, buf: dict):
        torch = self.torch
        import torch.nn.functional as F
        from validate import engine_model as em
        e = self.engine
        tokens, qpos = buf["tokens"], buf["qpos"]
        B, T = tokens.shape
        mask = (torch.arange(self.s_max, device=self.dev) <= qpos[..., None])[:, None]  # [B, 1, T, S]
        mask = mask & (torch.arange(self.s_max, device=self.dev) != self.scratch)  # scratch: never a key
        mask[..., 0] = True  # padded rows (query at the scratch) keep one key: no all-masked NaN row
        mask = gqa_bias(mask, e.dims.heads // e.dims.kv_heads, e.embed.dtype)  # once per forward, not per layer
        cos, sin = e.cos[qpos], e.sin[qpos]
        rows = buf["rows"] if phase == "decode" else buf["rows"].expand(T)
        x = F.embedding(tokens, e.embed)
        residual = torch.zeros_like(x)
        wpos = buf["wpos"]
        for i, w in enumerate(e.layers):
            x, residual = self.layer(x, residual, w, self.k_all[i], self.v_all[i], rows, wpos, mask, cos, sin,
                                     e.dims, phase == "prefill")
        if phase == "prefill":
            x, residual = x.index_select(1, buf["last"]), residual.index_select(1, buf["last"])
        h, _ = em.add_rmsnorm(x[:, -1], residual[:, -1], e.final_norm, e.dims.eps)
        return F.linear(h, e.lm_head).argmax(-1)

    def prepare(self) -> dict:
        """Compile, warm up and capture every shape the replay can meet; returns seconds per phase."""
        torch = self.torch
        t0 = time.perf_counter()
        pool = torch.cuda.graph_pool_handle() if self.cuda else None
        shapes = [("decode", b) for b in self.decode_sizes] + [("prefill", c) for c in self.prefill_sizes]
        for phase, size in shapes:
            t = time.perf_counter()
            buf = self._buffers(phase, size)
            if not self.cuda:
                with torch.inference_mode():
                    self._forward(phase, buf)  # CPU: a warm call (first-call allocations, compile)
                self.graphs[(phase, size)] = (None, buf, None)
            else:
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s), torch.inference_mode():
                    for _ in range(2):  # the first call compiles, the second runs what is captured
                        self._forward(phase, buf)
                torch.cuda.current_stream().wait_stream(s)
                g = torch.cuda.CUDAGraph()
                with torch.inference_mode(), torch.cuda.graph(g, pool=pool):
                    out = self._forward(phase, buf)
                g.replay()
                torch.cuda.synchronize()
                self.graphs[(phase, size)] = (g, buf, out)
            self.warmup[f"{phase}_{size}"] = time.perf_counter() - t
            self.log(f"  warm {phase} {size}: {self.warmup[f'{phase}_{size}']:.1f} s", flush=True)
        self.warmup["total"] = time.perf_counter() - t0
        return self.warmup

    def forward_times(self, repeats: int = 5) -> dict:
        """Median seconds of each captured forward replayed alone (decode_B, prefill_T), the cost the
        simulator prices per forward: compared apart from the scheduling in report.md. Replays write
        only row 0 / padding positions before any request is served."""
        out = {}
        for (phase, size), (g, buf, _) in self.graphs.items():
            if g is None:
                continue
            times = []
            for _ in range(repeats):
                self.sync()
                t = time.perf_counter()
                g.replay()
                self.sync()
                times.append(time.perf_counter() - t)
            out[f"{phase}_{size}"] = sorted(times)[len(times) // 2]
        return out

    def sdpa_backend(self) -> dict:
        """The fused SDPA kernel PyTorch picks (eagerly) for a decode and a prefill attention of this
        loop (torch._fused_sdp_choice: 0 math, 1 flash, 2 efficient, 3 cudnn, ...), for meta.json."""
        torch = self.torch
        d, out = self.engine.dims, {}
        G = d.heads // d.kv_heads
        dt = self.engine.embed.dtype
        for phase, B, T in (("decode", self.decode_sizes[-1], 1), ("prefill", 1, self.prefill_sizes[-1])):
            try:
                q = torch.zeros(B, d.kv_heads, G * T, d.head_dim, dtype=dt, device=self.dev)
                kv = self.k_all[0][:B]
                bias = torch.zeros(B, 1, G * T, self.s_max, dtype=dt, device=self.dev)
                out[phase] = int(torch._fused_sdp_choice(q, kv, kv, bias))
            except Exception as err:  # a diagnostic only: never stop the run for it
                out[phase] = f"unknown ({type(err).__name__})"
        return out

    def _run(self, phase: str, size: int, fill) -> list[int]:
        torch = self.torch
        g, buf, out = self.graphs[(phase, size)]
        # fresh pinned host tensors (PyTorch's caching host allocator keeps each until its copy has
        # run) copied asynchronously: the host never waits for the previous forward to finish
        host = {k: torch.empty(v.shape, dtype=v.dtype, pin_memory=self.cuda) for k, v in buf.items() if k != "rows"}
        fill(host)
        for k, v in host.items():
            buf[k].copy_(v, non_blocking=self.cuda)
        if g is not None:
            g.replay()
        else:
            with torch.inference_mode():
                out = self._forward(phase, buf)
        return out.clone()  # the graph's output buffer is overwritten by its next replay

    def decode(self, tokens: list[int], positions: list[int]):
        """One decode step of rows [0, n) (n = len(tokens)), padded to its size: tokens [n] after
        positions [n]. Returns the device tensor of next tokens (read after the sync)."""
        n = len(tokens)
        size = bucket_of(n, self.decode_sizes)

        def fill(h):
            h["tokens"].zero_()
            h["wpos"].fill_(self.scratch)
            h["qpos"].fill_(self.scratch)
            h["last"].zero_()
            h["tokens"][:n, 0] = self.torch.tensor(tokens)
            h["wpos"][:n] = self.torch.tensor(positions)
            h["qpos"][:n, 0] = self.torch.tensor(positions)
        return self._run("decode", size, fill), size

    def prefill(self, row: int, n: int, past: int, seed: int):
        """A prefill chunk of n tokens after `past` cached ones in cache row `row`, padded to its
        size. Returns the device tensor of the next token."""
        torch = self.torch
        size = self.prefill_sizes[bisect.bisect_left(self.prefill_sizes, n)]
        toks = torch.randint(0, self.vocab, (n,), generator=torch.Generator().manual_seed(seed))

        def fill(h):
            h["tokens"].zero_()
            h["tokens"][0, :n] = toks
            h["wpos"].fill_(self.scratch)
            h["wpos"][:n] = torch.arange(past, past + n)
            h["qpos"].fill_(self.scratch)
            h["qpos"][0, :n] = torch.arange(past, past + n)
            h["last"][0] = n - 1
        self.graphs[("prefill", size)][1]["rows"].fill_(row)
        return self._run("prefill", size, fill), size

    def apply(self, ops: list[tuple]) -> None:
        """Row moves and swaps of Scheduler.compact on every layer's K and V at once."""
        for op in ops:
            for cache in (self.k_all, self.v_all):
                if op[0] == "move":
                    _, src, dst, n = op
                    cache[:, dst, :, :n] = cache[:, src, :, :n]
                else:
                    _, a, b, na, nb = op
                    tmp = cache[:, a, :, :na].clone()
                    cache[:, a, :, :nb] = cache[:, b, :, :nb]
                    cache[:, b, :, :na] = tmp

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()


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
        chunks, decode = sched.plan(now)
        decode.sort(key=lambda s: s.slot)
        if [s.slot for s in decode] != list(range(len(decode))):
            raise RuntimeError("internal: decoding sequences are not in rows [0, n)")
        start = time.perf_counter() - t0
        outs, sizes = [], []
        for seq, n in chunks:
            out, size = runner.prefill(seq.slot, n, seq.prefilled, seq.req["request_id"])
            outs.append(out)
            sizes.append(size)
        bucket = 0
        if decode:
            dec_out, bucket = runner.decode([last_tok[s.req["request_id"]] for s in decode],
                                            [s.req["prompt_tokens"] + s.generated - 1 for s in decode])
        runner.sync()
        end = time.perf_counter() - t0
        for (seq, n), out in zip(chunks, outs):
            seq.prefilled += n
            if seq.decoding:
                last_tok[seq.req["request_id"]] = int(out.reshape(-1)[0])
                seq.generated, seq.first_token_s, seq.last_token_s = 1, end, end
        for s, tok in zip(decode, dec_out.tolist() if decode else []):
            last_tok[s.req["request_id"]] = tok
            s.generated += 1
            s.last_token_s = end
        for s in list(sched.running):
            if s.decoding and s.generated >= s.req["output_tokens"]:
                s.finish_s = end
                sched.finish(s)
                done.append(s)
        moves = sched.compact()
        runner.apply(moves)  # queued before the next iteration's forwards, timed in its wall clock
        log_iter(dict(rate=reqs[0]["rate"], start_s=start, duration_s=end - start,
                      prefill_tokens=sum(n for _, n in chunks), prefill_seqs=len(chunks),
                      prefill_padded=sum(sizes), decode_batch=len(decode), bucket=bucket,
                      waiting=len(sched.waiting), row_moves=len(moves)))
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
    """Saturation estimate: the largest decode batch's step time over the mean output, plus the
    prefill of the mean prompt (both timed from their captured graphs)."""
    b = runner.decode_sizes[-1]
    mean_prompt = (args.min_prompt + args.max_prompt) // 2

    def timed(fn, repeats=3):
        fn()
        runner.sync()
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        runner.sync()
        return (time.perf_counter() - t) / repeats
    step_s = timed(lambda: runner.decode([0] * b, [1] * b))
    chunk = min(mean_prompt, args.token_budget)
    prefill_s = timed(lambda: runner.prefill(0, chunk, 0, 0)) * mean_prompt / chunk
    mean_out = (args.min_output + args.max_output) / 2
    return 1.0 / (step_s * mean_out / b + prefill_s)


def _whole(name, low, high):
    """An argparse type for a whole number in [low, high] (argparse names the flag in its error)."""
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (allowed {low}..{high})")
        if not low <= v <= high:
            raise argparse.ArgumentTypeError(f"{v} is outside the allowed range {low}..{high}")
        return v
    return parse


def parse_fractions(text: str) -> list[float]:
    """'0.2,0.6,1.0' -> floats, each in (0, 10] (a fraction of the measured capacity)."""
    out = []
    for part in text.split(","):
        try:
            f = float(part)
        except ValueError:
            raise ValueError(f"--fractions: {part!r} is not a number (each must be in (0, 10])") from None
        if not (0 < f <= 10) or math.isnan(f):
            raise ValueError(f"--fractions: {f} is outside the allowed range (0, 10]")
        out.append(f)
    return out


def parse_rates(text: str) -> list[float] | None:
    """'auto' -> None; 'a,b' -> floats, each in (0, 1e4] req/s."""
    if text == "auto":
        return None
    out = []
    for part in text.split(","):
        try:
            r = float(part)
        except ValueError:
            raise ValueError(f"--rates: {part!r} is not a number or 'auto' (each must be in (0, 10000] req/s)") from None
        if not (0 < r <= 1e4) or math.isnan(r):
            raise ValueError(f"--rates: {r} is outside the allowed range (0, 10000] req/s")
        out.append(r)
    return out


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--model", default=None, help="default llama-3-8b (cuda), llama-3-8b-tiny (cpu)")
    p.add_argument("--layers", type=_whole("--layers", 1, 1000), default=None, help="default: the model's own")
    p.add_argument("--dtype", default="bf16", help=f"one of {', '.join(DTYPES)}")
    p.add_argument("--compile", default=None, choices=("dynamic", "static", "none"),
                   help="torch.compile of the layer: default static (cuda), none (cpu)")
    p.add_argument("--rates", default="auto", help="'auto' (fractions of measured capacity) or req/s list a,b,c")
    p.add_argument("--fractions", default="0.2,0.6,1.0,1.3")
    p.add_argument("--requests", type=_whole("--requests", 1, 10**6), default=200)
    p.add_argument("--max-span-s", type=float, default=50.0, help="cap on each rate's arrival span (seconds)")
    p.add_argument("--time-limit-s", type=float, default=1e9,
                   help="start no new rate after this many seconds of the run (results so far are kept)")
    p.add_argument("--max-slots", type=_whole("--max-slots", 1, DECODE_SIZES[-1]), default=128)
    p.add_argument("--token-budget", type=_whole("--token-budget", 16, PREFILL_SIZES[-1]), default=2048)
    p.add_argument("--min-prompt", type=_whole("--min-prompt", 1, 32768), default=128)
    p.add_argument("--max-prompt", type=_whole("--max-prompt", 1, 32768), default=1024)
    p.add_argument("--min-output", type=_whole("--min-output", 1, 32768), default=32)
    p.add_argument("--max-output", type=_whole("--max-output", 1, 32768), default=256)
    p.add_argument("--seed", type=_whole("--seed", 0, 2**31), default=0)
    a = p.parse_args(argv)
    try:
        if a.dtype not in DTYPES:
            raise ValueError(f"--dtype: {a.dtype!r} is not one of {', '.join(DTYPES)}")
        parse_fractions(a.fractions)
        parse_rates(a.rates)
        for name, v in (("--max-span-s", a.max_span_s), ("--time-limit-s", a.time_limit_s)):
            if not v > 0 or math.isinf(v) and name == "--max-span-s":
                raise ValueError(f"--{name.strip('-')}: {v} must be a positive number of seconds")
        if a.min_prompt > a.max_prompt or a.min_output > a.max_output:
            raise ValueError(f"--min-prompt/--min-output: {a.min_prompt}/{a.min_output} must not exceed "
                             f"--max-prompt/--max-output {a.max_prompt}/{a.max_output}")
        if a.token_budget < a.max_slots:
            raise ValueError(f"--token-budget: {a.token_budget} must be at least --max-slots {a.max_slots} "
                             "(every decode takes one token of it, as vLLM requires)")
    except ValueError as err:
        p.error(str(err))
    if a.model is None:
        a.model = "llama-3-8b" if a.device == "cuda" else "llama-3-8b-tiny"
    if a.device == "cpu" and a.layers is None:
        a.layers = 1
    if a.compile is None:
        a.compile = "static" if a.device == "cuda" else "none"
    return a


def engine_profile(args) -> str:
    """The perfmodel engine profile that prices this loop's forwards: compiled layers in CUDA graphs
    attending the masked static cache are `torch-compile-static-cache` (torch-compile with the masked
    SDPA family); eager layers in CUDA graphs `torch-eager-graph`; eager on CPU `torch-eager`
    (perfmodel/engine_profiles/)."""
    if args.compile != "none":
        return "torch-compile-static-cache"
    return "torch-eager-graph" if args.device == "cuda" else "torch-eager"


def sim_config(meta: dict) -> dict:
    """serving.simulator.ServeConfig settings that mirror this loop (module doc), from meta.json."""
    c = meta["config"]
    return dict(max_num_batched_tokens=c["token_budget"], max_num_seqs=c["max_slots"], chunked_prefill=True,
                prefix_caching=False, kv_blocks=c["max_slots"] * meta["s_max"] // 16,
                decode_batch_sizes=tuple(meta["decode_sizes"]), prefill_token_sizes=tuple(meta["prefill_sizes"]),
                fused_prefill_decode=False, static_cache_tokens=meta["s_max"])


def main(argv=None) -> int:
    args = parse(argv)
    import torch
    import workloads
    if args.compile != "none":
        import torch._dynamo
        torch._dynamo.config.cache_size_limit = 64
        if hasattr(torch._dynamo.config, "recompile_limit"):
            torch._dynamo.config.recompile_limit = 64
    if args.layers is None:
        args.layers = workloads.load(args.model).n_layers
    run_t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"building {args.model} ({args.layers} layers, {args.dtype}) on {args.device}", flush=True)
    t = time.perf_counter()
    runner = Runner(args)
    build_s = time.perf_counter() - t
    print(f"built in {build_s:.1f} s; compiling + warming {len(runner.decode_sizes)} decode and "
          f"{len(runner.prefill_sizes)} prefill shapes", flush=True)
    try:
        warm = runner.prepare()
    except Exception as err:  # a compiler failure: run the same layers eagerly, still CUDA-graphed
        if args.compile == "none":
            raise
        print(f"compile failed ({type(err).__name__}: {str(err).splitlines()[0][:300]}); falling back to "
              "--compile none (eager layers, still captured as CUDA graphs)", flush=True)
        import torch._dynamo
        torch._dynamo.reset()
        args.compile = "none"
        runner.layer, runner.graphs, runner.warmup = layer, {}, {}
        warm = runner.prepare()
    print(f"warm-up done in {warm['total']:.1f} s", flush=True)
    forward_s = runner.forward_times()
    print("forward replay ms: " + ", ".join(f"{k} {v * 1e3:.2f}" for k, v in forward_s.items()), flush=True)
    backend = runner.sdpa_backend()
    print(f"SDPA backend choice (0 math, 1 flash, 2 efficient, 3 cudnn): {backend}", flush=True)
    meta_p = out / "meta.json"
    meta = json.loads(meta_p.read_text()) if meta_p.exists() else {}
    fixed = parse_rates(args.rates)
    if fixed is None:
        cap = meta.get("capacity_req_s") or capacity_req_s(runner, args)
        rates = [round(cap * f, 3) for f in parse_fractions(args.fractions)]
    else:
        cap, rates = meta.get("capacity_req_s"), fixed
    meta.update(config=vars(args), capacity_req_s=cap, rates=rates, torch=torch.__version__,
                build_s=build_s, warmup_s=warm, forward_s=forward_s, sdpa_backend=backend, s_max=runner.s_max, decode_sizes=list(runner.decode_sizes),
                prefill_sizes=list(runner.prefill_sizes),
                gpu=torch.cuda.get_device_name() if args.device == "cuda" else "cpu")
    meta["simulator"] = sim_config(meta)
    meta["engine_profile"] = engine_profile(args)
    meta_p.write_text(json.dumps(meta, indent=1))
    print(f"capacity {cap} req/s; rates {rates}", flush=True)
    done = rates_done(out)
    for rate in rates:
        if rate in done:
            print(f"rate {rate}: done, skipped", flush=True)
            continue
        if time.perf_counter() - run_t0 > args.time_limit_s:
            print(f"rate {rate}: skipped, past --time-limit-s {args.time_limit_s:g} s (rerun resumes)", flush=True)
            continue
        # arrivals span at most --max-span-s seconds (a light rate with many requests would take minutes)
        count = min(args.requests, max(20, int(rate * args.max_span_s)))
        reqs = poisson_requests(rate, count, args.seed, (args.min_prompt, args.max_prompt),
                                (args.min_output, args.max_output))
        print(f"rate {rate} req/s: {count} requests over {reqs[-1]['arrival_s']:.1f} s ...", flush=True)
        iters = []
        t = time.perf_counter()
        seqs = serve(runner, reqs, args, iters.append)
        _append(out / "requests.csv", reqs)
        _append(out / "iterations.csv", iters)
        _append(out / "per_request.csv", [dict(
            request_id=s.req["request_id"], rate=rate, arrival_s=s.req["arrival_s"],
            prompt_tokens=s.req["prompt_tokens"], output_tokens=s.req["output_tokens"],
            scheduled_s=s.scheduled_s, first_token_s=s.first_token_s, last_token_s=s.last_token_s,
            finish_s=s.finish_s, tokens=s.generated) for s in sorted(seqs, key=lambda s: s.req["request_id"])])
        print(f"rate {rate} req/s: {len(seqs)} requests, {len(iters)} iterations, {time.perf_counter() - t:.1f} s "
              f"(run {time.perf_counter() - run_t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    sys.exit(main())
