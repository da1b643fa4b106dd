"""Predict the time of each validation case from the cost model (no torch needed).

Each case kind maps onto the same perfmodel functions a deployment prediction uses: GEMMs and
vector ops through `perfmodel.ops` + `perfmodel.roofline`, attention through `attention_op`, whole
model steps through `perfmodel.step_time` with the engine profile the step ran as (the case's
`engine`: hf-eager, transformers' eager step, when empty), host <-> device copies through the link
model below.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

import workloads
from hardware.spec import Hardware
from perfmodel import collectives, engines, rates
from perfmodel.ops import (Op, Precision, attention_op, cutlass_8bit_kernel, engine_quant_op, kv_append_op, matmul_op,
                           moe_ops, quant_ops, row_norm_op, vector_op)
from perfmodel.predict import step_time
from perfmodel.roofline import op_time
from validate import kinds, moe_routing
from validate.aiconfigurator import replays_one_buffer
from validate.cases import text
from workloads.model import ModelSpec

BITS = {"bf16": 16, "fp16": 16, "fp32": 32, "fp8": 8}

#: The eager PyTorch profile the suite's unfused vector kernels are written as (validate/bench.py).
HF_EAGER = engines.load("hf-eager")


def graphed(case: dict) -> bool:
    """Whether the case was timed inside CUDA-graph replays (device time only, no host dispatch)."""
    timing = text(case, "timing") or "eager"
    if timing not in ("eager", "graph"):
        raise ValueError(f"{case.get('kind')} case: timing = {timing!r} must be 'graph' or empty (eager)")
    return timing == "graph"


def _seconds(t, graph: bool):
    """Device time for a graph-timed case; max(device time, host dispatch) for one issued from eager
    PyTorch and timed back to back."""
    return t.time_s if graph else t.eager_time_s


def _time(op: Op, hw: Hardware, p: Precision, case: dict) -> float:
    return float(_seconds(op_time(op, hw, p), graphed(case))) * op.count


def _precision(dtype: str) -> Precision:
    if dtype not in BITS:
        raise ValueError(f"dtype: {dtype!r} is not one of {sorted(BITS)}")
    bits = BITS[dtype]
    return Precision(bits, bits, 16)


def predict_matmul_wo(case: dict, hw: Hardware) -> float:
    group = _num(case, "group", default=0) or 1e9  # per-channel int8: no group overhead
    p = Precision(_num(case, "w_bits"), 16, 16, group, weight_only_kernel="torch")
    return _time(matmul_op("matmul_wo", _num(case, "m"), _num(case, "n"), _num(case, "k"), p, 1), hw, p, case)


def attention_model(heads: int, kv_heads: int, head_dim: int, v_head_dim: int = 0) -> ModelSpec:
    """A one-layer stand-in carrying just the attention shapes of a case (value heads
    `v_head_dim` wide where they differ from head_dim; 0: alike)."""
    return ModelSpec(name="attention-case", family="llama", n_layers=1, d_model=heads * head_dim,
                     n_heads=heads, n_kv_heads=kv_heads, head_dim=head_dim, d_ff=1, vocab_size=1,
                     v_head_dim=v_head_dim)


def case_attention_model(case: dict) -> ModelSpec:
    """`attention_model` of an attention case's head layout (its optional v_head_dim: blank or
    0 for value heads as wide as head_dim)."""
    return attention_model(*(int(_num(case, key)) for key in ("heads", "kv_heads", "head_dim")),
                           int(_num(case, "v_head_dim", default=0.0)))


def transfer_rate(hw: Hardware, direction: str, pinned: bool) -> tuple[float, float]:
    """(bytes/s, latency s) of a host <-> device copy: calibrated per direction and memory kind, else
    the host link's datasheet rate (`perfmodel.rates`)."""
    return rates.host_link_bytes_per_s(hw, direction, pinned), rates.host_link_latency_s(hw)


def predict_copy(case: dict, hw: Hardware) -> float:
    size = _num(case, "bytes")
    direction = case["direction"]
    if direction == "d2d":
        p = Precision(16, 16, 16)
        op = Op("copy", "elementwise", 1, flops=0.0, weight_bytes=0.0, act_bytes=2.0 * size)
        return _time(op, hw, p, case)
    if direction not in ("h2d", "d2h"):
        raise ValueError(f"direction: {direction!r} is not one of d2d, h2d, d2h")
    rate, latency = transfer_rate(hw, direction, bool(int(_num(case, "pinned"))))
    dispatch = hw.calibration.dispatch_s if hw.calibration else 0.0
    return max(latency + size / rate, dispatch)


