"""Memory tiers: moving bytes between HBM, host DRAM and flash, and overlapping that with compute.

Every transfer is a count over a rate plus a per-request latency (the JAX scaling book's "time is
bytes over bandwidth"; the latency term is what makes small requests slow):

    host link   t = n_requests * latency + bytes / bandwidth           (PCIe, each direction)
    flash       throughput(c, q) = min(B, q * c / (latency + c / B))   (Little's law: q requests of
                                                                        c bytes in flight)
                t = bytes / throughput(c, q)

The flash form gives the behaviour LLM in a flash (Alizadeh et al., arXiv 2312.11514, section 2.2)
measures: throughput rises with the chunk size read and with the number of parallel reads, up to the
device's sequential bandwidth, because latency to the first byte dominates small reads.

Overlap of transfers with compute has two bounds (JAX scaling book, chapter 1): perfect overlap
`max(compute, transfer)` (a lower bound on time) and none `compute + transfer` (an upper bound).
Streaming layer weights with one buffer of look-ahead (double buffering, as FlexGen does:
Sheng et al., arXiv 2303.06865, section 4) is a two-stage pipeline whose exact time is
`pipeline_time_s`.

Rates come from the `Hardware` spec: the host-link bandwidth each way (or the calibration's measured
`host_to_device_bytes_per_s` / `device_to_host_bytes_per_s` when set), DRAM and flash bandwidth, the
flash latency and the CPU's FLOP/s. `MemoryTiers` gathers them, so a solver can replace one (a fitted
rate, a write bandwidth the spec does not carry) without touching the spec.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from hardware.spec import Hardware
from perfmodel import rates, shapes
from perfmodel.engines import DEFAULT_ENGINE, Engine
from perfmodel.ops import Precision, step_ops
from perfmodel.predict import host_dispatch_s
from perfmodel.roofline import op_time
from workloads.model import ModelSpec

OVERLAP_MODES = ("max", "sum")


class TierError(ValueError):
    """A transfer or tier value that cannot be used (negative bytes, zero bandwidth...); names the field."""


def _values(value, name: str, low: float = 0.0, strict: bool = False) -> np.ndarray:
    """`value` as a float array, every entry finite and >= low (> low when strict)."""
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise TierError(f"{name}: {value!r} is not a number") from None
    bad = ~np.isfinite(array) | ((array <= low) if strict else (array < low))
    if np.any(bad):
        shown = array[bad].flat[0] if array.ndim else array.item()
        relation = "greater than" if strict else "at least"
        raise TierError(f"{name}: {shown!r} must be a finite number {relation} {low:g}")
    return array


# -- rates of one spec ------------------------------------------------------------------------------
def host_to_device_bytes_per_s(hw: Hardware) -> float:
    """Host-to-device bandwidth: the measured one when the spec is calibrated, else the link's peak."""
    return rates.host_to_device_bytes_per_s(hw)


def device_to_host_bytes_per_s(hw: Hardware) -> float:
    """Device-to-host bandwidth: measured when calibrated, else the link's peak (PCIe is symmetric)."""
    return rates.device_to_host_bytes_per_s(hw)


def link_latency_s(hw: Hardware) -> float:
    """Per-transfer latency: the measured copy latency when calibrated (it includes the driver's
    launch cost, which the hardware round trip does not), else the link's latency."""
    return rates.host_link_latency_s(hw)


