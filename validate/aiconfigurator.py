"""Kernel latencies measured by NVIDIA's aiconfigurator, read as validation cases (no GPU needed).

aiconfigurator (Apache-2.0; `pip install 'perfmodel[aiconfigurator]'`) ships one parquet table per
op family, per GPU system, serving engine and engine version, in its `aiconfigurator-core` package:

    <data root>/<system>/<family>/<engine>/<version>/<table>.parquet   (+ collection_meta.yaml)

e.g. `h200_sxm/gemm/trtllm/1.3.0rc20/gemm_perf.parquet`. Latencies are milliseconds per op on one
GPU: the engine's own op (a Linear layer, the attention backend, ...) captured in a CUDA graph and
timed with CUDA events over back-to-back replays after warm-up (aiconfigurator's collector). Not
graphed: the engines' eager all-reduce rows, vLLM's fp8_block GEMMs, and NCCL rows (nccl-tests).
fp8 GEMM rows include the dynamic quantization of the activations. Versions: `tables`.
This module reads the tables we can score into our case schema (validate/cases.py) with
`measured_s` in seconds; it never imports aiconfigurator.

Tables and the cases they give (row by row; a shape that appears several times, e.g. once per
kernel or from two merged collections, stays several rows; `kernel` tells kernels apart):
  gemm_perf                  matmul m, n, k, dtype; matmul_wo m, n, k, w_bits, group=0 (per-channel)
  context_attention_perf     attention, phase prefill: q_len = kv_len = isl (no cached prefix)
  generation_attention_perf  attention, phase decode: q_len 1, kv_len = step + 1 (step cached tokens
                             and the new one)
  custom_allreduce_perf      allreduce bytes, tp, strategy "custom" (the engine's own all-reduce
                             path: custom kernels for small messages, NCCL for large ones)
  nccl_perf (engine "nccl")  allreduce rows of nccl-tests, strategy "nccl"
  moe_perf                   moe tokens, experts, top_k, hidden, inter, moe_tp, moe_ep, distribution,
                             gated 0 for expert FFNs without a gate matrix (`non_gated_experts`)
Every case also carries kernel, system, engine and source ("aiconfigurator <version> <path>"), and
timing "graph" where it was timed inside CUDA-graph replays (validate/cases.py); eager rows have none.

Rows dropped (all_dtypes=False, the default): dtypes without a counterpart in our cost model
(GEMM fp8_block, nvfp4, sq (SmoothQuant int8); attention with an fp8 KV cache or fp8 FMHA, since
our attention cases have one dtype and a 16-bit cache; MoE other than bf16 / fp8), sliding-window
attention (window_size > 0) and beam search (beam_width > 1), rows whose latency is not a finite
positive number. all_dtypes=True keeps the dtypes under their table names (fp8_block, nvfp4, ...).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from validate.cases import PARAM_COLUMNS, case_id, kernel_class

#: Packages that may hold the data (it moved from `aiconfigurator` into `aiconfigurator-core`).
PACKAGES = {"aiconfigurator_core": "aiconfigurator-core", "aiconfigurator": "aiconfigurator"}
INSTALL_HINT = "pip install 'perfmodel[aiconfigurator]'"

#: Table (file stem) -> the case kinds it yields.
TABLES = {"gemm_perf": ("matmul", "matmul_wo"), "context_attention_perf": ("attention",),
          "generation_attention_perf": ("attention",), "custom_allreduce_perf": ("allreduce",),
          "nccl_perf": ("allreduce",), "moe_perf": ("moe",)}
KINDS = ("matmul", "matmul_wo", "attention", "allreduce", "moe")

#: Table dtype names -> ours. Anything else keeps its table name (and is dropped unless all_dtypes).
DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "fp8": "fp8",
          "int8": "int8"}
ELEMENT_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4, "int8": 1, "fp8": 1}
#: Weight-only GEMMs (TensorRT-LLM's per-channel WeightOnlyQuantMatmul): table dtype -> w_bits.
WEIGHT_ONLY = {"int8_wo": 8, "int4_wo": 4}
MATMUL_DTYPES = ("bf16", "fp16", "fp8")
#: Kernels of the dynamic activation quantization inside every fp8 GEMM row, per engine: a per-tensor
#: scale takes an amax reduction, then scale-and-cast (vLLM's scaled_fp8_quant, TensorRT-LLM's FP8
#: QDQ linear); SGLang's collector runs one per-token kernel (sgl_per_token_quant_fp8; aiconfigurator
#: collector/<engine>/collect_gemm.py). The cases carry it as `act_quant` so the prediction prices it.
ACT_QUANT_KERNELS = {"sglang": 1}
PER_TENSOR_QUANT_KERNELS = 2
MOE_DTYPES = ("bf16", "fp8")

MS = 1e-3  # the tables' unit, in seconds

#: Value-head widths the collectors ran that the attention tables do not record (they have a
#: head_dim column and no v_head_dim): (engine, head_dim) -> v_head_dim. SGLang's collector runs
#: 192-wide heads only under MiMo-V2-Flash's contract, whose value heads are 128 wide (aiconfigurator
#: collector/sglang/collect_attn.py refuses head_dim 192 otherwise;
#: collector/cases/models/MiMoV2FlashForCausalLM_cases.yaml). The other engines' 192-wide rows
#: (MiMo-V2's head layouts too) ran values at 192: TensorRT-LLM's MHA treats V as the query-key
#: width (the same file) and vLLM's collector builds V with head_dim (collector/vllm/collect_attn.py).
VALUE_HEAD_DIMS = {("sglang", 192): 128}

#: Case columns written to CSV, in order: the schema's own, then the extra ones of this reader.
EXTRA_COLUMNS = ("kv_dtype", "tp", "strategy", "experts", "top_k", "hidden", "inter", "moe_tp", "moe_ep",
                 "distribution", "gated", "kernel", "measured_s", "system", "engine", "source")


#: Kinds whose collectors time one call replayed on one set of buffers (collector/<engine>/
#: collect_attn.py: benchmark_with_power around a single forward over one KV cache), so that a cache
#: that fits the L2 is read from there (perfmodel.roofline.attention_read_rate); the GEMM
#: collectors cycle enough weight copies to exceed the L2 (collector/trtllm/collect_gemm.py).
REPLAYED_KINDS = ("attention",)


def replays_one_buffer(case: dict) -> bool:
    """Whether a case is one of aiconfigurator's rows timed on one replayed set of buffers."""
    return case.get("kind") in REPLAYED_KINDS and str(case.get("source", "")).startswith("aiconfigurator")


