"""Where a DiT block's time goes, kernel by kernel: torch.profiler over calls of measure_dit.py's blocks.

    python validate/reports/dit/profile_dit.py --out DIR [--only REGEX] [--calls N] [--compile static|dynamic]   # GPU
    python validate/reports/dit/profile_dit.py --out DIR --quick                       # CPU smoke test

For each selected case of measure_dit.py's grid (default: one compiled bf16 block of each kind at a
held-out shape), builds the same callable (`measure_dit.build_block`), warms it, then profiles N calls
with CUDA activity (CPU ops on CPU) and writes every kernel's name, calls per block call and device
time per block call to DIR/kernels.csv (appended per case; a rerun skips cases recorded), so the
block's measured time can be set against the cost model's ops one by one (make_report's breakdown).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repo root, when run as a script
sys.path.insert(0, str(Path(__file__).resolve().parent))

import measure_dit  # noqa: E402  (sets the inductor cache before torch loads)
import torch  # noqa: E402

from validate import bench  # noqa: E402
from validate.runner import append_records, recorded_ids  # noqa: E402

COLUMNS = ("case_id", "kernel", "calls_per_block", "device_us_per_block", "block_us")
DEFAULT_ONLY = r"^block/.*/torch-compile/(bf16|fp8)/(768/768/1/|480/832/33/)"


def profile_case(case: dict, dev, calls: int, compile_mode: str = "static") -> list[dict]:
    """Kernel rows of one case: per kernel name, calls and device time per block call."""
    with torch.inference_mode():
        fn = measure_dit.build_block(case, dev, {}, compile_mode)
        for i in range(3):
            fn(i)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        totals = bench.kernel_times(fn, dev, calls)
    block_us = sum(us for _, us in totals.values())
    return [{"case_id": case["case_id"], "kernel": name, "calls_per_block": f"{n:.4g}",
             "device_us_per_block": f"{us:.6g}", "block_us": f"{block_us:.6g}"}
            for name, (n, us) in sorted(totals.items(), key=lambda kv: -kv[1][1])]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--only", default=DEFAULT_ONLY, help="regex over measure_dit case ids")
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--compile", default="static", choices=sorted(measure_dit.COMPILE_MODES),
                   help="as measure_dit.py --compile (the committed h200/profile run: dynamic)")
    p.add_argument("--quick", action="store_true", help="CPU smoke test: tiny dims")
    args = p.parse_args(argv)
    if args.calls < 1:
        print(f"profile_dit: --calls: {args.calls} must be at least 1", file=sys.stderr)
        return 2
    only = args.only if not args.quick else r"^block/.*/torch-eager/bf16/"
    cases = [c for c in measure_dit.grid(args.quick) if re.search(only, c["case_id"])]
    if args.quick:
        cases = cases[:2]
    dev = bench.script_device(args.quick, "profile_dit")
    if dev is None:
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "kernels.csv"
    done = recorded_ids(path)
    for case in cases:
        if case["case_id"] in done:
            continue
        rows = profile_case(case, dev, args.calls, args.compile)
        append_records(path, rows, COLUMNS)  # the suite's writer: appended and fsynced per case
        print(f"{case['case_id']}: {float(rows[0]['block_us']) if rows else 0:.1f} us per block, "
              f"{len(rows)} kernels", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
