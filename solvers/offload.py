"""Offloading placement (FlexGen-style): what to keep on the GPU, in host DRAM or on disk, and how fast.

Model (FlexGen, Sheng et al., arXiv 2303.06865, section 4 and its experimental/cost_model.py),
generalised from OPT to every catalog model. The decision variables are the fractions of weights
(wg, wc, wd), KV cache (cg, cc, cd), activations between layers (hg, hc, hd) and, for MoE models,
routed experts (eg, ec, ed) held by GPU / CPU / disk, each triple summing to 1, plus the GPU batch
size gbs and the number of GPU batches nb that share one load of each layer's weights
(block size bls = gbs * nb). Generation of `gen` tokens for bls prompts of `prompt` tokens takes

    T = sum over layer groups of  count * (T_prefill + (gen - 1) * T_decode)
    throughput = bls * gen / T

Per layer and phase, six streams are linear in the fractions (bytes over the tier's rate):
  h2d        offloaded weights (+ touched experts) + offloaded activations (+ KV when attention
             over off-GPU KV runs on the GPU) over the host link
  d2h        new KV and activations written back to their home tiers
  disk_read  disk-resident weights, experts, KV and activations into DRAM (`perfmodel.tiers` flash
             throughput at the tiers' chunk size and parallel reads)
  disk_write new KV and activations onto disk
  gpu        nb GPU batches of the layer's ops (the project's roofline, `perfmodel.ops.step_ops`),
             attention scaled by the GPU-resident KV share
  cpu        attention over CPU/disk-resident KV on the CPU (`cpu_attention`), the roofline
             max(FLOPs / CPU FLOP/s, KV bytes / DRAM bandwidth)
and the phase time is a max over sums of streams, chosen by `overlap`:
  "flexgen"  the form FlexGen fitted on T4 runs: prefill max(h2d + disk_read, d2h + disk_write,
             gpu + cpu); decode h2d + max(d2h, disk_read, disk_write, gpu + cpu) (the weight copy in
             decode did not overlap with CPU attention, which shares the host's memory and cores)
  "max"      every stream overlaps (lower bound);  "sum"  nothing overlaps (upper bound).
Each max is convex, so minimising T over the fractions for fixed (gbs, nb) is a linear program
(epigraph variables per phase); the solver runs it for a grid of (gbs, nb) and keeps the best.

Memory: peak bytes per tier (home + working set, prefill and decode) must stay within
`memory_fraction` of capacity. Home: each tier's share of all weights, experts, the whole KV cache
(bls sequences of prompt + gen tokens) and one layer boundary of activations. Working set on the GPU:
the off-GPU part of one layer double-buffered (of routed experts, top_k at a time), the activations of one GPU batch
(`perfmodel.memory.activation_bytes`) and the KV it writes; on the CPU: staging of disk-resident
data for one layer.

MoE: routed experts are placed individually. Expert i is touched by a step of t tokens with
probability 1 - (1 - p_i)^t (p_i its per-token routing probability, uniform k/E by default); the GPU
keeps the most popular eg * E experts and the disk the least popular ed * E, so the bytes copied per
layer are convex piecewise-linear in eg and ed (sorted cumulative sums) and stay in the LP.

Non-layer weights (LM head, final norm; a tied embedding table) are spread evenly over the layers
with the layers' fractions: exact for bytes and memory, an approximation only in which layer's
compute hides them. An untied input embedding table stays in DRAM (lookups move one row per token).
Link latency is left out: per-layer transfers are megabytes, latency microseconds.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import numpy as np

from hardware.spec import Calibration, Hardware
from perfmodel import memory, shapes
from perfmodel.engines import DEFAULT_ENGINE, Engine
from perfmodel.ops import Precision, expected_experts_touched, step_ops
from perfmodel.roofline import op_time
from perfmodel.tiers import MemoryTiers
from workloads.model import ModelSpec
from workloads.scenario import Scenario

FRACTIONS = ("wg", "wc", "wd", "cg", "cc", "cd", "hg", "hc", "hd", "eg", "ec", "ed")
AUX = ("xm_prefill", "xd_prefill", "xm_decode", "xd_decode")   # expert bytes over the link / from disk
VARS = FRACTIONS + AUX
NV = len(VARS)
PHASES = ("prefill", "decode")
STREAMS = ("h2d", "d2h", "disk_read", "disk_write", "gpu", "cpu")
TIERS = ("gpu", "cpu", "disk")

_ALL_MAX = (("h2d",), ("d2h",), ("disk_read",), ("disk_write",), ("gpu", "cpu"))
OVERLAP = {
    "flexgen": {"prefill": (("h2d", "disk_read"), ("d2h", "disk_write"), ("gpu", "cpu")),
                "decode": (("h2d", "d2h"), ("h2d", "disk_read"), ("h2d", "disk_write"), ("h2d", "gpu", "cpu"))},
    "max": {"prefill": _ALL_MAX, "decode": _ALL_MAX},
    "sum": {"prefill": (STREAMS,), "decode": (STREAMS,)},
}

#: Default grids searched for the GPU batch size and the number of GPU batches (FlexGen searches
#: powers of two for gbs and grows nb until memory runs out).
GBS_GRID = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
NB_GRID = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)


class OffloadError(ValueError):
    """An impossible placement or bad input; the message says what is missing where."""


# -- the policy ---------------------------------------------------------------------------------------
def _triple(value, name: str) -> tuple:
    try:
        parts = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise OffloadError(f"{name}: expected three fractions (GPU, CPU, disk), got {value!r}") from None
    if len(parts) != 3 or not all(math.isfinite(v) and -1e-9 <= v <= 1 + 1e-9 for v in parts):
        raise OffloadError(f"{name}: {value!r} must be three fractions between 0 and 1 (GPU, CPU, disk)")
    if abs(sum(parts) - 1.0) > 1e-6:
        raise OffloadError(f"{name}: fractions {value!r} sum to {sum(parts):.6g}, not 1")
    return tuple(min(max(v, 0.0), 1.0) for v in parts)


@dataclass(frozen=True)
class OffloadPolicy:
    """Where each kind of data lives (fractions on GPU, CPU, disk) and how the batch is blocked.

    experts: routed experts of MoE layers (None: same as weights); cpu_attention: attention over
    CPU/disk-resident KV runs on the CPU (else that KV is copied to the GPU every decode step).
    """

    gbs: int
    n_batches: int
    weights: tuple = (1.0, 0.0, 0.0)
    kv: tuple = (1.0, 0.0, 0.0)
    activations: tuple = (1.0, 0.0, 0.0)
    experts: tuple | None = None
    cpu_attention: bool = True

    def __post_init__(self):
        for name in ("gbs", "n_batches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise OffloadError(f"{name}: {value!r} must be a whole number >= 1")
            object.__setattr__(self, name, int(value))
        for name in ("weights", "kv", "activations"):
            object.__setattr__(self, name, _triple(getattr(self, name), name))
        experts = self.weights if self.experts is None else _triple(self.experts, "experts")
        object.__setattr__(self, "experts", experts)

    @classmethod
    def from_percent(cls, gbs: int, n_batches: int, wg, wc, cg, cc, hg, hc, **kwargs) -> "OffloadPolicy":
        """FlexGen's `--percent wg wc cg cc hg hc` form (percent on GPU and CPU; the rest on disk)."""
        def triple(g, c):
            return (g / 100, c / 100, (100 - g - c) / 100)
        return cls(gbs, n_batches, triple(wg, wc), triple(cg, cc), triple(hg, hc), **kwargs)

    @property
    def block_size(self) -> int:
        return self.gbs * self.n_batches

    def vector(self) -> np.ndarray:
        return np.array([*self.weights, *self.kv, *self.activations, *self.experts])


