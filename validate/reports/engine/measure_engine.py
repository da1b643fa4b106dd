"""Time whole model steps as a serving engine runs them: compiled layers in one CUDA graph per step.

    python validate/reports/engine/measure_engine.py --out DIR [--quick [--cpu]] [--limit-s S]
                                                      [--only REGEX] [--retry-failed] [--dry-run]

Three ways to run the same step of validate/engine_model.py (fused QKV and gate-up, static KV cache,
SDPA over the used context, grouped-GEMM MoE, dynamic per-tensor fp8):

  torch-compile      each layer through one torch.compile'd layer function (inductor, fullgraph,
                     batch / token / context dims dynamic, so one graph per (model, dtype, phase)
                     serves every size; B = 1 gets its own, dynamo specializes size-1 dims), and the
                     whole step (embedding, layers, final norm, LM head) captured in ONE CUDA graph
                     and replayed: what gpt-fast's mode="reduce-overhead" and vLLM's full CUDA graphs
                     run. Device time of the replays.
  torch-eager-graph  the same step uncompiled (eager kernels, unfused) captured in a CUDA graph:
                     no host dispatch, no fusion. Device time of the replays.
  torch-eager        the same step eager, no graph: host-bound. CUDA events around each step, queued
                     back to back. A few shapes only.

Timing: warm up (the first call compiles), capture, replay a few times, then time each replay with
CUDA events queued back to back (no host sync between them) and take the median; about 0.2 s of
replays per case, between 3 and 50. Every output is checked to be finite. On one decode and one
prefill shape per model the compiled logits are compared with eager ones (max over rows of the
relative L2 error, max_rel_err) and both with an fp32 reference of the same weights
(rel_err_compiled_fp32, rel_err_eager_fp32): through 16-36 random layers bf16 rounding alone is a
few percent, so compiled is right when it is as close to fp32 as eager is. (Seen on an H200, torch
2.11: bf16 compiled 0.02-0.056 from fp32, eager 0.027-0.064; fp8 both ~0.4, activation
quantization; MoE decode both ~1 on some rows: about 3% of tokens pick a different top-8 set per
layer between bf16 and fp32 routers, and a flip changes the rest of the row. The grouped MoE
equals the per-expert loop bit for bit there.)

Output: DIR/steps.csv, one row per case, appended and fsynced as each case completes; a rerun skips
every case already recorded (ok or failed; --retry-failed redoes failed ones). A torn last line (a
killed run) is cut off and its case redone. DIR/meta.json is written first with the run's ceilings
(bf16 8192^3 GEMM TFLOP/s, 1 GiB device copy GB/s counting read + write), versions, and the compile
times as they happen. --quick is a CPU smoke test (tiny models, torch-eager only; on a GPU, all three
engines on the tiny models; --cpu keeps it on the CPU). --dry-run prints the cases and the time
estimate and exits. The full grid (135 cases, 20 compiled graphs of 1-11 s each) ran in about
190 s on an H200.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import gc
import json
import os
import re
import statistics
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repo root, when run as a script

# Inductor reads these when it first loads (importing torch._dynamo loads it): set them before.
# The compile cache lives in /tmp (kept across reruns, never in the repo).
INDUCTOR_CACHE = Path("/tmp") / f"perfmodel-inductor-{os.getuid()}"
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(INDUCTOR_CACHE))
os.environ.setdefault("TRITON_CACHE_DIR", str(INDUCTOR_CACHE / "triton"))
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", str(min(16, os.cpu_count() or 1)))

import torch  # noqa: E402
import torch._dynamo  # noqa: E402

import workloads  # noqa: E402
from validate import bench  # noqa: E402
from validate import engine_model as em  # noqa: E402

COLUMNS = ("case_id", "kind", "engine", "model", "layers", "phase", "batch", "q_len", "kv_len", "dtype", "s_max",
           "status", "measured_s", "repeats", "compile_s", "recompiles", "compile_mode", "max_rel_err",
           "rel_err_compiled_fp32", "rel_err_eager_fp32", "finite",
           "error", "notes", "device_name", "torch", "cuda", "driver", "sm_clock_mhz", "mem_clock_mhz", "timestamp")
CASE_KEYS = ("engine", "model", "layers", "phase", "batch", "q_len", "kv_len", "dtype")
ENGINES = ("torch-compile", "torch-eager-graph", "torch-eager")

# The full grid. Models in the order their data is worth most; MoE keeps 12 of 48 layers (weights).
MODELS = (("llama-3-8b", 32, "bf16"), ("qwen3-8b", 36, "bf16"), ("llama-3.2-1b", 16, "bf16"),
          ("llama-3-8b", 32, "fp8"), ("qwen3-30b-a3b", 12, "bf16"))
DECODE_BATCHES = (1, 4, 16, 64, 256)
DECODE_CONTEXTS = (512, 2048, 8192, 32768)
MAX_KV_TOKENS = 262144            # batch * context ceiling of the grid (KV memory)
PREFILLS = ((1, 128), (1, 512), (1, 2048), (1, 8192), (1, 16384), (4, 1024))   # (batch, q_len)
GRAPH_DECODE = ((1, 512), (1, 8192), (64, 512), (64, 8192))                  # torch-eager-graph subset
GRAPH_PREFILL = (512, 8192)
EAGER_DECODE, EAGER_PREFILL = ((1, 2048),), (2048,)
COMPARE = (("decode", 4, 2048), ("prefill", 1, 512))   # (phase, batch, context): compiled checked vs eager

QUICK_MODELS = (("llama-3.2-1b-tiny", 2, "bf16"), ("qwen3-30b-a3b-tiny", 2, "bf16"), ("llama-3.2-1b-tiny", 2, "fp8"))
QUICK_DECODE, QUICK_PREFILL = ((1, 64), (4, 128)), ((1, 32), (2, 16))
QUICK_COMPARE = (("decode", 4, 128), ("prefill", 1, 32))

REPLAY_TARGET_S, MIN_REPEATS, MAX_REPEATS = 0.2, 3, 50


# -- cases -----------------------------------------------------------------------------------------

def case_id(case: dict) -> str:
    return "|".join(f"{k}={case[k]}" for k in CASE_KEYS)


def _case(engine, model, layers, dtype, phase, batch, q_len, kv_len) -> dict:
    return dict(kind="model_step", engine=engine, model=model, layers=layers, phase=phase, batch=batch,
                q_len=q_len, kv_len=kv_len, dtype=dtype)


def _model_cases(model: str, layers: int, dtype: str, engines, decode, prefill, graph_decode, graph_prefill,
                 eager_decode, eager_prefill) -> list[dict]:
    """One model's cases, most valuable first: compiled decode, compiled prefill, eager-graph, eager."""
    def dec(engine, pairs):
        return [_case(engine, model, layers, dtype, "decode", b, 1, s) for b, s in pairs]

    def pre(engine, pairs):
        return [_case(engine, model, layers, dtype, "prefill", b, t, t) for b, t in pairs]
    out = []
    if "torch-compile" in engines:
        out += dec("torch-compile", decode) + pre("torch-compile", prefill)
    if "torch-eager-graph" in engines:
        out += dec("torch-eager-graph", graph_decode) + pre("torch-eager-graph", graph_prefill)
    return out + dec("torch-eager", eager_decode) + pre("torch-eager", eager_prefill)