def predict_kv_append(case: dict, hw: Hardware) -> float:
    """The cache concatenation op of the HF step model, for one layer's K (or V)."""
    p = _precision(case["dtype"])
    b, kv, s, d = (_num(case, k) for k in ("batch", "kv_heads", "kv_len", "head_dim"))
    model = attention_model(int(kv), int(kv), int(d))
    op = kv_append_op(model, seqs=b, new_tokens=1.0, past=s, p=p, tp=1)
    # kv_append_op counts K and V (2 kernels); one case concatenates one tensor
    half = Op("kv_cat", "concat", 1, flops=0.0, weight_bytes=0.0, act_bytes=0.0, kv_bytes=op.kv_bytes / 2)
    return _time(half, hw, p, case)


def predict_launch(case: dict, hw: Hardware) -> float:
    """Tiny kernels replayed from a CUDA graph: each costs the device floor (no host dispatch)."""
    p = Precision(32, 32, 16)
    op = vector_op("add", "elementwise", 256, 1, 3.0, 1.0, p, int(_num(case, "kernels")))
    return float(op_time(op, hw, p).time_s) * op.count


def predict_elementwise(case: dict, hw: Hardware) -> float:
    p = _precision(case["dtype"])
    n = _num(case, "elements")
    if case["op"] == "add":
        op = vector_op("add", "elementwise", n, 1, 3.0, 1.0, p, 1)
    elif case["op"] == "silu_mul":  # eager: silu (read, write) then multiply (2 reads, write)
        op = vector_op("silu_mul", "elementwise", n, 1, HF_EAGER.act_passes, 5.0, p, 1, kernels=HF_EAGER.act_kernels)
    else:
        raise ValueError(f"op: {case['op']!r} is not one of add, silu_mul")
    return _time(op, hw, p, case)


def predict_norm(case: dict, hw: Hardware) -> float:
    p = _precision(case["dtype"])
    tokens, width = _num(case, "tokens"), _num(case, "width")
    if case["op"] == "rmsnorm":  # transformers' RMSNorm, op for op
        op = vector_op("rmsnorm", "norm", tokens, width, HF_EAGER.norm_passes, 4.0, p, 1, width, HF_EAGER.norm_kernels)
    elif case["op"] == "layernorm":  # torch.nn.functional.layer_norm: ATen's row-per-block kernel
        op = row_norm_op("layernorm", tokens, width, p, 1, 2 * width)
    else:
        raise ValueError(f"op: {case['op']!r} is not one of rmsnorm, layernorm")
    return _time(op, hw, p, case)


def predict_matmuls(cases: list[dict], hw: Hardware) -> np.ndarray:
    """GEMM cases of one dtype, as one array; a case timed inside an engine whose 8-bit GEMMs are
    CUTLASS kernels (Engine.fp8_gemm_split_k false) runs as one (ops.CUTLASS_8BIT)."""
    p = _precision(cases[0]["dtype"])
    m, k = _column(cases, "m"), _column(cases, "k")
    op = matmul_op("matmul", m, _column(cases, "n"), k, p, 1)
    times = _times(op, hw, p, cases)
    names = [text(c, "engine") for c in cases]
    splits = {name: engines.load(name).fp8_gemm_split_k for name in set(names) if name}  # one profile read each
    for engine in sorted(name for name, split in splits.items() if not split):  # each engine's own tiles
        mine = np.array([name == engine for name in names])
        times = np.where(mine, _times(dataclasses.replace(op, kernel=cutlass_8bit_kernel(engine)), hw, p, cases), times)
    quant = np.array([_num(c, "act_quant", default=0.0) for c in cases])
    if np.any(quant > 0):  # the dynamic activation quantization timed with the GEMM (fp8 serving)
        times = times + np.where(quant > 0, _act_quant_times(cases, m, k, p, hw, int(quant.max())), 0.0)
    return times


def _act_quant_times(cases: list[dict], m, k, p: Precision, hw: Hardware, kernels: int) -> np.ndarray:
    """Time of the dynamic activation quantization inside each fp8 GEMM case: the case's engine's own
    path where the spec has it fitted (ops.engine_quant_op), else an amax pass and a scale-and-cast
    kernel as the suite's own cases run them (ops.quant_ops)."""
    fitted = hw.calibration.act_quant_engine_latency_s if hw.calibration else {}
    engine = np.array([text(c, "engine") for c in cases], dtype=object)
    out = np.zeros(len(cases))
    for name in set(engine):
        ops = [engine_quant_op(m, k, p, kernels, name)] if name in fitted else quant_ops(m, k, p, kernels, 1)
        seconds = sum(np.asarray(_seconds(op_time(q, hw, p), graphed(cases[0])), dtype=float) for q in ops)
        out = np.where(engine == name, seconds, out)
    return out


