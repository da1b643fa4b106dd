"""Torch micro-benchmarks for the validation suite (the only place besides validate/ helpers that
imports torch). Times each case on the local device (CUDA if present, else CPU).

Method (see the device notes' METHOD.md and Triton's do_bench): warm up, then time each repeat with
CUDA events queued back to back (no host sync between repeats), take the median; cases marked
timing="graph" are instead captured into a CUDA graph and timed by replays (`time_graphed`: device
time with no host dispatch, as graphed engines run); inputs rotate among enough copies to exceed the L2 cache several times, so weights
and KV come from HBM as in a real model step. Random data, never zeros.
"""
from __future__ import annotations

import math
import statistics
import sys
import threading
import time
from typing import Callable

import torch
import torch.nn.functional as F

from validate import kinds

L2_BYTES = 60e6  # H200 has 60 MB of L2 (measured via torch.cuda.get_device_properties on the device)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def script_device(quick: bool, script: str, smoke_test: bool = True) -> torch.device | None:
    """Where a measurement script runs: the GPU, or the CPU for a --quick smoke test. A full run
    without a GPU says so and gets None (its caller exits with code 2); `smoke_test` False for
    scripts that have no --quick."""
    dev = torch.device("cpu") if quick and not torch.cuda.is_available() else device()
    if not quick and dev.type != "cuda":
        hint = "; use --quick for the CPU smoke test" if smoke_test else ""
        print(f"{script}: no CUDA device{hint}", file=sys.stderr)
        return None
    return dev