# -- linear expressions over VARS ---------------------------------------------------------------------
def _lin(const: float = 0.0, **coefs) -> np.ndarray:
    """An affine expression: coefficients over VARS, constant last."""
    out = np.zeros(NV + 1)
    for name, value in coefs.items():
        out[VARS.index(name)] = value
    out[NV] = const
    return out


# -- per-layer sizes and times ----------------------------------------------------------------------
@dataclass(frozen=True)
class _Group:
    """Layers sharing one shape: dense layers, or MoE layers (per layer quantities)."""

    name: str
    count: int
    weight_bytes: float          # non-expert weights per layer (incl. spread LM head)
    expert_bytes: float          # one routed expert (0 for dense layers)
    n_experts: int


def _weight_groups(model: ModelSpec, p: Precision) -> tuple:
    """Per-layer bytes of each layer group; summed over layers they equal `memory.weight_bytes`
    less an untied input embedding table (which stays in DRAM)."""
    wb = float(p.weight_bytes_per_param)
    norms = model.norms_per_layer * model.norm_params()
    common = (model.attention_params()) * wb + norms * 2.0
    head = memory.weight_bytes(model, p) - _layers_weight_bytes(model, p) - _input_table_bytes(model)
    spread = head / model.n_layers
    groups = []
    if model.n_dense_ffn_layers:
        groups.append(_Group("dense", model.n_dense_ffn_layers, common + model.ffn_params(model.d_ff) * wb + spread,
                             0.0, 0))
    if model.n_moe_layers:
        shared = model.moe_params() - model.n_experts * model.ffn_params(model.moe_d_ff)
        groups.append(_Group("moe", model.n_moe_layers, common + shared * wb + spread,
                             model.ffn_params(model.moe_d_ff) * wb, model.n_experts))
    return tuple(groups)


def _layers_weight_bytes(model: ModelSpec, p: Precision) -> float:
    return model.n_layers * float(shapes.layer_weight_bytes(model, p))


def _input_table_bytes(model: ModelSpec) -> float:
    """The input embedding table when the LM head is a separate matrix (it then stays in DRAM)."""
    if model.tied_embeddings:
        return 0.0
    return (model.vocab_size * (model.embed_proj_dim or model.d_model) + model.learned_positions * model.d_model) * 2.0


def _is_moe_op(op) -> bool:
    return op.kind == "moe" or op.name == "router" or op.name.startswith("shared")


def _is_dense_ffn_op(op) -> bool:
    return op.name.startswith("ffn_") and op.name != "ffn_norm"


def layer_times(model: ModelSpec, hw: Hardware, p: Precision, seqs, new_tokens, past,
                engine: Engine | str = DEFAULT_ENGINE) -> dict:
    """GPU time of one step's ops split by where they belong (arrays over `seqs`): per layer
    `common` (norms, projections...), `attention` (attention and cache growth), per dense layer
    `dense_ffn`, per MoE layer `moe`, and once per step `rest` (embedding, final norm, LM head)."""
    L = model.n_layers
    out = {"common": 0.0, "attention": 0.0, "dense_ffn": 0.0, "moe": 0.0, "rest": 0.0}
    for op in step_ops(model, seqs=seqs, new_tokens=new_tokens, past=past, p=p, engine=engine, logits_tokens=seqs):
        t = op.count * np.asarray(op_time(op, hw, p).time_s)
        if op.count == 1 and L > 1:
            out["rest"] = out["rest"] + t
        elif op.kind == "attention" or op.name == "kv_cat":
            out["attention"] = out["attention"] + t / L
        elif _is_moe_op(op):
            out["moe"] = out["moe"] + t / max(model.n_moe_layers, 1)
        elif _is_dense_ffn_op(op):
            out["dense_ffn"] = out["dense_ffn"] + t / max(model.n_dense_ffn_layers, 1)
        else:
            out["common"] = out["common"] + t / L
    return out


def cpu_attention_s(model: ModelSpec, tiers: MemoryTiers, p: Precision, seqs, past):
    """One layer's decode attention for `seqs` sequences over `past` cached tokens on the CPU:
    max(FLOPs / CPU FLOP/s, bytes / DRAM bandwidth) (roofline; FlexGen fits the CPU rate)."""
    op = next(o for o in step_ops(model, seqs=seqs, new_tokens=1.0, past=past, p=p) if o.kind == "attention")
    return np.maximum(op.flops / tiers.cpu_flops_per_s, op.bytes / tiers.dram_bytes_per_s)


def touch_probabilities(model: ModelSpec, tokens, popularity=None) -> np.ndarray:
    """Probability each routed expert is used by a step of `tokens` tokens, most popular first:
    1 - (1 - p_i)^tokens, with p_i the per-token routing probability (sum p_i = top_k; uniform
    k / E by default, which gives `perfmodel.ops.expected_experts_touched` in total)."""
    E, k = model.n_experts, model.top_k
    if popularity is None:
        probs = np.full(E, k / E)
    else:
        probs = np.asarray(popularity, dtype=float)
        if probs.shape != (E,) or np.any(~np.isfinite(probs)) or np.any(probs < 0) or probs.sum() <= 0:
            raise OffloadError(f"expert_popularity: expected {E} non-negative weights, got shape {probs.shape}")
        probs = np.minimum(probs / probs.sum() * k, 1.0)
    return np.sort(1.0 - (1.0 - probs) ** tokens)[::-1]