def data_root() -> Path:
    """The installed aiconfigurator's `systems/data` folder, found without importing the package."""
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        for base in (spec.submodule_search_locations or []) if spec else []:
            path = Path(base) / "systems" / "data"
            if path.is_dir():
                return path
    raise ValueError(f"aiconfigurator is not installed (its measured tables are needed): {INSTALL_HINT}")


def package_version(root: Path | None = None) -> str:
    """Version of the distribution that holds `root` (the installed data by default), else 'unknown'."""
    root = Path(root).resolve() if root is not None else data_root().resolve()
    for name, dist in PACKAGES.items():
        spec = importlib.util.find_spec(name)
        for base in (spec.submodule_search_locations or []) if spec else []:
            if root.is_relative_to(Path(base).resolve()):
                return importlib.metadata.version(dist)
    return "unknown"


def version_key(version: str) -> tuple:
    """Sort key of an engine version: 1.3.0rc10 < 1.3.0rc20 < 1.3.0; 0.5.6 < 0.5.6.post2; 2.27 = 2.27.0.
    Versions that do not parse sort first."""
    match = re.fullmatch(r"v?(\d+(?:\.\d+)*)(?:\.?(dev|a|b|rc|post)\.?(\d*))?(?:\+.*)?", str(version))
    if match is None:
        return ((-1,), str(version))
    release = tuple(int(x) for x in match[1].split("."))
    stage = {"dev": 0, "a": 1, "b": 2, "rc": 3, None: 4, "post": 5}[match[2]]
    return (release + (0,) * (4 - len(release)), stage, int(match[3] or 0))


