"""Diffusion transformers (DiTs) read from diffusers `config.json` files (never from the network),
their text encoders and VAE decoders as separate stages, and the generation request -> latent tokens.

Architectures (diffusers class -> family):
  FluxTransformer2DModel          "flux"      MMDiT: double-stream (joint) blocks + single-stream blocks
  HunyuanVideoTransformer3DModel  "hunyuan"   the same two block kinds over video tokens, plus a token refiner
  SD3Transformer2DModel           "sd3"       MMDiT joint blocks (SD3.5-Medium: + a second, image-only
                                              self-attention in its `dual_attention_layers`, MMDiT-X)
  PixArtTransformer2DModel        "pixart"    self-attention + cross-attention to the text (adaLN-single)
  WanTransformer3DModel           "wan"       self-attention (3D full) + cross-attention to the text
  CogVideoXTransformer3DModel     "cogvideox" one joint sequence of text and video tokens (expert adaLN)

Parameter counts are exact counts of every weight and bias of the diffusers modules (the module
structure is read from diffusers' source: models/transformers/transformer_flux.py, transformer_sd3.py,
pixart_transformer_2d.py, transformer_wan.py, cogvideox_transformer_3d.py,
transformer_hunyuan_video.py, and models/attention.py / normalization.py / embeddings.py for the
shared blocks). Buffers (fixed sin-cos position tables) are not parameters.

Dimension alphabet: D model width, H heads, d head dim, F FFN width, L layers.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from hardware import inputs

CONFIG_DIR = Path(__file__).parent / "dit_configs"
CATALOG_PATH = Path(__file__).parent / "dit_catalog.yaml"

#: diffusers `_class_name` -> family
CLASSES = {"FluxTransformer2DModel": "flux", "HunyuanVideoTransformer3DModel": "hunyuan",
           "SD3Transformer2DModel": "sd3", "PixArtTransformer2DModel": "pixart",
           "WanTransformer3DModel": "wan", "CogVideoXTransformer3DModel": "cogvideox"}
MAX_SHAPE = 10**6


class DiTError(ValueError):
    """A diffusion config or request that cannot be read; the message names the field and value."""


def _linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _mlp2(n_in: int, hidden: int, n_out: int) -> int:
    """Two biased linears n_in -> hidden -> n_out (TimestepEmbedding, PixArtAlphaTextProjection, FeedForward)."""
    return _linear(n_in, hidden) + _linear(hidden, n_out)


@dataclass(frozen=True)
class DiTSpec:
    """Shapes of a diffusion transformer.

    joint_layers: dual-stream blocks (separate weights for image and text tokens, one joint
    attention: FLUX double-stream, SD3 and HunyuanVideo MMDiT blocks). single_layers: single-stream
    blocks over the concatenated sequence with parallel attention and MLP (FLUX, HunyuanVideo).
    cross_layers: blocks of self-attention over the latent tokens and cross-attention to the text
    (PixArt, Wan). cogvideox_layers: CogVideoX's blocks (one weight set over the text + video
    sequence). dual_attention_layers: joint blocks that also run a second, image-only
    self-attention (SD3.5-Medium). d_ff: FFN width. text_dim: the text encoder's output width
    fed to the context embedder.
    """

    name: str
    family: str
    d_model: int
    n_heads: int
    head_dim: int
    d_ff: int
    text_dim: int
    in_channels: int
    out_channels: int
    patch_size: int
    patch_size_t: int = 1
    joint_layers: int = 0
    single_layers: int = 0
    cross_layers: int = 0
    cogvideox_layers: int = 0
    dual_attention_layers: int = 0
    refiner_layers: int = 0
    pooled_dim: int = 0
    guidance_embeds: bool = False
    time_embed_dim: int = 0
    qk_norm: bool = True
    pos_embed_max_size: int = 0

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SHAPE):
                raise DiTError(f"{self.name}: {f.name} = {value!r} must be a whole number from 0 to {MAX_SHAPE:,}")
        for name in ("d_model", "n_heads", "head_dim", "d_ff", "patch_size", "patch_size_t", "in_channels"):
            if getattr(self, name) == 0:
                raise DiTError(f"{self.name}: {name} must be positive, got 0")
        if self.n_layers == 0:
            raise DiTError(f"{self.name}: the config has no transformer layers (num_layers = 0)")
        if self.dual_attention_layers > self.joint_layers:
            raise DiTError(f"{self.name}: dual_attention_layers = {self.dual_attention_layers} exceeds the "
                           f"{self.joint_layers} joint layers; allowed 0 to {self.joint_layers}")

    @property
    def n_layers(self) -> int:
        return self.joint_layers + self.single_layers + self.cross_layers + self.cogvideox_layers

    @property
    def is_video(self) -> bool:
        return self.family in ("wan", "cogvideox", "hunyuan")

    @property
    def patch_in_width(self) -> int:
        """Input features of one token to the patch embedding: channels x patch volume (FLUX's
        pipeline packs 2 x 2 latents into in_channels = 64 itself, so its embedder is a Linear)."""
        return self.in_channels if self.family == "flux" else self.in_channels * self.patch_size_t * self.patch_size ** 2

    @property
    def patch_out_width(self) -> int:
        """Output features per token of proj_out (FLUX: out_channels, already packed)."""
        return self.out_channels if self.family == "flux" else self.out_channels * self.patch_size_t * self.patch_size ** 2

    # -- named constructors ---------------------------------------------------------------------
    @classmethod
    def from_diffusers_config(cls, config: str | Path | dict, name: str | None = None) -> "DiTSpec":
        """Read a diffusers transformer config.json (a path or the parsed dict). No network."""
        if isinstance(config, (str, Path)):
            path = Path(config)
            try:
                data = inputs.load_json(path, "diffusion config")
            except inputs.InputError as err:
                raise DiTError(str(err)) from None
            name = name or (path.parent.name if path.stem == "config" else path.stem)
        else:
            data = config
        if not isinstance(data, dict):
            raise DiTError(f"diffusion config: expected a JSON object (diffusers config.json), got {type(data).__name__}")
        cls_name = data.get("_class_name")
        if cls_name not in CLASSES:
            raise DiTError(f"_class_name: unknown diffusion transformer {cls_name!r}; supported: {', '.join(CLASSES)}")
        family = CLASSES[cls_name]
        fields = _READERS[family](_Fields(data, name or family))
        return cls(name=(name or family)[:200], family=family, **fields)

    # -- parameter counts -------------------------------------------------------------------------
    def param_count(self) -> int:
        """Every weight and bias of the diffusers transformer (see the module docstring)."""
        return _PARAMS[self.family](self)

    def block_params(self) -> dict:
        """Parameters of one block of each kind present (for weight bytes per layer)."""
        D, F = self.d_model, self.d_ff
        out = {}
        if self.joint_layers:
            out["joint"] = _joint_block(self)
        if self.single_layers:
            out["single"] = _single_block(self)
        if self.cross_layers:
            out["cross"] = _cross_block(self)
        if self.cogvideox_layers:
            out["cogvideox"] = 2 * (_linear(self.time_embed_dim, 6 * D) + 2 * D) + 4 * _linear(D, D) + \
                4 * self.head_dim + _mlp2(D, F, D)
        return out

    def summary(self) -> dict:
        return {"name": self.name, "family": self.family, "params": self.param_count(), "layers": self.n_layers,
                "d_model": self.d_model, "heads": self.n_heads, "head_dim": self.head_dim, "d_ff": self.d_ff,
                "patch": f"{self.patch_size_t}x{self.patch_size}x{self.patch_size}"}


# -- blocks (diffusers modules, counted weight by weight) ------------------------------------------

def _attention_proj(D: int, streams: int, qk_norm_dim: int) -> int:
    """q, k, v and output projections (biased) per stream, plus RMSNorm weights on q and k."""
    return streams * (4 * _linear(D, D) + 2 * qk_norm_dim)


def _joint_block(s: DiTSpec) -> int:
    """FluxTransformerBlock / JointTransformerBlock / HunyuanVideoTransformerBlock: per stream an
    AdaLayerNormZero (Linear D -> 6D), q/k/v/out, q/k RMSNorm over d, a GELU FFN D -> F -> D.
    SD3's dual-attention blocks: AdaLayerNormZeroX (D -> 9D) on the image stream and a second
    attention (q/k/v/out + norms); SD3's last block is context_pre_only (handled in _sd3_params)."""
    D = s.d_model
    return 2 * (_linear(D, 6 * D) + _mlp2(D, s.d_ff, D)) + _attention_proj(D, 2, s.head_dim if s.qk_norm else 0)


