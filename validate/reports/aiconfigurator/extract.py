"""Measured kernel latencies from NVIDIA's aiconfigurator, as case CSVs we commit and calibrate on.

    python validate/reports/aiconfigurator/extract.py [--out DIR] [--per-kind N] [--max-bytes B]
                                                      [--version current|newest|VERSION] [--root DATA]

Needs aiconfigurator installed (`pip install 'perfmodel[aiconfigurator]'`), or --root pointing at a
copy of its systems/data folder. For every system and engine with tables, writes
DIR/<system>/<engine>.csv: the cases of validate.aiconfigurator.read_cases, subsampled (at most N per
kernel class, fewer until the file is under B bytes), and DIR/SOURCES.md: the package version, each
table read with its row counts, the license and what the columns mean.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repo root, when run as a script

import pandas as pd  # noqa: E402

from validate import aiconfigurator as aic  # noqa: E402

HERE = Path(__file__).resolve().parent
ENGINES = ("trtllm", "vllm", "sglang", "nccl")


def engines(listing: pd.DataFrame, system: str) -> list[str]:
    """The engines of a system that have a table read_cases reads."""
    mine = listing[(listing["system"] == system) & listing["table"].isin(aic.TABLES)]
    found = set(mine["engine"][mine["table"] != "nccl_perf"]) | set(mine["engine"][mine["engine"] == "nccl"])
    return [e for e in ENGINES if e in found] + sorted(found - set(ENGINES))


def fitting_csv(cases: list[dict], per_kind: int, max_bytes: int) -> tuple[str, list[dict]]:
    """The CSV text of a subsample of `cases`, at most `per_kind` per kernel class and shrunk by 15 %
    steps until it is under `max_bytes`."""
    n = per_kind
    while True:
        sample = aic.subsample(cases, n)
        text = aic.to_frame(sample).to_csv(index=False, float_format="%.6g", lineterminator="\n")
        if len(text.encode()) < max_bytes or n == 1:
            return text, sample
        n = max(1, int(n * 0.85))


def table_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def extract(out: Path, per_kind: int, max_bytes: int, version: str | None, root: Path | None) -> list[dict]:
    """Write the CSVs; return one record per table read (for SOURCES.md)."""
    root = Path(root) if root is not None else aic.data_root()
    listing = aic.available(root)
    records = []
    for system in sorted(set(listing["system"])):
        for engine in engines(listing, system):
            cases = aic.read_cases(system, engine, version, root)
            text, sample = fitting_csv(cases, per_kind, max_bytes)
            (out / system).mkdir(parents=True, exist_ok=True)
            (out / system / f"{engine}.csv").write_text(text)
            for row in aic.tables(system, engine, version, root).to_dict("records"):
                source = f"aiconfigurator {aic.package_version(root)} {Path(row['path']).relative_to(root).as_posix()}"
                records.append(dict(system=system, engine=engine, version=row["version"], table=row["table"],
                                    path=Path(row["path"]).relative_to(root).as_posix(), rows=table_rows(row["path"]),
                                    cases=sum(c["source"] == source for c in cases),
                                    written=sum(c["source"] == source for c in sample),
                                    csv=f"{system}/{engine}.csv", csv_bytes=len(text.encode())))
            print(f"{system}/{engine}.csv: {len(sample)} of {len(cases)} cases, {len(text.encode()) / 1e3:.0f} kB")
    return records


def sources_md(records: list[dict], package: str, version: str | None) -> str:
    frame = pd.DataFrame(records)
    lines = [
        "# aiconfigurator kernel tables (measured latencies, as validation cases)",
        "",
        f"Source: NVIDIA aiconfigurator, PyPI package `aiconfigurator` {package}; the tables ship in its",
        "dependency `aiconfigurator-core` under `aiconfigurator_core/systems/data/` (site-packages).",
        "License: Apache-2.0, copyright NVIDIA CORPORATION & AFFILIATES. These CSVs copy measured numbers",
        "(latencies and the shapes they were measured at) from those tables, converted to our case schema;",
        "no code or text of the package is copied.",
        "",
        "Made by `python validate/reports/aiconfigurator/extract.py` (reader: `validate/aiconfigurator.py`).",
        f"Version of each table: {_version_rule(version)}",
        "",
        "## How the tables were measured (aiconfigurator's collector, read for this summary)",
        "",
        "- One op of the serving engine on one GPU (the collector asks for a dedicated node and locked",
        "  clocks), called through the",
        "  engine's own Python module: TensorRT-LLM's `Linear` / attention backend / fused MoE, vLLM's and",
        "  SGLang's linear, attention and MoE layers. Captured in a CUDA graph, warmed up (3-10 replays),",
        "  then timed with CUDA events over back-to-back replays (6 for GEMMs, 6-20 for the others) and",
        "  averaged: a graph's kernels run back to back, without host launch cost. TensorRT-LLM's MoE",
        "  falls back to eager execution where graph capture fails.",
        "- GEMMs cycle over several copies of the weight (TensorRT-LLM: enough to exceed the L2 cache, at",
        "  most 5; vLLM: 6; SGLang: up to 6) and divide by the copies, to limit L2 reuse between calls",
        "  (weights under ~10 MB still fit in L2 with all their copies).",
        "  fp8 rows include the dynamic quantization of the activations (per-tensor / per-token scales).",
        "  vLLM's fp8_block GEMMs run without a CUDA graph (dropped here anyway).",
        "- Attention rows time the backend's forward for one layer: TensorRT-LLM's includes the fused RoPE",
        "  and the write of the new K/V into the paged cache (context: its FMHA kernels; generation: XQA",
        "  or masked MHA); vLLM runs FlashAttention (fa3 on Hopper, fa2 on Ada/Ampere, FlashInfer /",
        "  TRT-LLM-gen on Blackwell); SGLang fa3 on Hopper, trtllm_mha on Blackwell, flashinfer on Ada,",
        "  triton for some shapes (e.g. head_dim 512). Decode: `step` cached tokens + 1 new token.",
        "  One call replayed on one KV cache (no copies): a cache that fits the L2 stays there between",
        "  replays (perfmodel.roofline.attention_read_rate; the L40S's decodes show it).",
        "- All-reduce (`custom`): the engine's tensor-parallel all-reduce on one node, bf16, a tensor of",
        "  `message_size` elements; TensorRT-LLM with strategy AUTO (custom one-/two-shot kernels for small",
        "  messages, NCCL for large: its large-message rows equal NCCL's), under a CUDA graph with 5 calls",
        "  per replay; vLLM and SGLang both in a graph (timing=graph) and eagerly (timing empty; that time",
        "  includes the host launch path, ~20-30 us).",
        "- NCCL (`nccl`): nccl-tests `all_reduce_perf` (one process, one thread per GPU), 40 warm-up",
        "  iterations, 100 (60 above 16 M elements) timed ones, out-of-place time averaged over ranks; no",
        "  CUDA graph. The table's other collectives (all_gather, reduce_scatter, alltoall) are not read.",
        "- MoE: the engine's fused MoE for one GPU's share (moe_tp splits inter, moe_ep splits the",
        "  experts) with `tokens` tokens routed by `distribution` (balanced or power-law expert loads);",
        "  the GPU stands for rank 0 of the expert-parallel group and computes the tokens routed to its own",
        "  experts (a power-law draw puts the busiest experts' group there).",
        "",
        "## Columns",
        "",
        "| column | meaning |",
        "| --- | --- |",
        "| kind | matmul, matmul_wo, attention, allreduce, moe (validate/cases.py) |",
        "| m, n, k | GEMM C[m,n] = A[m,k] B[k,n]; m = tokens, n = output features, k = input features |",
        "| dtype | bf16, fp16, fp8 (per-tensor scaled); allreduce: element type; attention: compute type |",
        "| w_bits, group | matmul_wo: weight bits (8, 4); group 0 = per-channel scales "
        "(TensorRT-LLM weight-only plugin) |",
        "| phase | attention: prefill (table context_attention) or decode (generation_attention) |",
        "| batch, heads, kv_heads, head_dim | attention: sequences, query heads and KV heads on this GPU, head size |",
        "| v_head_dim | attention: the value heads' width where the collector ran one apart from head_dim (not a "
        "table column: SGLang's 192-wide rows are MiMo-V2-Flash's, values 128 wide; validate/aiconfigurator.py "
        "VALUE_HEAD_DIMS); empty: head_dim |",
        "| q_len, kv_len | prefill: q_len = kv_len = isl (no cached prefix); decode: q_len 1, kv_len = step + 1 |",
        "| kv_dtype | KV-cache dtype (always bf16 here) |",
        "| bytes, tp, strategy | allreduce: per-GPU buffer bytes (elements x element size; nccl-tests' "
        "size), GPUs, custom or nccl |",
        "| timing | graph: timed inside CUDA-graph replays; empty: eager (NCCL, eager all-reduce, "
        "vLLM fp8_block GEMMs) |",
        "| tokens, experts, top_k, hidden, inter, moe_tp, moe_ep, distribution | moe: tokens into this GPU's "
        "MoE layer, experts in the model (experts / moe_ep on this GPU), experts per token, model width, "
        "expert FFN width (whole; this GPU holds inter / moe_tp), tensor and expert parallel sizes, "
        "expert load model (balanced, power-law) |",
        "| gated | moe: 0 where the expert FFNs have no gate matrix (Nemotron-3's squared-ReLU experts: "
        "TensorRT-LLM's nongated kernel, or the layer of a relu2 model in aiconfigurator's model_configs); "
        "empty: gated (SwiGLU) |",
        "| kernel | the table's kernel_source (which implementation ran) |",
        "| measured_s | latency in seconds (table: ms), 6 significant digits |",
        "| system, engine, source | aiconfigurator system; engine (trtllm, vllm, sglang; nccl for "
        "nccl-tests); `aiconfigurator <version> <path under systems/data>` |",
        "",
        "Kept: rows our cost model can express. Dropped: GEMM fp8_block (128x128 block scales, DeepGEMM",
        "and others), nvfp4, sq (SmoothQuant W8A8); attention with an fp8 KV cache or fp8 FMHA (our",
        "attention cases have one dtype and a 16-bit cache), sliding-window rows (window_size > 0);",
        "MoE other than bf16 / fp8 (fp8_block, nvfp4, int4_wo, mxfp4 variants). A shape measured several",
        "times (several kernels, or two merged collections) stays several rows. `read_cases(...,",
        "all_dtypes=True)` keeps the dropped dtypes.",
        "",
        "Subsampling: per file at most N cases per kernel class (validate.cases.kernel_class: matmul,",
        "matmul_wo, attention_prefill, attention_decode, allreduce_*, moe), taken at evenly spaced ranks",
        "after sorting by variant (dtype, strategy, timing, kernel), size and case id; N shrinks until the",
        "file is under 400 kB.",
        "",
        "## Tables read",
        "",
        "rows: in the table; cases: kept after the filters above; written: in the CSV.",
        "",
        "| csv | table | version | rows | cases | written |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for r in frame.to_dict("records"):
        lines.append(f"| {r['csv']} | {r['path']} | {r['version']} | {r['rows']} | {r['cases']} | {r['written']} |")
    return "\n".join(lines) + "\n"


def _version_rule(version: str | None) -> str:
    if version == "current":
        return ("aiconfigurator's current version for the system and engine (systems/query_versions.yaml;"
                " NCCL: the system's misc.nccl_version), or the newest older one where the current lacks"
                " the table — as aiconfigurator serves them. Newer folders are often single-model drops.")
    return "the newest present." if version is None else f"{version}."


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--per-kind", type=int, default=300)
    parser.add_argument("--max-bytes", type=int, default=400_000)
    parser.add_argument("--version", default="current", help="current (default), newest, or an engine version")
    parser.add_argument("--root", type=Path, default=None, help="aiconfigurator's systems/data (default: installed)")
    args = parser.parse_args(argv)
    version = None if args.version == "newest" else args.version
    records = extract(args.out, args.per_kind, args.max_bytes, version, args.root)
    root = args.root if args.root is not None else aic.data_root()
    (args.out / "SOURCES.md").write_text(sources_md(records, aic.package_version(root), version))
    return 0


if __name__ == "__main__":
    sys.exit(main())