def available(root: Path | str | None = None) -> pd.DataFrame:
    """Every table under the data root: system, engine, version, table, path (plus family)."""
    root = _root(root)
    rows = []
    for path in sorted(root.glob("*/*/*/*/*.parquet")):
        system, family, engine, version = path.relative_to(root).parts[:4]
        rows.append(dict(system=system, engine=engine, version=version, table=path.stem, path=path, family=family))
    return pd.DataFrame(rows, columns=["system", "engine", "version", "table", "path", "family"])


def current_version(system: str, engine: str, root: Path | str | None = None) -> str | None:
    """The version aiconfigurator itself serves for (system, engine), or None where it declares none:
    the 'current' slot of systems/query_versions.yaml; for engine 'nccl', misc.nccl_version of
    systems/<system>.yaml."""
    import yaml

    systems = _root(root).parent
    if engine == "nccl":
        path = systems / f"{system}.yaml"
        spec = yaml.safe_load(path.read_text()) if path.is_file() else None
        return ((spec or {}).get("misc") or {}).get("nccl_version")
    path = systems / "query_versions.yaml"
    slots = (yaml.safe_load(path.read_text()) if path.is_file() else None) or {}
    slot = ((slots.get("overrides") or {}).get(system) or {}).get(engine) or (slots.get("defaults") or {}).get(engine)
    return (slot or {}).get("current")


def tables(system: str, engine: str, version: str | None = None, root: Path | str | None = None,
           kinds=None) -> pd.DataFrame:
    """The tables read_cases reads, one version of each: `version` exactly; with None the newest
    present; with "current" the newest not newer than current_version() (aiconfigurator fills a
    table its current version lacks from older ones; newer folders can be single-model drops), or
    the newest where aiconfigurator declares no current version.
    NCCL's table belongs to engine 'nccl' only (it is the same library under every engine)."""
    kinds = _kinds(kinds)
    listing = available(root)
    if system not in set(listing["system"]):
        raise ValueError(f"system: {system!r} is not one of {sorted(set(listing['system']))}")
    listing = listing[listing["system"] == system]
    wanted = [t for t, ks in TABLES.items() if set(ks) & set(kinds) and (t == "nccl_perf") == (engine == "nccl")]
    rows = listing[(listing["engine"] == engine) & listing["table"].isin(wanted)]
    current = current_version(system, engine, root) if version == "current" else None
    if current is not None:
        rows = rows[rows["version"].map(lambda v: version_key(v) <= version_key(current))]
    elif version not in (None, "current"):
        rows = rows[rows["version"] == str(version)]
    if rows.empty:
        engines = sorted(set(listing["engine"][listing["table"].isin(TABLES)]))
        versions = sorted(set(listing["version"][listing["engine"] == engine]), key=version_key)
        raise ValueError(f"{system}/{engine}: no {', '.join(kinds)} tables for version {version!r} "
                         f"(engines: {engines}; versions of {engine!r}: {versions})")
    newest = [max(group.to_dict("records"), key=lambda r: version_key(r["version"]))
              for _, group in rows.groupby("table", sort=True)]
    return pd.DataFrame(newest, columns=rows.columns)