def _single_block(s: DiTSpec) -> int:
    """FluxSingleTransformerBlock: AdaLayerNormZeroSingle (D -> 3D), q/k/v, q/k RMSNorm, proj_mlp
    D -> F, proj_out (D + F) -> D over [attention, MLP] concatenated."""
    D = s.d_model
    return _linear(D, 3 * D) + 3 * _linear(D, D) + 2 * s.head_dim + _linear(D, s.d_ff) + _linear(D + s.d_ff, D)


def _cross_block(s: DiTSpec) -> int:
    """PixArt BasicTransformerBlock (ada_norm_single): self-attn, cross-attn (k/v from the projected
    caption, width D), FFN, a 6 x D scale_shift_table. WanTransformerBlock: the same plus RMSNorm
    over all heads (width D) on q and k of both attentions and an affine LayerNorm before the
    cross-attention (cross_attn_norm)."""
    D = s.d_model
    base = 8 * _linear(D, D) + _mlp2(D, s.d_ff, D) + 6 * D
    return base + (4 * D + 2 * D if s.family == "wan" else 0)


def _patch_embed(s: DiTSpec) -> int:
    return _linear(s.patch_in_width, s.d_model)


def _proj_out(s: DiTSpec) -> int:
    return _linear(s.d_model, s.patch_out_width)


