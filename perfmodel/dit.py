"""Cost of diffusion-transformer generation: per-step ops, step and request latency, memory, $, energy.

A request (workloads.dit.GenerationRequest) runs the text encoders once, then `steps` denoising steps
of the transformer over latent_tokens image tokens (+ the text tokens, joint or as cross-attention
keys), each step a forward of batch x (2 with classifier-free guidance) samples, then the VAE decoder
once per sample:

    e2e = sum(text encoders) + steps x step + VAE decode

Every op is a perfmodel.ops.Op priced by perfmodel.roofline.op_time, so calibrated rates, floors,
wave quantization and the engine profiles apply exactly as for language models. Attention is
bidirectional (no causal mask): 4 Tq Tk d FLOPs per head (QK^T and PV; Dao et al. 2022, arXiv
2205.14135) priced on the profile's prefill attention kernel; FlashAttention keeps its memory
O(tokens) (no Tq x Tk score matrix). Block-sparse attention (PAROAttention, Zhao et al. 2025,
arXiv 2506.16054) keeps a `density` of the key blocks: FLOPs and K/V reads scale with it, and the
step pays the token reordering (a gather over Q, K, V and the output back, per layer) at the memory
bandwidth plus `per_block_s` per kept 128 x 128 block over the SMs.

Multi-GPU: sequence parallelism (DeepSpeed-Ulysses, Jacobs et al. 2023, arXiv 2309.14509, as xDiT
and Wan's own inference run it): each of n devices holds T/n tokens and all weights; every
self-attention does four all-to-alls (q, k, v in, output back) of T/n x D activations.

Energy: each stage's FLOPs (on its precision's datapath) and HBM bytes priced by the board power model
of perfmodel.energy (idle + J/FLOP + J/byte, clipped at the board limit), over the stage's time.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hardware.spec import Hardware
from perfmodel import collectives, energy
from perfmodel.engines import Engine
from perfmodel.engines import load as load_engine
from perfmodel.ops import Op, Precision, matmul_op, quant_ops, vector_op
from perfmodel.roofline import op_time
from workloads.dit import DiTError, DiTPipeline, GenerationRequest, LatentShape, TextEncoderSpec, VAESpec, latent_shape

#: Engines that run diffusion transformers: PyTorch eager (diffusers' default) and compiled.
DIT_ENGINES = ("torch-compile", "torch-eager", "torch-eager-graph", "hf-eager")
DEFAULT_DIT_ENGINE = "torch-compile"
#: Op classes the energy model can price per step (perfmodel issue 17, item 3).
OP_CLASSES = ("matmul", "attention", "vector", "comm")
BLOCK = 128  # FlashAttention / flex_attention tile, PAROAttention's block


@dataclass(frozen=True)
class SparseAttention:
    """Block-sparse attention at `density` (fraction of key blocks kept per query block), with the
    per-layer token reordering (`reorder`) and a per-kept-block cost `per_block_s` (index loads and
    softmax bookkeeping a dense kernel does not pay), `efficiency`: the sparse kernel's rate as a
    fraction of the dense kernel's (flex_attention vs FlashAttention-2)."""

    density: float = 1.0
    reorder: bool = True
    per_block_s: float = 0.0
    efficiency: float = 1.0

    def __post_init__(self):
        if not (isinstance(self.density, (int, float)) and 0 < self.density <= 1):
            raise DiTError(f"density: {self.density!r} must be above 0, at most 1")
        if not (0 < self.efficiency <= 1.5) or self.per_block_s < 0:
            raise DiTError(f"efficiency {self.efficiency!r} must be in (0, 1.5], per_block_s {self.per_block_s!r} >= 0")

    @property
    def dense(self) -> bool:
        return self.density >= 1 and not self.reorder


DENSE = SparseAttention(1.0, reorder=False)


@dataclass(frozen=True)
class DiTStep:
    """How one step runs: samples per forward (batch x CFG passes), devices (sequence-parallel),
    precision of each block kind's layers, attention sparsity, engine."""

    samples: int
    precision: Precision
    engine: Engine
    devices: int = 1
    sparse: SparseAttention = DENSE
    layer_precision: tuple = ()     # ((block kind, layers, Precision), ...) overriding `precision`


def dit_engine(name: str | Engine | None) -> Engine:
    """The engine profile of a DiT prediction; serving engines for LLMs do not run DiTs."""
    engine = load_engine(name or DEFAULT_DIT_ENGINE)
    if engine.name not in DIT_ENGINES:
        raise DiTError(f"--engine: {engine.name!r} does not run diffusion transformers; use one of "
                       f"{', '.join(DIT_ENGINES)}")
    return engine


# -- op builders (one transformer block kind each) -------------------------------------------------

def _fused(engine: Engine) -> bool:
    """Inductor fuses LayerNorm + modulation, gates and residual adds into one kernel each (the
    torch-compile profile: residual_in_norm); eager PyTorch runs each as its own kernels."""
    return engine.residual_in_norm