def grid(quick: bool, cuda: bool) -> list[dict]:
    """Every case, in run order (grouped by model so each model is built once)."""
    if quick:
        engines = ENGINES if cuda else ("torch-eager",)
        pre = [(b, t) for b, t in QUICK_PREFILL]
        return [c for m, layers, dtype in QUICK_MODELS
                for c in _model_cases(m, layers, dtype, engines, QUICK_DECODE, pre, QUICK_DECODE, pre,
                                      QUICK_DECODE, pre)]
    decode = [(b, s) for b in DECODE_BATCHES for s in DECODE_CONTEXTS if b * s <= MAX_KV_TOKENS]
    graph_decode = [(b, s) for b, s in GRAPH_DECODE if b * s <= MAX_KV_TOKENS]
    cases = []
    for model, layers, dtype in MODELS:
        cases += _model_cases(model, layers, dtype, ENGINES, decode, PREFILLS, graph_decode,
                              [(1, t) for t in GRAPH_PREFILL], EAGER_DECODE, [(1, t) for t in EAGER_PREFILL])
    return cases


def s_max_of(case: dict) -> int:
    """The static cache's S_max for a case: the context plus room, rounded to 256, always > S. A
    cache exactly as long as the context would make the compiled graph guard on S_max == S and
    recompile (seen with dynamo on torch 2.13); gpt-fast sizes its cache above the context too."""
    S = int(case["kv_len"]) + (1 if case["phase"] == "decode" else 0)
    return -(-(S + 1) // 256) * 256


def model_spec(name: str, layers: int):
    """The catalog model with `layers` layers; '<name>-tiny' is a CPU-sized stand-in with the same
    architecture flags (GQA, qk-norm, MoE)."""
    if not name.endswith("-tiny"):
        return dataclasses.replace(workloads.load(name), n_layers=int(layers))
    base = workloads.load(name[:-len("-tiny")])
    kw = dict(n_layers=int(layers), d_model=128, n_heads=4, n_kv_heads=2, head_dim=32, d_ff=256, vocab_size=512)
    if base.is_moe:
        kw.update(n_experts=8, top_k=2, moe_d_ff=64)
    return dataclasses.replace(base, name=name, **kw)


# -- the CSV: append, fsync, resume ----------------------------------------------------------------

def repair(path: Path) -> None:
    """Drop a torn last line (a run killed mid-write) and rewrite an older column set in this one
    (validate.runner's repair and migrate, with this script's columns)."""
    from validate.runner import migrate, repair as drop_torn

    drop_torn(path)
    migrate(path, COLUMNS)


def done_ids(path: Path, retry_failed: bool = False) -> set[str]:
    """Case ids recorded with a complete row (its last column filled)."""
    if not path.exists():
        return set()
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get(COLUMNS[-1])]
    return {r["case_id"] for r in rows if not (retry_failed and r.get("status") == "failed")}


