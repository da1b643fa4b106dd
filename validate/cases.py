"""The validation suite's cases: plain rows (kind + parameters), no torch needed.

A case is a dict with a `kind` and that kind's parameters; the CSV the suite writes has one row per
case with these columns plus the measurement. The same schema is what
`perfmodel validate predict CASES.csv` reads, so times measured anywhere can be scored.

Kinds and their parameters:
  matmul        m, n, k, dtype (bf16 | fp16 | fp32 | fp8)          C[m,n] = A[m,k] @ B[k,n]
                [act_quant: kernels of dynamic activation quantization timed with an fp8 GEMM]
  matmul_wo     m, n, k, w_bits (8 | 4), group                      weight-only quantized (bf16 activations)
  attention     phase (prefill | decode), batch, heads, kv_heads, q_len, kv_len, head_dim, dtype
                [v_head_dim: value heads of their own width (MiMo-V2: 192 / 128); blank: head_dim]
  copy          direction (d2d | h2d | d2h), bytes, pinned (0 | 1)
  elementwise   op (add | silu_mul), elements, dtype
  norm          op (rmsnorm | layernorm), tokens, width, dtype
  kv_append     batch, kv_heads, kv_len, head_dim, dtype (torch.cat of a [batch, kv_heads, kv_len, head_dim]
                cache with one new token, as transformers' DynamicCache grows)
  launch        kernels (tiny adds replayed from a CUDA graph: the device-side kernel floor; CUDA only)
  allreduce     bytes, tp, strategy (custom | nccl): one all-reduce of `bytes` per device over tp
                devices of one node (measured by others: validate/aiconfigurator.py)
  moe           tokens, experts, top_k, hidden, inter, moe_tp, dtype: one MoE layer's router and
                grouped expert GEMMs (measured by others: validate/aiconfigurator.py)
  act_quant     tokens, width: per-tensor dynamic fp8 quantization of a tokens x width activation
  model_step    model, layers, phase (prefill | decode), batch, q_len, kv_len, dtype, engine
                (a whole forward step with random weights; engine names the profile it ran as:
                hf-eager (transformers, eager; the default when empty) or torch-compile /
                torch-eager-graph (validate/engine_model.py, CUDA-graph replays))

Every kernel case may carry `timing`: "graph" (timed inside CUDA-graph replays, back to back: the
device time a CUDA-graphed engine sees) or empty (launched one by one from eager PyTorch, where the
host's dispatch can be the bound). Predictions follow the same rule (validate.predict_cases).
"""
from __future__ import annotations

import hashlib
import itertools
import math

from validate import kinds

#: Columns of the case schema, in CSV order (unused ones stay empty for a kind).
PARAM_COLUMNS = ("kind", "m", "n", "k", "dtype", "w_bits", "group", "phase", "batch", "heads", "kv_heads",
                 "q_len", "kv_len", "head_dim", "v_head_dim", "direction", "bytes", "pinned", "op", "elements", "tokens",
                 "width", "model", "layers", "kernels", "tp", "strategy", "experts", "top_k", "hidden", "inter",
                 "moe_tp", "moe_ep", "act_quant", "timing", "engine")
KINDS = kinds.NAMES


def kernel_class(case: dict) -> str:
    """The class a case is scored under in reports (copies split by direction: different links;
    attention and model steps by phase; all-reduces by strategy): its kind's record says which."""
    return kinds.of(case).kernel_class(case)


def case_id(case: dict) -> str:
    """Stable identifier of a case from its parameters (the resume key)."""
    parts = [f"{c}={case[c]}" for c in PARAM_COLUMNS if case.get(c) not in (None, "")]
    return "|".join(parts)


#: Whole models never used by any fit: their steps only score the calibration (held out by model).
HELD_OUT_MODELS = ("llama-3.2-1b",)


def shape_key(case: dict) -> str:
    """What a case shares with its neighbours: the weight shape of a GEMM (every row count and dtype
    of one n x k goes to one side), the head layout and length of an attention call, the width of a
    vector op, the size of a copy. Splitting on this key holds out shapes, not just cases: a split by
    case id put every GEMM shape on both sides and overstated accuracy on new shapes (24%/41% median
    error on unseen shapes against 9.7% on the case split; validate/reports/gemm_rows)."""
    kind = case["kind"]
    fields = kinds.BY_NAME[kind].shape_columns(case) if kind in kinds.BY_NAME else ()
    return "|".join([kind] + [str(case.get(f)) for f in fields])