def _flux_params(s: DiTSpec) -> int:
    """x_embedder (in_channels -> D: FLUX packs 2x2 latent patches into 64 channels itself),
    timestep / guidance embedders (256 -> D -> D), pooled-text projection, context embedder,
    the blocks, AdaLayerNormContinuous (D -> 2D) and proj_out."""
    D = s.d_model
    embed = _patch_embed(s) + _mlp2(256, D, D) * (2 if s.guidance_embeds else 1) + \
        _mlp2(s.pooled_dim, D, D) + _linear(s.text_dim, D)
    return embed + s.joint_layers * _joint_block(s) + s.single_layers * _single_block(s) + \
        _linear(D, 2 * D) + _proj_out(s)


def _hunyuan_params(s: DiTSpec) -> int:
    """HunyuanVideo: the FLUX layout (Conv3d patch embed) plus the token refiner on the text
    (HunyuanVideoTokenRefiner: its own timestep + pooled-text embedders, proj_in, refiner blocks of
    LayerNorm, biased q/k/v/out attention, a D -> 4D -> D MLP and an adaLN gate D -> 2D)."""
    D = s.d_model
    refiner_block = 2 * 2 * D + 4 * _linear(D, D) + _mlp2(D, 4 * D, D) + _linear(D, 2 * D)
    refiner = _mlp2(256, D, D) + _mlp2(s.text_dim, D, D) + _linear(s.text_dim, D) + s.refiner_layers * refiner_block
    embed = _patch_embed(s) + _mlp2(256, D, D) * (2 if s.guidance_embeds else 1) + _mlp2(s.pooled_dim, D, D)
    return embed + refiner + s.joint_layers * _joint_block(s) + s.single_layers * _single_block(s) + \
        _linear(D, 2 * D) + _proj_out(s)


def _sd3_params(s: DiTSpec) -> int:
    """SD3 / SD3.5: Conv2d patch embed, timestep (256 -> D -> D) and pooled-text (pooled -> D -> D)
    embedders, context embedder; the last joint block is context_pre_only (its text stream has an
    AdaLayerNormContinuous D -> 2D and keeps add_q/k/v_proj, but no to_add_out and no ff_context:
    the text tokens' outputs are not used after it); dual-attention blocks add AdaLayerNormZeroX's
    extra 3D outputs and a second attention."""
    D = s.d_model
    embed = _patch_embed(s) + _mlp2(256, D, D) + _mlp2(s.pooled_dim, D, D) + _linear(s.text_dim, D)
    # the last block is context_pre_only: no to_add_out, no ff_context, a D -> 2D norm on the text
    last_block_saving = _linear(D, 6 * D) - _linear(D, 2 * D) + _linear(D, D) + _mlp2(D, s.d_ff, D)
    dual = s.dual_attention_layers * (_linear(D, 9 * D) - _linear(D, 6 * D) + _attention_proj(D, 1, s.head_dim))
    return embed + s.joint_layers * _joint_block(s) - last_block_saving + dual + _linear(D, 2 * D) + _proj_out(s)


def _pixart_params(s: DiTSpec) -> int:
    """PixArt: Conv2d patch embed, AdaLayerNormSingle (timestep 256 -> D -> D, then D -> 6D), caption
    projection (text_dim -> D -> D), the blocks, a 2 x D scale_shift_table and proj_out."""
    D = s.d_model
    embed = _patch_embed(s) + _mlp2(256, D, D) + _linear(D, 6 * D) + _mlp2(s.text_dim, D, D)
    return embed + s.cross_layers * _cross_block(s) + 2 * D + _proj_out(s)


def _wan_params(s: DiTSpec) -> int:
    """Wan 2.1: Conv3d patch embed, time embedder (freq 256 -> D -> D), time projection D -> 6D,
    text embedder (text_dim -> D -> D), the blocks, a 2 x D scale_shift_table and proj_out."""
    D = s.d_model
    embed = _patch_embed(s) + _mlp2(256, D, D) + _linear(D, 6 * D) + _mlp2(s.text_dim, D, D)
    return embed + s.cross_layers * _cross_block(s) + 2 * D + _proj_out(s)


