"""Hardware costs of a bit allocation: bytes of weights and modeled decode-step latency.

Both are linear in the widths, so the convex problem stays convex and the MILP linear:

    bytes            = sum_j n_j (R_j + o_j) / 8                       (o_j: scale/zero bits per weight)
    latency          = fixed + sum_L [ max(compute_L, base_L + s_L * sum_{j in L} n_j b_j) + overhead_L ]

where b_j = stored bits per weight of group j over the format's kernel speed factor, and compute_L,
base_L (activation traffic), s_L (seconds per weight-bit) and overhead_L come from the project's
roofline: `perfmodel.ops.matmul_op` + `perfmodel.roofline.op_time` evaluated for each layer's GEMM
shape at two widths (memory time is affine in the width; the datasheet or calibrated bandwidth of the
spec sets the slope). The max() is convex in the widths, so the exact roofline stays in the model.
`fixed` is the rest of an engine's decode step (`engine`: a perfmodel.engines profile or its name,
DEFAULT_ENGINE unless given); the quantizable GEMMs are cuBLAS-style kernels whatever the engine.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from hardware.spec import Hardware
from perfmodel import shapes
from perfmodel.engines import DEFAULT_ENGINE, Engine
from perfmodel.ops import Precision, matmul_op, step_ops
from perfmodel.predict import step_time
from perfmodel.roofline import op_time
from solvers.scenario_args import from_scenario
from workloads.model import ModelSpec
from workloads.scenario import Scenario

#: Scale + zero bits per weight of sub-8-bit layouts at groups of 128 (GPTQ / AWQ checkpoints), from
#: the one owner of that overhead, `perfmodel.shapes.group_overhead_bits`.
GROUP_OVERHEAD_BITS = float(shapes.group_overhead_bits(4, 128))

#: Matmuls of `step_ops` that stay 16-bit when weights are quantized (GPTQ/AWQ keep them).
UNQUANTIZED = ("lm_head", "router")


@dataclass(frozen=True)
class WeightFormat:
    """A storage format a layer can take. bits: nominal width (counted by the average-bit budget);
    bits_per_param: stored bits with scales; loss_bits: width of asymmetric round-to-nearest with the
    same error (feeds the loss model; inf = lossless); speed: achieved fraction of the bf16 kernel's
    memory bandwidth for memory-bound (decode) GEMMs."""

    name: str
    bits: float
    bits_per_param: float
    loss_bits: float
    speed: float = 1.0
    source: str = ""

    @property
    def effective_bits(self) -> float:
        """Bits of memory traffic per weight, in bf16-kernel-equivalent time."""
        return self.bits_per_param / self.speed


#: Formats for per-layer choices. Numbers and where they come from:
FORMATS = {
    "int4-g128": WeightFormat(
        "int4-g128", 4, 4 + GROUP_OVERHEAD_BITS, 4, 0.9,
        "bytes: 4-bit weights + 16-bit scale and zero per 128 (GPTQ/AWQ layout). speed 0.9 is a MODEL "
        "ASSUMPTION: the Marlin kernel (IST-DASLab/marlin README, arXiv 2408.11743) claims close to the "
        "ideal 4x over fp16 up to batch 16-32, i.e. near full bandwidth; we take 90% of it."),
    "int8": WeightFormat(
        "int8", 8, 8, 8, 1.0,
        "bytes: 8-bit weights, one scale per output row (negligible). speed 1.0 is a MODEL ASSUMPTION: "
        "a memory-bound int8 GEMV streams weights at the bf16 kernel's bandwidth."),
    "fp8": WeightFormat(
        "fp8", 8, 8, 6.3, 1.0,
        "bytes: e4m3 weights, per-row scale (negligible). loss_bits 6.3 is DERIVED: e4m3 with per-row "
        "absmax scaling has the error of asymmetric 6.3-bit RTN on Gaussian rows (checked in "
        "tests/validate/test_quantize.py). speed 1.0 is a MODEL ASSUMPTION, as for int8."),
    "bf16": WeightFormat(
        "bf16", 16, 16, math.inf, 1.0,
        "the unquantized checkpoint (no added loss); speed 1.0 by definition (the reference kernel)."),
}


def width_format(bits: float, group_overhead_bits: float = GROUP_OVERHEAD_BITS) -> WeightFormat:
    """An integer RTN width as a format: sub-8-bit widths carry the group scales, 16 bits is lossless."""
    bits = float(bits)
    if not (math.isfinite(bits) and bits > 0):
        raise ValueError(f"candidates: width {bits!r} must be a finite number greater than zero")
    overhead = group_overhead_bits if bits < 8 else 0.0
    return WeightFormat(f"int{bits:g}", bits, bits + overhead, math.inf if bits >= 16 else bits, 1.0,
                        "round-to-nearest integer width")


def formats_from(candidates) -> tuple[WeightFormat, ...]:
    """Candidates as formats: names from FORMATS, numbers as integer widths, or WeightFormat objects."""
    out = []
    for c in candidates:
        if isinstance(c, WeightFormat):
            out.append(c)
        elif isinstance(c, str) and c in FORMATS:
            out.append(FORMATS[c])
        else:
            try:
                out.append(width_format(float(c)))
            except (TypeError, ValueError):
                raise ValueError(f"candidates: {c!r} is neither a width nor a format ({', '.join(FORMATS)})") from None
    if not out:
        raise ValueError("candidates: at least one width or format is needed")
    return tuple(out)


@dataclass(frozen=True)
class LayerCosts:
    """Per-layer decode-step costs, linear in each layer's weight bits (see module doc).

    Arrays have one entry per layer; `fixed_s` is the rest of the step (attention, norms, LM head)."""

    names: tuple
    compute_s: np.ndarray
    base_s: np.ndarray
    s_per_bit: np.ndarray
    overhead_s: np.ndarray
    fixed_s: float = 0.0

    @property
    def size(self) -> int:
        return len(self.names)

    def layer_time_s(self, bit_sums) -> np.ndarray:
        """Time of each layer given sum_{j in L} n_j b_j (weight bits moved, speed-adjusted)."""
        return np.maximum(self.compute_s, self.base_s + self.s_per_bit * bit_sums) + self.overhead_s

    def time_s(self, bit_sums) -> float:
        return float(self.fixed_s + self.layer_time_s(bit_sums).sum())

    def bit_sums(self, layers, params, eff_bits) -> np.ndarray:
        """sum_{j in L} n_j b_j per layer from per-group arrays."""
        if np.any(layers >= self.size):
            raise ValueError(f"layer: groups refer to layer {int(layers.max())} but the costs have {self.size}")
        return np.bincount(layers, weights=params * eff_bits, minlength=self.size)


def layer_costs(rows, cols, hw: Hardware, tokens=1, names=(), fixed_s: float = 0.0,
                a_bits: float = 16) -> LayerCosts:
    """Costs of y = x W^T for W of rows x cols per layer, at `tokens` rows of x (decode batch).

    The roofline op is evaluated at 16 and 32 bits (no group overhead at >= 8 bits), so the slope is
    exactly perfmodel's bytes / bandwidth per weight-bit and the intercept its activation traffic."""
    rows, cols = np.asarray(rows, dtype=float), np.asarray(cols, dtype=float)
    if rows.shape != cols.shape or rows.ndim != 1 or np.any(~(rows > 0)) or np.any(~(cols > 0)):
        raise ValueError("rows, cols: need one positive shape per layer")
    lo, hi = Precision(16, a_bits, 16), Precision(32, a_bits, 16)
    t_lo = op_time(matmul_op("w", tokens, rows, cols, lo, 1), hw, lo)
    t_hi = op_time(matmul_op("w", tokens, rows, cols, hi, 1), hw, hi)
    s_per_bit = (np.asarray(t_hi.memory_s) - t_lo.memory_s) / 16.0 / (rows * cols)
    base = t_lo.memory_s - 16.0 * s_per_bit * rows * cols
    names = tuple(names) if len(names) else tuple(f"layer{i}" for i in range(rows.size))
    full = lambda v: np.broadcast_to(np.asarray(v, dtype=float), rows.shape).copy()  # noqa: E731
    return LayerCosts(names, full(t_lo.compute_s), full(base), full(s_per_bit), full(t_lo.overhead_s), float(fixed_s))


