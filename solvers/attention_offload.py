"""Attention offloading (Lamina, Chen et al., arXiv 2405.01814): attention and the KV cache on cheap
memory-optimised devices, everything else on compute-optimised devices.

Per decode step of batch B at context S, over L layers (model width D, GQA group G = H / K, e bytes
per activation element):
  T_model(B)    the non-attention ops (projections, FFN/MoE, norms, LM head) on the n_c compute
                devices with tensor parallelism n_c (`perfmodel` roofline, all-reduces included)
  T_attn(B, S)  attention on the n_m memory devices, kv heads split over them (roofline)
  T_link        moving each token's query and new K, V to the memory devices and the attention
                output back: (2 + 2/G) e D B L bytes over the link between the pools
Lamina's minimum link bandwidth, so that transfers add at most a fraction alpha of the step:
    BW_min = (2 + 2/G) e D B L / (alpha (T_model(B) + T_attn(B, S)))
The achievable batch is what the memory devices' HBM holds of KV at the final context, and the
weights must fit on the compute devices. Step time is given serial (T_model + T_attn + T_link) and
pipelined (Lamina overlaps micro-batches: max of the three). Throughput per dollar is compared with
homogeneous setups of each device type costing no more than the disaggregated one, each at the
largest batch its memory holds (`perfmodel` decode step with tensor parallelism over its devices).
Every step is priced for one engine profile (`engine`, perfmodel.engines; DEFAULT_ENGINE unless
given): its fusion and kernels on both pools, its decode attention kernel on the memory devices.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hardware.spec import Hardware
from perfmodel import memory, shapes
from perfmodel.engines import DEFAULT_ENGINE, Engine
from perfmodel.engines import load as load_engine
from perfmodel.ops import Precision, attention_op, step_ops
from perfmodel.predict import step_time
from perfmodel.roofline import op_time
from workloads.model import ModelSpec
from workloads.scenario import Scenario


class AttentionOffloadError(ValueError):
    """Bad input or a setup whose memory cannot hold the model or one sequence; says what is missing."""


def _check_count(value, name, high: int = 10**7):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= high:
        raise AttentionOffloadError(f"{name}: {value!r} must be a whole number from 1 to {high:,}")
    return int(value)


def link_bytes_per_step(model: ModelSpec, batch, p: Precision):
    """(2 + 2/G) e D B L: queries and new K, V out, attention outputs back, per decode step."""
    return (2 + 2 / model.gqa_group) * float(p.act_bytes) * model.d_model * np.asarray(batch, float) * model.n_layers


def model_time_s(model: ModelSpec, hw: Hardware, batch, context, p: Precision, tp: int,
                 engine: Engine | str = DEFAULT_ENGINE):
    """Decode-step time of every op except attention on `tp` devices of `hw` (roofline + comm)."""
    total = 0.0
    for op in step_ops(model, seqs=batch, new_tokens=1.0, past=context, p=p, tp=tp, engine=engine):
        if op.kind != "attention" and op.name != "kv_cat":
            total = total + op.count * np.asarray(op_time(op, hw, p, tp).time_s)
    return total


def attention_time_s(model: ModelSpec, hw: Hardware, batch, context, p: Precision, n_devices: int,
                     engine: Engine | str = DEFAULT_ENGINE):
    """Decode attention over `context` cached tokens on `n_devices` devices of `hw` (heads split),
    run by `engine`'s decode attention kernel."""
    kernel = load_engine(engine).attention_kernel("decode", group=shapes.query_group(model),
                                                  head_dim=shapes.kernel_head_dim(model))
    op = attention_op(model, seqs=batch, new_tokens=1.0, past=context, p=p, tp=n_devices, kernel=kernel)
    return op.count * np.asarray(op_time(op, hw, p, n_devices).time_s)


def min_link_bytes_per_s(model: ModelSpec, batch, p: Precision, t_model_s, t_attn_s, alpha: float = 0.2):
    """Lamina's minimum link bandwidth so that transfers cost at most `alpha` of the step."""
    if not (isinstance(alpha, (int, float)) and 0 < alpha <= 1):
        raise AttentionOffloadError(f"alpha: {alpha!r} must be in (0, 1]")
    return link_bytes_per_step(model, batch, p) / (alpha * (np.asarray(t_model_s) + t_attn_s))


def _kv_per_sequence(model: ModelSpec, p: Precision, tokens: float, n_devices: int) -> float:
    return float(memory.kv_cache_bytes(model, p, tokens, n_devices))


@dataclass(frozen=True)
class AttentionOffloadResult:
    """One row per setup: the disaggregated one first, then the homogeneous ones of equal cost."""

    rows: tuple

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(list(self.rows))

    @property
    def lamina(self) -> dict:
        return dict(self.rows[0])


