"""Shape quantities of a model on a device: the one source for every module that needs them.

Each function is vectorized over its numeric arguments (tp, bits) and cites its source. Precisions
are read by attribute (`w_bits`, `kv_bits`, `quant_group`), so this module sits below
`perfmodel.ops` (whose `Precision` calls into it) and imports nothing from perfmodel.

- KV cache: 2 K d elements per token per layer (K and V of K kv heads of width d; Yao Fu 2024,
  arXiv 2405.08944), K (d + d_v) where value heads have a width of their own (MiMo-V2-Flash's
  192-wide query-key and 128-wide value heads), or MLA's one latent of kv_lora + rope elements (DeepSeek-V2, arXiv 2405.04434).
  Under Megatron tensor parallelism (Shoeybi et al. 2019, arXiv 1909.08053) kv heads are split over
  devices and replicated when tp exceeds them (vLLM's `get_num_kv_heads`: max(1, K / tp)); MLA's
  latent is shared by all heads, so every device keeps all of it.
- Weights: linear layers at the weight precision plus the group overhead of sub-8-bit layouts; the
  embedding table, LM head and norms stay 16-bit, as GPTQ/AWQ checkpoints keep them (fp32 in an fp32
  checkpoint). Linear layers,
  embeddings and the LM head are split over tp (vocab-parallel embeddings); norms are replicated.
"""
from __future__ import annotations

import math

import numpy as np

from workloads.model import ModelSpec


def group_overhead_bits(bits, quant_group=128):
    """Extra bits per element of a sub-8-bit group-quantized layout: one 16-bit scale and one 16-bit
    zero per group of `quant_group` elements, 32 / group (GPTQ: Frantar et al. 2022, arXiv
    2210.17323; AWQ: Lin et al. 2023, arXiv 2306.00978; KIVI's KV layout: Liu et al. 2024, arXiv
    2402.02750). 8-bit and wider formats carry per-channel scales, counted as nothing."""
    return np.where(np.asarray(bits, dtype=float) < 8, 32.0 / np.asarray(quant_group, dtype=float), 0.0)


def stored_bits(bits, quant_group=128):
    """Bits stored per element, the group overhead included (see `group_overhead_bits`)."""
    return np.asarray(bits, dtype=float) + group_overhead_bits(bits, quant_group)


def weight_bytes_per_param(w_bits, quant_group=128):
    """Bytes per linear-layer weight: (w_bits + 32 / group below 8 bits) / 8 (`group_overhead_bits`)."""
    return stored_bits(w_bits, quant_group) / 8


def unquantized_bytes_per_param(w_bits):
    """Bytes per weight of the tensors quantized checkpoints keep unquantized (embedding table, LM
    head, norms): 16-bit (GPTQ/AWQ checkpoints), or the weight width when weights are wider (an fp32
    checkpoint stores fp32 embeddings)."""
    return np.maximum(np.asarray(w_bits, dtype=float), 16.0) / 8


# -- attention dims and heads ------------------------------------------------------------------------
def attention_dims(model: ModelSpec) -> tuple[int, int]:
    """(qk_dim, v_dim): the width of a query-key dot product and of a value row per head. MHA/GQA:
    head_dim and the value head's width (ModelSpec.value_head_dim: head_dim unless the config
    gives v_head_dim); MLA in its absorbed decode form (DeepSeek-V2, arXiv 2405.04434) scores
    against the latent plus the rope key (kv_lora + rope) and reads kv_lora-wide values."""
    if model.is_mla:
        return model.kv_lora_rank + model.qk_rope_head_dim, model.kv_lora_rank
    return model.head_dim, model.value_head_dim


def kernel_head_dim(model: ModelSpec) -> float | None:
    """The head dim an MHA/GQA attention kernel runs (engines pick their kernel by it:
    perfmodel.engines.Engine.attention_kernel), None for MLA, whose absorbed form runs kernels of its own."""
    return None if model.is_mla else float(model.head_dim)


def query_heads_per_device(model: ModelSpec, tp=1):
    """Query heads per device under tensor parallelism: H / tp (Megatron splits heads evenly)."""
    if isinstance(tp, (int, float)):  # one device count: the same in Python floats
        return model.n_heads / float(tp)
    return model.n_heads / np.asarray(tp, dtype=float)


