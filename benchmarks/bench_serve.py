"""Speed of the serving simulator: requests simulated per second (issue 14's target: 10,000 requests
in <= 1 s on the 2-core CI machine, i.e. >= 10,000 requests/s).

Llama-3-8B on the calibrated H200, vLLM profile, 10,000 Poisson requests at 20 req/s with lognormal
prompts (median 512) and outputs (median 128): a loaded but unsaturated engine, which is where the
simulator runs the most iterations per request (about 25 running sequences per iteration). The time
covers the simulation only; the step-time tables are built once per configuration (reported apart).
Median of repeats.

    python benchmarks/bench_serve.py [--requests 10000] [--rate 20] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import time

import hardware
import workloads
from serving import workload
from serving.simulator import make_instance, simulate


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="llama-3-8b")
    parser.add_argument("--hardware", default="h200-sxm-calibrated")
    args = parser.parse_args(argv)
    model, hw = workloads.load(args.model), hardware.load(args.hardware)
    start = time.perf_counter()
    inst = make_instance(model, hw)
    build_s = time.perf_counter() - start
    req = workload.generate(args.requests, args.rate, workload.Lengths("lognormal", 512, 0.5),
                            workload.Lengths("lognormal", 128, 0.5), seed=0)
    times, iterations = [], 0
    for _ in range(args.repeats):
        start = time.perf_counter()
        res = simulate(inst, req)
        times.append(time.perf_counter() - start)
        iterations = len(res.iteration_end_s)
    median = statistics.median(times)
    print(f"{args.requests} requests, {iterations} iterations in {median:.3f} s (median of {args.repeats}); "
          f"tables built in {build_s * 1e3:.0f} ms")
    print(f"{args.requests / median:,.0f} requests/s")


if __name__ == "__main__":
    main()
