"""Step and request metrics: TTFT, TPOT, end-to-end latency, throughput, memory, fits, max batch.

Prefill and decode share one step function (`step_ops` + `op_time`), parameterised by new tokens and
cached context. A request is one prefill step (the prompt, producing the first token) followed by
gen - 1 decode steps whose context grows by one token each; because every op's compute and memory
time is affine in the context, the mean decode step is computed exactly from the first and last
steps (`mean_max_affine`). Everything broadcasts: a Scenario of a million configurations is one call.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import operator
import os
import threading
from dataclasses import dataclass

import numpy as np

from hardware.spec import Hardware
from perfmodel import fastpath, heap, intervals, memory
from perfmodel.checks import check_parallelism
from perfmodel.engines import DEFAULT_ENGINE, Engine
from perfmodel.engines import load as load_engine
from perfmodel.ops import Precision, step_ops, step_phase
from perfmodel.roofline import BOUNDS, op_time
from perfmodel.steps import host_dispatch_s, host_overhead_s, mean_decode_step, step_time  # noqa: F401 (public here)
from workloads.model import ModelSpec
from workloads.scenario import BIT_FIELDS, RANGES, Scenario


class DoesNotFitError(ValueError):
    """A scenario whose memory exceeds the device; says how much is needed and how much there is."""


def precision(sc: Scenario) -> Precision:
    return Precision(sc.w_bits, sc.a_bits, sc.kv_bits, sc.quant_group)


def _bound(totals: dict, out: np.ndarray | None = None):
    """Which of compute / memory / overhead (kernel floors or host dispatch) / comm dominates
    (arrays: into `out` where given)."""
    compute, mem, overhead, host, comm = _BOUND_TERMS(totals)
    if type(compute) is type(mem) is type(overhead) is type(host) is type(comm) is float:
        # one scenario: the same comparisons in floats, an int (`_one_row` takes it)
        overhead, best = max(overhead, host), max(compute, mem)
        code = 0 if compute >= mem else 1
        code = 2 if overhead > best else code
        return 3 if comm > max(best, overhead) else code
    overhead = np.maximum(overhead, host)
    # one byte a code, from the comparisons' own bytes (the same comparisons as one scenario's;
    # times are never NaN): memory where compute < memory, then overhead, then comm where they
    # exceed (each later code is larger than every earlier one: a maximum puts it where it wins)
    code = np.asarray(compute < mem).view(np.int8)
    best = np.maximum(compute, mem)
    code = np.maximum(code, np.asarray(overhead > best).view(np.int8) * np.int8(2))
    best = np.maximum(best, overhead)
    return np.maximum(code, np.asarray(comm > best).view(np.int8) * np.int8(3), out=out)


_BOUND_TERMS = operator.itemgetter("compute_s", "memory_s", "overhead_s", "host_s", "comm_s")


def bound_column(codes):
    """Bound codes into BOUNDS as a pandas Categorical: 1 byte a row, and it compares with the
    names ("compute", "memory", ...) like a column of strings."""
    import pandas as pd

    global _BOUND_DTYPE, _ONE_BOUND
    if _BOUND_DTYPE is None:  # the one-row columns first: a thread that sees the dtype finds them
        dtype = pd.CategoricalDtype(list(BOUNDS))
        _ONE_BOUND = [pd.Categorical.from_codes([code], dtype=dtype) for code in range(len(BOUNDS))]
        _BOUND_DTYPE = dtype
    if isinstance(codes, (int, np.integer)):  # one scenario's code: a copy of that code's column
        return _ONE_BOUND[codes].copy()  # (a third of the time of building one)
    codes = np.asarray(codes, dtype=np.int8).reshape(-1)
    if codes.size == 1:
        return _ONE_BOUND[codes[0]].copy()
    # codes come from _bound (0..3, within BOUNDS): pandas need not check them again
    return pd.Categorical.from_codes(codes, dtype=_BOUND_DTYPE, validate=False)


_BOUND_DTYPE = None  # built on first use: pandas is imported only by the functions that need it
_ONE_BOUND: list = []  # a one-row column of each code, built with _BOUND_DTYPE


def _one_bound(code: int):
    """`bound_column` of one scenario's code (an int from `_bound`): a copy of that code's cached
    one-row column, without bound_column's checks (a scalar prediction makes two)."""
    return _ONE_BOUND[code].copy() if _ONE_BOUND else bound_column(code)


#: The output-column slots of a call without a sweep's chunk (`_into`): every column's is None
#: (never written).
_NO_SLOTS: dict = {}


def memory_footprint(model: ModelSpec, hw: Hardware, sc: Scenario, groups: tuple | None = None,
                     dest: dict | None = None) -> dict:
    """Per-device bytes of weights, KV cache (end of generation) and peak activations; fit and max batch.

    Activations are a serving engine's (`memory.serving_activation_bytes`): one chunked-prefill chunk
    plus every running sequence's logits; max batch assumes a full chunk. With the precision
    `groups` (`_precision_groups`) the quantities of a group alone (weights, KV bytes per token,
    the activations of an empty engine) are computed once per group (`_grouped_memory_footprint`);
    a sweep's chunk writes its columns into `dest` (`_chunked`)."""
    if groups is not None:
        return _grouped_memory_footprint(hw, sc, _group_memory_entry(model, groups[0]), groups[1], _requests_rows(sc),
                                         dest)
    p, tp = precision(sc), sc.tp
    weights = memory.weight_bytes(model, p, tp)
    kv_per_token = memory.kv_cache_bytes(model, p, 1.0, tp)
    idle = memory.serving_activation_bytes(model, p, 0, 0, tp)
    kv_per_request = memory.kv_tokens(1, sc.prompt, sc.gen, sc.samples) * kv_per_token
    kv, act = sc.batch * kv_per_request, memory.serving_activation_bytes(model, p, sc.batch, sc.prompt, sc.samples, tp)
    total = weights + kv + act
    free = hw.hbm_capacity_bytes - weights - idle
    per_request = kv_per_request + memory.activation_bytes(model, p, 0, sc.samples, tp)
    return _footprint(hw, weights, kv, act, total, _max_batch(free, per_request, bool(np.all(free > 0))))


