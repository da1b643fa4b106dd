"""Held-out check of the skinny-kernel floor (perfmodel.roofline._skinny_floor) on a GPU.

The floor (a GEMM with more than 64 rows never takes less than the same GEMM with 64) was chosen on
the H200 validation suite's matmuls. This measures NEW weight shapes (none of them in the suite's
list: Llama-2-13B, Qwen2.5-32B / Mistral-Small and Llama-3-405B-TP8-like projections) at rows
1..1024 across the m = 64 | 65 edge and tile rows, in bf16 and fp8, with the suite's own harness
(validate.bench, validate.runner: each result appended as it completes, reruns resume).

    python validate/reports/gemm_rows/measure_rows.py OUT_DIR [--quick] [--timing graph]

then `python validate/reports/gemm_rows/make_report.py OUT_DIR/measurements.csv` here scores the
model with and without the floor against the calibrated H200 spec.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

SHAPES = [(5120, 5120), (13824, 5120), (5120, 13824), (8192, 8192), (2048, 16384), (16384, 2048)]
#: Graph-timed runs add small weights (1-15 MB), where a GEMM's fill latency is most of its time;
#: none of them is in the suite either.
GRAPH_SHAPES = SHAPES + [(1024, 1024), (2560, 2560), (7168, 1024), (1024, 7168)]
ROWS = [1, 16, 32, 48, 64, 65, 80, 96, 112, 128, 129, 160, 192, 256, 257, 320, 384, 512, 768, 1024]
DTYPES = ("bf16", "fp8")


def cases(quick: bool = False, timing: str = "eager") -> list[dict]:
    """The cases: eager calls (timed back to back from Python) or, with timing="graph", each GEMM
    replayed from a CUDA graph (device time, as the suite's graph-timed cases)."""
    shapes = GRAPH_SHAPES if timing == "graph" else SHAPES
    shapes, rows, dtypes = ([(256, 256)], [1, 64, 65, 128], ("bf16",)) if quick else (shapes, ROWS, DTYPES)
    tag = {"timing": "graph"} if timing == "graph" else {}
    return [dict(kind="matmul", m=m, n=n, k=k, dtype=d, **tag) for d, (n, k), m in itertools.product(dtypes, shapes, rows)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--quick", action="store_true", help="4 small bf16 cases (a smoke test, also on a CPU)")
    parser.add_argument("--timing", choices=("eager", "graph"), default="eager",
                        help="eager calls (the first run) or CUDA-graph replays (device time)")
    args = parser.parse_args(argv)
    from validate import bench, runner

    if bench.script_device(args.quick, "measure_rows") is None:
        return 2
    todo = cases(args.quick, args.timing)
    if not args.quick:
        todo = [c for c in todo if c["dtype"] != "fp8" or bench.device().type == "cuda"]
    path = runner.run(todo, args.out / "measurements.csv", progress=False)
    print(f"measure_rows: {path}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    raise SystemExit(main())
