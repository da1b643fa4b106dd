"""report.md: the reference loop's measurements beside the serving simulator run on the same
requests with the loop's own settings (meta.json "simulator": serving.simulator.ServeConfig), per
rate: p50/p90 TTFT, p50/p90 TPOT and output throughput, measured, simulated, ratio and whether it
is within issue 14's 15% (serving.compare computes every metric, the same way for both).

python validate/reports/serve/make_report.py --data DIR [--hardware H] [--engine E] [--out DIR/report.md]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def load(data: Path) -> tuple[dict, dict]:
    """(meta, {rate: per-request rows}) from a loop's output directory; one-line errors."""
    for name in ("meta.json", "per_request.csv"):
        if not (data / name).exists():
            raise ValueError(f"--data: {str(data)!r} has no {name} (run ref_loop.py --out {data} first)")
    meta = json.loads((data / "meta.json").read_text())
    if "simulator" not in meta:
        raise ValueError(f"--data: {str(data)!r} meta.json has no 'simulator' settings (written by an older "
                         "ref_loop.py; rerun it)")
    by_rate: dict[float, list] = {}
    for r in _rows(data / "per_request.csv"):
        by_rate.setdefault(float(r["rate"]), []).append(r)
    if not by_rate:
        raise ValueError(f"--data: {str(data)!r} per_request.csv has no rows")
    return meta, by_rate


def model_of(meta: dict):
    """The loop's ModelSpec (measure_engine.model_spec: the catalog model with its layer count, or
    the CPU stand-in of a '-tiny' name)."""
    from validate.reports.engine.measure_engine import model_spec
    return model_spec(meta["config"]["model"], meta["config"]["layers"])


def compare_rate(rows: list[dict], inst):
    """serving.compare's table for one rate: measured (finish = last token) vs simulated."""
    import numpy as np
    import pandas as pd

    from serving import workload
    from serving.compare import compare
    from serving.simulator import simulate

    frame = pd.DataFrame({
        "arrival_s": [float(r["arrival_s"]) for r in rows], "first_token_s": [float(r["first_token_s"]) for r in rows],
        "finish_s": [float(r["last_token_s"]) for r in rows], "output_tokens": [int(r["tokens"]) for r in rows],
        "prompt_tokens": [int(r["prompt_tokens"]) for r in rows]}).sort_values("arrival_s", kind="stable")
    frame = frame.reset_index(drop=True)
    req = workload.Requests(frame["arrival_s"].to_numpy(), frame["prompt_tokens"].to_numpy(),
                            frame["output_tokens"].to_numpy(), np.zeros(len(frame), np.int64))
    return compare(frame, simulate(inst, req))


def report(meta: dict, tables: dict, hardware_name: str, engine: str) -> str:
    c = meta["config"]
    sim = meta["simulator"]
    lines = ["# Serving reference loop vs simulator (issue 14)", "",
             f"Loop: {c['model']} ({c['layers']} layers, {c['dtype']}) on {meta.get('gpu')}, torch {meta.get('torch')}, "
             f"compile {c.get('compile')}; warm-up before the timed replay {meta['warmup_s']['total']:.1f} s; "
             f"capacity estimate {meta.get('capacity_req_s')} req/s.",
             f"Simulator: hardware {hardware_name}, engine {engine}, settings "
             + ", ".join(f"{k}={v}" for k, v in sim.items()) + ".", "",
             "| rate req/s | requests | metric | measured | simulated | sim/meas | within 15% |",
             "|---|---|---|---|---|---|---|"]
    ok = total = 0
    for rate in sorted(tables):
        table, n = tables[rate]
        for row in table.to_dict("records"):
            unit, scale = ("tok/s", 1.0) if row["metric"].startswith("throughput") else ("ms", 1e3)
            name = row["metric"].replace("_s", "").replace("_tok", "") + f" ({unit})"
            lines.append(f"| {rate:g} | {n} | {name} | {row['measured'] * scale:.2f} | {row['predicted'] * scale:.2f} | "
                         f"{row['ratio']:.3f} | {'yes' if row['within'] else 'NO'} |")
            ok += bool(row["within"])
            total += 1
    lines += ["", f"{ok} of {total} metrics within 15%."]
    return "\n".join(lines) + "\n"


def forward_table(meta: dict, inst) -> str:
    """Each captured forward replayed alone on the device (meta.json forward_s) beside the
    simulator's price of the same forward (serving.simulator.iteration_s of that forward alone):
    the cost model checked apart from the scheduler."""
    from serving.simulator import iteration_s

    measured = meta.get("forward_s") or {}
    if not measured:
        return ""
    lines = ["", "## Each forward alone (graph replay, median of 5) vs the simulator's price", "",
             "| forward | measured ms | simulated ms | sim/meas |", "|---|---|---|---|"]
    for key, seconds in measured.items():
        phase, size = key.split("_")
        size = int(size)
        if phase == "decode":
            sim = iteration_s(inst.cfg, inst.costs, size, 0.0, [], 0)
        else:
            sim = iteration_s(inst.cfg, inst.costs, 0, 0.0, [(size, 0)], 1)
        lines.append(f"| {key} | {seconds * 1e3:.3f} | {sim * 1e3:.3f} | {sim / seconds:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="ref_loop.py's --out directory")
    p.add_argument("--hardware", default="h200-sxm-calibrated")
    p.add_argument("--engine", default=None,
                   help="engine profile pricing the loop's forwards (default: meta.json engine_profile)")
    p.add_argument("--out", default=None, help="default DATA/report.md")
    a = p.parse_args(argv)
    try:
        import hardware
        from serving.simulator import ServeConfig, make_instance

        data = Path(a.data)
        meta, by_rate = load(data)
        settings = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["simulator"].items()}
        a.engine = a.engine or meta.get("engine_profile", "torch-compile")
        inst = make_instance(model_of(meta), hardware.load(a.hardware), engine=a.engine, cfg=ServeConfig(**settings))
        tables = {rate: (compare_rate(rows, inst), len(rows)) for rate, rows in by_rate.items()}
    except ValueError as err:  # ServeError, WorkloadError, unknown hardware/engine: one line
        print(str(err).splitlines()[0], file=sys.stderr)
        return 2
    text = report(meta, tables, a.hardware, a.engine) + forward_table(meta, inst)
    Path(a.out or data / "report.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    sys.exit(main())
