"""CLI: `perfmodel solve kv {capacity,serve,setting,split}` and `perfmodel solve tts` (registered by app.cli).

Human units ("80 GB", "20 ms") are parsed here, at the edge; the solvers take SI floats.
`kv serve` and `kv setting` price steps with an engine profile (--engine); `kv capacity` and
`kv split` count bytes and tokens only, and `tts` prices with the Kinetics cost model (FLOPs and
bytes at the device's rates, no per-kernel terms), so those take no --engine.
cvxpy and matplotlib are imported only by the commands that use them.
"""
from __future__ import annotations

import json
import math

import numpy as np

import hardware
import workloads
from hardware import inputs
from hardware.inputs import flag
from hardware.units import format_seconds, format_si, parse
from perfmodel.commands import add_engine_arg, add_model_hardware_args, engine_from_args, scenario_flag
from solvers.cli_common import solve_subparsers

CONTEXT = flag(1, 10**9, whole=True)
USERS = flag(1, 10**7, whole=True)
#: Context lengths `solve kv serve` tabulates by default, kept to those the model supports.
SERVE_CONTEXTS = (8192, 32768, 131072)


def register(subparsers) -> None:
    solve = solve_subparsers(subparsers)
    kv = solve.add_parser("kv", help="KV-cache budgets: capacity, long-context serving, compression, per-layer split")
    actions = kv.add_subparsers(dest="kv_action", required=True)

    cap = actions.add_parser("capacity", help="most users at a context, or longest context for a number of users")
    add_model_hardware_args(cap)
    target = cap.add_mutually_exclusive_group(required=True)
    target.add_argument("--context", type=CONTEXT, help="tokens per user: solve for the number of users")
    target.add_argument("--users", type=USERS, help="concurrent users: solve for the context length")
    _add_memory_args(cap)
    cap.add_argument("--hbm-budget", help="HBM to use per device, e.g. '80 GB' (default: all of it)")
    cap.set_defaults(handler=run_capacity)

    serve = actions.add_parser("serve", help="long-context serving table: prefill, decode, KV, concurrency, swap")
    add_model_hardware_args(serve)
    serve.add_argument("--context", default=None, help="comma-separated context lengths (default: those of "
                       f"{', '.join(map(str, SERVE_CONTEXTS))} the model supports, else its maximum)")
    serve.add_argument("--tp", default=None, help="comma-separated tensor-parallel degrees (default: every "
                       "degree of 1, 2, 4, 8 the model and node allow)")
    serve.add_argument("--batch", type=USERS, default=1, help="users for the per-token decode latency column")
    serve.add_argument("--w-bits", type=scenario_flag("w_bits"), default=16)
    serve.add_argument("--kv-bits", type=scenario_flag("kv_bits"), default=16)
    add_engine_arg(serve)
    serve.set_defaults(handler=run_serve)

    setting = actions.add_parser("setting", help="least-compressed KV setting meeting a latency or memory target")
    add_model_hardware_args(setting)
    setting.add_argument("--context", type=CONTEXT, required=True)
    setting.add_argument("--users", type=USERS, default=1)
    setting.add_argument("--latency", help="per-token decode latency target, e.g. '20 ms'")
    setting.add_argument("--memory", help="KV bytes per device for all users, e.g. '40 GB'")
    setting.add_argument("--weights", default=None, help="penalty weights per knob, e.g. 'kv_bits=0.5,evict=2'")
    setting.add_argument("--w-bits", type=scenario_flag("w_bits"), default=16)
    setting.add_argument("--tp", type=scenario_flag("tp"), default=1)
    setting.add_argument("--top", type=flag(1, 10**6, whole=True), default=8, help="candidates to list")
    add_engine_arg(setting)
    setting.set_defaults(handler=run_setting)

    split = actions.add_parser("split", help="split a KV token budget across layers (or heads) by importance")
    split.add_argument("--importance", required=True,
                       help="comma-separated weights, or a CSV file with columns importance[,group,lower,upper,unit_cost]")
    split.add_argument("--total", type=flag(0, 1e15, low_open=True), required=True,
                       help="total budget (tokens, or bytes with unit costs), above 0 and at most 1e15")
    split.add_argument("--lower", type=flag(0, 1e15), default=0.0)
    split.add_argument("--upper", type=flag(0, 1e15, low_open=True), default=None)
    split.add_argument("--alpha", type=flag(0, 100, low_open=True), default=1.0,
                       help="loss exponent: loss_i = w_i b_i^-alpha")
    split.add_argument("--step", type=flag(1, 10**9, whole=True), default=1,
                       help="round budgets to multiples of this (e.g. a block size)")
    split.add_argument("--method", choices=("closed-form", "cvxpy"), default="closed-form")
    split.set_defaults(handler=run_split)

    for p in (cap, serve, setting, split):
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    t = solve.add_parser("tts", help="test-time compute: model, samples, generation length, sparse budget for a budget")
    t.add_argument("--curves", default="demo", help="accuracy-curve CSV, or 'demo' for the shipped SYNTHETIC curves")
    t.add_argument("--budget", type=flag(0, 1e30, low_open=True), required=True, help="per-request budget in --unit")
    t.add_argument("--unit", choices=("efflops", "seconds", "dollars"), default="efflops")
    t.add_argument("--hardware", default=None, help="device for seconds / dollars and the eFLOPs intensity")
    t.add_argument("--strategy", choices=("pass@k", "majority"), default="pass@k")
    t.add_argument("--samples", default="1,2,4,8,16,32,64", help="comma-separated N to consider")
    t.add_argument("--prompt", type=scenario_flag("prompt"), default=128,
                   help="prompt tokens when the curves do not give them")
    t.add_argument("--block-size", type=flag(1, 10**6, whole=True), default=16,
                   help="tokens per block of block top-k sparse attention")
    t.add_argument("--kinetics-params", action="store_true",
                   help="use the Kinetics paper's parameter counts for Qwen3 (see perfmodel.kinetics)")
    t.add_argument("--plot", default=None, help="write the accuracy-cost frontier to this PNG")
    t.add_argument("--frontier", type=flag(1, 10**6, whole=True), default=12, help="frontier rows to list")
    t.add_argument("--json", action="store_true")
    t.set_defaults(handler=run_tts)