def _max_batch(free, per_request, all_fit: bool, out: np.ndarray | None = None):
    """Requests that fit in the free memory (none where the weights do not fit); `all_fit` says the
    weights fit in every scenario, where max(free, 0) is free itself (then into `out` where given)."""
    if isinstance(free, float) and isinstance(per_request, float):  # one scenario: the same in floats
        return float(math.floor(free / per_request)) if free > 0 else 0.0
    if all_fit:
        quotient = np.divide(free, per_request, out=out)
        return np.floor(quotient, out=quotient)
    return np.where(free > 0, np.floor(np.maximum(free, 0) / per_request), 0.0)


def _footprint(hw: Hardware, weights, kv, act, total, max_batch, slots: dict = _NO_SLOTS) -> dict:
    """The columns of `memory_footprint`."""
    return {"weights_bytes": weights, "kv_bytes": kv, "activation_bytes": act, "total_bytes": total,
            "capacity_bytes": hw.hbm_capacity_bytes,
            "fits": _into(slots, "fits", np.less_equal, total, hw.hbm_capacity_bytes), "max_batch": max_batch}


#: The Python operator of each ufunc `_into` takes: one scenario's numbers stay Python floats.
_OPERATORS = {np.add: operator.add, np.multiply: operator.mul, np.divide: operator.truediv,
              np.less_equal: operator.le}


def _into(slots: dict, key: str, ufunc, a, b):
    """ufunc(a, b), into the sweep's chunk of output column `key` where `slots` (a chunk's `dest`,
    else _NO_SLOTS) holds it, else as the operator computes it (arrays or numbers alike)."""
    out = slots.get(key)
    return _OPERATORS[ufunc](a, b) if out is None else ufunc(a, b, out=out)


def _grouped_memory_footprint(hw: Hardware, sc: Scenario, entry: tuple, index, rows, dest: dict | None = None) -> dict:
    """`memory_footprint` of many scenarios in precision groups (`index`: each one's group;
    `entry`: the groups' `_group_memory_entry`; `rows`: `_requests_rows`): what depends on the
    group alone (weights, KV bytes per token, free memory, and the activations' bytes per chunk
    token and per logits row: `memory.activation_bytes` is linear in the two) computed per group
    and gathered once each."""
    slots = _NO_SLOTS if dest is None else dest
    if sc.shape == ():  # one scenario (its fields Python floats): its group's numbers as floats
        weights, kv_per_token, idle, per_token, per_row = entry[1][index]
        free = hw.hbm_capacity_bytes - weights - idle
        all_fit = free > 0
    else:
        weights_g, kv_token_g, idle_g, token_g, row_g = entry[0]
        free_g = hw.hbm_capacity_bytes - weights_g - idle_g
        # (one group: a number, which the caller broadcasts into its column)
        weights = fastpath.gather(weights_g, index, slots.get("weights_bytes") if np.ndim(index) else None)
        kv_per_token, free, per_token, per_row = (fastpath.gather(values, index) for values in (
            kv_token_g, free_g, token_g, row_g))
        all_fit = bool(np.all(free_g > 0))
    kv_per_request = memory.kv_tokens(1, sc.prompt, sc.gen, sc.samples) * kv_per_token
    kv = _into(slots, "kv_bytes", np.multiply, sc.batch, kv_per_request)
    act = _into(slots, "activation_bytes", np.multiply, memory.chunk_tokens(sc.batch, sc.prompt), per_token)
    act += rows * per_row
    total = _into(slots, "total_bytes", np.add, weights, kv)
    total += act
    # a request's own activations: its samples' logits rows
    own = per_row if memory.is_one(sc.samples) else sc.samples * per_row
    per_request = kv_per_request + own
    return _footprint(hw, weights, kv, act, total, _max_batch(free, per_request, all_fit, slots.get("max_batch")),
                      slots)


_GROUP_MEMORY: dict = {}


def _group_memory_entry(model: ModelSpec, groups: tuple) -> tuple:
    """Per precision group ((w_bits, a_bits, kv_bits, quant_group, tp) each): weight bytes, KV
    bytes per cached token, an empty engine's activations, activation bytes per chunk token and
    per logits row, as (five arrays over the groups, a tuple of the five Python floats per group);
    computed once per (model, groups), cached by the model's identity."""
    key = (id(model), groups)
    hit = _GROUP_MEMORY.get(key)
    if hit is not None and hit[0] is model:
        return hit[1]
    columns = dict(zip(GROUP_FIELDS, np.array(groups, dtype=float).T))
    p = Precision(columns["w_bits"], columns["a_bits"], columns["kv_bits"], columns["quant_group"])
    tp = columns["tp"]
    size = (len(groups),)
    weights, kv_per_token, idle = (np.broadcast_to(np.asarray(v, dtype=float), size) for v in (
        memory.weight_bytes(model, p, tp), memory.kv_cache_bytes(model, p, 1.0, tp),
        memory.serving_activation_bytes(model, p, 0, 0, tp)))
    per_token, per_row = (np.broadcast_to(np.asarray(v, dtype=float), size) for v in (
        memory.activation_bytes(model, p, 1.0, 0.0, tp), memory.activation_bytes(model, p, 0.0, 1.0, tp)))
    values = (weights, kv_per_token, idle, per_token, per_row)
    entry = (values, list(zip(*(v.tolist() for v in values))))
    if len(_GROUP_MEMORY) >= 512:
        _GROUP_MEMORY.clear()
    _GROUP_MEMORY[key] = (model, entry)
    return entry


