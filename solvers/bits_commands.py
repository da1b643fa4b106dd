"""CLI: `perfmodel solve bits` — optimal widths from a sensitivity table (registered by app.cli).

    perfmodel solve bits --sensitivities sens.csv --avg-bits 4
    perfmodel solve bits --sensitivities columns.csv --avg-bits 4 --scope layer --candidates 2,3,4,5,6
    perfmodel solve bits --sensitivities sens.csv --avg-bits 4 --hardware h200-sxm --model llama-3-8b \\
        --latency-budget "6 ms" --candidates int4-g128,int8,fp8,bf16

The table needs columns params and coef (validate.sensitivity.sensitivity_table writes them), and
optionally name, layer, rmin, rmax, tie, rows, cols (layer shapes for latency).
"""
from __future__ import annotations

import json
import math

from hardware.inputs import flag
from perfmodel.commands import add_engine_arg, engine_from_args
from solvers.cli_common import solve_subparsers


def register(subparsers) -> None:
    p = solve_subparsers(subparsers).add_parser(
        "bits", help="bit-widths per layer or column under bit, memory and latency budgets")
    p.add_argument("--sensitivities", required=True, help="CSV with params, coef [, name, layer, rows, cols, tie]")
    p.add_argument("--avg-bits", type=flag(0, 32, low_open=True), default=None,
                   help="average width budget (bits per weight), above 0 and at most 32")
    p.add_argument("--memory-budget", default=None, help="bytes of the allocated weights, e.g. '4 GB'")
    p.add_argument("--latency-budget", default=None, help="modeled decode step time, e.g. '6 ms'")
    p.add_argument("--candidates", default=None,
                   help="discrete choices: widths '2,3,4,8' or formats 'int4-g128,int8,fp8,bf16' (MILP)")
    p.add_argument("--method", choices=("milp", "greedy"), default="milp", help="with --candidates")
    p.add_argument("--scope", choices=("model", "layer"), default="model",
                   help="model: one budget shared by all groups; layer: every layer keeps --avg-bits and "
                        "only its own groups (e.g. columns) trade bits (BAQ's scope)")
    p.add_argument("--theta", type=flag(0, 10, low_open=True), default=2.0, help="loss exponent: loss = n c 2^(-theta R)")
    p.add_argument("--rmin", type=flag(0, 32), default=0.0)
    p.add_argument("--rmax", type=flag(0, 32), default=16.0)
    p.add_argument("--hardware", default=None, help="preset name or spec YAML, for bytes and latency")
    p.add_argument("--model", default=None, help="catalog model: the rest of the decode step, and layer shapes "
                   "for rows named like layers.0.qkv_proj")
    p.add_argument("--batch", type=flag(1, 10**7, whole=True), default=1, help="sequences per decode step")
    p.add_argument("--context", type=flag(0, 10**9, whole=True), default=0,
                   help="cached tokens per sequence (attention time)")
    add_engine_arg(p, default_help="with --model, prices the rest of the decode step; default vllm, a serving engine")
    p.add_argument("--out", default=None, help="write the per-group widths to this CSV")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=run_bits)


def run_bits(args) -> int:
    import hardware
    import workloads
    from hardware.units import parse
    from solvers import bits_cost
    from solvers.bits import BitGroups, Budgets, allocate_bits, allocate_within_layers
    from solvers.bits_integer import round_greedy

    from hardware import inputs

    engine = engine_from_args(args)
    if args.out is not None:
        inputs.check_output_path(args.out, "--out")
    frame = inputs.read_csv(args.sensitivities, "--sensitivities")
    latency = parse(args.latency_budget, "seconds", "--latency-budget") if args.latency_budget is not None else None
    memory = parse(args.memory_budget, "bytes", "--memory-budget") if args.memory_budget is not None else None
    model = workloads.load(args.model) if args.model is not None else None
    costs = None
    if args.hardware is not None:
        hw = hardware.load(args.hardware)
        if latency is not None or {"rows", "cols"} <= set(frame.columns) or model is not None:
            costs = bits_cost.costs_from_frame(frame, hw, model=model, tokens=args.batch, context=args.context,
                                               engine=engine)
    elif latency is not None:
        raise ValueError("--latency-budget: needs --hardware (and layer shapes: rows/cols columns or --model)")
    candidates = _candidates(args.candidates)
    groups = BitGroups.from_frame(frame, args.theta, args.rmin, args.rmax)
    if candidates is not None and args.method == "greedy" and args.scope == "layer":
        if args.avg_bits is None or memory is not None or latency is not None:
            raise ValueError("--scope: 'layer' takes --avg-bits only (each layer keeps that average)")
        result = allocate_within_layers(groups, args.avg_bits,
                                        lambda g, a: round_greedy(g, candidates, Budgets(avg_bits=a)))
    elif candidates is not None and args.method == "greedy":
        result = round_greedy(groups, candidates, Budgets(args.avg_bits, memory, latency), costs)
    else:
        result = allocate_bits(groups, args.avg_bits, memory_budget_bytes=memory, latency_budget_s=latency,
                               candidates=candidates, costs=costs, scope=args.scope)
        if costs is not None and math.isnan(result.latency_s):
            result = bits_cost.with_costs(result, costs)
    if args.out is not None:
        inputs.write_text(args.out, result.to_frame().to_csv(index=False), "--out")
    if args.json:
        print(json.dumps({k: _clean(v) for k, v in result.summary().items()}, indent=2))
    else:
        print(format_result(result))
    return 0


def _candidates(text):
    """Widths ('2,3,4,8': whole numbers 1..32) or format names ('int4-g128,bf16'), not a mix of junk."""
    if text is None:
        return None
    from hardware.inputs import parse_number

    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"--candidates: {text!r} lists no widths or formats")
    return [parse_number(t, "--candidates", 1, 32, whole=True) if t[:1].isdigit() or t[:1] in "+-." else t
            for t in items]


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v.item() if hasattr(v, "item") else v


def format_result(result) -> str:
    import numpy as np
    import pandas as pd

    from hardware.units import format_seconds, format_si

    s = result.summary()
    lines = [f"{s['method']}: {s['status']}, {s['groups']} groups, average {s['avg_bits']:.4g} bits",
             f"predicted loss {s['objective']:.6g}  (uniform at the same average: {s['uniform_loss']:.6g}, "
             f"ratio {s['predicted_gain']:.4f})"]
    if math.isfinite(s["bytes"]):
        lines.append(f"weights      {format_si(s['bytes'], 'B')}")
    if math.isfinite(s["latency_s"]):
        lines.append(f"decode step  {format_seconds(s['latency_s'])} (modeled)")
    lines.append(f"solved in    {format_seconds(s['solve_time_s'])}")
    table = result.to_frame()
    lines.append("")
    widths = table["format" if "format" in table else "width"]
    discrete = widths.dtype.kind not in "f" or bool((widths == widths.round()).all())
    if len(table) > 30 and not discrete:  # a continuous optimum: a histogram by whole bits, not every width
        bins = np.floor(widths.to_numpy(float)).astype(int)
        counts = pd.Series(bins).value_counts().sort_index()
        lines.append(f"widths (continuous optimum; --candidates gives whole widths): min {widths.min():.3g}, "
                     f"median {widths.median():.3g}, max {widths.max():.3g}; groups per bit range: "
                     + ", ".join(f"[{k}, {k + 1}): {v}" for k, v in counts.items()))
    elif len(table) > 30:
        counts = widths.value_counts().sort_index()
        lines.append("widths: " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    else:
        lines.append(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return "\n".join(lines)