def _cogvideox_params(s: DiTSpec) -> int:
    """CogVideoX: Conv2d patch embed + text projection (text_dim -> D), time embedding
    (D -> time_embed_dim -> time_embed_dim), the blocks (two CogVideoXLayerNormZero: Linear
    time_embed_dim -> 6D + affine LayerNorm; biased q/k/v/out with affine LayerNorm over d on q, k;
    FFN D -> F -> D), a final affine LayerNorm, AdaLayerNorm (time_embed_dim -> 2D + LayerNorm) and proj_out."""
    D, T = s.d_model, s.time_embed_dim
    embed = _patch_embed(s) + _linear(s.text_dim, D) + _mlp2(D, T, T)
    return embed + s.cogvideox_layers * s.block_params()["cogvideox"] + 2 * D + _linear(T, 2 * D) + 2 * D + _proj_out(s)


_PARAMS = {"flux": _flux_params, "hunyuan": _hunyuan_params, "sd3": _sd3_params, "pixart": _pixart_params,
           "wan": _wan_params, "cogvideox": _cogvideox_params}


# -- config readers ---------------------------------------------------------------------------------

class _Fields:
    def __init__(self, data: dict, name: str):
        self.data, self.name = data, name

    def int(self, key: str, default=None) -> int:
        value = self.data.get(key, default)
        if value is None:
            raise DiTError(f"{self.name}: config field {key!r} is missing")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or \
                not 0 <= value <= MAX_SHAPE:
            raise DiTError(f"{self.name}: config field {key} = {value!r} must be a whole number from 0 to {MAX_SHAPE:,}")
        return int(value)

    def get(self, key: str, default=None):
        return self.data.get(key, default)


def _flux(c: _Fields) -> dict:
    H, d = c.int("num_attention_heads"), c.int("attention_head_dim")
    D = H * d
    return dict(d_model=D, n_heads=H, head_dim=d, d_ff=4 * D, text_dim=c.int("joint_attention_dim"),
                in_channels=c.int("in_channels"), out_channels=c.int("out_channels", c.int("in_channels")),
                patch_size=2, joint_layers=c.int("num_layers"), single_layers=c.int("num_single_layers"),
                pooled_dim=c.int("pooled_projection_dim"), guidance_embeds=bool(c.get("guidance_embeds", False)))


def _hunyuan(c: _Fields) -> dict:
    H, d = c.int("num_attention_heads"), c.int("attention_head_dim")
    D = H * d
    return dict(d_model=D, n_heads=H, head_dim=d, d_ff=int(c.get("mlp_ratio", 4.0) * D),
                text_dim=c.int("text_embed_dim"), in_channels=c.int("in_channels"), out_channels=c.int("out_channels"),
                patch_size=c.int("patch_size"), patch_size_t=c.int("patch_size_t", 1),
                joint_layers=c.int("num_layers"), single_layers=c.int("num_single_layers"),
                refiner_layers=c.int("num_refiner_layers", 2), pooled_dim=c.int("pooled_projection_dim"),
                guidance_embeds=bool(c.get("guidance_embeds", False)))


def _sd3(c: _Fields) -> dict:
    H, d = c.int("num_attention_heads"), c.int("attention_head_dim")
    D = H * d
    dual = c.get("dual_attention_layers") or ()
    if not isinstance(dual, (list, tuple)):
        raise DiTError(f"{c.name}: config field dual_attention_layers = {dual!r} must be a list of layer indices")
    return dict(d_model=D, n_heads=H, head_dim=d, d_ff=4 * D, text_dim=c.int("joint_attention_dim"),
                in_channels=c.int("in_channels"), out_channels=c.int("out_channels"), patch_size=c.int("patch_size"),
                joint_layers=c.int("num_layers"), dual_attention_layers=len(dual),
                pooled_dim=c.int("pooled_projection_dim"), qk_norm=c.get("qk_norm") is not None,
                pos_embed_max_size=c.int("pos_embed_max_size", 0))


def _pixart(c: _Fields) -> dict:
    H, d = c.int("num_attention_heads"), c.int("attention_head_dim")
    D = H * d
    if c.int("cross_attention_dim", D) != D:
        raise DiTError(f"{c.name}: cross_attention_dim = {c.get('cross_attention_dim')} must equal heads x head dim ({D})")
    return dict(d_model=D, n_heads=H, head_dim=d, d_ff=4 * D, text_dim=c.int("caption_channels"),
                in_channels=c.int("in_channels"), out_channels=c.int("out_channels"), patch_size=c.int("patch_size"),
                cross_layers=c.int("num_layers"), qk_norm=False)