def attention_offload(model: ModelSpec, compute_hw: Hardware, memory_hw: Hardware, sc: Scenario | None = None,
                      n_compute: int = 1, n_memory: int = 1, batch: int | None = None, alpha: float = 0.2,
                      link_bytes_per_s: float | None = None, memory_fraction: float = 0.9,
                      engine: Engine | str = DEFAULT_ENGINE) -> AttentionOffloadResult:
    """Disaggregated attention vs homogeneous setups of equal cost, for the scenario's prompt + gen.

    batch: decode batch (default: the largest the memory devices hold); link_bytes_per_s: between the
    two pools (default: the slower host link of the two, as a NIC sits on PCIe); engine: the profile
    pricing every step (perfmodel.engines).
    """
    engine = load_engine(engine)
    sc = sc if sc is not None else Scenario()
    if sc.size != 1:
        raise AttentionOffloadError(f"scenario: expected one scenario, got {sc.size}")
    n_compute, n_memory = _check_count(n_compute, "n_compute"), _check_count(n_memory, "n_memory")
    if not (0 < memory_fraction <= 1):
        raise AttentionOffloadError(f"memory_fraction: {memory_fraction!r} must be in (0, 1]")
    p = Precision(sc.w_bits, sc.a_bits, sc.kv_bits, sc.quant_group)
    final = float(sc.prompt + sc.gen)
    if final > model.max_context:
        raise AttentionOffloadError(f"prompt + gen: {final:g} tokens exceeds {model.name}'s maximum context of "
                                    f"{model.max_context} tokens")
    mean_ctx = float(sc.prompt + sc.gen / 2)
    link = link_bytes_per_s or min(compute_hw.host_link_bytes_per_s, memory_hw.host_link_bytes_per_s)
    if not (isinstance(link, (int, float)) and math.isfinite(link) and 0 < link <= 1e16):
        raise AttentionOffloadError(f"link_bytes_per_s: {link_bytes_per_s!r} must be a positive number")

    weights = float(memory.weight_bytes(model, p, n_compute))
    room = compute_hw.hbm_capacity_bytes * memory_fraction
    if weights > room:
        raise AttentionOffloadError(
            f"compute devices: {model.name} needs {weights / 1e9:.1f} GB of weights per device on {n_compute} x "
            f"{compute_hw.name}, which hold {room / 1e9:.1f} GB each ({memory_fraction:.0%}); missing "
            f"{(weights - room) / 1e9:.1f} GB per device")
    per_seq = _kv_per_sequence(model, p, final, n_memory)
    kv_room = memory_hw.hbm_capacity_bytes * memory_fraction
    max_batch = math.floor(kv_room / per_seq)
    if max_batch < 1:
        raise AttentionOffloadError(
            f"memory devices: one sequence of {final:g} tokens needs {per_seq / 1e9:.2f} GB of KV per device on "
            f"{n_memory} x {memory_hw.name}, which hold {kv_room / 1e9:.2f} GB each; missing "
            f"{(per_seq - kv_room) / 1e9:.2f} GB")
    B = max_batch if batch is None else _check_count(batch, "batch")
    if B > max_batch:
        raise AttentionOffloadError(f"batch: {B} exceeds the {max_batch} sequences of {final:g} tokens the "
                                    f"memory devices hold")
    t_model = float(model_time_s(model, compute_hw, B, mean_ctx, p, n_compute, engine))
    t_attn = float(attention_time_s(model, memory_hw, B, mean_ctx, p, n_memory, engine))
    t_link = float(link_bytes_per_step(model, B, p)) / link + 2 * model.n_layers * compute_hw.host_link_latency_s
    usd = n_compute * compute_hw.price_per_hour_usd + n_memory * memory_hw.price_per_hour_usd
    serial, piped = t_model + t_attn + t_link, max(t_model, t_attn, t_link)
    rows = [_row("disaggregated", f"{n_compute} x {compute_hw.name} + {n_memory} x {memory_hw.name}", usd, B,
                 serial, piped, t_model=t_model, t_attn=t_attn, t_link=t_link,
                 min_link=float(min_link_bytes_per_s(model, B, p, t_model, t_attn, alpha)), link=link)]
    for hw in (compute_hw, memory_hw):
        rows.append(_homogeneous(model, hw, p, usd, final, mean_ctx, memory_fraction, engine))
    return AttentionOffloadResult(tuple(rows))


def _row(setup, devices, usd, batch, serial, piped, **extra) -> dict:
    tok_s = batch / serial if serial > 0 else 0.0
    tok_s_piped = batch / piped if piped > 0 else 0.0
    row = {"setup": setup, "devices": devices, "usd_per_hour": usd, "batch": batch, "step_s": serial,
           "step_pipelined_s": piped, "tok_s": tok_s, "tok_s_pipelined": tok_s_piped,
           "tokens_per_usd": tok_s * 3600 / usd if usd > 0 else 0.0,
           "tokens_per_usd_pipelined": tok_s_piped * 3600 / usd if usd > 0 else 0.0}
    row.update({f"{k}_s" if k.startswith("t_") else f"{k}_bytes_per_s": v for k, v in extra.items()})
    return row


def _homogeneous(model, hw, p, budget_usd, final, mean_ctx, memory_fraction, engine) -> dict:
    """The best homogeneous setup of `hw` within the budget: the largest power-of-two tensor-parallel
    group that fits the model (and is affordable), at the largest batch its memory holds."""
    affordable = int(budget_usd // hw.price_per_hour_usd)
    n = 2 ** int(math.log2(affordable)) if affordable >= 1 else 0
    label = f"homogeneous {hw.name}"
    while n >= 1:
        weights = float(memory.weight_bytes(model, p, n))
        free = hw.hbm_capacity_bytes * memory_fraction - weights
        per_seq = _kv_per_sequence(model, p, final, n)
        batch = math.floor(free / per_seq) if free > 0 else 0
        if batch >= 1:
            step = float(step_time(model, hw, seqs=batch, new_tokens=1.0, past=mean_ctx, p=p, tp=n,
                                   engine=engine)["time_s"])
            return _row(label, f"{n} x {hw.name}", n * hw.price_per_hour_usd, batch, step, step)
        n //= 2
    return {**_row(label, f"0 x {hw.name}", 0.0, 0, 0.0, 0.0), "note": "does not fit within the budget"}