def append_row(path: Path, row: dict) -> None:
    """Append one row, fsynced, with this script's columns (validate.runner's writer)."""
    from validate.runner import append_record

    append_record(path, row, COLUMNS)


def one_line(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".replace("\n", " ").replace("\r", " ")
    return (text[:400] + "...") if len(text) > 400 else (text or traceback.format_exc(limit=1))


# -- meta.json -------------------------------------------------------------------------------------

class Meta:
    """DIR/meta.json: this run's ceilings, versions and compile log, rewritten as it grows; earlier
    runs into the same DIR are kept under previous_runs."""

    def __init__(self, out: Path, data: dict):
        self.path = out / "meta.json"
        previous = []
        if self.path.exists():
            try:
                old = json.loads(self.path.read_text())
                previous = old.pop("previous_runs", []) + [old]
            except (json.JSONDecodeError, OSError):
                previous = []
        self.data = {**data, "compiles": [], "previous_runs": previous}
        self.write()

    def add(self, key: str, value) -> None:
        self.data.setdefault(key, []).append(value)
        self.write()

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        tmp.replace(self.path)


def _median_event_s(fn, repeats: int, cuda: bool) -> float:
    fn()
    if not cuda:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
    for a, b in events:
        a.record()
        fn()
        b.record()
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) for a, b in events) / 1e3