def kv_heads_per_device(model: ModelSpec, tp=1):
    """KV heads one device keeps: ceil(K / tp), i.e. replicated when tp exceeds K (vLLM
    `ModelConfig.get_num_kv_heads`); MLA's one latent acts as a single shared kv head."""
    if isinstance(tp, (int, float)):  # one device count: the same in Python floats
        return 1.0 if model.is_mla else float(math.ceil(model.n_kv_heads / float(tp)))
    tp = np.asarray(tp, dtype=float)
    if model.is_mla:
        return np.ones(np.shape(tp))
    return np.ceil(model.n_kv_heads / tp)


def rotary_width(model: ModelSpec, tp=1):
    """Elements per token that rotary embedding (and Qwen3's per-head q/k norm) touches on one
    device: the query heads H / tp and the kv heads a device keeps (`kv_heads_per_device`), head_dim
    each; MLA's rope part of each query head (qk_rope_head_dim)."""
    if model.is_mla:
        return query_heads_per_device(model, tp) * model.qk_rope_head_dim
    return (query_heads_per_device(model, tp) + kv_heads_per_device(model, tp)) * model.head_dim


def query_group(model: ModelSpec) -> float | None:
    """Query heads per kv head of the model (H / K: the group a GQA decode kernel packs), None for
    MLA (its absorbed form shares one latent among all heads and runs kernels of its own). The
    model's, not one device's: under tensor parallelism both split alike until tp exceeds K (then
    kv heads replicate and a device's group shrinks, which only multi-query models at tp > 1 reach),
    and a sweep over tp must not switch an op's kernel between its rows."""
    return None if model.is_mla else model.n_heads / model.n_kv_heads


# -- KV cache -----------------------------------------------------------------------------------------
def kv_elements_per_token_per_layer_per_device(model: ModelSpec, tp=1):
    """KV elements per token per layer on one device: kv_heads_per_device * (head_dim + the value
    head's width) (K and V: 2 K d where they are alike), or MLA's latent of kv_lora + rope
    elements, replicated on every device."""
    if model.is_mla:
        return float(model.kv_elements_per_token) if isinstance(tp, (int, float)) else \
            np.full(np.shape(tp), float(model.kv_elements_per_token))
    return kv_heads_per_device(model, tp) * float(model.head_dim + model.value_head_dim)


def kv_bytes_per_token_per_layer_per_device(model: ModelSpec, kv_bits, tp=1):
    """KV bytes per token per layer on one device: elements x kv_bits / 8 (Yao Fu 2024)."""
    return kv_elements_per_token_per_layer_per_device(model, tp) * (np.asarray(kv_bits, dtype=float) / 8)


def kv_bytes_per_token_per_device(model: ModelSpec, kv_bits, tp=1):
    """KV bytes per cached token on one device over all L layers: 2 L ceil(K / tp) d bits / 8."""
    return model.n_layers * kv_bytes_per_token_per_layer_per_device(model, kv_bits, tp)


# -- weights ------------------------------------------------------------------------------------------
def _norm_params_total(model: ModelSpec) -> int:
    """Norm weights: per-layer norms plus the final norm (16-bit, replicated under tp)."""
    return (model.n_layers * model.norms_per_layer + 1) * model.norm_params()


def layer_weight_bytes(model: ModelSpec, p, tp=1):
    """Bytes of one decoder layer's weights on one device: linear weights at the weight precision
    (group overhead included) split over tp, norms 16-bit and replicated (the mean layer when layers
    differ, e.g. MoE models with leading dense layers)."""
    norms = model.norms_per_layer * model.norm_params()
    linear = model.layer_params() / model.n_layers - norms
    return linear * weight_bytes_per_param(p.w_bits, p.quant_group) / np.asarray(tp, dtype=float) \
        + norms * unquantized_bytes_per_param(p.w_bits)


def weight_bytes(model: ModelSpec, p, tp=1):
    """Bytes of all weights on one device: linear layers at the weight precision (group overhead
    included) split over tp, the embedding table and LM head split over tp and norms replicated, both
    at `unquantized_bytes_per_param` (16-bit for checkpoints of 16 bits or fewer). Equals L x
    `layer_weight_bytes` plus the embeddings and the final norm."""
    tp = np.asarray(tp, dtype=float)
    linear = model.layer_params() - model.n_layers * model.norms_per_layer * model.norm_params()
    wide = unquantized_bytes_per_param(p.w_bits)
    return linear * weight_bytes_per_param(p.w_bits, p.quant_group) / tp + model.embedding_params() * wide / tp \
        + _norm_params_total(model) * wide