def read_cases(system: str, engine: str, version: str | None = None, root: Path | str | None = None,
               kinds=None, all_dtypes: bool = False) -> list[dict]:
    """Measured cases of one system and engine, in our schema with measured_s in seconds. version:
    an engine version, None (the newest of each table) or "current" (see `tables`). kinds: a subset
    of KINDS (default all). all_dtypes: also rows whose dtype our cost model has no counterpart for."""
    root = _root(root)
    kinds = _kinds(kinds)
    tag = f"aiconfigurator {package_version(root)}"
    cases = []
    ungated = non_gated_experts(root)
    for row in tables(system, engine, version, root, kinds).to_dict("records"):
        source = f"{tag} {Path(row['path']).relative_to(root).as_posix()}"
        for frame in _read(row["table"], pd.read_parquet(row["path"]), all_dtypes, engine, ungated):
            frame = frame[frame["kind"].isin(kinds)]
            records = frame.assign(system=system, engine=engine, source=source).to_dict("records")
            cases += [{k: v for k, v in r.items() if not _empty(v)} for r in records]
    return cases


def case_size(case: dict) -> float:
    """The work of a case, to order cases by size: multiply-adds, attention pairs x head_dim, bytes."""
    kind = case["kind"]
    if kind in ("matmul", "matmul_wo"):
        return float(case["m"]) * case["n"] * case["k"]
    if kind == "attention":
        return float(case["batch"]) * case["heads"] * case["q_len"] * case["kv_len"] * case["head_dim"]
    if kind == "moe":
        return float(case["tokens"]) * case["top_k"] * case["hidden"] * case["inter"]
    return float(case.get("bytes", 0))


def subsample(cases: list[dict], n: int) -> list[dict]:
    """At most `n` cases per class (validate.cases.kernel_class: matmul, attention_prefill, ...), chosen
    deterministically: a class's cases are sorted by variant (dtype, strategy, kernel, ...), then
    size, then id, and `n` are taken at evenly spaced ranks. Each variant keeps its share and its
    sizes from smallest to largest; the class's first and last case always stay. Order is kept."""
    if n < 1:
        raise ValueError(f"n: {n} must be >= 1")
    by_class: dict[str, list[int]] = {}
    for i, case in enumerate(cases):
        by_class.setdefault(kernel_class(case), []).append(i)
    keep = set()
    for index in by_class.values():
        ranked = sorted(index, key=lambda i: (_variant(cases[i]), case_size(cases[i]), case_id(cases[i])))
        picks = np.unique(np.round(np.linspace(0, len(ranked) - 1, min(n, len(ranked)))).astype(int))
        keep.update(ranked[p] for p in picks)
    return [case for i, case in enumerate(cases) if i in keep]


def to_frame(cases: list[dict]) -> pd.DataFrame:
    """Cases as a DataFrame in CSV column order (the schema's columns, then EXTRA_COLUMNS); integer
    columns stay integers where some rows leave them empty."""
    frame = pd.DataFrame(cases)
    order = [c for c in dict.fromkeys(PARAM_COLUMNS + EXTRA_COLUMNS) if c in frame.columns]
    frame = frame[order + [c for c in frame.columns if c not in order]]
    for column in frame.columns:
        values = frame[column].dropna()
        if pd.api.types.is_numeric_dtype(values) and len(values) and (values == np.round(values)).all() \
                and column != "measured_s":
            frame[column] = frame[column].astype("Int64")
    return frame


# -- one reader per table ------------------------------------------------------------------------

def _read(table: str, raw: pd.DataFrame, all_dtypes: bool, engine: str = "",
          ungated: frozenset = frozenset()) -> list[pd.DataFrame]:
    """The cases of one table as frames of one kind each (so no column is half empty); `ungated`:
    the (experts, top_k, inter) of MoE layers without a gate matrix (`non_gated_experts`)."""
    raw = raw[np.isfinite(raw["latency"]) & (raw["latency"] > 0)]
    if table == "gemm_perf":
        return _gemm(raw, all_dtypes, engine)
    if table in ("context_attention_perf", "generation_attention_perf"):
        return [_attention(raw, "prefill" if table.startswith("context") else "decode", all_dtypes, engine)]
    if table in ("custom_allreduce_perf", "nccl_perf"):
        return [_allreduce(raw, "nccl" if table == "nccl_perf" else "custom")]
    return [_moe(raw, all_dtypes, ungated)]