def _stream(p: Precision, engine: Engine) -> Precision:
    """The precision of the activations that flow between kernels. With dynamic activation
    quantization as its own kernels (engine.act_quant_kernels > 0), an 8-bit GEMM's input is
    quantized from a 16-bit tensor just before it and the GEMM writes 16 bits (torch._scaled_mm with
    out_dtype=bfloat16: validate/engine_model.fp8_linear; vLLM's scaled_fp8_quant reads 16 bits, the
    per-token quant in perfmodel.ops.quant_ops), so norms, residuals, gates, GELU and concats read
    and write 16-bit activations, as attention already does (dit_attention_op). Measured on the
    H200 (validate/reports/dit/h200): pricing them at 8 bits put fp8 blocks 30-50% under the
    measured times while bf16 blocks were 10-15% under."""
    if not engine.act_quant_kernels:
        return p
    return Precision(p.w_bits, np.maximum(p.a_bits, 16), p.kv_bits, p.quant_group, p.weight_only_kernel)


#: Families whose reference code runs adaLN modulation and gated residuals in fp32 on 16-bit
#: activations (diffusers transformer_wan.py WanTransformerBlock: FP32LayerNorm, then
#: `(norm(x.float()) * (1 + scale) + shift).type_as(x)` and `(x.float() + y * gate).type_as(x)`;
#: Wan-Video/Wan2.1 wan/modules/model.py the same). Eager PyTorch then moves fp32 temporaries;
#: a compiled block keeps them in registers.
FP32_MODULATION_FAMILIES = frozenset({"wan"})
#: Families whose attention projects q, k and v with three linears (Wan-Video/Wan2.1 WanSelfAttention
#: and WanCrossAttention: self.q, self.k, self.v; diffusers WanAttention: to_q, to_k, to_v). Dynamic
#: fp8 then quantizes the shared input once per linear in eager PyTorch (measured: 10 amax
#: reductions per Wan block on the H200, validate/reports/dit/h200/profile), once when compiled
#: (inductor merges the identical quantizations). FLUX runs BFL's fused qkv linear.
SEPARATE_QKV_FAMILIES = frozenset({"wan"})


def modulated_norm(name: str, tokens, width, p: Precision, count: int, engine: Engine, fp32: bool = False) -> Op:
    """adaLN: LayerNorm then x (1 + scale) + shift (Peebles & Xie 2023, arXiv 2212.09748). Fused: one
    read and one write. Eager: layer_norm, 1 + scale, multiply, add: 4 kernels, 6 passes (the
    diffusers AdaLayerNormZero forward); in fp32 (FP32_MODULATION_FAMILIES) 6 kernels moving 36 bytes
    per element: upcast (2 + 4), layer_norm (4 + 4), multiply (4 + 4), add (4 + 4), cast (4 + 2)."""
    fused, p = _fused(engine), _stream(p, engine)
    if fused:
        return vector_op(name, "norm", tokens, width, 2.0, 8.0, p, count, kernels=1)
    if fp32:
        return vector_op(name, "norm", tokens, width, 36.0 / p.act_bytes, 8.0, p, count, kernels=6)
    return vector_op(name, "norm", tokens, width, 6.0, 8.0, p, count, kernels=4)


def gated_residual(name: str, tokens, width, p: Precision, count: int, engine: Engine, fp32: bool = False) -> Op:
    """x + gate * y: one kernel reading x and y and writing x when fused; eager a multiply and an add;
    in fp32 (FP32_MODULATION_FAMILIES) 5 kernels moving 38 bytes per element: two upcasts (2 + 4
    each), the gate multiply (4 + 4), the add (8 + 4) and the cast back (4 + 2)."""
    fused, p = _fused(engine), _stream(p, engine)
    if fused:
        return vector_op(name, "elementwise", tokens, width, 3.0, 2.0, p, count, kernels=1)
    if fp32:
        return vector_op(name, "elementwise", tokens, width, 38.0 / p.act_bytes, 2.0, p, count, kernels=5)
    return vector_op(name, "elementwise", tokens, width, 5.0, 2.0, p, count, kernels=2)


def residual_add(name: str, tokens, width, p: Precision, count: int, engine: Engine) -> Op:
    """x + y without a gate (the cross-attention residual of PixArt and Wan blocks): one kernel
    reading both and writing x, fused or eager."""
    return vector_op(name, "elementwise", tokens, width, 3.0, 1.0, _stream(p, engine), count, kernels=1)


def qk_norm_rope(name: str, tokens, width, p: Precision, count: int, engine: Engine, rope: bool = True) -> list[Op]:
    """RMSNorm over q and k (per head or across heads) and rotary embedding: fused into one kernel
    per tensor by inductor; eager as the profile's norm and RoPE kernels."""
    p = _stream(p, engine)
    if _fused(engine):
        return [vector_op(name, "norm", tokens, 2 * width, 2.0, 10.0, p, count, kernels=2)]
    ops = [vector_op(name + "_norm", "norm", tokens, 2 * width, engine.norm_passes, 4.0, p, count,
                     kernels=2 * engine.norm_kernels)]
    if rope:
        ops.append(vector_op(name + "_rope", "elementwise", tokens, 2 * width, engine.rope_passes, 6.0, p, count,
                             kernels=engine.rope_kernels))
    return ops