def ceilings(dev: torch.device, quick: bool) -> dict:
    """bf16 GEMM TFLOP/s at n^3 (n = 8192; random data) and device-copy GB/s (read + write)."""
    cuda = dev.type == "cuda"
    n = 512 if quick else 8192
    t = torch.bfloat16 if cuda else torch.float32
    a, b = torch.randn(n, n, device=dev, dtype=t), torch.randn(n, n, device=dev, dtype=t)
    gemm = _median_event_s(lambda: torch.mm(a, b), 10, cuda)
    size = (1 << 24) if quick else (1 << 30)
    src = torch.randint(0, 255, (size,), device=dev, dtype=torch.uint8)
    dst = torch.empty_like(src)
    copy = _median_event_s(lambda: dst.copy_(src), 10, cuda)
    del a, b, src, dst
    return {"gemm_n": n, "gemm_dtype": str(t).replace("torch.", ""), "gemm_tflops": 2 * n ** 3 / gemm / 1e12,
            "copy_bytes": size, "copy_gbps_read_plus_write": 2 * size / copy / 1e9}


# -- compiling ---------------------------------------------------------------------------------------

def configure_compiler(threads: int) -> dict:
    """Compiler settings for the whole run, returned for meta.json. No max-autotune (minutes per
    graph); inductor's own cudagraphs off (the whole step is captured here instead); a recompile
    limit high enough for a static fallback, and an error rather than a silent eager fallback."""
    import torch._inductor.config as inductor

    choices = {"max_autotune": False, "coordinate_descent_tuning": False, "compile_threads": threads}
    for key, value in choices.items():
        setattr(inductor, key, value)
    inductor.triton.cudagraphs = False
    limits = bench.raise_recompile_limit(64)
    return {**choices, "triton.cudagraphs": False, "recompile_limit": limits["recompile_limit"],
            "cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR", "")}


def graphs_compiled() -> int:
    from torch._dynamo.utils import counters
    return int(counters["stats"]["unique_graphs"])


def _mark(t: torch.Tensor, *dims: int) -> None:
    """Mark dims dynamic where they are > 1 (dynamo specializes sizes 0 and 1 anyway). The weak
    form: a dim the compiler must specialize becomes a recompile, not an error."""
    mark = getattr(torch._dynamo, "maybe_mark_dynamic", torch._dynamo.mark_dynamic)
    for d in dims:
        if t.shape[d] > 1:
            mark(t, d)


def is_compile_error(err: BaseException) -> bool:
    """An error raised by dynamo, inductor or symbolic shapes (torch 2.11 and 2.13 differ in which
    classes wrap which), as opposed to an OOM or a CUDA error while running."""
    module = type(err).__module__
    return isinstance(err, torch._dynamo.exc.TorchDynamoException) or \
        module.startswith(("torch._dynamo", "torch._inductor", "torch.fx.experimental"))


class CompiledLayer:
    """engine_model.layer_forward under torch.compile (inductor, fullgraph). One function serves
    every layer (weights and caches are inputs), so a model compiles one graph per phase and batch
    class, not one per layer. mode "dynamic": batch, new tokens, S_max and context S are marked
    dynamic (vLLM marks its token dim dynamic the same way and compiles once for all sizes);
    "static": one graph per shape (the fallback when dynamic shapes fail)."""

    def __init__(self, mode: str):
        self.mode = mode
        self.fn = torch.compile(em.layer_forward, fullgraph=True, dynamic=False if mode == "static" else None)

    def __call__(self, x, residual, w, k_cache, v_cache, cos, sin, dims, causal):
        if self.mode == "dynamic":
            for t in (x, residual):
                _mark(t, 0, 1)
            for t in (k_cache, v_cache):
                _mark(t, 0, 2)
            for t in (cos, sin):
                _mark(t, 0)
        return self.fn(x, residual, w, k_cache, v_cache, cos, sin, dims, causal)


# -- measuring one case ------------------------------------------------------------------------------

def _sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


def _warm(fn, cuda: bool) -> tuple[object, float, int]:
    """Run fn twice (on a side stream on CUDA, as graph capture wants); returns (output, seconds the
    first call took when it compiled anything, else 0; graphs compiled)."""
    before = graphs_compiled()
    stream = torch.cuda.Stream() if cuda else None
    if cuda:
        stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream) if cuda else contextlib.nullcontext():
        t0 = time.perf_counter()
        fn()
        _sync(cuda)
        first = time.perf_counter() - t0
        out = fn()
    if cuda:
        torch.cuda.current_stream().wait_stream(stream)
    _sync(cuda)
    graphs = graphs_compiled() - before
    return out, (first if graphs else 0.0), graphs


