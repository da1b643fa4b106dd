"""Long-context serving: prefill time, decode latency, KV per user, concurrency, KV swap cost, TP.

The back-of-envelope of Yao Fu, "Challenges in Deploying Long-Context Transformers" (arXiv
2405.08944), run through this project's roofline instead of by hand:

    KV per user      = 2 L K d S bytes/elem                (perfmodel.memory.kv_cache_bytes)
    concurrency      = (HBM - weights - activations) / KV per user, per device
    prefill          ~ 2 P S / FLOP/s + attention          (perfmodel.step_time, T = S)
    decode per token ~ (weights + batch x KV) / HBM bytes/s  (perfmodel.step_time, T = 1)
    context switch   = KV bytes moved / host-link bytes/s  (each device moves its shard on its own link)

Tensor parallelism over `tp` devices splits the weights and the kv heads, so per-device KV per user
falls by tp (until tp exceeds the kv heads, which are then replicated) while each device gains its
whole HBM: capacity grows faster than tp when weights took a large share of memory.

Activations: servers prefill long prompts in chunks (vLLM's chunked prefill, `max_num_batched_tokens`)
so the live activation working set is one chunk's, shared by all users, not one per user.

Times are those of one engine profile (`engine`: a name from perfmodel.engines or a profile;
DEFAULT_ENGINE, a serving engine, unless given).

Attention offloading to memory devices (Lamina, arXiv 2405.01814) is `solvers.attention_offload`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hardware.spec import Hardware
from perfmodel import memory, rates
from perfmodel.engines import DEFAULT_ENGINE, Engine
from perfmodel.ops import Precision
from perfmodel.predict import step_time
from workloads.model import ModelSpec

#: Default prefill chunk (tokens) under chunked prefill (one source: perfmodel.memory).
PREFILL_CHUNK_TOKENS = memory.PREFILL_CHUNK_TOKENS


class LongContextError(ValueError):
    """An impossible long-context request; the message names the field and the value."""


def _numbers(value, name: str) -> np.ndarray:
    """`value` as a float array; text, booleans and non-numeric arrays are refused by name."""
    if isinstance(value, (str, bytes, bool, np.bool_)) or np.asarray(value).dtype.kind not in "fiu":
        raise LongContextError(f"{name}: {value!r:.60} is not a number")
    return np.asarray(value, dtype=float)


def _positive(value, name: str, integer: bool = False):
    arr = _numbers(value, name)
    bad = ~np.isfinite(arr) | (arr <= 0)
    if integer:
        bad |= np.isfinite(arr) & (arr != np.round(arr))
    if np.any(bad):
        shown = float(arr[bad].flat[0]) if arr.ndim else arr.item()
        raise LongContextError(f"{name}: {shown!r} must be a finite {'whole ' if integer else ''}number above zero")
    return arr


def check_request(model: ModelSpec, hw: Hardware, context, tp=1) -> None:
    """Context within the model's maximum, tp within the node's devices; LongContextError otherwise."""
    context, tp = _positive(context, "context", integer=True), _positive(tp, "tp", integer=True)
    if np.any(context > model.max_context):
        raise LongContextError(f"context: {float(np.max(context)):g} tokens exceeds {model.name}'s maximum "
                               f"context of {model.max_context} tokens")
    from perfmodel.checks import ParallelismError, check_parallelism

    try:
        check_parallelism(model, hw, tp)
    except ParallelismError as err:
        raise LongContextError(str(err)) from None


def check_bits(**bits) -> None:
    """Bit widths inside the Scenario's range (1 to 32); LongContextError naming the field otherwise."""
    for name, value in bits.items():
        arr = _numbers(value, name)
        bad = ~np.isfinite(arr) | (arr < 1) | (arr > 32)
        if np.any(bad):
            raise LongContextError(f"{name}: {float(arr[bad].flat[0]) if arr.ndim else float(arr)!r} must be a "
                                   "number of bits from 1 to 32")


def kv_bytes_per_user(model: ModelSpec, context, kv_bits=16, tp=1):
    """KV-cache bytes one user's context occupies on each device under tensor parallelism."""
    return memory.kv_cache_bytes(model, Precision(16, 16, kv_bits), np.asarray(context, float), tp)


def reserved_bytes(model: ModelSpec, w_bits=16, a_bits=16, tp=1, prefill_chunk=PREFILL_CHUNK_TOKENS):
    """Per-device bytes not available to KV: weights plus one prefill chunk's activations."""
    p = Precision(w_bits, a_bits, 16)
    return memory.weight_bytes(model, p, tp) + memory.activation_bytes(model, p, prefill_chunk, 1, tp)


def concurrency_limit(model: ModelSpec, hw: Hardware, context, *, w_bits=16, a_bits=16, kv_bits=16, tp=1,
                      prefill_chunk=PREFILL_CHUNK_TOKENS, hbm_fraction=1.0):
    """Users of `context` tokens whose KV fits at once: floor((f HBM - reserved) / KV per user),
    per device (each user's KV is split over the tp devices, so this is also the group's count).
    `hbm_fraction` f leaves headroom (vLLM's gpu_memory_utilization, 0.9 by default there)."""
    free = hbm_fraction * hw.hbm_capacity_bytes - reserved_bytes(model, w_bits, a_bits, tp, prefill_chunk)
    per_user = kv_bytes_per_user(model, context, kv_bits, tp)
    return np.maximum(np.floor(free / per_user), 0.0)


