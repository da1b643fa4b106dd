"""Flash-to-DRAM loading for on-device inference (LLM in a flash, Alizadeh et al., arXiv 2312.11514).

The model lives on flash; DRAM holds the attention blocks, embeddings, LM head and a low-rank
predictor of active FFN neurons, plus the FFN neurons of a window of recent tokens (and, optionally,
a static share of neurons pinned for good). Per generated token:

    latency = flash I/O + memory management + compute                     (paper, section 3)

Neuron activity is a two-state Markov chain per FFN neuron: active with stationary probability a
(the predictor's selection), staying active to the next token with probability p (persistence).
Then q = a (1 - p) / (1 - a) is the chance an inactive neuron turns on, and with a window of the
last k tokens:
    new(k)       = a                                   (k = 0)
                 = (1 - a) (1 - q)^(k - 1) q           (active now, in none of the last k tokens)
    resident(k)  = 1 - (1 - a) (1 - q)^k               (union over the window and the current token)
Independent tokens are p = a. The default p = 0.7 reproduces the paper's OPT-6.7B statistics:
a = 10%, k = 5 -> 24% of the FFN resident (paper: 24%) and 2.6% loaded per token (paper: 2.4%).

Row-column bundling stores neuron i's up-projection column next to its down-projection row (and
gate column for gated FFNs), so one read of mats * D * bytes serves a neuron instead of `mats` reads
of D * bytes; flash throughput grows with the chunk (`perfmodel.tiers.flash_throughput_bytes_per_s`).
Memory management copies each inserted neuron in and moves the last neuron into each evicted slot:
2 * chunk bytes over DRAM bandwidth plus a per-neuron cost; the default 5 us per neuron is derived
from the paper (65 ms for the 2.4% x 16384 x 32 neurons of OPT-6.7B on an M1 Max).
Compute is the roofline of the DRAM-resident work: attention, active FFN rows, predictor, LM head.
The solver picks the window k and the share of neurons pinned statically in DRAM that minimise
latency under a DRAM budget; the naive baseline reads every weight that does not fit in the budget
from flash each token in large sequential chunks and runs the dense FFN.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hardware.spec import Hardware
from perfmodel import rates, shapes
from perfmodel.ops import Precision
from perfmodel.roofline import matmul_dtype_rate
from perfmodel.tiers import flash_read_time_s, transfer_time_s
from solvers.scenario_args import from_scenario
from workloads.model import ModelSpec
from workloads.scenario import Scenario


class FlashError(ValueError):
    """Bad input or a budget that cannot hold the resident minimum; says what is missing."""


@dataclass(frozen=True)
class NeuronActivity:
    """FFN activity per token: active fraction a (after the predictor) and persistence p."""

    active_fraction: float = 0.10
    persistence: float = 0.7

    def __post_init__(self):
        a, p = self.active_fraction, self.persistence
        if not (isinstance(a, (int, float)) and math.isfinite(a) and 0 < a < 1):
            raise FlashError(f"active_fraction: {a!r} must be between 0 and 1 (exclusive)")
        if not (isinstance(p, (int, float)) and math.isfinite(p) and a <= p <= 1):
            raise FlashError(f"persistence: {p!r} must be between active_fraction ({a:g}; independent "
                             f"tokens) and 1")

    @property
    def turn_on(self) -> float:
        """q: probability an inactive neuron becomes active at the next token."""
        a = self.active_fraction
        return a * (1 - self.persistence) / (1 - a)


def new_fraction(activity: NeuronActivity, window):
    """Share of FFN neurons loaded per token with a window of `window` past tokens kept in DRAM."""
    k = np.asarray(window, dtype=float)
    a, q = activity.active_fraction, activity.turn_on
    return np.where(k > 0, (1 - a) * (1 - q) ** np.maximum(k - 1, 0) * q, a)


def resident_fraction(activity: NeuronActivity, window):
    """Share of FFN neurons in DRAM at peak: the union over the window and the current token."""
    k = np.asarray(window, dtype=float)
    return 1 - (1 - activity.active_fraction) * (1 - activity.turn_on) ** k


# -- model sizes ---------------------------------------------------------------------------------------
def ffn_sizes(model: ModelSpec) -> dict:
    """Neurons of all FFN layers (dense FFN width, or every routed + shared expert's width) and the
    matrices each neuron spans (gate, up, down for gated FFNs; up, down otherwise)."""
    neurons = model.n_dense_ffn_layers * model.d_ff
    if model.is_moe:
        neurons += model.n_moe_layers * (model.n_experts * model.moe_d_ff + model.shared_d_ff)
    return {"neurons": float(neurons), "mats": 3 if model.ffn_gated else 2}


def dram_parts(model: ModelSpec, w_bits: float, predictor_rank: int) -> dict:
    """Bytes of what always stays in DRAM, and of the whole FFN (weights of its neurons), for weights
    of `w_bits`: the total is `perfmodel.shapes.weight_bytes` (linear layers with the sub-8-bit group
    overhead, embeddings, LM head and norms unquantized), the FFN and predictor at the linear layers'
    stored bytes per weight."""
    bpp = _bits(w_bits)
    ffn = ffn_sizes(model)
    ffn_bytes = ffn["neurons"] * ffn["mats"] * model.d_model * bpp
    total = float(shapes.weight_bytes(model, Precision(w_bits, 16, 16)))
    embeddings = model.embedding_params() * float(shapes.unquantized_bytes_per_param(w_bits))
    ffn_layers = model.n_dense_ffn_layers + model.n_moe_layers
    predictor = (ffn_layers * model.d_model * predictor_rank + ffn["neurons"] * predictor_rank) * bpp
    return {"total": total, "ffn": ffn_bytes, "embeddings": embeddings,
            "attention": total - ffn_bytes - embeddings, "predictor": predictor}


# -- per-token latency ---------------------------------------------------------------------------------
def _bits(w_bits) -> float:
    """Stored bytes per linear weight at `w_bits`, the sub-8-bit group overhead included
    (`perfmodel.shapes.weight_bytes_per_param`)."""
    if not (isinstance(w_bits, (int, float)) and 1 <= w_bits <= 32):
        raise FlashError(f"w_bits: {w_bits!r} must be between 1 and 32")
    return float(shapes.weight_bytes_per_param(w_bits))


def _rates(hw: Hardware, device: str, w_bits: float = 16) -> tuple:
    """(FLOP/s, memory bytes/s, needs a host-link copy) of the device running the model. On a GPU
    the GEMM rate is the one the model's precision selects with 16-bit activations (weight-only
    formats dequantize to bf16: `perfmodel.roofline.matmul_dtype_rate`), calibrated when measured
    (`perfmodel.rates`), never the fastest dtype the device lists."""
    if device == "cpu":
        return hw.cpu_flops_per_s, hw.dram_bytes_per_s, False
    if device == "gpu":
        flops = float(matmul_dtype_rate(hw, w_bits, 16))
        return flops, rates.memory_bytes_per_s(hw), hw.kind == "gpu"
    raise FlashError(f"device: {device!r} must be 'cpu' or 'gpu'")


def flash_token_latency(model: ModelSpec, hw: Hardware, window, static_fraction=0.0,
                        activity: NeuronActivity = NeuronActivity(), w_bits: float = 16, bundling: bool = True,
                        parallel_reads: float = 32, predictor_rank: int = 128, neuron_overhead_s: float = 5e-6,
                        device: str = "cpu", context: int = 512) -> dict:
    """Per-token latency parts (seconds) and DRAM bytes for windows and static shares (arrays broadcast).

    io_s: new neurons' chunks from flash (plus the host link for a discrete GPU); memory_s: inserting
    and evicting them in DRAM; compute_s: roofline of attention, active FFN rows, predictor and head.
    """
    bpp = _bits(w_bits)
    k = np.asarray(window, dtype=float)
    static = np.asarray(static_fraction, dtype=float)
    if np.any(k < 0) or np.any(k != np.floor(k)):
        raise FlashError(f"window: {window!r} must be whole numbers of tokens >= 0")
    if np.any(~np.isfinite(static)) or np.any(static < 0) or np.any(static > 1):
        raise FlashError(f"static_fraction: {static_fraction!r} must be between 0 and 1")
    ffn, parts = ffn_sizes(model), dram_parts(model, w_bits, predictor_rank)
    flops_rate, mem_rate, over_link = _rates(hw, device, w_bits)
    neuron_bytes = ffn["mats"] * model.d_model * bpp
    chunk = neuron_bytes if bundling else model.d_model * bpp
    loaded = (1 - static) * new_fraction(activity, k) * ffn["neurons"]
    io = flash_read_time_s(loaded * neuron_bytes, chunk, parallel_reads, hw.flash_read_bytes_per_s,
                           hw.flash_latency_s)
    if over_link:
        io = io + transfer_time_s(loaded * neuron_bytes, hw.host_link_bytes_per_s, hw.host_link_latency_s)
    memory = loaded * (neuron_overhead_s + 2 * neuron_bytes / hw.dram_bytes_per_s)
    compute = _compute_s(model, parts, activity.active_fraction * parts["ffn"], flops_rate, mem_rate, w_bits, context)
    ffn_dram = parts["ffn"] * (static + (1 - static) * resident_fraction(activity, k))
    fixed = parts["attention"] + parts["embeddings"] + parts["predictor"]
    return {"window": k, "static_fraction": static, "new_neurons": loaded, "io_s": io, "memory_s": memory,
            "compute_s": compute, "latency_s": io + memory + compute, "dram_bytes": fixed + ffn_dram,
            "ffn_dram_bytes": ffn_dram, "fixed_dram_bytes": fixed}


def _compute_s(model, parts, ffn_bytes, flops_rate, mem_rate, w_bits, context):
    """Roofline of one decode token: weights read once (2 FLOPs per weight; the LM head unquantized),
    plus attention over `context` cached tokens of 16-bit KV: 2 H (qk_dim + v_dim) FLOPs per cached
    token per layer (QK^T and PV; `perfmodel.shapes.attention_dims`, MLA's absorbed form included)
    and `perfmodel.shapes.kv_bytes_per_token_per_device` bytes."""
    bpp, wide = _bits(w_bits), float(shapes.unquantized_bytes_per_param(w_bits))
    head = model.vocab_size * model.d_model
    quantized = parts["attention"] + parts["predictor"] + ffn_bytes
    kv = context * shapes.kv_bytes_per_token_per_device(model, 16)
    qk_dim, v_dim = shapes.attention_dims(model)
    flops = 2 * quantized / bpp + 2 * head + 2 * context * model.n_layers * model.n_heads * (qk_dim + v_dim)
    return np.maximum(flops / flops_rate, (quantized + head * wide + kv) / mem_rate)


def naive_token_latency(model: ModelSpec, hw: Hardware, dram_budget_bytes: float, w_bits: float = 16,
                        device: str = "cpu", context: int = 512) -> float:
    """The baseline: every weight beyond the DRAM budget read from flash each token in large
    sequential chunks (at the device's bandwidth), and the dense model computed."""
    parts = dram_parts(model, w_bits, 0)
    missing = max(parts["total"] - dram_budget_bytes, 0.0)
    flops_rate, mem_rate, over_link = _rates(hw, device, w_bits)
    io = missing / hw.flash_read_bytes_per_s
    if over_link:
        io += missing / hw.host_link_bytes_per_s
    return float(io + _compute_s(model, parts, parts["ffn"], flops_rate, mem_rate, w_bits, context))


# -- the solver ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlashPlan:
    """The chosen window and static share, the per-token latency parts, DRAM use, and the baseline."""

    model: str
    hardware: str
    device: str
    dram_budget_bytes: float
    window: int
    static_fraction: float
    io_s: float
    memory_s: float
    compute_s: float
    dram_bytes: float
    new_neurons_per_token: float
    naive_latency_s: float

    @property
    def latency_s(self) -> float:
        return self.io_s + self.memory_s + self.compute_s

    @property
    def speedup(self) -> float:
        return self.naive_latency_s / self.latency_s

    def to_frame(self):
        import pandas as pd

        row = {k: getattr(self, k) for k in self.__dataclass_fields__}
        row.update(latency_s=self.latency_s, speedup=self.speedup)
        return pd.DataFrame([row])


def plan_flash(model: ModelSpec, hw: Hardware, dram_budget_bytes: float, activity: NeuronActivity = NeuronActivity(),
               w_bits: float = 16, bundling: bool = True, parallel_reads: float = 32, predictor_rank: int = 128,
               neuron_overhead_s: float = 5e-6, device: str = "cpu", context: int = 512,
               max_window: int = 64, static_steps: int = 201, scenario: Scenario | None = None) -> FlashPlan:
    """Window and static DRAM share minimising per-token latency within `dram_budget_bytes`.
    `scenario` may supply w_bits and the context (its prompt) instead (`solvers.scenario_args`).

    Every window 0..max_window is tried; for each, the largest static share that fits is best
    (more pinned neurons only remove loads), found on a grid of `static_steps` shares.
    """
    if scenario is not None:
        args = from_scenario(scenario, {"w_bits": None, "context": None}, {"w_bits": "w_bits", "context": "prompt"})
        w_bits, context = args["w_bits"], int(args["context"])
    if isinstance(dram_budget_bytes, bool) or not isinstance(dram_budget_bytes, (int, float)) or \
            not 0 < (dram_budget_bytes if isinstance(dram_budget_bytes, float) else min(dram_budget_bytes, 10**19)) <= 1e18:
        raise FlashError(f"dram_budget_bytes: {dram_budget_bytes!r:.40} must be a number of bytes above 0 and at most 1e18")
    parts = dram_parts(model, w_bits, predictor_rank)
    if parts["total"] > hw.flash_capacity_bytes:
        raise FlashError(f"flash: {model.name} needs {parts['total'] / 1e9:.1f} GB, {hw.name} has "
                         f"{hw.flash_capacity_bytes / 1e9:.1f} GB; missing "
                         f"{(parts['total'] - hw.flash_capacity_bytes) / 1e9:.1f} GB")
    minimum = parts["attention"] + parts["embeddings"] + parts["predictor"] + activity.active_fraction * parts["ffn"]
    if dram_budget_bytes < minimum:
        raise FlashError(
            f"dram_budget_bytes: {dram_budget_bytes / 1e9:.2f} GB is below the resident minimum of "
            f"{minimum / 1e9:.2f} GB for {model.name} (attention {parts['attention'] / 1e9:.2f} GB, embeddings "
            f"{parts['embeddings'] / 1e9:.2f} GB, predictor {parts['predictor'] / 1e9:.2f} GB, one token's active "
            f"FFN neurons {activity.active_fraction * parts['ffn'] / 1e9:.2f} GB); missing "
            f"{(minimum - dram_budget_bytes) / 1e9:.2f} GB")
    windows = np.arange(max_window + 1)[:, None]
    statics = np.linspace(0.0, 1.0, static_steps)[None, :]
    grid = flash_token_latency(model, hw, windows, statics, activity, w_bits, bundling, parallel_reads,
                               predictor_rank, neuron_overhead_s, device, context)
    latency = np.where(grid["dram_bytes"] <= dram_budget_bytes, grid["latency_s"], np.inf)
    i, j = np.unravel_index(np.argmin(latency), latency.shape)
    if not np.isfinite(latency[i, j]):
        raise FlashError("dram_budget_bytes: no window fits the budget")   # unreachable after the minimum check
    pick = {key: np.broadcast_to(v, latency.shape)[i, j] for key, v in grid.items()}
    return FlashPlan(model.name, hw.name, device, float(dram_budget_bytes), int(pick["window"]),
                     float(pick["static_fraction"]), float(pick["io_s"]), float(pick["memory_s"]),
                     float(pick["compute_s"]), float(pick["dram_bytes"]), float(pick["new_neurons"]),
                     naive_token_latency(model, hw, dram_budget_bytes, w_bits, device, context))