def _repeats(once_s: float, quick: bool) -> int:
    if quick:
        return MIN_REPEATS
    return int(min(MAX_REPEATS, max(MIN_REPEATS, REPLAY_TARGET_S / max(once_s, 1e-6))))


def time_steps(run, cuda: bool, quick: bool) -> tuple[float, int]:
    """Median seconds of run() (a graph replay or an eager step), timed back to back."""
    t0 = time.perf_counter()
    run()
    _sync(cuda)
    repeats = _repeats(time.perf_counter() - t0, quick)
    return _median_event_s(run, repeats, cuda), repeats


def capture(fn) -> tuple[torch.cuda.CUDAGraph, object]:
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max over rows of |a - b| / |b| (L2 over the vocabulary)."""
    a, b = a.float(), b.float()
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1).clamp(min=1e-12)).max())


class Session:
    """The run's state: the model built now (one at a time; built once per model) and its compiled
    layer, the device, the compile log."""

    def __init__(self, dev: torch.device, quick: bool, meta: Meta, todo: list[dict]):
        self.dev, self.cuda, self.quick, self.meta = dev, dev.type == "cuda", quick, meta
        self.todo = todo
        self.key, self.engine, self.layer, self.mode = None, None, None, "dynamic"
        # MoE layers route as a trained router spreads tokens (engine_model.routing_table); meta says so
        self.random_routing = True

    def engine_for(self, case: dict) -> em.Engine:
        key = (case["model"], int(case["layers"]), case["dtype"])
        if key != self.key:
            self.release()
            same = [c for c in self.todo if (c["model"], int(c["layers"]), c["dtype"]) == key]
            kv_tokens = max(int(c["batch"]) * s_max_of(c) for c in same)
            max_seq = max(s_max_of(c) for c in same)
            spec = model_spec(case["model"], case["layers"])
            self.engine = em.build(spec, case["dtype"], max_batch=1, max_seq=max_seq, device=self.dev,
                                   kv_tokens=kv_tokens, random_routing=self.random_routing)
            self.key, self.mode = key, "dynamic"
        return self.engine

    def release(self) -> None:
        """Drop the model, its compiled graphs and cached memory before the next model."""
        self.engine, self.layer, self.key = None, None, None
        if hasattr(torch, "_dynamo"):
            torch._dynamo.reset()
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def layer_fn(self):
        if self.layer is None or self.layer.mode != self.mode:
            self.layer = CompiledLayer(self.mode)
        return self.layer

    def measure(self, case: dict) -> dict:
        """Measure one case. A compiler error under dynamic shapes switches this model to static
        shapes and retries the case once; a compiler error under static shapes too marks the model's
        compile broken, and its later torch-compile cases fail at once instead of recompiling."""
        compiled = case["engine"] == "torch-compile"
        if compiled and getattr(self, "static_each", False):
            # a fresh static compile per case: kernels tuned for this case's sizes, not a size hint
            torch._dynamo.reset()
            self.mode, self.layer = "static", None
        if compiled and self.mode == "broken":
            raise RuntimeError("torch.compile failed earlier for this model (dynamic and static); skipped")
        try:
            return self._measure(case)
        except Exception as err:
            if not compiled or not is_compile_error(err):
                raise
            if self.mode == "static":
                self.mode = "broken"
                raise
            print(f"  dynamic-shape compile failed ({one_line(err)[:200]}); retrying with static shapes",
                  file=sys.stderr, flush=True)
            torch._dynamo.reset()
            self.mode, self.layer = "static", None
            row = self._measure(case)
            row["notes"] = (row.get("notes", "") + f"; dynamic failed: {one_line(err)[:150]}").strip("; ")
            return row

    def _measure(self, case: dict) -> dict:
        engine = self.engine_for(case)
        B, T, kv = int(case["batch"]), int(case["q_len"]), int(case["kv_len"])
        past = kv if case["phase"] == "decode" else 0
        tokens = torch.randint(0, engine.spec.vocab_size, (B, T), device=self.dev)
        s_max = s_max_of(case)
        compiled = case["engine"] == "torch-compile"
        layer = self.layer_fn() if compiled else em.layer_forward

        def step():
            return em.step(engine, tokens, past, layer_fn=layer, s_max=s_max)
        with torch.inference_mode():
            out, compile_s, graphs = _warm(step, self.cuda)
            if case["engine"] == "torch-eager" or not self.cuda:
                seconds, repeats = time_steps(step, self.cuda, self.quick)
            else:
                graph, out = capture(step)
                seconds, repeats = time_steps(graph.replay, self.cuda, self.quick)
            row = dict(measured_s=f"{seconds:.9g}", repeats=repeats, s_max=s_max,
                       finite=int(bool(torch.isfinite(out).all())), notes=self._notes(engine))
            if compiled:
                row.update(compile_s=f"{compile_s:.2f}", recompiles=graphs, compile_mode=self.mode)
                if graphs:
                    self.meta.add("compiles", {**{k: case[k] for k in ("model", "layers", "dtype", "phase", "batch")},
                                               "graphs": graphs, "seconds": round(compile_s, 2), "mode": self.mode,
                                               "case_id": case_id(case)})
                if self._compare(case):
                    row.update(compare(out, engine, tokens, past, s_max))
        row["status"] = "ok" if row["finite"] else "nonfinite"
        return row

    def _compare(self, case: dict) -> bool:
        key = (case["phase"], int(case["batch"]), int(case["kv_len"]))
        return key in (QUICK_COMPARE if self.quick else COMPARE)

    @staticmethod
    def _notes(engine: em.Engine) -> str:
        return f"moe={engine.dims.moe_impl}" if engine.dims.experts else ""


def compare(compiled: torch.Tensor, engine: em.Engine, tokens, past: int, s_max: int) -> dict:
    """Compiled logits against eager ones, and both against an fp32 reference of the same weights.
    Through 16-36 random layers the bf16 rounding of either path alone is a few percent (fp8 and
    MoE routing flips: tens of percent), so compiled-vs-eager is judged next to eager-vs-fp32: a
    compiled path as close to fp32 as eager is, is right."""
    eager = em.step(engine, tokens, past, s_max=s_max)
    ref = em.reference_step(engine, tokens, past, s_max=s_max)
    return {"max_rel_err": f"{rel_err(compiled, eager):.3g}", "rel_err_compiled_fp32": f"{rel_err(compiled, ref):.3g}",
            "rel_err_eager_fp32": f"{rel_err(eager, ref):.3g}"}


# -- estimate, summary, main -------------------------------------------------------------------------

def step_guess_s(case: dict) -> float:
    """A rough device time of one step on an H200 (for the run-time estimate only): weights and KV
    over ~4 TB/s, or FLOPs over ~600 TFLOP/s (x2 for fp8 GEMMs), plus ~1 ms of floors."""
    spec = model_spec(case["model"], case["layers"])
    B, T, kv = int(case["batch"]), int(case["q_len"]), int(case["kv_len"])
    byte_per_w = 1 if case["dtype"] == "fp8" else 2
    weights = spec.active_param_count() if B * T <= 8 else spec.param_count()
    moved = weights * byte_per_w + B * (kv + T) * spec.kv_bytes_per_token(16)
    flops = 2 * spec.active_param_count() * B * T + 4 * B * T * (kv + T) * spec.q_dim * spec.n_layers
    t = max(moved / 4e12, flops / (600e12 * (2 if case["dtype"] == "fp8" else 1))) + 1e-3
    return t * (3 if case["engine"] == "torch-eager" and T == 1 else 1)   # eager decode: host-bound


def compile_groups(cases: list[dict]) -> list[tuple]:
    """The graphs a run compiles: per (model, layers, dtype, phase), one for batch 1 and one for
    batch > 1 (dynamo specializes size-1 dims, so batch 1 cannot share the dynamic graph)."""
    groups = [(c["model"], c["layers"], c["dtype"], c["phase"], int(c["batch"]) > 1)
              for c in cases if c["engine"] == "torch-compile"]
    return list(dict.fromkeys(groups))


def estimate_s(cases: list[dict], first_compile_s=15.0, compile_s=8.0, build_s=3.0) -> float:
    """Compiles (see compile_groups; the first pays for warming the compiler), one build per model,
    and per case ~3 warm-up/capture steps plus ~0.2 s of replays (at least 3). Calibrated on an
    H200 (torch 2.11): graphs compiled in 1-11 s (5 s mean), the full grid took 188 s."""
    graphs = len(compile_groups(cases))
    total = (first_compile_s + (graphs - 1) * compile_s if graphs else 0.0)
    total += build_s * len({(c["model"], c["layers"], c["dtype"]) for c in cases})
    for c in cases:
        once = step_guess_s(c)
        total += 3 * once + max(REPLAY_TARGET_S, MIN_REPEATS * once) + 0.1
    return total


def summary(path: Path) -> str:
    if not path.exists():
        return "no rows"
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    head = (f"{'engine':<18}{'model':<22}{'L':>3} {'dtype':<6}{'phase':<8}{'B':>4}{'T':>6}{'S':>7} {'ms':>10} "
            f"{'compile s':>9}  status")
    lines = [head, "-" * len(head)]
    for r in rows:
        ms = f"{float(r['measured_s']) * 1e3:10.3f}" if r.get("measured_s") else f"{'':>10}"
        err = (f" rel_err={r['max_rel_err']} (fp32: {r.get('rel_err_compiled_fp32')} / {r.get('rel_err_eager_fp32')})"
               if r.get("max_rel_err") else "")
        lines.append(f"{r['engine']:<18}{r['model']:<22}{r['layers']:>3} {r['dtype']:<6}{r['phase']:<8}{r['batch']:>4}"
                     f"{r['q_len']:>6}{r['kv_len']:>7} {ms} {r.get('compile_s') or '':>9}  {r['status']}{err}"
                     + (f" {r['error'][:60]}" if r.get("error") else ""))
    return "\n".join(lines)


def device_alive(cuda: bool) -> bool:
    """After a failure: can the device still run a kernel? (An illegal access poisons the context:
    every later case would fail, so the run stops and a rerun resumes in a fresh process.)"""
    if not cuda:
        return True
    try:
        torch.ones(1, device="cuda").add_(1).item()
        torch.cuda.synchronize()
        return True
    except Exception:
        return False


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output directory (steps.csv, meta.json)")
    ap.add_argument("--quick", action="store_true", help="tiny models: a CPU smoke test (all engines on a GPU)")
    ap.add_argument("--limit-s", type=float, default=None, help="start no new case after this many seconds")
    ap.add_argument("--only", default=None, help="run only cases whose case_id matches this regex")
    ap.add_argument("--retry-failed", action="store_true", help="redo cases recorded as failed")
    ap.add_argument("--dry-run", action="store_true", help="print the cases and the estimate, run nothing")
    ap.add_argument("--cpu", action="store_true", help="with --quick: stay on the CPU even if a GPU is present")
    ap.add_argument("--static-each", action="store_true",
                    help="compile every torch-compile case afresh with static shapes (gpt-fast's usage), instead "
                         "of one dynamic-shape graph per model and phase compiled at the first case's size")
    return ap.parse_args(argv)


def setup_env(dev: torch.device) -> dict:
    """Process settings before anything compiles: compile threads, no TF32 (the cache dir and
    thread count env vars are set at import, before torch loads inductor)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if dev.type == "cpu":
        torch.set_num_threads(1)  # small shared CPUs: spinning worker threads time the scheduler
    return configure_compiler(int(os.environ["TORCHINDUCTOR_COMPILE_THREADS"]))