def text(case: dict, key: str) -> str:
    """A text field of a case row; "" where empty (None, NaN from a CSV reader, or "")."""
    value = case.get(key)
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def split(case: dict) -> str:
    """'calibration' or 'evaluation', fixed by a hash of the case's shape key (about one third
    evaluation), so no evaluation shape is seen by the fit. Whole-model steps split by model: the
    models of HELD_OUT_MODELS, and every step of a compiled engine profile (no fit uses them), are
    evaluation. Disjoint by construction, and stable across runs and machines."""
    if case["kind"] == "model_step":
        engine = text(case, "engine") or "hf-eager"
        return "evaluation" if case.get("model") in HELD_OUT_MODELS or engine != "hf-eager" else "calibration"
    digest = hashlib.sha256(shape_key(case).encode()).digest()
    return "evaluation" if digest[0] % 3 == 0 else "calibration"


def _matmuls(quick: bool, cuda: bool) -> list[dict]:
    # Decode (skinny) to prefill GEMMs on Llama-3-8B / 70B projection shapes (n, k).
    shapes = [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336), (10240, 8192), (8192, 28672),
              (128256, 4096)]
    if cuda and not quick:  # the linears of Qwen3-8B, Llama-3.2-1B, Qwen3-30B-A3B and Llama-3.1-70B
        shapes += [(24576, 4096), (4096, 12288), (151936, 4096), (3072, 2048), (2048, 2048),
                   (2048, 8192), (5120, 2048), (2048, 4096), (57344, 8192), (1536, 2048)]
        # tensor-parallel shards (Megatron column / row splits): Llama-3.1-70B at TP 8 (qkv, o,
        # gate-up, down) and Llama-3-8B at TP 4: narrow-and-deep or wide-and-shallow weights that
        # unsharded models do not have (cuBLAS splits K differently there)
        shapes += [(1280, 8192), (8192, 1024), (7168, 8192), (8192, 3584),
                   (1536, 4096), (4096, 1024), (7168, 4096), (4096, 3584)]
    ms = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
    if quick:
        shapes, ms = [(256, 256), (512, 128)], [1, 8, 64, 256]
    elif not cuda:
        shapes, ms = [(1024, 1024), (4096, 1024), (1024, 4096)], [1, 4, 16, 64, 256, 1024]
    cases = [dict(kind="matmul", m=m, n=n, k=k, dtype="bf16") for (n, k), m in itertools.product(shapes, ms)]
    # wave quantization: tile counts around multiples of the SM count (132 on H100/H200)
    if cuda and not quick:
        cases += [dict(kind="matmul", m=m, n=4096, k=4096, dtype="bf16") for m in (1920, 2112, 2176, 4224, 4352, 6144)]
    other = [(m, n, k) for (n, k), m in itertools.product(shapes[:4], ms[::2])]
    for dtype in ("fp16", "fp32"):
        cases += [dict(kind="matmul", m=m, n=n, k=k, dtype=dtype) for m, n, k in other]
    if cuda:  # fp8 serving GEMMs on every shape (the fp8 engine steps run them all)
        cases += [dict(kind="matmul", m=m, n=n, k=k, dtype="fp8")
                  for (n, k), m in itertools.product(shapes, ms[::2] + [32, 256])]
    for w_bits in ((8, 4) if cuda else (8,)):
        cases += [dict(kind="matmul_wo", m=m, n=n, k=k, w_bits=w_bits, group=128 if w_bits == 4 else 0)
                  for m, n, k in other if m <= 1024]
    return cases