def dit_attention_op(name: str, samples, q_tokens, kv_tokens, heads, head_dim, p: Precision, count: int,
                     engine: Engine, density: float = 1.0) -> Op:
    """Bidirectional attention of q_tokens queries over kv_tokens keys per sample and head:
    FLOPs = 4 Tq Tk d per head x density (QK^T and PV over the kept blocks); bytes: Q read and O
    written once, K and V read once (x density: blocks no query block keeps are skipped). Priced on
    the engine's prefill kernel in its unmasked variant ("<family>-prefill-bidirectional": no causal
    diagonal tiles, a higher share of the GEMM rate on the H200; the causal family where a spec has
    not measured it)."""
    act = np.maximum(p.act_bytes, 2.0)  # attention runs in 16 bits
    width = heads * head_dim
    return Op(name, "attention", count, flops=(4.0 * head_dim * heads * density) * samples * q_tokens * kv_tokens,
              weight_bytes=0.0, act_bytes=(2.0 * width * act) * samples * q_tokens,
              kv_bytes=(2.0 * width * act * density) * samples * kv_tokens, m=samples * q_tokens * heads,
              n=kv_tokens * density, k=head_dim, groups=samples * heads,
              kernel=engine.attention_kernel("prefill", head_dim=head_dim) + "-bidirectional")


def reorder_op(samples, tokens, width, p: Precision, count: int) -> Op:
    """PAROAttention's token reordering: gather Q, K, V into the block-friendly order and the output
    back (four tensors of tokens x width, each read and written once), plus the gather's int64
    index read once per element: torch.gather takes an index of the output's shape and loads one
    per element it writes (PyTorch docs, torch.gather). Measured on the H200
    (validate/reports/dit/h200, the reorder cases: 0.198 ms at 4608 tokens x 24 heads, 2.11 ms at
    32768 x 40) the four gathers take 3.0x the time of their data alone, which is what the 8-byte
    index per 2-byte element adds (2 x 2 + 8 = 12 bytes against 4)."""
    act = np.maximum(p.act_bytes, 2.0)
    return Op("attn_reorder", "elementwise", count, flops=0.0, weight_bytes=0.0,
              act_bytes=(4.0 * width * (2.0 * act + 8.0)) * samples * tokens, kernels=4)


def attention_ops(name: str, samples, q_tokens, kv_tokens, heads, head_dim, p: Precision, count: int,
                  engine: Engine, sparse: SparseAttention = DENSE, self_attention: bool = True) -> list[Op]:
    """Attention, sparse when asked (self-attention only: cross-attention to a few hundred text tokens
    stays dense), with the reordering and the per-block cost as their own ops."""
    if not self_attention or sparse.dense:
        return [dit_attention_op(name, samples, q_tokens, kv_tokens, heads, head_dim, p, count, engine)]
    op = dit_attention_op(name, samples, q_tokens, kv_tokens, heads, head_dim, p, count, engine, sparse.density)
    op = Op(op.name + "_sparse", op.kind, op.count, flops=op.flops / sparse.efficiency, weight_bytes=0.0, act_bytes=op.act_bytes,
            kv_bytes=op.kv_bytes, m=op.m, n=op.n, k=op.k, groups=op.groups, kernel=op.kernel)
    ops = [op]
    if sparse.reorder:
        ops.append(reorder_op(samples, q_tokens, heads * head_dim, p, count))
    return ops


def sparse_block_time_s(ops: list[Op], sparse: SparseAttention, hw: Hardware) -> float:
    """The per-kept-block cost of the sparse attention ops of a step: blocks = (sequence, head)
    pairs x query blocks x kept key blocks, spread over the SMs, `per_block_s` each."""
    if sparse.dense or not sparse.per_block_s:
        return 0.0
    total = 0.0
    for op in ops:
        if op.name.endswith("_sparse"):
            q_blocks = np.ceil(np.asarray(op.m, float) / np.maximum(op.groups, 1.0) / BLOCK)
            blocks = op.groups * q_blocks * np.ceil(np.asarray(op.n, float) / BLOCK)
            total += op.count * float(np.sum(blocks)) * sparse.per_block_s / hw.compute_units
    return total


def mlp_ops(prefix: str, tokens, d_model, d_ff, p: Precision, count: int, engine: Engine) -> list[Op]:
    """GELU(tanh) MLP D -> F -> D; the GELU is its own kernel (cuBLAS GEMMs do not fuse it here)."""
    return [matmul_op(prefix + "fc1", tokens, d_ff, d_model, p, count),
            vector_op(prefix + "gelu", "elementwise", tokens, d_ff, 2.0, 8.0, _stream(p, engine), count),
            matmul_op(prefix + "fc2", tokens, d_model, d_ff, p, count)]


def _quant(tokens, width, p: Precision, engine: Engine, count: int, inputs: int) -> list[Op]:
    """Dynamic per-tensor activation quantization before 8-bit GEMMs (perfmodel.ops.quant_ops)."""
    if not engine.act_quant_kernels or not np.any((np.asarray(p.w_bits) <= 8) & (np.asarray(p.a_bits) <= 8)):
        return []
    return quant_ops(tokens, width, p, engine.act_quant_kernels, count, inputs=inputs, single_block=False,
                     quant_bytes=engine.act_quant_bytes)


