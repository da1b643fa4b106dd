"""Per-op accounting of one forward step: FLOPs and bytes per op, vectorized over scenarios.

One function, `step_ops`, covers prefill and decode: a step processes `new_tokens` T per sequence on
top of `past` S0 cached tokens, for `seqs` sequences. Prefill is (T = prompt, S0 = 0), a decode step
is (T = 1, S0 = context). Every count is per device under tensor parallelism `tp` (Megatron-LM
sharding: column-parallel QKV / up projections, row-parallel output / down projections, heads split
across devices, kv heads replicated when tp exceeds them; Shoeybi et al. 2019, arXiv 1909.08053).

FLOPs are 2 per multiply-add. Bytes count each tensor read or written once (perfect on-chip reuse
inside a kernel), the lower bound a fused kernel attains; framework overhead is modeled separately.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from perfmodel.engines import DEFAULT_ENGINE, Engine
from perfmodel.engines import load as load_engine
from perfmodel import shapes
from workloads.model import ModelSpec

#: Op.kernel of an engine's own all-reduce: "custom-<engine name>" (perfmodel.collectives).
CUSTOM_ALLREDUCE = "custom"

#: Op kinds; the roofline treats "matmul" and "attention" as tensor-core work, the rest as vector work.
KINDS = ("matmul", "attention", "norm", "elementwise", "concat", "embedding", "moe", "routing", "reduction", "comm")


@dataclass(frozen=True)
class Op:
    """One op of a step, repeated `count` times (e.g. once per layer). Array fields broadcast.

    m, n, k are the GEMM shape (output m x n, reduction k) for matmuls, used for wave quantization;
    groups: how many such GEMMs one grouped kernel runs side by side (the experts a MoE batch
    touches), whose tiles share the GPU's SMs; comm_bytes is the all-reduce payload for "comm" ops.
    tensor_bits: bits the op's tensor-core math runs at where its kernel sets them (an fp8
    attention kernel: 8); 0 where they follow the precision (perfmodel.roofline).
    out_bytes: the part of act_bytes a GEMM writes as its output (perfmodel.roofline prices writes
    at the spec's GEMM write rate); 0 where not split out.
    warm_l2: the op was timed by replaying it on the same buffers (a kernel table's benchmark, not
    a model step, whose other layers evict them): where its bytes fit the spec's L2 cache its
    attention kernel streams them at its family's L2 rate (perfmodel.roofline). A bool or a mask.
    """

    name: str
    kind: str
    count: int
    flops: object
    weight_bytes: object
    act_bytes: object
    kv_bytes: object = 0.0
    kernels: int = 1
    m: object = 0.0
    n: object = 0.0
    k: object = 0.0
    comm_bytes: object = 0.0
    groups: object = 1.0
    kernel: str = ""
    tensor_bits: object = 0.0
    out_bytes: object = 0.0
    warm_l2: object = False

    @cached_property
    def bytes(self):
        total = self.weight_bytes + self.act_bytes
        return total if np.ndim(self.kv_bytes) == 0 and self.kv_bytes == 0 else total + self.kv_bytes


@dataclass(frozen=True)
class Precision:
    """Bits per element for weights (with quantization-group overhead), activations and KV cache.

    weight_only_kernel: which kernel runs weight-only formats (w_bits < a_bits): "fused" (a
    serving kernel that dequantizes in registers at the bf16 tensor-core rate, as Marlin does:
    Frantar et al. 2024, arXiv 2408.11743) or "torch" (PyTorch's own packed int8 / int4 kernels,
    whose measured rates a calibrated spec carries)."""

    w_bits: object
    a_bits: object
    kv_bits: object
    quant_group: object = 128
    weight_only_kernel: str = "fused"

    @cached_property
    def weight_bytes_per_param(self):
        """Sub-8-bit weights store a 16-bit scale and a 16-bit zero per group (GPTQ/AWQ layouts:
        Frantar et al. 2022, arXiv 2210.17323; Lin et al. 2023, arXiv 2306.00978)."""
        return shapes.weight_bytes_per_param(self.w_bits, self.quant_group)

    @cached_property
    def act_bytes(self):
        return np.asarray(self.a_bits) / 8

    @cached_property
    def gemm_out_bytes(self):
        """Bytes per element a GEMM writes: its activations' width, at least 16 bits (8- and 4-bit
        GEMMs emit bf16: vLLM's cutlass_scaled_mm and sgl-kernel's fp8_scaled_mm take a bf16
        out_dtype, as torch._scaled_mm does in our suite; TensorRT-LLM's FP8 linear layers too)."""
        return np.maximum(self.act_bytes, 2.0)

    @cached_property
    def kv_bytes(self):
        return np.asarray(self.kv_bits) / 8


def step_phase(new_tokens) -> str:
    """"decode" for a step of one new token per sequence, else "prefill" (scalar: a step with mixed
    shapes decodes only when every sequence does). Attention kernels, fp8 quantization and the
    prediction intervals all follow this one rule."""
    if isinstance(new_tokens, (int, float)):  # one scenario (np.float64 is a float)
        return "decode" if new_tokens <= 1 else "prefill"
    return "decode" if np.all(np.asarray(new_tokens) <= 1) else "prefill"


def matmul_op(name: str, tokens, n, k, p: Precision, count: int) -> Op:
    """A dense GEMM: tokens x k activations times a k x n weight; flops = 2 m n k; it reads its
    activations at their width and writes its output at Precision.gemm_out_bytes.
    (Products are ordered scalars first: a million-scenario sweep spends its time here.)"""
    out_bytes = (n * tokens) * p.gemm_out_bytes
    return Op(name, "matmul", count, flops=(2.0 * n * k) * tokens,
              weight_bytes=(n * k) * p.weight_bytes_per_param,
              act_bytes=(k * tokens) * p.act_bytes + out_bytes, m=tokens, n=n, k=k, out_bytes=out_bytes)


def vector_op(name: str, kind: str, tokens, width, passes: float, flops_per_elem: float, p: Precision,
              count: int, weight_elems: float = 0.0, kernels: int = 1) -> Op:
    """A memory-bound elementwise / norm op making `passes` reads + writes of tokens x width tensors."""
    return Op(name, kind, count, flops=(flops_per_elem * width) * tokens, weight_bytes=weight_elems * 2.0,
              act_bytes=((passes * width) * tokens) * p.act_bytes, kernels=kernels)


#: Kernel family of a norm run one thread block per row (Op.kernel; perfmodel.roofline prices its row).
ROW_NORM_KERNEL = "row-per-block"


def row_norm_op(name: str, tokens, width, p: Precision, count: int, weight_elems: float = 0.0) -> Op:
    """PyTorch's own LayerNorm kernel (ATen's vectorized layer-norm kernel, torch.nn.functional.
    layer_norm on CUDA): one thread block per row reads the row for its mean and variance, reads it
    again to normalise and writes it once: 3 passes, 6 FLOPs per element. Its time carries one row's
    latency (perfmodel.roofline), which fused norms of serving engines and compilers do not: on an
    H200 one row of 8192 takes 10.5 us where its 49 KB would stream in 0.01 us
    (validate/reports/h200, norm cases)."""
    return Op(name, "norm", count, flops=(6.0 * width) * tokens, weight_bytes=weight_elems * 2.0,
              act_bytes=((3.0 * width) * tokens) * p.act_bytes, m=tokens, n=width, kernel=ROW_NORM_KERNEL)


def attention_pairs(new_tokens, past):
    """Causal query-key pairs per head per sequence: T S0 + T (T + 1) / 2 (each new token sees the
    cache and the new tokens up to itself)."""
    return new_tokens * past + new_tokens * (new_tokens + 1) / 2


#: Query rows (and keys) per block of a FlashAttention-style kernel: the tile of its work units
#: (perfmodel.roofline.attention_units) and of its causal mask's diagonal blocks (`diagonal_block_pairs`).
ATTENTION_TILE_ROWS = 128.0
#: Attention kernel family over a masked static cache (an engine profile's "sdpa-masked"): it
#: computes every row over the whole cache, so no causal block is skipped or masked within.
MASKED_CACHE_FAMILY = "sdpa-masked"


def diagonal_block_pairs(new_tokens):
    """Query-key pairs a causal FlashAttention-style kernel computes beyond the causal ones, per head
    per sequence: it skips the blocks above the diagonal but computes the diagonal blocks whole,
    masking their upper half, so a tile of B rows computes B^2 pairs there where B (B + 1) / 2 count:
    (B - 1) / 2 per new token past the first (Dao 2023, arXiv 2307.08691, section 3.1.1; Shah et al.
    2024, arXiv 2407.08608). Exact for a whole number of block-aligned tiles; a prompt shorter than a
    tile computes T (T - 1) / 2 instead (overstated there, where the kernel's floor dominates); zero
    for one new token (decode). aiconfigurator's H200 context-attention tables show the excess: with
    it, held-out median errors went 12.2 -> 10.7% (vLLM), 13.9 -> 12.5% (SGLang), 10.9 -> 10.2%
    (TensorRT-LLM), the prompts of 512-2048 tokens having run 0.81x of the model without it."""
    return (ATTENTION_TILE_ROWS - 1.0) / 2.0 * (new_tokens - 1.0)


def attention_op(model: ModelSpec, *, seqs, new_tokens, past, p: Precision, tp, sparse_budget=0,
                 kernel: str = "", tensor_bits=0.0) -> Op:
    """Scaled-dot-product attention over the KV cache (GQA / MQA / MLA), FlashAttention-style.

    FLOPs = 2 * pairs * (qk_dim + v_dim) per query head (QK^T and PV; Dao et al. 2022,
    arXiv 2205.14135), the pairs those the kernel computes: the causal ones plus its diagonal
    blocks' masked half (`diagonal_block_pairs`; none for a masked static cache's kernel). Bytes: the whole K/V of the context is read once, the new tokens' K/V written
    once, Q read and O written once. `groups` counts (sequence, kv head) pairs: with the query rows m
    they give the kernel's work units (perfmodel.roofline.attention_units). MLA runs in the absorbed form (DeepSeek-V2, arXiv 2405.04434):
    one shared latent of kv_lora + rope elements per token acts as a single kv head.
    With `sparse_budget` > 0 (block top-k sparse attention) a decode step reads at most that many
    cached tokens (Kinetics, arXiv 2506.05333). `kernel` names the attention kernel family whose
    calibrated rates and floor price it (an engine profile's choice; "" = the spec's default);
    `tensor_bits` the bits its math runs at where the kernel sets them (`attention_tensor_bits`).
    """
    heads = shapes.query_heads_per_device(model, tp)
    context = past + new_tokens
    if (sparse_budget > 0) if isinstance(sparse_budget, (int, float)) else np.any(np.asarray(sparse_budget) > 0):
        context = np.where(np.asarray(sparse_budget) > 0, np.minimum(context, sparse_budget), context)
        past = context - new_tokens
        past = np.maximum(past, 0)
    pairs = attention_pairs(new_tokens, past)
    if not kernel.startswith(MASKED_CACHE_FAMILY):
        pairs = pairs + diagonal_block_pairs(new_tokens)
    qk_dim, v_dim = shapes.attention_dims(model)
    kv_elems = shapes.kv_elements_per_token_per_layer_per_device(model, tp)
    flops = 2.0 * seqs * heads * pairs * (qk_dim + v_dim)
    kv_bytes = seqs * kv_elems * (context + new_tokens) * p.kv_bytes
    act_bytes = seqs * new_tokens * heads * (qk_dim + v_dim) * p.act_bytes
    kv_heads = shapes.kv_heads_per_device(model, tp)
    return Op("attention", "attention", model.n_layers, flops=flops, weight_bytes=0.0,
              act_bytes=act_bytes, kv_bytes=kv_bytes, m=seqs * new_tokens * heads, n=context, k=qk_dim,
              groups=seqs * kv_heads, kernel=kernel, tensor_bits=tensor_bits)


def attention_tensor_bits(engine: Engine, p: Precision, phase: str):
    """Bits an engine's attention math runs at in a step phase: 8 where its prefill kernel runs
    fp8 attention over an 8-bit KV cache (Engine.fp8_prefill_attention), else 0 (the precision's:
    perfmodel.roofline). Array-valued for an array of KV bits."""
    if not (engine.fp8_prefill_attention and phase == "prefill"):
        return 0.0
    if isinstance(p.kv_bits, (int, float)):
        return 8.0 if p.kv_bits <= 8 else 0.0
    return np.where(np.asarray(p.kv_bits) <= 8, 8.0, 0.0)


def attention_projections(model: ModelSpec, tokens, p: Precision, tp, engine: Engine) -> list[Op]:
    """QKV and output projections (or MLA's down/up projections), sharded over `tp`."""
    L, D = model.n_layers, model.d_model
    if model.is_mla:
        H, rope, nope = model.n_heads / tp, model.qk_rope_head_dim, model.qk_nope_head_dim
        ops = []
        if model.q_lora_rank:
            ops += [matmul_op("q_a_proj", tokens, model.q_lora_rank, D, p, L),
                    matmul_op("q_b_proj", tokens, H * (nope + rope), model.q_lora_rank, p, L)]
        else:
            ops.append(matmul_op("q_proj", tokens, H * (nope + rope), D, p, L))
        return ops + [
            matmul_op("kv_a_proj", tokens, model.kv_lora_rank + rope, D, p, L),
            # absorbed up-projections: q_nope -> latent and latent -> v, same weights as kv_b_proj
            matmul_op("kv_b_absorbed", tokens, H * (nope + model.v_head_dim), model.kv_lora_rank, p, L),
            matmul_op("o_proj", tokens, D, H * model.v_head_dim, p, L),
        ]
    q = model.n_heads * model.head_dim / tp
    kv_heads = shapes.kv_heads_per_device(model, tp)
    k = kv_heads * model.head_dim
    v = kv_heads * model.value_head_dim  # value heads may be narrower (MiMo-V2)
    attended = model.n_heads * model.value_head_dim / tp  # the attention output: H value rows
    out = [matmul_op("o_proj", tokens, D, attended, p, L)]
    if engine.attn_out_copy:
        out.insert(0, vector_op("attn_out_copy", "elementwise", tokens, attended, 2.0, 0.0, p, L))
    if engine.split_qkv:
        return [matmul_op("q_proj", tokens, q, D, p, L), matmul_op("k_proj", tokens, k, D, p, L),
                matmul_op("v_proj", tokens, v, D, p, L)] + out
    return [matmul_op("qkv_proj", tokens, q + k + v, D, p, L)] + out


def ffn_ops(model: ModelSpec, tokens, p: Precision, tp, engine: Engine) -> list[Op]:
    """Dense FFN layers: (gate +) up, activation, down; sharded over `tp`."""
    count = model.n_dense_ffn_layers
    if count == 0:
        return []
    width = model.d_ff / tp
    if model.ffn_gated and engine.split_gate_up:
        up = [matmul_op("ffn_gate", tokens, width, model.d_model, p, count),
              matmul_op("ffn_up", tokens, width, model.d_model, p, count)]
    else:
        up = [matmul_op("ffn_up", tokens, 2 * width if model.ffn_gated else width, model.d_model, p, count)]
    passes = engine.act_passes if model.ffn_gated else 2.0
    act = vector_op("ffn_act", "elementwise", tokens, width, passes, 5.0, p, count,
                    kernels=engine.act_kernels if model.ffn_gated else 1)
    return up + [act, matmul_op("ffn_down", tokens, model.d_model, width, p, count)]


def expected_experts_touched(n_experts: int, top_k: int, tokens):
    """Distinct experts a batch activates under uniform independent routing:
    E (1 - (1 - k/E)^tokens). Memory traffic for expert weights scales with this, not with E."""
    return n_experts * (1.0 - (1.0 - top_k / n_experts) ** tokens)


def moe_ops(model: ModelSpec, tokens, p: Precision, tp, ep=1, routed: tuple | None = None,
            family: str = "") -> list[Op]:
    """Router GEMM, routing (top-k, sort and permutation: a fixed cost per layer a calibrated spec
    carries as moe_routing_s, plus its bytes), routed expert GEMMs (one grouped GEMM kernel per
    matrix, streaming at Calibration.grouped_bytes_per_s) and shared experts of the MoE layers.

    ep: expert parallelism (each device holds E / ep experts whole, each of their matrices split
    over tp); the device computes the token-expert pairs routed to its own experts. Under uniform
    independent routing each token picks each expert with probability k / E, so the device gets
    tokens k / ep pairs over (E / ep)(1 - (1 - k / E)^tokens) distinct experts in expectation.
    routed: (pairs, distinct experts) on the device where the routing is known instead (a
    benchmark's own workload: validate/moe_routing.py). family: the fused-MoE kernel family
    (Engine.moe_kernel) that runs the routing and the experts ("": the generic grouped GEMM)."""
    count = model.n_moe_layers
    if count == 0:
        return []
    D, E, k = model.d_model, model.n_experts, model.top_k
    if routed is None:
        routed = (tokens * k / ep, expected_experts_touched(E, k, tokens) / ep)
    # routing: router probabilities, top-k, sorting the token copies by expert, gathering them and
    # scattering the results back (about four passes over tokens x k rows of D)
    kernel = moe_kernel_name(family)
    route = Op("moe_route", "routing", count, flops=0.0, weight_bytes=0.0,
               act_bytes=(4.0 * D * k + 8.0 * E) * tokens * p.act_bytes, kernels=0, kernel=kernel)
    ops = [matmul_op("router", tokens, E, D, p, count), route, routed_experts_op(model, *routed, p, tp, count, kernel)]
    if model.shared_d_ff:
        shared = model.shared_d_ff / tp
        up = 2 * shared if model.ffn_gated else shared
        ops += [matmul_op("shared_up", tokens, up, D, p, count),
                matmul_op("shared_down", tokens, D, shared, p, count)]
    return ops


#: Prefix of the kernel name of ops a fused-MoE kernel family runs ("moe-vllm-triton").
MOE_KERNEL = "moe"


def moe_kernel_name(family: str) -> str:
    """The kernel name moe_ops gives the ops of a fused-MoE family ("" for the generic kernel)."""
    return f"{MOE_KERNEL}-{family}" if family else ""


def routed_experts_op(model: ModelSpec, pairs, touched, p: Precision, tp, count, kernel: str = "") -> Op:
    """The grouped expert GEMMs of `count` MoE layers on one device: `pairs` token-expert pairs
    over `touched` distinct experts, each expert's matrices split over tp. Weight traffic is the
    touched experts' (untouched ones are never read); the tiles are the touched experts' at their
    mean rows, pairs / touched (touched > 0)."""
    D = model.d_model
    mats = 3 if model.ffn_gated else 2
    width = model.moe_d_ff / tp
    expert_params = mats * D * width
    return Op("experts", "moe", count, flops=2.0 * pairs * expert_params,
              weight_bytes=touched * expert_params * p.weight_bytes_per_param,
              act_bytes=pairs * (2 * D + (mats - 1) * width) * p.act_bytes,
              kernels=mats, m=pairs / touched, n=width, k=D, groups=touched, kernel=kernel)


def kv_append_op(model: ModelSpec, *, seqs, new_tokens, past, p: Precision, tp) -> Op:
    """Growing a concatenated cache (torch.cat) re-reads the S0 cached tokens and writes S0 + T."""
    kv_elems = shapes.kv_elements_per_token_per_layer_per_device(model, tp)
    return Op("kv_cat", "concat", model.n_layers, flops=0.0, weight_bytes=0.0, act_bytes=0.0,
              kv_bytes=seqs * kv_elems * (2 * past + new_tokens) * p.kv_bytes, kernels=2)


def context_ops(model: ModelSpec, *, seqs, new_tokens, past, p: Precision, tp=1, sparse_budget=0,
                engine: Engine | str = DEFAULT_ENGINE) -> list[Op]:
    """The ops of a step whose cost depends on the cached context: the cache concatenation (for
    engines that grow it by torch.cat) and attention. Decode averaging re-evaluates just these at
    the last context."""
    engine = load_engine(engine)
    ops = [kv_append_op(model, seqs=seqs, new_tokens=new_tokens, past=past, p=p,
                        tp=tp)] if engine.kv_append_copies else []
    phase = step_phase(new_tokens)
    kernel = engine.attention_kernel(phase, group=shapes.query_group(model), head_dim=shapes.kernel_head_dim(model))
    return ops + [attention_op(model, seqs=seqs, new_tokens=new_tokens, past=past, p=p, tp=tp,
                               sparse_budget=sparse_budget, kernel=kernel,
                               tensor_bits=attention_tensor_bits(engine, p, phase))]


def kv_write_op(model: ModelSpec, tokens, p: Precision, tp, engine: Engine) -> list[Op]:
    """Kernels that write the step's new K and V into a paged or static cache (vLLM's
    reshape_and_cache, index_copy_ into gpt-fast's static cache): read and write each new token's
    K/V once. None where the attention or RoPE kernel writes them (TensorRT-LLM)."""
    if not engine.cache_write_kernels:
        return []
    kv_elems = shapes.kv_elements_per_token_per_layer_per_device(model, tp)
    return [Op("kv_write", "elementwise", model.n_layers, flops=0.0, weight_bytes=0.0, act_bytes=0.0,
               kv_bytes=(2.0 * kv_elems) * tokens * p.kv_bytes, kernels=engine.cache_write_kernels)]


def act_quant_ops(model: ModelSpec, tokens, p: Precision, tp, engine: Engine, decode: bool = False) -> list[Op]:
    """Dynamic activation quantization before 8-bit GEMMs, per GEMM input of a layer (QKV, output,
    gate-up and down projections; `quant_ops`), in `act_quant_kernels` kernels each (0: fused into
    the preceding norm or activation kernel, as TensorRT-LLM does). The whole-tensor amax of a
    decode step runs as a one-block reduction where the engine says so (single_block_amax)."""
    if not engine.act_quant_kernels or not np.any((np.asarray(p.w_bits) <= 8) & (np.asarray(p.a_bits) <= 8)):
        return []
    eight = np.where((np.asarray(p.w_bits) <= 8) & (np.asarray(p.a_bits) <= 8), 1.0, 0.0)
    width = 3.0 * model.d_model + model.n_heads * model.value_head_dim / tp + (model.d_ff / tp if model.d_ff else 0.0)
    # inputs scaled by the 8-bit mask: a 16-bit scenario in a mixed sweep launches no quant kernels
    return quant_ops(tokens * eight, width, p, engine.act_quant_kernels, model.n_layers, inputs=4 * eight,
                     single_block=decode and engine.single_block_amax, quant_bytes=engine.act_quant_bytes)


#: Bytes per element the amax pass of per-tensor quantization reads: the 16-bit activation
#: (eager PyTorch reads |x|, which its abs kernel wrote at 16 bits; counted in act_quant_bytes).
AMAX_READ_BYTES = 2.0


def quant_ops(tokens, width, p: Precision, kernels: int, count: int, inputs=1,
              single_block: bool = True, quant_bytes: float = 2.0) -> list[Op]:
    """fp8 quantization of `inputs` activations of tokens x width elements in all (per-token
    scales: one kernel reading 16 bits and writing 8 per element, as vLLM's per-token quant; per-
    tensor scales, kernels >= 2: first an amax reduction over the whole tensor, then scale-and-cast).
    `quant_bytes`: bytes the scale-and-cast kernels move per element besides writing the quantized
    value (Engine.act_quant_bytes: 2 for one fused kernel reading 16 bits; eager PyTorch's abs,
    upcast, divide, clamp and cast move 30: 4 + 6 + 8 + 8 + 4, validate/engine_model.quantize_fp8).
    With `single_block` the amax is a kind "reduction" kernel priced at
    Calibration.reduction_bytes_per_s: torch.compile with dynamic shapes, compiled at a small size
    hint, emits it without a split and runs it in one thread block (33 GB/s on an H200, the suite's
    act_quant cases); otherwise it streams like any elementwise kernel."""
    ops = []
    if kernels >= 2:
        ops.append(Op("act_amax", "reduction" if single_block else "elementwise", count, flops=width * tokens,
                      weight_bytes=0.0, act_bytes=(AMAX_READ_BYTES * width) * tokens, kernels=inputs))
    quant_kernels = kernels - 1 if kernels >= 2 else kernels
    ops.append(Op("act_quant", "elementwise", count, flops=(2.0 * width) * tokens, weight_bytes=0.0,
                  act_bytes=((quant_bytes + p.act_bytes) * width) * tokens, kernels=inputs * quant_kernels))
    return ops


#: Op kernel name prefix of an engine's own dynamic fp8 activation quantization ("quant-<engine>"),
#: priced by its fitted path where the calibration has one (perfmodel.roofline.engine_quant_time_s).
ENGINE_QUANT = "quant"
#: Kernel family of an engine's CUTLASS 8-bit GEMMs (Engine.fp8_gemm_split_k false): at 8-bit
#: weights and activations each output tile runs on one SM, the reduction never split
#: (perfmodel.roofline.gemm_parallelism); other precisions run the library's usual kernels.
CUTLASS_8BIT = "cutlass-8bit"


def engine_quant_op(tokens, width, p: Precision, kernels: int, engine: str, count: int = 1) -> Op:
    """An engine's own dynamic fp8 quantization of one tokens x width activation, as one op of
    `kernels` kernels: the 16-bit input read once to quantize it (and once more by an amax pass where
    the scale is per tensor, kernels >= 2) and the 8-bit output written; `m` counts its rows. The
    engines' kernels differ where streaming does not price them: vLLM's scaled_fp8_quant computes a
    per-tensor scale with one thread block per token, each folding its maximum into one global
    value (vLLM csrc/quantization/fp8/common.cu), SGLang's sgl_per_token_quant_fp8 writes one scale
    per token, TensorRT-LLM's FP8 QDQ linear computes its per-tensor scale in separate ops (the
    collectors' fp8 GEMM rows, aiconfigurator collector/<engine>/collect_gemm.py); the roofline adds
    each engine's fitted latency and per-row time (Calibration.act_quant_engine_*)."""
    amax = AMAX_READ_BYTES if kernels >= 2 else 0.0
    return Op("act_quant", "elementwise", count, flops=(2.0 * width) * tokens, weight_bytes=0.0,
              act_bytes=((amax + 2.0 + p.act_bytes) * width) * tokens, m=tokens, n=width, kernels=kernels,
              kernel=f"{ENGINE_QUANT}-{engine}")


def step_ops(model: ModelSpec, *, seqs, new_tokens, past, p: Precision, tp=1, sparse_budget=0,
             logits_tokens=None, engine: Engine | str = DEFAULT_ENGINE) -> list[Op]:
    """All ops of one forward step, in execution order (per device).

    seqs: sequences in the step; new_tokens: tokens each processes (T); past: cached tokens (S0);
    logits_tokens: rows sent through the LM head (default: one per sequence, as servers do);
    engine: the serving stack's profile (perfmodel.engines), by name or as a profile.
    A step is three groups of ops, each a function of one count: `token_ops` of the step's
    tokens seqs x T, `context_ops` of (seqs, T, S0) and `logits_ops` of the logits rows
    (perfmodel.fastpath prices each group on its own).
    """
    engine = load_engine(engine)
    logits_tokens = seqs if logits_tokens is None else logits_tokens
    before, after = token_ops(model, tokens=seqs * new_tokens, p=p, tp=tp, engine=engine, phase=step_phase(new_tokens))
    context = context_ops(model, seqs=seqs, new_tokens=new_tokens, past=past, p=p, tp=tp,
                          sparse_budget=sparse_budget, engine=engine)
    return before + context + after + logits_ops(model, logits_tokens=logits_tokens, p=p, tp=tp, engine=engine)


def token_ops(model: ModelSpec, *, tokens, p: Precision, tp=1, engine: Engine | str = DEFAULT_ENGINE,
              phase: str = "prefill") -> tuple[list[Op], list[Op]]:
    """The ops whose cost depends only on the step's token count, as (those before attention,
    those after it): embedding, norms, projections, RoPE, cache writes, FFN or MoE, all-reduces.
    `phase` ("prefill" or "decode", ops.step_phase) selects the decode-only amax kernel."""
    engine = load_engine(engine)
    L, D = model.n_layers, model.d_model
    qk_width = shapes.rotary_width(model, tp)
    norm = dict(passes=engine.norm_passes, flops_per_elem=4.0, p=p, weight_elems=D, kernels=engine.norm_kernels)
    before = [Op("embedding", "embedding", 1, flops=0.0, weight_bytes=tokens * D * 2.0,
                 act_bytes=tokens * D * p.act_bytes)]
    before.append(vector_op("attn_norm", "norm", tokens, D, count=L, **norm))
    before += act_quant_ops(model, tokens, p, tp, engine, decode=phase == "decode")
    before += _engine_gemms(attention_projections(model, tokens, p, tp, engine), engine)
    if model.qk_norm:  # Qwen3 normalises q and k per head before rotary embedding
        fused = engine.residual_in_norm  # a fusing compiler folds it into the RoPE kernel's pass
        before.append(vector_op("qk_norm", "norm", tokens, qk_width, 0.0 if fused else engine.norm_passes, 4.0, p, L,
                                kernels=0 if fused else 2 * engine.norm_kernels))
    if engine.rope_kernels:
        before.append(vector_op("rope", "elementwise", tokens, qk_width, engine.rope_passes, 6.0, p, L,
                                kernels=engine.rope_kernels))
    before += kv_write_op(model, tokens, p, tp, engine)
    after = []
    if not engine.residual_in_norm:  # else the next norm kernel adds the residual
        after.append(vector_op("residual_add", "elementwise", tokens, D, 3.0, 1.0, p, 2 * L))
    if model.norms_per_layer == 2:
        after.append(vector_op("ffn_norm", "norm", tokens, D, count=L, **norm))
    after += _engine_gemms(ffn_ops(model, tokens, p, tp, engine), engine)
    after += moe_ops(model, tokens, p, tp, family=engine.moe_kernel)
    kernel = f"{CUSTOM_ALLREDUCE}-{engine.name}" if engine.allreduce == CUSTOM_ALLREDUCE else engine.allreduce
    after.append(allreduce_op(tokens, D, p, tp, 2 * L, kernel))
    return before, after


def _engine_gemms(ops: list[Op], engine: Engine) -> list[Op]:
    """The projections' GEMMs marked as the engine's CUTLASS 8-bit kernels where it runs those
    (Engine.fp8_gemm_split_k false); other ops unchanged. (The LM head stays 16-bit, MoE experts
    run the engines' grouped kernels.)"""
    if engine.fp8_gemm_split_k:
        return ops
    kernel = cutlass_8bit_kernel(engine.name)
    return [dataclasses.replace(op, kernel=kernel) if op.kind == "matmul" else op for op in ops]


def cutlass_8bit_kernel(engine: str) -> str:
    """The kernel name of an engine's CUTLASS 8-bit GEMMs ("cutlass-8bit-vllm": its tile table,
    Engine.fp8_gemm_tiles_hopper, prices them on Hopper; perfmodel.roofline)."""
    return f"{CUTLASS_8BIT}-{engine}"


def logits_ops(model: ModelSpec, *, logits_tokens, p: Precision, tp=1,
               engine: Engine | str = DEFAULT_ENGINE) -> list[Op]:
    """The final norm and the LM head over the rows that produce logits."""
    engine = load_engine(engine)
    norm = dict(passes=engine.norm_passes, flops_per_elem=4.0, p=p, weight_elems=model.d_model,
                kernels=engine.norm_kernels)
    # the LM head stays 16-bit in quantized checkpoints (GPTQ/AWQ), as perfmodel.memory counts it
    head = Precision(16, p.a_bits, p.kv_bits, p.quant_group, p.weight_only_kernel)
    return [vector_op("final_norm", "norm", logits_tokens, model.d_model, count=1, **norm),
            matmul_op("lm_head", logits_tokens, model.vocab_size / tp, model.d_model, head, 1)]


def allreduce_op(tokens, width, p: Precision, tp, count: int, kernel: str = "nccl") -> Op:
    """Tensor-parallel all-reduce of the tokens x width activations (two per layer in Megatron-LM).
    Its time comes from `perfmodel.collectives` (kernel "nccl", or "custom-<engine>": that engine's
    own kernel), not the roofline; zero payload when tp == 1. Activations travel in 16 bits whatever
    a_bits says."""
    payload = np.where(np.asarray(tp) > 1, tokens * width * np.maximum(p.act_bytes, 2.0), 0.0)
    return Op("allreduce", "comm", count, flops=0.0, weight_bytes=0.0, act_bytes=0.0,
              kernels=0, comm_bytes=payload, kernel=kernel)
