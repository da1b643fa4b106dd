"""Where a graph-replayed prefill step's time beyond its kernels goes: depth, replay and clocks.

    python validate/reports/engine/graph_gap.py --out DIR

For Llama-3-8B bf16 prefill at 512 and 2048 tokens, at 4 and 32 decoder layers, compiled as the
torch-compile profile runs it: the median CUDA-graph replay time, the summed device time of the
kernels the same step launches without a graph (torch.profiler), and the kernels seen under the
profiler during graph replays, with the SM clock read before and after. Writes DIR/graph_gap.csv.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repo root, when run as a script
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import measure_engine as me  # noqa: E402
from validate import bench  # noqa: E402
from profile_kernels import compiled_step, kernel_table  # noqa: E402


def device_sum(fn, repeats: int = 3) -> tuple[float, int]:
    """Summed device time and count of the kernels one call launches (torch.profiler)."""
    table = kernel_table(fn, repeats)
    return sum(s for _, s in table.values()), int(round(sum(c for c, _ in table.values())))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    dev = bench.script_device(False, "graph_gap", smoke_test=False)
    if dev is None:
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for layers in (4, 32):
        for tokens in (512, 2048):
            step = compiled_step("llama-3-8b", "bf16", layers, 1, tokens, 0, 2304, dev)
            with torch.inference_mode():
                eager_sum, kernels = device_sum(step)
                graph, _ = me.capture(step)
                before = bench.clocks()
                replay = bench.median_replay_s(graph, 20)
                after = bench.clocks()
                replay_sum, replay_kernels = device_sum(graph.replay)
            rows.append(dict(layers=layers, tokens=tokens, graph_replay_s=f"{replay:.6g}",
                             kernels_no_graph_sum_s=f"{eager_sum:.6g}", kernels_no_graph=kernels,
                             kernels_in_replay_sum_s=f"{replay_sum:.6g}", kernels_in_replay=replay_kernels,
                             sm_clock_before=before.get("sm_clock_mhz"), sm_clock_after=after.get("sm_clock_mhz")))
            print(rows[-1], flush=True)
            del step, graph
            torch._dynamo.reset()
            torch.cuda.empty_cache()
    with (out / "graph_gap.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