def main(argv=None) -> int:
    args = parse(argv)
    if args.cpu and not args.quick:
        print("measure_engine: --cpu needs --quick", file=sys.stderr)
        return 2
    cuda = torch.cuda.is_available() and not args.cpu
    cases = grid(args.quick, cuda)
    if args.only:
        cases = [c for c in cases if re.search(args.only, case_id(c))]
    path = args.out / "steps.csv"
    repair(path)
    done = done_ids(path, args.retry_failed)
    todo = [c for c in cases if case_id(c) not in done]
    est, graphs = estimate_s(todo), len(compile_groups(todo))
    print(f"measure_engine: {len(todo)} of {len(cases)} cases to run; estimated {est:.0f} s on an H200 "
          f"({graphs} graph compiles of ~8 s each)"
          + (f"; limit {args.limit_s:.0f} s" if args.limit_s else ""), file=sys.stderr, flush=True)
    if args.dry_run:
        for c in todo:
            print(case_id(c))
        return 0
    dev = torch.device("cpu") if args.cpu else bench.script_device(args.quick, "measure_engine")
    if dev is None:
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    compiler = setup_env(dev)
    env = bench.environment()
    meta = Meta(args.out, {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "quick": args.quick, **env,
                           "estimate_s": round(est, 1), "compiler": compiler, "cases_todo": len(todo),
                           "moe_routing": "random, k distinct experts per token (engine_model.routing_table)"})
    meta.data["ceilings"] = ceilings(dev, args.quick)
    meta.write()
    print(f"ceilings: {json.dumps(meta.data['ceilings'])}", file=sys.stderr, flush=True)
    return run(todo, path, dev, args, env, meta)