def joint_block_ops(spec, samples, img, txt, p: Precision, count: int, engine: Engine, sparse=DENSE,
                    devices: int = 1, dual: bool = False) -> list[Op]:
    """FLUX double-stream / SD3 / HunyuanVideo MMDiT block (Esser et al. 2024, arXiv 2403.03206): per
    stream modulation, LayerNorm + modulation, QKV, q/k norm + RoPE, output, gated residual,
    LayerNorm + modulation, MLP, gated residual; one joint attention over img + txt tokens.
    `img`, `txt`: tokens per device (sequence-parallel); dual: SD3.5-Medium's extra image-only
    self-attention (MMDiT-X)."""
    D, F, H, d = spec.d_model, spec.d_ff, spec.n_heads, spec.head_dim
    ops = []
    for stream, t in (("img_", samples * img), ("txt_", samples * txt)):
        ops += [matmul_op(stream + "mod", samples, (9 if dual and stream == "img_" else 6) * D, D, p, count),
                modulated_norm(stream + "norm1", t, D, p, count, engine)]
        ops += _quant(t, 3 * D + F, p, engine, count, inputs=4)  # inputs of qkv, out, fc1 (D) and fc2 (F)
        ops += [matmul_op(stream + "qkv", t, 3 * D, D, p, count)]
        ops += qk_norm_rope(stream + "qk", t, D, p, count, engine)
        ops += [matmul_op(stream + "out", t, D, D, p, count), gated_residual(stream + "res1", t, D, p, count, engine),
                modulated_norm(stream + "norm2", t, D, p, count, engine)]
        ops += mlp_ops(stream, t, D, F, p, count, engine) + [gated_residual(stream + "res2", t, D, p, count, engine)]
    ops += attention_ops("joint_attn", samples, (img + txt) * devices, (img + txt) * devices, H / devices, d, p,
                         count, engine, sparse)
    if dual:
        t = samples * img
        ops += [matmul_op("img_qkv2", t, 3 * D, D, p, count), *qk_norm_rope("img_qk2", t, D, p, count, engine),
                *attention_ops("img_attn2", samples, img * devices, img * devices, H / devices, d, p, count, engine, sparse),
                matmul_op("img_out2", t, D, D, p, count), gated_residual("img_res3", t, D, p, count, engine)]
    return ops


def single_block_ops(spec, samples, tokens, p: Precision, count: int, engine: Engine, sparse=DENSE,
                     devices: int = 1) -> list[Op]:
    """FLUX / HunyuanVideo single-stream block (parallel attention and MLP, Dehghani et al. 2023,
    arXiv 2302.05442): modulation D -> 3D, LayerNorm + modulation, one linear D -> 3D + F, q/k norm +
    RoPE, attention, GELU, linear (D + F) -> D, gated residual."""
    D, F, H, d = spec.d_model, spec.d_ff, spec.n_heads, spec.head_dim
    t = samples * tokens
    return [matmul_op("single_mod", samples, 3 * D, D, p, count), modulated_norm("single_norm", t, D, p, count, engine),
            *_quant(t, 2 * D + F, p, engine, count, inputs=2),
            matmul_op("single_lin1", t, 3 * D + F, D, p, count), *qk_norm_rope("single_qk", t, D, p, count, engine),
            *attention_ops("single_attn", samples, tokens * devices, tokens * devices, H / devices, d, p, count, engine,
                          sparse),
            vector_op("single_gelu", "elementwise", t, F, 2.0, 8.0, _stream(p, engine), count),
            vector_op("single_cat", "concat", t, D + F, 2.0, 0.0, _stream(p, engine), count),
            matmul_op("single_lin2", t, D, D + F, p, count), gated_residual("single_res", t, D, p, count, engine)]