#: Activations of expert FFNs without a gate (up, act, down: two matrices, not three).
NON_GATED_ACTIVATIONS = ("relu2",)


def non_gated_experts(root: Path) -> frozenset:
    """(experts, top_k, expert width) of the models in aiconfigurator's model_configs (beside its
    systems folder) whose expert FFNs have no gate: Nemotron-3's squared-ReLU experts
    (mlp_hidden_act relu2: up and down matrices only). The MoE tables do not say whether a row
    ran gated; TensorRT-LLM's names its non-gated kernel (moe_torch_flow_nongated), vLLM's and
    SGLang's rows of the same layers do not. Empty where the configs are not there."""
    folder = Path(root).parent.parent / "model_configs"
    found = set()
    for path in sorted(folder.glob("*_config.json")) if folder.is_dir() else ():
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        act = config.get("mlp_hidden_act") or config.get("hidden_act")
        experts = config.get("n_routed_experts") or config.get("num_experts")
        if act in NON_GATED_ACTIVATIONS and experts and config.get("moe_intermediate_size"):
            found.add((int(experts), int(config.get("num_experts_per_tok", 0)), int(config["moe_intermediate_size"])))
    return frozenset(found)


def _timing(graphed: pd.Series) -> pd.Series:
    """The case's timing field: "graph" for rows timed in CUDA-graph replays, None (no field) for eager."""
    return graphed.map({True: "graph", False: None})


def _dtype(column: pd.Series) -> pd.Series:
    return column.map(lambda name: DTYPES.get(name, name))


def _gemm(raw: pd.DataFrame, all_dtypes: bool, engine: str = "") -> list[pd.DataFrame]:
    dtype, w_bits = _dtype(raw["gemm_dtype"]), raw["gemm_dtype"].map(WEIGHT_ONLY)
    quant_kernels = ACT_QUANT_KERNELS.get(engine, PER_TENSOR_QUANT_KERNELS)
    frame = pd.DataFrame({"m": raw["m"], "n": raw["n"], "k": raw["k"], "kernel": raw["kernel_source"],
                          "measured_s": raw["latency"] * MS})
    wo = w_bits.notna()
    dense = ~wo & (dtype.isin(MATMUL_DTYPES) | all_dtypes)
    # vLLM's collector times its fp8_block GEMMs eagerly; the rest inside CUDA graphs
    eager = (raw["kernel_source"].str.contains("BlockScaledMM") & (raw["gemm_dtype"] == "fp8_block"))
    matmul = frame[dense].assign(kind="matmul", dtype=dtype[dense], timing=_timing(~eager[dense]),
                                 act_quant=np.where(dtype[dense] == "fp8", quant_kernels, 0))
    matmul_wo = frame[wo].assign(kind="matmul_wo", w_bits=w_bits[wo].astype(int), group=0, timing="graph")
    return [part for part in (matmul, matmul_wo) if len(part)]


def _attention(raw: pd.DataFrame, phase: str, all_dtypes: bool, engine: str = "") -> pd.DataFrame:
    window = raw["window_size"] if "window_size" in raw else pd.Series(0, index=raw.index)
    dtype, kv_dtype = _dtype(raw["attn_dtype"]), _dtype(raw["kv_cache_dtype"])
    keep = (window == 0) & (raw["beam_width"] == 1)
    if not all_dtypes:
        keep &= (dtype == "bf16") & (kv_dtype == "bf16")
    raw = raw[keep]
    q_len = raw["isl"] if phase == "prefill" else pd.Series(1, index=raw.index)
    # prefill: no cached prefix (step 0); decode: `step` cached tokens plus the new one
    kv_len = raw["isl"] if phase == "prefill" else raw["step"] + 1
    return pd.DataFrame({"kind": "attention", "phase": phase, "batch": raw["batch_size"], "heads": raw["num_heads"],
                         "kv_heads": raw["num_key_value_heads"], "q_len": q_len, "kv_len": kv_len,
                         "head_dim": raw["head_dim"], "v_head_dim": _value_head_dims(raw["head_dim"], engine),
                         "dtype": dtype[keep], "kv_dtype": kv_dtype[keep],
                         "timing": "graph", "kernel": raw["kernel_source"], "measured_s": raw["latency"] * MS})