def attention_family(case: dict, compute_units: float | None = None, architecture: str | None = None) -> str:
    """The attention kernel family a case ran: its engine profile's choice for the phase (a case
    measured inside vLLM ran FlashAttention, inside TensorRT-LLM its XQA / FMHA kernels, or its
    masked MHA kernel for a decode XQA declines: Engine.decode_kernels, given the device's
    `compute_units`; heads wider than the engine's families take on the device's `architecture`
    ran its wide-head family: Engine.wide_heads), or the suite's own SDPA kernel ("sdpa-<phase>",
    falling back to the spec's default) when the case names no engine."""
    phase = "prefill" if case.get("phase") == "prefill" else "decode"
    engine = text(case, "engine")
    if not engine:  # the suite's own cases: PyTorch's scaled_dot_product_attention
        return f"sdpa-{phase}"
    profile = engines.load(engine)
    head_dim = _num(case, "head_dim", default=0.0) or None
    if phase == "prefill" or compute_units is None:
        return profile.attention_kernel(phase, head_dim=head_dim, architecture=architecture)
    return profile.decode_kernels(group=_num(case, "heads") / max(_num(case, "kv_heads"), 1.0),
                                  kv_heads=_num(case, "kv_heads"), batch=_num(case, "batch"),
                                  history=_num(case, "kv_len") - 1.0, compute_units=compute_units,
                                  head_dim=head_dim, architecture=architecture)


def predict_attentions(cases: list[dict], hw: Hardware) -> np.ndarray:
    """Attention cases of one head layout, dtype and engine, as one array."""
    return attention_times(attention_ops(cases, hw.compute_units, hw.architecture), hw, cases)


def attention_ops(cases: list[dict], compute_units: float, architecture: str | None = None) -> tuple[Precision, list]:
    """(precision, [(rows, op)]) of attention cases of one head layout, dtype and engine: one op per
    kernel family that ran some of them (TensorRT-LLM decodes: XQA or masked MHA), `rows` a mask of
    the cases it ran. What a spec's calibration does not change (`CaseSet` keeps it for a fit)."""
    c0 = cases[0]
    p = _precision(c0["dtype"])
    model = case_attention_model(c0)
    q_len, kv_len = _column(cases, "q_len"), _column(cases, "kv_len")
    families = np.array([attention_family(c, compute_units, architecture) for c in cases], dtype=object)
    warm = np.array([replays_one_buffer(c) for c in cases])
    ops = []
    for family in dict.fromkeys(families):
        # a masked static cache scores every query against all kv_len positions: q_len x kv_len pairs,
        # which ops.attention_pairs gives at past = kv_len - (q_len + 1) / 2 (serving.simulator prices
        # a static cache's chunks the same way)
        past = kv_len - (q_len + 1) / 2 if family.startswith("sdpa-masked") else kv_len - q_len
        op = attention_op(model, seqs=_column(cases, "batch"), new_tokens=q_len, past=past, p=p, tp=1, kernel=family)
        if warm.any():  # a table's rows replayed on one cache: L2-resident where it fits
            op = dataclasses.replace(op, warm_l2=True if warm.all() else warm)
        ops.append((families == family, op))
    return p, ops


def attention_times(prepared: tuple[Precision, list], hw: Hardware, cases: list[dict]) -> np.ndarray:
    """Times of attention cases from their `attention_ops`."""
    p, ops = prepared
    out = np.zeros(len(cases))
    for rows, op in ops:
        out = np.where(rows, _times(op, hw, p, cases), out)
    return out


def step_precision(dtype: str) -> Precision:
    """Bits of a whole-model step: bf16/fp16/fp32 throughout, or fp8 weights and GEMM activations
    (per-tensor scales) with a 16-bit KV cache, as the serving engines' fp8 checkpoints run."""
    if dtype == "fp8":
        return Precision(8, 8, 16)
    return _precision(dtype)