def _add_memory_args(p) -> None:
    p.add_argument("--kv-bits", type=scenario_flag("kv_bits"), default=16)
    p.add_argument("--w-bits", type=scenario_flag("w_bits"), default=16)
    p.add_argument("--tp", type=scenario_flag("tp"), default=1)


def _quantity(text: str | None, dimension: str, field: str) -> float | None:
    """A human quantity with its unit ('20 ms', '40 GB'); a bare number is refused (hardware.units)."""
    if text is None:
        return None
    return parse(text, dimension, field)


def _ints(text: str, field: str, low: int = 1, high: int = 10**9) -> list[int]:
    return inputs.number_list(text, field, low, high, whole=True, max_items=1000)


def _print_json(obj) -> None:
    def clean(v):
        if isinstance(v, (np.bool_, bool)):
            return bool(v)
        if isinstance(v, (np.integer,)):
            return int(v)
        if isinstance(v, (float, np.floating)):
            return float(v) if math.isfinite(v) else None
        return v

    if hasattr(obj, "to_dict"):
        obj = obj.to_dict(orient="records")
    if isinstance(obj, list):
        obj = [{k: clean(v) for k, v in row.items()} for row in obj]
    elif isinstance(obj, dict):
        obj = {k: clean(v) for k, v in obj.items()}
    print(json.dumps(obj, indent=2))


# -- kv ----------------------------------------------------------------------------------------------
def run_capacity(args) -> int:
    from solvers import kv

    model, hw = workloads.load(args.model), hardware.load(args.hardware)
    common = dict(kv_bits=args.kv_bits, w_bits=args.w_bits, tp=args.tp,
                  hbm_budget_bytes=_quantity(args.hbm_budget, "bytes", "--hbm-budget"))
    cap = kv.max_concurrency(model, hw, args.context, **common) if args.context is not None else \
        kv.max_context(model, hw, args.users, **common)
    if args.json:
        _print_json(cap.__dict__ | {"model": model.name, "hardware": hw.name})
        return 0
    what = f"{cap.value} users at {cap.context} tokens" if cap.quantity == "users" else \
        f"{cap.value} tokens of context for each of {cap.users} users"
    print(f"{model.name} on {hw.title} x{cap.tp}, KV {cap.kv_bits:g}-bit: {what} (bound by {cap.bound_by})")
    print(f"  HBM budget per device {format_si(cap.budget_bytes, 'B')}: weights + activations "
          f"{format_si(cap.reserved_bytes, 'B')}, KV per user {format_si(cap.kv_bytes_per_user, 'B')}")
    return 0


