"""Multi-GPU validation: NCCL collective timings and a tensor-parallel Llama step, one process per GPU.

Run on a multi-GPU node (full suite, a few minutes on 8 H200s):

    python -m validate.multigpu --out validate/reports/multigpu/h200x8

and on CPU with gloo (the code paths CI runs, seconds):

    python -m validate.multigpu --backend gloo --quick --world-size 2 --out /tmp/mg

What it measures, each result appended to a CSV in --out as soon as it is known:
- collectives.csv: all_reduce, all_gather (into one tensor), reduce_scatter (from one tensor) and
  all_to_all (single tensor) for sizes 4 KiB .. 1 GiB on the first n GPUs, n = 2 .. world size.
  Sizes follow nccl-tests (perfmodel.collectives docstring). Each case is checked for the right
  result, warmed up, then timed with CUDA events over `inner` back-to-back calls per repeat; the
  median over repeats is taken on each rank and the CSV holds the mean (and min / max) over ranks.
  Before each repeat the group's streams are aligned by a one-element all-reduce and the GPU is
  held for ~1 ms (torch.cuda._sleep) so that the CPU has enqueued the calls before the first one
  runs: the time is the collectives' device time, not Python's launch rate.
- tp_steps.csv: one forward step of a Llama-architecture model with random weights (Megatron-LM
  sharding: column-parallel QKV and gate/up, row-parallel output and down projections, an
  all-reduce after each row-parallel layer), decode (1 new token over a cached context) and
  prefill, at TP = 1 and every TP the head counts allow up to the world size; with and without
  the all-reduces (the difference is the step's communication), eager and CUDA-graph replay.
  The step time is the median over repeats of the slowest rank.
- tp_checks.csv: the TP forward (prefill, then one cached decode step) against the unsharded model
  in fp32: the largest logit difference relative to the largest logit.
- meta.json: devices, torch and NCCL versions, environment, the configuration.

NVLink multicast stays off: NCCL_NVLS_ENABLE=0, TORCH_SYMM_MEM_DISABLE_MULTICAST=1 and
NVSHMEM_DISABLE_NVLS=1 are set before any process group exists, and nothing here allocates
multicast or symmetric memory.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

NO_MULTICAST_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")
KIB = 1024

COLLECTIVE_COLUMNS = ["backend", "device", "world_size", "n_devices", "collective", "nominal_bytes", "size_bytes",
                      "dtype", "repeats", "inner", "time_s", "time_min_s", "time_max_s", "bus_bytes_per_s",
                      "host_s", "correct"]
TP_COLUMNS = ["backend", "device", "model", "n_layers", "d_model", "n_heads", "n_kv_heads", "head_dim", "d_ff",
              "vocab_size", "dtype", "act_bytes", "phase", "batch", "new_tokens", "past", "tp", "comm", "mode",
              "allreduce_bytes", "n_allreduce", "repeats", "time_s", "time_mean_s", "time_min_s", "status"]
CHECK_COLUMNS = ["backend", "model", "tp", "phase", "max_abs_err", "max_rel_err", "tolerance", "ok"]


@dataclass(frozen=True)
class SuiteConfig:
    """Everything a worker needs; built by `config_from_args` (picklable for mp.spawn)."""

    out: str
    backend: str = "nccl"
    world_size: int = 2
    counts: tuple = (2,)
    sizes: tuple = (4 * KIB,)
    collectives: tuple = COLLECTIVES
    repeats: int = 15
    warmup: int = 5
    model: str = "llama-3-8b"
    layers: int = 8
    tiny: bool = False
    tps: tuple = (1, 2)
    decode: tuple = ((1, 1024),)         # (batch, cached context)
    prefill: tuple = ((1, 512),)         # (batch, prompt)
    modes: tuple = ("eager",)
    step_repeats: int = 10
    step_warmup: int = 3
    run_collectives: bool = True
    run_tp: bool = True
    port: int = 29500
    seed: int = 0
    check_tolerance: float = 1e-4


# -- configuration --------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m validate.multigpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="directory for the CSV files and meta.json")
    p.add_argument("--backend", choices=("nccl", "gloo"), default="nccl", help="nccl on GPUs, gloo on CPU")
    p.add_argument("--quick", action="store_true", help="tiny sizes and a tiny model (CI, CPU)")
    p.add_argument("--world-size", type=int, default=0, help="processes (default: all GPUs, or 2 with gloo)")
    p.add_argument("--counts", default="", help="device counts to sweep, e.g. 2,4,8 (default 2..world size)")
    p.add_argument("--min-size", default="4KiB", help="smallest collective payload (default 4KiB)")
    p.add_argument("--max-size", default="1GiB", help="largest collective payload (default 1GiB)")
    p.add_argument("--collectives", default=",".join(COLLECTIVES))
    p.add_argument("--repeats", type=int, default=0, help="timed repeats per case (default 15, quick 3)")
    p.add_argument("--model", default="llama-3-8b", help="catalog name or HF config.json of a Llama-style model")
    p.add_argument("--layers", type=int, default=8, help="decoder layers to build (the step scales with them)")
    p.add_argument("--tp", default="", help="TP degrees, e.g. 1,2,4,8 (default: all the model allows)")
    p.add_argument("--decode", default="", help="decode cases BATCHxCONTEXT (default 1x1024,16x1024,64x1024)")
    p.add_argument("--prefill", default="", help="prefill cases BATCHxPROMPT (default 1x512,1x2048,4x2048)")
    p.add_argument("--modes", default="", help="eager,graph (default both on CUDA, eager on CPU)")
    p.add_argument("--overwrite", action="store_true", help="replace result CSVs already in --out")
    p.add_argument("--skip-collectives", action="store_true")
    p.add_argument("--skip-tp", action="store_true")
    return p.parse_args(argv)


def parse_bytes(text: str, name: str) -> int:
    """'4KiB', '1GiB', '65536' -> bytes (binary prefixes; a bare number is bytes)."""
    units = {"kib": KIB, "mib": KIB ** 2, "gib": KIB ** 3, "b": 1, "": 1}
    t = text.strip().lower().replace(" ", "")
    digits = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = t[len(digits):]
    if unit not in units or not digits.replace(".", "", 1).isdigit():
        raise ValueError(f"{name}: {text!r} is not a size such as 4KiB, 16MiB or 1GiB")
    return int(float(digits) * units[unit])


def size_ladder(lo: int, hi: int) -> tuple:
    """Powers of two from lo to hi inclusive (nccl-tests' -f 2 sweep)."""
    if lo <= 0 or hi < lo:
        raise ValueError(f"sizes: need 0 < min-size <= max-size, got {lo} and {hi}")
    return tuple(2 ** k for k in range(math.ceil(math.log2(lo)), math.floor(math.log2(hi)) + 1))


def _cases(text: str, name: str, default: tuple) -> tuple:
    """'1x1024,16x1024' -> ((1, 1024), (16, 1024)); empty text gives `default`."""
    try:
        cases = tuple(tuple(int(v) for v in item.lower().split("x")) for item in text.split(",") if item.strip())
    except ValueError:
        cases = ((0,),)
    if any(len(c) != 2 or min(c) < 1 for c in cases):
        raise ValueError(f"{name}: {text!r} is not a list of BATCHxTOKENS pairs such as 1x1024,16x1024")
    return cases or default


def _int_list(text: str, name: str) -> tuple:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"{name}: {text!r} is not a comma-separated list of integers") from None


