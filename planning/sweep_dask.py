"""The same sweep on Dask (dask.distributed): chunks become futures on a cluster, results identical.

Without a scheduler address a LocalCluster of this machine's cores starts in-process (one worker
process per core, one thread each: `evaluate` is numpy-bound and holds the GIL between ufuncs, so
processes scale where threads would not). With ``scheduler="tcp://host:8786"`` the chunks run on
that cluster, whose workers must have this package installed.

Each chunk is `planning.sweep.run_chunk` on an index range, and row i depends only on the spec and
i, so the rows are the local run's rows. Chunk results are put back in sweep order before they are
written, and a bounded window of chunks in flight keeps the client's memory bounded. dask is an
optional dependency: it is imported inside functions only.

Workers should not run with distributed's default ``MALLOC_TRIM_THRESHOLD_=65536``: setting it
freezes glibc's mmap threshold at 128 KiB, so every array of a 1e5-row chunk is mmapped and
page-faulted afresh (measured here: 5x the minor page faults and about 2x the CPU time per chunk).
LocalClusters started here set the glibc malloc thresholds in `MALLOC_ENV` instead; for your own
cluster, set them in the workers' dask config under ``distributed.nanny.pre-spawn-environ``.
"""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager

from planning import sweep
from planning.sweep import DEFAULT_CHUNK_ROWS, SweepError, SweepResult, SweepSpec


def run(spec: SweepSpec, scheduler: str | None = None, client=None, n_workers: int | None = None,
        chunk_rows: int = DEFAULT_CHUNK_ROWS, keep: str = "all", path=None, csv_path=None,
        collect: bool = True, progress: bool = False, window: int | None = None,
        scheduler_timeout_s: float = 10.0) -> SweepResult:
    """Run `spec` on Dask; same arguments and result as `planning.sweep.run`.

    client: an existing `distributed.Client` (left open); else scheduler: an address to connect to;
    else a LocalCluster of `n_workers` processes (default: all cores) is started and closed here.
    window: most chunks submitted ahead of the next one to be written (default 4 per worker thread).
    scheduler_timeout_s: how long to try to reach `scheduler` before giving up.
    """
    sweep.prepare(spec)
    parts = sweep.chunks(spec, chunk_rows)
    with connect(scheduler, client, n_workers, scheduler_timeout_s) as dask_client, sweep.progress_bar(spec.size, progress) as bar:
        collector = sweep.Collector(spec, keep, path, csv_path, collect)  # timed from here: not the cluster start
        for chunk in _ordered_results(dask_client, spec, parts, keep, window):
            collector.add(chunk)
            bar.update(chunk.rows)
    return collector.finish()


@contextmanager
def connect(scheduler: str | None = None, client=None, n_workers: int | None = None, timeout_s: float = 10.0):
    """Yield a Client: the one given, one connected to `scheduler`, or one on a new LocalCluster."""
    if client is not None:
        yield client
        return
    try:
        from distributed import Client
    except ImportError:
        raise SweepError("dask: the distributed package is not installed; pip install 'perfmodel[sweep]'") from None
    if scheduler:
        try:
            dask_client = Client(scheduler, timeout=f"{timeout_s}s")
        except (OSError, TimeoutError) as err:
            raise SweepError(f"scheduler {scheduler!r}: cannot connect ({err})") from None
        with dask_client:
            yield dask_client
        return
    with local_cluster(n_workers) as dask_client:
        yield dask_client


@contextmanager
def local_cluster(n_workers: int | None = None):
    """A Client on a new LocalCluster: `n_workers` processes (default: all cores), one thread each."""
    import dask
    from distributed import Client, LocalCluster

    workers = n_workers or os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SweepError(f"n_workers: {n_workers!r} must be a whole number >= 1")
    with _without_env(MALLOC_ENV), dask.config.set(LOCAL_CLUSTER_CONFIG):  # read when servers start
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, Client(cluster) as dask_client:
        yield dask_client


#: glibc malloc settings for worker processes: arrays up to 64 MiB come from the heap, and up to
#: 64 MiB of freed heap is kept for the next chunk instead of going back to the OS and being
#: page-faulted in again. Measured on a 2.6e6-row sweep (20 chunks, one worker): distributed's
#: default (trim threshold 64 KiB) 0.50 s system time and 261k minor page faults; these 0.06-0.08 s
#: and 35k, for 46 MB more resident memory (296 MB against 250 MB).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": 1 << 26, "MALLOC_TRIM_THRESHOLD_": 1 << 26, "MALLOC_TOP_PAD_": 1 << 26}
#: Settings for LocalClusters started here. Besides malloc (above), the background diagnostics cost
#: CPU on the cores the sweep uses; measured idle on this 2-core machine, per 10 s: workers 0.36 s and
#: client + scheduler + nanny 0.38 s with the defaults, 0.08 s and 0.12 s with these (mostly the 20 ms
#: event-loop tick monitor, then the 10 ms worker profiler).
LOCAL_CLUSTER_CONFIG = {
    **{f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in MALLOC_ENV.items()},
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.interval": "5s",
}


@contextmanager
def _without_env(names):
    """Hide variables from this process while a cluster starts, then put back exactly what was there.
    The Nanny takes an inherited value over its config and copies its pre-spawn settings into this
    process's environment; neither should leak either way."""
    saved = {name: os.environ.pop(name, None) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


def _ordered_results(client, spec: SweepSpec, parts: list[tuple[int, int]], keep: str, window: int | None):
    """Submit chunks (at most `window` ahead of the next to yield) and yield results in sweep order."""
    from distributed import as_completed

    window = window or 4 * max(1, sum(client.nthreads().values()))
    spec_future = client.scatter(spec, broadcast=True)  # sent once, not once per chunk
    tag = uuid.uuid4().hex[:8]
    pending, queue = {}, as_completed()
    submitted = yielded = 0
    while yielded < len(parts):
        while submitted < len(parts) and submitted - yielded < window:
            lo, hi = parts[submitted]
            queue.add(client.submit(sweep.run_chunk, spec_future, lo, hi, keep, key=f"sweep-{tag}-{submitted}"))
            submitted += 1
        future = next(queue)
        chunk = future.result()  # re-raises a worker's error (e.g. a ScenarioError) here
        future.release()
        pending[chunk.start] = chunk
        while yielded < len(parts) and parts[yielded][0] in pending:
            yield pending.pop(parts[yielded][0])
            yielded += 1
