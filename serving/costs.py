"""Iteration times of a continuous-batching engine, tabulated once per configuration from perfmodel.

An engine iteration runs one forward pass over a mixed batch: some prefill chunks (c_i new tokens
on top of s_i already-computed ones) and n decodes (one token each, q = k + 1 with speculative
verification). Its time is composed from the same op groups `perfmodel.steps.step_time` sums
(perfmodel.ops.token_ops, logits_ops, context_ops, each op priced by perfmodel.roofline.op_time):

    device = token_ops(T) + logits_ops(R) + context_ops(decodes) + sum_i context_ops(chunk i)
    time   = max(device, paid host time at T tokens) + engine.step_host_s      (steps.settle_step)

with T = sum c_i + q n the iteration's tokens and R the rows that produce logits (decodes and the
chunks that finish their prompt). The token and logits ops depend only on T and R, so they are
tabulated for every integer T up to the token budget in one vectorized call each.

Decode attention: for a fixed number of sequences n, an attention op's FLOPs and bytes are affine
in each sequence's cached context (ops.attention_op: pairs = T S0 + T(T+1)/2, bytes ~ S0 + 2T), and
its work units depend on n only; so one kernel over n sequences of contexts S_1..S_n does exactly
the work of one kernel over n sequences at their mean context. Its three times (dot products,
work units and memory: roofline.attention_compute_terms, each affine in context, the op taking the
largest) are tabulated per n at two contexts (0 and REF_PAST) and interpolated linearly: exact, not
an approximation, whatever the spread of contexts. Except TensorRT-LLM's decode kernels, which
split each sequence's keys over blocks by a host rule (roofline.KV_SPLIT_RULES): their work term is
no line in context and is priced at the mean context itself (perfmodel.fastpath.SplitWork); an approximation where
contexts differ (XQA sizes its blocks by the batch's longest history).

Prefill chunks: one chunk's attention is tabulated per chunk size c, affine in its past s the
same way (exact). Several chunks in one iteration run as one variable-length kernel (FlashAttention's
varlen API, as vLLM calls it): its FLOPs, bytes and query rows are the chunks' sums, and its work
units the sum of each chunk's own (roofline.attention_units: a unit never spans two sequences), so
one Op with those sums (groups = the units, which makes attention_units return exactly that sum,
every unit holding at most 128 rows) is priced by op_time; per-chunk FLOPs and bytes are tabulated
affine in past. Approximation: decodes and prefill chunks are priced as two kernels (decode and
prefill kernel families are calibrated apart; vLLM V1 runs one varlen kernel for both).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from hardware.spec import Hardware
from perfmodel.engines import Engine
from perfmodel.engines import load as load_engine
from perfmodel.ops import Op, Precision, context_ops, logits_ops, step_phase, token_ops
from perfmodel.fastpath import SplitWork
from perfmodel.roofline import (attention_compute_terms, attention_params, attention_units, has_work_terms,
                                kv_split_rule, op_time)
from perfmodel.steps import paid_host_s
from workloads.model import ModelSpec

#: Context at which affine attention times are sampled for their slope (any positive value gives
#: the same line; a large one keeps rounding small).
REF_PAST = 65536.0


def _op_sums(ops, hw: Hardware, p: Precision, tp) -> tuple:
    """(device time, host dispatch time) summed count x time over ops (arrays broadcast)."""
    device, host = 0.0, 0.0
    for op in ops:
        t = op_time(op, hw, p, tp)
        device = device + op.count * t.time_s
        host = host + op.count * t.host_s
    return device, host


def _compute_terms(op: Op, t, hw, p) -> tuple:
    """(dot-product, work-unit) compute times of a context op: an attention op's two terms
    (roofline.attention_compute_terms: each affine in context, its compute the larger), another
    op's compute time and no work term."""
    if op.kind == "attention":
        return attention_compute_terms(op, hw, p)
    return t.compute_s, 0.0


