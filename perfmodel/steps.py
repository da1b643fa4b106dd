"""One forward step's time by the per-op path: every op of `perfmodel.ops.step_ops` priced by
`perfmodel.roofline.op_time` and summed, plus the host time the engine pays.

This is the reference the fast path (perfmodel.fastpath) is held equal to, and the source of the
per-op breakdowns. Prefill and decode share one step function (`step_time`), parameterised by new
tokens and cached context; a request's mean decode step is exact without stepping through every
token because every op's compute and memory time is affine in the context (`mean_decode_step`,
`roofline.mean_max_affine`).
"""
from __future__ import annotations

import numpy as np

from hardware.spec import Hardware
from perfmodel import intervals
from perfmodel.engines import DEFAULT_ENGINE, Engine
from perfmodel.engines import load as load_engine
from perfmodel.ops import Op, Precision, context_ops, logits_ops, step_ops, step_phase, token_ops
from perfmodel.roofline import OpTime, mean_max_affine, op_time
from workloads.model import ModelSpec


class StepSums:
    """Sums of count x value over ops, grouped by count so each big array is scaled once, at the
    end (sweeps of a million scenarios add dozens of arrays per step; this halves the passes)."""

    def __init__(self):
        self.groups: dict[tuple[str, float], object] = {}

    def add(self, key: str, count: float, value) -> None:
        # (key, 2) and (key, 2.0) are one slot: equal numbers hash alike
        slot = (key, count)
        if isinstance(value, np.ndarray) and value.ndim:
            current = self.groups.get(slot)
            if current is None:
                self.groups[slot] = np.array(value, dtype=float, copy=True)
            elif isinstance(current, np.ndarray) and current.shape == value.shape:
                current += value
            else:
                self.groups[slot] = current + value
            return
        if not value:
            return
        current = self.groups.get(slot)
        self.groups[slot] = float(value) if current is None else current + value

    def adopt(self, key: str, value) -> None:
        """`add(key, 1.0, value)` of an array the caller hands over (fresh, float, never used
        again): kept as the slot's sum without a copy where the slot is empty."""
        if isinstance(value, np.ndarray) and value.ndim and value.dtype == float and (key, 1.0) not in self.groups:
            self.groups[(key, 1.0)] = value
        else:
            self.add(key, 1.0, value)

    def total(self, key: str):
        out = 0.0
        for (name, count), value in self.groups.items():
            if name == key:
                out = out + (value * count if count != 1.0 else value)
        return out

    def totals(self, reuse: bool = False) -> dict:
        """Every component total, and per residual class (perfmodel.intervals) under "classes"
        (one pass over the groups, each key summed in the order `total` sums it). reuse: the
        sums are not read again, so each key's first array becomes its total (scaled and added
        to 0.0 in place, the same numbers) instead of a new one."""
        out = dict.fromkeys(TOTAL_KEYS, 0.0)
        classes: dict = {}
        started: set = set()
        for (name, count), value in self.groups.items():
            first = name not in started
            started.add(name)
            if reuse and first and isinstance(value, np.ndarray) and value.ndim:
                if count != 1.0:
                    np.multiply(value, count, out=value)
                total = np.add(value, 0.0, out=value)  # 0.0 + the first term, as _plus makes it
                if name.startswith("class:"):
                    classes[name[len("class:"):]] = total
                elif name in out:
                    out[name] = total
                continue
            scaled = value * count if count != 1.0 else value
            if name.startswith("class:"):
                name = name[len("class:"):]
                classes[name] = _plus(classes.get(name, 0.0), scaled)
            elif name in out:
                out[name] = _plus(out[name], scaled)
        out["classes"] = classes
        return out


def _plus(total, value):
    """total + value, in place where total is an array this sum made (0.0 + the first array is
    always a new one) of the result's shape: the same numbers, one array fewer per term."""
    if isinstance(total, np.ndarray) and total.shape == np.shape(value):
        total += value
        return total
    return total + value


#: Components of a step's time, each summed over its ops.
TOTAL_KEYS = ("compute_s", "memory_s", "overhead_s", "comm_s", "time_s", "host_s")