@dataclass(frozen=True)
class MemoryTiers:
    """Capacities and rates of the three tiers and the paths between them, SI units.

    h2d / d2h: host link each way; flash_read / flash_write: flash <-> DRAM at large chunks;
    flash_chunk_bytes and flash_parallel_reads: how reads are issued (size of one request, requests
    in flight); dram_bytes_per_s and cpu_flops_per_s bound work the CPU does on DRAM-resident data
    (attention over a KV cache kept in host memory).
    """

    hbm_capacity_bytes: float
    dram_capacity_bytes: float
    flash_capacity_bytes: float
    h2d_bytes_per_s: float
    d2h_bytes_per_s: float
    link_latency_s: float
    flash_read_bytes_per_s: float
    flash_write_bytes_per_s: float
    flash_latency_s: float
    dram_bytes_per_s: float
    cpu_flops_per_s: float
    flash_chunk_bytes: float = 4 * 2 ** 20
    flash_parallel_reads: float = 32

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("latency_s"):
                _values(value, f.name)
            elif f.name == "flash_parallel_reads":
                _values(value, f.name, low=1.0)
            else:
                _values(value, f.name, strict=True)

    @classmethod
    def from_hardware(cls, hw: Hardware, **overrides) -> "MemoryTiers":
        """The tiers of a spec (calibrated link rates win); `overrides` replace single fields.
        The spec carries no flash write bandwidth: it defaults to the read bandwidth."""
        fields = dict(
            hbm_capacity_bytes=hw.hbm_capacity_bytes, dram_capacity_bytes=hw.dram_capacity_bytes,
            flash_capacity_bytes=hw.flash_capacity_bytes, h2d_bytes_per_s=host_to_device_bytes_per_s(hw),
            d2h_bytes_per_s=device_to_host_bytes_per_s(hw), link_latency_s=link_latency_s(hw),
            flash_read_bytes_per_s=hw.flash_read_bytes_per_s, flash_write_bytes_per_s=hw.flash_read_bytes_per_s,
            flash_latency_s=hw.flash_latency_s, dram_bytes_per_s=hw.dram_bytes_per_s,
            cpu_flops_per_s=hw.cpu_flops_per_s,
        )
        unknown = set(overrides) - set(fields) - {"flash_chunk_bytes", "flash_parallel_reads"}
        if unknown:
            raise TierError(f"MemoryTiers: unknown field(s) {sorted(unknown)}")
        return cls(**{**fields, **overrides})

    @property
    def flash_effective_read_bytes_per_s(self) -> float:
        """Flash read throughput at this tier's chunk size and parallelism."""
        return float(flash_throughput_bytes_per_s(self.flash_chunk_bytes, self.flash_parallel_reads,
                                                  self.flash_read_bytes_per_s, self.flash_latency_s))


# -- cost formulas ----------------------------------------------------------------------------------
def transfer_time_s(nbytes, bytes_per_s, latency_s=0.0, requests=1):
    """Time to move `nbytes` over a link: requests * latency + bytes / bandwidth.

    Zero bytes take zero time (no request is issued). Arrays broadcast.
    """
    nbytes = _values(nbytes, "bytes")
    rate = _values(bytes_per_s, "bytes_per_s", strict=True)
    latency = _values(latency_s, "latency_s")
    requests = _values(requests, "requests")
    return np.where(nbytes > 0, requests * latency + nbytes / rate, 0.0)


def flash_throughput_bytes_per_s(chunk_bytes, parallel_reads, bytes_per_s, latency_s):
    """Flash read throughput with `parallel_reads` requests of `chunk_bytes` in flight.

    One request takes latency + c / B; with q in flight, Little's law gives q c / (latency + c / B),
    capped by the device bandwidth B (LLM in a flash, arXiv 2312.11514, Figure 2b: throughput grows
    with chunk size and threads until the sequential bandwidth).
    """
    chunk = _values(chunk_bytes, "chunk_bytes", strict=True)
    q = _values(parallel_reads, "parallel_reads", low=1.0)
    rate = _values(bytes_per_s, "bytes_per_s", strict=True)
    latency = _values(latency_s, "latency_s")
    return np.minimum(rate, q * chunk / (latency + chunk / rate))


def flash_read_time_s(nbytes, chunk_bytes, parallel_reads, bytes_per_s, latency_s):
    """Time to read `nbytes` from flash in chunks of `chunk_bytes`, `parallel_reads` at a time:
    bytes / throughput(chunk, parallel) (see `flash_throughput_bytes_per_s`)."""
    nbytes = _values(nbytes, "bytes")
    return nbytes / flash_throughput_bytes_per_s(chunk_bytes, parallel_reads, bytes_per_s, latency_s)


