"""Memory footprint per device: weights, KV cache, activations (vectorized over scenarios).

KV bytes = 2 L K d S bits/8 per sequence (Yao Fu 2024, arXiv 2405.08944); MLA caches one latent of
kv_lora + rope elements per token (DeepSeek-V2, arXiv 2405.04434). Under tensor parallelism weights
and kv heads are split over devices (kv heads replicated when tp exceeds them; MLA's latent is
replicated), norms are replicated.
"""
from __future__ import annotations

import numpy as np

from perfmodel import shapes
from perfmodel.ops import Precision
from workloads.model import ModelSpec


def weight_bytes(model: ModelSpec, p: Precision, tp=1):
    """Bytes of weights per device. Linear layers use the weight precision (with group-scale
    overhead); embeddings, LM head and norms stay 16-bit, as GPTQ/AWQ checkpoints keep them."""
    return shapes.weight_bytes(model, p, tp)


def kv_cache_bytes(model: ModelSpec, p: Precision, tokens, tp=1):
    """KV-cache bytes per device for `tokens` cached tokens (summed over sequences)."""
    return tokens * shapes.kv_bytes_per_token_per_device(model, p.kv_bits, tp)


def kv_tokens(batch, prompt, gen, samples=1):
    """Cached tokens at the end of generation: each request's prompt once (shared by its samples),
    plus every sample's generated tokens. (A factor that is the number 1 is left out: the same
    doubles without a pass over a sweep's arrays.)"""
    per_request = prompt + (gen if is_one(samples) else samples * gen)
    return per_request if is_one(batch) else batch * per_request


def is_one(value) -> bool:
    """Whether a factor is the number 1 (not an array)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and value == 1


#: Prefill chunk (tokens) of a serving engine's chunked prefill: a common max_num_batched_tokens
#: setting (vLLM's "Optimization and Tuning" docs; its default ranges from 2048 to 16384 by version
#: and GPU). The live activation working set is one chunk's, shared by all running requests.
PREFILL_CHUNK_TOKENS = 8192


def serving_activation_bytes(model: ModelSpec, p: Precision, batch, prompt, samples=1, tp=1,
                             chunk=PREFILL_CHUNK_TOKENS):
    """Peak activations per device of a serving engine with chunked prefill: one chunk of
    min(batch x prompt, chunk) tokens through a layer, plus fp32 logits for every running sequence
    (batch x samples rows, sampled each decode step). Tensor-parallel shards (projection outputs,
    vocab-parallel logits) are divided by tp; the residual stream is replicated on every device, as
    in Megatron-style tensor parallelism without sequence parallelism."""
    return activation_bytes(model, p, chunk_tokens(batch, prompt, chunk), batch * samples, tp)


def chunk_tokens(batch, prompt, chunk=PREFILL_CHUNK_TOKENS):
    """Tokens of the chunked-prefill chunk live in a serving engine (`serving_activation_bytes`):
    min(batch x prompt, chunk), a whole chunk for an empty engine."""
    if isinstance(batch, (int, float)) and isinstance(prompt, (int, float)):  # one scenario: in floats
        return float(min(batch * prompt, chunk)) if batch * prompt > 0 else float(chunk)
    batch, prompt = np.asarray(batch, float), np.asarray(prompt, float)
    product = batch * prompt
    tokens = np.minimum(product, chunk)
    if not np.all(product > 0):  # an empty engine holds a whole chunk
        tokens = np.where(product > 0, tokens, chunk)
    return tokens


def activation_bytes(model: ModelSpec, p: Precision, tokens, logits_rows, tp=1):
    """Peak transient activations of one forward pass: the residual stream and its normed copy,
    the widest projection output, and fp32 logits (the approximation of llm-analysis /
    vLLM's profiling run: one layer's working set is live at a time). Linear in (tokens,
    logits_rows) for a given model, precision and tp."""
    if model.is_moe:
        ffn = max(model.top_k * model.moe_d_ff + model.shared_d_ff, model.d_ff if model.n_dense_layers else 0)
    else:
        ffn = model.d_ff
    qkv = model.q_dim + model.n_kv_heads * (model.head_dim + model.value_head_dim)  # the fused QKV output
    widest = max((2 if model.ffn_gated else 1) * ffn, qkv)
    devices = float(tp) if isinstance(tp, (int, float)) else np.asarray(tp, float)  # one count: a float
    return tokens * (2 * model.d_model + widest / devices) * p.act_bytes \
        + logits_rows * model.vocab_size / devices * 4.0