def _descending_pieces(values: np.ndarray, scale: float, var: str, aux: str) -> list:
    """Lines whose max is scale * (sum of values beyond the first f * E), f = `var` (values sorted
    descending): the bytes of touched experts NOT among the f share kept closest."""
    E = len(values)
    total = values.sum()
    top = np.concatenate([[0.0], np.cumsum(values)])
    pieces = []
    for j in range(E):
        # on [j/E, (j+1)/E]: scale * (total - top[j] - values[j] * (f E - j))
        const = scale * (total - top[j] + values[j] * j)
        pieces.append(_lin(const, **{var: -scale * values[j] * E, aux: -1.0}))
    return _unique(pieces)


def _ascending_pieces(values: np.ndarray, scale: float, var: str, aux: str) -> list:
    """Lines whose max is scale * (sum of the f * E smallest values), f = `var`."""
    asc = values[::-1]
    low = np.concatenate([[0.0], np.cumsum(asc)])
    pieces = []
    for j in range(len(asc)):
        const = scale * (low[j] - asc[j] * j)
        pieces.append(_lin(const, **{var: scale * asc[j] * len(asc), aux: -1.0}))
    return _unique(pieces)


def _unique(pieces: list) -> list:
    return list({tuple(np.round(p, 12)): p for p in pieces}.values())


# -- the problem for one (gbs, nb) --------------------------------------------------------------------
@dataclass(frozen=True)
class _Problem:
    bls: int
    counts: tuple                       # layers per group
    streams: tuple                      # per group: {phase: {stream: expr}}
    aux_pieces: Mapping                 # aux var -> list of exprs that must be <= 0
    memory: Mapping                     # (tier, phase) -> expr of peak bytes
    capacity: Mapping                   # tier -> usable bytes
    combos: Mapping                     # phase -> tuple of stream tuples
    gen: int


class _Setup:
    """Everything about a model on a system that does not depend on the policy."""

    def __init__(self, model, hw, tiers, sc, overlap, engine, memory_fraction, expert_popularity):
        if overlap not in OVERLAP:
            raise OffloadError(f"overlap: {overlap!r} is not one of {tuple(OVERLAP)}")
        if not (0 < memory_fraction <= 1):
            raise OffloadError(f"memory_fraction: {memory_fraction!r} must be in (0, 1]")
        if sc.size != 1:
            raise OffloadError(f"scenario: the offloading solver takes one scenario, got {sc.size}")
        self.model, self.hw, self.tiers, self.overlap, self.engine = model, hw, tiers, overlap, engine
        self.prompt, self.gen = int(sc.prompt), int(sc.gen)
        self.p = Precision(sc.w_bits, sc.a_bits, sc.kv_bits, sc.quant_group)
        self.groups = _weight_groups(model, self.p)
        self.popularity = expert_popularity
        self.memory_fraction = memory_fraction
        self.kv_token = float(shapes.kv_bytes_per_token_per_layer_per_device(model, self.p.kv_bits))  # tp = 1
        self.hidden_token = model.d_model * float(self.p.act_bytes)
        self.query_token = model.q_dim * float(self.p.act_bytes)
        self.mid = self.prompt + max(self.gen - 2, 0) / 2                           # mean decode context
        self.capacity = {"gpu": tiers.hbm_capacity_bytes * memory_fraction,
                         "cpu": tiers.dram_capacity_bytes * memory_fraction,
                         "disk": tiers.flash_capacity_bytes * memory_fraction}
        self.weights_total = sum(g.count * (g.weight_bytes + g.n_experts * g.expert_bytes) for g in self.groups)
        self.table = _input_table_bytes(model)

    def gpu_times(self, gbs) -> dict:
        pre = layer_times(self.model, self.hw, self.p, gbs, self.prompt, 0.0, self.engine)
        dec = layer_times(self.model, self.hw, self.p, gbs, 1.0, self.mid, self.engine)
        return {"prefill": pre, "decode": dec}

    def problem(self, gbs: int, nb: int, cpu_attention: bool, times: dict) -> _Problem:
        t, s, n, L = self.tiers, self.prompt, self.gen, self.model.n_layers
        bls = gbs * nb
        kv, hid, q = self.kv_token, self.hidden_token, self.query_token
        read = t.flash_effective_read_bytes_per_s
        streams, pieces, memory_exprs = [], {}, {}
        off_kv = dict(cc=1.0, cd=1.0)
        for g in self.groups:
            per = {}
            for phase in PHASES:
                tokens = s if phase == "prefill" else 1
                ctx = 0.0 if phase == "prefill" else self.mid
                lt = times[phase]
                other = lt["common"] + lt["rest"] / L + (lt["dense_ffn"] if g.name == "dense" else lt["moe"])
                attn = lt["attention"]
                xm, xd = f"xm_{phase}", f"xd_{phase}"
                hidden = hid * tokens * bls
                gpu_attention = cpu_attention is False or phase == "prefill"
                new_kv = kv * tokens * bls
                h2d = _lin(wc=g.weight_bytes, wd=g.weight_bytes, hc=hidden, hd=hidden, **{xm: 1.0})
                d2h = _lin(cc=new_kv, cd=new_kv, hc=hidden, hd=hidden)
                disk_read = _lin(wd=g.weight_bytes, hd=hidden, **{xd: 1.0})
                disk_write = _lin(cd=new_kv, hd=hidden)
                gpu = _lin(nb * other) + _lin(cg=nb * attn)
                cpu = _lin()
                if phase == "decode":
                    disk_read = disk_read + _lin(cd=kv * ctx * bls)
                    if gpu_attention:      # off-GPU KV is copied in and attended on the GPU
                        h2d = h2d + _lin(cc=kv * ctx * bls, cd=kv * ctx * bls)
                        gpu = gpu + _lin(cc=nb * attn, cd=nb * attn)
                    else:                  # queries out, attention outputs back, CPU does the work
                        d2h = d2h + _lin(cc=q * bls, cd=q * bls)
                        h2d = h2d + _lin(cc=hid * bls, cd=hid * bls)
                        cpu_s = float(cpu_attention_s(self.model, t, self.p, bls, ctx))
                        cpu = _lin(cc=cpu_s, cd=cpu_s)
                else:
                    gpu = gpu + _lin(cc=nb * attn, cd=nb * attn)
                per[phase] = {"h2d": h2d / t.h2d_bytes_per_s, "d2h": d2h / t.d2h_bytes_per_s,
                              "disk_read": disk_read / read, "disk_write": disk_write / t.flash_write_bytes_per_s,
                              "gpu": gpu, "cpu": cpu}
                if g.n_experts:
                    touch = touch_probabilities(self.model, tokens * bls, self.popularity)
                    pieces[xm] = _descending_pieces(touch, g.expert_bytes, "eg", xm)
                    pieces[xd] = _ascending_pieces(touch, g.expert_bytes, "ed", xd)
            streams.append(per)
        memory_exprs = self._memory(gbs, bls, cpu_attention)
        return _Problem(bls, tuple(g.count for g in self.groups), tuple(streams), MappingProxyType(pieces),
                        MappingProxyType(memory_exprs), MappingProxyType(self.capacity),
                        MappingProxyType(OVERLAP[self.overlap]), n)

    def _memory(self, gbs: int, bls: int, cpu_attention: bool) -> dict:
        """Peak bytes per tier and phase, linear in the fractions (see module docstring)."""
        s, n, L = self.prompt, self.gen, self.model.n_layers
        kv, hid = self.kv_token, self.hidden_token
        W = sum(g.count * g.weight_bytes for g in self.groups)
        X = sum(g.count * g.n_experts * g.expert_bytes for g in self.groups)
        w_layer = max(g.weight_bytes for g in self.groups)
        # routed experts stream one token's worth (top_k) at a time, double-buffered
        x_layer = self.model.top_k * max(g.expert_bytes for g in self.groups)
        KV = kv * (s + n) * bls * L
        H = hid * s * bls
        home = {tier: _lin(**{f"w{c}": W, f"e{c}": X, f"c{c}": KV, f"h{c}": H})
                for tier, c in (("gpu", "g"), ("cpu", "c"), ("disk", "d"))}
        out = {}
        for phase in PHASES:
            tokens = gbs * (s if phase == "prefill" else 1)
            ctx = s + n
            act = float(memory.activation_bytes(self.model, self.p, tokens, gbs))
            # off-GPU weights of one layer, double-buffered; the working batch's activations and new KV
            gpu_work = _lin(2 * (w_layer + x_layer) + act + hid * tokens + kv * tokens,
                            wg=-2 * w_layer, eg=-2 * x_layer)
            if phase == "decode" and not cpu_attention:
                gpu_work = gpu_work + _lin(cc=2 * kv * ctx * gbs, cd=2 * kv * ctx * gbs)
            staged_hidden = hid * (s if phase == "prefill" else 1) * bls
            cpu_work = _lin(self.table, wd=2 * w_layer, ed=2 * x_layer, cd=kv * ctx * bls, hd=2 * staged_hidden)
            out[("gpu", phase)] = home["gpu"] + gpu_work
            out[("cpu", phase)] = home["cpu"] + cpu_work
        out[("disk", "all")] = home["disk"]
        return out


