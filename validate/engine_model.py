"""A compact decoder-only transformer laid out as serving engines run it, for timing whole steps.

Built from a catalog `ModelSpec` with random weights (no transformers, no download), so the
measured step is the serving engine's step and not transformers' eager one:

  * fused projections: one QKV weight [(H + 2K) d, D] and one gate-up weight [2F, D], as vLLM
    (QKVParallelLinear, MergedColumnParallelLinear) and gpt-fast (its `wqkv` and `w1`/`w3` pair)
    load them, so a decode step reads each weight once per GEMM;
  * RMSNorm written as plain ops (x.float(), pow, mean, rsqrt, mul weight) so inductor fuses it,
    with the residual add folded into the norm call (`h, residual = add_rmsnorm(x, residual, w)`,
    vLLM's fused_add_rms_norm): the residual stream never takes a separate pass;
  * Qwen3's per-head q/k RMSNorm when `spec.qk_norm`;
  * RoPE from precomputed cos/sin tables (gpt-fast's freqs_cis, vLLM's cos_sin_cache), neox layout;
  * a static KV cache per layer [B, K, S_max, d] written in place at the step's positions (slice
    assignment; never torch.cat, which copies the whole cache every step), and SDPA over exactly
    the used context k_cache[:, :, :S] (gpt-fast attends over S_max with a mask; reading only S is
    what paged engines do and what the cost model assumes);
  * MoE (qwen3-30b-a3b): router GEMM, softmax top-k (renormalised, Qwen3's norm_topk_prob), token
    copies sorted by expert and the expert GEMMs as grouped GEMMs (torch._grouped_mm) over the
    sorted rows; outputs put back in token order and summed with their router weights (vLLM's
    moe_sum). All shapes are static, so a CUDA graph can capture it;
  * fp8 (dtype "fp8"): every linear but the LM head holds a float8_e4m3fn weight with one
    per-tensor scale, and the activation is quantized per tensor on the fly (amax / 448), then
    torch._scaled_mm with bf16 output: vLLM's dynamic per-tensor fp8 path (Fp8LinearMethod).

One layer is one function of (activations, weights, caches) so a single compiled graph serves every
layer (parameters are inputs, not constants): compiling takes seconds, not minutes.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

FP8_MAX = 448.0            # largest finite float8_e4m3fn
ROPE_BASE = 500_000.0      # llama-3's rope_theta; the base changes values, not the timing
WEIGHT_STD = 0.02          # small, so activations stay finite through many random layers
#: activation dtype per case dtype (fp8 keeps bf16 activations between its GEMMs)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "fp8": torch.bfloat16}


class Fp8Weight(NamedTuple):
    """A linear weight in float8_e4m3fn with its per-tensor scale (weight ~= fp8 * scale)."""
    weight: torch.Tensor   # [N, K], row-major: weight.t() is the column-major operand _scaled_mm needs
    scale: torch.Tensor    # 0-d float32


@dataclasses.dataclass(frozen=True)
class Dims:
    """The static numbers a layer needs (constants to the compiler)."""
    heads: int
    kv_heads: int
    head_dim: int
    eps: float
    qk_norm: bool
    experts: int = 0
    top_k: int = 0
    moe_impl: str = "grouped"       # "grouped" (torch._grouped_mm) | "loop" (per expert, host sync)


# -- numerics helpers ------------------------------------------------------------------------------

def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm in fp32, cast back before the weight (as transformers and vLLM round it)."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return h.to(x.dtype) * weight


def add_rmsnorm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float):
    """(norm(x + residual), x + residual): the residual add folded into the norm, as vLLM's
    fused_add_rms_norm does, so inductor emits one kernel for both."""
    residual = x + residual
    return rms_norm(residual, weight, eps), residual


def quantize_fp8(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor dynamic fp8: scale = amax / 448, q = clamp(t / scale) in float8_e4m3fn (vLLM's
    dynamic per-tensor scaled_fp8_quant). Returns (q, 0-d fp32 scale); t ~= q * scale."""
    scale = (t.abs().amax().float() / FP8_MAX).clamp(min=1e-12)
    q = (t.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q, scale


def dequantize_fp8(q: torch.Tensor, scale: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    return (q.float() * scale).to(dtype)


def fp8_linear(x: torch.Tensor, w: Fp8Weight) -> torch.Tensor:
    """x @ w.T with x quantized per tensor and one fp8 GEMM (bf16 out). _scaled_mm wants the first
    operand row-major and the second column-major, K and N multiples of 16. Off CUDA the product is
    taken in fp32 from the dequantized operands (the same numbers up to the GEMM's rounding)."""
    flat = x.reshape(-1, x.shape[-1])
    q, scale = quantize_fp8(flat)
    if hasattr(torch, "_scaled_mm") and x.is_cuda:
        out = torch._scaled_mm(q, w.weight.t(), scale_a=scale, scale_b=w.scale, out_dtype=torch.bfloat16)
    else:
        out = (dequantize_fp8(q, scale) @ dequantize_fp8(w.weight, w.scale).t()).to(torch.bfloat16)
    return out.view(*x.shape[:-1], w.weight.shape[0])


def linear(x: torch.Tensor, w) -> torch.Tensor:
    return fp8_linear(x, w) if isinstance(w, Fp8Weight) else F.linear(x, w)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding, neox layout (halves rotated), in fp32. x [B, T, n, d]; cos/sin [T, d/2]."""
    x1, x2 = x.float().chunk(2, dim=-1)
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1).to(x.dtype)


# -- one layer -------------------------------------------------------------------------------------

def attention(h, w: dict, k_cache, v_cache, cos, sin, dims: Dims, causal: bool):
    """Fused QKV, (q/k norm), RoPE, in-place cache write at positions [S - T, S), SDPA over
    k_cache[:, :, :S], o_proj. cos/sin hold positions [0, S): their length is the context S."""
    B, T, _ = h.shape
    H, K, d = dims.heads, dims.kv_heads, dims.head_dim
    S = cos.shape[0]
    q, k, v = linear(h, w["qkv"]).split([H * d, K * d, K * d], dim=-1)
    q, k, v = q.view(B, T, H, d), k.view(B, T, K, d), v.view(B, T, K, d)
    if dims.qk_norm:  # Qwen3: RMSNorm over each head's d before RoPE
        q, k = rms_norm(q, w["q_norm"], dims.eps), rms_norm(k, w["k_norm"], dims.eps)
    cos_t, sin_t = cos[S - T:], sin[S - T:]
    q, k = rope(q, cos_t, sin_t), rope(k, cos_t, sin_t)
    k_cache[:, :, S - T:S] = k.transpose(1, 2)
    v_cache[:, :, S - T:S] = v.transpose(1, 2)
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k_cache[:, :, :S], v_cache[:, :, :S],
                                       is_causal=causal, enable_gqa=True)
    return linear(o.transpose(1, 2).reshape(B, T, H * d), w["o"])


def mlp(h, w: dict):
    gate, up = linear(h, w["gate_up"]).chunk(2, dim=-1)
    return linear(F.silu(gate) * up, w["down"])


def layer_forward(x, residual, w: dict, k_cache, v_cache, cos, sin, dims: Dims, causal: bool):
    """One decoder layer: returns (this layer's output, residual stream). The residual add of the
    previous layer's output happens inside the first norm (vLLM's layout)."""
    h, residual = add_rmsnorm(x, residual, w["attn_norm"], dims.eps)
    x = attention(h, w, k_cache, v_cache, cos, sin, dims, causal)
    h, residual = add_rmsnorm(x, residual, w["mlp_norm"], dims.eps)
    return (moe(h, w, dims) if dims.experts else mlp(h, w)), residual


# -- mixture of experts ------------------------------------------------------------------------------

def route(x: torch.Tensor, router, top_k: int, table: torch.Tensor | None = None):
    """Softmax over experts in fp32, top-k, renormalised over the k (Qwen3's norm_topk_prob).

    `table` ([rows, k] expert ids, `routing_table`): after the same router GEMM, softmax and top-k
    kernels, token i takes the experts of row i, with those experts' probabilities as weights. A
    random-weight router does not spread tokens as a trained one does (trained with load-balancing
    losses): measured on the H200, the grouped GEMMs of a 12-layer Qwen3-30B-A3B step at 128 tokens
    took about half the time the same kernels take with all 128 experts in use, so many experts'
    weights were never read. Timing runs route by the table."""
    probs = linear(x, router).float().softmax(dim=-1)
    weights, experts = probs.topk(top_k, dim=-1)
    if table is not None:
        experts = table[:x.shape[0]]
        weights = probs.gather(1, experts)
    return weights / weights.sum(dim=-1, keepdim=True), experts


def routing_table(rows: int, experts: int, top_k: int, device, seed: int) -> torch.Tensor:
    """[rows, top_k] expert ids, each row k distinct experts drawn uniformly at random (a seeded
    generator): tokens spread over the experts independently, as a load-balanced trained router
    spreads them and as the cost model's expected count of experts in use assumes
    (perfmodel.ops: E (1 - (1 - k/E)^n) for n tokens)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.rand(rows, experts, generator=g).argsort(dim=1)[:, :top_k].contiguous().to(device)


def sort_by_expert(experts: torch.Tensor, n_experts: int):
    """(order, offsets): `order` lists the N*k (token, slot) copies grouped by expert; offsets[e]
    is the end of expert e's rows (int32 cumulative, what _grouped_mm takes). searchsorted over
    the sorted ids, not bincount: bincount syncs with the host, which a CUDA graph cannot hold."""
    flat = experts.reshape(-1)
    sorted_ids, order = flat.sort(stable=True)
    ids = torch.arange(n_experts, device=flat.device, dtype=sorted_ids.dtype)
    return order, torch.searchsorted(sorted_ids, ids, right=True).to(torch.int32)


def experts_grouped(xs, w13, w2, offsets):
    """Gate-up and down GEMMs over rows grouped by expert, one grouped GEMM each. w13 [E, 2F, D] and
    w2 [E, D, F] are stored as nn.Linear weights; .transpose(-2, -1) makes the column-major
    operand the kernel reads (as torchtitan calls it)."""
    gate, up = torch._grouped_mm(xs, w13.transpose(-2, -1), offs=offsets).chunk(2, dim=-1)
    return torch._grouped_mm(F.silu(gate) * up, w2.transpose(-2, -1), offs=offsets)


def experts_loop(xs, w13, w2, offsets):
    """The same per expert in a Python loop (reads the offsets on the host: not graph-capturable);
    for devices or dtypes without a grouped GEMM."""
    out = torch.empty(xs.shape[0], w2.shape[1], device=xs.device, dtype=xs.dtype)
    start = 0
    for e, end in enumerate(offsets.tolist()):
        if end > start:
            gate, up = F.linear(xs[start:end], w13[e]).chunk(2, dim=-1)
            out[start:end] = F.linear(F.silu(gate) * up, w2[e])
        start = end
    return out


def moe(h, w: dict, dims: Dims):
    """Route, copy each token to its k experts sorted by expert, grouped expert FFN, put the rows
    back in token order, sum the k with their router weights."""
    x = h.reshape(-1, h.shape[-1])
    weights, experts = route(x, w["router"], dims.top_k, w.get("route_table"))
    order, offsets = sort_by_expert(experts, dims.experts)
    xs = x[order // dims.top_k]
    run = experts_grouped if dims.moe_impl == "grouped" else experts_loop
    ys = run(xs, w["w13"], w["w2"], offsets)
    back = torch.empty_like(ys).index_copy_(0, order, ys)       # row j = (token j // k, slot j % k)
    out = (back.view(x.shape[0], dims.top_k, -1).float() * weights[..., None]).sum(dim=1)
    return out.to(h.dtype).view(h.shape)


# -- the model -------------------------------------------------------------------------------------

@dataclasses.dataclass
class Engine:
    """Weights, RoPE tables and KV buffers of one model on one device. The KV buffers are flat per
    layer (`kv_tokens` tokens of K and of V) and viewed as a static cache [B, K, S_max, d] for each
    (batch, S_max); one allocation serves every case of a sweep without fragmenting memory."""
    spec: object
    dtype: str
    dims: Dims
    embed: torch.Tensor
    layers: list
    final_norm: torch.Tensor
    lm_head: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    k_flat: list
    v_flat: list
    max_seq: int
    kv_tokens: int

    def caches(self, batch: int, s_max: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (k_cache, v_cache) viewed as [batch, K, s_max, d]."""
        if batch * s_max > self.kv_tokens or s_max > self.max_seq:
            raise ValueError(f"KV cache of batch {batch} x {s_max} tokens exceeds the engine's "
                             f"{self.kv_tokens} tokens / max_seq {self.max_seq}")
        shape = (batch, self.dims.kv_heads, s_max, self.dims.head_dim)
        n = batch * s_max * self.dims.kv_heads * self.dims.head_dim
        return [(k[:n].view(shape), v[:n].view(shape)) for k, v in zip(self.k_flat, self.v_flat)]

    def weight_bytes(self) -> int:
        tensors = [self.embed, self.final_norm] + ([] if self.lm_head is self.embed else [self.lm_head])
        for w in self.layers:
            tensors += [t for v in w.values() for t in (v if isinstance(v, tuple) else (v,))]
        return sum(t.numel() * t.element_size() for t in tensors)


LayerFn = Callable[..., tuple]


def step(engine: Engine, tokens: torch.Tensor, past: int, layer_fn: LayerFn = layer_forward,
         s_max: int | None = None) -> torch.Tensor:
    """One engine step: T = tokens.shape[1] new tokens per sequence after `past` cached ones.
    Prefill is past 0 (causal over the T tokens); decode is T = 1 over past (not causal). Writes
    K/V at [past, past + T) of the cache view [B, K, s_max, d] and returns the last token's logits
    [B, V]. (Chunked prefill, past > 0 with T > 1, would need a bottom-right causal mask: refused.)"""
    B, T = tokens.shape
    S = past + T
    if past and T > 1:
        raise ValueError(f"step: T = {T} new tokens after past = {past}: chunked prefill is not supported")
    caches = engine.caches(B, s_max or engine.max_seq)
    if S > caches[0][0].shape[2]:
        raise ValueError(f"step: context {S} exceeds the cache's S_max {caches[0][0].shape[2]}")
    x = F.embedding(tokens, engine.embed)
    residual = torch.zeros_like(x)
    cos, sin = engine.cos[:S], engine.sin[:S]
    for w, (k_cache, v_cache) in zip(engine.layers, caches):
        x, residual = layer_fn(x, residual, w, k_cache, v_cache, cos, sin, engine.dims, past == 0 and T > 1)
    h, _ = add_rmsnorm(x[:, -1], residual[:, -1], engine.final_norm, engine.dims.eps)
    return F.linear(h, engine.lm_head)


# -- a numerical reference ---------------------------------------------------------------------------

def _fp32(w):
    """A weight in fp32 (fp8 dequantized); integer tensors (a routing table) stay as they are."""
    if isinstance(w, Fp8Weight):
        return dequantize_fp8(w.weight, w.scale)
    return w if not torch.is_floating_point(w) else w.float()


def reference_layer(x, residual, w: dict, k_cache, v_cache, cos, sin, dims: Dims, causal: bool):
    """layer_forward in fp32 on upcast copies of this layer's weights (fp8 ones dequantized) and of
    its cache (the engine's cache is not written). One layer at a time, so the reference costs one
    layer's fp32 weights of memory, not the model's. Experts run in the per-expert loop (the grouped
    GEMM is bf16-only on CUDA)."""
    return layer_forward(x.float(), residual.float(), {k: _fp32(v) for k, v in w.items()}, k_cache.float(),
                         v_cache.float(), cos, sin, dataclasses.replace(dims, moe_impl="loop"), causal)


def reference_step(engine: Engine, tokens: torch.Tensor, past: int, s_max: int | None = None) -> torch.Tensor:
    """The step's logits computed in fp32 from the same weights and cache contents: the yardstick
    against which bf16 / fp8, eager or compiled, are judged (their difference from each other alone
    mixes both one's rounding)."""
    head = engine.lm_head.float()
    ref = dataclasses.replace(engine, embed=engine.embed.float(), final_norm=engine.final_norm.float(),
                              lm_head=head)
    return step(ref, tokens, past, layer_fn=reference_layer, s_max=s_max)


# -- building --------------------------------------------------------------------------------------

def _randn(shape, dtype, device, std=WEIGHT_STD) -> torch.Tensor:
    return (torch.randn(shape, device=device, dtype=torch.float32 if device.type == "cpu" else dtype) * std).to(dtype)


def _norm_weight(width, dtype, device) -> torch.Tensor:
    return 1.0 + _randn((width,), dtype, device)


def _linear_weight(shape, dtype: str, device):
    w = _randn(shape, torch.bfloat16 if dtype == "fp8" else DTYPES[dtype], device)
    if dtype != "fp8":
        return w
    q, scale = quantize_fp8(w)
    return Fp8Weight(q, scale)


def _ffn_weights(spec, dtype: str, device) -> dict:
    D, t = spec.d_model, DTYPES[dtype]
    if spec.is_moe:
        if dtype == "fp8":
            raise ValueError(f"{spec.name}: fp8 experts are not supported (grouped GEMMs run in bf16)")
        E, Fe = spec.n_experts, spec.moe_d_ff
        return {"router": _randn((E, D), t, device), "w13": _randn((E, 2 * Fe, D), t, device),
                "w2": _randn((E, D, Fe), t, device)}
    return {"gate_up": _linear_weight((2 * spec.d_ff, D), dtype, device),
            "down": _linear_weight((D, spec.d_ff), dtype, device)}


def _layer_weights(spec, dtype: str, device) -> dict:
    D, H, K, d, t = spec.d_model, spec.n_heads, spec.n_kv_heads, spec.head_dim, DTYPES[dtype]
    w = {"attn_norm": _norm_weight(D, t, device), "mlp_norm": _norm_weight(D, t, device),
         "qkv": _linear_weight(((H + 2 * K) * d, D), dtype, device),
         "o": _linear_weight((D, H * d), dtype, device)}
    if spec.qk_norm:
        w["q_norm"], w["k_norm"] = _norm_weight(d, t, device), _norm_weight(d, t, device)
    return {**w, **_ffn_weights(spec, dtype, device)}


def rope_tables(max_seq: int, head_dim: int, device, base: float = ROPE_BASE):
    """cos and sin [max_seq, head_dim / 2] in fp32 (gpt-fast's precompute_freqs_cis, as tables)."""
    inv = 1.0 / base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(max_seq, device=device, dtype=torch.float32), inv)
    return angles.cos(), angles.sin()


def grouped_mm_works(device, dtype) -> bool:
    """Whether torch._grouped_mm runs here for this dtype (bf16 on sm90 CUDA; newer CPU builds)."""
    if not hasattr(torch, "_grouped_mm"):
        return False
    try:
        a = torch.ones(4, 16, device=device, dtype=dtype)
        b = torch.ones(2, 16, 16, device=device, dtype=dtype)
        torch._grouped_mm(a, b.transpose(-2, -1), offs=torch.tensor([1, 4], device=device, dtype=torch.int32))
        return True
    except (RuntimeError, TypeError, NotImplementedError):
        return False


def check_spec(spec) -> None:
    """Refuse architectures this engine does not lay out, naming the field."""
    unsupported = {"is_mla": spec.is_mla, "learned_positions": spec.learned_positions,
                   "embed_proj_dim": spec.embed_proj_dim, "qkv_bias": spec.qkv_bias, "out_bias": spec.out_bias,
                   "mlp_bias": spec.mlp_bias, "n_shared_experts": spec.n_shared_experts,
                   "n_dense_layers": spec.n_dense_layers, "norm != rms": spec.norm != "rms",
                   "ffn_gated is false": not spec.ffn_gated,
                   "v_head_dim != head_dim": spec.value_head_dim != spec.head_dim}
    bad = [name for name, value in unsupported.items() if value]
    if bad:
        raise ValueError(f"{spec.name}: engine_model supports Llama/Qwen-style decoders; unsupported: {', '.join(bad)}")


def build(spec, dtype: str = "bf16", max_batch: int = 1, max_seq: int = 2048, device="cpu",
          kv_tokens: int | None = None, eps: float = 1e-5, seed: int = 0, random_routing: bool = False) -> Engine:
    """An Engine with random weights (std 0.02, norms 1 +- 0.02) and a random-filled KV cache of
    `kv_tokens` tokens per layer (default max_batch * max_seq; a sweep passes the largest
    batch * S_max it will view). dtype: bf16 | fp16 | fp32 | fp8 (fp8 weights, bf16 activations).
    random_routing: MoE layers route each token to k experts drawn at random (`routing_table`), as a
    trained router spreads them, not as a random-weight router does (`route`)."""
    check_spec(spec)
    if dtype not in DTYPES:
        raise ValueError(f"dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    device = torch.device(device)
    torch.manual_seed(seed)
    t = DTYPES[dtype]
    moe_impl = "grouped" if spec.is_moe and grouped_mm_works(device, t) else "loop"
    dims = Dims(spec.n_heads, spec.n_kv_heads, spec.head_dim, eps, spec.qk_norm, spec.n_experts, spec.top_k, moe_impl)
    embed = _randn((spec.vocab_size, spec.d_model), t, device)
    head = embed if spec.tied_embeddings else _randn((spec.vocab_size, spec.d_model), t, device)
    layers = [_layer_weights(spec, dtype, device) for _ in range(spec.n_layers)]
    kv_tokens = kv_tokens or max_batch * max_seq
    if spec.is_moe and random_routing:  # every token a step can hold: at most the cache's tokens
        for i, w in enumerate(layers):
            w["route_table"] = routing_table(kv_tokens, spec.n_experts, spec.top_k, device, seed + 1 + i)
    cos, sin = rope_tables(max_seq, spec.head_dim, device)
    n = kv_tokens * spec.n_kv_heads * spec.head_dim
    k_flat = [_randn((n,), t, device, std=1.0) for _ in range(spec.n_layers)]
    v_flat = [_randn((n,), t, device, std=1.0) for _ in range(spec.n_layers)]
    return Engine(spec, dtype, dims, embed, layers, _norm_weight(spec.d_model, t, device), head, cos, sin,
                  k_flat, v_flat, max_seq, kv_tokens)
