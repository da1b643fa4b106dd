"""CPU-GPU hybrid MoE serving bound (MoE-Lens, arXiv 2504.09345).

Weights and the KV cache live in host DRAM; the GPU keeps what fits of the weights and runs every
linear layer (the expert GEMMs included), weights it lacks streaming over PCIe each step; the CPU runs
attention over the DRAM-resident KV. In steady state with continuous batching, each step runs B
decode tokens and, amortised, B * prompt / gen prefill tokens (every request's prompt is prefilled
once per `gen` generated tokens). Per step (all layers):

  GPU     2 * active params * tokens / GPU FLOP/s, at least the GPU-resident expert bytes touched over
          HBM bandwidth (`perfmodel.ops.expected_experts_touched` for the step's tokens)
  PCIe    streamed weights (the non-resident share of what the step touches) + per decode token
          (2 + 2/G) e D L bytes of queries, new K/V and attention outputs (+ the prompt's K/V)
  DRAM    KV read by CPU attention (B sequences at the mean context) + streamed weights read out
          + new KV written
  CPU     attention FLOPs (4 S H d per token per layer, plus the prompt's causal attention)
  capacity  B * KV of a finished sequence + the weights <= usable DRAM

Each resource caps throughput at B / its time; the bound is B / max(...) with B the largest batch the
DRAM holds (throughput is non-decreasing in B: the per-step weight traffic is shared by more tokens).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hardware.spec import Hardware
from perfmodel import memory, rates, shapes
from perfmodel.roofline import matmul_dtype_rate
from perfmodel.ops import Precision, expected_experts_touched
from perfmodel.tiers import MemoryTiers
from workloads.model import ModelSpec
from workloads.scenario import Scenario

RESOURCES = ("gpu", "pcie", "dram", "cpu")


class MoEHybridError(ValueError):
    """Bad input or DRAM that cannot hold the weights and one sequence; says what is missing."""


def _touched_bytes(model: ModelSpec, p: Precision, tokens):
    """Weight bytes a step of `tokens` tokens touches: dense weights plus the experts routed to."""
    tokens = np.asarray(tokens, float)
    wb = float(p.weight_bytes_per_param)
    total = float(memory.weight_bytes(model, p))
    if not model.is_moe:
        return np.full(np.shape(tokens), total)
    expert = model.ffn_params(model.moe_d_ff) * wb
    experts_all = model.n_moe_layers * model.n_experts * expert
    touched = model.n_moe_layers * expected_experts_touched(model.n_experts, model.top_k, tokens) * expert
    return total - experts_all + touched


def moe_hybrid_bound(model: ModelSpec, hw: Hardware, sc: Scenario | None = None, batch=None,
                     tiers: MemoryTiers | None = None, gpu_weight_fraction: float | None = None,
                     memory_fraction: float = 0.9) -> "MoEHybridResult":
    """Throughput bound over decode batches (default: powers of two up to the DRAM capacity).

    gpu_weight_fraction: share of the weights kept on the GPU (default: what fits in its memory after
    one step's activations). Returns a `MoEHybridResult`: one row per batch with each resource's time,
    its throughput cap, the bound and which resource binds.
    """
    sc = sc if sc is not None else Scenario()
    if not model.is_moe:
        raise MoEHybridError(f"model: {model.name} is a dense model (no experts); MoE-Lens' CPU-GPU split applies "
                             "to mixture-of-experts models (e.g. mixtral-8x7b, qwen3-30b-a3b, deepseek-v3)")
    if sc.size != 1:
        raise MoEHybridError(f"scenario: expected one scenario, got {sc.size}")
    if float(sc.prompt + sc.gen) > model.max_context:
        raise MoEHybridError(f"prompt + gen: {float(sc.prompt + sc.gen):g} tokens exceeds {model.name}'s maximum "
                             f"context of {model.max_context} tokens")
    if gpu_weight_fraction is not None and not (isinstance(gpu_weight_fraction, (int, float))
                                                and 0 <= gpu_weight_fraction <= 1):
        raise MoEHybridError(f"gpu_weight_fraction: {gpu_weight_fraction!r} must be from 0 to 1")
    if not (0 < memory_fraction <= 1):
        raise MoEHybridError(f"memory_fraction: {memory_fraction!r} must be in (0, 1]")
    tiers = tiers or MemoryTiers.from_hardware(hw)
    p = Precision(sc.w_bits, sc.a_bits, sc.kv_bits, sc.quant_group)
    prompt, gen = float(sc.prompt), float(sc.gen)
    weights = float(memory.weight_bytes(model, p))
    kv_seq = float(memory.kv_cache_bytes(model, p, prompt + gen))
    dram = tiers.dram_capacity_bytes * memory_fraction
    max_batch = math.floor((dram - weights) / kv_seq) if dram > weights else 0
    if max_batch < 1:
        raise MoEHybridError(
            f"DRAM: {model.name} needs {(weights + kv_seq) / 1e9:.1f} GB (weights {weights / 1e9:.1f} GB and one "
            f"sequence's KV {kv_seq / 1e9:.2f} GB), {hw.name} host memory holds {dram / 1e9:.1f} GB "
            f"({memory_fraction:.0%}); missing {(weights + kv_seq - dram) / 1e9:.1f} GB")
    if batch is None:
        batch = np.unique(np.minimum(2 ** np.arange(0, int(math.log2(max_batch)) + 2), max_batch))
    B = np.atleast_1d(np.asarray(batch, dtype=float))
    if B.size == 0 or np.any(~np.isfinite(B)) or np.any(B < 1) or np.any(B != np.floor(B)):
        raise MoEHybridError(f"batch: {batch!r} must be whole numbers >= 1")
    if np.any(B > max_batch):
        raise MoEHybridError(f"batch: {int(B.max())} exceeds the {max_batch} sequences DRAM holds")
    tokens = B * (1 + prompt / gen)
    r = _gpu_fraction(model, hw, p, tokens.max(), weights, memory_fraction, gpu_weight_fraction)
    touched = _touched_bytes(model, p, tokens)
    streamed = (1 - r) * touched
    act = float(p.act_bytes)
    L, D = model.n_layers, model.d_model
    per_token_link = (2 + 2 / model.gqa_group) * act * D * L
    kv_token = float(memory.kv_cache_bytes(model, p, 1.0))
    mean_ctx = prompt + gen / 2
    flops_gpu = 2.0 * model.active_param_count() * tokens
    times = {
        "gpu": np.maximum(flops_gpu / float(matmul_dtype_rate(hw, p.w_bits, p.a_bits)),
                          r * touched / rates.memory_bytes_per_s(hw)),
        "pcie": (streamed + B * per_token_link + B * prompt / gen * kv_token) / tiers.h2d_bytes_per_s,
        "dram": (B * mean_ctx * kv_token + streamed + B * (1 + prompt / gen) * kv_token) / tiers.dram_bytes_per_s,
        "cpu": _cpu_attention_flops(model, B, prompt, gen, mean_ctx) / tiers.cpu_flops_per_s,
    }
    step = np.max([times[n] for n in RESOURCES], axis=0)
    bound = np.array(RESOURCES)[np.argmax([times[n] for n in RESOURCES], axis=0)]
    rows = []
    for i, b in enumerate(B):
        row = {"batch": int(b), "gpu_weight_fraction": r}
        for name in RESOURCES:
            row[f"{name}_s"] = float(times[name][i])
            row[f"{name}_tok_s"] = float(b / times[name][i])
        row.update(step_s=float(step[i]), throughput_tok_s=float(b / step[i]), bound=str(bound[i]))
        rows.append(row)
    return MoEHybridResult(model.name, hw.name, max_batch, tuple(rows))


def _cpu_attention_flops(model: ModelSpec, B, prompt, gen, mean_ctx):
    """Decode attention 2 S H (d_qk + d_v) per token per layer (4 S H d where the heads are alike),
    plus each prompt's causal attention (P^2 H (d_qk + d_v) per layer) amortised over its `gen`
    tokens (`perfmodel.shapes.attention_dims`)."""
    width = model.n_heads * sum(shapes.attention_dims(model))
    per_layer = 2 * mean_ctx * width + prompt ** 2 * width / gen
    return B * per_layer * model.n_layers


def _gpu_fraction(model, hw, p, tokens, weights, memory_fraction, given) -> float:
    if given is not None:
        if not (isinstance(given, (int, float)) and 0 <= given <= 1):
            raise MoEHybridError(f"gpu_weight_fraction: {given!r} must be between 0 and 1")
        return float(given)
    act = float(memory.activation_bytes(model, p, tokens, tokens))
    room = hw.hbm_capacity_bytes * memory_fraction - act
    return float(np.clip(room / weights, 0.0, 1.0))


@dataclass(frozen=True)
class MoEHybridResult:
    """The bound per batch (rows), the largest batch DRAM holds, and the best row."""

    model: str
    hardware: str
    max_batch: int
    rows: tuple

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(list(self.rows))

    @property
    def best(self) -> dict:
        return dict(max(self.rows, key=lambda r: r["throughput_tok_s"]))
