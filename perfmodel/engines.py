"""Engine profiles: how a serving stack executes a forward step, as data (perfmodel/engine_profiles/).

A prediction is always for a named engine. The profile says which ops the engine fuses (kernels and
activation passes per op), which attention kernel family runs prefill and decode, which all-reduce
it uses, which steps replay CUDA graphs and what host time it pays. Hardware-dependent numbers (the
achieved rates and floors of each kernel family, the host's per-op dispatch) live in the calibrated
hardware spec; the profile only names what runs.

Host time, by how the engine issues kernels:
- a step replayed from a CUDA graph (decode and small steps of a serving engine, up to
  `graph_max_tokens` tokens) pays no per-kernel host time: only `step_host_s` per iteration;
- a compiled step outside graphs (large prefills) launches each kernel from the host, which runs
  ahead of the device: time = max(device, kernels x dispatch);
- an eager framework (`eager: true`, transformers) also pays Python per layer and per step
  (Calibration.layer_overhead_s, step_overhead_s), again overlapped with the device.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Mapping

import numpy as np
import yaml

PROFILE_DIR = Path(__file__).parent / "engine_profiles"

#: The profile `perfmodel predict` uses unless told otherwise: a serving engine, what users deploy.
DEFAULT_ENGINE = "vllm"

ALLREDUCE_KINDS = ("nccl", "custom")


class EngineError(ValueError):
    """An unknown engine name or a malformed profile; the message names the field and the value."""


@dataclass(frozen=True)
class Engine:
    """One serving stack's execution of a transformer step (see the module docstring).

    Fusion: *_kernels count launches per op, *_passes count reads + writes of activation-sized
    tensors per element of the op's width (the bytes a fused kernel cannot avoid).
    residual_in_norm: the residual add runs inside the next norm kernel (vLLM's fused_add_rms_norm,
    inductor's fusion), reading x and the residual and writing both. cache_write_kernels: kernels
    that write the new tokens' K and V into a paged or static cache (0 when the attention or RoPE
    kernel writes them). act_quant_kernels: kernels per GEMM input that quantize activations for
    8-bit GEMMs (0 when fused into the preceding kernel); act_quant_bytes: bytes those kernels move
    per activation element besides writing the quantized value (2: one fused kernel reads the
    16-bit input; eager PyTorch's abs, upcast, divide, clamp and cast move fp32 temporaries).
    kv_append_copies: the cache grows by torch.cat (re-read and re-written every step).
    attn_out_copy: the attention output is copied contiguous before the output projection.
    fp8_gemm_split_k: the engine's 8-bit GEMMs (8-bit weights and activations) may split their
    reduction over idle SMs, as cuBLASLt's do (torch._scaled_mm, TensorRT-LLM's FP8 path); vLLM's
    cutlass_scaled_mm and sgl-kernel's fp8_scaled_mm run CUTLASS 3 kernels that give each output
    tile one SM (ops.CUTLASS_8BIT marks their projections; perfmodel.roofline prices them).
    fp8_gemm_tiles_hopper: the tile (rows x columns) those CUTLASS kernels take on Hopper (sm90)
    by the GEMM's rows m, as "M1:RxC M2:RxC ... inf:RxC" (each bucket up to its bound;
    `fp8_tile_table`), from the engine's sm90 dispatch; applied on specs whose architecture is
    hopper (other architectures dispatch other kernels); "" = the calibrated tile grid.

    prefill_attention / decode_attention name the attention kernel family: "sdpa" (PyTorch's
    scaled_dot_product_attention) or an engine's own attention backend as it runs by default on
    the device ("vllm": FlashAttention-3 on Hopper, FA2 on Ada; "trtllm": context FMHA and XQA;
    "sglang": FA3 on Hopper, FlashInfer on Ada). Their rates and floors are per device, in the
    calibrated spec's attention_kernels under the same name. decode_kernel_min_group /
    decode_kernel_max_group: the query heads per kv head the decode family's kernel runs (0: no
    limit); decode_kernel_history_per_block / decode_kernel_min_block_factor: it runs only where
    kv heads x batch x max(history // history_per_block, 1) x min_block_factor reaches the SM
    count (0: always). Elsewhere the engine runs `decode_fallback_attention` ("": the decode family
    runs every decode; TensorRT-LLM: XQA runs groups of 2-32 under that heuristic, its masked MHA
    kernel, family "trtllm-mmha", the rest), so each family is fitted on the rows its kernel ran
    (`decode_kernels`) and a measured row is priced with the kernel that ran it. A step prediction
    picks the kernel by the model's head group alone (`attention_kernel`): the block heuristic
    depends on batch and context, which a sweep holds as arrays, and switching kernels inside a
    decode's mean over a generation would break its closed form (perfmodel.steps).

    attention_max_head_dim / wide_head_attention / wide_head_architecture: the widest head the
    engine's attention families take (0: any), the family that runs wider heads in both phases
    ("": the same families), and the architecture whose default backend has that limit ("": every
    one). FlashAttention-3, the Hopper default, takes head dims up to 256, so on Hopper SGLang runs
    512-wide heads on its Triton backend ("sglang-triton"; aiconfigurator 0.12's H100 and H200
    tables name that kernel for them, and it reaches about 95 TFLOP/s in prefill where FA3 reaches
    550-650), while on Blackwell its TRT-LLM MHA kernels run them as any other head. A prediction
    that knows the device's architecture names the family that ran (validate.predict_cases); a step
    prediction names the wide family, and a spec fitted where the default backend takes wide heads
    carries the engine's own parameters under that name (validate.calibrate_external). MLA's
    absorbed attention runs kernels of its own and is not subject to it.

    moe_kernel names the fused-MoE kernel family that runs the routed experts (and their routing):
    "vllm-triton" and "sglang-triton" (the Triton fused_moe kernels with each engine's tuned
    configs), "trtllm-cutlass" (TensorRT-LLM's CUTLASS MoE), "flashinfer-cutlass" (FlashInfer's
    CUTLASS fused MoE); its weight-streaming rate and fixed time per layer are per device, in the
    calibrated spec's moe_kernel_* maps under the same name. "": the generic grouped-GEMM kernel.

    fp8_prefill_attention: with an 8-bit KV cache the prefill attention kernel runs its tensor-core
    math in fp8 (queries quantized too, softmax in fp32): TensorRT-LLM's context FMHA (fp8 context
    FMHA comes with an fp8 paged cache) and vLLM's FlashAttention-3. Its FLOPs then run at the
    device's fp8 rate times the family's fraction (perfmodel.roofline); a 16-bit cache keeps bf16
    math, and decode kernels keep theirs (TensorRT-LLM's published throughput rows: fp8 context math
    took the long-prompt rows from 0.874 to 0.912x of the published numbers, median error 12.6 ->
    8.9%; fp8 decode math as well had taken the decode-heavy rows from 1.015 to 1.068x;
    validate/reports/published).
    """

    name: str
    title: str = ""
    split_qkv: bool = False
    split_gate_up: bool = False
    norm_kernels: int = 1
    norm_passes: float = 2.0
    residual_in_norm: bool = False
    rope_kernels: int = 1
    rope_passes: float = 2.0
    cache_write_kernels: int = 0
    act_kernels: int = 1
    act_passes: float = 3.0
    act_quant_kernels: int = 0
    act_quant_bytes: float = 2.0
    single_block_amax: bool = False
    kv_append_copies: bool = False
    attn_out_copy: bool = False
    fp8_gemm_split_k: bool = True
    fp8_gemm_tiles_hopper: str = ""
    prefill_attention: str = "default"
    decode_attention: str = "default"
    decode_kernel_min_group: int = 1
    decode_kernel_max_group: int = 0
    decode_kernel_history_per_block: int = 0
    decode_kernel_min_block_factor: float = 0.0
    decode_fallback_attention: str = ""
    attention_max_head_dim: int = 0
    wide_head_attention: str = ""
    wide_head_architecture: str = ""
    moe_kernel: str = ""
    fp8_prefill_attention: bool = False
    allreduce: str = "nccl"
    eager: bool = False
    graph_max_tokens: float = 0.0
    step_host_s: float = 0.0
    description: str = ""
    sources: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "sources", dict(self.sources))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            finite = f.name != "graph_max_tokens"  # .inf: every step replays a graph
            if f.type in ("int", "float") and (isinstance(value, bool) or not isinstance(value, (int, float))
                                               or math.isnan(value) or (finite and math.isinf(value)) or value < 0):
                raise EngineError(f"engine {self.name}: {f.name} = {value!r} must be a finite number, zero or more")
            if f.type == "bool" and not isinstance(value, bool):  # a YAML "maybe" must not pass as truthy
                raise EngineError(f"engine {self.name}: {f.name} = {value!r} must be true or false")
            if f.type == "str" and not isinstance(value, str):  # a family name or title, not a number
                raise EngineError(f"engine {self.name}: {f.name} = {value!r} must be text")
        self.fp8_tile_table  # a bad tile table fails at load
        from hardware.fields import ARCHITECTURES  # the hardware schema's names (a typo would never match)

        if self.wide_head_architecture and self.wide_head_architecture not in ARCHITECTURES:
            raise EngineError(f"engine {self.name}: wide_head_architecture = {self.wide_head_architecture!r} is not "
                              f"one of {', '.join(ARCHITECTURES)}")
        if self.allreduce not in ALLREDUCE_KINDS:
            raise EngineError(f"engine {self.name}: allreduce = {self.allreduce!r} is not one of {ALLREDUCE_KINDS}")

    @cached_property
    def fp8_tile_table(self) -> tuple:
        """fp8_gemm_tiles_hopper parsed: ((m bound, tile rows, tile columns), ...) by rising bound."""
        return parse_tile_table(self.fp8_gemm_tiles_hopper, f"engine {self.name}: fp8_gemm_tiles_hopper")

    def graphed(self, tokens):
        """Whether a step of `tokens` tokens (per device) replays a CUDA graph (array-valued)."""
        if isinstance(tokens, (int, float)):  # one step: a plain bool
            return tokens <= self.graph_max_tokens
        return np.asarray(tokens) <= self.graph_max_tokens

    def runs_decode_kernel(self, *, group, kv_heads, batch, history, compute_units):
        """Whether the decode family's kernel runs a decode of `group` query heads per kv head,
        `kv_heads` kv heads, `batch` sequences of `history` cached tokens on `compute_units` SMs
        (array-valued where any argument is an array)."""
        runs = self.in_decode_group(group)
        if self.decode_kernel_history_per_block:
            # at least one block a sequence and kv head however short its history (TensorRT-LLM
            # since 2025: "always use at least 1 block regardless of history length")
            per_sequence = np.floor_divide(np.asarray(history, dtype=float), self.decode_kernel_history_per_block)
            blocks = np.asarray(kv_heads, dtype=float) * np.asarray(batch, dtype=float) * np.maximum(per_sequence, 1.0)
            runs = runs & (blocks * self.decode_kernel_min_block_factor >= compute_units)
        return runs if np.ndim(runs) else bool(runs)

    def in_decode_group(self, group):
        """Whether `group` query heads per kv head lie in the decode family's range (array-valued
        for an array)."""
        group = np.asarray(group, dtype=float)
        runs = group >= self.decode_kernel_min_group
        if self.decode_kernel_max_group:
            runs = runs & (group <= self.decode_kernel_max_group)
        return runs if np.ndim(runs) else bool(runs)

    @property
    def fallback_decode_kernel(self) -> str:
        """The kernel the engine decodes with outside its decode family's range, as the calibration
        names it ("trtllm-mmha-decode"), or "" where the decode family runs every decode."""
        return f"{self.decode_fallback_attention}-decode" if self.decode_fallback_attention else ""

    def wide_heads(self, head_dim, architecture: str | None = None) -> bool:
        """Whether heads `head_dim` wide (None: MLA's absorbed form) run the wide-head family on a
        device of `architecture` (None: not known, the rule applies)."""
        if architecture is not None and self.wide_head_architecture and architecture != self.wide_head_architecture:
            return False
        return bool(self.wide_head_attention) and head_dim is not None and 0 < self.attention_max_head_dim < head_dim

    def attention_kernel(self, phase: str, *, group: float | None = None, head_dim: float | None = None,
                         architecture: str | None = None) -> str:
        """Attention kernel of a step phase ("prefill" or "decode": perfmodel.ops.step_phase), as the
        calibration names it: "<family>-<phase>" (flash-decoding and XQA kernels decode, FMHA-style
        kernels prefill). Heads wider than the engine's families take (`head_dim`; None for MLA)
        run the wide-head family (`wide_head_attention`). Given the model's query heads per kv head
        `group`, a decode outside the decode family's group range runs the fallback family
        (`decode_fallback_attention`)."""
        if self.wide_heads(head_dim, architecture):
            return f"{self.wide_head_attention}-{phase}"
        if phase == "decode" and self.fallback_decode_kernel and group is not None and \
                not self.in_decode_group(group):
            return self.fallback_decode_kernel
        family = self.decode_attention if phase == "decode" else self.prefill_attention
        return f"{family}-{phase}"

    def decode_kernels(self, *, group, kv_heads, batch, history, compute_units, head_dim=None, architecture=None):
        """The decode kernel of each measured decode (`runs_decode_kernel`: the decode family's
        where it ran, else the fallback's; the wide-head family for heads wider than the engine's
        families take on `architecture`): one name, or an object array of names."""
        own, fallback = self.attention_kernel("decode"), self.fallback_decode_kernel
        if self.wide_heads(head_dim, architecture):
            return self.attention_kernel("decode", head_dim=head_dim, architecture=architecture)
        if not fallback:
            return own
        runs = self.runs_decode_kernel(group=group, kv_heads=kv_heads, batch=batch, history=history,
                                       compute_units=compute_units)
        if not np.ndim(runs):
            return own if runs else fallback
        return np.where(runs, own, fallback).astype(object)


def parse_tile_table(text: str, field: str) -> tuple:
    """"64:64x64 128:64x128 inf:128x128" -> ((64.0, 64.0, 64.0), (128.0, 64.0, 128.0), (inf, 128.0,
    128.0)); "" -> (). Bounds must rise and end at inf, tiles be whole numbers from 1 to 1024."""
    table = []
    for item in text.replace(",", " ").split():
        try:
            bound, shape = item.split(":")
            rows, cols = (float(v) for v in shape.split("x"))
            bound = float(bound)
        except ValueError:
            raise EngineError(f"{field}: {item!r} is not BOUND:ROWSxCOLUMNS (e.g. 128:64x128)") from None
        if not all(v == int(v) and 1 <= v <= 1024 for v in (rows, cols)):
            raise EngineError(f"{field}: {item!r} needs whole tile sides from 1 to 1024")
        if table and bound <= table[-1][0]:
            raise EngineError(f"{field}: bound {item.split(':')[0]} must exceed the one before it")
        table.append((bound, rows, cols))
    if table and not math.isinf(table[-1][0]):
        raise EngineError(f"{field}: the last bound must be inf (every m needs a tile)")
    return tuple(table)


def names() -> tuple[str, ...]:
    """Names of the engine profiles shipped with perfmodel."""
    return tuple(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))


def load(name: str | Engine) -> Engine:
    """An engine profile by name (or a profile, returned as is: hashing a profile for the cache
    costs a microsecond, and a scalar prediction asks several times)."""
    if isinstance(name, Engine):
        return name
    return _load_named(name)


@lru_cache(maxsize=None)
def _load_named(name: str) -> Engine:
    """`load` of a profile by name, read once."""
    path = PROFILE_DIR / f"{name}.yaml"
    if not isinstance(name, str) or not path.is_file():
        raise EngineError(f"engine: {name!r} is not a known profile; known: {', '.join(names())}")
    return from_dict(yaml.safe_load(path.read_text()), origin=path.name)


def from_dict(data, origin: str = "engine profile") -> Engine:
    """Build a profile from its YAML mapping: every field of `Engine` except `sources`, which maps
    source tags to citations; unknown fields are an error (a typo must not pass silently)."""
    if not isinstance(data, dict):
        raise EngineError(f"{origin}: expected a mapping of fields, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(Engine)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise EngineError(f"{origin}: unknown field {unknown[0]!r}; known: {', '.join(known)}")
    if "name" not in data:
        raise EngineError(f"{origin}: missing field 'name'")
    values = {}
    for key, value in data.items():
        kind = known[key].type
        if kind in ("int", "float") and isinstance(value, str):
            value = _seconds(value, key, origin) if key.endswith("_s") else value
        if kind == "bool" and not isinstance(value, bool):
            raise EngineError(f"{origin}: {key} = {value!r} must be true or false")
        values[key] = value
    return Engine(**values)


def _seconds(text: str, key: str, origin: str) -> float:
    """A time written with a unit ("120 us"); the unit is parsed at the edge, as for hardware specs."""
    from hardware import units

    quantity = text.split("[")[0].strip()
    try:
        if float(quantity.split()[0]) == 0:  # units.parse takes positive quantities only
            return 0.0
    except (ValueError, IndexError):
        pass
    try:
        return units.parse(quantity, "seconds", key)
    except units.UnitError as err:
        raise EngineError(f"{origin}: {err}") from None