def config_from_args(args, available_gpus: int) -> SuiteConfig:
    """Resolve defaults: world size, counts, sizes, TP degrees and the model scale."""
    world = args.world_size or (available_gpus if args.backend == "nccl" else 2)
    if world < 2:
        raise ValueError(f"world-size: {world} processes; the suite needs at least 2")
    if args.backend == "nccl" and world > available_gpus:
        raise ValueError(f"world-size: {world} processes but only {available_gpus} CUDA devices are visible")
    counts = _int_list(args.counts, "counts") or tuple(range(2, world + 1))
    if any(c < 2 or c > world for c in counts):
        raise ValueError(f"counts: {counts} must lie between 2 and the world size {world}")
    collectives = tuple(c.strip() for c in args.collectives.split(",") if c.strip())
    unknown = [c for c in collectives if c not in COLLECTIVES]
    if unknown:
        raise ValueError(f"collectives: {unknown} not among {COLLECTIVES}")
    quick = args.quick
    sizes = (4 * KIB, 16 * KIB, 64 * KIB) if quick else size_ladder(parse_bytes(args.min_size, "min-size"),
                                                                     parse_bytes(args.max_size, "max-size"))
    modes = tuple(m for m in args.modes.split(",") if m)
    modes = modes or (("eager", "graph") if args.backend == "nccl" else ("eager",))
    if any(m not in ("eager", "graph") for m in modes) or ("graph" in modes and args.backend != "nccl"):
        raise ValueError(f"modes: {modes} must be eager and/or graph (graph needs CUDA, backend nccl)")
    spec = load_spec(args.model, args.layers, quick)
    tps = _int_list(args.tp, "tp") or tuple(t for t in (1, 2, 4, 8) if t <= world and tp_supported(spec, t))
    for t in tps:
        if t > world or not tp_supported(spec, t):
            raise ValueError(f"tp: {t} does not divide {spec.name}'s heads / kv heads / FFN / vocab, "
                             f"or exceeds the world size {world}")
    return SuiteConfig(
        out=str(args.out), backend=args.backend, world_size=world, counts=counts, sizes=sizes,
        collectives=collectives, repeats=args.repeats or (3 if quick else 15), warmup=1 if quick else 5,
        model=args.model, layers=args.layers, tiny=quick, tps=tps,
        decode=_cases(args.decode, "decode", ((2, 8),) if quick else ((1, 1024), (16, 1024), (64, 1024))),
        prefill=_cases(args.prefill, "prefill", ((1, 8),) if quick else ((1, 512), (1, 2048), (4, 2048))),
        modes=modes, step_repeats=3 if quick else 10, step_warmup=1 if quick else 3,
        run_collectives=not args.skip_collectives, run_tp=not args.skip_tp, port=free_port(),
        check_tolerance=1e-5 if args.backend == "gloo" else 1e-4)