def overlap_time_s(compute_s, transfer_s, mode: str = "max"):
    """Time of compute and a transfer that may overlap: "max" (perfect overlap, the lower bound)
    or "sum" (serialized, the upper bound)."""
    if mode not in OVERLAP_MODES:
        raise TierError(f"overlap: {mode!r} is not one of {OVERLAP_MODES}")
    compute, transfer = _values(compute_s, "compute_s"), _values(transfer_s, "transfer_s")
    return np.maximum(compute, transfer) if mode == "max" else compute + transfer


def pipeline_time_s(lead_s, transfer_s, compute_s, n):
    """Exact time of `n` streamed layers behind `lead_s` of other work, with one buffer of look-ahead.

    Layer k's weights are copied (transfer_s each, one copy at a time) into the buffer freed by
    layer k - 2, and layer k computes (compute_s) once its copy and layer k - 1 are done; the first
    copy starts with the lead work. Solving that recurrence:
        T = max(lead, transfer) + (n - 1) * max(transfer, compute) + compute      (n >= 1)
        T = lead                                                                   (n = 0)
    It lies between the bounds max(lead + n compute, n transfer) and lead + n (transfer + compute).
    """
    lead, tau = _values(lead_s, "lead_s"), _values(transfer_s, "transfer_s")
    comp, n = _values(compute_s, "compute_s"), _values(n, "n")
    streamed = np.maximum(lead, tau) + np.maximum(n - 1, 0) * np.maximum(tau, comp) + comp
    return np.where(n > 0, streamed, lead)


# -- a forward step with part of the model in host memory --------------------------------------------
def layer_pipeline_time_s(transfer_s, compute_s, lead_s=0.0, dispatch_s=0.0, overlap: bool = True):
    """Time of L layers run in order when layer i first needs a copy of transfer_s[i] seconds
    (0 = nothing to copy). Axis 0 indexes layers; other axes broadcast over scenarios.

    overlap: copies run one at a time on their own stream with one buffer of look-ahead: the copy for
    a layer is issued when the previous copying layer starts (its buffer is then free); the first
    copy starts at time 0 while `lead_s` of other work (the embedding) runs. Without overlap each copy
    runs on the compute stream right before its layer.
    dispatch_s: host time to dispatch one layer; an eager framework's host runs ahead of the device,
    and layer i cannot start before the host reaches it at lead + i * dispatch_s.

    With dispatch 0, R resident layers followed by n copying layers of equal times give
    `pipeline_time_s`; without overlap, the sum of all copies and computes.
    """
    taus = _values(transfer_s, "transfer_s")
    comps = _values(compute_s, "compute_s")
    taus, comps = np.broadcast_arrays(taus, comps)
    lead = _values(lead_s, "lead_s") + 0.0 * comps[0]
    h = _values(dispatch_s, "dispatch_s")
    t = lead
    copy_free = issue = 0.0 * t
    for i, (tau, comp) in enumerate(zip(taus, comps)):
        ready = np.maximum(t, lead + i * h)              # previous layer done and this one dispatched
        copies = tau > 0
        if overlap:
            copy_end = np.maximum(copy_free, issue) + tau
            start = np.where(copies, np.maximum(ready, copy_end), ready)
            copy_free = np.where(copies, copy_end, copy_free)
            issue = np.where(copies, start, issue)
        else:
            start = ready + tau
        t = start + comp
    return t


def layer_weight_bytes(model: ModelSpec, p: Precision, tp=1):
    """Bytes of one decoder layer's weights on one device (`perfmodel.shapes.layer_weight_bytes`)."""
    return shapes.layer_weight_bytes(model, p, tp)


def kv_layer_bytes(model: ModelSpec, p: Precision, seqs, context, tp=1):
    """Bytes of one layer's KV cache on one device for `seqs` sequences of `context` tokens (kv heads
    split over tp, replicated when tp exceeds them: `perfmodel.shapes`)."""
    return np.asarray(seqs, float) * context * shapes.kv_bytes_per_token_per_layer_per_device(model, p.kv_bits, tp)


