"""report.md from the reference loop's CSVs and (optionally) a simulator's per-request CSV
(request_id, rate, ttft_s, tpot_s, e2e_s): p50/p90 TTFT, TPOT and output throughput per rate,
measured vs simulated and their ratio. Independent of the simulator package.

python validate/reports/serve/make_report.py --data DIR [--sim sim.csv] [--out DIR/report.md]
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path


def _pct(xs: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default 'linear' method)."""
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def measured(path: Path) -> dict[float, dict]:
    """Per rate: ttft = first token - arrival, tpot = (last - first) / (tokens - 1),
    e2e = finish - arrival, throughput = output tokens / (last finish - first arrival)."""
    by_rate: dict[float, list] = {}
    with path.open() as f:
        for r in csv.DictReader(f):
            by_rate.setdefault(float(r["rate"]), []).append(r)
    out = {}
    for rate, rows in by_rate.items():
        f = lambda r, k: float(r[k])  # noqa: E731
        out[rate] = dict(
            ttft=[f(r, "first_token_s") - f(r, "arrival_s") for r in rows],
            tpot=[(f(r, "last_token_s") - f(r, "first_token_s")) / (int(r["tokens"]) - 1)
                  for r in rows if int(r["tokens"]) > 1],
            e2e=[f(r, "finish_s") - f(r, "arrival_s") for r in rows],
            tok_s=sum(int(r["tokens"]) for r in rows) /
            (max(f(r, "finish_s") for r in rows) - min(f(r, "arrival_s") for r in rows)))
    return out


def simulated(path: Path, requests: Path) -> dict[float, dict]:
    """Same metrics from the simulator CSV; throughput from its e2e and the requests' arrivals."""
    reqs = {}
    with requests.open() as f:
        for r in csv.DictReader(f):
            reqs[(float(r["rate"]), int(r["request_id"]))] = r
    by_rate: dict[float, list] = {}
    with path.open() as f:
        for r in csv.DictReader(f):
            by_rate.setdefault(float(r["rate"]), []).append(r)
    out = {}
    for rate, rows in by_rate.items():
        arr = [float(reqs[(rate, int(r["request_id"]))]["arrival_s"]) for r in rows]
        fin = [a + float(r["e2e_s"]) for a, r in zip(arr, rows)]
        toks = sum(int(reqs[(rate, int(r["request_id"]))]["output_tokens"]) for r in rows)
        out[rate] = dict(ttft=[float(r["ttft_s"]) for r in rows], tpot=[float(r["tpot_s"]) for r in rows],
                         e2e=[float(r["e2e_s"]) for r in rows], tok_s=toks / (max(fin) - min(arr)))
    return out


def report(meas: dict, sim: dict | None) -> str:
    lines = ["# Serving reference loop vs simulator", "",
             "| rate req/s | metric | measured | simulated | sim/meas |", "|---|---|---|---|---|"]
    for rate in sorted(meas):
        m, s = meas[rate], (sim or {}).get(rate)
        cells = []
        for key, q, name in (("ttft", .5, "TTFT p50 ms"), ("ttft", .9, "TTFT p90 ms"),
                             ("tpot", .5, "TPOT p50 ms"), ("tpot", .9, "TPOT p90 ms")):
            cells.append((name, 1e3 * _pct(m[key], q), 1e3 * _pct(s[key], q) if s else None))
        cells.append(("throughput tok/s", m["tok_s"], s["tok_s"] if s else None))
        for name, mv, sv in cells:
            sim_txt = f"{sv:.1f}" if sv is not None else "-"
            ratio = f"{sv / mv:.3f}" if sv is not None and mv else "-"
            lines.append(f"| {rate:g} | {name} | {mv:.1f} | {sim_txt} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--sim", default=None)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    data = Path(a.data)
    if not (data / "per_request.csv").exists():
        print(f"--data: {data} has no per_request.csv", file=sys.stderr)
        return 2
    sim = simulated(Path(a.sim), data / "requests.csv") if a.sim and Path(a.sim).exists() else None
    text = report(measured(data / "per_request.csv"), sim)
    Path(a.out or data / "report.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
