"""One record per validation case kind: its columns, its checks, how it is predicted, how it is timed.

Everything that branches on a case's kind reads it from here: the suite and its split
(validate.cases), the row checks of a cases table (validate.case_checks), the predictions
(validate.predict_cases) and the torch timers (validate.bench). Adding a kind is adding a record
(and the predict / build functions it names). No torch and no cost model here: the record names its
predictor and its builder, and the module that owns each function looks it up by that name
(tests/validate/test_kinds.py holds every name to an existing function).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

BIG = 10**7  # tokens, rows, heads, widths
#: Compute dtypes a case may name (validate.predict_cases.BITS gives their widths).
DTYPES = ("bf16", "fp16", "fp32", "fp8")
PHASES = ("prefill", "decode")


@dataclass(frozen=True)
class CaseKind:
    """One kind of validation case.

    name: the `kind` column's value. columns: the parameters its rows use (besides kind and timing).
    counts: whole-number parameters and their (low, high). optional: whole-number parameters a row
    may leave out or blank (the kind's default then: an attention case's v_head_dim is head_dim),
    with their (low, high) where given. choices: named parameters and their allowed
    values. shape_key: what a case shares with its neighbours (the calibration/evaluation split holds
    out shapes: validate.cases.split; length_by_phase adds q_len for a prefill case, kv_len for a
    decode one). class_by: the column that splits its report class
    ("copy_h2d", "attention_decode"), with class_default where that column is empty. group_by: the
    columns whose equal values let cases be predicted as one array. predict: the function of
    validate.predict_cases that predicts it; vectorized: that function takes a list of cases.
    build: the function of validate.bench that builds its timed callable ("" where only others
    measure it: aiconfigurator's tables). graph: timed inside CUDA-graph replays on a GPU suite
    (only the cases whose graph_where (column, value) matches, when given), also_eager: its cases
    are timed eager as well (they pin the host's per-op dispatch). host_bound: timed with more repeats and the garbage collector paused (eager whole steps).
    under_load: its cases run long enough at the power limit that the board sustains only part of its
    burst tensor-core rate (whole model steps replayed back to back; perfmodel.rates.sustained_fraction);
    other kinds are single kernels timed in short bursts."""

    name: str
    columns: tuple[str, ...]
    counts: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    optional: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    shape_key: tuple[str, ...] = ()
    length_by_phase: bool = False
    class_by: str = ""
    class_default: str = ""
    group_by: tuple[str, ...] = ()
    predict: str = ""
    vectorized: bool = False
    build: str = ""
    graph: bool = False
    graph_where: tuple[str, str] = ()
    also_eager: bool = False
    host_bound: bool = False
    under_load: bool = False

    def __post_init__(self):
        object.__setattr__(self, "counts", MappingProxyType(dict(self.counts)))
        object.__setattr__(self, "optional", MappingProxyType(dict(self.optional)))
        object.__setattr__(self, "choices", MappingProxyType(dict(self.choices)))

    def shape_columns(self, case: Mapping) -> tuple[str, ...]:
        if not self.length_by_phase:
            return self.shape_key
        return self.shape_key + ("q_len" if case.get("phase") == "prefill" else "kv_len",)

    def graph_timed(self, case: Mapping) -> bool:
        """Whether a GPU suite times this case inside CUDA-graph replays."""
        return self.graph and (not self.graph_where or case.get(self.graph_where[0]) == self.graph_where[1])

    def kernel_class(self, case: Mapping) -> str:
        """The class a case is scored under in reports."""
        if not self.class_by:
            return self.name
        return f"{self.name}_{case.get(self.class_by) or self.class_default}"


_ATTN = {"batch": (1, BIG), "heads": (1, 4096), "kv_heads": (1, 4096), "q_len": (1, BIG), "kv_len": (1, BIG),
         "head_dim": (1, 4096)}
_GEMM = {"m": (1, BIG), "n": (1, BIG), "k": (1, BIG)}

#: Every kind, in the suite's order.
RECORDS = (
    CaseKind("matmul", ("m", "n", "k", "dtype", "act_quant"), counts=_GEMM, choices={"dtype": DTYPES},
             shape_key=("n", "k"), group_by=("dtype", "act_quant"), predict="predict_matmuls", vectorized=True,
             build="build_matmul", graph=True),
    CaseKind("matmul_wo", ("m", "n", "k", "w_bits", "group"), counts=_GEMM, choices={"w_bits": ("4", "8")},
             shape_key=("n", "k"), group_by=("w_bits", "group"), predict="predict_matmul_wo",
             build="build_matmul_wo", graph=True),
    CaseKind("attention", ("phase", "batch", "heads", "kv_heads", "q_len", "kv_len", "head_dim", "v_head_dim", "dtype",
                           "engine"),
             counts=_ATTN, optional={"v_head_dim": _ATTN["head_dim"]}, choices={"phase": PHASES, "dtype": DTYPES},
             # prefill shapes differ by their length, decode ones by the cache they read
             shape_key=("phase", "heads", "kv_heads", "head_dim"), length_by_phase=True, class_by="phase",
             group_by=("heads", "kv_heads", "head_dim", "v_head_dim", "dtype", "engine", "phase"),
             predict="predict_attentions",
             vectorized=True, build="build_attention", graph=True),
    CaseKind("copy", ("direction", "bytes", "pinned"), counts={"bytes": (1, 10**13), "pinned": (0, 1)},
             choices={"direction": ("d2d", "h2d", "d2h")}, shape_key=("direction", "bytes"), class_by="direction",
             group_by=("direction", "pinned"), predict="predict_copy", build="build_copy",
             graph=True, graph_where=("direction", "d2d"), also_eager=True),
    CaseKind("elementwise", ("op", "elements", "dtype"), counts={"elements": (1, 10**12)},
             choices={"op": ("add", "silu_mul"), "dtype": DTYPES}, shape_key=("elements",), group_by=("op", "dtype"),
             predict="predict_elementwise", build="build_elementwise", graph=True, also_eager=True),
    CaseKind("norm", ("op", "tokens", "width", "dtype"), counts={"tokens": (1, BIG), "width": (1, BIG)},
             choices={"op": ("rmsnorm", "layernorm"), "dtype": DTYPES}, shape_key=("width",), group_by=("op", "dtype"),
             predict="predict_norm", build="build_norm", graph=True),
    CaseKind("kv_append", ("batch", "kv_heads", "kv_len", "head_dim", "dtype"),
             counts={k: _ATTN[k] for k in ("batch", "kv_heads", "kv_len", "head_dim")}, choices={"dtype": DTYPES},
             shape_key=("kv_len",), group_by=("dtype",), predict="predict_kv_append", build="build_kv_append",
             graph=True),
    CaseKind("launch", ("kernels",), counts={"kernels": (1, 10**6)}, shape_key=("kernels",), predict="predict_launch",
             build="build_launch"),
    CaseKind("model_step", ("model", "layers", "phase", "batch", "q_len", "kv_len", "dtype", "engine"),
             counts={"layers": (1, 10**4), "batch": (1, BIG), "q_len": (1, BIG), "kv_len": (1, BIG)},
             choices={"phase": PHASES, "dtype": DTYPES}, shape_key=("model",), class_by="phase",
             group_by=("model", "layers", "phase", "dtype", "engine"), predict="predict_model_steps", vectorized=True,
             build="build_model_step", host_bound=True, under_load=True),
    CaseKind("allreduce", ("bytes", "tp", "strategy"), counts={"bytes": (1, 10**13), "tp": (1, 4096)},
             shape_key=("tp", "bytes"), class_by="strategy", class_default="nccl", predict="predict_allreduce"),
    CaseKind("moe", ("tokens", "experts", "top_k", "hidden", "inter", "moe_tp", "moe_ep", "dtype", "engine"),
             counts={"experts": (1, 10**4), "top_k": (1, 10**4), "hidden": (1, BIG), "inter": (1, BIG),
                     "tokens": (1, BIG)},
             shape_key=("experts", "top_k", "hidden", "inter"), predict="predict_moe", build="build_moe", graph=True),
    CaseKind("act_quant", ("tokens", "width", "engine"), counts={"tokens": (1, BIG), "width": (1, BIG)},
             shape_key=("width",), predict="predict_act_quant", build="build_act_quant", graph=True),
)
BY_NAME = {k.name: k for k in RECORDS}
NAMES = tuple(BY_NAME)


def of(case: Mapping) -> CaseKind:
    """The record of a case's kind; ValueError naming the kind and the known ones."""
    kind = case.get("kind")
    if kind not in BY_NAME:
        raise ValueError(f"kind: {kind!r} is not one of {', '.join(NAMES)}")
    return BY_NAME[kind]
