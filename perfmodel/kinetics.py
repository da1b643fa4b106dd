"""Kinetics test-time-scaling cost: compute + I x memory ("eFLOPs") for best-of-N and long CoT.

Sadhukhan, Chen et al., "Kinetics: Rethinking Test-Time Scaling Laws" (arXiv 2506.05333; formulas
as in their repo Infini-AI-Lab/Kinetics, cost_model/utils.py). For one request with Lin prompt
tokens, N samples of Lout generated tokens each, P parameters, r = query heads / kv heads and
D = 2 K d L KV elements per token:

    C = 2 P Lout N                          linear layers
      + 2 r N Lin D Lout + r N D Lout^2     attention compute (QK^T and PV)
      + I (2 Lin D Lout + N D Lout^2)       KV reads in bf16; the prompt's KV is shared by the N samples

I is the device's arithmetic intensity (peak FLOP/s over memory bytes/s); the paper uses 562.5
(B200). Weight reads are left out: a large serving batch amortises them. Best-of-N is N > 1;
long chain-of-thought is N = 1 with large Lout; both are the same formula.

Here the formula is written per token pair so it holds for MLA too: attention FLOPs per
(query token, cached token) pair over all layers = 2 L H (qk_dim + v_dim), which is 2 r D for GQA;
KV bytes per cached token = `ModelSpec.kv_bytes_per_token(kv_bits)`, which is 2 D in bf16. Sums
over decode steps are integrals (sum over t of Lin + t ~ Lin Lout + Lout^2 / 2), as in the paper.

Block top-k sparse attention (Kinetics' sparse scaling; Quest, arXiv 2406.10774): the cache is split into
blocks of `block_size` tokens, each with one representative key; a decode step scores every block
against the query, keeps a budget of B = local + block_size * topk tokens and attends to
min(context, B) of them. Selection costs one key's dot product per block per query head and the
reads of the representative keys (shared across samples for the prompt's blocks); the attended KV
is not shared across samples (each sample selects its own blocks).

Parameter counts: the paper uses 0.752, 2.03, 4.02, 8.19, 14.77, 32.76 B for Qwen3 0.6B..32B
(repo cost_model/*/cost_model_*.py `model_sizes`), the Hugging Face safetensors totals. The 0.6B and
1.7B checkpoints store the tied LM head a second time, so those totals count the 151,936 x d_model
embedding twice (0.752B vs the exact 596,049,920 unique parameters); the 4B checkpoint does not.
`ModelSpec.active_param_count()` gives the exact count and is the default here; pass
`params=KINETICS_PARAMS[name]` to reproduce the paper's numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hardware.spec import Hardware
from perfmodel import rates, shapes
from perfmodel.ops import Op, Precision, attention_op
from workloads.model import ModelSpec

#: Arithmetic intensity (FLOP per byte) the Kinetics repo uses for eFLOPs: E_flops = 562.5, "B200";
#: equal to 4.5 PFLOP/s (B200 dense FP8, NVIDIA datasheet) over 8 TB/s of HBM3e.
B200_INTENSITY = 562.5

#: Parameter counts the Kinetics repo uses for Qwen3 (`model_sizes`, in units of 1e9), keyed by our
#: catalog names. See the module docstring for why 0.6B and 1.7B differ from the exact counts.
KINETICS_PARAMS = {"qwen3-0.6b": 0.752e9, "qwen3-1.7b": 2.03e9, "qwen3-4b": 4.02e9, "qwen3-8b": 8.19e9,
                   "qwen3-14b": 14.77e9, "qwen3-32b": 32.76e9}


class KineticsError(ValueError):
    """A cost request with an impossible value; the message names the field and the value."""


# -- validation at the edge of every public function ---------------------------------------------
def _array(value, name: str, low: float = 0.0, strict: bool = False, integer: bool = False):
    """`value` as a float array, or KineticsError naming `name` if any entry is NaN, infinite,
    below `low` (or equal to it when `strict`), or not a whole number when `integer`."""
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise KineticsError(f"{name}: {value!r} is not a number") from None
    bad = ~np.isfinite(arr) | ((arr <= low) if strict else (arr < low))
    if integer:
        bad |= np.isfinite(arr) & (arr != np.round(arr))
    if np.any(bad):
        shown = float(arr[bad].flat[0]) if arr.ndim else arr.item()
        rule = f"greater than {low:g}" if strict else f"at least {low:g}"
        raise KineticsError(f"{name}: {shown!r} must be a finite {'whole ' if integer else ''}number {rule}")
    return arr


def check_context(model: ModelSpec, prompt, gen) -> None:
    """Raise KineticsError when prompt + gen exceeds the model's maximum context."""
    total = np.asarray(prompt, dtype=float) + np.asarray(gen, dtype=float)
    if np.any(total > model.max_context):
        raise KineticsError(f"prompt + gen: {float(np.max(total)):g} tokens exceeds {model.name}'s maximum "
                            f"context of {model.max_context} tokens")