#: Metrics that are the spec's own numbers (the same for every scenario): like the model's
#: parameter counts, read-only views of one number (a sweep would write 8 MB a million rows).
SPEC_COLUMNS = ("capacity_bytes",)
#: The metrics holding bound codes, returned as categoricals (`bound_column`).
BOUND_COLUMNS = ("prefill_bound", "decode_bound")
#: The metrics of `_metrics` that are not doubles (bound codes, the fit flag).
_ONE_TYPED = (*BOUND_COLUMNS, "fits")
#: Scenarios evaluated per pass: a large sweep in chunks runs about twice as fast as one pass over
#: million-element arrays (its temporaries are reused, not page-faulted afresh), and each chunk pays
#: ~1,300 Python-level calls. On a 2-core machine (benchmarks/bench_sweep.py, 1e6 scenarios, two
#: worker threads, one run): 16384 0.241 s, 32768 0.173 s, 65536 0.149 s, 131072 0.131 s, 262144
#: about the same; the larger chunk also leaves the two threads fewer handovers of the GIL.
CHUNK = 131072
#: How a step is priced: "fast" (perfmodel.fastpath: coefficients per precision group) or
#: "reference" (perfmodel.steps: every op of every scenario; the source of breakdowns).
PATHS = ("fast", "reference")
#: Scenario fields the fast path prices once per distinct combination (a precision group).
GROUP_FIELDS = ("w_bits", "a_bits", "kv_bits", "quant_group", "tp")
_GROUP_NUMBERS = operator.attrgetter(*GROUP_FIELDS)  # (one scenario's group in one call)
#: Most precision groups the fast path takes; a sweep with more (continuous bit widths) is priced
#: op by op, which is then as fast.
MAX_GROUPS = 256


def evaluate(model: ModelSpec, hw: Hardware, sc: Scenario, engine: Engine | str = DEFAULT_ENGINE,
             workers: int | None = None, path: str = "fast") -> dict:
    """All request metrics as a dict of flat numpy arrays (one entry per scenario).

    path "fast" prices each precision group's steps once (perfmodel.fastpath) and "reference"
    every op of every scenario (perfmodel.steps); they agree to 1e-9 (tests). Work runs in
    chunks of at most CHUNK scenarios, of equal size (`_chunk_rows`), on `workers` threads
    (default: one per CPU): the calling thread and a kept pool of workers - 1, each taking the
    next chunk (the first on the calling thread); numpy releases the GIL inside its loops, so
    chunks evaluate in parallel."""
    engine = load_engine(engine)
    if path not in PATHS:
        raise ValueError(f"path: {path!r} is not one of {', '.join(PATHS)}")
    if sc.shape == ():  # one scenario: its arithmetic in Python floats on the fast path
        one = _as_floats(sc) if path == "fast" else sc
        return _one_row(model, one, _metrics(model, hw, one, engine, _precision_groups(one) if path == "fast" else None))
    heap.keep_heap()  # arrays of scenarios: temporaries reused, not page-faulted afresh (perfmodel.heap)
    columns = sc.columns()
    if sc.size <= CHUNK:
        return _columns(model, hw, sc, columns, _metrics(model, hw, sc, engine, _precision_groups(sc) if path == "fast" else None))
    starts = range(0, sc.size, CHUNK)
    workers = max(1, min(workers or os.cpu_count() or 1, len(starts)))
    if workers == 1 or threading.current_thread().name.startswith(_POOL_PREFIX):
        # one thread (a chunk of this pool that evaluates again must not wait on its own pool)
        return _chunked(model, hw, sc, engine, columns, path, None)
    # the calling thread is one of the workers: a pool of one fewer helps it (as many threads
    # as workers, never more threads than cores by default)
    return _chunked(model, hw, sc, engine, columns, path, _pool(workers - 1))


#: Worker pools by size, kept between calls: threads that live on keep their malloc arenas grown,
#: where a new pool per call page-faulted its temporaries afresh (15k faults and 0.1 s of system
#: time per 1e6 scenarios on 2 cores; benchmarks/bench_sweep.py).
_POOLS: dict = {}
_POOL_SIZES: dict = {}  # threads of each kept pool, by its identity
_POOLS_LOCK = threading.Lock()
_POOL_PREFIX = "perfmodel-evaluate"