def run_serve(args) -> int:
    from perfmodel import longctx

    from perfmodel.checks import tp_allowed

    engine = engine_from_args(args)
    model, hw = workloads.load(args.model), hardware.load(args.hardware)
    contexts = _ints(args.context, "--context") if args.context is not None else (
        [c for c in SERVE_CONTEXTS if c <= model.max_context] or [model.max_context])
    tps = _ints(args.tp, "--tp", 1, 4096) if args.tp is not None else [t for t in (1, 2, 4, 8) if tp_allowed(model, hw, t)]
    plan = longctx.analyze(model, hw, np.array(contexts)[None, :], tp=np.array(tps)[:, None], batch=args.batch,
                           w_bits=args.w_bits, kv_bits=args.kv_bits, engine=engine)
    frame = plan.to_frame()
    if args.json:
        _print_json(frame)
        return 0
    view = frame[["context", "tp", "kv_bytes_per_user", "concurrency", "prefill_s", "decode_s_per_token",
                  "throughput_tok_s_at_limit", "swap_in_s"]].copy()
    for col in ("context", "tp", "concurrency"):
        view[col] = view[col].astype(int)
    view["kv_bytes_per_user"] = view["kv_bytes_per_user"].map(lambda v: format_si(v, "B"))
    for col in ("prefill_s", "decode_s_per_token", "swap_in_s"):
        view[col] = view[col].map(format_seconds)
    view["throughput_tok_s_at_limit"] = view["throughput_tok_s_at_limit"].map(lambda v: f"{v:,.0f}")
    view.columns = ["context", "tp", "KV/user", "max users", "prefill", f"decode/token (batch {args.batch})",
                    "tok/s at max users", "swap in"]
    mode = "calibrated" if hw.is_calibrated else "datasheet roofline"
    print(f"{model.name} on {hw.title}, w{args.w_bits:g}/kv{args.kv_bits:g}  [{mode}, engine {engine.name}]")
    print(view.to_string(index=False))
    return 0


def _weights(text: str | None) -> dict:
    if text is None:
        return {}
    if not text.strip():
        raise ValueError("--weights: '' lists no knob=number pairs, e.g. 'kv_bits=0.5,evict=2'")
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--weights: {item!r} must look like knob=number")
        out[key.strip()] = inputs.parse_number(value, f"--weights {key.strip()}", 0, 1e6)
    return out


def run_setting(args) -> int:
    from solvers import kv

    engine = engine_from_args(args)
    model, hw = workloads.load(args.model), hardware.load(args.hardware)
    best = kv.cheapest_kv_setting(model, hw, args.context, users=args.users,
                                  latency_target_s=_quantity(args.latency, "seconds", "--latency"),
                                  memory_target_bytes=_quantity(args.memory, "bytes", "--memory"),
                                  weights=_weights(args.weights), w_bits=args.w_bits, tp=args.tp, engine=engine)
    if args.json:
        _print_json({k: v for k, v in best.__dict__.items() if k != "candidates"} | {"engine": engine.name})
        return 0
    print(f"{model.name} on {hw.title}: {args.users} users at {args.context} tokens, engine {engine.name}")
    print(f"choice: KV {best.kv_bits:g}-bit, keep {best.keep_tokens} tokens, ThinK key pruning {best.think_ratio:g}, "
          f"sparse budget {best.sparse_budget or 'dense'} -> KV {format_si(best.kv_bytes, 'B')}, "
          f"decode {format_seconds(best.decode_s_per_token)}/token, {best.halvings:.2f} weighted halvings")
    view = best.to_frame().head(args.top).copy()
    view["kv_bytes"] = view["kv_bytes"].map(lambda v: format_si(v, "B"))
    view["decode_s_per_token"] = view["decode_s_per_token"].map(format_seconds)
    print(f"\nleast-compressed candidates meeting the target (of {len(best.to_frame())}):")
    print(view.to_string(index=False))
    return 0