def predict_model_steps(cases: list[dict], hw: Hardware) -> np.ndarray:
    """Whole-model steps of one model, depth, phase, dtype and engine profile, as one array."""
    c0 = cases[0]
    model = workloads.load(c0["model"])
    model = dataclasses.replace(model, n_layers=int(_num(c0, "layers", default=model.n_layers)))
    p = step_precision(c0["dtype"])
    engine = engines.load(text(c0, "engine") or "hf-eager")
    batch, q_len, kv_len = _column(cases, "batch"), _column(cases, "q_len"), _column(cases, "kv_len")
    if c0["phase"] == "prefill":
        totals = step_time(model, hw, seqs=batch, new_tokens=q_len, past=kv_len - q_len, p=p, tp=1,
                           sparse_budget=0, logits_tokens=batch, engine=engine)
    elif c0["phase"] == "decode":
        totals = step_time(model, hw, seqs=batch, new_tokens=1.0, past=kv_len, p=p, tp=1, sparse_budget=0,
                           logits_tokens=batch, engine=engine)
    else:
        raise ValueError(f"phase: {c0['phase']!r} is not one of prefill, decode")
    return np.asarray(totals["time_s"], dtype=float) * np.ones(len(cases))


def _times(op: Op, hw: Hardware, p: Precision, cases: list[dict]) -> np.ndarray:
    """Times of a group of like cases (one timing: the group key includes it)."""
    return np.asarray(_seconds(op_time(op, hw, p), graphed(cases[0])), dtype=float) * np.ones(len(cases))


def predict_allreduce(case: dict, hw: Hardware) -> float:
    """One all-reduce of `bytes` per device over `tp` devices: the engine's custom all-reduce (the
    case's `engine`) or NCCL's (perfmodel.collectives)."""
    size, tp = _num(case, "bytes"), _num(case, "tp")
    strategy = text(case, "strategy") or "nccl"
    if strategy not in ("custom", "nccl"):
        raise ValueError(f"allreduce case: strategy = {strategy!r} must be 'custom' or 'nccl'")
    if strategy == "custom":  # the case's engine's own kernel where the spec has its parameters
        return float(collectives.custom_allreduce_time_s(size, tp, hw, text(case, "engine")))
    return float(collectives.allreduce_time_s(size, tp, hw))


def predict_moe(case: dict, hw: Hardware) -> float:
    """One MoE layer for `tokens` tokens on one device of an expert-parallel group: experts split
    over moe_ep devices, each expert's matrices over moe_tp (perfmodel.ops.moe_ops), run by the
    case's fused-MoE kernel family (`moe_family`). A case naming its routing `distribution` is a
    benchmark's layer (aiconfigurator's collectors): the router logits are its input (no router
    GEMM is timed) and the device's load follows that workload (validate/moe_routing.py); else the
    layer runs its router and routing is uniform (our suite's torch.compile'd layer). `gated` 0:
    expert FFNs of two matrices (up, down), else three (gate, up, down)."""
    experts, top_k = int(_num(case, "experts")), int(_num(case, "top_k"))
    hidden, inter = int(_num(case, "hidden")), int(_num(case, "inter"))
    tokens, ep = _num(case, "tokens"), _num(case, "moe_ep", default=1.0) or 1.0
    spec = ModelSpec(name="moe-case", family="qwen3_moe", n_layers=1, d_model=hidden, n_heads=1, n_kv_heads=1,
                     head_dim=hidden, d_ff=0, vocab_size=1, n_experts=experts, top_k=top_k, moe_d_ff=inter,
                     ffn_gated=_num(case, "gated", default=1.0) != 0.0)
    p = step_precision(text(case, "dtype") or "bf16")
    workload = text(case, "distribution")
    routed = moe_routing.rank0_load(tokens, experts, top_k, ep, workload)
    ops = moe_ops(spec, tokens, p, _num(case, "moe_tp", default=1.0) or 1.0, ep=ep, routed=routed,
                  family=moe_family(case))
    return sum(float(op_time(op, hw, p).time_s) * op.count for op in ops if not (workload and op.name == "router"))


#: Fused-MoE kernel families (Engine.moe_kernel) by what a table row's kernel name holds (every
#: part), first match: aiconfigurator's kernel_source of its MoE rows.
MOE_KERNEL_FAMILIES = ((("flashinfer", "cutlass"), "flashinfer-cutlass"), (("moe_torch_flow",), "trtllm-cutlass"),
                       (("sglang", "triton"), "sglang-triton"), (("vllm", "triton"), "vllm-triton"))


def moe_family(case: dict) -> str:
    """The fused-MoE kernel family that ran a MoE case: named by its kernel (MOE_KERNEL_FAMILIES),
    else its engine profile's (Engine.moe_kernel), else "" (the generic grouped GEMM)."""
    kernel = text(case, "kernel").lower()
    for parts, family in MOE_KERNEL_FAMILIES:
        if all(part in kernel for part in parts):
            return family
    engine = text(case, "engine")  # (the suite's own cases name none: no profile lookup)
    return engines.load(engine).moe_kernel if engine and engine in engines.names() else ""