def run(todo: list[dict], path: Path, dev, args, env: dict, meta: Meta) -> int:
    session = Session(dev, args.quick, meta, todo)
    session.static_each = bool(getattr(args, "static_each", False))
    start, cuda = time.perf_counter(), dev.type == "cuda"
    for i, case in enumerate(todo, 1):
        elapsed = time.perf_counter() - start
        if args.limit_s is not None and elapsed > args.limit_s:
            print(f"measure_engine: time limit {args.limit_s:.0f} s reached after {i - 1} cases; rerun to resume",
                  file=sys.stderr, flush=True)
            break
        row = {**case, **env, "case_id": case_id(case), "s_max": s_max_of(case)}
        try:
            row.update(session.measure(case))
        except Exception as err:  # any failure is data: record it and go on
            row.update(status="failed", error=one_line(err))
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
        row.update(bench.clocks() if cuda else {}, timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"))
        append_row(path, row)
        if cuda:
            torch.cuda.empty_cache()  # the case's graph pool goes back: no fragmentation across shapes
        _progress(i, len(todo), row, time.perf_counter() - start)
        if row["status"] == "failed" and not device_alive(cuda):
            print("measure_engine: the CUDA context is broken; stopping (rerun to resume)", file=sys.stderr)
            return 3
    session.release()
    meta.data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    meta.data["elapsed_s"] = round(time.perf_counter() - start, 1)
    meta.write()
    print(summary(path))
    return 0


def _progress(i: int, n: int, row: dict, elapsed: float) -> None:
    what = f"{row['engine']} {row['model']} L{row['layers']} {row['dtype']} {row['phase']} B={row['batch']} " \
           f"T={row['q_len']} S={row['kv_len']}"
    if row["status"] == "failed":
        result = f"FAILED {row['error'][:160]}"
    else:
        result = f"{float(row['measured_s']) * 1e3:.3f} ms x{row['repeats']}"
        if row.get("recompiles"):
            result += f" (compiled {row['recompiles']} graph(s) in {row['compile_s']} s)"
        if row.get("max_rel_err"):
            result += f" rel_err vs eager {row['max_rel_err']} (vs fp32: compiled {row['rel_err_compiled_fp32']}, " \
                      f"eager {row['rel_err_eager_fp32']})"
        if row["status"] != "ok":
            result += f" [{row['status']}]"
    print(f"[{i:>3}/{n}] {elapsed:6.1f}s {what}: {result}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