# -- evaluating a policy ------------------------------------------------------------------------------
def _values_at(expr: np.ndarray, full: np.ndarray) -> np.ndarray:
    """An affine expression at each row of `full` (N x NV)."""
    return full @ expr[:NV] + expr[NV]


def _full(prob: _Problem, x) -> np.ndarray:
    """Fractions (N x 12, or one vector) extended with the expert-bytes variables at their optimum:
    each is the max of its lines (every piece is written line - aux <= 0, so with aux = 0 it is the line)."""
    x = np.atleast_2d(np.asarray(x, dtype=float))
    full = np.concatenate([x, np.zeros((len(x), len(AUX)))], axis=1)
    for name in AUX:
        exprs = prob.aux_pieces.get(name)
        if exprs:
            full[:, VARS.index(name)] = np.max([_values_at(e, full) for e in exprs], axis=0)
    return full


def _stream_values(prob: _Problem, full: np.ndarray) -> list:
    """Per group and phase: {stream: seconds per layer} (arrays over rows of `full`)."""
    return [{phase: {name: _values_at(expr, full) for name, expr in per[phase].items()} for phase in PHASES}
            for per in prob.streams]


def _totals(prob: _Problem, full: np.ndarray) -> tuple:
    """(prefill seconds, decode seconds, per-tier peak bytes) for each row of `full`."""
    prefill = decode = 0.0
    for count, per in zip(prob.counts, _stream_values(prob, full)):
        phase_s = {phase: np.max([sum(per[phase][s] for s in combo) for combo in prob.combos[phase]], axis=0)
                   for phase in PHASES}
        prefill = prefill + count * phase_s["prefill"]
        decode = decode + count * (prob.gen - 1) * phase_s["decode"]
    peaks = {tier: np.zeros(len(full)) for tier in TIERS}
    for (tier, _), expr in prob.memory.items():
        peaks[tier] = np.maximum(peaks[tier], _values_at(expr, full))
    return prefill, decode, peaks


@dataclass(frozen=True)
class OffloadResult:
    """A placement, its predicted throughput and per-tier peak memory (bytes, seconds, SI).

    `streams` holds per phase the seconds of each stream in one layer of the largest group;
    `candidates` the best throughput found for each (gbs, nb) tried (solver only).
    """

    model: str
    hardware: str
    policy: OffloadPolicy
    throughput_tok_s: float
    prefill_s: float
    decode_s: float
    peak_bytes: Mapping
    capacity_bytes: Mapping
    streams: Mapping
    overlap: str
    status: str = "evaluated"
    lps_solved: int = 0
    candidates: tuple = ()
    n_experts: int = 0

    def __repr__(self) -> str:
        """One line (the streams and candidates tables are in `.to_frame()`, `.streams_frame()` and
        `.candidates`; issue 16: the dataclass repr ran to thousands of characters)."""
        p = self.policy
        return (f"OffloadResult({self.model} on {self.hardware}: {self.throughput_tok_s:.4g} tok/s, gbs {p.gbs} x "
                f"{p.n_batches} batches, weights GPU/CPU/disk {'/'.join(f'{100 * v:.0f}%' for v in p.weights)}, "
                f"{self.status}, fits {self.fits}, {len(self.candidates)} candidates)")

    @property
    def total_s(self) -> float:
        return self.prefill_s + self.decode_s

    @property
    def fits(self) -> bool:
        return all(self.peak_bytes[t] <= self.capacity_bytes[t] * (1 + 1e-9) for t in TIERS)

    def shortfall(self) -> dict:
        """Bytes missing per tier (0 where it fits)."""
        return {t: max(self.peak_bytes[t] - self.capacity_bytes[t], 0.0) for t in TIERS}

    def to_frame(self):
        """One row: the policy, the predicted time and throughput, per-tier peak memory."""
        import pandas as pd

        pol = self.policy
        row = {"model": self.model, "hardware": self.hardware, "gbs": pol.gbs, "n_batches": pol.n_batches,
               "block_size": pol.block_size}
        for name, triple in (("w", pol.weights), ("c", pol.kv), ("h", pol.activations), ("e", pol.experts)):
            for tier, value in zip("gcd", triple):
                row[f"{name}{tier}"] = value
        if self.n_experts:
            row["gpu_experts"] = int(math.floor(pol.experts[0] * self.n_experts + 1e-9))
        row.update(cpu_attention=pol.cpu_attention, overlap=self.overlap, throughput_tok_s=self.throughput_tok_s,
                   prefill_s=self.prefill_s, decode_s=self.decode_s, total_s=self.total_s)
        for tier in TIERS:
            row[f"{tier}_peak_bytes"] = self.peak_bytes[tier]
            row[f"{tier}_capacity_bytes"] = self.capacity_bytes[tier]
        row.update(fits=self.fits, status=self.status, lps_solved=self.lps_solved)
        return pd.DataFrame([row])

    def streams_frame(self):
        """Seconds per layer of each stream (rows: phase; the largest layer group)."""
        import pandas as pd

        return pd.DataFrame({phase: dict(self.streams[phase]) for phase in PHASES}).T

    def candidates_frame(self):
        import pandas as pd

        return pd.DataFrame(list(self.candidates), columns=["gbs", "n_batches", "throughput_tok_s", "status"])


