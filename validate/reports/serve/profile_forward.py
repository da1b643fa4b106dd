"""Kernel-by-kernel device time of the serving loop's captured forwards beside the engine model's
compiled step at the same shape: where the loop's extra per-forward cost goes.

    python validate/reports/serve/profile_forward.py --out DIR [--buckets decode_1,prefill_16,...]
        [--loop-compile dynamic,static] [--sources loop,engine] [--engine-context N] [--time-limit-s S]
    python validate/reports/serve/profile_forward.py --device cpu --quick --out DIR   # smoke, seconds

Why: ref_loop.py's forwards replay 0.9 ms (decode, batch 1) to 3.7 ms (decode, batch 128) slower
than measure_engine.py's compiled steps, which the `torch-compile` engine profile is calibrated on
(validate/reports/serve/h200/meta.json `forward_s` against validate/reports/engine/h200). Both
compile ONE decoder-layer function called once per layer and replay the whole forward from one
CUDA graph; they differ in what the layer does (the loop: per-token RoPE rows, an index_put cache
write at (row, position), masked SDPA over the whole static cache row with the GQA heads folded
into the query rows, the prefill's gather of its cache row, the mask built per forward) and in how
it is compiled (the loop: torch.compile(dynamic=True), every dim symbolic; the engine: only batch,
tokens and context marked dynamic).

Sources (one row per source and forward in summary.csv):
  loop-<compile>  ref_loop.Runner built exactly as ref_loop.py builds it (ref_loop.parse defaults,
                  --compile <compile>), capturing only the requested buckets (Runner.prepare); each
                  captured graph is replayed under torch.profiler.
  engine          measure_engine's torch-compile step (model_spec, engine_model.build,
                  CompiledLayer("dynamic"), engine_model.step, captured by measure_engine.capture) at
                  the same batch / token count: decode_B is B sequences at context --engine-context
                  (default S_max - 2 of the loop, so its unmasked SDPA reads as many keys as the
                  loop's masked one); prefill_T is T tokens from position 0 (causal, no cache
                  history), as the engine profile prices a prefill.

Per forward: every kernel name, launches and device time per forward (torch.profiler, CUDA
activity; the kernels inside a CUDA graph replay are recorded on recent CUDA; if none are, the same
forward runs uncaptured and `how` says `direct`), grouped per layer: `scope` is `layer` when the
launches are a multiple of the layer count (then calls_per_layer / device_us_per_layer divide by
it), else `forward` (embedding, mask, final norm, LM head). summary.csv adds the replay wall time
(CUDA events, median), the kernels' summed device time, the span from the first kernel's start to
the last one's end, idle = span - busy (gaps between graph nodes), device time per kernel
category (gemm, attention, triton, copy, other) and the SM clock read after the forward (NVML;
the engine report saw it drop from 1980 to 1230 MHz under long prefills). At the end the run
prints, per forward, each loop source minus the engine (`compare`). On the CPU (--device cpu) the profiler lists CPU
ops with their self time instead (no graphs there).

Output (DIR, written as each forward finishes; a rerun skips every (source, forward) already in
summary.csv with status ok): kernels.csv (source, forward, kernel, calls, device_us, ...),
summary.csv, log.txt.
"""
from __future__ import annotations

import argparse
import csv
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repo root, when run as a script

from validate.runner import append_records  # noqa: E402

KERNEL_COLUMNS = ("source", "forward", "kernel", "calls", "device_us", "scope", "calls_per_layer",
                  "device_us_per_layer", "category")
SUMMARY_COLUMNS = ("source", "forward", "phase", "batch", "tokens", "context", "layers", "how", "status",
                   "kernels", "kernels_per_layer", "device_us", "layer_us", "layer_us_per_layer", "outside_us",
                   "replay_us", "span_us", "idle_us", "gemm_us", "attention_us", "triton_us", "copy_us",
                   "other_us", "warm_s", "sm_clock_mhz", "error")