def _attention(quick: bool, cuda: bool) -> list[dict]:
    head_layouts = [(32, 8, 128), (64, 8, 128), (32, 32, 128), (16, 8, 128)]
    if quick:
        return [dict(kind="attention", phase="prefill", batch=1, heads=4, kv_heads=2, q_len=s, kv_len=s,
                     head_dim=32, dtype="bf16") for s in (64, 128)] + \
               [dict(kind="attention", phase="decode", batch=b, heads=4, kv_heads=2, q_len=1, kv_len=s,
                     head_dim=32, dtype="bf16") for b in (1, 4) for s in (256, 1024)]
    lengths = [512, 1024, 2048, 4096, 8192, 16384] if cuda else [128, 256, 512]
    prefill = [dict(kind="attention", phase="prefill", batch=b, heads=h, kv_heads=kv, q_len=s, kv_len=s,
                    head_dim=d, dtype="bf16")
               for (h, kv, d), s, b in itertools.product(head_layouts, lengths, (1, 4)) if b * s <= 32768]
    kv_lengths = [1024, 4096, 16384, 32768, 65536, 131072] if cuda else [256, 1024, 4096]
    batches = [1, 4, 16, 64] if cuda else [1, 4]
    decode = [dict(kind="attention", phase="decode", batch=b, heads=h, kv_heads=kv, q_len=1, kv_len=s,
                   head_dim=d, dtype="bf16")
              for (h, kv, d), s, b in itertools.product(head_layouts[:2] + head_layouts[3:], kv_lengths, batches)
              if b * s * kv * d * 4 <= 40e9]
    return prefill + decode + _static_cache_attention(cuda)


#: The engine profile whose attention runs over a masked static cache (gpt-fast's layout).
STATIC_CACHE_ENGINE = "torch-compile-static-cache"


def _static_cache_attention(cuda: bool) -> list[dict]:
    """SDPA over a masked static cache (engine STATIC_CACHE_ENGINE): decodes of 1-64 sequences over
    1024-8192 cached positions and 16-1024-token chunks over 1024 and 4096, Llama-3-8B's heads (GPU
    only). Several lengths per phase, so that the split by length leaves each phase's fit cases."""
    if not cuda:
        return []
    decode = [dict(kind="attention", phase="decode", batch=b, heads=32, kv_heads=8, q_len=1, kv_len=s, head_dim=128,
                   dtype="bf16", engine=STATIC_CACHE_ENGINE) for b in (1, 4, 16, 64) for s in (1024, 2048, 4096, 8192)]
    chunks = [dict(kind="attention", phase="prefill", batch=1, heads=32, kv_heads=8, q_len=t, kv_len=s, head_dim=128,
                   dtype="bf16", engine=STATIC_CACHE_ENGINE) for t in (16, 32, 64, 128, 256, 512, 1024) for s in (1024, 4096)]
    return decode + chunks


def _copies(quick: bool, cuda: bool) -> list[dict]:
    sizes = [2 ** p for p in (range(12, 31, 2) if cuda and not quick else range(12, 25, 4))]
    cases = [dict(kind="copy", direction="d2d", bytes=s, pinned=0) for s in sizes]
    if cuda:
        for direction, pinned in itertools.product(("h2d", "d2h"), (1, 0)):
            cases += [dict(kind="copy", direction=direction, bytes=s, pinned=pinned) for s in sizes]
    return cases


def _vector(quick: bool, cuda: bool) -> list[dict]:
    elements = [2 ** p for p in (range(12, 30, 2) if cuda and not quick else range(10, 21, 5))]
    cases = [dict(kind="elementwise", op=op, elements=e, dtype="bf16") for op in ("add", "silu_mul") for e in elements]
    tokens = [1, 16, 256, 4096, 16384] if cuda and not quick else [1, 64, 512]
    widths = [2048, 4096, 5120, 8192] if cuda and not quick else [256, 1024]
    cases += [dict(kind="norm", op=op, tokens=t, width=w, dtype="bf16")
              for op in ("rmsnorm", "layernorm") for t in tokens for w in widths]
    if cuda:
        cases += [dict(kind="launch", kernels=k) for k in (20, 50, 100, 200, 400)]
    appends = ((1, 512), (8, 1024), (16, 4096), (32, 2048), (64, 1024), (64, 4096), (128, 1024), (4, 16384),
               (1, 32768)) if cuda and not quick else ((1, 64), (4, 256))
    cases += [dict(kind="kv_append", batch=b, kv_heads=8 if cuda else 2, kv_len=s, head_dim=128 if cuda else 32,
                   dtype="bf16") for b, s in appends]
    return cases