def _wan(c: _Fields) -> dict:
    H, d = c.int("num_attention_heads"), c.int("attention_head_dim")
    patch = c.get("patch_size")
    if not (isinstance(patch, (list, tuple)) and len(patch) == 3):
        raise DiTError(f"{c.name}: config field patch_size = {patch!r} must be [t, h, w]")
    if c.get("image_dim") is not None or c.get("added_kv_proj_dim") is not None:
        raise DiTError(f"{c.name}: image-to-video Wan (image_dim / added_kv_proj_dim set) is not supported; "
                       "text-to-video configs only")
    return dict(d_model=H * d, n_heads=H, head_dim=d, d_ff=c.int("ffn_dim"), text_dim=c.int("text_dim"),
                in_channels=c.int("in_channels"), out_channels=c.int("out_channels"), patch_size=int(patch[1]),
                patch_size_t=int(patch[0]), cross_layers=c.int("num_layers"))


def _cogvideox(c: _Fields) -> dict:
    H, d = c.int("num_attention_heads"), c.int("attention_head_dim")
    D = H * d
    return dict(d_model=D, n_heads=H, head_dim=d, d_ff=4 * D, text_dim=c.int("text_embed_dim"),
                in_channels=c.int("in_channels"), out_channels=c.int("out_channels"), patch_size=c.int("patch_size"),
                patch_size_t=c.int("patch_size_t", 1) if c.get("patch_size_t") else 1,
                cogvideox_layers=c.int("num_layers"), time_embed_dim=c.int("time_embed_dim"))


_READERS = {"flux": _flux, "hunyuan": _hunyuan, "sd3": _sd3, "pixart": _pixart, "wan": _wan, "cogvideox": _cogvideox}


# -- text encoders (a stage run once per request) ----------------------------------------------------

@dataclass(frozen=True)
class TextEncoderSpec:
    """A transformer text encoder: L layers of attention (H heads of d) and an FFN of width F
    (gated: T5's gated-GELU, Llama's SwiGLU; else a biased two-layer MLP as CLIP's), V x D token
    embeddings, learned positions (CLIP) or relative attention buckets (T5: one table shared by all
    layers, umT5: one per layer)."""

    name: str
    n_layers: int
    d_model: int
    n_heads: int
    head_dim: int
    d_ff: int
    vocab_size: int
    gated: bool
    biases: bool = False
    kv_heads: int = 0
    positions: int = 0
    rel_bias_tables: int = 0
    projection: int = 0
    source: str = ""

    def param_count(self) -> int:
        """Embeddings + layers + final norm (+ text projection). T5/Llama norms are weight-only
        RMSNorms, CLIP's are affine LayerNorms."""
        D, inner = self.d_model, self.n_heads * self.head_dim
        kv = (self.kv_heads or self.n_heads) * self.head_dim
        b = 1 if self.biases else 0
        attn = D * (inner + 2 * kv) + inner * D + b * (inner + 2 * kv + D)
        ffn = (3 if self.gated else 2) * D * self.d_ff + b * (self.d_ff + D)
        norm = (2 if self.biases else 1) * D
        layer = attn + ffn + 2 * norm
        return self.vocab_size * D + self.positions * D + self.n_layers * layer + norm + \
            self.rel_bias_tables * 32 * self.n_heads + self.projection * D


#: T5 v1.1 XXL encoder (google/t5-v1_1-xxl config: d_model 4096, d_ff 10240, 24 layers, 64 heads of
#: 64, vocab 32128, gated-gelu): 4,762,310,656 parameters (HF T5EncoderModel of
#: google/t5-v1_1-xxl; the FLUX/SD3 text_encoder_2/3 folders hold the same count).
#: umT5-XXL (google/umt5-xxl: vocab 256384, one relative-bias table per layer), Wan's encoder.
#: CLIP ViT-L/14 text (openai/clip-vit-large-patch14: 123,060,480 as CLIPTextModel; SD3 loads it
#: with its 768 x 768 projection) and OpenCLIP bigG text (laion CLIP-ViT-bigG-14: 694,659,840 with
#: projection). LLaVA-Llama-3-8B (HunyuanVideo's MLLM encoder): Llama-3-8B's decoder without its
#: LM head (8,030,261,248 - 128256 x 4096).
TEXT_ENCODERS = {
    "t5-xxl": TextEncoderSpec("t5-xxl", 24, 4096, 64, 64, 10240, 32128, gated=True, rel_bias_tables=1,
                              source="google/t5-v1_1-xxl config.json"),
    "umt5-xxl": TextEncoderSpec("umt5-xxl", 24, 4096, 64, 64, 10240, 256384, gated=True, rel_bias_tables=24,
                                source="google/umt5-xxl config.json"),
    "clip-l": TextEncoderSpec("clip-l", 12, 768, 12, 64, 3072, 49408, gated=False, biases=True, positions=77,
                              source="openai/clip-vit-large-patch14 text_config"),
    "clip-g": TextEncoderSpec("clip-g", 32, 1280, 20, 64, 5120, 49408, gated=False, biases=True, positions=77,
                              projection=1280, source="laion/CLIP-ViT-bigG-14-laion2B-39B-b160k text_config"),
    "llava-llama-3-8b": TextEncoderSpec("llava-llama-3-8b", 32, 4096, 32, 128, 14336, 128256, gated=True,
                                        kv_heads=8, source="xtuner/llava-llama-3-8b-v1_1 (Llama-3-8B config)"),
}