def add_op_times(sums: StepSums, ops: list[Op], times: list[OpTime], phase: str, banded: bool) -> StepSums:
    """Add count x each time component of `ops` to `sums`, and, for a spec with error bands, the
    time of each op's residual class."""
    for op, t in zip(ops, times):
        for key in TOTAL_KEYS:
            sums.add(key, op.count, getattr(t, key))
        if banded:
            sums.add("class:" + intervals.op_class(op.kind, phase), op.count, t.time_s)
    return sums


def has_bands(hw: Hardware | None) -> bool:
    """Whether a spec carries validated error bands (then steps keep their per-class times)."""
    return hw is not None and hw.calibration is not None and bool(hw.calibration.error_bands)


def host_overhead_s(model: ModelSpec, hw: Hardware, engine: Engine | str = DEFAULT_ENGINE) -> float:
    """Python time an eager framework spends per step beyond per-op dispatch: layers x the measured
    per-layer overhead (module calls) plus a per-step overhead (masks, cache bookkeeping). Compiled
    engines run no Python per layer and pay neither."""
    engine = load_engine(engine)
    if not engine.eager or hw.calibration is None:
        return 0.0
    return model.n_layers * hw.calibration.layer_overhead_s + hw.calibration.step_overhead_s


def host_dispatch_s(model: ModelSpec, hw: Hardware, engine: Engine | str = DEFAULT_ENGINE, tokens=1.0) -> object:
    """Host time of one step that launches its kernels from the host (not replayed from a CUDA
    graph): every kernel's dispatch plus `host_overhead_s`; zero where the engine replays a graph
    for `tokens` tokens. Kernel counts do not depend on batch or context, so neither does this."""
    engine = load_engine(engine)
    if hw.calibration is None:
        return 0.0
    ops = step_ops(model, seqs=1.0, new_tokens=1.0, past=1.0, p=Precision(16, 16, 16), engine=engine)
    kernels = sum(op.count * op.kernels for op in ops)
    return paid_host_s(kernels * hw.calibration.dispatch_s, model, hw, engine, tokens)


def paid_host_s(dispatch_s, model: ModelSpec, hw: Hardware, engine: Engine, tokens):
    """Host time a step pays: none when replayed from a CUDA graph (or on a datasheet spec); else
    its kernels' dispatch `dispatch_s` plus the engine's Python per layer and per step."""
    if hw.calibration is None:
        return 0.0
    if isinstance(tokens, float) and isinstance(dispatch_s, float):  # one scenario: the same in floats
        return 0.0 if engine.graphed(tokens) else dispatch_s + host_overhead_s(model, hw, engine)
    # zero where graphed, as a product with the launched steps' 0/1 mask: the same numbers as
    # np.where(graphed, 0.0, ...) at a tenth of its cost on a sweep's chunk
    launched = ~np.asarray(engine.graphed(tokens))
    return launched * (dispatch_s + host_overhead_s(model, hw, engine))


def settle_step(totals: dict, model: ModelSpec, hw: Hardware, engine: Engine, tokens, out=None) -> dict:
    """Host time by how the engine issues the step (`paid_host_s`): one launched kernel by kernel
    takes max(device time, host time), the host running ahead of the device; every step then adds
    the engine's serial per-iteration host time (step_host_s). Arrays: the time into `out` where
    given and of the time's shape (a sweep's output column)."""
    host = paid_host_s(totals["host_s"], model, hw, engine, tokens)
    totals["host_s"] = host
    time = totals["time_s"]
    if isinstance(time, float) and isinstance(host, float):  # one scenario: the same in floats
        totals["time_s"] = max(time, host) + engine.step_host_s
    else:
        fits = out is not None and np.shape(time) == out.shape
        totals["time_s"] = np.maximum(time, host, out=out if fits else None)
        if engine.step_host_s:  # (adding 0.0 would copy a sweep's array for nothing)
            totals["time_s"] += engine.step_host_s
    return totals