# -- per-token model quantities ----------------------------------------------------------------
def pair_flops(model: ModelSpec) -> float:
    """Attention FLOPs per (query token, cached token) pair over all layers: 2 L H (qk_dim + v_dim)
    (QK^T and PV, 2 FLOPs per multiply-add). Equals Kinetics' 2 r D for GQA (D = 2 K d L)."""
    qk, v = shapes.attention_dims(model)   # absorbed MLA: latent + rope keys, kv_lora values
    return 2.0 * model.n_layers * model.n_heads * (qk + v)


def score_flops_per_block(model: ModelSpec) -> float:
    """FLOPs to score one representative key against every query head, over all layers: 2 L H qk_dim."""
    qk, _ = shapes.attention_dims(model)
    return 2.0 * model.n_layers * model.n_heads * qk


def key_bytes_per_token(model: ModelSpec, kv_bits=16):
    """Bytes of the keys alone per token over all layers (MLA: the whole latent acts as the key)."""
    elems = model.kv_elements_per_token if model.is_mla else model.n_kv_heads * model.head_dim
    return model.n_layers * elems * np.asarray(kv_bits, dtype=float) / 8


def intensity(hw: Hardware, dtype: str = "bf16", calibrated: bool = True) -> float:
    """Arithmetic intensity I = FLOP/s / memory bytes/s of a device (FLOP per byte), the factor that
    turns bytes into eFLOPs. Calibrated (measured) rates win over datasheet peaks when present."""
    flops, bandwidth = _rates(hw, dtype, calibrated)
    return flops / bandwidth


def _rates(hw: Hardware, dtype: str, calibrated: bool) -> tuple[float, float]:
    return rates.matmul_flops_per_s(hw, dtype, calibrated), rates.memory_bytes_per_s(hw, calibrated)


# -- token sums over a generation ------------------------------------------------------------------
def attended_tokens(prompt, gen, budget=0):
    """Cached tokens read over a generation, summed over its decode steps (per sample).

    Dense (budget 0): integral of (Lin + t) dt over t in [0, Lout] = Lin Lout + Lout^2 / 2.
    Sparse: integral of min(Lin + t, B) = Lin e + e^2 / 2 + (Lout - e) B with e = clip(B - Lin, 0, Lout),
    which is Kinetics' B Lout - (B - Lin)^2 / 2 when Lin < B < Lin + Lout and the dense value when
    B >= Lin + Lout (the repo's form is used only inside that range).
    """
    prompt, gen, budget = (np.asarray(x, dtype=float) for x in (prompt, gen, budget))
    dense = prompt * gen + gen ** 2 / 2
    e = np.clip(budget - prompt, 0.0, gen)
    sparse = prompt * e + e ** 2 / 2 + (gen - e) * budget
    return np.where(budget > 0, sparse, dense)


def mean_blocks(prompt, gen, block_size):
    """Mean number of blocks scored per decode step: (Lin + Lout / 2) / block_size."""
    return (np.asarray(prompt, float) + np.asarray(gen, float) / 2) / np.asarray(block_size, float)


def block_topk_budget(local, block_size, topk):
    """Tokens attended by block top-k: local window + block_size * topk (as the Kinetics repo sets it)."""
    return np.asarray(local, float) + np.asarray(block_size, float) * np.asarray(topk, float)