def _split_term(op: Op, at_ref: Op, hw: Hardware, shape) -> SplitWork | None:
    """The work term of `op` (at past 0; `at_ref` the same op at REF_PAST) per row, where it is
    attention run by a kernel with a split rule (perfmodel.fastpath.SplitWork), else None."""
    split = kv_split_rule(op.kernel, hw) if op.kind == "attention" else ""
    params = attention_params(hw, op) if split else ()
    if not split or not has_work_terms(params):
        return None
    flat = lambda x: np.reshape(np.broadcast_to(np.asarray(x, float), shape), -1).copy()  # noqa: E731
    new_tokens, kv0 = flat(op.n), flat(op.kv_bytes)  # a decode op's context at past 0: its new tokens
    if not np.all(new_tokens == new_tokens[0]):
        raise ValueError(f"a split kernel's op {op.name!r} has new tokens varying by row; a decode's are one count")
    return SplitWork(flat(op.count), flat(op.m), flat(op.groups), kv0, (flat(at_ref.kv_bytes) - kv0) / REF_PAST,
                     float(new_tokens[0]), params, float(hw.compute_units), split, float(op.k))


def _one_row_at(term: SplitWork, i: int, size: int) -> SplitWork:
    """A one-row term (row 0) at row i of a table of `size` rows, count 0 (no term) elsewhere."""
    placed = {}
    for name in SplitWork._COLUMNS:
        column = np.zeros(size)
        column[i] = getattr(term, name)[0]
        placed[name] = column
    return dataclasses.replace(term, **placed)


def _context_lines(model, hw, p, tp, engine, seqs, new_tokens) -> list[tuple]:
    """Per context op: arrays (dot0, dot_slope, work0, work_slope, memory0, memory_slope, fixed, split)
    such that its count x time at mean past s is max(d0 + ds s, w0 + ws s, m0 + ms s) + fixed (count
    folded in): each term is affine in past, so two contexts give it exactly; except the work term of
    a kernel that splits its keys by a host rule (`split`: a perfmodel.fastpath.SplitWork, its lines
    then 0; else None), priced at s itself."""
    at0 = context_ops(model, seqs=seqs, new_tokens=new_tokens, past=0.0, p=p, tp=tp, engine=engine)
    at1 = context_ops(model, seqs=seqs, new_tokens=new_tokens, past=REF_PAST, p=p, tp=tp, engine=engine)
    shape = np.shape(seqs) or np.shape(new_tokens)

    def line(v0, v1, count):
        v0 = np.broadcast_to(count * np.asarray(v0, float), shape)
        return v0, (np.broadcast_to(count * np.asarray(v1, float), shape) - v0) / REF_PAST

    lines = []
    for a, b in zip(at0, at1):
        ta, tb = op_time(a, hw, p, tp), op_time(b, hw, p, tp)
        (dot_a, work_a), (dot_b, work_b) = _compute_terms(a, ta, hw, p), _compute_terms(b, tb, hw, p)
        d0, ds = line(dot_a, dot_b, a.count)
        w0, ws = line(work_a, work_b, a.count)
        m0, ms = line(ta.memory_s, tb.memory_s, a.count)
        fixed = np.broadcast_to(a.count * (np.asarray(ta.overhead_s, float) + np.asarray(ta.comm_s, float)), shape)
        split = _split_term(a, b, hw, shape)
        if split is not None:
            w0, ws = np.zeros(shape), np.zeros(shape)
        lines.append(tuple(np.array(x, dtype=float).tolist() for x in (d0, ds, w0, ws, m0, ms, fixed)) + (split,))
    return lines


def _chunk_lines(model, hw, p, tp, engine, chunk_sizes) -> list[tuple]:
    """_context_lines of one-sequence chunks of every size: prefill-phase kernels, but a chunk of one
    token runs as a one-token step does (ops.step_phase: the decode kernels; perfmodel.step_time
    prices a one-token prompt so)."""
    lines = _context_lines(model, hw, p, tp, engine, seqs=1.0, new_tokens=chunk_sizes)
    one = _context_lines(model, hw, p, tp, engine, seqs=1.0, new_tokens=1.0)
    for k, (columns, single) in enumerate(zip(lines, one)):
        for column, value in zip(columns[:7], single[:7]):
            column[1] = value
        if single[7] is not None:  # the one-token chunk's decode kernel splits its keys
            lines[k] = columns[:7] + (_one_row_at(single[7], 1, len(columns[0])),)
    return lines