def predict_act_quant(case: dict, hw: Hardware) -> float:
    """fp8 quantization of one tokens x width activation as the case's engine runs it
    (perfmodel.ops.quant_ops; torch-compile when the case names no engine)."""
    engine = engines.load(text(case, "engine") or "torch-compile")
    p = Precision(8, 8, 16)
    ops = quant_ops(_num(case, "tokens"), _num(case, "width"), p, max(engine.act_quant_kernels, 1), 1)
    return sum(float(_seconds(op_time(op, hw, p), graphed(case))) * op.count for op in ops)


#: Every kind this module predicts (validate.kinds: a vectorized kind's predictor takes a group of
#: like cases; predict_case runs it on a one-case group).
KINDS = kinds.NAMES


def _predictor(kind: kinds.CaseKind):
    """The function of this module its record names (tests/validate/test_kinds.py: every one exists)."""
    return globals()[kind.predict]


def regime(kind: kinds.CaseKind, hw: Hardware) -> Hardware:
    """The spec as the kind's cases ran: whole steps under load (the board at its power limit), single
    kernels in short bursts (`perfmodel.rates.at_burst`)."""
    return hw if kind.under_load else rates.at_burst(hw)


def predict_case(case: dict, hw: Hardware) -> float:
    """Predicted seconds for one case row (kind + parameters)."""
    kind = kinds.of(case)
    hw = regime(kind, hw)
    if kind.vectorized:
        return float(_predictor(kind)([case], hw)[0])
    return _predictor(kind)(case, hw)


def predict_frame(frame, hw: Hardware, column: str = "predicted_s"):
    """A copy of a cases DataFrame with a column of predictions beside each row."""
    out = frame.copy()
    out[column] = predict_many([_row(r) for r in frame.to_dict("records")], hw)
    return out


def _row(record: dict) -> dict:
    return {k: v for k, v in record.items() if not (isinstance(v, float) and math.isnan(v))}


def _num(case: dict, key: str, default=None) -> float:
    value = case.get(key, default)
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        if default is not None:
            return default
        raise ValueError(f"{case.get('kind')} case: missing {key}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{case.get('kind')} case: {key} = {value!r} is not a number") from None
    if not np.isfinite(number) or number < 0:
        raise ValueError(f"{case.get('kind')} case: {key} = {value!r} must be a finite number >= 0")
    return number


# -- vectorized: one perfmodel call per group of like cases (calibration evaluates thousands) ------

def _group_key(case: dict) -> tuple:
    kind = kinds.of(case)
    return (kind.name, text(case, "timing")) + tuple(text(case, k) for k in kind.group_by)


def _column(cases: list[dict], key: str) -> np.ndarray:
    return np.array([_num(c, key) for c in cases])


def predict_many(cases: list[dict], hw: Hardware) -> np.ndarray:
    """Predicted seconds for every case, evaluating each group of like cases as one array."""
    return CaseSet(cases).predict(hw)


class CaseSet:
    """Cases grouped once (like cases, one array each) for predictions under many specs: a fit
    prices the same cases hundreds of times, only the calibration changing. What no calibration
    changes is kept per device (its SM count picks TensorRT-LLM's decode kernel): the groups and
    each attention group's ops, whose construction took 80% of a fit's time."""

    def __init__(self, cases: list[dict]):
        self.size = len(cases)
        groups: dict[tuple, list[int]] = {}
        for i, case in enumerate(cases):
            groups.setdefault(_group_key(case), []).append(i)
        self.groups = [(kinds.BY_NAME[key[0]], np.array(index), [cases[i] for i in index])
                       for key, index in groups.items()]
        self._attention: dict = {}  # (group, compute units, architecture) -> attention_ops

    def predict(self, hw: Hardware) -> np.ndarray:
        """Predicted seconds for every case, in the cases' order."""
        out = np.empty(self.size)
        for g, (kind, index, members) in enumerate(self.groups):
            spec = regime(kind, hw)
            if kind.predict == predict_attentions.__name__:
                key = (g, spec.compute_units, spec.architecture)
                if key not in self._attention:
                    self._attention[key] = attention_ops(members, spec.compute_units, spec.architecture)
                out[index] = attention_times(self._attention[key], spec, members)
            elif kind.vectorized:
                out[index] = _predictor(kind)(members, spec)
            else:
                out[index] = [predict_case(c, hw) for c in members]
        return out