# -- the cost itself ------------------------------------------------------------------------------
@dataclass(frozen=True)
class KineticsCost:
    """Kinetics cost terms of one request (arrays broadcast over the inputs). FLOPs and bytes.

    linear_flops: 2 P Lout N; attention_flops: QK^T + PV over the attended tokens; selection_flops:
    block scoring (0 for dense); kv_read_bytes: KV-cache reads; selection_read_bytes: reads of the
    representative keys (0 for dense).
    """

    linear_flops: object
    attention_flops: object
    selection_flops: object
    kv_read_bytes: object
    selection_read_bytes: object

    @property
    def compute_flops(self):
        return self.linear_flops + self.attention_flops + self.selection_flops

    @property
    def memory_bytes(self):
        return self.kv_read_bytes + self.selection_read_bytes

    def efflops(self, intensity: float = B200_INTENSITY):
        """eFLOPs = C_comp + I C_mem (the Kinetics cost model)."""
        return self.compute_flops + _array(intensity, "intensity", strict=True) * self.memory_bytes

    def attention_to_linear(self, intensity: float = B200_INTENSITY):
        """Exact ratio of everything attention costs (compute, KV and selection reads) to the linear
        layers' FLOPs; see `phi` for the paper's closed form."""
        return (self.efflops(intensity) - self.linear_flops) / self.linear_flops

    def device_seconds(self, hw: Hardware, dtype: str = "bf16", calibrated: bool = True):
        """Idealized runtime on `hw`: C_comp / FLOP/s + C_mem / bytes/s, which is eFLOPs / FLOP/s when
        I = the device's intensity. Additive, as Kinetics models it (linear layers are compute-bound,
        attention memory-bound, and they run as separate kernels). Device-seconds per request at a
        full batch; not a latency. The same hardware for every model makes this the idealized-runtime
        metric for comparing models."""
        flops, bandwidth = _rates(hw, dtype, calibrated)
        return self.compute_flops / flops + self.memory_bytes / bandwidth

    def dollars(self, hw: Hardware, dtype: str = "bf16", calibrated: bool = True):
        """Device-seconds priced at the device's rental rate (USD per hour / 3600)."""
        return self.device_seconds(hw, dtype, calibrated) * hw.price_per_hour_usd / 3600.0

    def to_frame(self, intensity: float = B200_INTENSITY):
        import pandas as pd

        cols = {"linear_flops": self.linear_flops, "attention_flops": self.attention_flops,
                "selection_flops": self.selection_flops, "kv_read_bytes": self.kv_read_bytes,
                "selection_read_bytes": self.selection_read_bytes, "compute_flops": self.compute_flops,
                "memory_bytes": self.memory_bytes, "efflops": self.efflops(intensity),
                "attention_to_linear": self.attention_to_linear(intensity)}
        shape = np.broadcast_shapes(*(np.shape(v) for v in cols.values()))
        return pd.DataFrame({k: np.broadcast_to(v, shape).reshape(-1) for k, v in cols.items()})


def kinetics_cost(model: ModelSpec, prompt, gen, samples=1, *, params=None, kv_bits=16, sparse_budget=0,
                  block_size=16, shared_prefix: bool = True) -> KineticsCost:
    """Kinetics cost of one request: `samples` (N) samples of `gen` (Lout) tokens after a `prompt`
    (Lin) of tokens. All numeric arguments broadcast (a sweep is one call).

    params: parameter count P (default: the model's exact active count; see KINETICS_PARAMS).
    kv_bits: KV-cache precision (the paper: 16). sparse_budget: block top-k budget B in tokens
    (0 = dense); block_size: tokens per block, one representative key each.
    shared_prefix: the N samples read the prompt's KV once per step (the paper's assumption, e.g.
    cascade / prefix-shared attention); False reads it once per sample.
    """
    prompt = _array(prompt, "prompt", integer=True)
    gen = _array(gen, "gen", low=0.0, strict=True, integer=True)
    samples = _array(samples, "samples", low=1.0, integer=True)
    kv_bits = _array(kv_bits, "kv_bits", strict=True)
    budget = _array(sparse_budget, "sparse_budget")
    block = _array(block_size, "block_size", low=1.0)
    P = _array(model.active_param_count() if params is None else params, "params", strict=True)
    check_context(model, prompt, gen)

    kv_token = model.kv_bytes_per_token(kv_bits)
    prompt_readers = 1.0 if shared_prefix else samples
    sparse = budget > 0
    tokens = attended_tokens(prompt, gen, budget)
    dense_reads = kv_token * gen * (prompt * prompt_readers + samples * gen / 2)
    kv_reads = np.where(sparse, samples * kv_token * tokens, dense_reads)
    scored = gen * mean_blocks(prompt, gen, block)
    selection_flops = np.where(sparse, samples * scored * score_flops_per_block(model), 0.0)
    key_reads = key_bytes_per_token(model, kv_bits) * gen * (prompt * prompt_readers + samples * gen / 2) / block
    return KineticsCost(
        linear_flops=2.0 * P * gen * samples,
        attention_flops=samples * pair_flops(model) * tokens,
        selection_flops=selection_flops,
        kv_read_bytes=kv_reads,
        selection_read_bytes=np.where(sparse, key_reads, 0.0),
    )


