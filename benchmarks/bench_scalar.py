"""Latency of one scalar prediction (`evaluate` of one scenario), by the fast path and the per-op
reference path, in one run, then of the public `perfmodel.predict` (the fast path plus its checks
and record; issue 15's target: 100 us median).

One scenario's fast path is a sweep's own: one cached lookup per (model, spec, engine, precision
group, prefill phase) resolves its plan (perfmodel.predict._Plan: the steps' fastpath.Route, the
group's memory numbers, the bands' class offsets), then the same `prefill_step` and
`mean_decode_step` price it in Python floats and its columns are built afresh. Nothing is kept by
the scenario's own values (batch, prompt, gen), so repeating one scenario times the whole
computation, not a lookup of its answer.

    python benchmarks/bench_scalar.py [--repeats 2000] [--model llama-3-8b] [--hardware h200-sxm-calibrated]
"""
from __future__ import annotations

import argparse
import statistics
import time

import hardware
import perfmodel
import workloads
from perfmodel.predict import evaluate


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--model", default="llama-3-8b")
    parser.add_argument("--hardware", default="h200-sxm-calibrated")
    args = parser.parse_args(argv)
    model, hw = workloads.load(args.model), hardware.load(args.hardware)
    scenario = workloads.Scenario(batch=8, prompt=2048, gen=256)
    print(f"one scenario ({args.model} on {args.hardware}, batch 8, prompt 2048, gen 256)")
    medians = {}
    for path in ("fast", "reference"):
        evaluate(model, hw, scenario, path=path)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            evaluate(model, hw, scenario, path=path)
            times.append(time.perf_counter() - start)
        medians[path] = statistics.median(times)
        print(f"{path:>9}: median {medians[path] * 1e6:,.0f} us over {args.repeats} calls")
    print(f"fast / reference: {medians['reference'] / medians['fast']:.1f}x")
    # the public call: the fast path plus its checks (context, tp) and the Prediction record
    perfmodel.predict(model, hw, scenario)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        perfmodel.predict(model, hw, scenario)
        times.append(time.perf_counter() - start)
    print(f"perfmodel.predict: median {statistics.median(times) * 1e6:,.0f} us over {args.repeats} calls")


if __name__ == "__main__":
    main()