def load_spec(name: str, layers: int, tiny: bool):
    """The catalog model with `layers` decoder layers (tiny: same head grouping, toy widths)."""
    import workloads

    spec = workloads.load(name)
    if spec.family not in ("llama", "mistral") or spec.is_moe or spec.is_mla or spec.value_head_dim != spec.head_dim:
        raise ValueError(f"model: {spec.name} ({spec.family}) is not a dense Llama-architecture model "
                         "(value heads as wide as query-key heads)")
    if layers < 1:
        raise ValueError(f"layers: {layers} must be 1 or more")
    spec = dataclasses.replace(spec, n_layers=layers)
    if tiny:
        group = spec.n_heads // spec.n_kv_heads
        spec = dataclasses.replace(spec, n_layers=min(layers, 2), n_kv_heads=2, n_heads=2 * group, head_dim=8,
                                   d_model=16 * group, d_ff=96, vocab_size=256)
    return spec


def tp_supported(spec, tp: int) -> bool:
    """Megatron sharding without kv-head replication: tp divides H, K, F and V."""
    return all(x % tp == 0 for x in (spec.n_heads, spec.n_kv_heads, spec.d_ff, spec.vocab_size))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def disable_multicast() -> None:
    """Force NVLink SHARP / multicast off for NCCL, torch symmetric memory and NVSHMEM."""
    os.environ.update(NO_MULTICAST_ENV)


# -- entry point ----------------------------------------------------------------------------------

def main(argv=None) -> int:
    disable_multicast()
    import torch.multiprocessing as mp

    args = parse_args(argv)
    gpus = torch.cuda.device_count() if args.backend == "nccl" else 0
    if args.backend == "nccl" and gpus < 2:
        raise ValueError(f"backend: nccl needs 2 or more CUDA devices, found {gpus} (use --backend gloo on CPU)")
    cfg = config_from_args(args, gpus)
    prepare_output(cfg, args.overwrite)
    write_meta(cfg)
    start = time.perf_counter()
    # CPU runs fork (children inherit the imported torch: seconds saved per process); CUDA cannot be
    # forked once initialised, so GPU runs spawn fresh interpreters.
    method = "fork" if cfg.backend == "gloo" else "spawn"
    mp.start_processes(_worker, args=(cfg,), nprocs=cfg.world_size, join=True, start_method=method)
    print(f"multigpu: done in {time.perf_counter() - start:.1f} s; results in {cfg.out}")
    return 0


