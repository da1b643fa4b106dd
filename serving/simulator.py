"""Iteration-level simulator of a continuous-batching LLM engine, driven by perfmodel's step times.

The scheduler follows vLLM V1's (vllm/v1/core/sched/scheduler.py, FCFS policy):
- every iteration has a token budget (max_num_batched_tokens) and at most max_num_seqs running
  requests; running requests are scheduled first (each decode takes 1 token, or k + 1 under
  speculative decoding; a request still in prefill takes the next chunk of its prompt), then
  waiting requests in arrival order while budget, sequence slots and KV blocks last (chunked
  prefill: a prompt longer than the remaining budget is split over iterations);
- the KV cache is paged in blocks of `block_tokens` (16) tokens; a request allocates a block when
  its cached tokens cross a block boundary. Capacity comes from perfmodel's memory model
  (`kv_capacity_blocks`);
- when a running request needs a block and none is free, the most recently admitted running
  request is preempted (vLLM's `self.running.pop()`): by recompute (its blocks are freed and it
  re-enters the waiting queue at the front, its prompt and generated tokens prefilled again) or by
  swap (its blocks are copied to host memory over the host link and back when resumed; the copies
  are priced at hw.host_link_bytes_per_s and serialise with the iteration, as vLLM V0's swap did);
  no new requests are admitted in an iteration that preempted;
- prefix caching: leading prompt tokens shared by all requests (a system prompt) are computed
  once; afterwards a request's cached full blocks of that prefix skip prefill (vLLM's automatic
  prefix caching hashes full blocks only). Approximation: the cached prefix blocks stay resident
  (never evicted) and count against capacity;
- speculative decoding (a draft model or MTP head proposing k tokens, acceptance rate alpha):
  each verification step prices k + 1 query tokens per sequence, the proposer's k steps are added
  to the iteration (drafting runs before verification), and each sequence emits j + 1 tokens,
  j ~ the number of leading accepted drafts (P(j) = alpha^j (1 - alpha) for j < k, alpha^k for j = k;
  mean (1 - alpha^(k+1)) / (1 - alpha): Leviathan et al. 2023, arXiv 2211.17192);
- static batching (`static=True`) admits a batch only when the engine is empty and prefills it
  whole, then decodes it to the end (finished sequences leave; no padding compute is priced).

Iteration time: `serving.costs.StepCosts` (exact per-op composition of perfmodel's step functions;
its doc lists what is approximate). Iterations run back to back while any request is running;
an idle engine jumps to the next arrival.

Decodes are tracked in aggregate so an iteration costs O(1) Python work plus O(log n) per
request event: the count of decoding sequences and the sum of their contexts give the iteration
time exactly (decode attention is affine in context), a heap gives the iteration in which each
finishes (one token per iteration), and 16 counters by (context - iteration) mod block size give
the blocks needed each iteration. Speculative decoding samples per sequence and loops over them.

Approximations: inter-token latency is the duration of the iterations a sequence decodes in (a
preempted request's gap shows in its TPOT and e2e, not in the ITL percentiles); the scheduler
never splits a decode batch over iterations (max_num_batched_tokens >= max_num_seqs x (k + 1) is
required, as vLLM requires max_num_batched_tokens >= max_num_seqs).
"""
from __future__ import annotations

import bisect
import heapq
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from hardware.spec import Hardware
from perfmodel import memory
from perfmodel.engines import DEFAULT_ENGINE, Engine
from perfmodel.engines import load as load_engine
from perfmodel.ops import Precision
from serving.costs import StepCosts, build_step_costs
from serving.workload import Requests
from workloads.model import ModelSpec

#: vLLM's default fraction of device memory the engine may use (vllm/engine/arg_utils.py,
#: EngineArgs.gpu_memory_utilization = 0.9).
GPU_MEMORY_UTILIZATION = 0.9
#: Tokens per KV block (vllm/config.py, CacheConfig: block_size defaults to 16 on CUDA; PagedAttention,
#: Kwon et al. 2023, arXiv 2309.06180).
BLOCK_TOKENS = 16


class ServeError(ValueError):
    """A bad serving configuration; the message (one line) names the field, the value and the range."""


