"""Model descriptors read from Hugging Face config.json files (never from the network).

`ModelSpec` holds the shapes the cost model needs, in the project's dimension alphabet:
L layers, D model width, F FFN width, H query heads, K kv heads, d head dim, V vocab, E experts.
Parameter counts are exact (every weight, bias and norm), so they can be checked against published
counts (tests/workloads).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hardware import inputs


class ModelError(ValueError):
    """A config that cannot be read as a supported architecture; the message names the field."""


#: HF `model_type` values we read, mapped to the family reader.
#: Largest value of any shape field (layers, widths, heads, vocab, context): far above any real model,
#: small enough that products of shapes stay exact in float64.
MAX_SHAPE = 10**8

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "mixtral", "qwen3_moe", "deepseek_v3", "opt", "falcon", "gpt2")


@dataclass(frozen=True)
class ModelSpec:
    """Shapes of a decoder-only transformer (dense, MoE, GQA/MQA, MLA).

    Counts are per model; `n_moe_layers` of the `n_layers` use experts, the rest a dense FFN of
    width `d_ff`. MLA models (DeepSeek-V2/V3) set `kv_lora_rank` > 0 and cache one latent of
    `kv_lora_rank + qk_rope_head_dim` elements per token per layer instead of K and V heads.
    `v_head_dim` is MLA's value width, and for MHA/GQA a value head narrower (or wider) than the
    query-key head (MiMo-V2-Flash: head_dim 192, v_head_dim 128); 0 there means head_dim.
    """

    name: str
    family: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    vocab_size: int
    ffn_gated: bool = True
    tied_embeddings: bool = False
    max_context: int = 4096
    norm: str = "rms"                  # "rms" (weight only) | "layer" (weight and bias)
    norms_per_layer: int = 2
    qkv_bias: bool = False
    out_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    learned_positions: int = 0         # rows of a learned position table (OPT, GPT-2)
    embed_proj_dim: int = 0            # OPT-350m style projection of embeddings (0 = none)
    # mixture of experts
    n_experts: int = 0
    top_k: int = 0
    moe_d_ff: int = 0
    n_shared_experts: int = 0
    shared_d_ff: int = 0               # total width of the shared expert(s)
    n_dense_layers: int = 0            # leading layers with a dense FFN (DeepSeek first_k_dense_replace)
    router_bias: bool = False          # DeepSeek-V3 e_score_correction_bias
    # multi-head latent attention
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int) or value < 0
                                    or value > MAX_SHAPE):
                raise ModelError(f"{self.name}: {f.name} = {value!r} must be a whole number from 0 to {MAX_SHAPE:,}")
        for name in ("n_layers", "d_model", "n_heads", "n_kv_heads", "head_dim", "vocab_size", "d_ff"):
            if getattr(self, name) == 0 and not (name == "d_ff" and self.n_dense_layers == 0 and self.is_moe):
                raise ModelError(f"{self.name}: {name} must be positive, got 0")
        if self.n_heads % self.n_kv_heads:
            raise ModelError(f"{self.name}: n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if self.is_moe and not (0 < self.top_k <= self.n_experts and self.moe_d_ff > 0):
            raise ModelError(f"{self.name}: MoE needs 0 < top_k <= n_experts and moe_d_ff > 0 "
                             f"(top_k={self.top_k}, n_experts={self.n_experts}, moe_d_ff={self.moe_d_ff})")
        if self.n_dense_layers > self.n_layers:
            raise ModelError(f"{self.name}: first_k_dense_replace (n_dense_layers) = {self.n_dense_layers} exceeds "
                             f"the {self.n_layers} layers; allowed 0 to {self.n_layers}")
        if self.norm not in ("rms", "layer"):
            raise ModelError(f"{self.name}: norm {self.norm!r} must be 'rms' or 'layer'")

    # -- named constructors -------------------------------------------------------------------
    @classmethod
    def from_hf_config(cls, config: str | Path | dict, name: str | None = None) -> "ModelSpec":
        """Read an HF config.json (a path or the parsed dict). Never touches the network."""
        if isinstance(config, (str, Path)):
            path = Path(config)
            try:
                data = inputs.load_json(path, "model config")
            except inputs.InputError as err:
                raise ModelError(str(err)) from None
            name = name or (path.parent.name if path.stem == "config" else path.stem)
        else:
            data = config
        if not isinstance(data, dict):
            raise ModelError(f"model config: expected a JSON object of fields (HF config.json), got "
                             f"{type(data).__name__}")
        family = data.get("model_type")
        if not isinstance(family, str) or family not in _READERS:
            raise ModelError(f"model_type: unknown architecture {family!r}; supported: {', '.join(FAMILIES)}")
        fields = _READERS[family](_Config(data, name or family))
        name = name or str(data.get("_name_or_path") or family)
        return cls(name=name[:200], family=family, **fields)

    # -- derived shapes -----------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def n_moe_layers(self) -> int:
        return self.n_layers - self.n_dense_layers if self.is_moe else 0

    @property
    def n_dense_ffn_layers(self) -> int:
        return self.n_layers - self.n_moe_layers

    @property
    def gqa_group(self) -> int:
        """Query heads per kv head (r in Kinetics)."""
        return self.n_heads // self.n_kv_heads

    @property
    def q_dim(self) -> int:
        """Width of the query projection output (H * d, or H * (nope + rope) for MLA)."""
        return self.n_heads * (self.qk_nope_head_dim + self.qk_rope_head_dim if self.is_mla else self.head_dim)

    @property
    def value_head_dim(self) -> int:
        """Width of one value head: `v_head_dim` where the config gives one (MLA always; an
        asymmetric MHA/GQA head such as MiMo-V2-Flash's 192 / 128), else head_dim."""
        return self.v_head_dim or self.head_dim

    @property
    def kv_elements_per_token(self) -> int:
        """KV-cache elements per token per layer: K (d + d_v) (K and V heads; 2 K d where they are
        alike), or the MLA latent kv_lora + rope."""
        if self.is_mla:
            return self.kv_lora_rank + self.qk_rope_head_dim
        return self.n_kv_heads * (self.head_dim + self.value_head_dim)

    # -- parameter counts (exact) -----------------------------------------------------------------
    def attention_params(self) -> int:
        """Weights and biases of one attention block (projections, QK-norm, MLA norms)."""
        D, H, K, d = self.d_model, self.n_heads, self.n_kv_heads, self.head_dim
        if self.is_mla:
            qk = self.qk_nope_head_dim + self.qk_rope_head_dim
            q = (D * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * H * qk) if self.q_lora_rank else D * H * qk
            kv = D * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank \
                + self.kv_lora_rank * H * (self.qk_nope_head_dim + self.v_head_dim)
            return q + kv + H * self.v_head_dim * D
        v = self.value_head_dim  # q and k heads d wide, v heads v wide (the output projection reads H v)
        weights = D * ((H + K) * d + K * v) + H * v * D
        biases = ((H + K) * d + K * v) * self.qkv_bias + D * self.out_bias
        return weights + biases + 2 * d * self.qk_norm

    def ffn_params(self, width: int) -> int:
        """One dense FFN of inner width `width`: gated (gate, up, down) or not (up, down)."""
        mats = 3 if self.ffn_gated else 2
        bias = ((mats - 1) * width + self.d_model) * self.mlp_bias
        return mats * self.d_model * width + bias

    def moe_params(self) -> int:
        """One MoE block: router (+ correction bias), routed experts, shared expert(s)."""
        router = self.d_model * self.n_experts + self.n_experts * self.router_bias
        shared = self.ffn_params(self.shared_d_ff) if self.shared_d_ff else 0
        return router + self.n_experts * self.ffn_params(self.moe_d_ff) + shared

    def norm_params(self) -> int:
        return self.d_model * (2 if self.norm == "layer" else 1)

    def embedding_params(self) -> int:
        """Token table, learned positions, embedding projections and an untied LM head."""
        width = self.embed_proj_dim or self.d_model
        proj = 2 * self.d_model * self.embed_proj_dim if self.embed_proj_dim else 0
        head = 0 if self.tied_embeddings else self.vocab_size * width
        return self.vocab_size * width + self.learned_positions * self.d_model + proj + head

    def layer_params(self) -> int:
        """All parameters in the decoder layers (attention, FFN or MoE, per-layer norms)."""
        per_layer = self.attention_params() + self.norms_per_layer * self.norm_params()
        return (self.n_layers * per_layer + self.n_dense_ffn_layers * self.ffn_params(self.d_ff)
                + self.n_moe_layers * (self.moe_params() if self.is_moe else 0))

    def param_count(self) -> int:
        """Total parameters, exactly as a checkpoint stores them (tied weights counted once)."""
        return self.layer_params() + self.embedding_params() + self.norm_params()

    def active_param_count(self) -> int:
        """Parameters touched per token: MoE layers count only top_k routed experts."""
        if not self.is_moe:
            return self.param_count()
        idle = self.n_moe_layers * (self.n_experts - self.top_k) * self.ffn_params(self.moe_d_ff)
        return self.param_count() - idle

    def kv_bytes_per_token(self, kv_bits: float = 16) -> float:
        """KV-cache bytes per token over all layers: 2 L K d bits/8 (Yao Fu 2024, arXiv 2405.08944)."""
        return self.n_layers * self.kv_elements_per_token * kv_bits / 8

    def summary(self) -> dict:
        return {
            "name": self.name, "family": self.family, "params": self.param_count(),
            "active_params": self.active_param_count(), "layers": self.n_layers, "d_model": self.d_model,
            "heads": self.n_heads, "kv_heads": self.n_kv_heads, "head_dim": self.head_dim,
            "d_ff": self.d_ff, "experts": self.n_experts, "top_k": self.top_k, "vocab": self.vocab_size,
            "max_context": self.max_context, "kv_bytes_per_token_bf16": self.kv_bytes_per_token(16),
        }


class _Config:
    """Typed access to an HF config dict with errors that name the field."""

    def __init__(self, data: dict, name: str):
        self.data, self.name = data, name

    def int(self, *keys: str, default: Any = ...) -> int:
        for key in keys:
            if key in self.data and self.data[key] is not None:
                value = self.data[key]
                if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_SHAPE:
                    shown = value if not isinstance(value, int) or abs(value) < 10**30 else f"a {len(str(value))}-digit number"
                    raise ModelError(f"{self.name}: {key} = {shown!r} must be a whole number from 1 to {MAX_SHAPE:,}")
                return value
        if default is ...:
            raise ModelError(f"{self.name}: config is missing {' / '.join(keys)}")
        return default

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ModelError(f"{self.name}: {key} = {value!r} must be true or false")
        return value


def _llama_like(c: _Config, qkv_bias: bool = False, qk_norm: bool = False) -> dict:
    D = c.int("hidden_size")
    H = c.int("num_attention_heads")
    return dict(
        n_layers=c.int("num_hidden_layers"), d_model=D, n_heads=H,
        n_kv_heads=c.int("num_key_value_heads", default=H),
        head_dim=c.int("head_dim", default=D // H), d_ff=c.int("intermediate_size"),
        vocab_size=c.int("vocab_size"), tied_embeddings=c.flag("tie_word_embeddings", False),
        max_context=c.int("max_position_embeddings", default=4096),
        qkv_bias=c.flag("attention_bias", qkv_bias), out_bias=c.flag("attention_bias", False),
        mlp_bias=c.flag("mlp_bias", False), qk_norm=qk_norm,
        # a value head of its own width where the config gives one (else head_dim: 0)
        v_head_dim=c.int("v_head_dim", default=0),
    )


def _qwen2(c: _Config) -> dict:
    # Qwen2 has biases on q, k, v but not on o (modeling_qwen2); config carries no flag for it.
    return {**_llama_like(c), "qkv_bias": True, "out_bias": False}


def _qwen3(c: _Config) -> dict:
    return _llama_like(c, qk_norm=True)


def _mixtral(c: _Config) -> dict:
    base = _llama_like(c)
    return {**base, "n_experts": c.int("num_local_experts"), "top_k": c.int("num_experts_per_tok"),
            "moe_d_ff": base["d_ff"]}


def _qwen3_moe(c: _Config) -> dict:
    base = _llama_like(c, qk_norm=True)
    if c.data.get("mlp_only_layers") or c.int("decoder_sparse_step", default=1) != 1:
        raise ModelError(f"{c.name}: mlp_only_layers / decoder_sparse_step other than every layer is not supported")
    return {**base, "n_experts": c.int("num_experts"), "top_k": c.int("num_experts_per_tok"),
            "moe_d_ff": c.int("moe_intermediate_size")}


def _deepseek_v3(c: _Config) -> dict:
    base = _llama_like(c)
    moe_d_ff = c.int("moe_intermediate_size")
    shared = c.int("n_shared_experts", default=0) if c.data.get("n_shared_experts") else 0
    if c.int("moe_layer_freq", default=1) != 1:
        raise ModelError(f"{c.name}: moe_layer_freq other than 1 is not supported")
    return {
        **base, "head_dim": c.int("v_head_dim"),
        "n_experts": c.int("n_routed_experts"), "top_k": c.int("num_experts_per_tok"),
        "moe_d_ff": moe_d_ff, "n_shared_experts": shared, "shared_d_ff": shared * moe_d_ff,
        "n_dense_layers": c.int("first_k_dense_replace", default=0) if c.data.get("first_k_dense_replace") else 0,
        "router_bias": c.data.get("topk_method") == "noaux_tc",
        "q_lora_rank": c.int("q_lora_rank", default=0), "kv_lora_rank": c.int("kv_lora_rank"),
        "qk_nope_head_dim": c.int("qk_nope_head_dim"), "qk_rope_head_dim": c.int("qk_rope_head_dim"),
        "v_head_dim": c.int("v_head_dim"),
    }


def _opt(c: _Config) -> dict:
    D = c.int("hidden_size")
    H = c.int("num_attention_heads")
    proj = c.int("word_embed_proj_dim", default=D)
    bias = c.flag("enable_bias", True)
    if not c.flag("do_layer_norm_before", True):
        raise ModelError(f"{c.name}: do_layer_norm_before = false (OPT-350m post-norm) is not supported")
    return dict(
        n_layers=c.int("num_hidden_layers"), d_model=D, n_heads=H, n_kv_heads=H, head_dim=D // H,
        d_ff=c.int("ffn_dim"), vocab_size=c.int("vocab_size"), ffn_gated=False,
        tied_embeddings=c.flag("tie_word_embeddings", True),
        # OPT's learned position table has 2 extra rows (an offset kept from fairseq).
        max_context=c.int("max_position_embeddings"), learned_positions=c.int("max_position_embeddings") + 2,
        embed_proj_dim=0 if proj == D else proj, norm="layer",
        qkv_bias=bias, out_bias=bias, mlp_bias=bias,
    )


def _falcon(c: _Config) -> dict:
    D = c.int("hidden_size")
    H = c.int("num_attention_heads", "n_head")
    new_arch = c.flag("new_decoder_architecture", False)
    if new_arch:
        K = c.int("num_kv_heads", "n_head_kv", default=H)
    else:
        K = 1 if c.flag("multi_query", True) else H
    parallel = c.flag("parallel_attn", True)
    bias = c.flag("bias", False)
    return dict(
        n_layers=c.int("num_hidden_layers", "n_layer"), d_model=D, n_heads=H, n_kv_heads=K, head_dim=D // H,
        d_ff=c.int("ffn_hidden_size", default=4 * D), vocab_size=c.int("vocab_size"), ffn_gated=False,
        tied_embeddings=c.flag("tie_word_embeddings", True),
        max_context=c.int("max_position_embeddings", default=2048), norm="layer",
        # Falcon-7B's parallel block shares one layernorm; the new architecture has two.
        norms_per_layer=2 if (new_arch or not parallel) else 1,
        qkv_bias=bias, out_bias=bias, mlp_bias=bias,
    )


def _gpt2(c: _Config) -> dict:
    D = c.int("n_embd")
    H = c.int("n_head")
    return dict(
        n_layers=c.int("n_layer"), d_model=D, n_heads=H, n_kv_heads=H, head_dim=D // H,
        d_ff=c.int("n_inner", default=4 * D), vocab_size=c.int("vocab_size"), ffn_gated=False,
        tied_embeddings=c.flag("tie_word_embeddings", True), max_context=c.int("n_positions", "n_ctx"),
        learned_positions=c.int("n_positions", "n_ctx"), norm="layer",
        qkv_bias=True, out_bias=True, mlp_bias=True,
    )


_READERS: dict[str, Callable[[_Config], dict]] = {
    "llama": _llama_like, "mistral": _llama_like, "qwen2": _qwen2, "qwen3": _qwen3,
    "mixtral": _mixtral, "qwen3_moe": _qwen3_moe, "deepseek_v3": _deepseek_v3,
    "opt": _opt, "falcon": _falcon, "gpt2": _gpt2,
}