def copies_to_defeat_cache(bytes_per_set: float, cuda: bool) -> int:
    """How many input sets to rotate through so their total is at least 3x the L2 (at most 32)."""
    if not cuda:
        return 2
    return int(min(32, max(1, -(-3 * L2_BYTES // max(bytes_per_set, 1)))))


def time_callable(fn: Callable[[int], object], cuda: bool, min_repeats: int = 10, max_repeats: int = 200,
                  target_s: float = 0.1) -> tuple[float, int]:
    """Median seconds of fn(i) over repeats (i rotates input sets); returns (median, repeats)."""
    for i in range(3):
        fn(i)
    _sync(cuda)
    start = time.perf_counter()
    fn(3)
    _sync(cuda)
    once = max(time.perf_counter() - start, 1e-6)
    repeats = int(min(max_repeats, max(min_repeats, target_s / once)))
    if cuda:
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(repeats)]
        for i, (a, b) in enumerate(events):
            a.record()
            fn(i)
            b.record()
        torch.cuda.synchronize()
        times = [a.elapsed_time(b) / 1e3 for a, b in events]
    else:
        times = []
        for i in range(repeats):
            t0 = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - t0)
    return statistics.median(times), repeats


def time_graphed(fn: Callable[[int], object], calls: int | None = None, target_s: float = 0.05,
                 min_replays: int = 5, max_replays: int = 50) -> tuple[float, int]:
    """Median device seconds of one fn(i) call timed inside CUDA-graph replays: `calls` calls
    (rotating input sets, as `time_callable`) are captured back to back into one graph, each replay
    is timed with events, and the median replay is divided by `calls`.

    This is how a CUDA-graphed serving engine issues kernels (vLLM, TensorRT-LLM, SGLang decode;
    torch.compile mode="reduce-overhead"): no host dispatch between kernels, only the device's own
    launch gap, so rates and floors fitted on these times carry no per-kernel host cost. Calls per
    graph default to 32 (at least one pass over every input set, so weights and KV come from HBM)
    and to about 20 ms of work for kernels slower than a millisecond."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # lazy initialisation (handles, workspaces) before capture
        for i in range(3):
            fn(i)
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn(3)
    torch.cuda.synchronize()
    once = max(time.perf_counter() - start, 1e-6)
    calls = calls or (32 if once < 1e-3 else int(max(2, min(32, 0.02 / once))))
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(calls):
            fn(i)
    graph.replay()
    torch.cuda.synchronize()
    replays = int(min(max_replays, max(min_replays, target_s / (calls * once))))
    return median_replay_s(graph, replays) / calls, replays * calls


def median_replay_s(graph, replays: int) -> float:
    """Median seconds of `replays` replays of a captured CUDA graph, each timed with CUDA events
    queued back to back (no host sync between replays)."""
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(replays)]
    for a, b in events:
        a.record()
        graph.replay()
        b.record()
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) / 1e3 for a, b in events)


def _sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


def _randn(shape, dtype, dev):
    return torch.randn(shape, device=dev, dtype=torch.float32).to(dtype)


# -- one builder per case kind: returns fn(i) to time --------------------------------------------

def build_matmul(case: dict, dev: torch.device):
    m, n, k, dtype = int(case["m"]), int(case["n"]), int(case["k"]), case["dtype"]
    cuda = dev.type == "cuda"
    if dtype == "fp8":
        sets = copies_to_defeat_cache(n * k + m * k, cuda)
        a = [_randn((m, k), torch.bfloat16, dev).to(torch.float8_e4m3fn) for _ in range(sets)]
        b = [_randn((n, k), torch.bfloat16, dev).to(torch.float8_e4m3fn) for _ in range(sets)]
        one = torch.ones((), device=dev, dtype=torch.float32)
        return lambda i: torch._scaled_mm(a[i % sets], b[i % sets].t(), scale_a=one, scale_b=one,
                                          out_dtype=torch.bfloat16)
    t = DTYPES[dtype]
    size = torch.finfo(t).bits // 8
    sets = copies_to_defeat_cache((n * k + m * k) * size, cuda)
    a = [_randn((m, k), t, dev) for _ in range(sets)]
    b = [_randn((k, n), t, dev) for _ in range(sets)]
    return lambda i: torch.mm(a[i % sets], b[i % sets])


def build_matmul_wo(case: dict, dev: torch.device):
    """Weight-only quantized GEMM with bf16 activations: torch's packed int4 (tinygemm) and int8 kernels."""
    m, n, k, w_bits = int(case["m"]), int(case["n"]), int(case["k"]), int(case["w_bits"])
    cuda = dev.type == "cuda"
    sets = copies_to_defeat_cache(n * k * w_bits / 8, cuda)
    x = [_randn((m, k), torch.bfloat16, dev) for _ in range(sets)]
    if w_bits == 8:
        w = [torch.randint(-128, 127, (n, k), device=dev, dtype=torch.int8) for _ in range(sets)]
        scales = [torch.rand(n, device=dev, dtype=torch.bfloat16) + 0.5 for _ in range(sets)]
        return lambda i: torch._weight_int8pack_mm(x[i % sets], w[i % sets], scales[i % sets])
    group = int(case["group"])
    packed, sz = [], []
    for _ in range(sets):
        q = torch.randint(0, 256, (n, k // 2), device=dev, dtype=torch.uint8)
        packed.append(torch._convert_weight_to_int4pack(q, 8))
        sz.append(torch.rand((k // group, n, 2), device=dev, dtype=torch.bfloat16))
    return lambda i: torch._weight_int4pack_mm(x[i % sets], packed[i % sets], group, sz[i % sets])


def build_attention(case: dict, dev: torch.device):
    b, h, kv = int(case["batch"]), int(case["heads"]), int(case["kv_heads"])
    q_len, kv_len, d = int(case["q_len"]), int(case["kv_len"]), int(case["head_dim"])
    t = DTYPES[case["dtype"]]
    cuda = dev.type == "cuda"
    sets = copies_to_defeat_cache(2 * b * kv * kv_len * d * 2, cuda)
    kk = [_randn((b, kv, kv_len, d), t, dev) for _ in range(sets)]
    vv = [_randn((b, kv, kv_len, d), t, dev) for _ in range(sets)]
    if static_cache_attention(case):
        # gpt-fast's static cache: the G = h / kv query heads of a KV head folded into its rows
        # ([b, kv, G q_len, d]) and SDPA over all kv_len positions under an additive mask (zeros
        # here: the kernel reads the whole bias and scores every position whatever its values)
        q = [_randn((b, kv, (h // kv) * q_len, d), t, dev) for _ in range(sets)]
        bias = torch.zeros((b, 1, (h // kv) * q_len, kv_len), device=dev, dtype=t)
        return lambda i: F.scaled_dot_product_attention(q[i % sets], kk[i % sets], vv[i % sets], attn_mask=bias)
    q = [_randn((b, h, q_len, d), t, dev) for _ in range(sets)]
    causal = case["phase"] == "prefill"
    return lambda i: F.scaled_dot_product_attention(q[i % sets], kk[i % sets], vv[i % sets], is_causal=causal,
                                                    enable_gqa=h != kv)


def static_cache_attention(case: dict) -> bool:
    """Whether an attention case names an engine profile whose kernels attend a masked static cache
    (perfmodel.engines: an attention family "sdpa-masked")."""
    from perfmodel import engines

    engine = str(case.get("engine") or "")
    engine = "" if engine == "nan" else engine
    return bool(engine) and engines.load(engine).attention_kernel("decode").startswith("sdpa-masked")


def build_copy(case: dict, dev: torch.device):
    n = int(case["bytes"])
    direction, pinned = case["direction"], bool(int(case["pinned"]))
    if direction == "d2d":
        sets = copies_to_defeat_cache(n, dev.type == "cuda")
        src = [torch.randint(0, 255, (n,), device=dev, dtype=torch.uint8) for _ in range(sets)]
        dst = torch.empty(n, device=dev, dtype=torch.uint8)
        return lambda i: dst.copy_(src[i % sets])
    # Copy speed does not depend on the bytes, and filling gigabytes on the host is slow: host
    # buffers stay uninitialised (the device buffer is random).
    host = torch.empty(n, dtype=torch.uint8, pin_memory=pinned)
    gpu = torch.randint(0, 255, (n,), device=dev, dtype=torch.uint8)
    if direction == "h2d":
        return lambda i: gpu.copy_(host, non_blocking=pinned)
    return lambda i: host.copy_(gpu, non_blocking=pinned)


def build_elementwise(case: dict, dev: torch.device):
    n, t = int(case["elements"]), DTYPES[case["dtype"]]
    sets = copies_to_defeat_cache(2 * n * 2, dev.type == "cuda")
    a = [_randn((n,), t, dev) for _ in range(sets)]
    b = [_randn((n,), t, dev) for _ in range(sets)]
    if case["op"] == "add":
        out = torch.empty(n, device=dev, dtype=t)
        return lambda i: torch.add(a[i % sets], b[i % sets], out=out)
    return lambda i: F.silu(a[i % sets]) * b[i % sets]   # eager SwiGLU as transformers writes it


def build_norm(case: dict, dev: torch.device):
    tokens, width, t = int(case["tokens"]), int(case["width"]), DTYPES[case["dtype"]]
    sets = copies_to_defeat_cache(tokens * width * 2, dev.type == "cuda")
    x = [_randn((tokens, width), t, dev) for _ in range(sets)]
    weight = torch.ones(width, device=dev, dtype=t)
    if case["op"] == "layernorm":
        bias = torch.zeros(width, device=dev, dtype=t)
        return lambda i: F.layer_norm(x[i % sets], (width,), weight, bias)

    def rmsnorm(i):  # transformers' LlamaRMSNorm, op for op
        h = x[i % sets].to(torch.float32)
        variance = h.pow(2).mean(-1, keepdim=True)
        h = h * torch.rsqrt(variance + 1e-5)
        return weight * h.to(t)
    return rmsnorm


def build_kv_append(case: dict, dev: torch.device):
    """torch.cat of a cache and one new token along the sequence, as DynamicCache.update does."""
    b, kv, s, d = (int(case[k]) for k in ("batch", "kv_heads", "kv_len", "head_dim"))
    t = DTYPES[case["dtype"]]
    sets = copies_to_defeat_cache(b * kv * s * d * 2, dev.type == "cuda")
    cache = [_randn((b, kv, s, d), t, dev) for _ in range(sets)]
    new = _randn((b, kv, 1, d), t, dev)
    return lambda i: torch.cat([cache[i % sets], new], dim=-2)


def build_launch(case: dict, dev: torch.device):
    """`kernels` tiny adds replayed from a CUDA graph: the device-side floor of a kernel, with no
    host dispatch in the way (graphs are what fused serving stacks replay)."""
    kernels = int(case["kernels"])
    a = _randn((256,), torch.float32, dev)
    b = _randn((256,), torch.float32, dev)
    out = torch.empty_like(a)
    if dev.type != "cuda":
        def loop(i):
            for _ in range(kernels):
                torch.add(a, b, out=out)
        return loop
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        torch.add(a, b, out=out)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(kernels):
            torch.add(a, b, out=out)
    return lambda i: graph.replay()


def build_model_step(case: dict, dev: torch.device):
    """A transformers Llama-architecture model from a catalog config with random weights, eager."""
    from validate.models import build_model_step as build
    return build(case, dev)


def kernel_times(fn: Callable[[int], object], dev: torch.device, calls: int,
                 name_chars: int = 160) -> dict[str, tuple[float, float]]:
    """Per kernel name (its first `name_chars` characters): launches and microseconds per fn(i)
    call, from torch.profiler over `calls` un-graphed calls (device durations on a GPU, not the
    gaps between kernels; on a CPU the top-level ops' CPU time). The caller warms fn first."""
    activities = [torch.profiler.ProfilerActivity.CPU] + \
        ([torch.profiler.ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with torch.profiler.profile(activities=activities) as prof:
        for i in range(calls):
            fn(i)
        if dev.type == "cuda":
            torch.cuda.synchronize()
    totals: dict[str, list[float]] = {}
    for evt in prof.events():
        on_device = dev.type == "cuda" and evt.device_type == torch.autograd.DeviceType.CUDA
        top_level_cpu = dev.type != "cuda" and evt.device_type == torch.autograd.DeviceType.CPU and not evt.cpu_parent
        if on_device or top_level_cpu:
            t = totals.setdefault(evt.name[:name_chars], [0.0, 0.0])
            t[0] += 1
            t[1] += evt.device_time if on_device else evt.cpu_time
    return {name: (n / calls, us / calls) for name, (n, us) in totals.items()}


#: Graphs dynamo may compile per function before it gives up: the suite compiles one function
#: (engine_model.moe, quantize_fp8) at every case's shape, 30 MoE layers among them.
RECOMPILE_LIMIT = 256


def raise_recompile_limit(limit: int = RECOMPILE_LIMIT) -> dict:
    """Lift dynamo's per-function recompile limit and make hitting it an error. Past the default
    limit (8) dynamo silently runs the function eagerly: on the H200 the suite's MoE cases after
    the 8th ran as ~29 eager kernels instead of 12-15 compiled ones (validate/diagnostics/
    profile_moe.py), which put the fitted routing floor at 89 us where compiled layers take 27-33.
    Returns the settings, for a run's meta.json."""
    settings = {"recompile_limit": limit, "cache_size_limit": limit, "fail_on_recompile_limit_hit": True}
    for key, value in settings.items():
        if hasattr(torch._dynamo.config, key):
            setattr(torch._dynamo.config, key, value)
    return settings


def compile_case(fn, dynamic: bool):
    """torch.compile for a suite case, with the recompile limit lifted (raise_recompile_limit)."""
    raise_recompile_limit()
    return torch.compile(fn, dynamic=dynamic)


def build_act_quant(case: dict, dev: torch.device):
    """Per-tensor dynamic fp8 quantization of a tokens x width bf16 activation (an amax reduction
    over the whole tensor, then scale-and-cast), compiled by torch.compile with dynamic shapes as
    the compiled engine step runs it (validate/engine_model.quantize_fp8)."""
    from validate import engine_model as em

    tokens, width = int(case["tokens"]), int(case["width"])
    sets = copies_to_defeat_cache(tokens * width * 2, dev.type == "cuda")
    x = [_randn((tokens, width), torch.bfloat16, dev) for _ in range(sets)]
    fn = compile_case(em.quantize_fp8, dynamic=True) if dev.type == "cuda" else em.quantize_fp8
    return lambda i: fn(x[i % sets])


def build_moe(case: dict, dev: torch.device):
    """One MoE layer as validate/engine_model runs it (router, top-k, tokens sorted by expert,
    torch._grouped_mm gate-up and down, weighted scatter back), compiled by torch.compile."""
    from validate import engine_model as em

    tokens, experts, top_k = int(case["tokens"]), int(case["experts"]), int(case["top_k"])
    hidden, inter = int(case["hidden"]), int(case["inter"])
    t = torch.bfloat16 if dev.type == "cuda" else torch.float32
    w = {"router": _randn((experts, hidden), t, dev) * 0.02, "w13": _randn((experts, 2 * inter, hidden), t, dev) * 0.02,
         "w2": _randn((experts, hidden, inter), t, dev) * 0.02}
    grouped = dev.type == "cuda" and em.grouped_mm_works(dev, t)
    dims = em.Dims(heads=1, kv_heads=1, head_dim=hidden, eps=1e-6, qk_norm=False, experts=experts, top_k=top_k,
                   moe_impl="grouped" if grouped else "loop")
    h = _randn((tokens, hidden), t, dev)
    fn = compile_case(em.moe, dynamic=False) if grouped else em.moe
    return lambda i: fn(h, w, dims)


def builder(case: dict):
    """The function of this module that builds a case's timed callable (its kind's record names it)."""
    kind = kinds.of(case)
    if not kind.build:
        raise ValueError(f"kind: {kind.name!r} cases are not measured by this suite (only imported from others' tables)")
    return globals()[kind.build]


def measure(case: dict, dev: torch.device) -> tuple[float, int]:
    """Median seconds of one case on `dev` and the repeats used.

    Whole-model steps in eager PyTorch are bound by the host, whose timing is noisy: they get more
    repeats (about a second's worth, at least 20) and run with Python's garbage collector paused."""
    import gc

    cuda = dev.type == "cuda"
    fn = builder(case)(case, dev)
    step = kinds.of(case).host_bound
    graphed = cuda and case.get("timing") == "graph"
    gc.collect()
    gc.disable()
    try:
        with torch.inference_mode():
            if graphed:
                return time_graphed(fn)
            return time_callable(fn, cuda, min_repeats=20 if step else 10, target_s=1.0 if step else 0.05)
    finally:
        gc.enable()


def environment() -> dict:
    """Device name, versions and clocks, recorded with every measurement."""
    dev = device()
    env = {"device_type": dev.type, "torch": torch.__version__, "device_name": "cpu", "driver": "",
           "cuda": torch.version.cuda or ""}
    if dev.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(0)
        try:
            import pynvml

            pynvml.nvmlInit()
            env["driver"] = pynvml.nvmlSystemGetDriverVersion()
        except Exception:  # clocks and driver are best effort: nvml may be absent
            pass
    else:
        import platform

        env["device_name"] = platform.processor() or platform.machine()
    return env


def clocks() -> dict:
    """SM and memory clocks (MHz) right now, where NVML can read them."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        return {"sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
                "mem_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM)}
    except Exception:  # no NVML (CPU runs, or not installed)
        return {"sm_clock_mhz": "", "mem_clock_mhz": ""}


# -- board power under sustained load -----------------------------------------------------------

def energy_counter():
    """NVML's board energy counter (J since the driver loaded; exact over any interval, unlike
    nvmlDeviceGetPowerUsage, a ~1 s moving average), or None where pynvml is missing."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        return lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3
    except Exception:  # no pynvml or no counter on this board: fall back to power samples
        return None


def sustained_power(fn, seconds: float) -> dict:
    """Board power under sustained load: `fn` called back to back for `seconds`; over the second half
    (the board at its steady clock) the energy counter's increase over the elapsed time (W), the time
    per call (s, the rate under load), the energy per call (J), and the SM clock at the end. Without
    the counter, the mean of torch.cuda.power_draw() samples over that half (NVML's moving average)."""
    empty = {"power_w": math.nan, "sustained_s": math.nan, "energy_j": math.nan, "sm_clock_mhz": "", "power_source": ""}
    if seconds <= 0 or not torch.cuda.is_available():
        return empty
    try:
        torch.cuda.power_draw()
    except Exception:  # no NVML on this machine: power is optional
        return empty
    counter = energy_counter()
    readings, stop = [], threading.Event()

    def poll():
        while not stop.is_set():
            readings.append((time.perf_counter(), torch.cuda.power_draw() / 1e3))
            time.sleep(0.02)

    thread = threading.Thread(target=poll, daemon=True)
    start = time.perf_counter()
    thread.start()
    i, mark = 0, None
    while time.perf_counter() - start < seconds:
        fn(i)
        i += 1
        if i % 4 == 0:
            torch.cuda.synchronize()
            if mark is None and time.perf_counter() - start >= seconds / 2:
                mark = (time.perf_counter(), i, counter() if counter else math.nan)
    torch.cuda.synchronize()
    end = (time.perf_counter(), i, counter() if counter else math.nan)
    stop.set()
    thread.join()
    if mark is None or end[1] <= mark[1]:
        return empty
    elapsed, calls = end[0] - mark[0], end[1] - mark[1]
    if counter:
        power, source = (end[2] - mark[2]) / elapsed, "nvml_energy_counter"
    else:
        half = [p for t, p in readings if t >= mark[0]]
        power, source = (statistics.mean(half) if half else math.nan), "nvml_power_samples"
    return {"power_w": power, "sustained_s": elapsed / calls, "energy_j": power * elapsed / calls,
            "sm_clock_mhz": str(clocks().get("sm_clock_mhz", "")), "power_source": source}