def _result(setup: _Setup, prob: _Problem, policy: OffloadPolicy, **extra) -> OffloadResult:
    full = _full(prob, policy.vector())
    prefill, decode, peaks = _totals(prob, full)
    prefill, decode = float(prefill[0]), float(decode[0])
    biggest = int(np.argmax(prob.counts))
    streams = _stream_values(prob, full)[biggest]
    streams = {phase: MappingProxyType({k: float(v[0]) for k, v in streams[phase].items()}) for phase in PHASES}
    return OffloadResult(setup.model.name, setup.hw.name, policy, prob.bls * prob.gen / (prefill + decode),
                         prefill, decode, MappingProxyType({t: float(v[0]) for t, v in peaks.items()}),
                         MappingProxyType(dict(prob.capacity)), MappingProxyType(streams), setup.overlap,
                         n_experts=max((g.n_experts for g in setup.groups), default=0), **extra)


def _setup(model, hw, sc, tiers, overlap, engine, memory_fraction, expert_popularity) -> _Setup:
    if not isinstance(model, ModelSpec):
        raise OffloadError(f"model: expected a ModelSpec, got {type(model).__name__}")
    if not isinstance(hw, Hardware):
        raise OffloadError(f"hardware: expected a Hardware spec, got {type(hw).__name__}")
    tiers = tiers or MemoryTiers.from_hardware(hw)
    sc = sc if sc is not None else Scenario()
    if not isinstance(sc, Scenario):
        raise OffloadError(f"scenario: expected a workloads.Scenario, got {type(sc).__name__}")
    if sc.size != 1:
        raise OffloadError(f"scenario: the offloading solver takes one scenario, got {sc.size}")
    if int(sc.prompt) + int(sc.gen) > model.max_context:
        raise OffloadError(f"prompt + gen: {int(sc.prompt) + int(sc.gen)} tokens exceeds {model.name}'s "
                           f"maximum context of {model.max_context}")
    return _Setup(model, hw, tiers, sc, overlap, engine, memory_fraction, expert_popularity)


def evaluate_policy(model: ModelSpec, hw: Hardware, sc: Scenario, policy: OffloadPolicy,
                    tiers: MemoryTiers | None = None, overlap: str = "flexgen", engine: Engine | str = DEFAULT_ENGINE,
                    memory_fraction: float = 0.9, expert_popularity=None) -> OffloadResult:
    """The cost model for a fixed placement: predicted throughput, phase times, per-tier peak memory
    (check `.fits` / `.shortfall()`: a policy is evaluated even when it does not fit)."""
    setup = _setup(model, hw, sc, tiers, overlap, engine, memory_fraction, expert_popularity)
    if not isinstance(policy, OffloadPolicy):
        raise OffloadError(f"policy: expected an OffloadPolicy, got {type(policy).__name__}")
    prob = setup.problem(policy.gbs, policy.n_batches, policy.cpu_attention, setup.gpu_times(policy.gbs))
    return _result(setup, prob, policy)


def evaluate_fractions(model: ModelSpec, hw: Hardware, sc: Scenario, gbs: int, n_batches: int, fractions,
                       tiers: MemoryTiers | None = None, cpu_attention: bool = True, overlap: str = "flexgen",
                       engine: Engine | str = DEFAULT_ENGINE, memory_fraction: float = 0.9, expert_popularity=None):
    """The cost model for many placements at once: `fractions` is N x 12 (wg wc wd cg cc cd hg hc hd
    eg ec ed per row). Returns a DataFrame with throughput, phase times, per-tier peaks and `fits`."""
    import pandas as pd

    setup = _setup(model, hw, sc, tiers, overlap, engine, memory_fraction, expert_popularity)
    x = np.atleast_2d(np.asarray(fractions, dtype=float))
    if x.shape[1] != len(FRACTIONS) or np.any(~np.isfinite(x)) or np.any(x < 0) or np.any(x > 1):
        raise OffloadError(f"fractions: expected rows of {len(FRACTIONS)} fractions in [0, 1] "
                           f"({' '.join(FRACTIONS)}), got shape {x.shape}")
    sums = x.reshape(len(x), 4, 3).sum(axis=2)
    if np.any(np.abs(sums - 1) > 1e-6):
        raise OffloadError("fractions: each GPU/CPU/disk triple must sum to 1")
    policy = OffloadPolicy(gbs, n_batches)
    prob = setup.problem(policy.gbs, policy.n_batches, cpu_attention, setup.gpu_times(policy.gbs))
    prefill, decode, peaks = _totals(prob, _full(prob, x))
    frame = pd.DataFrame(x, columns=list(FRACTIONS))
    frame["prefill_s"], frame["decode_s"] = prefill, decode
    frame["throughput_tok_s"] = prob.bls * prob.gen / (prefill + decode)
    fits = np.ones(len(x), dtype=bool)
    for tier in TIERS:
        frame[f"{tier}_peak_bytes"] = peaks[tier]
        fits &= peaks[tier] <= prob.capacity[tier] * (1 + 1e-9)
    frame["fits"] = fits
    return frame