def prefill_time_s(model: ModelSpec, hw: Hardware, context, *, w_bits=16, a_bits=16, kv_bits=16, tp=1,
                   engine: Engine | str = DEFAULT_ENGINE):
    """Time to prefill one user's `context`-token prompt (one step of T = context; includes attention)."""
    p = Precision(w_bits, a_bits, kv_bits)
    return step_time(model, hw, seqs=1.0, new_tokens=np.asarray(context, float), past=0.0, p=p, tp=tp,
                     sparse_budget=0, logits_tokens=1.0, engine=engine)["time_s"]


def decode_time_s(model: ModelSpec, hw: Hardware, context, batch=1, *, w_bits=16, a_bits=16, kv_bits=16, tp=1,
                  sparse_budget=0, engine: Engine | str = DEFAULT_ENGINE):
    """Latency of one decode step for `batch` users each at `context` cached tokens (= per-token latency)."""
    p = Precision(w_bits, a_bits, kv_bits)
    return step_time(model, hw, seqs=np.asarray(batch, float), new_tokens=1.0, past=np.asarray(context, float),
                     p=p, tp=tp,
                     sparse_budget=sparse_budget, engine=engine)["time_s"]


def host_link_rates(hw: Hardware) -> tuple[float, float, float]:
    """(device->host bytes/s, host->device bytes/s, latency s): measured when calibrated, else datasheet."""
    return rates.device_to_host_bytes_per_s(hw), rates.host_to_device_bytes_per_s(hw), rates.host_link_latency_s(hw)


def kv_swap_time_s(model: ModelSpec, hw: Hardware, context, *, kv_bits=16, tp=1, direction: str = "in"):
    """Time to move one user's KV between HBM and host DRAM: per-device shard / host-link bytes/s
    + link latency. "out" is device->host (evict), "in" is host->device (resume). Each GPU of an
    HGX-class node has its own PCIe link, so the tp shards move in parallel."""
    if direction not in ("in", "out"):
        raise LongContextError(f"direction: {direction!r} must be 'in' or 'out'")
    d2h, h2d, latency = host_link_rates(hw)
    return kv_bytes_per_user(model, context, kv_bits, tp) / (h2d if direction == "in" else d2h) + latency


@dataclass(frozen=True)
class LongContextPlan:
    """Long-context serving analysis over a grid of contexts and tp degrees (flat numpy columns)."""

    model: ModelSpec
    hardware: Hardware
    columns: dict

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.columns)

    def __getitem__(self, key):
        return self.columns[key]


def analyze(model: ModelSpec, hw: Hardware, context, *, tp=1, batch=1, w_bits=16, a_bits=16, kv_bits=16,
            prefill_chunk=PREFILL_CHUNK_TOKENS, hbm_fraction=1.0,
            engine: Engine | str = DEFAULT_ENGINE) -> LongContextPlan:
    """Everything a long-context deployment needs, for every (context, tp) pair (they broadcast).

    Columns: per-device weights and KV per user, concurrency limit, prefill time, decode latency per
    token at `batch` users and at the concurrency limit, throughput at the limit, the time to swap
    a user's KV out to / back from host DRAM, how many users host DRAM can park, and
    prefill_over_swap_in (> 1: swapping a paused user back in beats recomputing its prefill).
    """
    check_request(model, hw, context, tp)
    check_bits(w_bits=w_bits, a_bits=a_bits, kv_bits=kv_bits)
    _positive(batch, "batch", integer=True)
    if not 0 < hbm_fraction <= 1:
        raise LongContextError(f"hbm_fraction: {hbm_fraction!r} must be in (0, 1]")
    context, tp = np.broadcast_arrays(np.asarray(context, float), np.asarray(tp, float))
    bits = dict(w_bits=w_bits, a_bits=a_bits, kv_bits=kv_bits, tp=tp)
    per_user = kv_bytes_per_user(model, context, kv_bits, tp)
    limit = concurrency_limit(model, hw, context, prefill_chunk=prefill_chunk, hbm_fraction=hbm_fraction, **bits)
    at_limit = decode_time_s(model, hw, context, np.maximum(limit, 1.0), engine=engine, **bits)
    prefill = prefill_time_s(model, hw, context, engine=engine, **bits)
    swap_in = kv_swap_time_s(model, hw, context, kv_bits=kv_bits, tp=tp, direction="in")
    cols = {
        "context": context, "tp": tp,
        "weights_bytes_per_device": memory.weight_bytes(model, Precision(w_bits, a_bits, kv_bits), tp),
        "kv_bytes_per_user_per_device": per_user, "kv_bytes_per_user": per_user * tp,
        "concurrency": limit, "fits": limit >= 1,
        "prefill_s": prefill,
        "decode_s_per_token": decode_time_s(model, hw, context, batch, engine=engine, **bits),
        "decode_s_per_token_at_limit": at_limit,
        "throughput_tok_s_at_limit": np.where(limit >= 1, limit / at_limit, 0.0),
        "swap_out_s": kv_swap_time_s(model, hw, context, kv_bits=kv_bits, tp=tp, direction="out"),
        "swap_in_s": swap_in,
        "dram_parked_users": np.floor(hw.dram_capacity_bytes / (per_user * tp)),
        "prefill_over_swap_in": prefill / swap_in,
    }
    shape = context.shape
    flat = {k: np.broadcast_to(np.asarray(v), shape).reshape(-1) for k, v in cols.items()}
    return LongContextPlan(model, hw, flat)