def _value_head_dims(head_dim: pd.Series, engine: str) -> pd.Series:
    """Each row's value-head width where its collector ran one apart from head_dim
    (VALUE_HEAD_DIMS), else empty (NaN: as wide as head_dim; the case leaves the field out)."""
    widths = {d: float(v) for (name, d), v in VALUE_HEAD_DIMS.items() if name == engine}
    return head_dim.map(lambda d: widths.get(int(d), np.nan)).astype(float)


def _allreduce(raw: pd.DataFrame, strategy: str) -> pd.DataFrame:
    if strategy == "nccl":
        raw = raw[raw["op_name"] == "all_reduce"]
        dtype, graph = _dtype(raw["nccl_dtype"]), pd.Series(False, index=raw.index)  # nccl-tests: no CUDA graph
    else:
        dtype = _dtype(raw["allreduce_dtype"])
        graph = ~raw["kernel_source"].str.contains("eager", case=False)
    # message_size counts elements (the collectors' tensor numel); bytes = elements x element size
    size = dtype.map(ELEMENT_BYTES)
    if size.isna().any():
        raise ValueError(f"all-reduce dtype: {sorted(set(dtype[size.isna()]))} has no known element size")
    return pd.DataFrame({"kind": "allreduce", "bytes": (raw["message_size"] * size).astype("int64"),
                         "tp": raw["num_gpus"], "dtype": dtype, "strategy": strategy, "timing": _timing(graph),
                         "kernel": raw["kernel_source"], "measured_s": raw["latency"] * MS})


def _moe(raw: pd.DataFrame, all_dtypes: bool, ungated: frozenset = frozenset()) -> pd.DataFrame:
    dtype = _dtype(raw["moe_dtype"])
    keep = dtype.isin(MOE_DTYPES) | all_dtypes
    raw = raw[keep]
    # a layer without a gate matrix: by its kernel's name, or by its model's config (non_gated_experts)
    layer = zip(raw["num_experts"], raw["topk"], raw["inter_size"])
    plain = raw["kernel_source"].str.contains("nongated") | pd.Series([key in ungated for key in layer],
                                                                       index=raw.index, dtype=bool)
    return pd.DataFrame({"kind": "moe", "tokens": raw["num_tokens"], "experts": raw["num_experts"],
                         "top_k": raw["topk"], "hidden": raw["hidden_size"], "inter": raw["inter_size"],
                         "dtype": dtype[keep], "moe_tp": raw["moe_tp_size"], "moe_ep": raw["moe_ep_size"],
                         "distribution": raw["distribution"], "gated": plain.map({True: 0, False: None}),
                         "timing": "graph", "kernel": raw["kernel_source"], "measured_s": raw["latency"] * MS})


# -- helpers --------------------------------------------------------------------------------------

def _root(root) -> Path:
    if root is None:
        return data_root()
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"root: {str(root)!r} is not a folder (aiconfigurator's systems/data)")
    return root


def _kinds(kinds) -> tuple:
    if kinds is None:
        return KINDS
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"kinds: {unknown} not among {', '.join(KINDS)}")
    return kinds


def _empty(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _variant(case: dict) -> str:
    keys = ("dtype", "kv_dtype", "w_bits", "strategy", "timing", "tp", "kernel")
    return "|".join(str(case.get(k, "")) for k in keys)