# -- the linear program -------------------------------------------------------------------------------
def _solve_lp(prob: _Problem, fixed: Mapping, dense: bool, has_disk: bool = True):
    """Minimise T over the fractions for one (gbs, nb). Returns (x over VARS, T) or None if infeasible.

    The data (stream, expert-piece and memory rows, affine over VARS) fill the Parameters of one
    compiled cvxpy problem per problem shape (`_lp_template`), so the ~150 LPs of one call re-solve
    it instead of rebuilding it. HiGHS drops matrix entries below 1e-9 and its tolerances are
    absolute: the expert-bytes variables count GB (a byte costs ~1e-10 s of link time) and every row
    is divided by its largest entry."""
    import cvxpy as cp

    stream_rows = [[[sum(per[phase][s] for s in combo) for combo in prob.combos[phase]] for phase in PHASES]
                   for per in prob.streams]
    width = max((len(v) for v in prob.aux_pieces.values()), default=0)
    piece_rows = []
    for exprs in prob.aux_pieces.values():          # padded with repeats so the shape stays fixed
        piece_rows += list(exprs) + [exprs[-1]] * (width - len(exprs))
    memory_rows = [expr - _lin(prob.capacity[tier]) for (tier, _), expr in prob.memory.items()]
    lp = _lp_template(len(prob.streams), tuple(len(c) for c in prob.combos.values()), len(piece_rows),
                      len(memory_rows), tuple(sorted(fixed)), dense)
    combos = lp["combos"]
    for gi, phases in enumerate(stream_rows):
        for pi, rows in enumerate(phases):
            a, b, t_coef = _scaled(rows, with_time=True)
            combos[gi][pi]["A"].value, combos[gi][pi]["b"].value, combos[gi][pi]["t"].value = a, b, t_coef
    for key, rows in (("pieces", piece_rows), ("memory", memory_rows)):
        if rows:
            a, b, _ = _scaled(rows, with_time=False)
            lp[key]["A"].value, lp[key]["b"].value = a, b
    lp["layers"].value = np.array([[count, count * (prob.gen - 1)] for count in prob.counts], dtype=float)
    for name, param in lp["fixed"].items():
        param.value = float(fixed[name])
    problem = lp["problem"]
    try:
        problem.solve(solver=cp.SCIPY, scipy_options={"method": "highs"})
    except cp.error.SolverError:
        return None
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        return None
    x = np.clip(np.concatenate([v.value for v in lp["placement"].values()]), 0.0, 1.0)
    return x, float(lp["total_s"].value)


def _scaled(rows: list, with_time: bool) -> tuple:
    """(A, b, time coefficient) of rows `expr(x) [- t] <= 0`: expert-bytes columns in GB, each row
    divided by its largest coefficient (the -1 of t included)."""
    a = np.array([r[:NV] for r in rows], dtype=float)
    b = np.array([r[NV] for r in rows], dtype=float)
    a[:, len(FRACTIONS):] *= _AUX_UNIT
    norm = np.abs(a).max(axis=1)
    if with_time:
        norm = np.maximum(norm, 1.0)
    norm[norm == 0] = 1.0
    return a / norm[:, None], b / norm, 1.0 / norm


@functools.lru_cache(maxsize=32)
def _lp_template(groups: int, combos: tuple, n_pieces: int, n_memory: int, fixed: tuple, dense: bool) -> dict:
    """The offloading LP of one problem shape, in cvxpy with named variables and constraints
    (DESIGN.md convention 6); its coefficients are Parameters that `_solve_lp` fills per (gbs, nb).

    Variables: the placement of weights, KV cache, activations and routed experts over (GPU, CPU,
    disk); expert bytes crossing the link or read from disk per phase (GB); each layer group's time
    per layer and phase. Minimised: prefill + (gen - 1) decode time over all layers."""
    import cvxpy as cp

    placement = {name: cp.Variable(3, nonneg=True, name=name)
                 for name in ("weights", "kv_cache", "activations", "experts")}
    expert_gb = cp.Variable(len(AUX), nonneg=True, name="expert_gb")
    layer_s = cp.Variable((groups, len(PHASES)), nonneg=True, name="layer_s")
    x = cp.hstack([*placement.values(), expert_gb])            # VARS order
    layers = cp.Parameter((groups, len(PHASES)), nonneg=True, name="layers_per_group")
    total_s = cp.sum(cp.multiply(layers, layer_s))
    constraints = [cp.sum(v) == 1 for v in placement.values()]
    constraints += [v <= 1 for v in placement.values()]
    if dense:   # no routed experts: keep the unused expert triple equal to the weights'
        constraints.append(placement["experts"] == placement["weights"])
    combo_params = []
    for gi in range(groups):
        per_phase = []
        for pi, n in enumerate(combos):
            par = {"A": cp.Parameter((n, NV)), "b": cp.Parameter(n), "t": cp.Parameter(n, nonneg=True)}
            # the streams that share a resource run one after another; the layer waits for the slowest
            stream_overlap = par["A"] @ x + par["b"] <= cp.multiply(par["t"], layer_s[gi, pi])
            constraints.append(stream_overlap)
            per_phase.append(par)
        combo_params.append(per_phase)
    out = {"placement": placement, "combos": combo_params, "layers": layers}
    for key, n in (("pieces", n_pieces), ("memory", n_memory)):
        out[key] = {"A": cp.Parameter((n, NV)), "b": cp.Parameter(n)} if n else None
        if n:   # pieces: expert bytes are the max of their lines; memory: peak bytes within each tier
            constraints.append(out[key]["A"] @ x + out[key]["b"] <= 0)
    out["fixed"] = {name: cp.Parameter(name=f"fixed_{name}") for name in fixed}
    constraints += [x[VARS.index(name)] == par for name, par in out["fixed"].items()]
    # Ties (a placement whose disk traffic hides under the link, e.g. activations on disk) go to the
    # faster tier: a penalty of _DISK_TIE_S seconds per unit disk fraction, far below any time that
    # matters (the optimum moves by at most 4 x _DISK_TIE_S) but far above HiGHS's tolerances.
    disk = cp.sum(cp.hstack([v[2] for v in placement.values()]))
    out["total_s"] = total_s
    out["problem"] = cp.Problem(cp.Minimize(total_s + _DISK_TIE_S * disk), constraints)
    return out


_DISK_TIE_S = 1e-4


_AUX_UNIT = 1e9


