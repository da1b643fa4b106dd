"""Where does a compiled MoE layer's time go at small token counts? (issue 13's routing floor)

The suite's `moe` cases (validate/bench.build_moe: one layer compiled alone, graph-timed) fit a
per-layer routing floor of about 89 us on the H200, while whole compiled Qwen3-30B-A3B decode steps
imply about 35 us. For each (layer, tokens, routing) this script times the same compiled layer inside
CUDA-graph replays (bench.time_graphed) and lists its kernels with their device time per call
(torch.profiler over un-graphed calls of the compiled function: device durations, not the gaps), so
the floor can be split into kernels: router GEMM, softmax/top-k, sort, gather, grouped GEMMs,
scatter and the weighted sum. `routing` "router" lets the random-weight router pick the experts (the
suite's cases); "table" routes by validate/engine_model.routing_table (the engine steps).

    python validate/diagnostics/profile_moe.py OUT_DIR            # GPU
    python validate/diagnostics/profile_moe.py OUT_DIR --quick    # CPU smoke test (tiny layer)

Writes OUT_DIR/moe_times.csv (one row per case) and OUT_DIR/moe_kernels.csv (one row per kernel),
appending as each case completes; a rerun skips cases recorded.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, when run as a script

import torch  # noqa: E402

from validate import bench  # noqa: E402
from validate import engine_model as em  # noqa: E402
from validate.runner import append_records, recorded_ids  # noqa: E402

#: (experts, top_k, hidden, inter): Qwen3-30B-A3B's layer (whose steps are measured), and two of the
#: suite's layers (validate/cases._engine_kernels) for comparison.
LAYERS = ((128, 8, 2048, 768), (64, 6, 2048, 1408), (128, 8, 4096, 1536))
TOKENS = (1, 4, 16)
TIME_COLUMNS = ("case_id", "experts", "top_k", "hidden", "inter", "tokens", "routing", "graphed_us",
                "kernel_sum_us", "kernels_per_call")
KERNEL_COLUMNS = ("case_id", "kernel", "calls_per_call", "device_us_per_call")


def build(experts: int, top_k: int, hidden: int, inter: int, tokens: int, routing: str, dev):
    t = torch.bfloat16 if dev.type == "cuda" else torch.float32
    w = {"router": bench._randn((experts, hidden), t, dev) * 0.02,
         "w13": bench._randn((experts, 2 * inter, hidden), t, dev) * 0.02,
         "w2": bench._randn((experts, hidden, inter), t, dev) * 0.02}
    if routing == "table":
        w["route_table"] = em.routing_table(max(tokens, 1), experts, top_k, dev, seed=0)
    grouped = dev.type == "cuda" and em.grouped_mm_works(dev, t)
    dims = em.Dims(heads=1, kv_heads=1, head_dim=hidden, eps=1e-6, qk_norm=False, experts=experts, top_k=top_k,
                   moe_impl="grouped" if grouped else "loop")
    h = bench._randn((tokens, hidden), t, dev)
    fn = bench.compile_case(em.moe, dynamic=False) if grouped else em.moe
    return lambda i: fn(h, w, dims)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    dev = bench.script_device(args.quick, "profile_moe")
    if dev is None:
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    times_path = out / "moe_times.csv"
    done = recorded_ids(times_path)
    layers = ((8, 2, 64, 32),) if args.quick else LAYERS
    for experts, top_k, hidden, inter in layers:
        for tokens in ((1, 4) if args.quick else TOKENS):
            for routing in ("router", "table"):
                case_id = f"{experts}x{top_k}/{hidden}x{inter}/t{tokens}/{routing}"
                if case_id in done:
                    continue
                with torch.inference_mode():
                    fn = build(experts, top_k, hidden, inter, tokens, routing, dev)
                    for i in range(3):
                        fn(i)
                    graphed = bench.time_graphed(fn)[0] if dev.type == "cuda" else float("nan")
                    ks = bench.kernel_times(fn, dev, calls=20)
                rows = [{"case_id": case_id, "kernel": k, "calls_per_call": f"{n:.4g}",
                         "device_us_per_call": f"{us:.4g}"}
                        for k, (n, us) in sorted(ks.items(), key=lambda kv: -kv[1][1])]
                append_records(out / "moe_kernels.csv", rows, KERNEL_COLUMNS)
                row = {"case_id": case_id, "experts": experts, "top_k": top_k, "hidden": hidden, "inter": inter,
                       "tokens": tokens, "routing": routing, "graphed_us": f"{graphed * 1e6:.4g}",
                       "kernel_sum_us": f"{sum(us for _, us in ks.values()):.4g}",
                       "kernels_per_call": f"{sum(n for n, _ in ks.values()):.4g}"}
                append_records(times_path, [row], TIME_COLUMNS)
                print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