def phi(model: ModelSpec, prompt, gen, *, params=None, intensity: float = B200_INTENSITY, kv_bits=16):
    """The paper's attention-to-linear cost ratio, Phi = [2 r Lin D + (r D + I D) Lout] / (2 P).

    Written per token pair: [F Lin + (F / 2 + I b / 2) Lout] / (2 P), with F = `pair_flops` and b the
    KV bytes per token (F = 2 r D, b = 2 D in bf16). The closed form leaves out the prompt's KV reads
    (2 I Lin D), which best-of-N amortises over its samples; `KineticsCost.attention_to_linear` keeps
    every term.
    """
    prompt = _array(prompt, "prompt", integer=True)
    gen = _array(gen, "gen", strict=True, integer=True)
    P = _array(model.active_param_count() if params is None else params, "params", strict=True)
    I = _array(intensity, "intensity", strict=True)
    F, b = pair_flops(model), model.kv_bytes_per_token(_array(kv_bits, "kv_bits", strict=True))
    return (F * prompt + (F / 2 + I * b / 2) * gen) / (2 * P)


# -- block top-k sparse decode attention as roofline ops (what a GPU kernel sequence does) --------
#: Bytes per int64 block index; scores are written in fp32 (torch matmul of bf16 then a float sum).
_INDEX_BYTES, _SCORE_BYTES = 8, 4


def sparse_attention_ops(model: ModelSpec, seqs, context, budget, block_size, p: Precision, tp=1,
                         materialized_gather: bool = True) -> list[Op]:
    """One layer of block top-k sparse decode attention as roofline ops (count 1 each).

    score: one representative key per block against the query heads (a GEMV: reads the
        representative keys, writes scores; 2 kernels: the group's summed query, then the GEMV).
    topk: reads scores of every block, writes indices (1 kernel).
    gather: copies the selected blocks' K and V into a contiguous buffer: it reads and writes
        budget x KV bytes, so a materialized gather moves 2x the data a fused paged kernel would
        (`materialized_gather=False` models a kernel that reads selected blocks in place: no op).
    attention: dense attention over the min(context, budget) selected tokens (`attention_op`).
    Derivation: the bytes each kernel must move at least; no efficiency factor is fitted.
    """
    seqs, context = np.asarray(seqs, float), np.asarray(context, float)
    budget, block_size = np.asarray(budget, float), np.asarray(block_size, float)
    kv_heads = float(shapes.kv_heads_per_device(model, tp))
    heads = shapes.query_heads_per_device(model, tp)
    qk, _ = shapes.attention_dims(model)
    blocks = np.ceil(context / block_size)
    kept = np.minimum(context, budget)
    kv_elems = shapes.kv_elements_per_token_per_layer_per_device(model, tp)
    key_elems = model.kv_elements_per_token if model.is_mla else kv_elems / 2   # keys: half of K and V
    score = Op("block_score", "attention", 1, flops=2.0 * seqs * heads * blocks * qk, weight_bytes=0.0,
               act_bytes=seqs * (heads * qk * p.act_bytes + kv_heads * blocks * _SCORE_BYTES),
               kv_bytes=seqs * blocks * key_elems * p.kv_bytes, kernels=2, m=seqs * heads, n=blocks, k=qk)
    selected = np.ceil(kept / block_size)
    topk = Op("block_topk", "elementwise", 1, flops=seqs * kv_heads * blocks * np.log2(np.maximum(selected, 2)),
              weight_bytes=0.0, act_bytes=seqs * kv_heads * (blocks * _SCORE_BYTES + selected * _INDEX_BYTES))
    gathered = seqs * kept * kv_elems * p.kv_bytes
    gather = Op("kv_gather", "elementwise", 1, flops=0.0, weight_bytes=0.0, act_bytes=0.0,
                kv_bytes=2.0 * gathered, kernels=2 if not model.is_mla else 1)
    attn = attention_op(model, seqs=seqs, new_tokens=1.0, past=kept - 1.0, p=p, tp=tp)
    attn = Op("sparse_attention", "attention", 1, flops=attn.flops, weight_bytes=0.0, act_bytes=attn.act_bytes,
              kv_bytes=attn.kv_bytes, m=attn.m, n=attn.n, k=attn.k)
    return [score, topk] + ([gather] if materialized_gather else []) + [attn]