def cross_block_ops(spec, samples, img, txt, p: Precision, count: int, engine: Engine, sparse=DENSE,
                    devices: int = 1) -> list[Op]:
    """PixArt (Chen et al. 2023, arXiv 2310.00426) / Wan 2.1 block: modulated LayerNorm, self-attention
    q/k/v + (Wan) RMSNorm across heads + RoPE, output, gated residual; LayerNorm, cross-attention (q
    from the image tokens, k/v from the txt text tokens), output, residual; modulated LayerNorm,
    MLP, gated residual. The adaLN-single modulation is a table add (no GEMM per block)."""
    D, F, H, d = spec.d_model, spec.d_ff, spec.n_heads, spec.head_dim
    t, c = samples * img, samples * txt
    fp32, separate = spec.family in FP32_MODULATION_FAMILIES, spec.family in SEPARATE_QKV_FAMILIES
    # eager PyTorch quantizes a shared input once per linear reading it (q, k, v of the image
    # tokens; k, v of the text), a compiled block once
    qkv_inputs, text_inputs = (3, 2) if separate and not _fused(engine) else (1, 1)
    # inputs of q/k/v, out, cross_q, cross_out, fc1 (D) and fc2 (F); cross k/v's input is the text
    ops = [modulated_norm("norm1", t, D, p, count, engine, fp32),
           *_quant(t, (4 + qkv_inputs) * D + F, p, engine, count, inputs=5 + qkv_inputs),
           *_quant(c, text_inputs * D, p, engine, count, inputs=text_inputs)]
    if separate:
        ops += [matmul_op(name, t, D, D, p, count) for name in ("q", "k", "v")]
    else:
        ops += [matmul_op("qkv", t, 3 * D, D, p, count)]
    ops += qk_norm_rope("qk", t, D, p, count, engine, rope=spec.family == "wan") if spec.qk_norm or spec.family == "wan" \
        else []
    cross_kv = [matmul_op("cross_k", c, D, D, p, count), matmul_op("cross_v", c, D, D, p, count)] if separate \
        else [matmul_op("cross_kv", c, 2 * D, D, p, count)]
    ops += [*attention_ops("self_attn", samples, img * devices, img * devices, H / devices, d, p, count, engine, sparse),
            matmul_op("out", t, D, D, p, count), gated_residual("res1", t, D, p, count, engine, fp32),
            vector_op("norm2", "norm", t, D, 2.0, 8.0, _stream(p, engine), count),
            matmul_op("cross_q", t, D, D, p, count), *cross_kv,
            *attention_ops("cross_attn", samples, img, txt, H, d, p, count, engine, self_attention=False),
            matmul_op("cross_out", t, D, D, p, count), residual_add("res2", t, D, p, count, engine),
            modulated_norm("norm3", t, D, p, count, engine, fp32), *mlp_ops("", t, D, F, p, count, engine),
            gated_residual("res3", t, D, p, count, engine, fp32)]
    return ops


def cogvideox_block_ops(spec, samples, img, txt, p: Precision, count: int, engine: Engine, sparse=DENSE,
                        devices: int = 1) -> list[Op]:
    """CogVideoX block (Yang et al. 2024, arXiv 2408.06072): one weight set over the text + video
    sequence, expert adaLN (two modulation GEMMs per norm, one per modality), full 3D attention."""
    D, F, H, d = spec.d_model, spec.d_ff, spec.n_heads, spec.head_dim
    tokens = img + txt
    t = samples * tokens
    return [matmul_op("mod", 2 * samples, 12 * D, spec.time_embed_dim, p, count),
            modulated_norm("norm1", t, D, p, count, engine), *_quant(t, 3 * D + F, p, engine, count, inputs=4),
            matmul_op("qkv", t, 3 * D, D, p, count), *qk_norm_rope("qk", t, D, p, count, engine),
            *attention_ops("attn", samples, tokens * devices, tokens * devices, H / devices, d, p, count, engine, sparse),
            matmul_op("out", t, D, D, p, count), gated_residual("res1", t, D, p, count, engine),
            modulated_norm("norm2", t, D, p, count, engine), *mlp_ops("", t, D, F, p, count, engine),
            gated_residual("res2", t, D, p, count, engine)]


def ulysses_comm_time_s(samples, tokens, width, devices: int, count: int, hw: Hardware, act_bytes=2.0) -> object:
    """Sequence-parallel (Ulysses) all-to-alls of one self-attention: 4 (q, k, v, output) of the
    tokens x width a device holds, per layer (Jacobs et al. 2023, arXiv 2309.14509)."""
    if devices <= 1:
        return 0.0
    payload = np.asarray(samples * tokens, float) * width * act_bytes
    return count * 4 * collectives.collective_time_s("all_to_all", payload, devices, hw)


# -- a step -------------------------------------------------------------------------------------------

def _layer_groups(spec, step: DiTStep) -> list[tuple[str, int, Precision]]:
    """(block kind, layers, precision) of the model's blocks: uniform, or per-layer overrides."""
    if step.layer_precision:
        return list(step.layer_precision)
    kinds = (("joint", spec.joint_layers - spec.dual_attention_layers), ("dual", spec.dual_attention_layers),
             ("single", spec.single_layers), ("cross", spec.cross_layers), ("cogvideox", spec.cogvideox_layers))
    return [(k, n, step.precision) for k, n in kinds if n]


def step_op_groups(pipe: DiTPipeline, shape: LatentShape, step: DiTStep) -> list[tuple[list[Op], Precision]]:
    """The ops of one denoising step on one device (tokens split over `devices`), in block order,
    grouped by the precision they run at (per-layer bits: each layer group its own)."""
    spec, n = pipe.dit, step.devices
    if n > 1 and spec.n_heads % n:
        raise DiTError(f"devices: {n} must divide the {spec.n_heads} attention heads of {pipe.name} "
                       "(Ulysses sequence parallelism splits heads in attention)")
    img, txt, s = shape.image_tokens / n, shape.context_tokens, step.samples
    joint_txt = txt / n if spec.family in ("flux", "hunyuan", "sd3", "cogvideox") else txt
    p0, e = step.precision, step.engine
    embed = [matmul_op("patch_embed", s * img, spec.d_model, spec.patch_in_width, p0, 1),
             matmul_op("context_embed", s * joint_txt, spec.d_model, spec.text_dim, p0, 1)]
    builders = {"joint": lambda c, p: joint_block_ops(spec, s, img, joint_txt, p, c, e, step.sparse, n),
                "dual": lambda c, p: joint_block_ops(spec, s, img, joint_txt, p, c, e, step.sparse, n, dual=True),
                "single": lambda c, p: single_block_ops(spec, s, img + joint_txt, p, c, e, step.sparse, n),
                "cross": lambda c, p: cross_block_ops(spec, s, img, txt, p, c, e, step.sparse, n),
                "cogvideox": lambda c, p: cogvideox_block_ops(spec, s, img, joint_txt, p, c, e, step.sparse, n)}
    groups = [(embed, p0)]
    for kind, count, p in _layer_groups(spec, step):
        groups.append((builders[kind](count, p), p))
    groups.append(([modulated_norm("norm_out", s * img, spec.d_model, p0, 1, e),
                    matmul_op("proj_out", s * img, spec.patch_out_width, spec.d_model, p0, 1)], p0))
    return groups


