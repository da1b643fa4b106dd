"""Throughput of the vectorized cost model: scenarios evaluated per second, by the fast path
(perfmodel.fastpath; issue 15's target 1e7/s) and by the per-op reference path, in one run.

One model, one device, 1e6 scenarios drawn over batch, prompt, gen, bits and TP; each scenario is a
full request prediction (prefill step + exact mean decode step + memory). Median of repeats; the
ratio of the two paths' medians is the number to compare across machines.

    python benchmarks/bench_sweep.py [--n 1000000] [--repeats 5] [--model llama-3-8b] [--hardware h200-sxm-calibrated]
                                     [--workers N]  (threads; default one per CPU, 1 for the serial cost)
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import hardware
import perfmodel
import workloads


def random_scenarios(n: int, seed: int = 0) -> workloads.Scenario:
    rng = np.random.default_rng(seed)
    return workloads.Scenario(
        batch=rng.integers(1, 257, n), prompt=rng.integers(1, 4097, n), gen=rng.integers(1, 2049, n),
        w_bits=rng.choice([4, 8, 16], n), kv_bits=rng.choice([8, 16], n), tp=rng.choice([1, 2, 4, 8], n))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="llama-3-8b")
    parser.add_argument("--hardware", default="h200-sxm-calibrated")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    model, hw = workloads.load(args.model), hardware.load(args.hardware)
    sc = random_scenarios(args.n)
    print(f"{args.n:,} scenarios ({args.model} on {args.hardware}, prefill + decode + memory; "
          f"{args.workers or 'one per CPU'} worker threads)")
    medians = {}
    for path in ("fast", "reference"):
        perfmodel.evaluate(model, hw, sc, workers=args.workers, path=path)  # warm-up (the fast path prices its groups)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = perfmodel.evaluate(model, hw, sc, workers=args.workers, path=path)
            times.append(time.perf_counter() - start)
        medians[path] = statistics.median(times)
        assert np.all(np.isfinite(result["tpot_s"])) and np.all(np.isfinite(result["ttft_s"]))
        print(f"{path:>9}: median {medians[path]:.3f} s over {args.repeats} runs (min {min(times):.3f}, "
              f"max {max(times):.3f}): {args.n / medians[path]:,.0f} scenarios/s")
    print(f"fast / reference: {medians['reference'] / medians['fast']:.1f}x")


if __name__ == "__main__":
    main()