def offload_policy(model: ModelSpec, hw: Hardware, sc: Scenario | None = None, tiers: MemoryTiers | None = None,
                   gbs=None, n_batches=None, cpu_attention: bool = True, overlap: str = "flexgen",
                   engine: Engine | str = DEFAULT_ENGINE, memory_fraction: float = 0.9, expert_popularity=None,
                   fixed: Mapping | None = None) -> OffloadResult:
    """The placement with the highest predicted generation throughput.

    For each GPU batch size in `gbs` (default `GBS_GRID`) and number of GPU batches in `n_batches`
    (default `NB_GRID`, stopping at the first that does not fit) an LP picks the fractions; the best
    (gbs, nb) wins. `fixed` pins fractions by name (e.g. {"wg": 0.2}). Raises OffloadError saying
    what is missing where when no placement fits.
    """
    setup = _setup(model, hw, sc, tiers, overlap, engine, memory_fraction, expert_popularity)
    fixed = dict(fixed or {})
    for name, value in fixed.items():
        if name not in FRACTIONS or not (0 <= float(value) <= 1):
            raise OffloadError(f"fixed: {name}={value!r}; names are {FRACTIONS}, values in [0, 1]")
    _check_capacity(setup)
    gbs_grid = _grid(gbs, GBS_GRID, "gbs")
    nb_grid = _grid(n_batches, NB_GRID, "n_batches")
    dense = not any(g.n_experts for g in setup.groups)
    times_all = setup.gpu_times(np.asarray(gbs_grid, dtype=float))
    found = {}      # (gbs, nb) -> (throughput, x, problem) or None when infeasible

    def solve(gi: int, nb: int):
        g = gbs_grid[gi]
        if (g, nb) not in found:
            if not _may_fit(setup, g * nb):
                found[(g, nb)] = None
                return None
            times = {ph: {k: np.asarray(v).reshape(-1)[gi] if np.ndim(v) else v for k, v in d.items()}
                     for ph, d in times_all.items()}
            prob = setup.problem(g, nb, cpu_attention, times)
            solution = _solve_lp(prob, fixed, dense)
            found[(g, nb)] = None if solution is None else (prob.bls * prob.gen / solution[1], solution[0], prob)
        return found[(g, nb)]

    for gi in range(len(gbs_grid)):
        for nb in nb_grid:          # memory only grows with nb: stop at the first that does not fit
            if solve(gi, nb) is None:
                break
    if n_batches is None:           # refine the best few between their coarse neighbours
        ranked = sorted((v[0], k) for k, v in found.items() if v is not None)[-3:]
        for _, (g, nb) in ranked:
            k = nb_grid.index(nb)
            low, high = nb_grid[max(k - 1, 0)], nb_grid[min(k + 1, len(nb_grid) - 1)]
            for other in range(low + 1, high):
                solve(gbs_grid.index(g), other)
    feasible = {k: v for k, v in found.items() if v is not None}
    if not feasible:
        raise OffloadError(_no_fit_message(setup, cpu_attention, fixed))
    (g, nb), (_, x, prob) = max(feasible.items(), key=lambda kv: (kv[1][0], -kv[0][0] * kv[0][1]))
    candidates = tuple((k[0], k[1], v[0] if v else float("nan"), "optimal" if v else "infeasible")
                       for k, v in sorted(found.items()))
    policy = OffloadPolicy(g, nb, _normalise(x[0:3]), _normalise(x[3:6]), _normalise(x[6:9]),
                           _normalise(x[9:12]), cpu_attention)
    return _result(setup, prob, policy, status="optimal",
                   lps_solved=len(found), candidates=candidates)


def _normalise(triple) -> tuple:
    triple = np.clip(np.asarray(triple, dtype=float), 0.0, 1.0)
    triple = np.where(triple < 1e-9, 0.0, triple)
    return tuple(float(v) for v in triple / triple.sum())


def _grid(value, default, name) -> tuple:
    if value is None:
        return default
    values = np.atleast_1d(np.asarray(value))
    if values.size == 0 or np.any(values < 1) or np.any(values != np.floor(values)):
        raise OffloadError(f"{name}: {value!r} must be whole numbers >= 1")
    return tuple(int(v) for v in values)


def _minimum_need(setup: _Setup, bls: int) -> dict:
    """Bytes that must live somewhere for a block of `bls` sequences: all weights, the whole KV cache
    and one layer boundary of activations; and the GPU's working set at the smallest batch."""
    s, n, L = setup.prompt, setup.gen, setup.model.n_layers
    kv = setup.kv_token * (s + n) * bls * L
    hidden = setup.hidden_token * s * bls
    w_layer = max(g.weight_bytes + setup.model.top_k * g.expert_bytes for g in setup.groups)
    act = float(memory.activation_bytes(setup.model, setup.p, s, 1))
    return {"weights": setup.weights_total + setup.table, "kv": kv, "activations": hidden,
            "gpu_working": 2 * w_layer + act}


def _may_fit(setup: _Setup, bls: int) -> bool:
    need = _minimum_need(setup, bls)
    return need["weights"] + need["kv"] + need["activations"] <= sum(setup.capacity.values())


def _check_capacity(setup: _Setup) -> None:
    need = _minimum_need(setup, 1)
    cap = setup.capacity
    total = need["weights"] + need["kv"] + need["activations"]
    pct = f"{setup.memory_fraction:.0%} of capacity"
    if total > sum(cap.values()):
        raise OffloadError(
            f"does not fit even on disk: {setup.model.name} needs {total / 1e9:.1f} GB for weights "
            f"({need['weights'] / 1e9:.1f} GB) and one sequence's KV cache and activations, the tiers "
            f"hold {sum(cap.values()) / 1e9:.1f} GB (GPU {cap['gpu'] / 1e9:.1f} + DRAM {cap['cpu'] / 1e9:.1f} "
            f"+ disk {cap['disk'] / 1e9:.1f} GB at {pct}); missing {(total - sum(cap.values())) / 1e9:.1f} GB")
    if need["gpu_working"] > cap["gpu"]:
        raise OffloadError(
            f"GPU memory below the resident minimum: streaming {setup.model.name} needs "
            f"{need['gpu_working'] / 1e9:.2f} GB of GPU memory (one layer double-buffered plus one "
            f"sequence's activations), has {cap['gpu'] / 1e9:.2f} GB ({pct}); missing "
            f"{(need['gpu_working'] - cap['gpu']) / 1e9:.2f} GB")
    host = setup.table + 2 * max(g.weight_bytes for g in setup.groups)
    if host > cap["cpu"]:
        raise OffloadError(
            f"DRAM below the resident minimum: {setup.model.name} needs {host / 1e9:.2f} GB of host "
            f"memory (input embedding table and a staged layer), has {cap['cpu'] / 1e9:.2f} GB ({pct}); "
            f"missing {(host - cap['cpu']) / 1e9:.2f} GB")