def run_split(args) -> int:
    from solvers import kv

    importance, names, extra = _importance(args.importance)
    split = kv.split_kv_budget(importance, args.total, lower=extra.get("lower", args.lower),
                               upper=extra.get("upper", args.upper), alpha=args.alpha,
                               unit_cost=extra.get("unit_cost", 1.0), names=names, method=args.method)
    frame = split.to_frame()
    frame["rounded"] = kv.round_split(split, args.step)
    if args.json:
        _print_json(frame)
        return 0
    print(f"split of {args.total:g} over {len(frame)} groups ({split.method}, {split.status}); "
          f"loss sum w b^-{split.alpha:g} = {split.objective:.6g}")
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
    return 0


def _importance(text: str):
    from pathlib import Path

    if Path(text).suffix == ".csv" or Path(text).exists() or "/" in text:
        frame = inputs.read_csv(text, "--importance")
        if "importance" not in frame.columns:
            raise ValueError(f"--importance: {text} needs an 'importance' column; has {list(frame.columns)}")
        names = list(frame["group"].astype(str)) if "group" in frame.columns else None
        columns = {c: inputs.numeric_column(frame, c, "--importance", low, high)
                   for c, low, high in (("importance", 0, 1e15), ("lower", 0, 1e15), ("upper", 0, 1e15),
                                        ("unit_cost", 1e-15, 1e15)) if c in frame.columns}
        return columns.pop("importance"), names, columns
    try:
        return np.array(inputs.number_list(text, "--importance", 0, 1e15, max_items=10**6)), None, {}
    except inputs.InputError:
        raise ValueError(f"--importance: {text[:60]!r} is neither a CSV file nor comma-separated numbers "
                         "from 0 to 1e15") from None


# -- tts ---------------------------------------------------------------------------------------------
def run_tts(args) -> int:
    from perfmodel import kinetics
    from solvers import tts

    if args.plot is not None:
        inputs.check_output_path(args.plot, "--plot")
    if args.curves != "demo":
        inputs.check_input_path(args.curves, "--curves")
    curves = tts.AccuracyCurves.demo() if args.curves == "demo" else tts.AccuracyCurves.from_csv(args.curves)
    hw = hardware.load(args.hardware) if args.hardware is not None else None
    cost = tts.CostModel(unit=args.unit, hardware=hw, prompt=args.prompt, block_size=args.block_size,
                         params=dict(kinetics.KINETICS_PARAMS) if args.kinetics_params else {})
    plan = tts.plan_tts(curves, args.budget, tts.load_models(curves.models), cost, _ints(args.samples, "--samples", 1, 10**6),
                        args.strategy)
    if args.plot is not None:
        plan.plot(args.plot)
    if args.json:
        _print_json({"best": plan.best, "budget": plan.budget, "unit": plan.unit, "strategy": plan.strategy,
                     "curves": plan.source})
        return 0
    b = plan.best
    print(f"curves: {plan.source}")
    print(f"budget {_cost(plan.budget, plan.unit)} per request, {plan.strategy}, cost "
          f"{'on ' + hw.title if hw else 'at I = %.4g FLOP/B' % cost.efflops_intensity()}")
    print(f"choice: {b['model']}, N = {int(b['samples'])}, generation cap {int(b['gen_len'])} tokens, "
          f"{'sparse budget %d' % b['sparse_budget'] if b['sparse_budget'] else 'dense attention'}"
          f" -> expected accuracy {b['accuracy']:.3f} for {_cost(b['cost'], plan.unit)} "
          f"(cost-of-pass {_cost(b['cost_of_pass'], plan.unit)})")
    cols = ["model", "gen_len", "sparse_budget", "samples", "accuracy", "cost", "cost_of_pass"]
    front = plan.frontier[cols].copy()
    front = front[front["cost"] <= plan.budget].tail(args.frontier)
    for col in ("cost", "cost_of_pass"):
        front[col] = front[col].map(lambda v: _cost(v, plan.unit))
    front["accuracy"] = front["accuracy"].map(lambda v: f"{v:.3f}")
    print(f"\nPareto frontier within the budget (last {len(front)} points):")
    print(front.to_string(index=False))
    if args.plot is not None:
        print(f"\nplot written to {args.plot}")
    return 0


def _cost(value: float, unit: str) -> str:
    if not math.isfinite(value):
        return "-"  # cost of pass at accuracy 0: never correct
    return {"efflops": format_si(value, "").strip() + " eFLOPs", "seconds": format_seconds(value),
            "dollars": f"${value:.4g}"}[unit]