def _pool(workers: int):
    """The kept pool of `workers` threads (made on first use)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            from concurrent.futures import ThreadPoolExecutor

            pool = _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix=_POOL_PREFIX)
            _POOL_SIZES[id(pool)] = workers
        return pool


# a forked child has the pools' objects but not their threads: it makes its own
os.register_at_fork(after_in_child=_POOLS.clear)


_SCENARIO_FIELDS = tuple(f.name for f in dataclasses.fields(Scenario))


def _as_floats(sc: Scenario) -> Scenario:
    """One scenario (every field a number) with its fields as Python floats: the scalar route's
    few hundred operations cost several times as much on numpy scalars, and give the same IEEE
    doubles."""
    one = object.__new__(Scenario)
    # the frozen dataclass's fields set through its __dict__ (a third of the time of one setattr each)
    one.__dict__.update(zip(_SCENARIO_FIELDS, map(float, _SCENARIO_NUMBERS(sc))), _shape=())
    return one


def _chunked(model: ModelSpec, hw: Hardware, sc: Scenario, engine: Engine, columns: dict, path: str,
             pool) -> dict:
    """`evaluate` of a Scenario of more than CHUNK scenarios, chunk by chunk: on the calling thread
    alone (pool None), or on it and the `pool`'s threads together, each taking the next chunk
    (`_shared_map`)."""
    run = None if pool is None else (lambda fn, items: _shared_map(pool, fn, items))
    groups = _precision_groups(sc, run, deferred=True) if path == "fast" else None
    size = _chunk_rows(sc.size, 1 if pool is None else _POOL_SIZES[id(pool)] + 1)
    starts = range(0, sc.size, size)

    def chunk(rows: slice, dest: dict | None) -> dict:
        part = Scenario.from_checked(**{k: v[rows] if np.ndim(getattr(sc, k)) else getattr(sc, k)
                                        for k, v in columns.items()})
        own = None if groups is None else (groups[0], _group_index(groups, rows))
        return _metrics(model, hw, part, engine, own, dest)

    # every column allocated before any chunk runs (`_column_layout`), so each chunk's metrics
    # write into their rows of it (`_metrics`' dest): only those left are copied
    out = {key: value if key in SPEC_COLUMNS else np.empty(sc.size, dtype=dtype)
           for key, (dtype, value) in _column_layout(model, hw, engine, columns).items()}

    def work(start: int) -> None:  # each thread copies what its chunk did not write (and frees it)
        rows = slice(start, start + size)
        dest = {key: values[rows] for key, values in out.items() if key not in SPEC_COLUMNS}
        for key, values in chunk(rows, dest).items():
            if key not in SPEC_COLUMNS and values is not dest[key]:
                dest[key][...] = values

    if pool is None:
        for start in starts:
            work(start)
    else:
        _shared_map(pool, work, starts)
    return _columns(model, hw, sc, columns, out)


def _column_layout(model: ModelSpec, hw: Hardware, engine: Engine, columns: dict) -> dict:
    """{metric: (dtype of its column, its value)} of a sweep's first scenario by the scalar route
    (tens of microseconds, where a one-row chunk of the array route took 2 ms before the sweep's
    threads could start): the same metrics as every chunk's, doubles but for the bound codes
    (one byte each, as `_bound` writes them) and the fit flag."""
    first = Scenario.from_checked(**{key: float(values[0]) for key, values in columns.items()})
    metrics = _metrics(model, hw, first, engine, _precision_groups(first))
    return {key: (np.int8 if key in BOUND_COLUMNS else np.asarray(value).dtype, value) for key, value in metrics.items()}


def _chunk_rows(size: int, workers: int) -> int:
    """Rows per chunk of a sweep of `size` scenarios on `workers` threads: at most CHUNK, in
    chunks of equal size whose count is a multiple of the workers, so every thread takes as many
    rows (1e6 scenarios on two threads: 8 chunks of 125,000, where chunks of CHUNK left one
    thread a short last chunk while the other ran its fourth full one, about 4% of the sweep's
    wall time on a 2-core machine)."""
    chunks = -(-size // CHUNK)
    chunks = -(-chunks // workers) * workers
    return -(-size // chunks)


def _shared_map(pool, fn, items) -> list:
    """[fn(item) for item in items] on the calling thread (the first item, then any) and every
    thread of `pool` (`_pool`), each taking the next item as it finishes one (no thread waits on
    another's share). A failure on the calling thread stops the others taking more, and is
    raised once they have stopped."""
    items = list(items)
    results = [None] * len(items)
    taken = itertools.count()  # next() on a count is atomic: each item is taken once
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            i = next(taken)
            if i >= len(items):
                return
            results[i] = fn(items[i])

    first = next(taken)
    helpers = [pool.submit(drain) for _ in range(_POOL_SIZES[id(pool)])]
    try:
        if first < len(items):
            results[first] = fn(items[first])
        drain()
    except BaseException:
        stop.set()
        for helper in helpers:
            helper.cancel()
            try:
                helper.result()
            except BaseException:  # noqa: S110 (theirs follow from ours: ours is the one raised)
                pass
        raise
    for helper in helpers:
        helper.result()
    return results


def _columns(model: ModelSpec, hw: Hardware, sc: Scenario, columns: dict, metrics: dict) -> dict:
    """Every output column in its documented order: the scenario's fields, the model's constants,
    then the metrics (bound codes as categoricals)."""
    size = max(sc.size, 1)
    params, active = _param_counts(model)
    if size == 1:  # one scenario: one-element columns (a view costs more than a copy here)
        out = {**columns, "params": np.array([params], dtype=np.int64),
               "active_params": np.array([active], dtype=np.int64), **metrics}
    else:
        # the model's constants, like a scenario's constant fields (Scenario.columns): read-only
        # views of one number (a sweep of a million scenarios would write 16 MB of copies)
        out = {**columns, "params": np.broadcast_to(np.int64(params), (size,)),
               "active_params": np.broadcast_to(np.int64(active), (size,)), **metrics}
    for key in SPEC_COLUMNS:
        if key in out and not isinstance(out[key], np.ndarray):
            out[key] = np.full(1, out[key]) if size == 1 else np.broadcast_to(np.float64(out[key]), (size,))
    for key in BOUND_COLUMNS:
        if key in out:
            out[key] = bound_column(out[key])
    return out



def _one_row(model: ModelSpec, sc: Scenario, metrics: dict) -> dict:
    """`_columns` of one scenario from its numbers (`_metrics` of a scenario of shape ()), in
    `_columns`' order: every double a one-element row of one array (a view costs a quarter of a
    new one-element array; 40 of them were a fifth of a scalar prediction), the parameter counts
    rows of one int64 array, the bound codes categoricals (`bound_column`), the fit flag a bool."""
    keys, doubles_of, typed = _one_row_layout(metrics)
    values = list(np.array(_SCENARIO_NUMBERS(sc) + doubles_of(metrics), dtype=float).reshape(-1, 1))
    # a copy of the counts' cached (2, 1) array (a third of the time of converting the two ints)
    values[len(_SCENARIO_FIELDS):len(_SCENARIO_FIELDS)] = _param_entry(model)[2].copy()
    for position, key in typed:  # in increasing position: each lands where `keys` has it
        value = metrics[key]
        values.insert(position, _one_bound(value) if key in BOUND_COLUMNS else np.array([bool(value)]))
    return dict(zip(keys, values))


_SCENARIO_NUMBERS = operator.attrgetter(*_SCENARIO_FIELDS)
_ONE_ROW_LAYOUTS: dict = {}


def _one_row_layout(metrics: dict) -> tuple:
    """(every column name in order, a getter of the metrics' doubles, (position, name) of each
    typed metric) for `_one_row`. `_metrics` names its metrics in one order, with or without the
    prediction intervals: a layout per (intervals or not, count), made from the first metrics of
    each (hashing the tuple of names each call cost a microsecond)."""
    key = ("ttft_p10_s" in metrics, len(metrics))
    layout = _ONE_ROW_LAYOUTS.get(key)
    if layout is None:
        names = tuple(metrics)
        keys = (*_SCENARIO_FIELDS, "params", "active_params", *names)
        doubles = [name for name in names if name not in _ONE_TYPED]
        typed = tuple((keys.index(name), name) for name in names if name in _ONE_TYPED)
        layout = _ONE_ROW_LAYOUTS[key] = (keys, operator.itemgetter(*doubles), typed)
    return layout

_PARAM_COUNTS: dict = {}


def _param_counts(model: ModelSpec) -> tuple[int, int]:
    """(param_count, active_param_count) of a model, counted once per model object."""
    return _param_entry(model)[1]


def _param_entry(model: ModelSpec) -> tuple:
    """(model, `_param_counts`, the counts as a (2, 1) int64 array that callers copy), per model
    object."""
    hit = _PARAM_COUNTS.get(id(model))
    if hit is None or hit[0] is not model:
        if len(_PARAM_COUNTS) >= 512:
            _PARAM_COUNTS.clear()
        counts = (model.param_count(), model.active_param_count())
        rows = np.array(counts, dtype=np.int64).reshape(-1, 1)
        rows.flags.writeable = False  # the cached original: each row gets a copy
        hit = _PARAM_COUNTS[id(model)] = (model, counts, rows)
    return hit


def _precision_groups(sc: Scenario, run=None, deferred: bool = False) -> tuple | None:
    """(the distinct (w_bits, a_bits, kv_bits, quant_group, tp) combinations, each scenario's
    index into them) for the fast path; None when there are more than MAX_GROUPS. Whole numbers
    over small spans are coded by arithmetic (`_span_groups`); others (fractional bit widths,
    large quant groups) by each field's distinct values (`_level_groups`). Chunks of CHUNK
    scenarios (no full-length temporaries) are mapped by `run(fn, starts)` (default one after
    another; evaluate passes its worker threads' map). `deferred`: (groups, codes, table), where
    each scenario's index is table[code] (`_group_index`), gathered where its chunk is evaluated
    (a pass over the scenarios and a wait for every thread fewer)."""
    if sc.shape == ():  # one scenario: one group
        return (tuple(map(float, _GROUP_NUMBERS(sc))),), 0
    run = run or (lambda fn, items: [fn(item) for item in items])
    grouped = _span_groups(sc, run, deferred)
    return _level_groups(sc, run, deferred) if grouped is False else grouped


def _group_index(groups: tuple, rows: slice):
    """The group indices of `rows` from `_precision_groups(..., deferred=True)`'s answer."""
    index = groups[1]
    if not np.ndim(index):
        return index
    index = np.reshape(index, -1)[rows]
    return index if groups[2] is None else fastpath.gather(groups[2], index)


def _indexed(groups: tuple, codes: np.ndarray, table: np.ndarray, shape: tuple, run, deferred: bool) -> tuple:
    """`_precision_groups`' answer from each scenario's code and the codes' group indices
    `table`: (groups, codes, table) where `deferred`, else the indices gathered chunk by chunk."""
    if deferred:
        return groups, codes, table

    def index_chunk(start: int) -> None:
        codes[start:start + CHUNK] = fastpath.gather(table, codes[start:start + CHUNK])

    run(index_chunk, range(0, codes.size, CHUNK))
    return groups, codes.reshape(shape)


#: Most codes `_span_groups` counts per chunk (the product of the varying fields' spans).
MAX_SPAN_CODES = 65536


def _span_groups(sc: Scenario, run, deferred: bool = False) -> tuple | None | bool:
    """`_precision_groups` by arithmetic: each varying field's whole value less its smallest,
    times the product of the spans before it, summed into one code per scenario; the codes
    present (counted chunk by chunk) are the groups. False where a bit width is fractional or the
    spans' product exceeds MAX_SPAN_CODES (then `_level_groups`)."""
    varying = [(name, np.broadcast_to(getattr(sc, name), sc.shape).reshape(-1)) for name in GROUP_FIELDS
               if np.ndim(getattr(sc, name))]
    if not varying:
        return (tuple(float(getattr(sc, name)) for name in GROUP_FIELDS),), 0
    starts = range(0, sc.size, CHUNK)
    spans = run(lambda start: [(column[start:start + CHUNK].min(), column[start:start + CHUNK].max())
                               for _, column in varying], starts)
    lows = [int(np.floor(min(s[i][0] for s in spans))) for i in range(len(varying))]
    sizes = [int(np.floor(max(s[i][1] for s in spans))) - low + 1 for i, low in enumerate(lows)]
    radices = [math.prod(sizes[:i]) for i in range(len(sizes))]
    bins = math.prod(sizes)
    if bins > MAX_SPAN_CODES:
        return False
    offset = float(sum(low * radix for low, radix in zip(lows, radices)))
    codes = np.empty(sc.size, dtype=np.intp)

    def code_chunk(start: int):
        # the code summed in doubles, then cast once: every term is a whole number and every
        # sum below offset + bins (at most 2^16 past it), so the doubles are exact and the same
        # integers as summing the fields' casts (Scenario checked counts whole; bit widths may be
        # fractional: then False, as any t != trunc(t) shows)
        rows = slice(start, start + CHUNK)
        code = None
        for (name, column), radix in zip(varying, radices):  # the first radix is 1
            part = column[rows]
            if name in BIT_FIELDS and not np.array_equal(np.trunc(part), part):
                return None
            if code is None:
                code = part - offset
            else:
                code += part * float(radix)
        whole = code.astype(np.intp)
        codes[rows] = whole
        return np.bincount(whole, minlength=bins)

    counts = run(code_chunk, starts)
    if any(count is None for count in counts):
        return False
    present = np.flatnonzero(sum(counts))
    if present.size > MAX_GROUPS:
        return None
    table = np.zeros(bins, dtype=np.intp)
    table[present] = np.arange(present.size)
    fixed = {name: float(getattr(sc, name)) for name in GROUP_FIELDS if not np.ndim(getattr(sc, name))}
    groups = []
    for code in present.tolist():
        combo = dict(fixed)
        for (name, _), low, size, radix in zip(varying, lows, sizes, radices):
            combo[name] = float(low + (code // radix) % size)
        groups.append(tuple(combo[name] for name in GROUP_FIELDS))
    return _indexed(tuple(groups), codes, table, sc.shape, run, deferred)


def _level_groups(sc: Scenario, run, deferred: bool = False) -> tuple | None:
    """`_precision_groups` by each field's distinct values: each field's index times its radix is
    gathered from a small table and summed into a combination code."""
    starts = range(0, sc.size, CHUNK)
    radix, levels, coded = 1, [], []
    for name in GROUP_FIELDS:
        value = getattr(sc, name)
        if np.ndim(value) == 0:
            levels.append((name, np.array([float(value)])))
            continue
        column = np.broadcast_to(value, sc.shape).reshape(-1)
        values, lookup, keys = _levels(column, name, run)
        if values.size > MAX_GROUPS or radix * values.size > 2 ** 31:
            return None
        coded.append((column, lookup * radix, keys))
        radix *= values.size
        levels.append((name, values))
    if not coded:
        return tuple([tuple(float(values[0]) for _, values in levels)]), 0
    codes = np.empty(sc.size, dtype=np.intp)

    def code_chunk(start: int) -> np.ndarray:
        rows = slice(start, start + CHUNK)
        code = 0
        for column, table, keys in coded:  # keys None: the whole numbers themselves
            code = code + fastpath.gather(table, column[rows].astype(np.intp) if keys is None else keys[rows])
        codes[rows] = code
        return np.bincount(code, minlength=radix)

    present = np.flatnonzero(sum(run(code_chunk, starts)))
    if present.size > MAX_GROUPS:
        return None
    table = np.zeros(radix, dtype=np.intp)
    table[present] = np.arange(present.size)
    groups = []
    for code in present:
        combo, rest = [], int(code)
        for _, values in levels:
            combo.append(float(values[rest % values.size]))
            rest //= values.size
        groups.append(tuple(combo))
    return _indexed(tuple(groups), codes, table, sc.shape, run, deferred)


def _levels(column: np.ndarray, name: str, run=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(distinct values, lookup, keys): each element's index into the values is lookup[keys],
    keys None where they are the whole numbers themselves (bit widths, tp: Scenario has checked
    that counts are whole and every field's range), found by counting chunk by chunk (mapped by
    `run`, as in _precision_groups); else a sort."""
    run = run or (lambda fn, items: [fn(item) for item in items])
    top = RANGES[name][1] if RANGES[name][1] <= 65536 else column.max()
    if top <= 65536:
        def count(start: int):
            part = column[start:start + CHUNK]
            whole = part.astype(np.intp)
            if name in BIT_FIELDS and not np.array_equal(whole, part):  # bit widths may be fractional
                return None
            return np.bincount(whole, minlength=int(top) + 1)

        counts = run(count, range(0, column.size, CHUNK))
        if all(c is not None for c in counts):
            present = np.flatnonzero(sum(counts))
            lookup = np.zeros(int(top) + 1, dtype=np.intp)
            lookup[present] = np.arange(present.size)
            return present.astype(float), lookup, None
    values, inverse = np.unique(column, return_inverse=True)
    return values, np.arange(values.size, dtype=np.intp), inverse.reshape(-1)


def _metrics(model: ModelSpec, hw: Hardware, sc: Scenario, engine: Engine, groups: tuple | None = None,
             dest: dict | None = None) -> dict:
    """The computed columns of `evaluate` for one Scenario, each flat over its scenarios; by the
    fast path when given the precision `groups` (`_precision_groups`), else op by op. A sweep's
    chunk passes `dest`, its slices of the output columns: most metrics' last operation writes
    there (`_into`), the rest its caller copies."""
    slots = _NO_SLOTS if dest is None else dest
    decode_seqs = _requests_rows(sc)
    past_last = sc.prompt + (max(sc.gen - 2, 0.0) if isinstance(sc.gen, float) else np.maximum(sc.gen - 2, 0))
    if groups is None:
        bands = _error_bands(hw)
        offsets = (None, None)
        prefill, decode = _reference_steps(model, hw, sc, engine, decode_seqs, past_last)
        mem = memory_footprint(model, hw, sc)
    else:
        plan = _plan(model, hw, engine, groups[0], step_phase(sc.prompt))
        bands, offsets = plan.bands, plan.class_offsets
        prefill, decode = _fast_steps(plan.route, sc, groups[1], decode_seqs, past_last, dest, offsets[1])
        mem = _grouped_memory_footprint(hw, sc, plan.memory, groups[1], decode_seqs, dest)
    ttft, tpot = prefill["time_s"], decode["time_s"]
    e2e = _into(slots, "e2e_s", np.add, ttft, (sc.gen - 1) * tpot)
    throughput = _into(slots, "throughput_tok_s", np.divide, decode_seqs * sc.gen, e2e)
    result = {"ttft_s": ttft, "tpot_s": tpot, "e2e_s": e2e, "throughput_tok_s": throughput}
    if bands:  # prediction intervals only where the spec carries validated error bands (no NaN columns)
        result["ttft_p10_s"], result["ttft_p90_s"] = _step_band(ttft, prefill, "prefill", bands, engine, offsets[0],
                                                                slots)
        result["tpot_p10_s"], result["tpot_p90_s"] = _step_band(tpot, decode, "decode", bands, engine, offsets[1], slots)
    result["decode_tok_s"] = _into(slots, "decode_tok_s", np.divide, decode_seqs, tpot)
    result["prefill_bound"] = _bound(prefill, slots.get("prefill_bound"))
    result["decode_bound"] = _bound(decode, slots.get("decode_bound"))
    for key, column in _PREFILL_PARTS:
        result[column] = prefill[key]
    for key, column in _DECODE_PARTS:
        result[column] = decode[key]
    result.update(mem)
    # the hourly price per token-second folded into one number: two passes over a sweep, not four
    result["usd_per_mtok"] = _into(slots, "usd_per_mtok", np.divide, hw.price_per_hour_usd * 1e6 / 3600.0 * sc.tp,
                                   throughput)
    shape = sc.shape
    if shape == ():  # one scenario: its numbers, made columns by _one_row
        return result
    # the spec's own constants stay numbers: _columns makes each one read-only view of one number
    return {k: v if k in SPEC_COLUMNS else _flat_column(v, shape, sc.size) for k, v in result.items()}


def _error_bands(hw: Hardware) -> dict:
    """The spec's validated error bands by residual class (perfmodel.intervals), {} without them."""
    return hw.calibration.error_bands if hw.calibration is not None else {}


def _step_band(total, step: dict, phase: str, bands: dict, engine: Engine, offsets: dict | None,
               slots: dict) -> tuple:
    """(p10, p90) of a step (intervals.band), into the sweep chunk's columns where `slots` has them;
    one scenario's from its classes' `offsets` where the plan keeps them (intervals.offset_band:
    the same band without looking the spec's bands up again)."""
    if offsets is not None and isinstance(total, float):
        return intervals.offset_band(total, step["classes"], offsets)
    prefix = "ttft" if phase == "prefill" else "tpot"
    return intervals.band(total, step["classes"], bands, phase, engine.name,
                          out=(slots.get(f"{prefix}_p10_s"), slots.get(f"{prefix}_p90_s")), offsets=step.get("band_offsets"))


def _reference_steps(model: ModelSpec, hw: Hardware, sc: Scenario, engine: Engine, decode_seqs, past_last) -> tuple:
    """(prefill step, mean decode step) by the per-op path (perfmodel.steps)."""
    p = precision(sc)
    prefill = step_time(model, hw, seqs=sc.batch, new_tokens=sc.prompt, past=0.0, p=p, tp=sc.tp, sparse_budget=0,
                        logits_tokens=sc.batch, engine=engine)
    decode = mean_decode_step(model, hw, seqs=decode_seqs, past_first=sc.prompt, past_last=past_last, p=p, tp=sc.tp,
                              sparse_budget=sc.sparse_budget, engine=engine)
    return prefill, decode


def _fast_steps(route: fastpath.Route, sc: Scenario, index, decode_seqs, past_last, dest: dict | None,
                decode_offsets: dict | None) -> tuple:
    """(prefill step, mean decode step) by the fast path (the route carries the engine), in
    scenarios' precision groups `index`: the times and components straight into a sweep chunk's
    output columns where they can be. One scenario takes its group's own Precision (the rates
    cached on it are reused); arrays of scenarios sum the decode's class times into its band
    offsets as it is priced (`decode_offsets`: intervals.class_offsets)."""
    one = sc.shape == ()
    p = route.precision if one else precision(sc)
    memo: dict = {}  # the two steps' table columns, where their counts are one array
    prefill = fastpath.prefill_step(route, batch=sc.batch, prompt=sc.prompt, p=p, tp=sc.tp, group=index, memo=memo,
                                    into=_slots(dest, PREFILL_COLUMNS))
    decode = fastpath.mean_decode_step(route, seqs=decode_seqs, past_first=sc.prompt, past_last=past_last, p=p,
                                       tp=sc.tp, sparse_budget=sc.sparse_budget, group=index, memo=memo,
                                       into=_slots(dest, DECODE_COLUMNS), offsets=None if one else decode_offsets)
    return prefill, decode


@dataclass(frozen=True, eq=False)
class _Plan:
    """What the fast path's `_metrics` looks up for one (model, spec, engine, precision groups,
    prefill phase), resolved by one cached lookup (`_plan`): the steps' pricing (fastpath.Route),
    the groups' memory numbers (`_group_memory_entry`), the spec's error bands and the prefill's
    and the decode's class offsets (intervals.class_offsets; None where whole steps carry the
    band or there are none). A scalar prediction pays for every lookup it makes (each a
    microsecond or so of its 100)."""
    route: fastpath.Route
    memory: tuple
    bands: dict
    class_offsets: tuple  # (the prefill's, the decode's)


_PLANS: dict = {}
_PLANS_LOCK = threading.Lock()
#: Most plans kept: each holds its pricings (and their per-run tables, which a sweep of long
#: prompts grows to millions of runs) past the pricing caches' own clearing.
_MAX_PLANS = 64


def _plan(model: ModelSpec, hw: Hardware, engine: Engine, groups: tuple, phase: str) -> _Plan:
    """The _Plan of precision groups `groups` whose prefills are of `phase`, cached by the objects'
    identity (checked against them, as fastpath's pricings are)."""
    key = (id(model), id(hw), id(engine), groups, phase)
    hit = _PLANS.get(key)
    if hit is not None and hit.route.model is model and hit.route.hw is hw and hit.route.engine is engine:
        return hit
    bands = _error_bands(hw)
    offsets = tuple(intervals.class_offsets(bands, step, engine.name) for step in ("prefill", "decode"))
    plan = _Plan(fastpath.route(model, hw, engine, groups, phase), _group_memory_entry(model, groups), bands, offsets)
    with _PLANS_LOCK:
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


#: Output columns of each step's components (its time: ttft_s, tpot_s).
PREFILL_COLUMNS = {"time_s": "ttft_s", "compute_s": "prefill_compute_s", "memory_s": "prefill_memory_s"}
DECODE_COLUMNS = {"time_s": "tpot_s", "compute_s": "decode_compute_s", "memory_s": "decode_memory_s",
                  "overhead_s": "decode_overhead_s", "comm_s": "decode_comm_s"}


#: (component, output column) of each step's components but its time, in `_metrics`' order.
_PREFILL_PARTS = tuple((key, column) for key, column in PREFILL_COLUMNS.items() if key != "time_s")
_DECODE_PARTS = tuple((key, column) for key, column in DECODE_COLUMNS.items() if key != "time_s")


def _slots(dest: dict | None, columns: dict) -> dict | None:
    """{component: its output column's chunk} of a step, or None without `dest`."""
    return None if dest is None else {key: dest.get(column) for key, column in columns.items()}


def _requests_rows(sc: Scenario):
    """Sequences decoded at once: batch x samples (the batch's own array where samples is the
    number 1: the same doubles without a pass; nothing writes into it)."""
    if isinstance(sc.batch, np.ndarray) and memory.is_one(sc.samples):  # (one scenario: the product)
        return sc.batch
    return sc.batch * sc.samples


def _flat_column(value, shape: tuple, size: int) -> np.ndarray:
    """A metric as a flat column of `size` rows: an array of the scenarios' shape as it is
    (flattened where N-d; np.broadcast_to costs microseconds a call, 25 calls a chunk), else
    broadcast or filled."""
    if isinstance(value, np.ndarray) and value.shape == shape:
        return value if value.ndim == 1 else value.reshape(-1)
    if np.ndim(value):
        return np.broadcast_to(value, shape).reshape(-1)
    return np.full(max(size, 1), value)


def _evaluate(model: ModelSpec, hw: Hardware, sc: Scenario, engine: Engine, fast: bool = False) -> dict:
    """`evaluate` of one Scenario in one pass (no chunks)."""
    return _columns(model, hw, sc, sc.columns(), _metrics(model, hw, sc, engine, _precision_groups(sc) if fast else None))


@dataclass(frozen=True)
class Prediction:
    """Predicted metrics for a model on a device over one or many scenarios."""

    model: ModelSpec
    hardware: Hardware
    scenario: Scenario
    columns: dict
    engine: Engine = None

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.columns)

    def __getitem__(self, key):
        return self.columns[key]

    def row(self, i: int = 0) -> dict:
        return {k: v[i].item() if hasattr(v[i], "item") else v[i] for k, v in self.columns.items()}

    def breakdown(self, phase: str = "decode", i: int | None = None):
        """Per-op table (flops, bytes, times, bound, share) of scenario `i`'s prefill or mean decode step;
        `i` may be left out only when the prediction holds one scenario."""
        n = self.scenario.size
        if i is None and n > 1:
            raise ValueError(f"i: this prediction holds {n} scenarios; pick one with breakdown(phase, i=0..{n - 1})")
        i = 0 if i is None else i
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < n:
            raise ValueError(f"i: {i!r} must be a whole number from 0 to {n - 1}")
        return breakdown(self.model, self.hardware, _pick(self.scenario, int(i)), phase, self.engine)

    def require_fit(self) -> "Prediction":
        """Raise DoesNotFitError naming the first scenario that exceeds device memory."""
        bad = np.flatnonzero(~self.columns["fits"])
        if bad.size:
            i = bad[0]
            need, has = self.columns["total_bytes"][i], self.columns["capacity_bytes"][i]
            raise DoesNotFitError(
                f"does not fit: {self.model.name} with batch {self.columns['batch'][i]:g} needs "
                f"{need / 1e9:.1f} GB per device (weights {self.columns['weights_bytes'][i] / 1e9:.1f} GB, "
                f"KV {self.columns['kv_bytes'][i] / 1e9:.1f} GB, activations "
                f"{self.columns['activation_bytes'][i] / 1e9:.1f} GB), {self.hardware.name} has {has / 1e9:.1f} GB")
        return self


def predict(model: ModelSpec, hw: Hardware, sc: Scenario, engine: Engine | str = DEFAULT_ENGINE) -> Prediction:
    """Predict TTFT, TPOT, latency, throughput and memory for every scenario in `sc`.

    engine: the serving stack's profile by name or as a profile (perfmodel.engines; default
    DEFAULT_ENGINE, a serving engine)."""
    check_context(model, sc)
    check_parallelism(model, hw, sc.tp)
    engine = load_engine(engine)
    return _prediction(model, hw, sc, evaluate(model, hw, sc, engine), engine)


def _prediction(model: ModelSpec, hw: Hardware, sc: Scenario, columns: dict, engine: Engine) -> Prediction:
    """Prediction(model, hw, sc, columns, engine), its fields set through its __dict__: the frozen
    dataclass's __init__ sets each through object.__setattr__, twice the time (a microsecond of a
    scalar prediction's 100); its fields need no checks (`predict` made them)."""
    prediction = object.__new__(Prediction)
    prediction.__dict__.update(model=model, hardware=hw, scenario=sc, columns=columns, engine=engine)
    return prediction


def check_context(model: ModelSpec, sc: Scenario) -> None:
    if sc.shape == ():  # one scenario: the same test in floats
        total = float(sc.prompt) + float(sc.gen)
        worst = total if total > model.max_context else None
    else:
        total = np.asarray(sc.prompt) + np.asarray(sc.gen)
        worst = float(np.max(total)) if np.any(total > model.max_context) else None
    if worst is not None:
        raise ValueError(f"prompt + gen: {worst:g} tokens exceeds {model.name}'s maximum context "
                         f"of {model.max_context} tokens")


def _pick(sc: Scenario, i: int) -> Scenario:
    cols = sc.columns()
    return Scenario(**{k: v[i] for k, v in cols.items()})


def breakdown(model: ModelSpec, hw: Hardware, sc: Scenario, phase: str = "decode",
              engine: Engine | str = DEFAULT_ENGINE):
    """Per-op roofline table for one scenario: prefill step, or the decode step at mid-generation."""
    import pandas as pd

    if phase not in ("prefill", "decode"):
        raise ValueError(f"phase: {phase!r} must be 'prefill' or 'decode'")
    p, tp = precision(sc), sc.tp
    if phase == "prefill":
        ops = step_ops(model, seqs=sc.batch, new_tokens=sc.prompt, past=0.0, p=p, tp=tp, sparse_budget=0,
                       logits_tokens=sc.batch, engine=engine)
    else:
        mid = sc.prompt + np.maximum(sc.gen - 2, 0) / 2
        ops = step_ops(model, seqs=sc.batch * sc.samples, new_tokens=1.0, past=mid, p=p, tp=tp,
                       sparse_budget=sc.sparse_budget, engine=engine)
    rows = []
    for op in ops:
        t = op_time(op, hw, p, tp)
        parts = np.array([float(t.compute_s), float(t.memory_s), float(t.overhead_s), float(t.comm_s)])
        rows.append({
            "op": op.name, "kind": op.kind, "count": op.count, "flops": op.count * float(op.flops),
            "bytes": op.count * float(op.bytes), "compute_s": op.count * parts[0],
            "memory_s": op.count * parts[1], "overhead_s": op.count * parts[2], "comm_s": op.count * parts[3],
            "time_s": op.count * float(t.time_s),
            "bound": "comm" if op.kind == "comm" else BOUNDS[int(np.argmax(parts))],
        })
    frame = pd.DataFrame(rows)
    frame["share"] = frame["time_s"] / frame["time_s"].sum()
    # FLOP per byte; an op that moves no bytes (an all-reduce at tp 1) has none: 0, not NaN
    frame["intensity_flop_per_byte"] = np.where(frame["bytes"] > 0, frame["flops"] / frame["bytes"].where(frame["bytes"] > 0, 1.0), 0.0)
    return frame