@dataclass(frozen=True)
class SpecDecode:
    """Speculative decoding: k proposed tokens per step, per-token acceptance rate alpha, and the
    proposer: "mtp" (one extra transformer layer with the model's embedding and LM head, DeepSeek-V3's
    multi-token prediction module, arXiv 2412.19437; priced as a one-layer model of the same shape,
    its weights not subtracted from the KV cache) or a draft ModelSpec (run for k decode steps at the
    same batch; its weights and KV are)."""

    k: int = 3
    alpha: float = 0.7
    proposer: object = "mtp"

    def __post_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= 16:
            raise ServeError(f"spec_k: {self.k!r} must be a whole number from 1 to 16")
        if not isinstance(self.alpha, (int, float)) or not 0 <= self.alpha < 1:
            raise ServeError(f"spec_alpha: {self.alpha!r} must be a number in [0, 1)")

    @property
    def expected_tokens(self) -> float:
        """Mean tokens emitted per verification step: (1 - alpha^(k+1)) / (1 - alpha)."""
        return (1.0 - self.alpha ** (self.k + 1)) / (1.0 - self.alpha)


@dataclass(frozen=True)
class ServeConfig:
    """One engine instance's serving settings (vLLM's names where they exist)."""

    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 256
    block_tokens: int = BLOCK_TOKENS
    chunked_prefill: bool = True
    prefix_caching: bool = True
    preemption: str = "recompute"
    gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION
    static: bool = False
    spec: SpecDecode | None = None
    kv_blocks: int | None = None
    decode_batch_sizes: tuple | None = None
    prefill_token_sizes: tuple | None = None
    fused_prefill_decode: bool = True
    static_cache_tokens: int | None = None

    def __post_init__(self):
        # Execution settings (engine-specific; the defaults are vLLM V1's unpadded fused step):
        # decode_batch_sizes: a decode forward of n sequences runs padded to the smallest size >= n
        #   (vLLM's cudagraph_capture_sizes, vllm/config/compilation.py: a decode batch is padded to
        #   the next captured size; above the largest it runs unpadded);
        # prefill_token_sizes: a forward with prefill tokens runs padded to the smallest size >= its
        #   tokens (torch.compile / CUDA-graph sizes fixed up front; above the largest: unpadded);
        # fused_prefill_decode=False: each prefill chunk is its own forward and the decodes one more,
        #   run one after another (SGLang without --enable-mixed-chunk, python/sglang/srt/server_args.py,
        #   runs prefill and decode batches as separate forwards; vLLM V1 fuses them);
        # static_cache_tokens: attention spans this many cached positions per sequence whatever its
        #   context (a static KV cache read under a mask: gpt-fast, transformers' StaticCache).
        for name in ("decode_batch_sizes", "prefill_token_sizes"):
            sizes = getattr(self, name)
            if sizes is None:
                continue
            ok = isinstance(sizes, (tuple, list)) and len(sizes) > 0 and all(
                not isinstance(v, bool) and isinstance(v, (int, np.integer)) and 1 <= v <= 10**6 for v in sizes)
            if not ok or list(sizes) != sorted(set(sizes)):
                raise ServeError(f"{name}: {sizes!r} must be increasing whole numbers from 1 to 1000000")
            object.__setattr__(self, name, tuple(int(v) for v in sizes))
        if not isinstance(self.fused_prefill_decode, bool):
            raise ServeError(f"fused_prefill_decode: {self.fused_prefill_decode!r} must be true or false")
        v = self.static_cache_tokens
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= 10**8):
            raise ServeError(f"static_cache_tokens: {v!r} must be a whole number from 1 to 100000000")
        for name, low, high in (("max_num_batched_tokens", 1, 10**6), ("max_num_seqs", 1, 65536), ("block_tokens", 1, 4096)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not low <= v <= high:
                raise ServeError(f"{name}: {v!r} must be a whole number from {low} to {high}")
        if self.preemption not in ("recompute", "swap"):
            raise ServeError(f"preemption: {self.preemption!r} must be 'recompute' or 'swap'")
        if not isinstance(self.gpu_memory_utilization, (int, float)) or not 0 < self.gpu_memory_utilization <= 1:
            raise ServeError(f"gpu_memory_utilization: {self.gpu_memory_utilization!r} must be in (0, 1]")
        q = self.spec.k + 1 if self.spec else 1
        if not self.static and self.max_num_batched_tokens < self.max_num_seqs * q:
            raise ServeError(f"max_num_batched_tokens: {self.max_num_batched_tokens} must be at least max_num_seqs x "
                             f"tokens per decode = {self.max_num_seqs * q} (vLLM requires it too)")
        if self.kv_blocks is not None and (isinstance(self.kv_blocks, bool) or not isinstance(self.kv_blocks, (int, np.integer))
                                           or self.kv_blocks < 1):
            raise ServeError(f"kv_blocks: {self.kv_blocks!r} must be a whole number, 1 or more")


def kv_block_bytes(model: ModelSpec, p: Precision, tp: int, block_tokens: int = BLOCK_TOKENS) -> float:
    """Bytes of one KV block per device (perfmodel.memory.kv_cache_bytes of block_tokens tokens)."""
    return float(memory.kv_cache_bytes(model, p, block_tokens, tp))


def kv_capacity_blocks(model: ModelSpec, hw: Hardware, p: Precision, tp: int, cfg: ServeConfig,
                       draft: ModelSpec | None = None) -> int:
    """KV blocks that fit per device: (gpu_memory_utilization x HBM - weights - peak activations)
    / bytes per block, as vLLM sizes its cache after a profiling run (activations: one budget of
    tokens through a layer plus fp32 logits for every running sequence, perfmodel.memory). A draft
    model adds its weights and its own KV per block."""
    if cfg.kv_blocks is not None:
        return int(cfg.kv_blocks)
    rows = cfg.max_num_seqs * (cfg.spec.k + 1 if cfg.spec else 1)
    free = cfg.gpu_memory_utilization * hw.hbm_capacity_bytes - float(memory.weight_bytes(model, p, tp)) \
        - float(memory.serving_activation_bytes(model, p, rows, cfg.max_num_batched_tokens, 1, tp,
                                                chunk=cfg.max_num_batched_tokens))
    per_block = kv_block_bytes(model, p, tp, cfg.block_tokens)
    if draft is not None:
        free -= float(memory.weight_bytes(draft, p, tp))
        per_block += kv_block_bytes(draft, p, tp, cfg.block_tokens)
    return max(int(free // per_block), 0)


@dataclass(frozen=True)
class Instance:
    """Everything the simulator needs about one engine instance (a tp-way replica)."""

    model: ModelSpec
    hw: Hardware
    p: Precision
    tp: int
    engine: Engine
    cfg: ServeConfig
    costs: StepCosts
    blocks: int
    draft_costs: StepCosts | None = None

    @property
    def swap_s_per_block(self) -> float:
        return kv_block_bytes(self.model, self.p, self.tp, self.cfg.block_tokens) / self.hw.host_link_bytes_per_s


def make_instance(model: ModelSpec, hw: Hardware, *, p: Precision | None = None, tp: int = 1,
                  engine: Engine | str = DEFAULT_ENGINE, cfg: ServeConfig | None = None) -> Instance:
    """Check the configuration, size the KV cache and tabulate step times."""
    from perfmodel.checks import check_parallelism

    cfg = cfg or ServeConfig()
    p = p or Precision(16, 16, 16)
    engine = load_engine(engine)
    check_parallelism(model, hw, tp)
    draft = cfg.spec.proposer if cfg.spec and isinstance(cfg.spec.proposer, ModelSpec) else None
    blocks = kv_capacity_blocks(model, hw, p, tp, cfg, draft)
    if blocks < 1:
        need = float(memory.weight_bytes(model, p, tp))
        raise ServeError(f"hardware: {model.name} does not fit on {hw.name} x{tp}: weights {need / 1e9:.1f} GB per "
                         f"device of {hw.hbm_capacity_bytes / 1e9:.1f} GB leave no room for the KV cache")
    q = cfg.spec.k + 1 if cfg.spec else 1
    # tables reach the largest padded forward the settings allow
    budget = padded(cfg.max_num_batched_tokens, cfg.prefill_token_sizes)
    seqs = padded(cfg.max_num_seqs, cfg.decode_batch_sizes)
    costs = build_step_costs(model, hw, p, tp, engine, budget, seqs, q)
    draft_costs = None
    if cfg.spec is not None:
        if draft is None:  # MTP: one transformer layer with the model's own embedding and LM head
            import dataclasses
            draft = dataclasses.replace(model, n_layers=1, n_dense_layers=min(1, model.n_dense_layers))
        draft_costs = build_step_costs(draft, hw, p, tp, engine, cfg.max_num_seqs, cfg.max_num_seqs, 1)
    return Instance(model, hw, p, tp, engine, cfg, costs, blocks, draft_costs)


@dataclass(frozen=True)
class Result:
    """Per-request times (arrays in request order) and time series of one simulation."""

    arrival_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    preemptions: np.ndarray
    wait_s: np.ndarray
    iteration_start_s: np.ndarray
    iteration_end_s: np.ndarray
    iteration_decodes: np.ndarray
    iteration_tokens: np.ndarray
    kv_used_blocks: np.ndarray
    queue_length: np.ndarray
    kv_capacity_blocks: int
    extra: dict = field(default_factory=dict)

    @property
    def ttft_s(self):
        return self.first_token_s - self.arrival_s

    @property
    def e2e_s(self):
        return self.finish_s - self.arrival_s

    @property
    def tpot_s(self):
        """Mean time per output token after the first; 0 for single-token outputs (excluded from
        the TPOT percentiles, as vLLM's benchmark does)."""
        gaps = np.maximum(self.output_tokens - 1, 1)
        return np.where(self.output_tokens > 1, (self.finish_s - self.first_token_s) / gaps, 0.0)

    def itl_s(self) -> tuple[np.ndarray, np.ndarray]:
        """Inter-token latencies as (durations, weights): each iteration's duration, weighted by
        the sequences that decoded in it."""
        return self.iteration_end_s - self.iteration_start_s, self.iteration_decodes

    def per_request_frame(self):
        import pandas as pd

        return pd.DataFrame({"arrival_s": self.arrival_s, "prompt_tokens": self.prompt_tokens,
                             "output_tokens": self.output_tokens, "first_token_s": self.first_token_s,
                             "finish_s": self.finish_s, "ttft_s": self.ttft_s, "tpot_s": self.tpot_s,
                             "e2e_s": self.e2e_s, "wait_s": self.wait_s, "preemptions": self.preemptions})


def simulate(inst: Instance, requests: Requests, *, seed: int = 0, prefilled: bool = False,
             max_iterations: int = 50_000_000) -> Result:
    """Run every request to completion; deterministic for a seed (the seed drives only speculative
    acceptance; arrivals are fixed by `requests`).

    prefilled: every request arrives with its prompt's KV cache and first token (the decode
    instance of disaggregated serving): admission allocates its blocks and it decodes from the
    next iteration; its first_token_s is its arrival."""
    requests.check_context(inst.model.max_context, inst.model.name)
    check_fits_cache(inst, requests)
    static = inst.cfg.static_cache_tokens
    if static is not None:
        need = requests.prompt_tokens + requests.output_tokens
        worst = int(np.argmax(need))
        if need[worst] > static:
            raise ServeError(f"static_cache_tokens: request {worst} needs {int(need[worst])} positions; a cache "
                             f"row holds {static}")
    return _Engine(inst, requests, seed, prefilled).run(max_iterations)


def check_fits_cache(inst: Instance, requests: Requests) -> None:
    """A request whose whole sequence needs more KV blocks than the cache holds could only preempt
    itself forever: refuse it up front, naming the sizes."""
    spare = inst.cfg.spec.k + 1 if inst.cfg.spec else 1
    need = -(-(requests.prompt_tokens + requests.output_tokens + spare) // inst.cfg.block_tokens)
    worst = int(np.argmax(need))
    if need[worst] > inst.blocks:
        raise ServeError(f"kv_blocks: request {worst} ({int(requests.prompt_tokens[worst])} + "
                         f"{int(requests.output_tokens[worst])} tokens) needs {int(need[worst])} KV blocks; the cache "
                         f"holds {inst.blocks} (more memory, fewer bits or a larger --tp)")


def padded(n: int, sizes) -> int:
    """The smallest of `sizes` >= n, or n itself when there is none (unpadded above the largest, as
    vLLM runs a batch above its largest CUDA-graph size)."""
    if not sizes or n > sizes[-1]:
        return n
    return sizes[bisect.bisect_left(sizes, n)]


def iteration_s(cfg: ServeConfig, costs: StepCosts, n_dec: int, sum_past: float, chunks: list,
                finishing: int) -> float:
    """Seconds of one iteration of n_dec decodes (cached contexts summing to sum_past) and prefill
    chunks [(tokens, past)] (`finishing` of them complete their prompt) under cfg's execution
    settings (ServeConfig.__post_init__): padding to the graph sizes, a static cache's attention
    span, fused or sequential prefill and decode forwards. Padded decode rows attend nothing
    (their context is 0, as vLLM's padded rows have sequence length 0) unless the cache is static,
    where every row, padded or not, attends the whole row; a padded prefill chunk's extra tokens
    are priced as tokens of that chunk (token work and attention rows)."""
    q = costs.decode_query_tokens
    static = cfg.static_cache_tokens
    n_pad = padded(n_dec, cfg.decode_batch_sizes) if n_dec else 0
    # a decode of q tokens attending `static` positions does the work of past = static - q
    dec_past = n_pad * float(static - q) if static is not None else sum_past

    def chunk_shape(c: int, past: float) -> tuple[int, float]:
        if static is None:
            return c, past
        # c query rows over `static` keys each: pairs c x static = c past' + c (c + 1) / 2 (ops.attention_pairs)
        return c, static - (c + 1) / 2.0

    if cfg.fused_prefill_decode:
        if not chunks:
            return costs.decode_step_s(n_pad, dec_past)
        total = n_dec * q + sum(c for c, _ in chunks)
        extra = padded(total, cfg.prefill_token_sizes) - total  # padding tokens ride on the last chunk
        shaped = [chunk_shape(c, s) for c, s in chunks]
        c, s = shaped[-1]
        shaped[-1] = (c + extra, s if static is None else static - (c + extra + 1) / 2.0)
        return costs.mixed_step_s(n_dec, sum_past if static is None else n_dec * float(static - q), shaped,
                                  n_dec * q + finishing)
    dur = 0.0
    for c, s in chunks:  # each chunk its own forward (one logits row: its last token)
        c_pad, past = chunk_shape(padded(c, cfg.prefill_token_sizes), s)
        dur += costs.mixed_step_s(0, 0.0, [(c_pad, past)], 1)
    if n_dec:
        dur += costs.decode_step_s(n_pad, dec_past)
    return dur


# request states
WAITING, PREFILL, DECODE, DONE, SWAPPED = range(5)


class _Engine:
    """One simulation's mutable state (module doc). Not part of the API."""

    def __init__(self, inst: Instance, req: Requests, seed: int, prefilled: bool = False):
        self.prefilled = prefilled
        self.inst, self.cfg, self.costs = inst, inst.cfg, inst.costs
        n = len(req)
        self.n = n
        self.prompt = req.prompt_tokens.tolist()
        self.out = req.output_tokens.tolist()
        self.prefix = (req.prefix_tokens if inst.cfg.prefix_caching else np.zeros(n, np.int64)).tolist()
        self.closed = req.clients > 0
        self.arrival = [0.0] * n if self.closed else req.arrival_s.tolist()
        self.released = req.clients if self.closed else n  # requests whose arrival time is known
        self.first = [math.nan] * n
        self.finish = [math.nan] * n
        self.preempted = [0] * n
        self.state = [WAITING] * n
        self.generated = [0] * n   # tokens emitted so far
        self.target = [0] * n      # tokens to prefill (prompt, or prompt + generated after recompute)
        self.done = [0] * n        # tokens in the KV cache (prefill progress, incl. prefix hits)
        self.shared = [0] * n      # blocks of the cached shared prefix a request uses (not its own)
        self.start_iter = [0] * n  # decoding: first iteration and context at it
        self.start_past = [0] * n
        self.start_gen = [0] * n
        self.wait = [0.0] * n      # time spent in the waiting or swapped queue, summed
        self.queued_since = [0.0] * n
        self.held = [0] * n        # own blocks held, where not derived from the context (speculative, swapped)
        self.rng = np.random.default_rng(seed)
        self.B = inst.cfg.block_tokens

    # -- blocks ------------------------------------------------------------------------------
    def _own_blocks(self, i: int, tokens: int) -> int:
        return -(-tokens // self.B) - self.shared[i]

    def run(self, max_iterations: int) -> Result:
        cfg, costs, B = self.cfg, self.costs, self.B
        spec = cfg.spec
        q = spec.k + 1 if spec else 1
        budget_cap = cfg.max_num_batched_tokens
        free = self.inst.blocks
        cached_prefix_blocks = 0
        waiting: deque = deque()
        swapped: deque = deque()
        prefilling: list = []      # request ids in prefill, admission order
        running_order: list = []   # ids in admission order (stale entries skipped lazily)
        finish_heap: list = []     # (iteration of last token, id)
        decoding: set = set()      # for speculative decoding (per-sequence loop)
        bucket = [0] * B
        n_dec, sum_past = 0, 0
        nxt, completed, t, it = 0, 0, 0.0, 0
        starts, ends, decs, toks, used, queue = [], [], [], [], [], []
        first, finish, state = self.first, self.finish, self.state
        arrival, prompt, out = self.arrival, self.prompt, self.out
        swap_per_block = self.inst.swap_s_per_block
        swap_latency = self.inst.hw.host_link_latency_s
        resumed: list = []         # swapped-in requests, decoding from the next iteration
        plain = cfg.fused_prefill_decode and cfg.decode_batch_sizes is None and cfg.prefill_token_sizes is None \
            and cfg.static_cache_tokens is None  # the fast path of vLLM V1's unpadded fused step

        def preempt_last() -> int:
            """Preempt the most recently admitted running request; returns its id."""
            nonlocal free, n_dec, sum_past, extra_s
            while True:
                v = running_order.pop()
                if state[v] in (PREFILL, DECODE):
                    break
            if state[v] == PREFILL:
                prefilling.remove(v)
                held = self._own_blocks(v, self.done[v])
            elif spec:
                decoding.discard(v)
                past, held = self.done[v], self.held[v]
                n_dec -= 1
                sum_past -= past
            else:
                elapsed = it - self.start_iter[v]
                past = self.start_past[v] + elapsed
                self.generated[v] = self.start_gen[v] + elapsed
                held = self._own_blocks(v, past)
                bucket[(self.start_past[v] - self.start_iter[v]) % B] -= 1
                n_dec -= 1
                sum_past -= past
            free += held
            self.preempted[v] += 1
            self.queued_since[v] = t
            if cfg.preemption == "swap" and state[v] == DECODE:
                extra_s += swap_latency + held * swap_per_block
                state[v] = SWAPPED
                self.start_past[v], self.held[v] = past, held  # context and blocks to bring back
                swapped.appendleft(v)
            else:
                state[v] = WAITING
                self.target[v] = prompt[v] + self.generated[v]
                self.done[v] = 0
                waiting.appendleft(v)
            return v

        def start_decode(i: int, now_iter: int) -> None:
            nonlocal n_dec, sum_past
            from_prefill = state[i] == PREFILL
            past = self.target[i] if from_prefill else self.start_past[i]  # else swapped (or handed) in
            state[i] = DECODE
            self.start_iter[i], self.start_past[i], self.start_gen[i] = now_iter, past, self.generated[i]
            n_dec += 1
            sum_past += past
            if spec:
                self.done[i] = past
                if from_prefill:  # a swapped-in request keeps the blocks it brought back
                    self.held[i] = self._own_blocks(i, past)
                decoding.add(i)
            else:
                bucket[(past - now_iter) % B] += 1
                heapq.heappush(finish_heap, (now_iter + out[i] - self.generated[i] - 1, i))

        while completed < self.n:
            if it >= max_iterations:
                raise ServeError(f"max_iterations: the simulation did not finish in {max_iterations} iterations")
            # arrivals up to now
            while nxt < self.released and arrival[nxt] <= t:
                waiting.append(nxt)
                self.queued_since[nxt] = arrival[nxt]
                nxt += 1
            if not waiting and not swapped and not prefilling and n_dec == 0:
                if nxt >= self.released:  # closed loop with nothing released cannot happen
                    raise ServeError("requests: the simulation stalled with requests left")
                t = max(t, arrival[nxt])
                continue
            extra_s = 0.0
            budget = budget_cap
            preempted_now = False
            # 1. running decodes: one block each when its context crosses a block boundary
            need = self._spec_need(decoding, q) if spec else bucket[(-it) % B]
            while need > free:
                preempt_last()
                preempted_now = True
                need = self._spec_need(decoding, q) if spec else bucket[(-it) % B]
            free -= need
            if spec:  # blocks for the k + 1 verified positions (vLLM's lookahead slots)
                for i in decoding:
                    self.held[i] = max(self.held[i], self._own_blocks(i, self.done[i] + q))
            budget -= n_dec * q
            # 2. running prefills continue
            chunks = []
            k = 0
            while k < len(prefilling) and budget > 0:
                i = prefilling[k]
                c = min(self.target[i] - self.done[i], budget)
                grow = self._own_blocks(i, self.done[i] + c) - self._own_blocks(i, self.done[i])
                while grow > free and state[i] == PREFILL:
                    preempt_last()
                    preempted_now = True
                if state[i] != PREFILL:
                    break
                free -= grow
                chunks.append((i, c))
                budget -= c
                k += 1
            # 3. swapped-out requests come back first, then waiting ones (none after a preemption)
            if not preempted_now:
                while swapped and n_dec + len(prefilling) + len(resumed) < cfg.max_num_seqs and budget >= q:
                    i = swapped[0]
                    if self.held[i] > free:
                        break
                    swapped.popleft()
                    self.wait[i] += t - self.queued_since[i]
                    free -= self.held[i]
                    extra_s += swap_latency + self.held[i] * swap_per_block
                    running_order.append(i)
                    resumed.append(i)  # copied in during this iteration, decodes from the next
                while self.prefilled and waiting and n_dec + len(prefilling) + len(resumed) < cfg.max_num_seqs:
                    i = waiting[0]
                    if self.target[i]:  # preempted by recompute on this instance: prefill again below
                        break
                    blocks = self._own_blocks(i, prompt[i])
                    if blocks > free:
                        break
                    waiting.popleft()
                    self.wait[i] += t - self.queued_since[i]
                    free -= blocks
                    state[i], self.start_past[i], self.held[i], self.generated[i] = SWAPPED, prompt[i], blocks, 1
                    first[i] = arrival[i]
                    running_order.append(i)
                    resumed.append(i)
                admit = not cfg.static or (n_dec == 0 and not prefilling)
                growth = 0  # static batching: blocks the admitted batch will still grow into
                while admit and waiting and budget > 0 and n_dec + len(prefilling) + len(resumed) < cfg.max_num_seqs:
                    i = waiting[0]
                    if self.prefilled and not self.target[i]:
                        break  # arrives with its KV cache: only the hand-in path above admits it
                    hit = min(self.prefix[i], cached_prefix_blocks * B) // B if cfg.prefix_caching else 0
                    remaining = self.target[i] if self.target[i] else prompt[i]
                    self.shared[i] = hit
                    c = min(remaining - hit * B, budget)
                    if c < remaining - hit * B and (cfg.static or not cfg.chunked_prefill):
                        break
                    need_blocks = self._own_blocks(i, hit * B + c)
                    # a static batch admits a request only if its whole sequence fits beside the
                    # batch's (so it never preempts); blocks are still allocated as tokens arrive
                    full = self._own_blocks(i, remaining + out[i] - self.generated[i]) if cfg.static else need_blocks
                    if full + growth > free:
                        self.shared[i] = 0
                        break
                    growth += full - need_blocks
                    waiting.popleft()
                    self.wait[i] += t - self.queued_since[i]
                    free -= need_blocks
                    if not self.target[i]:
                        self.target[i] = prompt[i]
                    self.done[i] = hit * B
                    state[i] = PREFILL
                    prefilling.append(i)
                    running_order.append(i)
                    chunks.append((i, c))
                    budget -= c
            # 4. price the iteration
            ndec_step = n_dec
            if spec:
                draft = self.inst.draft_costs
                draft_s = spec.k * draft.decode_step_s(n_dec, sum_past) if n_dec else 0.0
            else:
                draft_s = 0.0
            if plain and chunks:
                finishing = sum(1 for i, c in chunks if self.done[i] + c >= self.target[i])
                dur = costs.mixed_step_s(n_dec, float(sum_past), [(c, self.done[i]) for i, c in chunks],
                                         n_dec * q + finishing)
            elif plain and n_dec:
                dur = costs.decode_step_s(n_dec, float(sum_past))
            elif chunks or n_dec:
                finishing = sum(1 for i, c in chunks if self.done[i] + c >= self.target[i])
                dur = iteration_s(cfg, costs, n_dec, float(sum_past), [(c, self.done[i]) for i, c in chunks],
                                  finishing)
            elif resumed:
                dur = 0.0  # only swap-ins this iteration
            else:  # nothing schedulable (e.g. waiting for blocks that only swapped requests hold)
                raise ServeError("kv_blocks: the KV cache cannot hold even one request's next step; give the "
                                 "engine more memory (or a smaller max_num_batched_tokens)")
            starts.append(t)
            queue.append(len(waiting) + len(swapped))
            t += dur + draft_s + extra_s
            # 5. apply the iteration's effects at its end
            tokens_this = n_dec * q + sum(c for _, c in chunks)
            if spec and n_dec:
                for i in list(decoding):
                    j = self._accepted(spec)
                    gain = min(j + 1, out[i] - self.generated[i])
                    self.generated[i] += gain
                    self.done[i] += gain
                    sum_past += gain
                    if self.generated[i] >= out[i]:
                        decoding.discard(i)
                        state[i] = DONE
                        finish[i] = t
                        n_dec -= 1
                        sum_past -= self.done[i]
                        free += self.held[i]
                        completed += 1
                        self._release(i, t)
            elif n_dec:
                sum_past += n_dec
                while finish_heap and finish_heap[0][0] <= it:
                    _, i = heapq.heappop(finish_heap)
                    if state[i] != DECODE or self.start_iter[i] + out[i] - self.start_gen[i] - 1 != it:
                        continue  # stale entry of a preempted request
                    past = self.start_past[i] + (it - self.start_iter[i]) + 1
                    state[i] = DONE
                    finish[i] = t
                    self.generated[i] = out[i]
                    bucket[(self.start_past[i] - self.start_iter[i]) % B] -= 1
                    n_dec -= 1
                    sum_past -= past
                    free += self._own_blocks(i, past)
                    completed += 1
                    self._release(i, t)
            for i, c in chunks:
                self.done[i] += c
                if self.done[i] < self.target[i]:
                    continue
                prefilling.remove(i)
                if cfg.prefix_caching and self.prefix[i] // B > cached_prefix_blocks:
                    # this request's prefix blocks become the shared cached prefix
                    grown = self.prefix[i] // B
                    self.shared[i] = grown
                    cached_prefix_blocks = grown
                self.generated[i] += 1
                if math.isnan(first[i]):
                    first[i] = t
                if self.generated[i] >= out[i]:
                    state[i] = DONE
                    finish[i] = t
                    free += self._own_blocks(i, self.done[i])
                    completed += 1
                    self._release(i, t)
                else:
                    start_decode(i, it + 1)
            for i in resumed:
                start_decode(i, it + 1)
            resumed.clear()
            ends.append(t)
            decs.append(ndec_step)
            toks.append(tokens_this)
            used.append(self.inst.blocks - free)
            it += 1
        return Result(np.asarray(self.arrival, float), np.asarray(first), np.asarray(finish),
                      np.asarray(self.prompt), np.asarray(self.out), np.asarray(self.preempted),
                      np.asarray(self.wait), np.asarray(starts), np.asarray(ends), np.asarray(decs), np.asarray(toks), np.asarray(used),
                      np.asarray(queue), self.inst.blocks)

    def _spec_need(self, decoding, q: int) -> int:
        """Blocks the speculative decodes need for this step's k + 1 positions."""
        return sum(max(self._own_blocks(i, self.done[i] + q) - self.held[i], 0) for i in decoding)

    def _accepted(self, spec: SpecDecode) -> int:
        """Leading accepted drafts of one verification: geometric, capped at k."""
        j = 0
        while j < spec.k and self.rng.random() < spec.alpha:
            j += 1
        return j

    def _release(self, i: int, t: float) -> None:
        """Closed loop: the client of finished request i sends the next unsent request now."""
        if self.closed and self.released < self.n:
            self.arrival[self.released] = t
            self.released += 1