def _chunk_fields(model, hw, p, tp, engine, chunk_sizes) -> list[dict]:
    """Per context op of a one-sequence chunk of c tokens: the fields a variable-length kernel over
    several chunks sums (FLOPs and bytes affine in past: value at 0 and slope; query rows; work
    units), as lists indexed by c, and the op's identity."""
    at0 = context_ops(model, seqs=1.0, new_tokens=chunk_sizes, past=0.0, p=p, tp=tp, engine=engine)
    at1 = context_ops(model, seqs=1.0, new_tokens=chunk_sizes, past=REF_PAST, p=p, tp=tp, engine=engine)
    out = []
    for a, b in zip(at0, at1):
        lists = {}
        for name in ("flops", "act_bytes", "kv_bytes"):
            v0 = np.broadcast_to(np.asarray(getattr(a, name), float), chunk_sizes.shape)
            v1 = np.broadcast_to(np.asarray(getattr(b, name), float), chunk_sizes.shape)
            lists[name] = (v0.tolist(), ((v1 - v0) / REF_PAST).tolist())
        units = attention_units(a) if a.kind == "attention" else np.ones_like(chunk_sizes)
        out.append({"op": a, "fields": lists, "m": np.broadcast_to(np.asarray(a.m, float), chunk_sizes.shape).tolist(),
                    "units": np.broadcast_to(np.asarray(units, float), chunk_sizes.shape).tolist()})
    return out


def _host_of_context(model, hw, p, tp, engine, new_tokens) -> float:
    ops = context_ops(model, seqs=1.0, new_tokens=new_tokens, past=1.0, p=p, tp=tp, engine=engine)
    return float(_op_sums(ops, hw, p, tp)[1])


def _lines_at(lines: list, i: int, past: float) -> float:
    """Sum over context ops of max(dot, work, memory) + fixed at row i and past (_context_lines)."""
    total = 0.0
    for d0, ds, w0, ws, m0, ms, fixed, split in lines:
        work = w0[i] + ws[i] * past
        if split is not None:  # its line is 0 where the split term holds (a table's other rows: 0 here)
            work = max(work, split.time_s(i, past))
        t = max(d0[i] + ds[i] * past, work, m0[i] + ms[i] * past)
        total += t + fixed[i]
    return total


@dataclass(frozen=True)
class StepCosts:
    """Lookup tables of one configuration's iteration time (see the module doc).

    tokens_prefill[T] / tokens_decode[T]: token_ops device time of a mixed / decode-only
    iteration of T tokens; logits[R]: final norm + LM head over R rows; host[T]: host time paid
    at T tokens (0 when graphed); decode_lines / chunk_lines: per context op, affine pieces
    indexed by sequences n or chunk size c. Plain Python lists: the simulator indexes them once
    per iteration, which is faster than numpy scalars."""

    tokens_prefill: list
    tokens_decode: list
    logits: list
    host_prefill: list
    host_decode: list
    decode_lines: list
    chunk_lines: list
    chunk_fields: list
    pricing: tuple
    step_host_s: float
    decode_query_tokens: int

    def decode_attention_s(self, n: int, mean_past: float) -> float:
        return _lines_at(self.decode_lines, n, mean_past)

    def chunk_attention_s(self, chunk: int, past: float) -> float:
        return _lines_at(self.chunk_lines, chunk, past)

    def chunks_attention_s(self, chunks: list) -> float:
        """Attention of several prefill chunks [(c, s), ...] in one variable-length kernel (module doc)."""
        if len(chunks) == 1:
            return self.chunk_attention_s(*chunks[0])
        hw, p, tp = self.pricing
        total = 0.0
        for spec in self.chunk_fields:
            sums = {}
            for name, (v0, slope) in spec["fields"].items():
                sums[name] = sum(v0[c] + slope[c] * s for c, s in chunks)
            rows = sum(spec["m"][c] for c, _ in chunks)
            units = sum(spec["units"][c] for c, _ in chunks)
            a = spec["op"]
            # n: the longest context (a unit streaming its whole cache: key_s); k: the head dim a
            # score's FLOPs divide by (roofline.attention_scores)
            op = Op(a.name, a.kind, a.count, flops=sums["flops"], weight_bytes=0.0, act_bytes=sums["act_bytes"],
                    kv_bytes=sums["kv_bytes"], kernels=a.kernels, m=rows, n=max(s + c for c, s in chunks), k=a.k,
                    groups=units, kernel=a.kernel)
            total += a.count * float(op_time(op, hw, p, tp).time_s)
        return total

    def decode_step_s(self, n: int, sum_past: float) -> float:
        """A decode-only iteration of n sequences whose cached contexts sum to sum_past."""
        tokens = n * self.decode_query_tokens
        device = self.tokens_decode[tokens] + self.logits[tokens if self.decode_query_tokens > 1 else n] \
            + self.decode_attention_s(n, sum_past / n)
        host = self.host_decode[tokens]
        return (device if device > host else host) + self.step_host_s

    def mixed_step_s(self, n: int, sum_past: float, chunks: list, logits_rows: int) -> float:
        """An iteration of n decodes (contexts summing to sum_past) and prefill chunks [(c, s), ...]."""
        tokens = n * self.decode_query_tokens
        device = self.decode_attention_s(n, sum_past / n) if n else 0.0
        for c, _ in chunks:
            tokens += c
        device += self.chunks_attention_s(chunks)
        device += self.tokens_prefill[tokens] + self.logits[logits_rows]
        host = self.host_prefill[tokens]
        return (device if device > host else host) + self.step_host_s