def prepare_output(cfg: SuiteConfig, overwrite: bool) -> None:
    """Create --out; CSVs append per case, so results of an earlier run are never mixed in."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    names = ["collectives.csv"] if cfg.run_collectives else []
    names += ["tp_checks.csv", "tp_steps.csv"] if cfg.run_tp else []
    present = [n for n in names if (out / n).exists()]
    if present and not overwrite:
        raise ValueError(f"out: {cfg.out} already holds {', '.join(present)}; choose another directory or "
                         "pass --overwrite")
    for name in present:
        (out / name).unlink()


def write_meta(cfg: SuiteConfig) -> None:
    meta = {"config": dataclasses.asdict(cfg), "torch": torch.__version__, "python": sys.version.split()[0],
            "env": {k: os.environ.get(k, "") for k in NO_MULTICAST_ENV}, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if cfg.backend == "nccl":
        meta["devices"] = [torch.cuda.get_device_name(i) for i in range(cfg.world_size)]
        version = torch.cuda.nccl.version()  # a tuple in recent torch, an int such as 21805 in older ones
        meta["nccl"] = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
        meta["cuda"] = torch.version.cuda
    (Path(cfg.out) / "meta.json").write_text(json.dumps(meta, indent=2))


class _Ctx:
    """Per-process state: rank, device, dtype, the groups of the first n ranks, CSV output."""

    def __init__(self, rank: int, cfg: SuiteConfig):
        self.rank, self.cfg = rank, cfg
        self.cuda = cfg.backend == "nccl"
        self.device = torch.device("cuda", rank) if self.cuda else torch.device("cpu")
        self.dtype = torch.bfloat16 if self.cuda else torch.float32
        self.device_name = torch.cuda.get_device_name(rank) if self.cuda else "cpu"
        needed = sorted(set(cfg.counts) | {t for t in cfg.tps if t > 1})
        # every rank creates every group, in the same order (torch.distributed requirement)
        self.groups = {n: dist.new_group(list(range(n))) for n in needed}
        self.started = time.perf_counter()

    def log(self, message: str) -> None:
        """Progress on rank 0's stderr, with seconds since the process group came up."""
        if self.rank == 0:
            print(f"[{time.perf_counter() - self.started:7.1f} s] {message}", file=sys.stderr, flush=True)

    def write(self, name: str, columns: list, row: dict) -> None:
        if self.rank != 0:
            return
        path = Path(self.cfg.out) / name
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            if new:
                writer.writeheader()
            writer.writerow({k: row.get(k, "") for k in columns})

    def gather(self, value: float, n: int) -> list:
        """Every rank's `value` (ranks 0..n-1), on every member."""
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        out = [torch.zeros_like(t) for _ in range(n)]
        dist.all_gather(out, t, group=self.groups.get(n))
        return [float(x.item()) for x in out]

    def barrier(self, n: int = 0) -> None:
        """Wait for the device, then for ranks 0..n-1 (all ranks when n is 0)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
        dist.barrier(group=self.groups[n] if n else None)


def _worker(rank: int, cfg: SuiteConfig) -> None:
    disable_multicast()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(cfg.port))
    kwargs = {}
    if cfg.backend == "gloo":  # share the CPU cores: oversubscribed intra-op threads spin against each other
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // cfg.world_size))
    if cfg.backend == "nccl":
        torch.cuda.set_device(rank)
        kwargs["device_id"] = torch.device("cuda", rank)
    try:
        dist.init_process_group(cfg.backend, rank=rank, world_size=cfg.world_size, **kwargs)
    except TypeError:  # torch < 2.3 has no device_id; the communicators then start lazily
        dist.init_process_group(cfg.backend, rank=rank, world_size=cfg.world_size)
    try:
        ctx = _Ctx(rank, cfg)
        if cfg.run_tp:
            run_tp_checks(ctx)
            ctx.log("TP sharding checks done")
        if cfg.run_collectives:
            run_collective_sweep(ctx)
        if cfg.run_tp:
            for mode in cfg.modes:
                run_tp_steps(ctx, mode)
        ctx.barrier()
        ctx.log("all done")
    finally:
        dist.destroy_process_group()


# -- timing ---------------------------------------------------------------------------------------

def time_calls(ctx: _Ctx, fn, repeats: int, inner: int = 1, align=None, head_start: bool = True):
    """(device seconds per call, host seconds per call) of `fn`, one value per repeat.

    CUDA: events around `inner` calls; `align()` runs first (a collective that lines the ranks'
    streams up), then, with `head_start`, ~1 ms of GPU sleep lets the CPU enqueue the calls before
    the first one starts, so the host time is the CPU's cost of issuing a call. CPU backends:
    wall clock after `align()`, and a host time of zero (issuing is not separate from running).
    """
    device, host, events = [], [], []
    for _ in range(repeats):
        if align:
            align()
        if ctx.cuda and head_start:
            torch.cuda._sleep(2_000_000)  # ~1 ms at H200 clocks; only needs to exceed the enqueue time
        if ctx.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        host.append((time.perf_counter() - t0) / inner)
        if ctx.cuda:
            end.record()
            events.append((start, end))
    if not ctx.cuda:
        return host, [0.0] * len(host)
    torch.cuda.synchronize(ctx.device)
    return [s.elapsed_time(e) * 1e-3 / inner for s, e in events], host


def choose_inner(ctx: _Ctx, fn, align, target_s: float = 2e-4, most: int = 32) -> int:
    """Calls per repeat so that one repeat lasts about `target_s` (small messages are ~10 us)."""
    if not ctx.cuda:
        return 1
    probe = statistics.median(time_calls(ctx, fn, 3, 1, align)[0])
    return int(min(most, max(1, round(target_s / max(probe, 1e-7)))))


# -- collectives ----------------------------------------------------------------------------------

def collective_buffers(ctx: _Ctx, name: str, nbytes: int, n: int):
    """(call, fill, check, bytes actually used): buffers of about `nbytes` split evenly over n."""
    elem = torch.tensor([], dtype=ctx.dtype).element_size()
    chunk = max(1, nbytes // (elem * n))
    total = chunk * n
    zeros = lambda k: torch.zeros(k, dtype=ctx.dtype, device=ctx.device)  # noqa: E731
    group, rank = ctx.groups[n], ctx.rank
    expected_sum = n * (n + 1) / 2
    if name == "all_reduce":
        buf = zeros(total)
        call = lambda: dist.all_reduce(buf, group=group)  # noqa: E731
        fill = lambda: buf.fill_(rank + 1)  # noqa: E731
        check = lambda: bool(torch.all(buf == expected_sum))  # noqa: E731
        keep = (buf,)
    elif name == "all_gather":
        out, inp = zeros(total), zeros(chunk)
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # same op, newer name
        call = lambda: gather(out, inp, group=group)  # noqa: E731
        fill = lambda: inp.fill_(rank + 1)  # noqa: E731
        ranks = torch.arange(1, n + 1, device=ctx.device, dtype=ctx.dtype)[:, None]
        check = lambda: bool(torch.all(out.view(n, chunk) == ranks))  # noqa: E731
        keep = (out, inp)
    elif name == "reduce_scatter":
        inp, out = zeros(total), zeros(chunk)
        scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
        call = lambda: scatter(out, inp, group=group)  # noqa: E731
        fill = lambda: inp.fill_(rank + 1)  # noqa: E731
        check = lambda: bool(torch.all(out == expected_sum))  # noqa: E731
        keep = (inp, out)
    else:
        inp, out = zeros(total), zeros(total)
        call = lambda: dist.all_to_all_single(out, inp, group=group)  # noqa: E731
        # chunk j of rank r holds r * n + j + 1, so rank r must receive j * n + r + 1 from rank j
        sent = (rank * n + torch.arange(n, device=ctx.device, dtype=ctx.dtype) + 1)[:, None]
        fill = lambda: inp.view(n, chunk).copy_(sent.expand(n, chunk))  # noqa: E731
        got = (torch.arange(n, device=ctx.device, dtype=ctx.dtype) * n + rank + 1)[:, None]
        check = lambda: bool(torch.all(out.view(n, chunk) == got))  # noqa: E731
        keep = (inp, out)

    def reset():
        for t in keep:
            t.zero_()
    return call, fill, check, reset, total * elem


def run_collective_sweep(ctx: _Ctx) -> None:
    cfg = ctx.cfg
    for name in cfg.collectives:
        for n in cfg.counts:
            if ctx.rank < n:
                for nbytes in cfg.sizes:
                    ctx.write("collectives.csv", COLLECTIVE_COLUMNS, time_collective(ctx, name, nbytes, n))
            ctx.barrier()
            ctx.log(f"{name} on {n} devices done")


def time_collective(ctx: _Ctx, name: str, nbytes: int, n: int) -> dict:
    """Check one collective's result, then time it; the row for collectives.csv."""
    from perfmodel.collectives import measured_bus_bytes_per_s

    call, fill, check, reset, used = collective_buffers(ctx, name, nbytes, n)
    fill()
    call()
    ok = check()
    reset()
    tiny = torch.zeros(1, dtype=ctx.dtype, device=ctx.device)
    align = lambda: dist.all_reduce(tiny, group=ctx.groups[n])  # noqa: E731
    for _ in range(ctx.cfg.warmup):
        call()
    inner = choose_inner(ctx, call, align)
    device, host = time_calls(ctx, call, ctx.cfg.repeats, inner, align)
    times = ctx.gather(statistics.median(device), n)
    host_s = statistics.fmean(ctx.gather(statistics.median(host), n))
    oks = ctx.gather(float(ok), n)
    mean = statistics.fmean(times)
    return {"backend": ctx.cfg.backend, "device": ctx.device_name, "world_size": ctx.cfg.world_size,
            "n_devices": n, "collective": name, "nominal_bytes": nbytes, "size_bytes": used,
            "dtype": str(ctx.dtype).replace("torch.", ""), "repeats": ctx.cfg.repeats, "inner": inner,
            "time_s": mean, "time_min_s": min(times), "time_max_s": max(times),
            "bus_bytes_per_s": float(measured_bus_bytes_per_s(name, used, n, mean)), "host_s": host_s,
            "correct": all(oks)}