def step_time(model: ModelSpec, hw: Hardware, *, seqs, new_tokens, past, p: Precision, tp=1, sparse_budget=0,
              logits_tokens=None, engine: Engine | str = DEFAULT_ENGINE) -> dict:
    """Time of one forward step and its components (arrays over scenarios)."""
    engine = load_engine(engine)
    ops = step_ops(model, seqs=seqs, new_tokens=new_tokens, past=past, p=p, tp=tp, sparse_budget=sparse_budget,
                   logits_tokens=logits_tokens, engine=engine)
    sums = add_op_times(StepSums(), ops, [op_time(op, hw, p, tp) for op in ops], step_phase(new_tokens), has_bands(hw))
    return settle_step(sums.totals(), model, hw, engine, np.asarray(seqs) * new_tokens)


def mean_decode_step(model: ModelSpec, hw: Hardware, *, seqs, past_first, past_last, p: Precision, tp=1,
                     sparse_budget=0, engine: Engine | str = DEFAULT_ENGINE) -> dict:
    """Mean decode-step time over contexts past_first..past_last, exact per op (see module doc).

    Only `context_ops` (attention, a concatenated cache) depend on the context, so only they are
    evaluated at both ends; the token and logits ops are priced once."""
    engine = load_engine(engine)
    before, after = token_ops(model, tokens=seqs * 1.0, p=p, tp=tp, engine=engine, phase="decode")
    ops = before + after + logits_ops(model, logits_tokens=seqs, p=p, tp=tp, engine=engine)
    banded = has_bands(hw)
    sums = add_op_times(StepSums(), ops, [op_time(op, hw, p, tp) for op in ops], "decode", banded)
    extras = add_decode_context(sums, model, hw, seqs=seqs, past_first=past_first, past_last=past_last, p=p, tp=tp,
                                sparse_budget=sparse_budget, engine=engine, banded=banded)
    return settle_mean_decode(sums.totals(), extras, model, hw, engine, seqs)


def add_decode_context(sums: StepSums, model: ModelSpec, hw: Hardware, *, seqs, past_first, past_last,
                       p: Precision, tp, sparse_budget, engine: Engine, banded: bool) -> tuple:
    """Add the context ops' mean over a generation to `sums`: each op's compute and memory times
    are affine in the context, so its mean max(compute, memory) is `mean_max_affine` of its
    values at the first and last context. Returns (first_extra, last_extra): how much the step's
    device time at the first and last context exceeds that mean (for `settle_mean_decode`)."""
    first_ops = context_ops(model, seqs=seqs, new_tokens=1.0, past=past_first, p=p, tp=tp,
                            sparse_budget=sparse_budget, engine=engine)
    last_ops = context_ops(model, seqs=seqs, new_tokens=1.0, past=past_last, p=p, tp=tp,
                           sparse_budget=sparse_budget, engine=engine)
    first_extra, last_extra = 0.0, 0.0
    for op, late in zip(first_ops, last_ops):
        t, last = op_time(op, hw, p, tp), op_time(late, hw, p, tp)
        core = mean_max_affine(t.compute_s, last.compute_s, t.memory_s, last.memory_s)
        first_extra = first_extra + op.count * (np.maximum(t.compute_s, t.memory_s) - core)
        last_extra = last_extra + op.count * (np.maximum(last.compute_s, last.memory_s) - core)
        for key, value in (("compute_s", (t.compute_s + last.compute_s) / 2),
                           ("memory_s", (t.memory_s + last.memory_s) / 2), ("overhead_s", t.overhead_s),
                           ("comm_s", t.comm_s), ("host_s", t.host_s), ("time_s", core),
                           ("time_s", t.overhead_s), ("time_s", t.comm_s)):
            sums.add(key, op.count, value)
        if banded:
            sums.add("class:" + intervals.op_class(op.kind, "decode"), op.count, core + t.overhead_s + t.comm_s)
    return first_extra, last_extra


def settle_mean_decode(out: dict, extras: tuple, model: ModelSpec, hw: Hardware, engine: Engine, seqs) -> dict:
    """The mean over a generation of max(device time, host time) + the engine's step host time,
    the device time affine in the context between its first and last values (`extras`)."""
    host = paid_host_s(out["host_s"], model, hw, engine, seqs)
    first, last = out["time_s"] + extras[0], out["time_s"] + extras[1]
    out["host_s"] = host
    out["time_s"] = out["time_s"] + mean_max_affine(host, host, first, last) - (first + last) / 2 + engine.step_host_s
    return out