CATEGORIES = ("gemm", "attention", "triton", "copy", "other")
#: the brief's buckets: decode at 1 (floors), 32, 128 (attention-heavy); prefill 16, 128 (floors
#: under a mask over the whole row), 2048 (the control: within 1.4% of the engine profile)
DEFAULT_BUCKETS = "decode_1,decode_32,decode_128,prefill_16,prefill_128,prefill_2048"
QUICK_BUCKETS = "decode_1,decode_4,prefill_16,prefill_32"
#: CPU smoke: a tiny model and a small loop (ref_loop's own smoke settings)
QUICK_LOOP_ARGS = ["--min-prompt", "20", "--max-prompt", "100", "--min-output", "3", "--max-output", "6",
                   "--max-slots", "4", "--token-budget", "64"]


# -- pure parts -------------------------------------------------------------------------------------

def parse_buckets(text: str) -> list[tuple[str, int]]:
    """'decode_1,prefill_16' -> [('decode', 1), ('prefill', 16)]."""
    out = []
    for part in text.split(","):
        phase, _, size = part.strip().partition("_")
        if phase not in ("decode", "prefill") or not size.isdigit() or int(size) < 1:
            raise ValueError(f"--buckets: {part!r} is not decode_<batch> or prefill_<tokens> (a whole number >= 1)")
        out.append((phase, int(size)))
    if len(set(out)) != len(out):
        raise ValueError(f"--buckets: {text!r} names a bucket twice")
    return out


def category(name: str) -> str:
    """Kernel family from its name (CUDA kernels or CPU aten ops): attention first (cuDNN's and
    CUTLASS's fused attention names also contain gemm-like words), then GEMMs, inductor's triton
    kernels, copies / indexing, other."""
    n = name.lower()
    if any(k in n for k in ("sdpa", "fmha", "flash", "attention", "cudnn", "attn")):
        return "attention"
    if any(k in n for k in ("gemm", "nvjet", "cutlass", "xmma", "gemv", "cublas", "aten::mm", "aten::addmm",
                            "aten::bmm", "aten::linear", "aten::matmul")):
        return "gemm"
    if n.startswith("triton"):
        return "triton"
    if any(k in n for k in ("memcpy", "memset", "copy", "index", "gather", "scatter", "aten::cat", "fill")):
        return "copy"
    return "other"