def _no_fit_message(setup: _Setup, cpu_attention: bool, fixed: Mapping) -> str:
    policy = OffloadPolicy(1, 1, (0, 0.5, 0.5), (0, 0.5, 0.5), (0, 1, 0), None, cpu_attention)
    prob = setup.problem(1, 1, cpu_attention, setup.gpu_times(1.0))
    full = _full(prob, policy.vector())
    short = []
    for (tier, phase), expr in prob.memory.items():
        over = float(_values_at(expr, full)[0]) - prob.capacity[tier]
        if over > 0:
            short.append(f"{tier} ({phase}) short by {over / 1e9:.2f} GB")
    detail = "; ".join(short) or "the fixed fractions " + repr(dict(fixed)) + " leave no feasible placement"
    return f"no placement fits {setup.model.name} on {setup.hw.name} even at gbs 1 x 1 batch: {detail}"


# -- FlexGen's T4 system ------------------------------------------------------------------------------
GIB = 2 ** 30


def flexgen_t4() -> tuple:
    """FlexGen's evaluation machine with FlexGen's fitted T4 constants, as (Hardware, MemoryTiers).

    GCP n1-highmem-32 with one NVIDIA T4 16 GB, 208 GB DRAM, 1.5 TB SSD (FlexGen paper, section 6).
    Fitted rates (FlexGen experimental/cost_model.py, GB = 2^30 there): CPU->GPU 12.89 GiB/s,
    GPU->CPU 4.82 GiB/s (hidden states; KV-cache writes fit 0.97 GiB/s, which this model does not
    separate), disk->CPU 0.473 GiB/s, CPU->disk 0.746 GiB/s, GEMM 21.24 TFLOP/s (prefill fit), batched
    matmul 9.97 TFLOP/s (attention, as a fraction of the GEMM rate), CPU 0.0123 TFLOP/s. FlexGen's
    decode GEMM fit (4.3 TFLOP/s) is not used: decode GEMMs here take the roofline of the T4's
    datasheet memory bandwidth, 320 GB/s. DRAM bandwidth is not reported; 6 channels of DDR4-2666
    (128 GB/s) is an upper bound that never binds (CPU attention is bound by the fitted CPU rate).
    """
    sources = {
        "fg": "FlexGen experimental/cost_model.py fitted T4 constants (FMInference/FlexGen)",
        "paper": "FlexGen, Sheng et al., arXiv 2303.06865, section 6 (GCP T4 16 GB, 208 GB DRAM, 1.5 TB SSD)",
        "t4": "NVIDIA T4 datasheet (65 TFLOP/s fp16 tensor, 8.1 TFLOP/s fp32, 16 GB GDDR6, 320 GB/s, 70 W)",
        "ddr4": "6 x DDR4-2666 channels x 21.3 GB/s (upper bound; not reported by FlexGen)",
    }
    cal = Calibration(matmul_flops_per_s={"fp16": 21.24e12, "bf16": 21.24e12}, memory_bytes_per_s=320e9,
                      kernel_overhead_s=0.0, attention_flops_fraction=9.97 / 21.24,
                      host_to_device_bytes_per_s=12.89 * GIB, device_to_host_bytes_per_s=4.82 * GIB,
                      source=sources["fg"])
    hw = Hardware(name="flexgen-t4", title="NVIDIA T4 16GB on GCP n1-highmem-32 (FlexGen fit)", kind="gpu",
                  flops_per_s={"fp16": 65e12, "fp32": 8.1e12}, hbm_capacity_bytes=16e9, hbm_bytes_per_s=320e9,
                  dram_capacity_bytes=208e9, dram_bytes_per_s=128e9, flash_capacity_bytes=1.5e12,
                  flash_read_bytes_per_s=0.473 * GIB, flash_latency_s=0.0, host_link_bytes_per_s=12.89 * GIB,
                  host_link_latency_s=0.0, cpu_flops_per_s=0.0123e12, cpu_cores=32, price_per_hour_usd=2.24,
                  power_w=70.0, calibration=cal, sources=sources)
    tiers = MemoryTiers.from_hardware(hw, flash_write_bytes_per_s=0.746 * GIB)
    return hw, tiers


def flexgen_runtime_weights(model: ModelSpec, weights) -> tuple:
    """The byte fractions of each layer's weights FlexGen's runtime really puts on (GPU, CPU, disk)
    for a nominal weight placement: it places whole tensors, each sublayer's (attention, then MLP) in
    order, on disk, CPU or GPU by where the midpoint of the tensor's cumulative size falls in the
    ranges [0, wd), [wd, wd + wc), [wd + wc, 1] (flexgen/flex_opt.py, init_weight_list). For OPT with
    (wg, wc) = (20%, 80%) only out_proj (and biases, norms) land on the GPU: about 1/12 of the bytes.
    """
    if model.is_moe or model.is_mla:
        raise OffloadError(f"model: FlexGen's runtime places dense, non-MLA layers only; {model.name} is not")
    g, c, d = _triple(weights, "weights")
    D, H, K, hd, F = model.d_model, model.n_heads, model.n_kv_heads, model.head_dim, model.d_ff
    vd = model.value_head_dim
    norm = model.norm_params()
    attention = [D * H * hd, H * hd * model.qkv_bias, D * K * hd, K * hd * model.qkv_bias, D * K * vd,
                 K * vd * model.qkv_bias, H * vd * D, D * model.out_bias, norm]
    mlp = ([F * D] if model.ffn_gated else []) + [F * D, F * model.mlp_bias, D * F, D * model.mlp_bias, norm]
    placed = np.zeros(3)
    for sizes in (np.array(attention, float), np.array(mlp, float)):
        mid = (np.cumsum(sizes) - sizes / 2) / sizes.sum()
        tier = np.where(mid < d, 2, np.where(mid < d + c, 1, 0))      # 0 GPU, 1 CPU, 2 disk
        placed += np.bincount(tier, weights=sizes, minlength=3)
    return tuple(float(v) for v in placed / placed.sum())


#: FlexGen's published OPT-30B run on the T4 system (paper Table 2 / section 6): 7.32 tok/s.
FLEXGEN_OPT30B_POLICY = OffloadPolicy.from_percent(48, 3, 20, 80, 0, 100, 0, 100)
