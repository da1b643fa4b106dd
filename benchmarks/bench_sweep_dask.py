"""Speed of a ~1e7-scenario sweep: in-process vs Dask on a LocalCluster of this machine's cores.

    python benchmarks/bench_sweep_dask.py            # 10,444,800 scenarios (~2 min on 2 cores)
    python benchmarks/bench_sweep_dask.py --quick    # 261,120 scenarios, a smoke run

The sweep (4 models x 4 devices x batch 1..B x 17 prompts x 5 generation lengths x 3 weight widths
x 2 KV widths x 4 TP degrees) keeps only each chunk's Pareto front and counts (keep="front"), so
memory stays bounded by the chunk size on every path. Each path runs the same spec, chunking and
reduction; the script checks that their counts and fronts are identical.

Reported: wall seconds and scenarios/s per path, and CPU seconds (all worker processes plus this
one, which hosts the client and the LocalCluster's scheduler), which stay meaningful when other
processes share the cores; Dask's overhead with one worker against the in-process
path (same single core: the pure cost of scheduling, serialising and returning chunks); the
n-worker cluster's speed-up and its overhead against ideal n-core scaling (n x time / in-process
time - 1). Cluster start-up is timed apart from the sweep.

Like for like: LocalCluster workers run with the glibc malloc thresholds of
`planning.sweep_dask.MALLOC_ENV` (measured 8x fewer page faults than distributed's defaults), so
the script re-runs itself with the same settings for the in-process path unless --glibc-defaults
is given (then the in-process path pays glibc's defaults, about 10-20% more CPU here).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import pandas as pd

from planning import sweep, sweep_dask

MODELS = ["llama-3-8b", "qwen3-8b", "llama-3.1-70b", "qwen3-30b-a3b"]
DEVICES = ["h200-sxm", "h100-sxm", "a100-80gb-sxm", "l40s"]


def bench_spec(batch_max: int) -> sweep.SweepSpec:
    return sweep.grid(
        model=MODELS, hardware=DEVICES,
        batch={"start": 1, "stop": batch_max, "step": 1},
        prompt={"start": 128, "stop": 32768, "num": 17, "log": True},
        gen=[64, 128, 256, 512, 1024], w_bits=[4, 8, 16], kv_bits=[8, 16], tp=[1, 2, 4, 8],
        constraints=["fits", "ttft_s <= 5", "tpot_s <= 0.1"],
        pareto="throughput_per_device_tok_s:max,tpot_s:min")


def timed_local(spec, chunk_rows: int):
    """Wall and CPU seconds of the in-process path."""
    _warm_up(spec)
    t0, c0 = time.perf_counter(), time.process_time()
    result = sweep.run(spec, chunk_rows=chunk_rows, keep="front", collect=False)
    return result, time.perf_counter() - t0, (time.process_time() - c0, time.process_time() - c0)


def timed_dask(spec, chunk_rows: int, workers: int | None, scheduler: str | None):
    """Wall seconds of the sweep (cluster already up), of the start-up, and CPU seconds of the
    workers plus this process (client and, for a LocalCluster, the scheduler)."""
    t0 = time.perf_counter()
    with sweep_dask.connect(scheduler=scheduler, n_workers=workers) as client:
        client.wait_for_workers(1 if scheduler else workers)
        client.run(_warm_up, spec)  # imports and first calls on every worker: start-up, not sweep
        start_s = time.perf_counter() - t0
        cpu0, c0, t1 = client.run(time.process_time), time.process_time(), time.perf_counter()
        result = sweep_dask.run(spec, client=client, chunk_rows=chunk_rows, keep="front", collect=False)
        run_s = time.perf_counter() - t1
        cpu1, c1 = client.run(time.process_time), time.process_time()
        threads = sum(client.nthreads().values())
    workers_cpu = sum(cpu1[w] - cpu0[w] for w in cpu1 if w in cpu0)
    return result, run_s, start_s, (workers_cpu + (c1 - c0), c1 - c0), threads


_SPEC = None  # the spec, inherited by forked processes (Hardware holds mappingproxies: no pickle)


def _block(bounds: tuple[int, int], chunk_rows: int) -> list:
    lo, hi = bounds
    return [sweep.run_chunk(_SPEC, a, min(a + chunk_rows, hi), "front") for a in range(lo, hi, chunk_rows)]


def timed_processes(spec, chunk_rows: int, workers: int):
    """The baseline for n cores without Dask: n forked processes, each sweeping a contiguous 1/n of
    the chunks; fronts merged here. Its speed-up is what the hardware allows."""
    import multiprocessing
    from functools import partial

    global _SPEC
    _SPEC = spec
    parts = sweep.chunks(spec, chunk_rows)
    per = -(-len(parts) // workers)
    blocks = [(parts[i][0], parts[min(i + per, len(parts)) - 1][1]) for i in range(0, len(parts), per)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.map(_warm_up_forked, range(workers))
        t0 = time.perf_counter()
        results = pool.map(partial(_block, chunk_rows=chunk_rows), blocks)
        seconds = time.perf_counter() - t0
    collector = sweep.Collector(spec, "front", collect=False)
    for chunk in (c for block in results for c in block):
        collector.add(chunk)
    return collector.finish(), seconds


def _warm_up_forked(_) -> None:
    _warm_up(_SPEC)


def _warm_up(spec) -> None:
    """Imports (numpy, pandas, the cost model) and first-call caches, paid once per process."""
    sweep.run_chunk(spec, 0, 1, "front")


def same(a: sweep.SweepResult, b: sweep.SweepResult) -> bool:
    if (a.rows, a.feasible_rows) != (b.rows, b.feasible_rows):
        return False
    try:
        pd.testing.assert_frame_equal(a.front, b.front)
    except AssertionError:
        return False
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 1..8 (261,120 scenarios)")
    parser.add_argument("--batch-max", type=int, default=320, help="batch 1..B; rows = 32,640 x B")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="LocalCluster worker processes")
    parser.add_argument("--chunk-rows", type=int, default=sweep.DEFAULT_CHUNK_ROWS)
    parser.add_argument("--scheduler", help="tcp://host:port of an existing cluster instead of a LocalCluster")
    parser.add_argument("--skip-single", action="store_true", help="skip the 1-worker overhead run")
    parser.add_argument("--glibc-defaults", action="store_true",
                        help="run the in-process path without the workers' malloc settings")
    args = parser.parse_args(argv)
    missing = {k: str(v) for k, v in sweep_dask.MALLOC_ENV.items() if os.environ.get(k) != str(v)}
    if missing and not args.glibc_defaults and argv is None:
        os.execve(sys.executable, [sys.executable] + sys.argv, {**os.environ, **missing})  # glibc reads them at start
    print(f"in-process malloc: {'glibc defaults' if missing else 'same settings as the workers'}")
    spec = bench_spec(8 if args.quick else args.batch_max)
    print(f"sweep: {spec.describe()}; chunks of {args.chunk_rows:,} rows; {os.cpu_count()} cores")

    local, local_s, local_cpu = timed_local(spec, args.chunk_rows)
    rows = [("in-process", 1, None, local_s, local_cpu)]
    print(f"  in-process done: {local_s:.1f} s; {local.feasible_rows:,} feasible, front {len(local.front)} rows")
    checks = []
    if not args.skip_single and not args.scheduler:
        one, one_s, one_start, one_cpu, _ = timed_dask(spec, args.chunk_rows, 1, None)
        rows.append(("dask LocalCluster", 1, one_start, one_s, one_cpu))
        checks.append(same(local, one))
    if not args.scheduler and args.workers > 1:
        plain, plain_s = timed_processes(spec, args.chunk_rows, args.workers)
        checks.append(same(local, plain))
    many, many_s, many_start, many_cpu, threads = timed_dask(spec, args.chunk_rows, args.workers, args.scheduler)
    rows.append(("dask " + ("scheduler" if args.scheduler else "LocalCluster"), threads, many_start, many_s, many_cpu))
    checks.append(same(local, many))

    print(f"\n{'path':<20}{'workers':>8}{'start s':>9}{'sweep s':>9}{'scenarios/s':>13}{'vs in-proc':>11}"
          f"{'CPU s':>8}{'(here)':>8}{'CPU vs in-proc':>16}")
    for name, workers, start, seconds, (cpu, here) in rows:
        started = f"{start:.1f}" if start is not None else "-"
        print(f"{name:<20}{workers:>8}{started:>9}{seconds:>9.1f}{spec.size / seconds:>13,.0f}"
              f"{local_s / seconds:>10.2f}x{cpu:>8.1f}{here:>8.1f}{100 * (cpu / local_cpu[0] - 1):>+15.1f}%")
    print("CPU s: all worker processes plus this one; (here): this process alone (client, and the "
          "LocalCluster's scheduler and nannies)")
    if not args.skip_single and not args.scheduler:
        print(f"\nDask overhead, 1 worker vs in-process (same core): {100 * (rows[1][3] / local_s - 1):+.1f}% wall, "
              f"{100 * (rows[1][4][0] / local_cpu[0] - 1):+.1f}% CPU")
    print(f"Dask overhead, {threads} workers vs ideal {threads}-core scaling: "
          f"{100 * (threads * many_s / local_s - 1):+.1f}% wall (speed-up {local_s / many_s:.2f}x), "
          f"{100 * (many_cpu[0] / local_cpu[0] - 1):+.1f}% CPU")
    if not args.scheduler and args.workers > 1:
        print(f"{args.workers} plain forked processes, no Dask: {plain_s:.1f} s ({spec.size / plain_s:,.0f} scenarios/s, "
              f"speed-up {local_s / plain_s:.2f}x: what these cores allow); Dask vs them: "
              f"{100 * (many_s / plain_s - 1):+.1f}% wall")
    print(f"load average during the run (other processes share these cores): {os.getloadavg()[0]:.1f}")
    print(f"results identical to the in-process run: {'yes' if all(checks) else 'NO'}")
    return 0 if all(checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