# -- VAE decoders (a stage run once per request) -----------------------------------------------------

@dataclass(frozen=True)
class VAESpec:
    """A VAE decoder in diffusers' Decoder layout (models/autoencoders/vae.py): conv_in, a mid block
    (resnet, self-attention, resnet), up blocks over the reversed `channels`, each with
    `layers_per_block` + 1 resnets (two 3x3 convs, GroupNorm + SiLU before each, a 1x1 shortcut
    where the width changes) and an upsampling conv (all but the last), GroupNorm, conv_out.
    Video VAEs (Wan, CogVideoX, HunyuanVideo) use 3D convs of `temporal_taps` x 3 x 3 and upsample
    time in their first `temporal_upsamples` up blocks."""

    name: str
    channels: tuple
    layers_per_block: int
    latent_channels: int
    temporal_taps: int = 1
    temporal_upsamples: int = 0
    post_quant_conv: bool = False
    source: str = ""

    def conv_layers(self, height: int, width: int, frames: int = 1, latent_frames: int = 1) -> list[tuple]:
        """(name, output positions, c_in, c_out, kernel taps) of every conv of one decode, as
        implicit GEMMs: positions x c_out outputs over c_in x taps inputs. Positions count pixels
        x frames at each block's resolution (the latent is height/2^(n-1) x width/2^(n-1))."""
        ch = list(self.channels)
        n = len(ch)
        k2, k3 = 9, 9 * self.temporal_taps
        h, w, f = height >> (n - 1), width >> (n - 1), latent_frames
        layers = [("post_quant_conv", h * w * f, self.latent_channels, self.latent_channels, 1)] if self.post_quant_conv else []
        layers.append(("conv_in", h * w * f, self.latent_channels, ch[-1], k3))
        layers += [("mid_resnet", h * w * f, ch[-1], ch[-1], k3)] * 4 + [("mid_attn", h * w * f, ch[-1], ch[-1], 4)]
        c_in = ch[-1]
        for i, c_out in enumerate(reversed(ch)):
            positions = h * w * f
            for j in range(self.layers_per_block + 1):
                layers += [("resnet", positions, c_in if j == 0 else c_out, c_out, k3), ("resnet", positions, c_out, c_out, k3)]
                if j == 0 and c_in != c_out:
                    layers.append(("shortcut", positions, c_in, c_out, 1))
            c_in = c_out
            if i < n - 1:
                h, w = 2 * h, 2 * w
                f = min(frames, 2 * f - 1 if f > 1 else f) if i < self.temporal_upsamples else f
                layers.append(("upsample", h * w * f, c_out, c_out, k3))
        layers.append(("conv_out", h * w * frames, ch[0], 3, k3))
        return layers

    def param_count(self) -> int:
        """Conv weights and biases of one decode's layers (the mid attention's q/k/v/out counted as
        four c x c linears, plus its GroupNorm), GroupNorm weight and bias before each resnet conv
        and before conv_out. SD's Decoder: 49,490,179 (+ 20 of post_quant_conv); checked in tests."""
        total = 0
        for name, _, c_in, c_out, taps in self.conv_layers(2 ** len(self.channels), 2 ** len(self.channels)):
            if name == "mid_attn":
                total += 4 * (c_in * c_out + c_out) + 2 * c_in
            else:
                total += c_in * c_out * taps + c_out
                total += 2 * c_in if name in ("resnet", "mid_resnet", "conv_out") else 0
        return total