# -- tensor-parallel Llama ------------------------------------------------------------------------

@dataclass
class LayerShard:
    """One decoder layer's weights on one rank (x @ W layout: in_features x out_features)."""

    attn_norm: object
    qkv: object        # D x (H/tp + 2 K/tp) d: this rank's q heads, then k heads, then v heads
    o: object          # (H/tp) d x D: row-parallel
    ffn_norm: object
    gate_up: object    # D x 2 F/tp: this rank's gate columns, then its up columns
    down: object       # F/tp x D: row-parallel


@dataclass
class ModelShard:
    """All weights one rank holds; `heads`, `kv_heads` and `ffn` are the local counts."""

    embed: object      # V x D, replicated
    layers: list
    final_norm: object
    lm_head: object    # D x V/tp: column-parallel; logits stay sharded (no gather in the timed step)
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int


def _random(device, dtype, seed: int):
    """rand(*shape, scale): normal weights, std 1/sqrt(fan_in) unless given; the same on every rank
    for the same seed and device type."""
    g = torch.Generator(device=device).manual_seed(seed)

    def rand(*shape, scale=None):
        scale = 1 / math.sqrt(shape[0]) if scale is None else scale
        return (torch.randn(*shape, generator=g, device=device, dtype=torch.float32) * scale).to(dtype)
    return rand