def _engine_kernels(quick: bool, cuda: bool) -> list[dict]:
    """Kernels of compiled engine steps that no library call times alone: the per-tensor fp8
    activation quantization and whole MoE layers (routing and grouped GEMMs), as torch.compile
    emits them (validate/engine_model.py). GPU suites only."""
    if quick or not cuda:
        return []
    quant = [dict(kind="act_quant", tokens=t, width=w, timing="graph", engine="torch-compile")
             for t in (1, 16, 64, 256, 1024, 4096) for w in (4096, 14336, 8192, 2048, 12288)]
    # Mixtral-8x7B, DeepSeek-V2-Lite-like, Qwen3-235B-A22B, Qwen2-57B-A14B-like and a small layer;
    # Qwen3-30B-A3B's own layer (128 experts, top 8, 2048 x 768) is left out on purpose: its
    # whole compiled steps (validate/reports/engine) stay held out by shape as well as by model
    layers = ((8, 2, 4096, 14336), (64, 6, 2048, 1408), (128, 8, 4096, 1536), (60, 4, 3584, 2560),
              (32, 4, 1536, 512))
    moe = [dict(kind="moe", tokens=t, experts=e, top_k=k, hidden=d, inter=f, dtype="bf16", timing="graph",
                engine="torch-compile") for e, k, d, f in layers for t in (1, 4, 16, 64, 256, 2048)]
    return quant + moe


def _model_steps(quick: bool, cuda: bool) -> list[dict]:
    if quick or not cuda:
        base = dict(kind="model_step", model="llama-3.2-1b", layers=2 if quick else 4, dtype="bf16")
        return [dict(base, phase="prefill", batch=b, q_len=s, kv_len=s) for b, s in ((1, 32), (2, 64))] + \
               [dict(base, phase="decode", batch=b, q_len=1, kv_len=s) for b, s in ((1, 64), (4, 128))]
    cases = []
    for model, layers in (("llama-3-8b", 32), ("llama-3.2-1b", 16), ("qwen3-8b", 36)):
        base = dict(kind="model_step", model=model, layers=layers, dtype="bf16")
        cases += [dict(base, phase="prefill", batch=b, q_len=s, kv_len=s)
                  for b, s in ((1, 128), (1, 512), (1, 2048), (4, 1024), (8, 2048), (1, 8192))]
        cases += [dict(base, phase="decode", batch=b, q_len=1, kv_len=s)
                  for b, s in ((1, 512), (1, 4096), (8, 1024), (16, 4096), (32, 2048), (64, 1024), (64, 4096),
                               (128, 1024))]
    return cases


#: Kinds a GPU suite times inside CUDA-graph replays: the device rates and floors a graphed engine
#: sees, free of host dispatch. Host <-> device copies and transformers' eager steps stay eager, and
#: the elementwise cases (and device copies) run both ways (the eager ones pin the host's per-op
#: dispatch). The records say which (kinds.CaseKind.graph, graph_where, also_eager).
GRAPH_KINDS = tuple(k.name for k in kinds.RECORDS if k.graph and not k.graph_where)


def _graph_timed(cases: list[dict]) -> list[dict]:
    graphed = [dict(c, timing="graph") for c in cases if kinds.of(c).graph_timed(c)]
    eager = [c for c in cases if not kinds.of(c).graph_timed(c) or kinds.of(c).also_eager]
    return graphed + eager


def suite(quick: bool = False, cuda: bool = True) -> list[dict]:
    """All cases for a device: the full suite on a GPU, a small one on a CPU, a tiny one with quick.
    On a GPU the kernels are timed inside CUDA graphs (GRAPH_KINDS), with eager cases kept only
    where they measure the host. CPUs without native bf16 emulate it slowly, so CPU suites time
    fp32 instead."""
    cases = (_matmuls(quick, cuda) + _attention(quick, cuda) + _copies(quick, cuda) + _vector(quick, cuda)
             + _engine_kernels(quick, cuda) + _model_steps(quick, cuda))
    if cuda:
        cases = _graph_timed(cases)
    else:
        cases = [dict(c, dtype="fp32") if c.get("dtype") == "bf16" else c for c in cases]
        cases = [c for c in cases if c["kind"] != "matmul" or c["dtype"] == "fp32"]
    return list({case_id(c): c for c in cases}.values())