def layer_rows(table: dict[str, tuple[float, float]], layers: int) -> list[dict]:
    """kernels.csv rows of one forward from {name: (launches, device us) per forward}, most time
    first. A kernel launched a whole number k >= 1 of times per layer is `layer` scope (k per
    layer, its time / layers per layer); one launched more often but not a multiple (k per layer
    plus some outside the layers, e.g. a GEMM kernel the LM head shares) is `mixed`: k per layer
    and the share k * layers / launches of its time, assuming equal-time launches (approximate);
    fewer launches than layers is `forward` scope (embedding, mask, final norm, LM head)."""
    rows = []
    for name, (calls, us) in sorted(table.items(), key=lambda kv: -kv[1][1]):
        whole = int(calls // layers + 1e-9)
        share = whole * layers / calls if calls else 0.0
        scope = "forward" if whole == 0 else ("layer" if abs(share - 1) < 1e-9 else "mixed")
        rows.append(dict(kernel=name, calls=f"{calls:g}", device_us=f"{us:.3f}", scope=scope,
                         calls_per_layer=f"{whole:g}" if whole else "",
                         device_us_per_layer=f"{us * share / layers:.3f}" if whole else "",
                         category=category(name)))
    return rows


def summarize(rows: list[dict], layers: int) -> dict:
    """summary.csv's kernel columns from one forward's kernels.csv rows: launches and device time
    in all, per layer (layer and mixed scope rows' per-layer parts) and outside the layers."""
    total = sum(float(r["device_us"]) for r in rows)
    per_layer_us = sum(float(r["device_us_per_layer"] or 0) for r in rows)
    layer_us = per_layer_us * layers
    out = dict(kernels=f"{sum(float(r['calls']) for r in rows):g}",
               kernels_per_layer=f"{sum(float(r['calls_per_layer'] or 0) for r in rows):g}",
               device_us=f"{total:.3f}", layer_us=f"{layer_us:.3f}", layer_us_per_layer=f"{per_layer_us:.3f}",
               outside_us=f"{total - layer_us:.3f}")
    for c in CATEGORIES:
        out[f"{c}_us"] = f"{sum(float(r['device_us']) for r in rows if r['category'] == c):.3f}"
    return out


def median_span_us(intervals: list[tuple[float, float]], runs: int) -> float:
    """Median over `runs` back-to-back forwards of (last kernel end - first kernel start), from the
    kernels' (start, end) in us sorted by start and cut into runs of equal count; nan when the
    count does not divide."""
    if not intervals or len(intervals) % runs:
        return float("nan")
    ivs = sorted(intervals)
    n = len(ivs) // runs
    return statistics.median(max(e for _, e in ivs[i * n:(i + 1) * n]) - ivs[i * n][0] for i in range(runs))


# -- profiling ----------------------------------------------------------------------------------------

def profile_table(fn, runs: int, cuda: bool) -> tuple[dict[str, tuple[float, float]], float]:
    """({kernel name (160 characters at most): (launches, device us) per call of fn}, median span
    us) from torch.profiler over `runs` calls, synchronized after each. CUDA: the device kernels
    (memcpy / memset included); CPU: every op with its self CPU time (nested ops not counted
    twice), span nan."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    with profile(activities=acts) as prof:
        for _ in range(runs):
            fn()
            if cuda:
                torch.cuda.synchronize()
    table: dict[str, list] = {}
    if not cuda:
        for e in prof.key_averages():
            table[e.key[:160]] = [e.count, e.self_cpu_time_total]
        return {k: (c / runs, us / runs) for k, (c, us) in table.items()}, float("nan")
    intervals = []
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            entry = table.setdefault(e.name[:160], [0, 0.0])
            entry[0] += 1
            entry[1] += e.device_time_total
            intervals.append((e.time_range.start, e.time_range.end))
    return {k: (c / runs, us / runs) for k, (c, us) in table.items()}, median_span_us(intervals, runs)


def replay_us(fn, cuda: bool, repeats: int) -> float:
    """Median wall us of fn (CUDA events back to back; measure_engine's timer)."""
    from validate.reports.engine import measure_engine as me
    return me._median_event_s(fn, repeats, cuda) * 1e6


def measure(fn, direct, layers: int, cuda: bool, runs: int) -> tuple[list[dict], dict]:
    """kernels.csv rows and summary columns of one forward: fn (a graph replay, or the forward
    itself on the CPU) under the profiler; if a replay shows fewer kernels than layers (the graph's
    nodes not recorded: at most the replay's own prologue fills), `direct` (the same forward
    uncaptured) is profiled instead."""
    table, span = profile_table(fn, runs, cuda)
    how = "replay" if cuda else "direct-cpu"
    if cuda and sum(c for c, _ in table.values()) < layers:  # graph nodes not recorded (at most the prologue)
        table, span = profile_table(direct, runs, cuda)
        how = "direct"
    rows = layer_rows(table, layers)
    wall = replay_us(fn, cuda, max(runs, 5))
    busy = sum(us for _, us in table.values())
    from validate import bench
    clock = bench.clocks().get("sm_clock_mhz", "") if cuda else ""  # a throttled clock stretches kernels
    info = dict(how=how, replay_us=f"{wall:.3f}", span_us=f"{span:.3f}", sm_clock_mhz=clock,
                idle_us=f"{span - busy:.3f}" if span == span else "", **summarize(rows, layers))
    return rows, info


def line(source: str, forward: str, info: dict) -> str:
    """One forward's log line: launches, busy / replay / idle time, the big families."""
    ms = {k: float(info[k]) / 1e3 for k in ("device_us", "replay_us", "attention_us", "gemm_us", "triton_us",
                                             "copy_us")}
    return (f"{source} {forward}: {info['kernels']} kernels ({info['kernels_per_layer']}/layer), busy "
            f"{ms['device_us']:.3f} ms, replay {ms['replay_us']:.3f} ms, idle {info['idle_us'] or '-'} us; "
            f"attention {ms['attention_us']:.3f}, gemm {ms['gemm_us']:.3f}, triton {ms['triton_us']:.3f}, "
            f"copy {ms['copy_us']:.3f} ms")


def compare(summary: list[dict]) -> list[str]:
    """Per forward, each loop source minus the engine (ms): replay, busy (kernels' device time),
    idle (span - busy), the families, outside the layers; and kernels per layer (loop / engine).
    What the differences mean for the fix: validate/reports/serve/README.md."""
    ok = [r for r in summary if r.get("status") == "ok"]
    engine = {r["forward"]: r for r in ok if r["source"] == "engine"}
    cols = ("replay_us", "device_us", "idle_us", "attention_us", "gemm_us", "triton_us", "copy_us", "other_us",
            "outside_us")
    out = [f"{'loop - engine, ms':<32}" + "".join(f"{'busy' if c == 'device_us' else c[:-3]:>10}" for c in cols) + f"{'kern/layer':>12}"]
    for r in ok:
        e = engine.get(r["forward"])
        if r["source"] == "engine" or e is None:
            continue

        def delta(c):
            return f"{(float(r[c]) - float(e[c])) / 1e3:10.3f}" if r[c] and e[c] else f"{'-':>10}"
        out.append(f"{r['source'] + ' ' + r['forward']:<32}" + "".join(delta(c) for c in cols)
                   + f"{r['kernels_per_layer'] + ' / ' + e['kernels_per_layer']:>12}")
    return out


# -- output -------------------------------------------------------------------------------------------

def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _write(path: Path, rows: list[dict], columns) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        w.writerows(rows)


def resume(out: Path) -> set[tuple[str, str]]:
    """(source, forward) pairs done (status ok); drops every other forward's rows from both files
    (a killed run's half-written forward, a failure to retry)."""
    summary = _read(out / "summary.csv")
    done = {(r["source"], r["forward"]) for r in summary if r.get("status") == "ok"}
    if summary:
        _write(out / "summary.csv", [r for r in summary if (r["source"], r["forward"]) in done], SUMMARY_COLUMNS)
    kernels = _read(out / "kernels.csv")
    if kernels:
        _write(out / "kernels.csv", [r for r in kernels if (r["source"], r["forward"]) in done], KERNEL_COLUMNS)
    return done


class Log:
    """Prints and appends to DIR/log.txt."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, *parts, flush=True):
        text = " ".join(str(p) for p in parts)
        print(text, flush=True)
        with self.path.open("a") as f:
            f.write(text + "\n")


# -- the two sources ------------------------------------------------------------------------------------

def loop_args(args, compile_mode: str):
    """ref_loop's own argument namespace (its defaults, the model and compile mode asked for)."""
    from validate.reports.serve import ref_loop as rl
    argv = ["--out", str(args.out), "--device", args.device, "--compile", compile_mode, "--dtype", args.dtype]
    if args.model:
        argv += ["--model", args.model]
    if args.layers:
        argv += ["--layers", str(args.layers)]
    return rl.parse(argv + (QUICK_LOOP_ARGS if args.quick else []))


def run_loop(args, compile_mode: str, buckets, done, write, log, deadline) -> None:
    """Build ref_loop's Runner as ref_loop.main does, capture the requested buckets only, profile
    each replay."""
    import workloads
    from validate.reports.serve import ref_loop as rl
    source = f"loop-{compile_mode}" + ("" if args.sdpa == "auto" else f"-{args.sdpa}")
    todo = [(p, s) for p, s in buckets if (source, f"{p}_{s}") not in done]
    if not todo:
        log(f"{source}: all done, skipped")
        return
    largs = loop_args(args, compile_mode)
    if largs.layers is None:
        largs.layers = workloads.load(largs.model).n_layers
    runner = rl.Runner(largs, log=log)
    missing = [f"{p}_{s}" for p, s in todo if s not in (runner.decode_sizes if p == "decode" else runner.prefill_sizes)]
    if missing:
        raise SystemExit(f"profile_forward: --buckets: {', '.join(missing)} not captured by the loop (decode sizes "
                         f"{list(runner.decode_sizes)}, prefill sizes {list(runner.prefill_sizes)})")
    # capture only what is profiled: prepare() walks these two tuples
    runner.decode_sizes = tuple(s for p, s in todo if p == "decode")
    runner.prefill_sizes = tuple(s for p, s in todo if p == "prefill")
    log(f"{source}: {largs.model}, {largs.layers} layers, S_max {runner.s_max}; warming {len(todo)} forwards")
    with sdpa_backend(args.sdpa):  # the backend is chosen when the forward is traced / captured
        profile_loop(runner, largs, source, todo, write, log, deadline, args.runs)


def sdpa_backend(name: str):
    """A context restricting SDPA to one backend (torch.nn.attention.sdpa_kernel); 'auto' leaves
    PyTorch's choice (cuDNN for the loop's masked attention on an H200, meta.json sdpa_backend)."""
    import contextlib
    if name == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([{"efficient": SDPBackend.EFFICIENT_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                         "flash": SDPBackend.FLASH_ATTENTION, "math": SDPBackend.MATH}[name]])


def profile_loop(runner, largs, source, todo, write, log, deadline, runs) -> None:
    """Capture the buckets in `todo` (Runner.prepare) and profile each replay."""
    import torch
    try:
        runner.prepare()
    except Exception as err:  # a compiler failure is data
        for p, s in todo:
            write(dict(source=source, forward=f"{p}_{s}", phase=p, status="failed",
                       error=f"{type(err).__name__}: {err}".replace("\n", " ")[:300]), [])
        log(f"{source}: prepare failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
        return
    if time.perf_counter() > deadline:
        log(f"{source}: past --time-limit-s before profiling; rerun to resume")
        return
    profile_table(lambda: None, 1, runner.cuda)  # the profiler's first use initializes CUPTI: not timed
    for p, s in todo:
        g, buf, _ = runner.graphs[(p, s)]

        def direct(p=p, buf=buf):
            with torch.inference_mode():
                return runner._forward(p, buf)
        fn = g.replay if g is not None else direct
        rows, info = measure(fn, direct, largs.layers, runner.cuda, runs)
        B, T = (s, 1) if p == "decode" else (1, s)
        write(dict(source=source, forward=f"{p}_{s}", phase=p, batch=B, tokens=T, context=runner.s_max,
                   layers=largs.layers, status="ok", warm_s=f"{runner.warmup[f'{p}_{s}']:.2f}", **info), rows)
        log(line(source, f"{p}_{s}", info))


def run_engine(args, buckets, done, write, log) -> None:
    """measure_engine's compiled whole-model step at each bucket's batch / tokens (module doc)."""
    import torch
    import workloads
    from validate import engine_model as em
    from validate.reports.engine import measure_engine as me
    source = "engine"
    todo = [(p, s) for p, s in buckets if (source, f"{p}_{s}") not in done]
    if not todo:
        log(f"{source}: all done, skipped")
        return
    cuda = args.device == "cuda"
    dev = torch.device(args.device)
    model = args.model or ("llama-3-8b" if cuda else "llama-3-8b-tiny")
    layers = args.layers or workloads.load(model).n_layers
    ctx = args.engine_context or (args.s_max - 2)

    def case(p, s):  # measure_engine's case fields: kv_len is the context S (decode reads S + 1)
        return dict(phase=p, batch=s if p == "decode" else 1, q_len=1 if p == "decode" else s,
                    kv_len=ctx if p == "decode" else s)
    cases = {(p, s): case(p, s) for p, s in todo}
    spec = me.model_spec(model, layers)
    engine = em.build(spec, args.dtype, max_batch=1, max_seq=max(me.s_max_of(c) for c in cases.values()),
                      device=dev, kv_tokens=max(c["batch"] * me.s_max_of(c) for c in cases.values()))
    compiled = args.compile_engine
    layer = me.CompiledLayer("dynamic") if compiled else em.layer_forward
    log(f"{source}: {model}, {layers} layers, decode context {ctx}, {'compiled' if compiled else 'eager'}")
    for (p, s), c in cases.items():
        B, T = c["batch"], c["q_len"]
        past = c["kv_len"] if p == "decode" else 0
        tokens = torch.randint(0, spec.vocab_size, (B, T), device=dev)
        s_max = me.s_max_of(c)

        def step(tokens=tokens, past=past, s_max=s_max):
            with torch.inference_mode():
                return em.step(engine, tokens, past, layer_fn=layer, s_max=s_max)
        row = dict(source=source, forward=f"{p}_{s}", phase=p, batch=B, tokens=T, context=past + T, layers=layers)
        try:
            t = time.perf_counter()
            with torch.inference_mode():
                me._warm(step, cuda)
                fn = me.capture(step)[0].replay if cuda else step
            row["warm_s"] = f"{time.perf_counter() - t:.2f}"
            rows, info = measure(fn, step, layers, cuda, args.runs)
        except Exception as err:  # a failure is data: record it and go on
            write({**row, "status": "failed", "error": f"{type(err).__name__}: {err}".replace("\n", " ")[:300]}, [])
            log(f"{source} {p}_{s}: FAILED {type(err).__name__}: {str(err).splitlines()[0][:200]}")
            continue
        write({**row, "status": "ok", **info}, rows)
        log(line(source, f"{p}_{s}", info))


def release(cuda: bool) -> None:
    """Drop compiled graphs and cached memory before the next source (a second torch.compile of
    the same function would otherwise reuse the first one's cache entries)."""
    import torch
    import torch._dynamo
    torch._dynamo.reset()
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--quick", action="store_true", help="tiny model, small loop, CPU-sized buckets (smoke)")
    p.add_argument("--model", default=None, help="default llama-3-8b (cuda), llama-3-8b-tiny (cpu)")
    p.add_argument("--layers", type=int, default=None, help="default: the model's own (2 with --quick)")
    p.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    p.add_argument("--buckets", default=None, help=f"default {DEFAULT_BUCKETS} ({QUICK_BUCKETS} with --quick)")
    p.add_argument("--sources", default="loop,engine", help="loop and/or engine")
    p.add_argument("--loop-compile", default=None,
                   help="ref_loop --compile modes to profile, comma separated (dynamic, static, none); "
                        "default dynamic (cuda), none (cpu)")
    p.add_argument("--sdpa", default="auto", choices=("auto", "efficient", "cudnn", "flash", "math"),
                   help="restrict the loop's SDPA to one backend (source loop-<compile>-<sdpa>); the engine keeps auto")
    p.add_argument("--engine-context", type=int, default=None,
                   help="decode context of the engine step (default: the loop's S_max - 2)")
    p.add_argument("--runs", type=int, default=5, help="forwards per profile (device times are per forward)")
    p.add_argument("--time-limit-s", type=float, default=1e9, help="start no new source after this many seconds")
    a = p.parse_args(argv)
    try:
        a.bucket_list = parse_buckets(a.buckets or (QUICK_BUCKETS if a.quick else DEFAULT_BUCKETS))
        a.source_list = [s.strip() for s in a.sources.split(",")]
        bad = [s for s in a.source_list if s not in ("loop", "engine")]
        if bad or not a.source_list:
            raise ValueError(f"--sources: {a.sources!r} must list loop and/or engine")
        a.loop_modes = [m.strip() for m in (a.loop_compile or ("dynamic" if a.device == "cuda" else "none")).split(",")]
        bad = [m for m in a.loop_modes if m not in ("dynamic", "static", "none")]
        if bad:
            raise ValueError(f"--loop-compile: {bad[0]!r} is not one of dynamic, static, none")
        if a.layers is not None and not 1 <= a.layers <= 1000:
            raise ValueError(f"--layers: {a.layers} is outside the allowed range 1..1000")
        if not 1 <= a.runs <= 100:
            raise ValueError(f"--runs: {a.runs} is outside the allowed range 1..100")
        if a.engine_context is not None and not 1 <= a.engine_context <= 1 << 20:
            raise ValueError(f"--engine-context: {a.engine_context} is outside the allowed range 1..1048576")
        if not a.time_limit_s > 0:
            raise ValueError(f"--time-limit-s: {a.time_limit_s} must be a positive number of seconds")
    except ValueError as err:
        p.error(str(err))
    if a.quick and a.layers is None:
        a.layers = 2
    # the engine side compiles as measure_engine does on the GPU; on the CPU it runs eager (as the
    # loop does there: ref_loop's CPU default), so the smoke takes seconds
    a.compile_engine = a.device == "cuda"
    return a


def main(argv=None) -> int:
    args = parse(argv)
    import torch
    from validate.reports.engine import measure_engine as me
    if args.device == "cuda" and not torch.cuda.is_available():
        print("profile_forward: no CUDA device; use --device cpu --quick for the smoke test", file=sys.stderr)
        return 2
    start = time.perf_counter()
    deadline = start + args.time_limit_s
    args.out.mkdir(parents=True, exist_ok=True)
    log = Log(args.out / "log.txt")
    # measure_engine's compiler settings (no autotune, inductor's own cudagraphs off, recompile limit
    # 64: ref_loop.main raises the same limit) apply to both sources
    me.setup_env(torch.device(args.device))
    done = resume(args.out)
    log(f"profile_forward: torch {torch.__version__}, "
        f"{torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'}; buckets "
        f"{','.join(f'{p}_{s}' for p, s in args.bucket_list)}; {len(done)} forwards already done")

    def write(summary: dict, rows: list[dict]) -> None:
        append_records(args.out / "kernels.csv", [dict(source=summary["source"], forward=summary["forward"], **r)
                                           for r in rows], KERNEL_COLUMNS)
        append_records(args.out / "summary.csv", [{k: summary.get(k, "") for k in SUMMARY_COLUMNS}], SUMMARY_COLUMNS)

    from validate.reports.serve import ref_loop as rl
    la = loop_args(args, "none")
    args.s_max = rl.cache_tokens(la.max_prompt, la.max_output)  # the loop's S_max (Runner's own)
    for mode in args.loop_modes if "loop" in args.source_list else []:
        if time.perf_counter() > deadline:
            log(f"loop-{mode}: skipped, past --time-limit-s {args.time_limit_s:g} s (rerun resumes)")
            continue
        run_loop(args, mode, args.bucket_list, done, write, log, deadline)
        release(args.device == "cuda")  # the Runner is gone with run_loop's frame
    if "engine" in args.source_list:
        if time.perf_counter() > deadline:
            log(f"engine: skipped, past --time-limit-s {args.time_limit_s:g} s (rerun resumes)")
        else:
            run_engine(args, args.bucket_list, done, write, log)
            release(args.device == "cuda")
    for text in compare(_read(args.out / "summary.csv")):
        log(text)
    log(f"profile_forward: done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