def step_ops(pipe: DiTPipeline, shape: LatentShape, step: DiTStep) -> list[Op]:
    """Every op of one denoising step on one device, in block order."""
    return [op for ops, _ in step_op_groups(pipe, shape, step) for op in ops]


@dataclass(frozen=True)
class StageCost:
    """Time and work of one stage (a denoising step, the text encoders, the VAE decode), with the
    FLOPs, bytes and device time of each op class: the inputs an energy model needs."""

    time_s: float
    device_s: float
    host_s: float
    comm_s: float
    flops: dict = field(default_factory=dict)
    bytes: dict = field(default_factory=dict)
    class_time_s: dict = field(default_factory=dict)
    ops: tuple = ()
    times: tuple = ()
    dynamic_j: float = 0.0


def op_class(kind: str) -> str:
    return kind if kind in ("matmul", "attention", "comm") else ("matmul" if kind == "moe" else "vector")


def price(groups: list[tuple[list[Op], Precision]], hw: Hardware, engine: Engine, extra_host_s: float = 0.0,
          comm_s: float = 0.0, extra_device_s: float = 0.0) -> StageCost:
    """Sum count x op_time over ops (each at its own precision where a layer group sets one: the
    op's bits travel with the group, see step_ops); an eager engine's host dispatch overlaps the
    device (time = max(device, host), as perfmodel.predict settles eager steps); graph replays pay
    none. extra_device_s: device time outside the ops (sparse blocks' bookkeeping)."""
    ops = [op for group, _ in groups for op in group]
    times = [op_time(op, hw, p) for group, p in groups for op in group]
    device = float(sum(op.count * np.sum(t.time_s) for op, t in zip(ops, times))) + comm_s + extra_device_s
    host = float(sum(op.count * np.sum(t.host_s) for op, t in zip(ops, times))) + extra_host_s \
        if not engine.graphed(np.inf) else 0.0
    flops, nbytes, ctime = {c: 0.0 for c in OP_CLASSES}, {c: 0.0 for c in OP_CLASSES}, {c: 0.0 for c in OP_CLASSES}
    for op, t in zip(ops, times):
        c = op_class(op.kind)
        flops[c] += op.count * float(np.sum(op.flops))
        nbytes[c] += op.count * float(np.sum(op.bytes))
        ctime[c] += op.count * float(np.sum(t.time_s))
    ctime["comm"] += comm_s
    ctime["attention"] += extra_device_s
    # the work's own energy (perfmodel.energy), each op on its group's datapath class
    pm = energy.power_model(hw)
    dynamic = float(sum(np.sum(energy.op_dynamic_energy_j(op, p, pm)) for group, p in groups for op in group))
    return StageCost(max(device, host), device, host, comm_s, flops, nbytes, ctime, tuple(ops), tuple(times), dynamic)


def step_cost(pipe: DiTPipeline, shape: LatentShape, hw: Hardware, step: DiTStep) -> StageCost:
    """One denoising step: the transformer's ops priced on `hw`, plus Ulysses all-to-alls, plus
    per-layer Python time for eager engines (Calibration.layer_overhead_s)."""
    groups = step_op_groups(pipe, shape, step)
    ops = [op for group, _ in groups for op in group]
    spec, n = pipe.dit, step.devices
    seq = shape.image_tokens / n + (shape.context_tokens / n if spec.family != "wan" and spec.family != "pixart" else 0)
    comm = ulysses_comm_time_s(step.samples, seq, spec.d_model, n, spec.n_layers + spec.dual_attention_layers, hw)
    layer_host = spec.n_layers * hw.calibration.layer_overhead_s if (step.engine.eager and hw.calibration) else 0.0
    return price(groups, hw, step.engine, extra_host_s=layer_host,
                 comm_s=float(comm), extra_device_s=sparse_block_time_s(ops, step.sparse, hw))


# -- text encoders and VAE -------------------------------------------------------------------------