def build_step_costs(model: ModelSpec, hw: Hardware, p: Precision, tp: int, engine: Engine | str,
                     max_tokens: int, max_seqs: int, decode_query_tokens: int = 1) -> StepCosts:
    """Tabulate iteration times for token budgets up to `max_tokens`, up to `max_seqs` decodes of
    `decode_query_tokens` tokens each (k + 1 under speculative verification)."""
    engine = load_engine(engine)
    q = int(decode_query_tokens)
    top = max(int(max_tokens), max_seqs * q)
    tokens = np.arange(top + 1, dtype=float)
    # one vectorized call per op group over every token count (index 0 is a 0-token step; unused)
    # a verification step of q > 1 tokens per sequence runs prefill-phase kernels (ops.step_phase)
    phases = {"prefill": "prefill", "decode": step_phase(float(q))}
    parts = {}
    for name, phase in phases.items():
        before, after = token_ops(model, tokens=tokens, p=p, tp=tp, engine=engine, phase=phase)
        parts[name] = _op_sums(before + after, hw, p, tp)
    rows = np.arange(top + 1, dtype=float)
    logit_device, logit_host = _op_sums(logits_ops(model, logits_tokens=rows, p=p, tp=tp, engine=engine), hw, p, tp)
    seqs = np.arange(max_seqs + 1, dtype=float)
    decode_phase_tokens = float(q)
    host_context = {"decode": _host_of_context(model, hw, p, tp, engine, decode_phase_tokens),
                    "prefill": _host_of_context(model, hw, p, tp, engine, 2.0)}
    host = {}
    for phase in ("prefill", "decode"):
        dispatch = np.broadcast_to(parts[phase][1], tokens.shape) + float(np.max(logit_host)) + host_context[phase]
        host[phase] = np.broadcast_to(paid_host_s(dispatch, model, hw, engine, tokens), tokens.shape)
    chunk_sizes = np.arange(max(int(max_tokens), 1) + 1, dtype=float)
    chunk_sizes[0] = 1.0  # a 0-token chunk never runs; keep the table's index aligned with c
    as_list = lambda x: np.broadcast_to(np.asarray(x, float), tokens.shape).tolist()  # noqa: E731
    return StepCosts(
        tokens_prefill=as_list(parts["prefill"][0]), tokens_decode=as_list(parts["decode"][0]),
        logits=as_list(logit_device), host_prefill=as_list(host["prefill"]), host_decode=as_list(host["decode"]),
        decode_lines=_context_lines(model, hw, p, tp, engine, seqs=np.maximum(seqs, 1.0), new_tokens=decode_phase_tokens),
        chunk_lines=_chunk_lines(model, hw, p, tp, engine, chunk_sizes),
        chunk_fields=_chunk_fields(model, hw, p, tp, engine, chunk_sizes), pricing=(hw, p, tp),
        step_host_s=engine.step_host_s, decode_query_tokens=q)