def random_model(spec, tp: int, device, dtype, seed: int) -> ModelShard:
    """Random weights in the shapes one rank holds at tensor parallelism `tp` (tp = 1: the whole
    model). Norm weights are near 1 so activations keep their scale through the layers."""
    rand = _random(device, dtype, seed)
    D, d = spec.d_model, spec.head_dim
    h, k, f = spec.n_heads // tp, spec.n_kv_heads // tp, spec.d_ff // tp
    layers = [LayerShard(attn_norm=1 + rand(D, scale=0.1), qkv=rand(D, (h + 2 * k) * d), o=rand(h * d, D),
                         ffn_norm=1 + rand(D, scale=0.1), gate_up=rand(D, 2 * f), down=rand(f, D))
              for _ in range(spec.n_layers)]
    return ModelShard(embed=rand(spec.vocab_size, D, scale=1.0), layers=layers, final_norm=1 + rand(D, scale=0.1),
                      lm_head=rand(D, spec.vocab_size // tp), heads=h, kv_heads=k, head_dim=d, ffn=f)


def shard_weights(full: ModelShard, tp: int, rank: int) -> ModelShard:
    """This rank's Megatron-LM shard of unsharded weights (Shoeybi et al. 2019, arXiv 1909.08053):
    its query heads, kv heads and FFN columns of the column-parallel QKV and gate/up weights, the
    matching rows of the row-parallel output and down weights, its slice of the vocabulary."""
    d, H, K, width = full.head_dim, full.heads, full.kv_heads, full.ffn
    h, k, f = H // tp, K // tp, width // tp

    def cols(w, *spans):
        return torch.cat([w[:, a:a + n] for a, n in spans], dim=1).contiguous()

    layers = [LayerShard(lw.attn_norm,
                         cols(lw.qkv, (rank * h * d, h * d), (H * d + rank * k * d, k * d),
                              ((H + K) * d + rank * k * d, k * d)),
                         lw.o[rank * h * d:(rank + 1) * h * d].contiguous(), lw.ffn_norm,
                         cols(lw.gate_up, (rank * f, f), (width + rank * f, f)),
                         lw.down[rank * f:(rank + 1) * f].contiguous())
              for lw in full.layers]
    v = full.lm_head.shape[1] // tp
    return ModelShard(full.embed, layers, full.final_norm, cols(full.lm_head, (rank * v, v)), h, k, d, f)


def rms_norm(x, weight, eps: float = 1e-5):
    """RMSNorm (Zhang & Sennrich 2019) computed in fp32 the way transformers' Llama does, so the op
    model's kernel count for it applies: to, pow, mean, add, rsqrt, mul, to, mul."""
    x32 = x.to(torch.float32)
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rope_tables(positions, head_dim: int, device, dtype, theta: float = 500000.0):
    """cos / sin of rotary embeddings (Su et al. 2021, arXiv 2104.09864), rotate-half layout."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = positions.to(torch.float32)[:, None] * inv[None, :]
    emb = torch.cat([angles, angles], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def attention(q, k, v, past: int):
    """Causal GQA attention of the new tokens (q: B x h x T x d) over the cache (k, v: B x kv x S x d).

    Query head i uses kv head i // (h / kv) (Llama's repeat_kv order). A decode step folds each kv
    head's query heads into one head's queries, so K and V are read once, as the cost model
    assumes; prefill uses SDPA's native GQA (enable_gqa), or repeats K and V on older torch."""
    B, h, T, d = q.shape
    kv = k.shape[1]
    if T == 1:
        return F.scaled_dot_product_attention(q.reshape(B, kv, h // kv, d), k, v).reshape(B, h, 1, d)
    if past == 0:
        causal = {"is_causal": True}
    else:  # query t (at position past + t) sees cache positions 0 .. past + t
        seen = torch.arange(k.shape[2], device=q.device)[None, :] <= (past + torch.arange(T, device=q.device))[:, None]
        causal = {"attn_mask": seen}
    if h != kv:
        try:
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **causal)
        except TypeError:  # torch < 2.5
            k, v = k.repeat_interleave(h // kv, dim=1), v.repeat_interleave(h // kv, dim=1)
    return F.scaled_dot_product_attention(q, k, v, **causal)


def new_cache(shard: ModelShard, n_layers: int, batch: int, length: int, device, dtype):
    """Per layer (K, V) of B x kv x length x d, random (zeros would draw less power than real data)."""
    shape = (batch, shard.kv_heads, length, shard.head_dim)
    return [(torch.randn(shape, device=device, dtype=dtype), torch.randn(shape, device=device, dtype=dtype))
            for _ in range(n_layers)]


def tp_forward(w: ModelShard, ids, cache, past: int, reduce):
    """One forward step of `ids` (B x T new tokens) after `past` cached tokens; returns this rank's
    logits of the last token (B x V/tp). `reduce(t)` all-reduces t in place (Megatron's g)."""
    B, T = ids.shape
    d = w.head_dim
    x = w.embed[ids]
    cos, sin = rope_tables(torch.arange(past, past + T, device=ids.device), d, x.device, x.dtype)
    for lw, (kc, vc) in zip(w.layers, cache):
        qkv = rms_norm(x, lw.attn_norm) @ lw.qkv
        q, k, v = qkv.split([w.heads * d, w.kv_heads * d, w.kv_heads * d], dim=-1)
        q = apply_rope(q.view(B, T, w.heads, d).transpose(1, 2), cos, sin)
        kc[:, :, past:past + T] = apply_rope(k.view(B, T, w.kv_heads, d).transpose(1, 2), cos, sin)
        vc[:, :, past:past + T] = v.view(B, T, w.kv_heads, d).transpose(1, 2)
        a = attention(q, kc[:, :, :past + T], vc[:, :, :past + T], past)
        o = a.transpose(1, 2).reshape(B, T, w.heads * d) @ lw.o
        reduce(o)
        x = x + o
        gate, up = (rms_norm(x, lw.ffn_norm) @ lw.gate_up).split([w.ffn, w.ffn], dim=-1)
        y = (torch.nn.functional.silu(gate) * up) @ lw.down
        reduce(y)
        x = x + y
    return rms_norm(x[:, -1], w.final_norm) @ w.lm_head


def _no_reduce(t) -> None:
    return None


def _reducer(ctx: _Ctx, tp: int, comm: bool):
    if tp == 1 or not comm:
        return _no_reduce
    group = ctx.groups[tp]
    return lambda t: dist.all_reduce(t, group=group)


def run_tp_checks(ctx: _Ctx) -> None:
    """TP forward == unsharded forward (fp32), prefill then one cached decode step, per TP degree."""
    cfg = ctx.cfg
    spec = load_spec(cfg.model, cfg.layers, cfg.tiny)
    if not cfg.tiny:  # one layer and a small vocabulary keep the unsharded fp32 copy small
        spec = dataclasses.replace(spec, n_layers=1, vocab_size=2048)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # TF32 rounding would swamp the check's tolerance
    try:
        with torch.inference_mode():
            full = random_model(spec, 1, ctx.device, torch.float32, cfg.seed)
            g = torch.Generator(device="cpu").manual_seed(cfg.seed + 1)
            prompt = torch.randint(0, spec.vocab_size, (2, 5), generator=g).to(ctx.device)
            nxt = torch.randint(0, spec.vocab_size, (2, 1), generator=g).to(ctx.device)
            cache = new_cache(full, spec.n_layers, 2, 6, ctx.device, torch.float32)
            ref = [tp_forward(full, prompt, cache, 0, _no_reduce), tp_forward(full, nxt, cache, 5, _no_reduce)]
            for tp in (t for t in cfg.tps if t > 1 and tp_supported(spec, t)):
                if ctx.rank < tp:
                    _check_one_tp(ctx, spec, full, tp, prompt, nxt, ref)
                ctx.barrier()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32


def _check_one_tp(ctx: _Ctx, spec, full, tp, prompt, nxt, ref) -> None:
    shard = shard_weights(full, tp, ctx.rank)
    cache = new_cache(shard, spec.n_layers, 2, 6, ctx.device, torch.float32)
    reduce = _reducer(ctx, tp, True)
    for phase, ids, past, expected in (("prefill", prompt, 0, ref[0]), ("decode", nxt, 5, ref[1])):
        local = tp_forward(shard, ids, cache, past, reduce)
        parts = [torch.empty_like(local) for _ in range(tp)]
        dist.all_gather(parts, local.contiguous(), group=ctx.groups[tp])
        err = float((torch.cat(parts, dim=-1) - expected).abs().max())
        rel = err / float(expected.abs().max())
        rel = max(ctx.gather(rel, tp))
        err = max(ctx.gather(err, tp))
        ctx.write("tp_checks.csv", CHECK_COLUMNS, {
            "backend": ctx.cfg.backend, "model": spec.name, "tp": tp, "phase": phase, "max_abs_err": err,
            "max_rel_err": rel, "tolerance": ctx.cfg.check_tolerance, "ok": rel <= ctx.cfg.check_tolerance})


def run_tp_steps(ctx: _Ctx, mode: str) -> None:
    """Time decode and prefill steps at every TP degree, with and without the all-reduces."""
    cfg = ctx.cfg
    spec = load_spec(cfg.model, cfg.layers, cfg.tiny)
    cases = [("decode", b, 1, past) for b, past in cfg.decode] + [("prefill", b, p, 0) for b, p in cfg.prefill]
    for tp in cfg.tps:
        if ctx.rank < tp:
            shard = random_model(spec, tp, ctx.device, ctx.dtype, cfg.seed + ctx.rank)
            for case in cases:
                for comm in ((True, False) if tp > 1 else (True,)):
                    ctx.write("tp_steps.csv", TP_COLUMNS, time_tp_step(ctx, spec, shard, tp, case, comm, mode))
            del shard
        ctx.barrier()
        ctx.log(f"TP={tp} {mode} steps done")


def time_tp_step(ctx: _Ctx, spec, shard, tp: int, case, comm: bool, mode: str) -> dict:
    phase, batch, new, past = case
    cfg = ctx.cfg
    g = torch.Generator(device="cpu").manual_seed(cfg.seed)
    ids = torch.randint(0, spec.vocab_size, (batch, new), generator=g).to(ctx.device)
    cache = new_cache(shard, spec.n_layers, batch, past + new, ctx.device, ctx.dtype)
    reduce = _reducer(ctx, tp, comm)
    step = lambda: tp_forward(shard, ids, cache, past, reduce)  # noqa: E731
    status = "ok"
    with torch.inference_mode():
        try:
            if mode == "graph":
                step = capture_graph(step, cfg.step_warmup)
            for _ in range(cfg.step_warmup):
                step()
            align = (lambda: ctx.barrier(tp)) if tp > 1 else (lambda: ctx.cuda and torch.cuda.synchronize(ctx.device))
            median = statistics.median(time_calls(ctx, step, cfg.step_repeats, 1, align, head_start=False)[0])
        except RuntimeError as err:  # e.g. graph capture unsupported by this torch / NCCL
            median, status = float("nan"), f"error: {str(err).splitlines()[0][:160]}"
    per_rank = ctx.gather(median, tp) if tp > 1 else [median]
    if any(math.isnan(t) for t in per_rank):
        per_rank = [float("nan")]
    act_bytes = torch.tensor([], dtype=ctx.dtype).element_size()
    del cache
    return {"backend": cfg.backend, "device": ctx.device_name, "model": spec.name, "n_layers": spec.n_layers,
            "d_model": spec.d_model, "n_heads": spec.n_heads, "n_kv_heads": spec.n_kv_heads,
            "head_dim": spec.head_dim, "d_ff": spec.d_ff, "vocab_size": spec.vocab_size,
            "dtype": str(ctx.dtype).replace("torch.", ""), "act_bytes": act_bytes, "phase": phase,
            "batch": batch, "new_tokens": new, "past": past, "tp": tp, "comm": int(comm), "mode": mode,
            "allreduce_bytes": batch * new * spec.d_model * act_bytes if tp > 1 and comm else 0,
            "n_allreduce": 2 * spec.n_layers if tp > 1 and comm else 0, "repeats": cfg.step_repeats,
            "time_s": max(per_rank), "time_mean_s": statistics.fmean(per_rank), "time_min_s": min(per_rank),
            "status": status}


def capture_graph(step, warmup: int):
    """Capture `step` into a CUDA graph (collectives included) and return its replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(max(warmup, 1)):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as err:
        print(f"multigpu: error: {err}", file=sys.stderr)
        sys.exit(2)