def text_encoder_ops(enc: TextEncoderSpec, prompts, tokens, p: Precision, engine: Engine) -> list[Op]:
    """One encoder forward over `prompts` x `tokens`: per layer QKV, bidirectional attention (T5 and
    umT5 encoders, CLIP's causal mask costs the same kernel), output, FFN (gated: 3 matrices)."""
    t, D, L = prompts * tokens, enc.d_model, enc.n_layers
    inner, kv = enc.n_heads * enc.head_dim, (enc.kv_heads or enc.n_heads) * enc.head_dim
    up = 2 * enc.d_ff if enc.gated else enc.d_ff
    return [vector_op("enc_norm", "norm", t, D, 2.0 * 2, 4.0, p, L, kernels=2),
            matmul_op("enc_qkv", t, inner + 2 * kv, D, p, L),
            dit_attention_op("enc_attn", prompts, tokens, tokens, enc.n_heads, enc.head_dim, p, L, engine),
            matmul_op("enc_out", t, D, inner, p, L), matmul_op("enc_ffn_up", t, up, D, p, L),
            vector_op("enc_act", "elementwise", t, enc.d_ff, 3.0, 8.0, p, L),
            matmul_op("enc_ffn_down", t, D, enc.d_ff, p, L)]


def vae_decode_ops(vae: VAESpec, samples, height: int, width: int, frames: int, latent_frames: int,
                   p: Precision) -> list[Op]:
    """The decoder's convolutions as implicit GEMMs (positions x c_out over c_in x taps: cuDNN's
    implicit-GEMM convolution), a GroupNorm + SiLU pass before each resnet conv, the mid-block
    self-attention over each frame's positions (one head of the block's width)."""
    ops = []
    for name, positions, c_in, c_out, taps in vae.conv_layers(height, width, frames, latent_frames):
        m = samples * positions
        if name == "mid_attn":
            per_frame = positions / latent_frames
            ops.append(matmul_op("vae_attn_proj", m, 4 * c_out, c_in, p, 1))
            ops.append(Op("vae_attn", "attention", 1, flops=4.0 * c_in * samples * latent_frames * per_frame ** 2,
                          weight_bytes=0.0, act_bytes=4.0 * c_in * m * 2.0, m=m, n=per_frame, k=c_in,
                          groups=samples * latent_frames))
            continue
        ops.append(matmul_op(f"vae_{name}", m, c_out, c_in * taps, p, 1))
        if name in ("resnet", "mid_resnet", "conv_out"):
            ops.append(vector_op(f"vae_{name}_gn_silu", "norm", m, c_in, 4.0, 10.0, p, 1, kernels=2))
    return ops


@dataclass(frozen=True)
class DiTPrediction:
    """A request's predicted costs (seconds, bytes, USD, joules; per device where it says so)."""

    pipeline: str
    hardware: str
    engine: str
    devices: int
    shape: LatentShape
    request: GenerationRequest
    params: int
    step: StageCost
    steps_run: float
    text_encode: StageCost
    vae_decode: StageCost
    memory: dict
    usd_per_hour: float
    power: "energy.PowerModel"

    @property
    def e2e_s(self) -> float:
        return self.text_encode.time_s + self.steps_run * self.step.time_s + self.vae_decode.time_s

    @property
    def usd_per_request(self) -> float:
        return self.e2e_s * self.usd_per_hour * self.devices / 3600.0

    @property
    def usd_per_sample(self) -> float:
        """USD per image, or per video."""
        return self.usd_per_request / self.request.batch

    def stage_energy(self) -> dict:
        """Per stage, (time under the power cap, board power, energy) of one device
        (perfmodel.energy.capped_phase on the stage's time and dynamic energy)."""
        return {name: energy.capped_phase(stage.time_s, stage.dynamic_j, self.power)
                for name, stage in (("text_encode", self.text_encode), ("step", self.step), ("vae_decode", self.vae_decode))}

    @property
    def energy_j(self) -> float:
        """Joules of the request over all devices: text encoders + steps_run denoising steps + VAE
        decode, each at its modelled board power (perfmodel.energy; idle + FLOPs and HBM bytes,
        clipped at the board limit)."""
        e = self.stage_energy()
        return float(self.devices * (e["text_encode"][2] + self.steps_run * e["step"][2] + e["vae_decode"][2]))

    @property
    def e2e_capped_s(self) -> float:
        """End-to-end time under the power cap (equal to e2e_s at the board's own limit)."""
        e = self.stage_energy()
        return float(e["text_encode"][0] + self.steps_run * e["step"][0] + e["vae_decode"][0])

    def to_dict(self) -> dict:
        req, shape = self.request, self.shape
        out = {"model": self.pipeline, "hardware": self.hardware, "engine": self.engine, "devices": self.devices,
               "params": self.params, "height": req.height, "width": req.width, "frames": req.frames,
               "steps": req.steps, "cfg": req.cfg, "batch": req.batch, "latent_frames": shape.latent_frames,
               "image_tokens": shape.image_tokens, "context_tokens": shape.context_tokens,
               "step_s": self.step.time_s, "steps_run": self.steps_run, "text_encode_s": self.text_encode.time_s,
               "vae_decode_s": self.vae_decode.time_s, "e2e_s": self.e2e_s,
               "memory_bytes": dict(self.memory), "fits": bool(self.memory["total"] <= self.memory["capacity"]),
               "usd_per_request": self.usd_per_request,
               ("usd_per_video_s" if req.frames > 1 else "usd_per_image"):
                   self.usd_per_sample / (req.video_s if req.frames > 1 else 1.0),
               "energy_j": self.energy_j, "energy_per_sample_j": self.energy_j / req.batch,
               "avg_power_w": self.energy_j / self.devices / self.e2e_capped_s,
               "step_power_w": float(self.stage_energy()["step"][1]), "power_cap_w": self.power.cap_w,
               "power_model": self.power.source, "e2e_capped_s": self.e2e_capped_s,
               "step_flops": self.step.flops, "step_bytes": self.step.bytes, "step_class_s": self.step.class_time_s}
        return out

    def breakdown(self):
        """Per-op table of one step (one device): flops, bytes, time, bound."""
        import pandas as pd

        rows = []
        for op, t in zip(self.step.ops, self.step.times):
            time_s = op.count * float(np.sum(t.time_s))
            bound = "compute" if np.sum(t.compute_s) >= np.sum(t.memory_s) else "memory"
            rows.append({"op": op.name, "kind": op.kind, "count": op.count, "flops": op.count * float(np.sum(op.flops)),
                         "bytes": op.count * float(np.sum(op.bytes)), "time_s": time_s, "bound": bound})
        frame = pd.DataFrame(rows)
        frame["share"] = frame["time_s"] / max(frame["time_s"].sum(), 1e-30)
        return frame