def split_step_time(model: ModelSpec, hw: Hardware, seqs, new_tokens, past, p: Precision,
                    engine: Engine | str = DEFAULT_ENGINE) -> tuple:
    """(device time of one decoder layer, device time of the rest, host dispatch time) of one
    forward step on `hw`: the roofline of `step_ops` (calibrated when the spec is). Ops repeated over
    layers are layer ops, spread evenly over the L layers (MoE models' dense and expert layers are
    averaged); embedding, final norm and LM head, run once, are the rest. An eager framework dispatches from the host, which runs ahead of the device, so a step
    takes at least the host time (`perfmodel.predict.host_dispatch_s`)."""
    L = model.n_layers
    layer_s, rest_s = 0.0, 0.0
    for op in step_ops(model, seqs=seqs, new_tokens=new_tokens, past=past, p=p, engine=engine):
        t = np.asarray(op_time(op, hw, p).time_s)
        if op.count == 1 and L > 1:
            rest_s = rest_s + t
        else:                           # per-layer ops; MoE models' dense and expert layers averaged
            layer_s = layer_s + op.count / L * t
    return layer_s, rest_s, host_dispatch_s(model, hw, engine, np.asarray(seqs) * new_tokens)


def offloaded_step_time(model: ModelSpec, hw: Hardware, seqs, new_tokens, past, p: Precision,
                        resident_layers, kv_on_host: bool = False, overlap: bool = True,
                        engine: Engine | str = DEFAULT_ENGINE) -> dict:
    """One forward step when the last L - R decoder layers' weights (and, with `kv_on_host`, every
    layer's KV cache of `past` tokens) live in pinned host memory and are copied in before use.

    Compute is `split_step_time` on `hw`; each copy costs `transfer_time_s` of its bytes over the
    host-to-device link (one request per weight buffer, two per KV cache: keys and values). With
    `overlap` the copies run on a side stream one layer ahead; without, each copy precedes its layer
    on the compute stream (both `layer_pipeline_time_s`). An eager framework's host dispatches layer
    after layer (the spec's calibrated per-layer overhead) ahead of the device: no layer starts before
    it is dispatched, and no step is shorter than its dispatch. Embedding, final norm and LM head stay
    resident. Returns compute_s, transfer_s, lower_s (perfect overlap, max of all parts), upper_s
    (copies serialized), time_s and the per-layer parts.
    """
    L = model.n_layers
    resident = _values(resident_layers, "resident_layers")
    if np.any(resident > L) or np.any(resident != np.floor(resident)):
        raise TierError(f"resident_layers: {resident_layers!r} must be whole numbers from 0 to "
                        f"n_layers = {L}")
    layer_s, rest_s, host_s = split_step_time(model, hw, seqs, new_tokens, past, p, engine)
    h2d, latency = host_to_device_bytes_per_s(hw), link_latency_s(hw)
    weights_s = transfer_time_s(layer_weight_bytes(model, p), h2d, latency)
    kv_s = transfer_time_s(kv_layer_bytes(model, p, seqs, past), h2d, latency, 2) if kv_on_host else 0.0
    shape = np.broadcast_shapes(np.shape(resident), np.shape(layer_s), np.shape(weights_s), np.shape(kv_s))
    index = np.arange(L).reshape((L,) + (1,) * len(shape))
    taus = np.broadcast_to(np.where(index >= resident, weights_s, 0.0) + kv_s, (L,) + shape)
    comps = np.broadcast_to(layer_s, (L,) + shape)
    compute = L * layer_s + rest_s
    transfer = taus.sum(axis=0)
    per_layer_host = host_s / L

    def run(with_overlap):
        return np.maximum(layer_pipeline_time_s(taus, comps, dispatch_s=per_layer_host, overlap=with_overlap)
                          + rest_s, host_s)

    upper = run(False)
    lower = np.maximum(np.maximum(compute, transfer + rest_s), host_s)
    time = run(True) if overlap else upper
    out = {"compute_s": compute, "transfer_s": transfer, "lower_s": lower, "upper_s": upper,
           "time_s": time, "layer_compute_s": layer_s, "rest_s": rest_s, "host_s": host_s}
    return {k: np.broadcast_to(v, shape)[()] for k, v in out.items()}