def model_layer_table(model: ModelSpec, tokens=1):
    """The quantizable linear layers of a catalog model, one row per layer instance:
    layer ("layers.{i}.{op}"), rows (output features), cols (input features)."""
    import pandas as pd

    p = Precision(16, 16, 16)
    rows = []
    for op in step_ops(model, seqs=tokens, new_tokens=1, past=0, p=p):
        if op.kind == "matmul" and op.name not in UNQUANTIZED:
            rows += [{"layer": f"layers.{i}.{op.name}", "rows": float(op.n), "cols": float(op.k)}
                     for i in range(op.count)]
    return pd.DataFrame(rows)


def fixed_step_time_s(model: ModelSpec, hw: Hardware, tokens=None, context=None, a_bits=None, kv_bits=None,
                      engine: Engine | str = DEFAULT_ENGINE, scenario: Scenario | None = None) -> float:
    """Decode-step time of everything but the quantizable linears (attention over `context` cached
    tokens, norms, embedding, LM head, router, host time): `engine`'s whole 16-bit step minus those
    linears' roofline times. Exact when the step is device-bound; when host dispatch bounds the
    step (eager frameworks) the linears hide behind it and this overstates the fixed part.
    `scenario` may supply tokens (its batch), context (its prompt), a_bits and kv_bits
    (`solvers.scenario_args`; defaults 1, 0, 16, 16)."""
    args = from_scenario(scenario, {"tokens": tokens, "context": context, "a_bits": a_bits, "kv_bits": kv_bits},
                         {"tokens": "batch", "context": "prompt", "a_bits": "a_bits", "kv_bits": "kv_bits"})
    defaults = {"tokens": 1, "context": 0, "a_bits": 16, "kv_bits": 16}
    tokens, context, a_bits, kv_bits = (defaults[k] if args[k] is None else args[k] for k in defaults)
    p = Precision(16, a_bits, kv_bits)
    total = float(np.asarray(step_time(model, hw, seqs=tokens, new_tokens=1, past=context, p=p,
                                       engine=engine)["time_s"]))
    for op in step_ops(model, seqs=tokens, new_tokens=1, past=context, p=p, engine=engine):
        if op.kind == "matmul" and op.name not in UNQUANTIZED:
            total -= op.count * float(np.asarray(op_time(op, hw, p).time_s))
    return total