def memory_bytes(pipe: DiTPipeline, shape: LatentShape, step: DiTStep, req: GenerationRequest,
                 capacity: float) -> dict:
    """Per device: transformer weights at their bits, text encoders and VAE in 16 bits (resident),
    peak activations of a block (residual stream, QKV, attention output, MLP hidden, per sample
    pass: FlashAttention never stores the Tq x Tk scores, so this is O(tokens)), and the VAE's
    largest conv activation (video VAEs decode causally a few frames at a time: vae_temporal
    output frames per chunk)."""
    spec = pipe.dit
    blocks = spec.block_params()
    groups = [(blocks["joint" if kind == "dual" else kind], n, p) for kind, n, p in _layer_groups(spec, step)]
    weights = sum(n * per_layer * float(np.max(p.weight_bytes_per_param)) for per_layer, n, p in groups)
    weights += max(spec.param_count() - sum(n * per_layer for per_layer, n, _ in groups), 0) * 2.0
    encoders = sum(enc.param_count() for enc, _ in pipe.text_encoders) * 2.0
    vae = pipe.vae.param_count() * 2.0
    tokens = step.samples * (shape.image_tokens + shape.context_tokens) / step.devices
    act_bytes = float(np.maximum(step.precision.act_bytes, 2.0))
    activations = tokens * (6 * spec.d_model + spec.d_ff) * act_bytes
    chunk = pipe.vae_temporal if pipe.is_video else 1
    vae_act = 3.0 * req.batch * req.height * req.width * chunk * pipe.vae.channels[0] * 2.0
    total = weights + encoders + vae + max(activations, vae_act)
    return {"weights": weights, "text_encoders": encoders, "vae": vae, "activations": activations,
            "vae_activations": vae_act, "total": total, "capacity": capacity}


def predict_dit(pipe: DiTPipeline, hw: Hardware, req: GenerationRequest | None = None, *,
                engine: str | Engine | None = None, w_bits=16, a_bits=16, devices: int = 1,
                sparse: SparseAttention = DENSE, layer_precision: tuple = (),
                power_cap_w: float | None = None) -> DiTPrediction:
    """Predict one generation request of `pipe` on `devices` devices of `hw`.

    steps_run = steps x (1 - cached_fraction): a cached step reuses that fraction of block outputs
    (FORA / TeaCache-style step caching), so it pays the rest of the step."""
    req = req or pipe.request()
    engine = dit_engine(engine)
    if not isinstance(devices, int) or isinstance(devices, bool) or not 1 <= devices <= hw.devices_per_node:
        raise DiTError(f"devices: {devices!r} must be a whole number from 1 to {hw.devices_per_node} "
                       f"(devices per node of {hw.name})")
    shape = latent_shape(pipe, req)
    p = Precision(w_bits, a_bits, a_bits)
    step = DiTStep(samples=req.batch * req.cfg_passes, precision=p, engine=engine, devices=devices, sparse=sparse,
                   layer_precision=layer_precision)
    p16 = Precision(16, 16, 16)
    enc_ops = []
    for enc, tokens in pipe.text_encoders:
        enc_ops += text_encoder_ops(enc, req.batch * req.cfg_passes, tokens, p16, engine)
    vae_ops = vae_decode_ops(pipe.vae, req.batch, req.height, req.width, req.frames, shape.latent_frames, p16)
    return DiTPrediction(
        pipeline=pipe.name, hardware=hw.name, engine=engine.name, devices=devices, shape=shape, request=req,
        params=pipe.dit.param_count(), step=step_cost(pipe, shape, hw, step),
        steps_run=req.steps * (1.0 - req.cached_fraction),
        text_encode=price([(enc_ops, p16)], hw, engine), vae_decode=price([(vae_ops, p16)], hw, engine),
        memory=memory_bytes(pipe, shape, step, req, hw.hbm_capacity_bytes), usd_per_hour=hw.price_per_hour_usd,
        power=energy.power_model(hw, power_cap_w))