VAES = {
    "flux-vae": VAESpec("flux-vae", (128, 256, 512, 512), 2, 16,
                        source="black-forest-labs/FLUX.1-dev vae/config.json (AutoencoderKL, no quant convs)"),
    "sd3-vae": VAESpec("sd3-vae", (128, 256, 512, 512), 2, 16,
                       source="stabilityai/stable-diffusion-3.5-large vae/config.json (AutoencoderKL, no quant convs)"),
    "sdxl-vae": VAESpec("sdxl-vae", (128, 256, 512, 512), 2, 4, post_quant_conv=True,
                        source="stabilityai/sdxl-vae config.json (AutoencoderKL)"),
    "wan-vae": VAESpec("wan-vae", (96, 192, 384, 384), 2, 16, temporal_taps=3, temporal_upsamples=2,
                       source="Wan-AI/Wan2.1-T2V-14B-Diffusers vae/config.json (AutoencoderKLWan: base_dim 96, "
                              "dim_mult [1,2,4,4], num_res_blocks 2, causal 3x3x3 convs); layout approximated by "
                              "diffusers' Decoder"),
    "cogvideox-vae": VAESpec("cogvideox-vae", (128, 256, 256, 512), 3, 16, temporal_taps=3, temporal_upsamples=2,
                             source="THUDM/CogVideoX-5b vae/config.json (AutoencoderKLCogVideoX)"),
    "hunyuan-vae": VAESpec("hunyuan-vae", (128, 256, 512, 512), 2, 16, temporal_taps=3, temporal_upsamples=2,
                           source="hunyuanvideo-community/HunyuanVideo vae/config.json (AutoencoderKLHunyuanVideo)"),
}


# -- pipelines and generation requests ---------------------------------------------------------------

@dataclass(frozen=True)
class DiTPipeline:
    """A text-to-image/video pipeline: the transformer, its text encoders (with the tokens each
    sees), the VAE decoder and the pipeline arithmetic (workloads/dit_catalog.yaml)."""

    name: str
    dit: DiTSpec
    text_encoders: tuple            # ((TextEncoderSpec, tokens), ...)
    context_tokens: int
    vae: VAESpec
    vae_spatial: int
    vae_temporal: int
    latent_channels: int
    cfg: bool
    steps: int
    height: int
    width: int
    frames: int = 1
    fps: float = 0.0
    pipeline_class: str = ""

    @property
    def is_video(self) -> bool:
        return self.dit.is_video

    def request(self, **overrides) -> "GenerationRequest":
        """The model card's default request, with fields overridden."""
        base = dict(height=self.height, width=self.width, frames=self.frames, steps=self.steps, cfg=self.cfg,
                    fps=self.fps or 1.0)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return GenerationRequest(**base)


@dataclass(frozen=True)
class GenerationRequest:
    """What a user asks for: height x width pixels, `frames` frames (1: an image) at `fps`,
    `steps` denoising steps, classifier-free guidance (`cfg`: a conditional and an unconditional
    pass per step, the batch doubled), `batch` images or videos, and `cached_fraction`: the share
    of block outputs reused from the previous step on cached steps (TeaCache/FORA-style step
    caching, 0 = none)."""

    height: int
    width: int
    frames: int = 1
    steps: int = 28
    cfg: bool = False
    batch: int = 1
    fps: float = 1.0
    cached_fraction: float = 0.0

    def __post_init__(self):
        limits = {"height": (16, 16384), "width": (16, 16384), "frames": (1, 10000), "steps": (1, 10000),
                  "batch": (1, 100000)}
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise DiTError(f"{name}: {value!r} must be a whole number from {low} to {high}")
        if not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps) and 0 < self.fps <= 1000):
            raise DiTError(f"fps: {self.fps!r} must be a number above 0, at most 1000")
        if not (isinstance(self.cached_fraction, (int, float)) and 0 <= self.cached_fraction < 1):
            raise DiTError(f"cached_fraction: {self.cached_fraction!r} must be from 0 to below 1")

    @property
    def cfg_passes(self) -> int:
        return 2 if self.cfg else 1

    @property
    def video_s(self) -> float:
        """Seconds of video produced per sample (frames / fps)."""
        return self.frames / self.fps


@dataclass(frozen=True)
class LatentShape:
    """Latent grid and transformer sequence of one sample: latent_frames x latent_h x latent_w
    latents, image_tokens after patching, context_tokens of text."""

    latent_frames: int
    latent_h: int
    latent_w: int
    image_tokens: int
    context_tokens: int

    @property
    def tokens(self) -> int:
        return self.image_tokens + self.context_tokens