def costs_from_frame(frame, hw: Hardware, model: ModelSpec | None = None, tokens=1, context=0,
                     engine: Engine | str = DEFAULT_ENGINE) -> LayerCosts:
    """Layer costs for a sensitivity table: one layer per distinct `layer` label (each row its own
    layer when there is no such column), shapes from rows / cols columns or from `model`; with a
    `model`, the rest of the step is `engine`'s (`fixed_step_time_s`)."""
    import pandas as pd

    labels = frame["layer"] if "layer" in frame.columns else pd.Series(range(len(frame)))
    first = frame.assign(_label=labels.to_numpy()).drop_duplicates("_label")
    if {"rows", "cols"} <= set(frame.columns):
        from hardware.inputs import numeric_column

        rows = numeric_column(first, "rows", "sensitivities", 1, 1e7, whole=True)
        cols = numeric_column(first, "cols", "sensitivities", 1, 1e7, whole=True)
    elif model is not None:
        table = model_layer_table(model, tokens).set_index("layer")
        unknown = [str(x) for x in first["_label"] if str(x) not in table.index]
        if unknown:
            raise ValueError(f"layer: {unknown[0]!r} is not a linear layer of {model.name} "
                             f"(expected names like {table.index[0]!r}) and the table has no rows/cols columns")
        shapes = table.loc[[str(x) for x in first["_label"]]]
        rows, cols = shapes["rows"].to_numpy(float), shapes["cols"].to_numpy(float)
    else:
        raise ValueError("rows, cols: latency and memory need each layer's shape; add rows and cols columns "
                         "or give a model")
    fixed = fixed_step_time_s(model, hw, tokens, context, engine=engine) if model is not None else 0.0
    return layer_costs(rows, cols, hw, tokens, tuple(str(x) for x in first["_label"]), fixed)


def bytes_of(params, stored_bits) -> float:
    """Bytes of weights: sum_j n_j bits_j / 8."""
    return float(np.asarray(params) @ np.asarray(stored_bits, dtype=float) / 8.0)


def with_costs(result, costs: LayerCosts | None, overhead_bits: float | None = None):
    """`result` with its predicted bytes (and latency, when `costs` is given) filled in, for
    continuous widths carrying `overhead_bits` of scales per weight."""
    g, o = result.groups, GROUP_OVERHEAD_BITS if overhead_bits is None else overhead_bits
    stored = result.widths + o
    latency = costs.time_s(costs.bit_sums(g.layers, g.params, stored)) if costs is not None else math.nan
    return dataclasses.replace(result, bytes_=bytes_of(g.params, stored), latency_s=latency)
