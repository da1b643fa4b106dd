"""The fast path: a step's time from coefficients priced once per (model, hardware, precision, tp,
engine), evaluated for millions of scenarios in a few array passes.

A step's ops fall in three groups (perfmodel.ops.step_ops): token ops, whose cost depends only on
the step's token count; logits ops, only on the rows sent through the LM head; and context ops
(attention, a concatenated cache), on (sequences, new tokens, cached tokens). For a fixed (model,
hardware, precision, tp, engine, phase) the first two are functions of one whole number x each,
and `CountPricing` prices such a function once:

* x <= DIRECT_COUNTS: every time component tabulated at every count by the per-op path (exact);
* x > DIRECT_COUNTS, per op, by the structure the roofline gives it (perfmodel.roofline):
    - compute and memory time affine in x, one of them the larger for every x past the table
      (norms, elementwise ops, GEMMs on a datasheet spec): folded into one affine function per
      component, alpha + beta x;
    - affine with a crossover: kept as max(a + b x, c + d x);
    - tiled GEMMs on a calibrated GPU: past tile_m rows the tile-limited time is constant over
      each run of tile_m rows (wave quantization; `roofline.tiled_gemm_terms`), so a table per
      run q = ceil(x / tile_m) holds it and the memory rate: time = max(K[q], a x, (w + c x) / bw[q]);
      where one of the three terms is the largest at both ends of a run it is over the whole run
      (a maximum of lines is convex), so a run's GEMMs sum to one line per component
      (`StackedCells`); runs where a GEMM switches term inside are
      priced GEMM by GEMM;
    - all-reduces (their algorithm switches with the message size): piecewise linear in x,
      concave but for the custom kernel's size limit; `StackedPricing._rescaled_pieces` finds
      their pieces by bisection over runs of RUN_COUNTS counts (five per-op prices on the
      chord), a run holding a kink or step priced count by count, and a count looks up its
      run's piece and the piece's line (groups with the same tp share the pieces);
    - anything else (MoE experts, whose touched experts grow non-linearly and whose tiles are
      wave-quantized): priced per count by the per-op path.
Which case an op falls in is probed at three counts past the table (PER_COUNT_KINDS always go per count).
Past the table a count's tiled GEMMs cost one gather of its run's piece (runs with the same
lines share one; groups whose GEMMs are equal share rows) and gathers of the piece's lines from
small tables.

Context ops (attention, a concatenated cache) depend on (sequences, new tokens, cached tokens):
* decode (`ContextLines`): per (group, sequences s <= DIRECT_COUNTS), each op's compute and
  memory time is a line in the context S0, probed at four contexts; the mean decode step over
  a generation then follows perfmodel.steps.add_decode_context from the lines' values at the
  first and last context (exact: the same `mean_max_affine` of the same end values). An
  attention family with work-unit terms (roofline.attention_compute_terms) has two compute
  lines, its dot products and its units' waves: the larger at each end, as op_time takes it;
  a kernel that splits its keys by a host rule (roofline.KV_SPLIT_RULES: TensorRT-LLM's XQA and
  masked MHA) has a work term that is no line, priced at each end per scenario (`SplitWork`, the
  per-op path's own function);
* prefill (`PrefillLines`): per (group, sequences), each op's compute and memory time is a line
  or a quadratic in the prompt (causal pairs grow as P (P + 1) / 2), probed at seven prompts;
  a work-unit term steps with the prompt (its units' waves) and is priced per scenario
  (`PrefillWork`, the per-op path's own function);
* where the probes fail, for sequences past the table and for sparse attention: the per-op path
  on the scenario arrays.
A step's priced groups, lines and combined tables for one (model, spec, engine, precision groups,
prefill phase) are resolved once into a `Route`, which a sweep's chunks and a single prediction
share: one `prefill_step` and one `mean_decode_step` price both. A Scenario of scalars takes the
same coefficients in Python floats (`StackedPricing._at`: past the table its run's fused lines,
as a sweep's chunk takes them; the tables' columns kept as lists, `float_column`), which spares a
single prediction the cost of array calls. The per-op path (perfmodel.steps) stays the
reference and the source of breakdowns; tests hold the two equal to a relative 1e-9 on random
scenarios of every model family, precision, engine and tp.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

from hardware.spec import Hardware
from perfmodel import intervals, shapes
from perfmodel.engines import Engine
from perfmodel.ops import Op, Precision, context_ops, logits_ops, token_ops
from perfmodel.roofline import (OpTime, attention_compute_terms, attention_params, attention_work_s, gemm_latency_s,
                                has_longest_unit, has_work_terms, is_tiled_gemm, longest_unit_s, mean_max_affine,
                                mean_positive_affine, op_time, tiled_gemm_terms, unit_score_s, kv_split_rule, split_work_float,
                                gemm_stream_bytes)
from perfmodel.steps import (TOTAL_KEYS, StepSums, add_decode_context, add_op_times, has_bands, host_overhead_s,
                             paid_host_s, settle_mean_decode, settle_step)
from workloads.model import ModelSpec

#: Counts tabulated one by one (every decode batch up to this and short prefills are exact lookups).
DIRECT_COUNTS = 1024
#: Counts past the table at which an op's structure is probed (three distinct, far apart; the
#: last beyond any step a Scenario can describe: batch 1e7 x prompt 1e9 tokens).
_PROBES = np.array([DIRECT_COUNTS + 1.0, 8.0 * DIRECT_COUNTS + 5.0, 1.0e16 + 7.0])
#: Kinds always priced per count past the table: grouped kernels (MoE experts touch a number of
#: experts non-linear in the tokens, which saturates at the probes). Collectives are probed like
#: any op: their time is the least of affine times per algorithm (perfmodel.collectives), so the
#: same line at the first and last probe holds between them; a switch shows as a failed probe.
PER_COUNT_KINDS = ("moe",)
#: Relative tolerance of the probes' affinity test (the fast path is held to 1e-9 of the reference).
_AFFINE_RTOL = 1e-11


@dataclass(frozen=True)
class Crossing:
    """An op whose compute and memory times are affine in the count but cross past the table."""
    name: str
    count: float
    compute: tuple[float, float]
    memory: tuple[float, float]
    key: str  # its residual class channel ("class:vector", ...) or "" without bands


@dataclass(frozen=True)
class CellGemm:
    """A tiled GEMM past the table: per run q of tile_m rows, its tile-limited time and inverse
    memory rate (`CellTable`); its power-limited time slope and its bytes, affine in the count; its
    memory time is latency_s + bytes x inverse rate (roofline.gemm_latency_s)."""
    name: str
    index: int
    count: float
    power_slope: float
    bytes: tuple[float, float]
    key: str
    latency_s: float = 0.0


@dataclass(frozen=True)
class Rescaled:
    """An op priced per count by the per-op path, rebuilt from lines: every field of the op is
    affine in the count (an all-reduce's payload), so it is `template` with those fields
    recomputed, not the whole op group rebuilt."""
    template: Op
    lines: dict


class CellTable:
    """The per-run tables of a priced op group's tiled GEMMs, grown on demand (a cache held by the
    module's pricing cache, never by a spec): rows q - q0 for runs q0, q0 + 1, ..."""

    def __init__(self, ops_at: Callable, hw: Hardware, p: Precision, gemms: tuple, tile_m: float):
        self.ops_at, self.hw, self.p, self.gemms, self.tile_m = ops_at, hw, p, gemms, tile_m
        self.q0 = int(np.ceil((DIRECT_COUNTS + 1) / tile_m))
        self.tile_s = np.zeros((len(gemms), 0))
        self.inv_bw = np.zeros((len(gemms), 0))
        self.lock = threading.Lock()

    def rows(self, q_max: int) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            have = self.tile_s.shape[1]
            if self.q0 + have <= q_max:
                size = max(2 * have, q_max - self.q0 + 1, 256)
                runs = np.arange(self.q0, self.q0 + size, dtype=float)
                ops = self.ops_at(runs * self.tile_m)
                tile, inv = [], []
                for g in self.gemms:
                    op = ops[g.index]
                    tile_s, _, memory_s = tiled_gemm_terms(op, self.hw, self.p)
                    tile.append(np.broadcast_to(tile_s, runs.shape))
                    inv.append(np.broadcast_to((memory_s - g.latency_s) / gemm_stream_bytes(op, self.hw.calibration),
                                               runs.shape))
                self.tile_s, self.inv_bw = np.array(tile).reshape(len(self.gemms), -1), \
                    np.array(inv).reshape(len(self.gemms), -1)
            return self.tile_s, self.inv_bw


@dataclass(frozen=True)
class CountPricing:
    """The time components of a group of ops as a function of one whole count x (module doc).

    keys: component names (perfmodel.steps.TOTAL_KEYS, then "class:<c>" per residual class);
    table[i, x]: component i at x <= DIRECT_COUNTS; affine[i] = (alpha, beta) of the folded ops
    past it; crossings, gemms (with their `cells`) and rebuilt (op indices priced by `price`,
    the per-op path at given counts) and rescaled ops complete it. StackedPricing evaluates it
    (one precision group is a stack of one)."""
    keys: tuple[str, ...]
    table: np.ndarray
    affine: np.ndarray
    crossings: tuple[Crossing, ...]
    gemms: tuple[CellGemm, ...]
    cells: CellTable | None
    rebuilt: tuple[int, ...]
    price: Callable
    phase: str
    rescaled: tuple[Rescaled, ...] = ()


#: Types that are one number (the one-scenario route's checks; np.ndim costs ten times an
#: isinstance on a float, and a scalar prediction makes a dozen of them).
_NUMBER_TYPES = (float, int, np.floating, np.integer)


def _numbers(*values) -> bool:
    """Whether every value is one number (a Python or numpy scalar or a 0-d array), not an array."""
    for value in values:
        if not isinstance(value, _NUMBER_TYPES) and np.ndim(value):
            return False
    return True


def _add(out: dict, count: float, compute, memory, core, key: str) -> None:
    """Add one priced op past the table (its floor and host time are in the affine part)."""
    out["compute_s"] += count * compute
    out["memory_s"] += count * memory
    scaled = count * core
    out["time_s"] += scaled
    if key:
        out[key] += scaled


def _add_rows(out: dict, rows, compute, memory, core, key: str) -> None:
    """`_add` of one priced op at some rows only."""
    out["compute_s"][rows] += compute
    out["memory_s"][rows] += memory
    out["time_s"][rows] += core
    if key:
        out[key][rows] += core


def _class_key(pricing: CountPricing, op: Op) -> str:
    """The residual-class component an op adds to ("" for a spec without bands)."""
    key = "class:" + intervals.op_class(op.kind, pricing.phase)
    return key if key in pricing.keys else ""


def price_counts(ops_at: Callable, hw: Hardware, p: Precision, tp, phase: str) -> CountPricing:
    """Price the op group `ops_at(x) -> [Op]` as a function of its count x (module doc)."""
    banded = has_bands(hw)

    def price(x, indices=None):
        ops = ops_at(x)
        chosen = ops if indices is None else [ops[i] for i in indices]
        return [(op, op_time(op, hw, p, tp)) for op in chosen]

    counts = np.maximum(np.arange(DIRECT_COUNTS + 1, dtype=float), 1.0)
    direct = price(counts)
    classes = sorted({"class:" + intervals.op_class(op.kind, phase) for op, _ in direct}) if banded else []
    keys = TOTAL_KEYS + tuple(classes)
    table = np.zeros((len(keys), counts.size))
    for op, t in direct:
        for i, key in enumerate(TOTAL_KEYS):
            table[i] += op.count * np.broadcast_to(getattr(t, key), counts.shape)
        if banded:
            table[keys.index("class:" + intervals.op_class(op.kind, phase))] += \
                op.count * np.broadcast_to(t.time_s, counts.shape)
    probed = price(_PROBES)
    affine, crossings, gemms, per_count = _classify(probed, hw, p, keys, phase, banded)
    cells = CellTable(ops_at, hw, p, tuple(gemms), float(hw.calibration.tile_m)) if gemms else None
    lines = {i: _field_lines(probed[i][0]) for i in per_count}
    rescaled = tuple(Rescaled(probed[i][0], lines[i]) for i in per_count if lines[i] is not None)
    rebuilt = tuple(i for i in per_count if lines[i] is None)
    return CountPricing(keys, table, affine, tuple(crossings), tuple(gemms), cells, rebuilt,
                        lambda x, indices: price(x, indices), phase, rescaled)


#: Op fields that may vary with the count.
_OP_FIELDS = ("flops", "weight_bytes", "act_bytes", "kv_bytes", "m", "n", "k", "comm_bytes", "groups", "out_bytes")


def _field_lines(op: Op) -> dict | None:
    """{field: (alpha, beta)} of every numeric field of the op (beta 0 where constant), when all
    of them are affine in the count at _PROBES; None otherwise (then the op group is rebuilt at
    the counts). Constant fields are kept too: precision groups stacked differ in them (tp)."""
    lines = {}
    for name in _OP_FIELDS:
        value = getattr(op, name)
        line = (float(np.ravel(value)[0]), 0.0) if _is_constant(value) else _line(value)
        if line is None:
            return None
        lines[name] = line
    return lines


def _classify(probed: list, hw: Hardware, p: Precision, keys: tuple, phase: str, banded: bool):
    """Sort each op by its structure past the table (module doc) from its times at _PROBES."""
    affine = np.zeros((len(keys), 2))
    crossings, gemms, rebuilt = [], [], []
    for index, (op, t) in enumerate(probed):
        key = "class:" + intervals.op_class(op.kind, phase) if banded else ""
        cells = is_tiled_gemm(op, hw, p) and op.kind == "matmul" and np.all(np.asarray(op.groups) == 1) \
            and hw.calibration.tile_m <= DIRECT_COUNTS
        constant = all(_is_constant(getattr(t, name)) for name in ("overhead_s", "comm_s", "host_s"))
        if cells and constant:
            tile_s, power_s, _ = tiled_gemm_terms(op, hw, p)
            bytes_line = _line(gemm_stream_bytes(op, hw.calibration))
            if bytes_line is None:
                rebuilt.append(index)
                continue
            gemms.append(CellGemm(op.name, index, float(op.count), float(np.broadcast_to(power_s, _PROBES.shape)[0] / _PROBES[0]),
                                  bytes_line, key, float(gemm_latency_s(hw.calibration))))
            _fold_constants(affine, keys, op, t, key)
            continue
        compute, memory = _line(t.compute_s), _line(t.memory_s)
        unchanging = constant and all(_is_constant(getattr(t, name)) for name in ("compute_s", "memory_s"))
        if (op.kind in PER_COUNT_KINDS and not unchanging) or compute is None or memory is None or not constant:
            rebuilt.append(index)
            continue
        _fold_constants(affine, keys, op, t, key)
        gap, slope = compute[0] + compute[1] * _PROBES[0] - (memory[0] + memory[1] * _PROBES[0]), compute[1] - memory[1]
        if (gap >= 0 and slope >= 0) or (gap <= 0 and slope <= 0):
            line = compute if gap >= 0 else memory
            for name, part in (("compute_s", compute), ("memory_s", memory), ("time_s", line)):
                affine[keys.index(name)] += op.count * np.array(part)
            if key:
                affine[keys.index(key)] += op.count * np.array(line)
        else:
            crossings.append(Crossing(op.name, float(op.count), compute, memory, key))
    return affine, crossings, gemms, rebuilt


def _fold_constants(affine: np.ndarray, keys: tuple, op: Op, t: OpTime, key: str) -> None:
    """An op's floor, communication and host time, constant past the table, into the affine part."""
    fixed = {name: float(np.broadcast_to(getattr(t, name), _PROBES.shape)[0]) for name in ("overhead_s", "comm_s", "host_s")}
    for name, value in fixed.items():
        affine[keys.index(name), 0] += op.count * value
    constant = fixed["overhead_s"] + fixed["comm_s"]
    affine[keys.index("time_s"), 0] += op.count * constant
    if key:
        affine[keys.index(key), 0] += op.count * constant


def _is_constant(values) -> bool:
    v = np.broadcast_to(np.asarray(values, dtype=float), _PROBES.shape)
    return bool(np.all(v == v[0]))


def _line(values) -> tuple[float, float] | None:
    """(alpha, beta) when `values` at _PROBES lie on alpha + beta x, else None."""
    v = np.broadcast_to(np.asarray(values, dtype=float), _PROBES.shape)
    if not np.all(np.isfinite(v)):
        return None
    beta = (v[1] - v[0]) / (_PROBES[1] - _PROBES[0])
    alpha = v[0] - beta * _PROBES[0]
    predicted = alpha + beta * _PROBES[2]
    scale = max(abs(v[2]), abs(v[0]), 1e-300)
    return (float(alpha), float(beta)) if abs(predicted - v[2]) <= _AFFINE_RTOL * scale else None


# -- steps -----------------------------------------------------------------------------------------

#: Priced op groups by (model, spec, engine, precision, tp, group, phase) identity; bounded.
_PRICINGS: dict = {}
_PRICINGS_LOCK = threading.Lock()
_MAX_PRICINGS = 512


def count_pricing(model: ModelSpec, hw: Hardware, engine: Engine, p: Precision, tp, group: str,
                  phase: str) -> CountPricing:
    """The priced op group ("tokens", "logits" or "decode": a decode step's token and logits ops,
    whose counts are equal) for scalar precisions and tp, computed once and cached."""
    key = (id(model), id(hw), id(engine), float(p.w_bits), float(p.a_bits), float(p.kv_bits),
           float(p.quant_group), p.weight_only_kernel, float(tp), group, phase)
    hit = _PRICINGS.get(key)
    if hit is not None and hit[0] is model and hit[1] is hw and hit[2] is engine:
        return hit[3]

    def tokens(x):
        before, after = token_ops(model, tokens=x, p=p, tp=tp, engine=engine, phase=phase)
        return before + after

    def logits(x):
        return logits_ops(model, logits_tokens=x, p=p, tp=tp, engine=engine)

    group_ops = {"tokens": tokens, "logits": logits, "decode": lambda x: tokens(x) + logits(x)}[group]
    pricing = price_counts(group_ops, hw, p, tp, phase)
    with _PRICINGS_LOCK:
        if len(_PRICINGS) >= _MAX_PRICINGS:
            _PRICINGS.clear()
        _PRICINGS[key] = (model, hw, engine, pricing)
    return pricing


def stacked_pricing(model: ModelSpec, hw: Hardware, engine: Engine, groups: tuple, group: str,
                    phase: str) -> StackedPricing:
    """The StackedPricing of op group `group` over precision groups `groups` ((w_bits, a_bits,
    kv_bits, quant_group, tp) each), cached like count_pricing."""
    key = (id(model), id(hw), id(engine), groups, group, phase, "stacked")
    hit = _PRICINGS.get(key)
    if hit is not None and hit[0] is model and hit[1] is hw and hit[2] is engine:
        return hit[3]
    stacked = StackedPricing([count_pricing(model, hw, engine, Precision(w, a, kv, qg), tp, group, phase)
                              for w, a, kv, qg, tp in groups], hw, [tp for *_, tp in groups], groups)
    with _PRICINGS_LOCK:
        _PRICINGS[key] = (model, hw, engine, stacked)
    return stacked


@dataclass(frozen=True, eq=False)
class Route:
    """Everything the fast path looks up to price the steps of one (model, spec, engine, precision
    groups, prefill phase), resolved once: the priced token and logits groups of the prefill's
    phase, its context ops' polynomials, the priced decode group and its context lines, and each
    step's table of counts with its context ops' constants summed in (`_combined_table`: the
    logits with the prefill's, the decode group with the decode's). perfmodel.predict keeps one
    per (model, spec, engine, precision groups, phase), so a scalar prediction does one cache
    lookup and then only arithmetic (the seven lookups of their own cost it 5 us of its 100); a
    sweep's chunks take the same objects, so both go through the one `prefill_step` and
    `mean_decode_step`."""
    model: ModelSpec
    hw: Hardware
    engine: Engine
    groups: tuple
    phase: str  # the prefill's (perfmodel.ops.step_phase of its prompt)
    precision: Precision  # the first group's (`group_precision`): one scenario's own
    tokens: StackedPricing
    logits: StackedPricing
    prefill_lines: PrefillLines | None
    decode: StackedPricing
    context_lines: ContextLines | None
    prefill_table: tuple | None  # `_combined_table` of the logits and the prefill lines' constants
    decode_table: tuple | None  # `_combined_table` of the decode group and the context lines' constants


def route(model: ModelSpec, hw: Hardware, engine: Engine, groups: tuple, phase: str) -> Route:
    """The Route of precision groups `groups` ((w_bits, a_bits, kv_bits, quant_group, tp) each)
    whose prefills are of `phase`, from its parts' caches (the first call prices them)."""
    logits, decode = (stacked_pricing(model, hw, engine, groups, "logits", phase),
                      stacked_pricing(model, hw, engine, groups, "decode", "decode"))
    prefill = prefill_lines(model, hw, engine, groups) if phase == "prefill" else None
    context = context_lines(model, hw, engine, groups)
    return Route(model, hw, engine, groups, phase, group_precision(groups[0]),
                 stacked_pricing(model, hw, engine, groups, "tokens", phase), logits, prefill, decode, context,
                 None if prefill is None else _combined_table(logits, prefill.constants),
                 None if context is None else _combined_table(decode, context.constants))


def prefill_step(route: Route, *, batch, prompt, p: Precision, tp, group, memo: dict | None = None,
                 into: dict | None = None) -> dict:
    """perfmodel.steps.step_time of a prefill (seqs = batch, new tokens = prompt, no cache, logits
    for every sequence) from the route's priced token and logits groups plus the per-op attention.
    group: each scenario's index into the route's precision groups; p and tp the scenarios' own
    values. `into`: arrays by component (a sweep's output columns) its time is written into where
    it can be."""
    tokens = batch * prompt
    # both parts are fresh arrays (or floats): sum the logits into the tokens' and hand those over
    # (the token count's shape holds the batch's)
    part = route.tokens.evaluate(tokens, group, p, tp)
    lines = route.prefill_lines
    covered = lines is not None and lines.covers(batch, group)
    one = isinstance(batch, float) and isinstance(group, int)
    if covered:
        # the logits rows and the attention's constants share their columns: one lookup for both
        at = table_columns(group, batch, memo)
        # (one scenario's column added as it is read, without a dict of it)
        values = zip(route.prefill_table[0], float_column(route.prefill_table[1], at)) if one else \
            _combined_lookup(route.prefill_table, at).items()
    else:
        values = route.logits.evaluate(batch, group, p, tp).items()
    if one:  # the logits of one count: floats, added without the array checks
        for key, value in values:
            if value:
                part[key] = part.get(key, 0.0) + value
    else:
        for key, value in values:
            total = part.get(key, 0.0)
            if not isinstance(value, np.ndarray) and not value:
                continue  # nothing to add (a component zero in every column)
            if isinstance(total, np.ndarray) and total.ndim and _holds(total.shape, np.shape(value)):
                total += value
            else:
                part[key] = total + value
    if covered:
        lines.add(part, batch, group, prompt, at)
    else:
        model, hw, engine = route.model, route.hw, route.engine
        ops = context_ops(model, seqs=batch, new_tokens=prompt, past=0.0, p=p, tp=tp, engine=engine)
        banded = has_bands(hw)
        for op in ops:  # count x each component into the part's own arrays (perfmodel.steps.add_op_times)
            t = op_time(op, hw, p, tp)
            for key in TOTAL_KEYS:
                _add_into(part, key, op.count, getattr(t, key))
            if banded:
                _add_into(part, "class:" + intervals.op_class(op.kind, route.phase), op.count, t.time_s)
    return settle_step(_totals(part), route.model, route.hw, route.engine, tokens,
                       out=None if into is None else into.get("time_s"))


def _totals(part: dict) -> dict:
    """A step's priced components as perfmodel.steps returns them: every TOTAL_KEYS entry, and its
    residual classes' times under "classes" (the rest of `part`: its "class:<c>" components, named
    from _CLASS_NAMES: a slice makes a new string to hash, a fifth of a microsecond a class)."""
    totals = {key: part.pop(key) for key in TOTAL_KEYS}
    totals["classes"] = {_CLASS_NAMES.get(key) or key[len("class:"):]: value for key, value in part.items()}
    return totals


#: The residual class of each class component ("class:<c>" -> "<c>").
_CLASS_NAMES = {"class:" + name: name for name in intervals.BAND_CLASSES}


def table_columns(group, counts, memo: dict | None = None):
    """The direct tables' columns group * (DIRECT_COUNTS + 1) + count of scenarios (every count in
    the table; an int for one scenario). `memo` (one chunk's, from its caller) keeps the columns
    by the counts' array: a prefill's batch and its decode's sequences are one array where
    samples is 1, and their columns are computed once."""
    if isinstance(counts, float) and not isinstance(group, np.ndarray):  # one scenario
        return int(group) * (DIRECT_COUNTS + 1) + int(counts)
    key = id(counts)
    hit = None if memo is None else memo.get(key)
    if hit is not None and hit[0] is counts and hit[1] is group:
        return hit[2]
    at = np.asarray(group) * (DIRECT_COUNTS + 1) + np.asarray(counts).astype(np.intp)
    if memo is not None:
        memo[key] = (counts, group, at)
    return at


def _holds(shape: tuple, other: tuple) -> bool:
    """Whether an array of `shape` holds the broadcast of itself with one of `other` (an in-place
    add fits); the common cases (equal shapes, a number) without np.broadcast_shapes, which
    costs microseconds a call."""
    if other == shape or other == ():
        return True
    try:
        return shape == np.broadcast_shapes(shape, other)
    except ValueError:
        return False


def _add_into(part: dict, key: str, count: float, value) -> None:
    """part[key] += count x value, in place where part[key] is an array of the result's shape
    (the parts are fresh arrays of this call); zeros skipped."""
    if not isinstance(value, np.ndarray) or not value.ndim:  # a number: in place into an array total
        if not value:
            return
        scaled = count * float(value)
        total = part.get(key, 0.0)
        if isinstance(total, np.ndarray) and total.ndim:
            total += scaled
        else:
            part[key] = total + scaled
        return
    scaled = value if count == 1.0 else count * value
    total = part.get(key, 0.0)
    if isinstance(total, np.ndarray) and total.ndim and _holds(total.shape, scaled.shape):
        total += scaled
    else:
        part[key] = total + scaled


_GROUP_PRECISIONS: dict = {}


def group_precision(group: tuple) -> Precision:
    """The Precision of a precision group ((w_bits, a_bits, kv_bits, quant_group, tp)), one object
    per group, so the rates roofline caches on it are priced once (a scalar prediction's
    per-op attention would price them on every call)."""
    hit = _GROUP_PRECISIONS.get(group)
    if hit is None:
        if len(_GROUP_PRECISIONS) >= _MAX_PRICINGS:
            _GROUP_PRECISIONS.clear()
        hit = _GROUP_PRECISIONS[group] = Precision(*group[:4])
    return hit


def mean_decode_step(route: Route, *, seqs, past_first, past_last, p: Precision, tp, sparse_budget, group,
                     memo: dict | None = None, into: dict | None = None, offsets: dict | None = None) -> dict:
    """perfmodel.steps.mean_decode_step from the route's priced decode group plus the context ops'
    mean: from their per-(group, sequences) lines in the context (`ContextLines`) where every row
    has a count in the table and dense attention, else (or for the rows that have not) per op.
    `into`: arrays by component (a sweep's output columns) the tabled rows' components are
    gathered into where they are arrays to the end (`_combined_lookup`); `offsets`: the spec's
    class offsets (intervals.class_offsets), which tabled rows sum into their band offsets
    (`_tabled_mean_decode`)."""
    lines = route.context_lines
    if lines is not None:
        rows = lines.rows(seqs, sparse_budget, group)
        if rows is None:
            return _tabled_mean_decode(route, seqs, past_first, past_last, p, tp, group, memo, into, offsets)
        if rows.size:
            return _mixed_mean_decode(route, rows, seqs=seqs, past_first=past_first, past_last=past_last, p=p, tp=tp,
                                      sparse_budget=sparse_budget, group=group)
    return _per_op_mean_decode(route, seqs=seqs, past_first=past_first, past_last=past_last, p=p, tp=tp,
                               sparse_budget=sparse_budget, group=group)


def _per_op_mean_decode(route: Route, *, seqs, past_first, past_last, p: Precision, tp, sparse_budget,
                        group) -> dict:
    """`mean_decode_step` with the context ops priced per op on the scenario arrays."""
    sums = StepSums()
    for key, value in route.decode.evaluate(seqs, group, p, tp).items():
        sums.adopt(key, value)  # fresh arrays of this call
    model, hw, engine = route.model, route.hw, route.engine
    extras = add_decode_context(sums, model, hw, seqs=seqs, past_first=past_first, past_last=past_last, p=p,
                                tp=tp, sparse_budget=sparse_budget, engine=engine, banded=has_bands(hw))
    return settle_mean_decode(sums.totals(reuse=True), extras, model, hw, engine, seqs)


def _tabled_mean_decode(route: Route, seqs, past_first, past_last, p, tp, group, memo=None, into=None,
                        offsets=None) -> dict:
    """`mean_decode_step` of rows whose context ops all come from the route's context lines (every
    count in the table); its components gathered into `into`'s arrays where given
    (`_combined_lookup`), which the context ops' means and the step's host time are then added to
    in place. Arrays with the class `offsets` (intervals.class_offsets): the step's band offsets
    under "band_offsets", its classes empty (the band needs no pass over each class's time)."""
    model, hw, engine, lines = route.model, route.hw, route.engine, route.context_lines
    if offsets is not None and _numbers(seqs, group):  # one scenario: its band from its classes' times
        offsets = None
    # the decode rows and the context ops' constants share their columns: one lookup for both
    at = table_columns(group, seqs, memo)
    table = route.decode_table if offsets is None else _combined_table(route.decode, lines.constants, offsets)
    parts = _combined_lookup(table, at, into)
    # every step replayed from a graph (or no host time at all): the mean of max(device, host) is
    # the device time's own mean, so settle_mean_decode would add and take away the same mean
    graphed = hw.calibration is None or engine.graphed(seqs)
    replayed = graphed if isinstance(graphed, bool) else bool(np.all(graphed))
    extras = lines.add_mean(parts, at, past_first, past_last, extras=not replayed, offsets=offsets)
    band_offsets = None if offsets is None else tuple(parts.pop(key, 0.0) for key in BAND_KEYS)
    totals = _totals(parts)
    if band_offsets is not None:
        totals["band_offsets"] = band_offsets
    if replayed:
        dispatch = totals["host_s"]
        array = not isinstance(seqs, float) and isinstance(dispatch, float) and hw.calibration is not None \
            and not _numbers(seqs)
        host = dispatch + host_overhead_s(model, hw, engine) if array else None
        if host is not None and 0.0 <= host < math.inf:
            # paid_host_s where every step replays a graph: not launched (0) x a finite,
            # non-negative host time is 0.0 in every row (without its three passes)
            totals["host_s"] = np.zeros(np.shape(seqs))
        else:
            totals["host_s"] = paid_host_s(dispatch, model, hw, engine, seqs)
        if engine.step_host_s:  # (in place where an array: this call's own, perhaps an output column)
            _add_into(totals, "time_s", 1.0, engine.step_host_s)
        return totals
    return settle_mean_decode(totals, extras, model, hw, engine, seqs)


def _mixed_mean_decode(route: Route, rows, *, seqs, past_first, past_last, p, tp, sparse_budget, group) -> dict:
    """`mean_decode_step` of a chunk of which only `rows` (flat indices) come from the route's
    context lines: those rows tabled, the others per op, put back together."""
    shape = np.broadcast_shapes(*(np.shape(v) for v in (seqs, past_first, past_last, group, sparse_budget, tp,
                                                      p.w_bits, p.a_bits, p.kv_bits, p.quant_group)))
    size = int(np.prod(shape))
    others = np.setdiff1d(np.arange(size), rows, assume_unique=True)
    pick = lambda value, at: _pick(value, at, shape)  # noqa: E731
    tabled = _tabled_mean_decode(route, pick(seqs, rows), pick(past_first, rows), pick(past_last, rows),
                                 _pick_precision(p, rows, shape), pick(tp, rows), pick(group, rows))
    rest = _per_op_mean_decode(route, seqs=pick(seqs, others), past_first=pick(past_first, others),
                               past_last=pick(past_last, others), p=_pick_precision(p, others, shape),
                               tp=pick(tp, others), sparse_budget=pick(sparse_budget, others),
                               group=pick(group, others))

    def merge(a, b):
        out = np.empty(size)
        out[rows], out[others] = a, b
        return out.reshape(shape)

    out = {key: merge(tabled[key], rest[key]) for key in TOTAL_KEYS}
    names = set(tabled["classes"]) | set(rest["classes"])
    out["classes"] = {name: merge(tabled["classes"].get(name, 0.0), rest["classes"].get(name, 0.0)) for name in names}
    return out


#: Contexts (cached tokens) at which the context ops' affinity in the context is probed: the last
#: beyond any context a Scenario can describe (prompt + gen <= 2e9 tokens).
_PAST_PROBES = np.array([0.0, 4096.0, 16777216.0, 1099511627776.0])


@dataclass(frozen=True)
class ContextLines:
    """The context ops of a decode step (perfmodel.ops.context_ops: attention, a concatenated
    cache) as lines in the context S0, per precision group and sequence count s <= DIRECT_COUNTS:
    for every op, count x compute and count x memory time at S0 are c0 + c1 S0 and m0 + m1 S0
    (rows 4 i .. 4 i + 3 of `table`, column group * (DIRECT_COUNTS + 1) + s), its floor,
    communication and host time constant (summed into `constants`, one row per TOTAL_KEYS entry
    and per class key: the floor and communication each op's class adds). Built only where the
    per-op path is affine in S0 at _PAST_PROBES for every op, group and count; a step's mean
    over a generation then follows perfmodel.steps.add_decode_context from the two ends."""
    table: np.ndarray
    op_keys: tuple[str, ...]
    constants: dict
    #: per op, "memory" or "compute" where that time is at least the other's at every context of
    #: every column (both coefficients at least the other's), else "": the mean of the max is
    #: then that time's mean, its value at the middle context (an affine function's mean)
    dominant: tuple[str, ...] = ()
    #: count x the work-unit term of an attention family that has one (roofline.attention_work_s),
    #: a line in S0 too: rows `work_rows[i]` and the next of `table`, after every op's four, for
    #: op i (None: no such term; in the same table, one scenario reads one column of floats).
    #: The op's compute time at a context is then the larger of the two lines there, as op_time
    #: takes it (roofline.attention_compute_terms).
    work_rows: tuple = ()
    #: per op, the work-unit term of a kernel that splits its keys by a host rule (`SplitWork`:
    #: not a line in S0) or None; () where no op has one
    split_work: tuple = ()

    def _split(self, i: int):
        return self.split_work[i] if self.split_work else None

    def rows(self, seqs, sparse_budget, group):
        """None where every scenario has a count in the table and dense attention, else the flat
        indices of those that have (possibly none)."""
        if isinstance(seqs, float) and isinstance(sparse_budget, float) and not isinstance(group, np.ndarray):
            return None if seqs <= DIRECT_COUNTS and not sparse_budget else _NO_ROWS  # one scenario
        ok = np.asarray(seqs) <= DIRECT_COUNTS
        if np.ndim(sparse_budget) or sparse_budget:
            ok = ok & (np.asarray(sparse_budget) == 0)
        if np.all(ok):
            return None
        shape = np.broadcast_shapes(np.shape(ok), np.shape(group))
        return np.flatnonzero(np.broadcast_to(ok, shape))

    def add_mean(self, parts: dict, at, past_first, past_last, extras: bool = True,
                 offsets: dict | None = None) -> tuple | None:
        """Add the context ops' mean over contexts past_first..past_last at table columns `at`
        (`table_columns`) to the priced token and logits components `parts`, which hold the
        constants already (`_combined_lookup`; in place where they are arrays); return the
        device time's excess over that mean at the two ends (perfmodel.steps.add_decode_context),
        where `extras` asks for it. With its class `offsets`, each op's time adds to the band
        offsets, not to its class (arrays only: `_add_core`)."""
        if isinstance(at, int) and isinstance(past_first, float) and isinstance(past_last, float):
            # one scenario: in Python floats (`parts` holds every TOTAL_KEYS)
            column = float_column(self.table, at)
            first, last = past_first, past_last
            first_extra, last_extra = 0.0, 0.0
            for i, key in enumerate(self.op_keys):
                c0, c1, m0, m1 = column[4 * i:4 * i + 4]
                compute_first, compute_last = c0 + c1 * first, c0 + c1 * last
                row, split = (self.work_rows[i] if self.work_rows else None), self._split(i)
                if row is not None:
                    w0, w1 = column[row:row + 2]
                    compute_first, compute_last = max(compute_first, w0 + w1 * first), max(compute_last, w0 + w1 * last)
                elif split is not None:
                    compute_first = max(compute_first, split.time_s(at, first))
                    compute_last = max(compute_last, split.time_s(at, last))
                memory_first, memory_last = m0 + m1 * first, m0 + m1 * last
                core = mean_max_affine(compute_first, compute_last, memory_first, memory_last)
                if extras:
                    first_extra += max(compute_first, memory_first) - core
                    last_extra += max(compute_last, memory_last) - core
                _add_floats(parts, (compute_first + compute_last) / 2, (memory_first + memory_last) / 2, core, key)
            return (first_extra, last_extra) if extras else None
        first, last = past_first, past_last
        take = lambda row: gather(self.table[row], at)  # noqa: E731
        first_extra, last_extra = 0.0, 0.0
        middle = None
        for i, key in enumerate(self.op_keys):
            c0, c1, m0, m1 = (take(4 * i + j) for j in range(4))
            row, split = (self.work_rows[i] if self.work_rows else None), self._split(i)
            if row is None and self.dominant and self.dominant[i] and not extras:
                # one time dominates at every context (`dominant`): each mean is the line at the
                # middle context and the mean of the max is the dominant one's (mean_max_affine)
                if middle is None:
                    middle = np.add(first, last)
                    middle /= 2
                compute = c1 * middle
                compute += c0
                memory = m1 * middle
                memory += m0
                core = memory if self.dominant[i] == "memory" else compute
                _add_core(parts, compute, memory, core, key, offsets)
                continue
            compute_first, compute_last = _ends(c0, c1, first, last)
            if row is not None:  # the larger of the dot-product and work-unit lines at each end, as op_time's
                work_first, work_last = _ends(take(row), take(row + 1), first, last)
                compute_first = _into(np.maximum, compute_first, work_first)
                compute_last = _into(np.maximum, compute_last, work_last)
            elif split is not None:
                compute_first = _into(np.maximum, compute_first, split.time_s(at, first))
                compute_last = _into(np.maximum, compute_last, split.time_s(at, last))
            memory_first, memory_last = _ends(m0, m1, first, last)
            memory = memory_first + memory_last
            memory /= 2  # in place: the mean's temporaries are this call's own
            if extras:
                core = mean_max_affine(compute_first, compute_last, memory_first, memory_last)
                first_extra = first_extra + (np.maximum(compute_first, memory_first) - core)
                last_extra = last_extra + (np.maximum(compute_last, memory_last) - core)
            else:  # mean_max_affine with the memory mean at hand, the ends' differences in their arrays
                core = mean_positive_affine(_into(np.subtract, compute_first, memory_first),
                                            _into(np.subtract, compute_last, memory_last))
                core = core + memory if np.shape(core) != np.shape(memory) else np.add(core, memory, out=core)
            compute = compute_first + compute_last
            compute /= 2
            _add_core(parts, compute, memory, core, key, offsets)
        return (first_extra, last_extra) if extras else None


def _add_floats(parts: dict, compute: float, memory: float, core: float, key: str) -> None:
    """Add one scenario's op compute, memory and device time to a step's components (which hold
    every TOTAL_KEYS entry), and its time to its residual class `key` ("" without bands)."""
    parts["compute_s"] += compute
    parts["memory_s"] += memory
    parts["time_s"] += core
    if key:
        parts[key] = parts.get(key, 0.0) + core


def _add_core(parts: dict, compute, memory, core, key: str, offsets: dict | None) -> None:
    """Add an op's compute, memory and device time (arrays) to a step's components, and its time
    to its residual class `key` ("class:<c>"; "" without bands), or, given the class `offsets`
    (intervals.class_offsets), core x (p10_c - 1) and core x (p90_c - 1) to the step's band
    offsets ("band:p10", "band:p90"; nothing for a class without a band)."""
    for name, value in (("compute_s", compute), ("memory_s", memory), ("time_s", core)):
        _add_into(parts, name, 1.0, value)
    if not key:
        return
    if offsets is None:
        _add_into(parts, key, 1.0, core)
        return
    factors = offsets.get(key[len("class:"):])
    if factors:
        for name, factor in zip(BAND_KEYS, factors):
            _add_into(parts, name, factor, core)


#: The fast path's band offsets of a step (intervals.class_offsets), in place of its classes.
BAND_KEYS = ("band:p10", "band:p90")


def _ends(alpha, beta, first, last) -> tuple:
    """alpha + beta x at x = first and at x = last, from a line's coefficients gathered for this
    call (the second end computed in beta's own array where it holds it: one temporary fewer)."""
    at_first = _into(np.add, alpha, beta * first)
    return at_first, _into(np.add, alpha, _into(np.multiply, last, beta))


def _into(ufunc, a, b):
    """ufunc(a, b), written into b where b is an array of this call that holds the result (the
    same doubles as a new array; the operand order kept)."""
    if isinstance(b, np.ndarray) and b.ndim and _holds(b.shape, np.shape(a)):
        return ufunc(a, b, out=b)
    return ufunc(a, b)


_NO_ROWS = np.array([], dtype=np.intp)
_COMBINED: dict = {}


def _combined_lookup(combined: tuple, at, into: dict | None = None) -> dict:
    """Every component of a StackedPricing at direct-table columns `at` (group * (DIRECT_COUNTS + 1)
    + count, every count in the table) with a step's context ops' constants added, from their
    `_combined_table`: one gather a component (a copy for one equal to an earlier one: an
    all-reduce's time is its communication), none for a component the same in every column (a
    number: callers add it as one); one scenario's column as Python floats. A component with an
    array in `into` (a sweep's output column) is gathered or copied into it, which spares the
    caller a copy of its result."""
    keys, table, flat, same = combined
    if isinstance(at, int):  # one scenario: its column in Python floats
        return dict(zip(keys, float_column(table, at)))
    out: dict = {}
    for i, name in enumerate(keys):
        slot = None if into is None else into.get(name)
        if flat[i]:
            out[name] = float(table[i, 0])
        elif same[i] < i:  # a copy (np.positive: the same doubles, -0.0 kept), into its slot where given
            out[name] = np.positive(out[keys[same[i]]], out=slot)
        else:
            out[name] = gather(table[i], at, slot)
    return out


def _combined_table(stacked: "StackedPricing", constants: dict, offsets: dict | None = None) -> tuple:
    """(keys, table, flat, same) of `_combined_lookup`: the direct table of `stacked` and the
    `constants` (rows over the same columns: a step's context ops' floors) summed, which rows are
    one number, which equal an earlier one; cached per (stacked, constants, offsets). With class
    `offsets` (intervals.class_offsets) the class rows are summed into the two band offsets
    (BAND_KEYS): two gathers for every class, not one a class and a pass each."""
    banded = None if offsets is None else tuple(sorted(offsets.items()))
    key = (id(stacked), id(constants), banded)
    hit = _COMBINED.get(key)
    if hit is None or hit[0] is not stacked or hit[1] is not constants:
        keys = list(stacked.keys) + [name for name in constants if name not in stacked.keys]
        table = np.zeros((len(keys), stacked.table.shape[1]))
        table[:len(stacked.keys)] = stacked.table
        for name, values in constants.items():
            table[keys.index(name)] += values
        if offsets is not None:
            keys, table = _band_rows(keys, table, offsets)
        flat = np.all(table == table[:, :1], axis=1)
        same = [next((j for j in range(i) if np.array_equal(table[j], table[i])), i) for i in range(len(keys))]
        with _PRICINGS_LOCK:
            if len(_COMBINED) >= _MAX_PRICINGS:
                _COMBINED.clear()
            hit = _COMBINED[key] = (stacked, constants, (tuple(keys), table, flat, same))
    return hit[2]


_FLOAT_COLUMNS: dict = {}


def float_column(table: np.ndarray, at: int) -> list:
    """Column `at` of a priced table as Python floats (a scalar prediction's lookups: an item of a
    list costs a fraction of a numpy column's .tolist()): from the table's columns kept as lists
    (`_keep_float_columns`), else from the array."""
    hit = _FLOAT_COLUMNS.get(id(table))
    if hit is not None and hit[0] is table:
        return hit[1][at]
    columns = _keep_float_columns(table)
    return table[:, at].tolist() if columns is None else columns[at]


#: Most cells of a table whose columns `float_column` keeps as lists (1 MB of Python floats: a
#: scalar prediction's tables are one precision group's, ten thousand cells or so), and most
#: tables kept.
_MAX_FLOAT_CELLS = 1 << 15
_MAX_FLOAT_TABLES = 64


def _keep_float_columns(table: np.ndarray) -> list | None:
    """The columns of a priced table as lists of Python floats, kept per table (None: too large
    to keep)."""
    if table.size > _MAX_FLOAT_CELLS:
        return None
    columns = table.T.tolist()
    with _PRICINGS_LOCK:
        if len(_FLOAT_COLUMNS) >= _MAX_FLOAT_TABLES:
            _FLOAT_COLUMNS.clear()
        _FLOAT_COLUMNS[id(table)] = (table, columns)
    return columns


def _band_rows(keys: list, table: np.ndarray, offsets: dict) -> tuple[list, np.ndarray]:
    """(keys, table) with the class rows ("class:<c>") replaced by the band offsets (BAND_KEYS):
    sum_c row_c x (p_c - 1) over the classes with a band (`_add_core`)."""
    classes = [i for i, name in enumerate(keys) if name.startswith("class:")]
    bands = np.zeros((len(BAND_KEYS), table.shape[1]))
    for i in classes:
        for j, factor in enumerate(offsets.get(keys[i][len("class:"):], ())):
            bands[j] += table[i] * factor
    kept = [i for i in range(len(keys)) if i not in classes]
    return [keys[i] for i in kept] + list(BAND_KEYS), np.concatenate([table[kept], bands])


_CONTEXT_LINES: dict = {}


def _cached_lines(cache: dict, model: ModelSpec, hw: Hardware, engine: Engine, groups: tuple, build):
    """build(model, hw, engine, groups), cached in `cache` per (model, hw, engine, groups) like
    count_pricing (keyed by identity, checked against the objects themselves)."""
    key = (id(model), id(hw), id(engine), groups)
    hit = cache.get(key)
    if hit is not None and hit[0] is model and hit[1] is hw and hit[2] is engine:
        return hit[3]
    lines = build(model, hw, engine, groups)
    with _PRICINGS_LOCK:
        if len(cache) >= _MAX_PRICINGS:
            cache.clear()
        cache[key] = (model, hw, engine, lines)
    return lines


def context_lines(model: ModelSpec, hw: Hardware, engine: Engine, groups: tuple) -> ContextLines | None:
    """The ContextLines of precision groups `groups` ((w_bits, a_bits, kv_bits, quant_group, tp)
    each), None where some context op is not affine in the context; cached like count_pricing."""
    return _cached_lines(_CONTEXT_LINES, model, hw, engine, groups, _price_context_lines)


def _price_lines(model: ModelSpec, hw: Hardware, engine: Engine, groups: tuple, phase: str, probes: np.ndarray,
                 fit) -> tuple | None:
    """(table, op keys, shared constants, work terms) of the context ops of precision groups
    `groups` at every sequence count up to DIRECT_COUNTS and at each probe (cached tokens of a
    decode step, prompt tokens of a prefill): each op's compute and memory time as the
    coefficients `fit` finds through its probes (None where they do not fit: then the whole pricing
    is None), its floors, communication and host time constant per count (summed per group into
    the constants; equal ones shared). An attention family with work-unit terms has a compute time
    that is the larger of two terms (roofline.attention_compute_terms): its dot-product term is
    fitted, and its work term per op and group is in `work` (`_work_term`); None for other ops."""
    banded = has_bands(hw)
    seqs = np.maximum(np.arange(DIRECT_COUNTS + 1, dtype=float), 1.0)[:, None]
    at = probes[None, :]
    shape = (seqs.size, at.size)
    columns, constants, op_keys, work = [], {}, None, []
    width = DIRECT_COUNTS + 1
    for g, (w, a, kv, qg, tp) in enumerate(groups):
        p = Precision(w, a, kv, qg)
        decode = phase == "decode"
        ops = context_ops(model, seqs=seqs, new_tokens=1.0 if decode else at, past=at if decode else 0.0, p=p,
                          tp=tp, sparse_budget=0, engine=engine)
        keys = tuple("class:" + intervals.op_class(op.kind, phase) if banded else "" for op in ops)
        if op_keys is None:
            op_keys, work = keys, [[] for _ in ops]
        elif keys != op_keys:
            return None
        rows = []
        for i, (op, key) in enumerate(zip(ops, keys)):
            t = op_time(op, hw, p, tp)
            fixed = {}
            for name in ("overhead_s", "comm_s", "host_s"):
                value = np.broadcast_to(np.asarray(getattr(t, name), dtype=float), shape)
                if not np.all(value == value[:, :1]):
                    return None
                fixed[name] = op.count * value[:, 0]
            compute = t.compute_s
            term = _work_term(op, hw, p, model, tp, seqs, at, fit, decode)
            if term is not None:
                compute = attention_compute_terms(op, hw, p)[0]
            work[i].append(term)
            for values in (compute, t.memory_s):
                coefficients = fit(op.count * np.broadcast_to(np.asarray(values, dtype=float), shape))
                if coefficients is None:
                    return None
                rows += list(coefficients)
            floor = fixed["overhead_s"] + fixed["comm_s"]
            sums = {"overhead_s": fixed["overhead_s"], "comm_s": fixed["comm_s"], "host_s": fixed["host_s"],
                    "time_s": floor, **({key: floor} if key else {})}
            for name, value in sums.items():
                constants.setdefault(name, np.zeros(len(groups) * width))[g * width:(g + 1) * width] += value
        columns.append(np.array(rows))
    if any(any(term is None for term in terms) and any(term is not None for term in terms) for terms in work):
        return None  # a work term in some groups only (not seen: one kernel family per engine)
    # rows that are zero everywhere (no communication) add nothing; equal rows are gathered once
    constants = {name: value for name, value in constants.items() if value.any()}
    shared: dict = {}
    for name, value in constants.items():
        same = next((other for other in shared.values() if np.array_equal(other, value)), None)
        shared[name] = value if same is None else same
    return np.concatenate(columns, axis=1), op_keys, shared, [None if terms[0] is None else terms for terms in work]


def _work_term(op: Op, hw: Hardware, p: Precision, model: ModelSpec, tp, seqs, at, fit, decode: bool):
    """An attention op's work-unit term (roofline.attention_work_s) where its kernel family has one,
    else None. Decode: count x the term is a line in the cached tokens (its units do not change
    with them); its coefficients `fit` finds through the probes (per sequence count), or False
    where they do not fit. Prefill: its units' waves step with the prompt, so the term is priced
    per scenario from the group's query and kv heads per device (`PrefillWork`); False where the
    op's rows, context or pairs are not what that assumes."""
    if op.kind != "attention":
        return None
    params = attention_params(hw, op)
    units, longest = has_work_terms(params), has_longest_unit(op.kernel, params)
    if not (units or (longest and not decode)):
        return None
    shape = (seqs.size, at.size)
    split = kv_split_rule(op.kernel, hw)
    if split:  # its blocks' share of the keys is no line in the context: priced per scenario
        return _split_work(op, hw, seqs, at, params, split) if decode else False
    if decode:
        term = attention_compute_terms(op, hw, p)[1]
        line = fit(op.count * np.broadcast_to(np.asarray(term, dtype=float), shape))
        return False if line is None else np.array(line)
    heads, kv_heads = shapes.query_heads_per_device(model, tp), shapes.kv_heads_per_device(model, tp)
    expected = {"m": seqs * at * heads, "n": at, "groups": seqs * kv_heads}
    if any(not np.array_equal(np.broadcast_to(np.asarray(getattr(op, field), dtype=float), shape),
                              np.broadcast_to(value, shape)) for field, value in expected.items()):
        return False
    score_s = float(unit_score_s(op, hw, p, params)) if longest else 0.0
    return PrefillWork(float(op.count), heads, kv_heads, params, float(hw.compute_units), score_s)


def _split_work(op: Op, hw: Hardware, seqs, at, params: tuple, split: str):
    """A decode attention op's `SplitWork` for one precision group (columns: its sequence counts),
    or False where its query rows or pairs change with the context, or its context is not the
    cached tokens plus a constant."""
    shape = (seqs.size, at.size)
    rows, pairs, n, kv = (np.broadcast_to(np.asarray(getattr(op, name), dtype=float), shape)
                          for name in ("m", "groups", "n", "kv_bytes"))
    new, kv_line = n - at, _past_line(kv)
    if any(not np.all(v == v[:, :1]) for v in (rows, pairs)) or not np.all(new == new[0, 0]) or kv_line is None:
        return False
    count = np.full(seqs.size, float(op.count))
    return SplitWork(count, rows[:, 0].copy(), pairs[:, 0].copy(), *(np.array(c) for c in kv_line), float(new[0, 0]),
                     params, float(hw.compute_units), split, float(op.k))


@dataclass(frozen=True)
class SplitWork:
    """count x the work-unit term of a decode kernel that splits its keys by a host rule
    (roofline.split_work_s) per column of a table: the op's query rows, pairs, count and KV bytes
    (kv0 + kv1 S0) at each column, priced at any context through roofline.attention_work_s (the
    per-op path's function) where it is needed: a step's mean at its first and last context
    (`ContextLines`: a column per sequence count), the serving simulator's iteration at its mean
    context (serving.costs: a row per sequence count or chunk size; a column of count 0 adds 0)."""
    count: np.ndarray
    rows: np.ndarray
    pairs: np.ndarray
    kv0: np.ndarray
    kv1: np.ndarray
    new_tokens: float
    params: tuple
    compute_units: float
    split: str
    head_dim: float

    @staticmethod
    def of_groups(terms: list) -> SplitWork | None:
        """One SplitWork over every precision group's columns, in group order; None where the
        groups' kernels differ (their parameters, rule or head dim)."""
        first = terms[0]
        if any((t.params, t.split, t.head_dim, t.new_tokens) != (first.params, first.split, first.head_dim,
                                                                  first.new_tokens) for t in terms):
            return None
        return SplitWork(*(np.concatenate([getattr(t, name) for t in terms]) for name in SplitWork._COLUMNS),
                         first.new_tokens, first.params, first.compute_units, first.split, first.head_dim)

    _COLUMNS = ("count", "rows", "pairs", "kv0", "kv1")

    @functools.cached_property
    def _float_columns(self) -> list:
        """Each column's (count, rows, pairs, kv0, kv1) as Python floats: one scenario's lookups."""
        return list(zip(*(getattr(self, name).tolist() for name in self._COLUMNS)))

    def time_s(self, at, past):
        """count x the term at table columns `at` (a column, or an array of them) and context `past`."""
        if isinstance(at, int):
            count, rows, pairs, kv0, kv1 = self._float_columns[at]
            if isinstance(past, float):  # one scenario, one serving iteration: straight to the float branch
                return count * split_work_float(rows, past + self.new_tokens, pairs, self.params, self.compute_units,
                                                self.split, self.head_dim, kv0 + kv1 * past)
        else:
            count, rows, pairs, kv0, kv1 = (gather(getattr(self, name), at) for name in self._COLUMNS)
        return count * attention_work_s(rows, past + self.new_tokens, pairs, self.params, self.compute_units,
                                        self.split, self.head_dim, kv0 + kv1 * past)


def _price_context_lines(model: ModelSpec, hw: Hardware, engine: Engine, groups: tuple) -> ContextLines | None:
    priced = _price_lines(model, hw, engine, groups, "decode", _PAST_PROBES, _past_line)
    if priced is None:
        return None
    table, op_keys, constants, work = priced
    if any(term is False for terms in work if terms for term in terms):
        return None
    work_rows, work_table, split_work = [], [], []
    for i, terms in enumerate(work):
        split_work.append(None)
        if terms is not None and isinstance(terms[0], SplitWork):
            split_work[i] = SplitWork.of_groups(terms)
            if split_work[i] is None:
                return None
            work_rows.append(None)
            continue
        if terms is None:
            work_rows.append(None)
            continue
        lines = np.concatenate(terms, axis=1)  # (2, columns): count x the work term's coefficients
        dot = table[4 * i:4 * i + 2]
        if np.all(dot >= lines):  # the dot products the larger at every context: the work term never counts
            work_rows.append(None)
        elif np.all(lines >= dot):  # the work term the larger everywhere: it is the op's compute line
            table[4 * i:4 * i + 2] = lines
            work_rows.append(None)
        else:
            work_rows.append(table.shape[0] + 2 * len(work_table))
            work_table.append(lines)
    dominant = []
    for i, row in enumerate(work_rows):
        compute, memory = table[4 * i:4 * i + 2], table[4 * i + 2:4 * i + 4]
        dominant.append(_dominant(compute, memory) if row is None and split_work[i] is None else "")
    return ContextLines(np.concatenate([table, *work_table]) if work_table else table, op_keys, constants,
                        tuple(dominant), tuple(work_rows) if work_table else (),
                        tuple(split_work) if any(w is not None for w in split_work) else ())


def _dominant(compute: np.ndarray, memory: np.ndarray) -> str:
    """"compute" or "memory" where that polynomial's coefficients (rows: powers of a context or
    prompt >= 0; columns: table columns) are all at least the other's, so its value is at least
    the other's everywhere; else ""."""
    if np.all(memory >= compute):
        return "memory"
    if np.all(compute >= memory):
        return "compute"
    return ""


def _past_line(values: np.ndarray):
    """(alpha, beta) per row where every row of `values` (rows: counts, columns: _PAST_PROBES) lies
    on alpha + beta S0, else None."""
    alpha = values[:, 0]
    beta = (values[:, 2] - alpha) / _PAST_PROBES[2]
    for j in (1, 3):
        predicted = alpha + beta * _PAST_PROBES[j]
        scale = np.maximum(np.abs(values).max(axis=1), 1e-300)
        if not np.all(np.isfinite(values[:, j])) or np.any(np.abs(predicted - values[:, j]) > _AFFINE_RTOL * scale):
            return None
    return alpha, beta


#: Prompts at which a prefill's context ops are probed: the first three fix a line or a quadratic
#: (small prompts: its coefficients exact to rounding), the others check it, the last beyond any
#: prompt a Scenario can describe.
_PROMPT_PROBES = np.array([1.0, 2.0, 3.0, 1031.0, 100003.0, 16777216.0, 2147483648.0])


@dataclass(frozen=True)
class PrefillLines:
    """The context ops of a prefill (perfmodel.ops.context_ops with no cache: attention) as
    polynomials of the prompt P per precision group and sequence count s <= DIRECT_COUNTS: per op,
    count x compute time = c0 + c1 P + c2 P^2 and count x memory time = m0 + m1 P + m2 P^2 (rows
    6 i .. 6 i + 5 of `table`, column group * (DIRECT_COUNTS + 1) + s; causal attention's query-key
    pairs grow as P (P + 1) / 2, its bytes as P), its floor, communication and host time constant
    (`constants`, as in ContextLines). Built only where the per-op path fits those at
    _PROMPT_PROBES for every op, group and count; the step then takes max(compute, memory) per op
    as perfmodel.roofline.OpTime does."""
    table: np.ndarray
    op_keys: tuple[str, ...]
    constants: dict
    rows: tuple[int, ...]  # table rows that are not zero everywhere
    #: per op, "compute" or "memory" where that polynomial is at least the other's at every
    #: prompt of every column (`_dominant`): then it is the op's time, without a maximum
    dominant: tuple[str, ...] = ()
    #: per op, its attention family's work-unit term (`PrefillWork`) or None: the op's compute
    #: time is then the larger of the polynomial (its dot products) and that term
    work: tuple = ()

    def covers(self, batch, group) -> bool:
        """Whether every scenario's sequence count is in the table."""
        if isinstance(batch, float):
            return batch <= DIRECT_COUNTS
        return bool(np.all(np.asarray(batch) <= DIRECT_COUNTS))

    def add(self, part: dict, batch, group, prompt, at) -> None:
        """Add the context ops' times at prompts `prompt` and table columns `at` (`table_columns`)
        to the priced components `part`, which hold the constants already (`_combined_lookup`)."""
        if isinstance(at, int) and isinstance(prompt, float):  # one scenario: in floats (`part` holds every TOTAL_KEYS)
            column, prompt = float_column(self.table, at), float(prompt)
            for i, key in enumerate(self.op_keys):
                c0, c1, c2, m0, m1, m2 = column[6 * i:6 * i + 6]
                compute, memory = (c2 * prompt + c1) * prompt + c0, (m2 * prompt + m1) * prompt + m0
                if self.work and self.work[i] is not None:
                    compute = max(compute, self.work[i].time_s(float(batch), prompt, int(group)))
                _add_floats(part, compute, memory, max(compute, memory), key)
            return
        take = lambda row: gather(self.table[row], at) if row in self.rows else 0.0  # noqa: E731
        for i, key in enumerate(self.op_keys):
            c0, c1, c2, m0, m1, m2 = (take(6 * i + j) for j in range(6))
            compute = _polynomial(c0, c1, c2, prompt)
            if self.work and self.work[i] is not None:
                compute = np.maximum(compute, self.work[i].time_s(batch, prompt, group))
            memory = _polynomial(m0, m1, m2, prompt)
            dominant = self.dominant[i] if self.dominant else ""
            core = compute if dominant == "compute" else memory if dominant == "memory" else np.maximum(compute, memory)
            _add_core(part, compute, memory, core, key, None)


def _polynomial(c0, c1, c2, prompt):
    """(c2 P + c1) P + c0, leaving out terms whose coefficient is the number 0.0 (a table row
    zero everywhere)."""
    if np.ndim(c2) or c2:
        value = (c2 * prompt + c1) * prompt
    else:
        value = c1 * prompt
    return value + c0 if np.ndim(c0) or c0 else value


_PREFILL_LINES: dict = {}


def prefill_lines(model: ModelSpec, hw: Hardware, engine: Engine, groups: tuple) -> PrefillLines | None:
    """The PrefillLines of precision groups `groups`, None where some context op does not fit;
    cached like count_pricing."""
    return _cached_lines(_PREFILL_LINES, model, hw, engine, groups, _price_prefill_lines)


def _price_prefill_lines(model: ModelSpec, hw: Hardware, engine: Engine, groups: tuple) -> PrefillLines | None:
    priced = _price_lines(model, hw, engine, groups, "prefill", _PROMPT_PROBES, _prompt_polynomial)
    if priced is None:
        return None
    table, op_keys, constants, work = priced
    merged = []
    for terms in work:
        if terms is None:
            merged.append(None)
        elif any(term is False for term in terms) or len({(t.count, t.params, t.compute_units) for t in terms}) > 1:
            return None
        else:
            merged.append(dataclasses.replace(terms[0], heads=np.array([t.heads for t in terms], dtype=float),
                                              kv_heads=np.array([t.kv_heads for t in terms], dtype=float),
                                              score_s=np.array([t.score_s for t in terms], dtype=float)))
    # a work term only adds to the compute time: the dot products at least the memory time still
    # make compute the larger, the reverse no longer holds
    dominant = tuple("" if merged[i] is not None and dominant == "memory" else dominant
                     for i, dominant in enumerate(_dominant(table[6 * i:6 * i + 3], table[6 * i + 3:6 * i + 6])
                                                  for i in range(len(op_keys))))
    return PrefillLines(table, op_keys, constants, tuple(i for i in range(table.shape[0]) if table[i].any()),
                        dominant, tuple(merged) if any(term is not None for term in merged) else ())


@dataclass(frozen=True)
class PrefillWork:
    """The work-unit term of a prefill's attention (roofline.attention_compute_terms' second term:
    its units' waves where the family has work-unit terms, plus its longest unit where the kernel
    has one) for scenarios of any precision group: count x the term at query rows batch x prompt x
    heads, context prompt and pairs batch x kv heads, from the heads per device and the time of one
    score in a lone unit (roofline.unit_score_s; 0: no longest-unit term) of each group (`heads`, `kv_heads`,
    `score_s`: numbers for one group, arrays indexed by group for several), in the per-op path's
    order of operations."""
    count: float
    heads: float | np.ndarray
    kv_heads: float | np.ndarray
    params: tuple
    compute_units: float
    score_s: float | np.ndarray

    @functools.cached_property
    def _units(self) -> bool:
        """Whether the family has work-unit terms (roofline.has_work_terms)."""
        return has_work_terms(self.params)

    @functools.cached_property
    def _longest(self) -> bool:
        """Whether the family has a longest-unit term (every group or none: one kernel family)."""
        return bool(np.any(self.score_s))

    @functools.cached_property
    def _uniform(self) -> bool:
        """Whether every group has the same heads, kv heads and score time (one group's numbers do)."""
        return all(np.all(v == np.reshape(v, -1)[0]) for v in (self.heads, self.kv_heads, self.score_s))

    @functools.cached_property
    def _group_floats(self) -> list:
        """(heads, kv heads, score time) of each group as Python floats (arrays of groups only)."""
        return list(zip(*(np.broadcast_to(v, np.shape(self.heads)).tolist() for v in (self.heads, self.kv_heads, self.score_s))))

    def time_s(self, batch, prompt, group):
        heads, kv_heads, score_s = self._group_values(group)
        m, pairs = batch * prompt * heads, batch * kv_heads
        term = attention_work_s(m, prompt, pairs, self.params, self.compute_units) if self._units else 0.0
        if self._longest:
            term = term + longest_unit_s(m, prompt, pairs, score_s)
        return self.count * term

    def _group_values(self, group) -> tuple:
        """(heads, kv heads, score time) of scenarios in groups `group`: numbers where one group's
        (or every group's alike), else gathered per scenario."""
        heads, kv_heads, score_s = self.heads, self.kv_heads, self.score_s
        if not isinstance(heads, np.ndarray):
            return heads, kv_heads, score_s
        if isinstance(group, int) or self._uniform:  # one group's: its cached floats
            floats = self._group_floats
            return floats[group if isinstance(group, int) else 0]
        return gather(heads, group), gather(kv_heads, group), gather(score_s, group)


def _prompt_polynomial(values: np.ndarray):
    """(c0, c1, c2) per row where every row of `values` (rows: counts, columns: _PROMPT_PROBES)
    lies on c0 + c1 P + c2 P^2, tried as a line (c2 = 0) first; else None."""
    v1, v2, v3 = values[:, 0], values[:, 1], values[:, 2]
    scale = np.maximum(np.abs(values).max(axis=1), 1e-300)
    line_b = v2 - v1
    candidates = ((v1 - line_b, line_b, np.zeros_like(v1)),)
    c2 = (v3 - 2.0 * v2 + v1) / 2.0
    c1 = v2 - v1 - 3.0 * c2
    candidates += ((v1 - c1 - c2, c1, c2),)
    fits = []
    for c0, c1, c2 in candidates:
        predicted = (c2[:, None] * _PROMPT_PROBES + c1[:, None]) * _PROMPT_PROBES + c0[:, None]
        ok = np.all(np.abs(predicted - values) <= _AFFINE_RTOL * scale[:, None], axis=1) & np.all(np.isfinite(values), axis=1)
        fits.append(ok)
    if not np.all(fits[0] | fits[1]):
        return None
    line = fits[0]
    return tuple(np.where(line, a, b) for a, b in zip(*candidates))


# -- precision groups stacked -----------------------------------------------------------------------

class StackedPricing:
    """The CountPricings of several precision groups of one (model, spec, engine, group, phase),
    evaluated for scenarios of mixed groups in one pass over them in their own order: each
    scenario gathers its group's coefficients (tables, affine folds, per-run GEMM tables, the
    lines of rescaled ops) by its group index. Terms are matched across groups by op name; a
    group lacking one has it at count 0. Groups with ops rebuilt per count are priced apart."""

    def __init__(self, pricings: list[CountPricing], hw: Hardware, tps: list | None = None, groups: tuple | None = None):
        self.pricings, self.hw, self.tps, self.groups = pricings, hw, tps, groups
        self.keys = pricings[0].keys
        if any(pr.keys != self.keys for pr in pricings):
            raise ValueError("precision groups with different components")  # internal: callers fall back
        groups = len(pricings)
        self.table = np.stack([pr.table for pr in pricings], axis=1).reshape(len(self.keys), -1)
        self.alpha = np.stack([pr.affine[:, 0] for pr in pricings], axis=1)
        self.beta = np.stack([pr.affine[:, 1] for pr in pricings], axis=1)
        # per group, as Python floats (one scenario's route)
        self.alpha_of, self.beta_of = self.alpha.T.tolist(), self.beta.T.tolist()
        self.sloped = np.any(self.beta != 0, axis=1)
        self.flat = np.all(self.alpha == self.alpha[:, :1], axis=1)
        self.table_flat = np.all(self.table == self.table[:, :1], axis=1)
        self.crossings = _slots(pricings, lambda pr: pr.crossings, groups,
                                lambda t: (t.count, *t.compute, *t.memory))
        # GEMM coefficients carry their op's count (count x max(a, b) = max(count a, count b), count >= 0)
        self.gemms = _slots(pricings, lambda pr: pr.gemms, groups,
                            lambda t: (t.count, t.count * t.power_slope, t.count * t.bytes[0], t.count * t.bytes[1],
                                       t.count * t.latency_s))
        self.rescaled = {}
        for g, pr in enumerate(pricings):
            for term in pr.rescaled:
                slot = self.rescaled.setdefault(term.template.name, (term.template, {}, np.zeros(groups)))
                slot[2][g] = 1.0
                for field, line in term.lines.items():
                    slot[1].setdefault(field, np.zeros((2, groups)))[:, g] = line
        self.rebuilt_groups = [g for g, pr in enumerate(pricings) if pr.rebuilt]
        # terms `_at` adds past the table to the lines (most pricings have none: one test, not three loops)
        self.apart = bool(self.crossings or self.rescaled or self.rebuilt_groups)
        # rescaled collectives (all-reduces) go by pieces of runs (`_rescaled_pieces`), which needs
        # the groups' precisions; other rescaled ops (MoE experts: wave-quantized) per op
        self.collectives = {name: entry for name, entry in self.rescaled.items()
                            if entry[0].kind == "comm"} if self.groups is not None else {}
        self.gemm_names = list(self.gemms)
        self._cells = (0, None)
        self._pieces = (0, None)
        self._fused = (0, None)
        self._lock = threading.Lock()
        self._fused_lock = threading.Lock()  # apart: the fused table is built from the two above

    def evaluate(self, x, group, p: Precision, tp) -> dict:
        """Every component at counts x of scenarios in precision groups `group` (indices into the
        pricings), with their per-scenario precisions p and tp (for ops priced per count)."""
        if (type(x) is float and type(group) is int) or _numbers(x, group):  # (a scalar prediction's types first)
            return self._at(float(x), int(group), p, tp)
        x, group = np.broadcast_arrays(np.asarray(x, dtype=float), group)
        shape = x.shape
        x, group = x.reshape(-1), group.reshape(-1)  # scenarios may be an N-d broadcast
        # a count's table column is int(x); for counts (x >= 0) int(x) <= DIRECT_COUNTS is
        # x < DIRECT_COUNTS + 1, tested on the doubles (a cast fewer where most are past the table)
        small = x < DIRECT_COUNTS + 1.0
        inside = int(np.count_nonzero(small))
        if 2 * inside < x.size:
            # mostly past the table: price every count by the structure (those inside it are
            # valid counts too) and put the table's exact values back where it has them
            out = self._past_table(x, group, _pick_precision(p, None, shape), _pick(tp, None, shape))
            if inside:
                rows = np.flatnonzero(small)
                flat = group[rows] * (DIRECT_COUNTS + 1) + x[rows].astype(np.intp)
                for i, key in enumerate(self.keys):
                    out[key][rows] = gather(self.table[i], flat)
        else:
            flat = group * (DIRECT_COUNTS + 1) + np.minimum(x.astype(np.intp), DIRECT_COUNTS)
            # components the same at every count of every group (zero communication) need no gather
            out = {key: np.full(flat.shape, self.table[i, 0]) if self.table_flat[i] else gather(self.table[i], flat)
                   for i, key in enumerate(self.keys)}
            if inside < x.size:
                rows = np.flatnonzero(~small)
                past = self._past_table(x[rows], group[rows], _pick_precision(p, rows, shape), _pick(tp, rows, shape))
                for key in self.keys:
                    out[key][rows] = past[key]
        return {key: value.reshape(shape) if shape else value[0] for key, value in out.items()}

    def _at(self, x: float, group: int, p: Precision, tp) -> dict:
        """`evaluate` of one scenario in Python floats (a scalar prediction pays per array call):
        the table's column, or past it what `_past_table` adds up: its run's fused lines where a
        sweep takes those (`_fused_at`: the same doubles) or the structure term by term
        (`_structured_at`), then the crossings, the other rescaled ops and the rebuilt ones."""
        if x < DIRECT_COUNTS + 1.0:  # (int(x) <= DIRECT_COUNTS for a count)
            return dict(zip(self.keys, float_column(self.table, group * (DIRECT_COUNTS + 1) + int(x))))
        out = self._fused_at(x, group)
        fused = out is not None
        if not fused:
            out = self._structured_at(x, group)
        if self.apart:
            self._add_apart(out, x, group, p, tp, fused)
        return out

    def _add_apart(self, out: dict, x: float, group: int, p: Precision, tp, fused: bool) -> None:
        """Add to `_at`'s lines the terms priced apart from them: the crossings, the rescaled ops
        (but the collectives where the `fused` lines hold them) and the ops rebuilt per count."""
        for key, coef in self.crossings.values():
            count, c0, c1, m0, m1 = coef[:, group].tolist()
            compute, memory = c0 + c1 * x, m0 + m1 * x
            _add(out, count, compute, memory, max(compute, memory), key)
        for name, (template, lines, present) in self.rescaled.items():
            if not (fused and name in self.collectives):  # (the fused lines hold the collectives)
                op = dataclasses.replace(template, **{f: float(c[0, group] + c[1, group] * x) for f, c in lines.items()})
                t = op_time(op, self.hw, p, tp)
                weight = float(present[group]) * op.count
                for key in TOTAL_KEYS:
                    out[key] += weight * float(getattr(t, key))
                cls = _class_key(self.pricings[0], op)
                if cls:
                    out[cls] += weight * float(t.time_s)
        if group in self.rebuilt_groups:
            pr = self.pricings[group]
            for op, t in pr.price(np.array([x]), pr.rebuilt):
                for key in TOTAL_KEYS:
                    out[key] += op.count * float(np.ravel(getattr(t, key))[0])
                cls = _class_key(pr, op)
                if cls:
                    out[cls] += op.count * float(np.ravel(t.time_s)[0])

    def _fused_at(self, x: float, group: int) -> dict | None:
        """`_add_fused` of one count past the table, in floats: its (group, run) piece's lines
        and the constants; None where there are no fused runs (`_fused_runs`), its run is priced
        by `_structured` (piece 0 of a switching table), or it lies past the runs fused so far
        and past _SCALAR_FUSED_RUNS (fusing runs to it would take more than its own terms)."""
        if not self._fusable:
            return None
        run = max(math.ceil(x / RUN_COUNTS) - _RUN_Q0, 0)
        if run >= _SCALAR_FUSED_RUNS and self._fused[0] < _RUN_Q0 + run:
            return None
        table = self._fused_table(_RUN_Q0 + run)
        piece = table.piece.item(group * table.width + run)
        if table.switching and piece == 0:
            return None
        if table.counted and piece >= table.counted:  # a count of a switching run: its own piece
            piece += int(min(max(x - _run_first_count(run), 0), RUN_COUNTS - 1))
        row, constants = float_column(table.piece_lines, piece), table.constants
        return {key: row[at] + row[at + 1] * x if at >= 0 else constants[key] for key, at in table.layout}

    def _structured_at(self, x: float, group: int) -> dict:
        """`_structured` of one count past the table, in floats, but for the rescaled collectives
        (`_at` prices those op by op): the affine folds and the tiled GEMMs' run lines (GEMM by
        GEMM in a run where one switches term)."""
        out = {key: a + b * x for key, a, b in zip(self.keys, self.alpha_of[group], self.beta_of[group])}
        if self.gemms:
            cells = self._any_cells
            run = max(math.ceil(x / cells.tile_m) - cells.q0, 0)
            table = self._stacked_cells(cells.q0 + run)
            at = int(table.group_map[group]) * table.width + run
            row = table.piece_lines[:, table.piece[at]].tolist()  # the run's distinct lines, alpha and beta
            for key, line in table.line_of.items():
                out[key] += row[2 * line] + row[2 * line + 1] * x
            if table.switching[at]:
                for slot, (key, coef) in enumerate(self.gemms.values()):
                    _, power, bytes0, bytes1, latency = coef[:, group].tolist()
                    compute = max(float(table.tile_s[slot, at]), power * x)
                    memory = latency + (bytes0 + bytes1 * x) * float(table.inv_bw[slot, at])
                    _add(out, 1.0, compute, memory, max(compute, memory), key)
        return out

    def _past_table(self, x, group, p: Precision, tp) -> dict:
        """The components at counts x past the table (counts inside it give finite values the
        caller discards)."""
        runs: dict = {}  # run indices by run length, shared by the GEMMs and the collectives
        fused = self._fused_runs(x, runs)
        out = self._structured(x, group, runs) if fused is None else self._add_fused(fused, x, group, runs)
        for key, coef in self.crossings.values():
            count = gather(coef[0], group)
            compute = gather(coef[1], group) + gather(coef[2], group) * x
            memory = gather(coef[3], group) + gather(coef[4], group) * x
            _add(out, count, compute, memory, np.maximum(compute, memory), key)
        for name, (template, lines, present) in self.rescaled.items():
            if name not in self.collectives:
                self._add_rescaled(out, template, lines, present, x, group, p, tp)
        for g in self.rebuilt_groups:
            mine = np.flatnonzero(group == g)
            if mine.size:
                pr = self.pricings[g]
                for op, t in pr.price(x[mine], pr.rebuilt):
                    for key in TOTAL_KEYS:
                        out[key][mine] += op.count * getattr(t, key)
                    cls = _class_key(pr, op)
                    if cls:
                        out[cls][mine] += op.count * t.time_s
        return out

    def _structured(self, x, group, runs: dict) -> dict:
        """The affine folds, tiled GEMMs and rescaled collectives past the table, each from its own
        tables (`_add_fused` sums them per run where it can)."""
        out = {}
        for i, key in enumerate(self.keys):
            alpha = self.alpha[i]
            if self.sloped[i]:
                out[key] = gather(alpha, group) + gather(self.beta[i], group) * x
            elif self.flat[i]:  # the same in every group (zero for a collective's floor)
                out[key] = np.full(np.shape(x), alpha[0])
            else:
                out[key] = gather(alpha, group)
        if self.gemms:
            self._add_gemms(out, x, group, runs)
        if self.collectives:
            self._add_rescaled_pieces(out, x, group, runs)
        return out

    def _fused_runs(self, x, runs: dict) -> "FusedRuns | None":
        """The affine folds, tiled GEMMs and rescaled collectives summed per (group, run) of
        RUN_COUNTS counts (`_fuse`), covering the counts x; None where the GEMMs' runs are not
        the collectives' (a tile_m other than RUN_COUNTS) or there is neither."""
        if not self._fusable:
            return None
        run = _run_index(x, float(RUN_COUNTS), _RUN_Q0, runs)
        return self._fused_table(_RUN_Q0 + int(run.max()))

    @functools.cached_property
    def _fusable(self) -> bool:
        """Whether `_fuse` applies: GEMMs or collectives, the GEMMs' runs the collectives' (tile_m
        RUN_COUNTS)."""
        return bool(self.gemms or self.collectives) and not (self.gemms and self._any_cells.tile_m != RUN_COUNTS)

    def _fused_table(self, q_max: int) -> "FusedRuns":
        """The FusedRuns covering runs to q_max, grown (doubling) where they do not."""
        covered, table = self._fused  # one read of a tuple: a table built already needs no lock
        if covered >= q_max:
            return table
        with self._fused_lock:
            if self._fused[0] < q_max:
                self._fused = self._fuse(max(q_max, 2 * self._fused[0]))
            return self._fused[1]

    def _fuse(self, q_max: int) -> tuple:
        """(last run covered, FusedRuns): per (group, run) the line of each component's affine fold
        + GEMMs + collectives over the run, as `piece` ids into `piece_lines` (`_row_pieces`);
        runs where a GEMM switches term or a collective changes line inside are piece 0 (priced
        by `_structured`), or count by count where `_count_pieces` can. A component without a
        line anywhere (host time, a floor the same in every group) is left out of the pieces:
        `_add_fused` fills it. Built group by group (a
        sweep of long prompts has millions of runs): a first pass finds the components with lines
        and the equal ones, a second the pieces."""
        width = q_max - _RUN_Q0 + 1
        sources = []  # (lines by key, row of each (group, run), piece table or None, switching by row)
        runs = np.arange(width)
        if self.gemms:
            cells = self._stacked_cells(q_max)
            sources.append((cells.lines, cells.group_map[:, None] * cells.width + runs, None, cells.switching))
        if self.collectives:
            pieces = self._rescaled_pieces(q_max)
            sources.append((pieces.lines, pieces.group_map[:, None] * pieces.width + runs, pieces.piece, pieces.switching))
        groups, count = range(len(self.pricings)), len(self.keys)
        reference, lined, equal = [None] * count, np.zeros(count, dtype=bool), np.ones((count, count), dtype=bool)
        for g in groups:
            alpha, beta, switching = self._fused_group(g, width, sources)
            steady = ~switching
            bits = np.concatenate([alpha, beta], axis=1).view(np.int64)
            for i in range(count):
                for j in range(i):
                    equal[i, j] = equal[j, i] = equal[i, j] and np.array_equal(bits[i], bits[j])
            for i in range(count):
                values = alpha[i, steady]
                if values.size and reference[i] is None:
                    reference[i] = values[0]
                lined[i] |= bool(np.any(beta[i]) or np.any(values != reference[i]))
        firsts = [i for i in range(count) if lined[i] and not any(lined[j] and equal[i, j] for j in range(i))]
        line_of = {self.keys[i]: next(n for n, f in enumerate(firsts) if equal[i, f]) for i in range(count) if lined[i]}
        switched = []  # each group's switching runs, kept as its block goes by

        def blocks():
            for g in groups:
                alpha, beta, switching = self._fused_group(g, width, sources)
                switched.append(switching)
                yield np.concatenate([alpha[firsts], beta[firsts]]), switching

        piece, piece_lines = _row_pieces(blocks(), 2 * len(firsts))
        order = [n for i in range(len(firsts)) for n in (i, len(firsts) + i)]  # alpha, beta of each line
        constants = {key: float(reference[i]) if reference[i] is not None else 0.0
                     for i, key in enumerate(self.keys) if not lined[i]}
        layout = tuple((key, 2 * line_of[key] if key in line_of else -1) for key in self.keys)
        fused = FusedRuns(width, piece, piece_lines[order], line_of, constants, bool(np.any(piece == 0)), layout=layout)
        counted = self._count_pieces(fused, np.flatnonzero(np.concatenate(switched)))
        return q_max, fused if counted is None else counted

    def _count_pieces(self, fused: "FusedRuns", rows: np.ndarray) -> "FusedRuns | None":
        """`fused` with its switching (group, run) rows (flat indices `rows`) priced count by
        count: each count of such a run a piece of its own, a flat line through its value by
        `_structured` (the same function on the same counts: the same doubles), after the
        steady pieces (`counted`: the first such id). A few hundred runs of a sweep's million
        counts, hit by about 1% of a chunk's counts, which `_add_fused` then prices from the
        tables like any other instead of by `_structured` (a hundred small array calls a chunk
        under the GIL). None where there are none, or where a component outside the lines (a
        constant) or sharing another's line takes another value in some of those counts."""
        if not rows.size:
            return None
        group, run = np.divmod(rows, fused.width)
        first = _run_first_count(run)
        x = (first[:, None] + np.arange(RUN_COUNTS)).reshape(-1).astype(float)
        values = self._structured(x, np.repeat(group, RUN_COUNTS), {})
        owner: dict = {}  # each line's first key: its values are the line's
        for key, line in fused.line_of.items():
            owner.setdefault(line, key)
            if not np.array_equal(values[key], values[owner[line]]):
                return None
        if any(np.any(values[key] != value) for key, value in fused.constants.items()):
            return None
        steady = fused.piece_lines.shape[1]
        lines = np.zeros((fused.piece_lines.shape[0], x.size))  # beta 0: alpha + 0 x is alpha
        for line, key in owner.items():
            lines[2 * line] = values[key]
        piece = fused.piece.astype(np.min_scalar_type(steady + x.size - 1))
        piece[rows] = steady + RUN_COUNTS * np.arange(rows.size)
        return dataclasses.replace(fused, piece=piece, piece_lines=np.concatenate([fused.piece_lines, lines], axis=1),
                                   switching=False, counted=steady)

    def _fused_group(self, g: int, width: int, sources: list) -> tuple:
        """(alpha [key, run], beta [key, run], switching [run]) of group g in `_fuse`: its affine
        fold plus each source's lines at its runs, zero in switching runs."""
        alpha = np.repeat(self.alpha[:, g:g + 1], width, axis=1)
        beta = np.repeat(self.beta[:, g:g + 1], width, axis=1)
        switching = np.zeros(width, dtype=bool)
        for lines, rows, piece, switched in sources:
            at = rows[g] if piece is None else piece.take(rows[g])
            switching |= switched.take(rows[g])
            for i, key in enumerate(self.keys):
                if key in lines:
                    alpha[i] += lines[key][0].take(at)
                    beta[i] += lines[key][1].take(at)
        alpha[:, switching] = 0.0  # (one piece for all switching runs)
        beta[:, switching] = 0.0
        return alpha, beta, switching

    def _add_fused(self, table: "FusedRuns", x, group, runs: dict) -> dict:
        """The components of `_structured` from the fused pieces (`_fuse`): per count its (group,
        run) piece and the piece's lines; the rows in a switching run from `_structured`."""
        run = _run_index(x, float(RUN_COUNTS), _RUN_Q0, runs)
        piece = gather(table.piece, group * table.width + run)
        switching = np.flatnonzero(piece == 0) if table.switching else ()
        piece = piece.astype(np.intp)
        if table.counted:  # a count in a switching run: its own piece, from its run's first (`_count_pieces`)
            rows = np.flatnonzero(piece >= table.counted)
            if rows.size:  # (counts inside the direct table share run 0: any piece of it, discarded)
                piece[rows] += _places_in_runs(x[rows], run[rows]).astype(np.intp)
        values = []
        for line in range(table.piece_lines.shape[0] // 2):
            value = gather(table.piece_lines[2 * line + 1], piece)
            value *= x
            value += gather(table.piece_lines[2 * line], piece)
            values.append(value)
        out, used = {}, set()
        for key in self.keys:
            line = table.line_of.get(key)
            if line is None:
                out[key] = np.full(np.shape(x), table.constants[key])
            else:
                out[key] = values[line].copy() if line in used else values[line]
                used.add(line)
        if len(switching):
            part = self._structured(x[switching], group[switching], {})
            for key in self.keys:
                out[key][switching] = part[key]
        return out

    def _add_gemms(self, out: dict, x, group, runs: dict | None = None) -> None:
        """Add the tiled GEMMs past the table. Within one run of tile_m rows each GEMM's time is
        max(tile-limited constant, power-limited slope x, memory line): where one of the three is
        the largest at both ends of the run it is the largest over the whole run (a maximum of
        lines is convex), so the run's sums over GEMMs are lines in x (`StackedCells`); the few
        runs where a GEMM switches inside are priced GEMM by GEMM."""
        cells = self._any_cells
        run = _run_index(x, cells.tile_m, cells.q0, runs)
        table = self._stacked_cells(cells.q0 + int(run.max()))
        at = gather(table.group_map, group) * table.width + run
        piece = gather(table.piece, at)
        switching = np.flatnonzero(piece == 0) if table.switching.any() else ()
        piece = piece.astype(np.intp)
        values = []  # each distinct line beta x + alpha (a class key's line may be the time line itself)
        for line in range(table.piece_lines.shape[0] // 2):
            value = gather(table.piece_lines[2 * line + 1], piece)
            value *= x
            value += gather(table.piece_lines[2 * line], piece)
            values.append(value)
        for key, line in table.line_of.items():
            out[key] += values[line]
        if not len(switching):
            return
        rows = switching
        x, group, at = x[rows], group[rows], at[rows]
        for slot, (key, coef) in enumerate(self.gemms.values()):
            compute = np.maximum(gather(table.tile_s[slot], at), gather(coef[1], group) * x)
            memory = gather(coef[4], group) + (gather(coef[2], group) + gather(coef[3], group) * x) * gather(table.inv_bw[slot], at)
            core = np.maximum(compute, memory)
            _add_rows(out, rows, compute, memory, core, key)

    def _add_rescaled_pieces(self, out: dict, x, group, runs: dict | None = None) -> None:
        """Add the rescaled collectives (all-reduces) past the table from their lines (`RescaledPieces`):
        a lookup of each count's run, its piece and the piece's line per component (in a run
        where the time changes line, each count is a piece of its own)."""
        run = _run_index(x, RUN_COUNTS, _RUN_Q0, runs)
        pieces = self._rescaled_pieces(_RUN_Q0 + int(run.max()))
        at = gather(pieces.group_map, group) * pieces.width + run
        piece = gather(pieces.piece, at)
        rows = np.flatnonzero(gather(pieces.switching, at)) if pieces.switching.any() else ()
        if len(rows):  # runs where the time changes line: one piece per count, from the run's first
            piece[rows] += _places_in_runs(x[rows], run[rows]).astype(piece.dtype)  # (counts in the direct table: any)
        values: dict = {}  # components sharing a line add one array
        for key, (alpha, beta) in pieces.lines.items():
            value = values.get(id(alpha))
            if value is None:
                value = values[id(alpha)] = gather(alpha, piece) + gather(beta, piece) * x
            out[key] += value

    def _rescaled_pieces(self, q_max: int) -> "RescaledPieces":
        """The rescaled collectives' summed components as lines over pieces of runs of RUN_COUNTS counts
        (runs _RUN_Q0 .. q_max, grown like `_stacked_cells`), found by bisection per group: a
        range of runs is one piece where the per-op times at five counts (both ends, the counts
        next to them and the middle) lie on the chord through its ends. An all-reduce's time is
        piecewise linear in the count, concave but for one step (perfmodel.collectives: the least
        of affine times per algorithm, the custom kernel up to a size): a kink or step inside the
        range moves one of the five off the chord (a concave function that meets its chord inside
        the range is the chord). A single run that fails is `switching`: its counts are priced one
        by one by the per-op path, each a piece of its own (a flat line through its exact time). Groups
        whose collectives are the same share their pieces. (Not for wave-quantized ops: a
        staircase sampled at run ends can look straight.)"""
        with self._lock:
            if self._pieces[0] >= q_max:
                return self._pieces[1]
            width = max(q_max, 2 * self._pieces[0], _RUN_Q0 + 255) - _RUN_Q0 + 1
            keys, groups = self.keys, len(self.pricings)
            # one row block per distinct signature (groups whose collectives are the same share it)
            done: dict = {}
            group_map = np.array([done.setdefault(self._rescaled_signature(g), len(done)) for g in range(groups)],
                                 dtype=np.intp)
            piece = np.zeros((len(done), width), dtype=np.int32)
            switching = np.zeros((len(done), width), dtype=bool)
            alphas, betas = [np.zeros((len(keys), 1))], [np.zeros((len(keys), 1))]  # piece 0: switching runs
            pieces = 1
            for u in range(len(done)):
                g = int(np.flatnonzero(group_map == u)[0])
                frontier = (np.array([0]), np.array([width - 1]))
                while frontier[0].size:
                    first, last = frontier
                    low, high = (_RUN_Q0 + first - 1.0) * RUN_COUNTS, (_RUN_Q0 + last) * RUN_COUNTS
                    probes = np.stack([low, low + 1.0, (low + high) / 2.0, high - 1.0, high])
                    values = self._rescaled_values(g, probes.reshape(-1)).reshape((len(keys),) + probes.shape)
                    beta = (values[:, 4] - values[:, 0]) / (high - low)
                    alpha = values[:, 0] - beta * low
                    scale = np.maximum(np.abs(values).max(axis=1), 1e-300)
                    on = np.ones(first.size, dtype=bool)
                    for j in (1, 2, 3):
                        on &= np.all(np.abs(alpha + beta * probes[j] - values[:, j]) <= _AFFINE_RTOL * scale, axis=0)
                    ids = pieces + np.arange(int(on.sum()))
                    for index, (r0, r1) in enumerate(zip(first[on], last[on])):
                        piece[u, r0:r1 + 1] = ids[index]
                    alphas.append(alpha[:, on])
                    betas.append(beta[:, on])
                    pieces += int(on.sum())
                    single = ~on & (first == last)
                    for r in first[single]:  # the time changes line inside this run: each count its own piece
                        counts = np.arange((_RUN_Q0 + r - 1.0) * RUN_COUNTS + 1.0, (_RUN_Q0 + r) * RUN_COUNTS + 1.0)
                        alphas.append(self._rescaled_values(g, counts))
                        betas.append(np.zeros((len(keys), counts.size)))
                        piece[u, r], switching[u, r] = pieces, True
                        pieces += counts.size
                    split = ~on & (first < last)
                    middle = (first[split] + last[split]) // 2
                    frontier = (np.concatenate([first[split], middle + 1]), np.concatenate([middle, last[split]]))
            alpha_all, beta_all = np.concatenate(alphas, axis=1), np.concatenate(betas, axis=1)
            lines = {key: (alpha_all[i].copy(), beta_all[i].copy())
                     for i, key in enumerate(keys) if np.any(alpha_all[i]) or np.any(beta_all[i])}
            # components with equal lines (a collective's time is its communication) share one pair
            shared: dict = {}
            lines = {key: shared.setdefault((alpha.tobytes(), beta.tobytes()), (alpha, beta))
                     for key, (alpha, beta) in lines.items()}
            table = RescaledPieces(width, piece.reshape(-1), lines, switching.reshape(-1), group_map)
            self._pieces = (_RUN_Q0 + width - 1, table)
            return table

    def _rescaled_signature(self, g: int) -> tuple:
        """What a group's rescaled collectives' times depend on (payload and devices): their
        field lines and tp."""
        w, a, kv, qg, tp = self.groups[g]
        fields = tuple((name, float(present[g]), tuple((f, float(c[0, g]), float(c[1, g])) for f, c in lines.items()))
                       for name, (_, lines, present) in self.collectives.items())
        return fields, tp

    def _rescaled_values(self, g: int, counts: np.ndarray) -> np.ndarray:
        """[key, count]: the rescaled ops' components for group g at `counts`, per op (op_time)."""
        w, a, kv, qg, tp = self.groups[g]
        values = np.zeros((len(self.keys), counts.size))
        for template, field_lines, present in self.collectives.values():
            if not present[g]:
                continue
            op = dataclasses.replace(template, **{f: float(c[0, g]) + float(c[1, g]) * counts
                                                  for f, c in field_lines.items()})
            t = op_time(op, self.hw, Precision(w, a, kv, qg), tp)
            cls = _class_key(self.pricings[0], template)
            weight = float(present[g]) * op.count
            for i, key in enumerate(self.keys):
                name = key if key in TOTAL_KEYS else ("time_s" if key == cls else None)
                if name is not None:
                    values[i] += weight * np.broadcast_to(np.asarray(getattr(t, name), dtype=float), counts.shape)
        return values

    def _add_rescaled(self, out: dict, template: Op, lines: dict, present, x, group, p: Precision, tp) -> None:
        """Add an op rebuilt from its field lines and priced by op_time: the rows of each tp
        among the groups that have it apart (a scalar tp makes a collective's per-device terms
        scalars), or every row with its own tp where the groups' tps are not known."""
        if self.tps is None:
            parts = [(None, group, x, p, tp)]
        else:
            values = sorted({t for t, there in zip(self.tps, present) if there})
            which = np.array([values.index(t) if there else -1 for t, there in zip(self.tps, present)]).take(group)
            parts = []
            for code, value in enumerate(values):
                rows = np.flatnonzero(which == code)
                if rows.size:
                    parts.append((rows, group[rows], x[rows], _pick_precision(p, rows, x.shape), value))
        cls = _class_key(self.pricings[0], template)
        for rows, groups, counts, precision, devices in parts:
            op = dataclasses.replace(template, **{f: _line_at(c, groups, counts) for f, c in lines.items()})
            t = op_time(op, self.hw, precision, devices)
            weight = present.take(groups) * op.count
            for key in TOTAL_KEYS + ((cls,) if cls else ()):
                value = getattr(t, key if key in TOTAL_KEYS else "time_s")
                if np.ndim(value) == 0 and value == 0:
                    continue  # nothing to add (a collective has no compute, memory or floor time)
                if rows is None:
                    out[key] += weight * value
                else:
                    out[key][rows] += weight * value

    @functools.cached_property
    def _any_cells(self) -> CellTable:
        """The first group's CellTable (every group's has the same tile and first run)."""
        return next(pr.cells for pr in self.pricings if pr.cells is not None)

    def _stacked_cells(self, q_max: int) -> "StackedCells":
        """Per-run tables of every GEMM slot, stacked [slot, group x run], covering runs to q_max."""
        covered, table = self._cells  # one read of a tuple: a table built already needs no lock
        if covered >= q_max:
            return table
        with self._lock:
            table = self._cells[1]
            if self._cells[0] >= q_max:
                return table
            q0 = self._any_cells.q0
            width = max(q_max, 2 * self._cells[0]) - q0 + 1
            tile_s = np.zeros((len(self.gemms), len(self.pricings), width))
            inv_bw = np.zeros((len(self.gemms), len(self.pricings), width))
            for g, pr in enumerate(self.pricings):
                if pr.cells is None:
                    continue
                tiles, invs = pr.cells.rows(q0 + width - 1)
                for row, term in enumerate(pr.gemms):
                    slot = self.gemm_names.index(term.name)
                    tile_s[slot, g], inv_bw[slot, g] = term.count * tiles[row, :width], invs[row, :width]
            # groups whose GEMMs are the same (precisions the GEMMs ignore, such as kv_bits) share rows
            firsts: dict = {}
            group_map = np.array([firsts.setdefault((tile_s[:, g].tobytes(), inv_bw[:, g].tobytes(),
                                                     tuple(coef[:, g].tobytes() for _, coef in self.gemms.values())),
                                                    len(firsts)) for g in range(len(self.pricings))], dtype=np.intp)
            unique = [next(g for g in range(len(self.pricings)) if group_map[g] == u) for u in range(len(firsts))]
            runs = np.tile(np.arange(q0, q0 + width, dtype=float), len(unique))
            tile_m = self._any_cells.tile_m
            table = _run_lines(tile_s[:, unique].reshape(len(self.gemms), -1), inv_bw[:, unique].reshape(len(self.gemms), -1),
                               [(key, coef[:, unique]) for key, coef in self.gemms.values()],
                               (runs - 1.0) * tile_m, runs * tile_m, width)
            table = dataclasses.replace(table, group_map=group_map)
            self._cells = (q0 + width - 1, table)
            return table


def _run_lines(tile_s, inv_bw, slots: list, low, high, width: int) -> "StackedCells":
    """StackedCells from the per-slot tables [slot, group x run] and the slots' (class key,
    coefficients [count, power slope, count x bytes alpha, count x bytes beta, count x latency] x group): per
    (group, run), the lines of the GEMMs' summed compute, memory and time (and each class key's
    time) over the run's counts [low, high], where every GEMM has one term the largest at both
    ends (else the run is `switching`). One slot at a time: a sweep of long prompts has millions
    of runs."""
    size = tile_s.shape[1]
    keys = list(dict.fromkeys(key for key, _ in slots if key))
    apart = len(keys) > 1  # one class key (or none) shares the time line
    lines = {name: (np.zeros(size), np.zeros(size)) for name in ("compute_s", "memory_s", "time_s", *(keys if apart else ()))}
    switching = np.zeros(size, dtype=bool)
    groups = size // width
    low, high = low.reshape(groups, width), high.reshape(groups, width)
    lines = {name: tuple(part.reshape(groups, width) for part in line) for name, line in lines.items()}
    switching = switching.reshape(groups, width)
    for slot, (key, coef) in enumerate(slots):
        tile, inv = tile_s[slot].reshape(groups, width), inv_bw[slot].reshape(groups, width)
        slope = np.broadcast_to(coef[1][:, None], tile.shape)
        a, b = coef[4][:, None] + coef[2][:, None] * inv, coef[3][:, None] * inv
        power_low, power_high = slope * low, slope * high
        memory_low, memory_high = a + b * low, a + b * high
        tile_wins = (tile >= power_low) & (tile >= power_high)
        power_wins = (power_low >= tile) & (power_high >= tile)
        time_tile = tile_wins & (tile >= memory_low) & (tile >= memory_high)
        time_power = ~time_tile & power_wins & (power_low >= memory_low) & (power_high >= memory_high)
        time_memory = ~time_tile & ~time_power & (memory_low >= tile) & (memory_low >= power_low) & \
            (memory_high >= tile) & (memory_high >= power_high)
        switching |= ~(tile_wins | power_wins) | ~(time_tile | time_power | time_memory)
        np.add(lines["compute_s"][0], tile, out=lines["compute_s"][0], where=tile_wins)
        np.add(lines["compute_s"][1], slope, out=lines["compute_s"][1], where=~tile_wins & power_wins)
        lines["memory_s"][0][...] += a
        lines["memory_s"][1][...] += b
        for name in ("time_s", key) if key and apart else ("time_s",):
            line_a, line_b = lines[name]
            np.add(line_a, tile, out=line_a, where=time_tile)
            np.add(line_b, slope, out=line_b, where=time_power)
            np.add(line_a, a, out=line_a, where=time_memory)
            np.add(line_b, b, out=line_b, where=time_memory)
    for line in lines.values():  # switching runs are priced GEMM by GEMM
        for part in line:
            np.copyto(part, 0.0, where=switching)
    lines = {name: tuple(part.reshape(-1) for part in line) for name, line in lines.items()}
    if keys and not apart:
        lines[keys[0]] = lines["time_s"]
    # the distinct lines' coefficients, rows 2 i and 2 i + 1, by piece: (group, run) rows with the
    # same lines (most runs of a group: its GEMMs keep their terms over long spans of counts)
    distinct = list({id(alpha): (alpha, beta) for alpha, beta in lines.values()}.values())
    line_of = {key: next(i for i, (alpha, _) in enumerate(distinct) if alpha is line[0]) for key, line in lines.items()}
    switching = switching.reshape(-1)
    piece, piece_lines = _row_pieces([(np.stack([part for line in distinct for part in line]), switching)], 2 * len(distinct))
    return StackedCells(width, tile_s, inv_bw, lines, switching, piece, piece_lines, line_of)


def _row_pieces(blocks, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(each row's piece, the distinct rows' values [value, piece]) of a table given block by block
    as (columns [value, row], switching [row]), `size` values a row: rows whose values are the
    same bits (switching ones apart, in piece 0 where there are any) share a piece; the piece ids
    in the smallest unsigned type that holds them. A table of (group, run) rows has a few hundred
    distinct ones among millions: a count's run then costs one gather of a small id and gathers
    from tables that stay in cache. Each block is cut into its spans of equal rows first."""
    firsts, flags, lengths = [], [], []
    for columns, switching in blocks:
        bits = np.vstack([columns.view(np.int64), switching[None, :].astype(np.int64)])
        changed = np.ones(bits.shape[1], dtype=bool)
        changed[1:] = np.any(bits[:, 1:] != bits[:, :-1], axis=0)
        starts = np.flatnonzero(changed)
        firsts.append(bits[:, starts])
        lengths.append(np.diff(np.append(starts, bits.shape[1])))
    spans = np.concatenate(firsts, axis=1) if firsts else np.zeros((size + 1, 0), dtype=np.int64)
    first, inverse = _distinct_columns(spans)
    ids = np.arange(first.size)
    switching = np.flatnonzero(spans[-1])
    if switching.size:  # the switching piece (zero lines: one of them at most) as piece 0
        switching_id = int(inverse[switching[0]])
        ids[[0, switching_id]] = ids[[switching_id, 0]]
    piece = np.repeat(ids[inverse], np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.intp))
    values = np.empty((size, first.size))
    values[:, ids] = spans[:-1, first].view(np.float64)
    return piece.astype(np.min_scalar_type(max(first.size - 1, 0))), values


def _distinct_columns(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(a column index of each distinct column, each column's distinct index) of an integer table
    [value, column], by one lexicographic sort (np.unique over axis sorts rows as bytes, ten times
    slower on the tens of thousands of spans a fused table has)."""
    order = np.lexsort(values[::-1]) if values.shape[1] else np.zeros(0, dtype=np.intp)
    ordered = values[:, order]
    new = np.ones(order.size, dtype=bool)
    new[1:] = np.any(ordered[:, 1:] != ordered[:, :-1], axis=0)
    inverse = np.empty(order.size, dtype=np.intp)
    inverse[order] = np.cumsum(new) - 1
    return order[new], inverse


#: Counts per run of the rescaled ops' piece tables (`StackedPricing._rescaled_pieces`), and the
#: first run past the direct table.
RUN_COUNTS = 64
_RUN_Q0 = (DIRECT_COUNTS + 1 + RUN_COUNTS - 1) // RUN_COUNTS


def _run_first_count(run):
    """The first count of run `run` past the direct table (runs of RUN_COUNTS counts, numbered
    from _RUN_Q0; a number or an array)."""
    return (run + (_RUN_Q0 - 1)) * RUN_COUNTS + 1


def _places_in_runs(x, run):
    """Each count's place in its run, 0 .. RUN_COUNTS - 1 (a count in the direct table: 0): its
    piece after its run's first where the run is priced count by count."""
    return np.clip(x - _run_first_count(run), 0, RUN_COUNTS - 1)


#: Runs one scenario fuses on its own (`StackedPricing._fused_at`: 2M tokens): past them it takes
#: the runs a sweep fused already, else its terms one by one (fusing a million runs costs a
#: second and gigabytes, for one count).
_SCALAR_FUSED_RUNS = 1 << 15


@dataclass(frozen=True)
class RescaledPieces:
    """The rescaled collectives of a StackedPricing past the table, summed: `piece` [block * width + run]
    names each run's piece (for `switching` runs the first of its counts' own pieces), `lines`
    {key: (alpha, beta) per piece}."""
    width: int
    piece: np.ndarray
    lines: dict
    switching: np.ndarray
    group_map: np.ndarray  # group -> its row block (groups with the same collectives share one)


@dataclass(frozen=True)
class StackedCells:
    """The per-run GEMM tables of a StackedPricing, rows group * width + run: per slot [slot, row]
    the tile-limited time and the inverse memory rate; per component {key: (alpha, beta)} the line
    of the GEMMs' sum over the run, zero where a GEMM switches term inside the run (`switching`;
    those runs are priced slot by slot); `piece` [row] the row's piece (`_row_pieces`: rows with the
    same lines share one; switching rows are piece 0 where there are any) and `piece_lines`
    [2 i, piece] and [2 i + 1, piece] the alpha and beta of distinct line i, `line_of` {key: i}
    (a gather from a table of millions of rows costs a cache miss a row: a count's run costs one
    gather of its piece, the rest come from tables of a few hundred entries)."""
    width: int
    tile_s: np.ndarray
    inv_bw: np.ndarray
    lines: dict
    switching: np.ndarray
    piece: np.ndarray
    piece_lines: np.ndarray
    line_of: dict
    group_map: np.ndarray | None = None  # group -> its row block (groups with equal GEMMs share one)


@dataclass(frozen=True)
class FusedRuns:
    """A StackedPricing's affine folds, tiled GEMMs and rescaled collectives past the direct table,
    summed per (group, run of RUN_COUNTS counts) (`StackedPricing._fuse`): `piece` [group * width
    + run] names the run's piece (0: a run where some term changes line inside, `switching`),
    `piece_lines` [2 i, piece] and [2 i + 1, piece] the alpha and beta of distinct line i and
    `line_of` {key: i}; `constants` {key: value} the components without a line (the same
    number in every steady run). Where `counted` is not 0, the switching runs are priced count
    by count instead: piece `counted` and up, each run's RUN_COUNTS counts in a row
    (`StackedPricing._count_pieces`)."""
    width: int
    piece: np.ndarray
    piece_lines: np.ndarray
    line_of: dict
    constants: dict
    switching: bool
    counted: int = 0
    #: (key, row of its line's alpha in `piece_lines`, -1 for a constant) of every component, in
    #: the pricing's order (one scenario's lookup: `StackedPricing._fused_at`)
    layout: tuple = ()


def _run_index(x, tile: float, q0: int, runs: dict | None):
    """Each count's run of `tile` counts, from the first run past the direct table (q0; counts
    inside the table get run 0, their values discarded), computed once per run length."""
    run = None if runs is None else runs.get((tile, q0))
    if run is None:
        run = np.ceil(x / tile).astype(np.intp) - q0
        np.maximum(run, 0, out=run)
        if runs is not None:
            runs[(tile, q0)] = run
    return run


def gather(values: np.ndarray, index, out: np.ndarray | None = None) -> np.ndarray:
    """values[index] for indices this module built in range (group indices, table columns, run
    pieces, all from checked scenario fields): numpy's take in "wrap" mode leaves out the default
    mode's per-element bounds check and its error path, a third faster on a chunk's gathers from
    small tables, and gives the same elements for indices in range. Into `out` where given."""
    return values.take(index, mode="wrap", out=out)


def _line_at(coef: np.ndarray, group, x):
    """alpha_g + beta_g x of a per-group line (2 x groups), skipping what is the same for all."""
    alpha, beta = coef
    if not beta.any():
        return alpha[0] if np.all(alpha == alpha[0]) else gather(alpha, group)
    return gather(alpha, group) + gather(beta, group) * x


def _slots(pricings: list, terms_of: Callable, groups: int, coefficients: Callable) -> dict:
    """{op name: (class key, coefficient rows x groups)} of one kind of term across groups."""
    slots: dict = {}
    for g, pr in enumerate(pricings):
        for term in terms_of(pr):
            values = coefficients(term)
            key, coef = slots.setdefault(term.name, (term.key, np.zeros((len(values), groups))))
            coef[:, g] = values
    return slots


def _pick(value, rows, shape):
    """The rows (flat indices; None: all of them) of a per-scenario value, flat (a scalar stays
    as it is)."""
    if not np.ndim(value):
        return value
    flat = np.broadcast_to(value, shape).reshape(-1)
    return flat if rows is None else flat[rows]


def _pick_precision(p: Precision, rows, shape) -> Precision:
    return Precision(*(_pick(v, rows, shape) for v in (p.w_bits, p.a_bits, p.kv_bits, p.quant_group)),
                     p.weight_only_kernel)