def latent_shape(pipe: DiTPipeline, req: GenerationRequest) -> LatentShape:
    """Pixels -> latents -> tokens, as the diffusers pipelines compute them:
    latent_h = H / vae_spatial, latent_w = W / vae_spatial; video VAEs compress time causally:
    latent_frames = (frames - 1) / vae_temporal + 1 (WanPipeline, CogVideoXPipeline,
    HunyuanVideoPipeline); tokens = latent_frames / p_t x latent_h / p x latent_w / p (FLUX packs
    2 x 2 latent patches in FluxPipeline._pack_latents, the others patch in the transformer).
    The pipelines need H and W to be multiples of vae_spatial x patch, and frames - 1 a multiple
    of vae_temporal; anything else is an error here rather than a silent rounding."""
    dit = pipe.dit
    step = pipe.vae_spatial * dit.patch_size
    for name, value in (("height", req.height), ("width", req.width)):
        if value % step:
            raise DiTError(f"{name}: {value} must be a multiple of {step} for {pipe.name} "
                           f"(VAE /{pipe.vae_spatial} x patch {dit.patch_size})")
    if not pipe.is_video and req.frames != 1:
        raise DiTError(f"frames: {req.frames} must be 1 for the image model {pipe.name}")
    if pipe.is_video and (req.frames - 1) % (pipe.vae_temporal * dit.patch_size_t):
        raise DiTError(f"frames: {req.frames} must be 1 + a multiple of {pipe.vae_temporal * dit.patch_size_t} "
                       f"for {pipe.name} (VAE /{pipe.vae_temporal} in time), e.g. 81")
    latent_frames = (req.frames - 1) // pipe.vae_temporal + 1
    lh, lw = req.height // pipe.vae_spatial, req.width // pipe.vae_spatial
    tokens = (latent_frames // dit.patch_size_t) * (lh // dit.patch_size) * (lw // dit.patch_size)
    return LatentShape(latent_frames, lh, lw, tokens, pipe.context_tokens)


# -- catalog ----------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _index() -> dict:
    return yaml.safe_load(CATALOG_PATH.read_text()) or {}


def names() -> list[str]:
    """Catalog pipeline names, sorted."""
    return sorted(_index())


def catalog_entry(name: str) -> dict:
    if name not in _index():
        raise DiTError(f"model: unknown diffusion model {name!r}; known: {', '.join(names())}")
    return dict(_index()[name])


def is_dit(name_or_path) -> bool:
    """Whether a --model value names a DiT catalog entry or a diffusers transformer config."""
    text = str(name_or_path)
    if text in _index():
        return True
    path = Path(text)
    path = path / "config.json" if path.is_dir() else path
    if path.suffix == ".json" and path.is_file():
        try:
            return inputs.load_json(path, "model config").get("_class_name") in CLASSES
        except (inputs.InputError, AttributeError):
            return False
    return False


@lru_cache(maxsize=None)
def load(name_or_path: str) -> DiTPipeline:
    """A catalog pipeline by name, or a diffusers transformer config by path (then the pipeline
    arithmetic of the catalog entry of the same family is used: its encoders, VAE, defaults)."""
    text = str(name_or_path)
    if text in _index():
        entry = catalog_entry(text)
        dit = DiTSpec.from_diffusers_config(Path(__file__).parent / entry["config"], name=text)
        return _pipeline(text, dit, entry)
    path = Path(text)
    dit = DiTSpec.from_diffusers_config(path / "config.json" if path.is_dir() else path)
    template = next(n for n in names() if DiTSpec.from_diffusers_config(
        Path(__file__).parent / catalog_entry(n)["config"]).family == dit.family)
    return _pipeline(dit.name, dit, catalog_entry(template))


def _pipeline(name: str, dit: DiTSpec, entry: dict) -> DiTPipeline:
    encoders = tuple((TEXT_ENCODERS[e], int(entry["text_tokens"][e])) for e in entry["text_encoders"])
    return DiTPipeline(name=name, dit=dit, text_encoders=encoders, context_tokens=int(entry["context_tokens"]),
                       vae=VAES[entry["vae"]], vae_spatial=int(entry["vae_spatial"]),
                       vae_temporal=int(entry["vae_temporal"]), latent_channels=int(entry["latent_channels"]),
                       cfg=bool(entry["cfg"]), steps=int(entry["steps"]), height=int(entry["height"]),
                       width=int(entry["width"]), frames=int(entry.get("frames", 1)), fps=float(entry.get("fps", 0)),
                       pipeline_class=entry.get("pipeline", ""))


def stored_param_count(dit: DiTSpec) -> int:
    """Parameters plus stored buffers: SD3's transformer keeps its sin-cos position table of
    pos_embed_max_size^2 x D in the checkpoint (PatchEmbed registers it persistent when
    pos_embed_max_size is set), and Stability's published counts include it."""
    return dit.param_count() + dit.pos_embed_max_size ** 2 * dit.d_model
