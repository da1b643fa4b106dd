"""`perfmodel plan`: the cheapest deployment meeting TTFT / TPOT percentiles at a rate (serving.planner)."""
from __future__ import annotations

import json

from hardware.inputs import flag


def _names(text: str, field: str) -> tuple[str, ...]:
    items = tuple(x.strip() for x in str(text).split(",") if x.strip())
    if not items:
        raise ValueError(f"{field}: {text!r} must be a comma-separated list")
    return items


def _whole_list(text: str, field: str, low: int, high: int) -> tuple[int, ...]:
    from hardware.inputs import number_list

    return tuple(int(v) for v in number_list(text, field, low, high, whole=True))


def register(subparsers) -> None:
    from perfmodel.commands import add_model_hardware_args
    from serving.commands import add_serving_args
    from serving.planner import DEFAULT_BITS, DEFAULT_COUNTS, DEFAULT_ENGINES, DEFAULT_HARDWARE

    p = subparsers.add_parser("plan", help="cheapest hardware x count x TP x engine x bits x batching x "
                                           "(dis)aggregation meeting a TTFT/TPOT SLO at a rate")
    add_model_hardware_args(p, hardware_default=",".join(DEFAULT_HARDWARE))
    p.add_argument("--rate", type=flag(0, 1e7, low_open=True), required=True, help="requests per second to serve")
    add_serving_args(p)
    p.set_defaults(requests=200)
    p.add_argument("--percentile", type=int, choices=(50, 90, 99), default=99, help="SLO percentile (default p99)")
    p.add_argument("--gpus", default=",".join(map(str, DEFAULT_COUNTS)), help="GPU counts to try, e.g. 1,2,4,8")
    p.add_argument("--tps", default="1,2,4,8", help="tensor-parallel degrees to try")
    p.add_argument("--engines", default=",".join(DEFAULT_ENGINES), help="engine profiles to try")
    p.add_argument("--bits", default=",".join(map(str, DEFAULT_BITS)), help="bit widths to try (weights=acts=KV)")
    p.add_argument("--budgets", default="2048:128,8192:256",
                   help="max_num_batched_tokens:max_num_seqs pairs to try")
    p.add_argument("--no-disagg", action="store_true", help="aggregated deployments only")
    p.add_argument("--top", type=flag(1, 1000, whole=True), default=5, help="rows of the cheapest table to print")
    p.add_argument("--output", default=None, help="every configuration and its metrics as CSV")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_plan)


def run_plan(args) -> int:
    import workloads
    from hardware.units import format_seconds as f
    from serving import planner, workload
    from serving.metrics import SLO

    if args.slo_ttft is None and args.slo_tpot is None:
        raise ValueError("--slo-ttft/--slo-tpot: give at least one objective to plan for")
    if args.output is not None:
        from hardware.inputs import check_output_path

        check_output_path(args.output, "--output", (".csv",))
    model = workloads.load(args.model)
    budgets = []
    for pair in _names(args.budgets, "--budgets"):
        parts = pair.split(":")
        if len(parts) != 2:
            raise ValueError(f"--budgets: {pair!r} must be TOKENS:SEQS")
        budgets.append((_whole_list(parts[0], "--budgets tokens", 1, 10**6)[0], _whole_list(parts[1], "--budgets seqs", 1, 65536)[0]))
    _check_choices(args, budgets)
    target = planner.Target(args.rate, workload.parse_lengths(args.prompt, "--prompt"),
                            workload.parse_lengths(args.gen, "--gen"), SLO(args.slo_ttft, args.slo_tpot), args.percentile)
    frame, seconds = planner.timed_plan(
        model, target, hardware_names=_names(args.hardware, "--hardware"), counts=_whole_list(args.gpus, "--gpus", 1, 4096),
        tps=_whole_list(args.tps, "--tps", 1, 4096), engines=_names(args.engines, "--engines"),
        bits=_whole_list(args.bits, "--bits", 1, 32), budgets=tuple(budgets), requests=args.requests, seed=args.seed,
        disagg=not args.no_disagg)
    _check_floor(frame, target)
    if args.output is not None:
        from hardware.inputs import write_text

        write_text(args.output, frame.to_csv(index=False), "--output")
    best = planner.cheapest(frame)
    front = planner.pareto_front(frame)
    simulated = int(frame["status"].isin(["meets", "misses"]).sum())
    q = f"p{args.percentile}"
    if args.json:
        out = {"configurations": len(frame), "simulated": simulated, "seconds": seconds,
               "cheapest": None if best is None else _clean(best.to_dict()),
               "pareto": [_clean(r) for r in front.to_dict("records")]}
        if best is None:
            out["best_achievable"] = planner.best_achievable(frame)
        print(json.dumps(out, indent=2))
        return 0
    print(f"{model.name} at {args.rate:g} req/s, prompt {args.prompt}, gen {args.gen}: SLO {q} TTFT "
          f"{f(args.slo_ttft) if args.slo_ttft else '-'}, {q} TPOT {f(args.slo_tpot) if args.slo_tpot else '-'}")
    print(f"searched {len(frame)} configurations in {seconds:.1f} s: {simulated} simulated "
          f"({args.requests} requests per replica), {len(frame) - simulated} pruned analytically")
    if best is None:
        reach = planner.best_achievable(frame)
        parts = [f"{k[:-2].upper()} {q} {f(v)} ({where})" for k, (v, where) in reach.items() if k != "rate"]
        if "rate" in reach:
            parts.append(f"rate at most {reach['rate'][0]:.3g} req/s at saturation ({reach['rate'][1]})")
        print("no configuration meets the SLO; best achievable: " + "; ".join(parts))
        pruned = frame["status"][frame["status"].str.startswith("pruned")].value_counts()
        for reason, count in pruned.items():
            print(f"  {count} {reason}")
    else:
        ok = frame[frame["status"] == "meets"].sort_values(["usd_per_hour", "throughput_tok_s"], ascending=[True, False])
        print(f"\ncheapest meeting the SLO (of {len(ok)}):")
        print(_table(ok.head(args.top), q))
        print("\nreproduce: " + serve_line(best, args))
    print("\nPareto front at saturation (most tokens/s per GPU vs tokens/s each user sees then; TTFT/TPOT at the rate):")
    print(_table(front, q))
    return 0


def _check_choices(args, budgets) -> None:
    """Every named hardware, engine and batching pair must exist or be valid before the search
    starts (inside the search a refused configuration is only pruned)."""
    import hardware
    from perfmodel import engines
    from serving.simulator import ServeConfig, ServeError

    for name in _names(args.hardware, "--hardware"):
        try:
            hardware.load(name)
        except ValueError as err:
            raise ValueError(f"--hardware: {str(err).splitlines()[0]}") from None
    for name in _names(args.engines, "--engines"):
        if name not in engines.names():
            raise ValueError(f"--engines: {name!r} is not a known engine profile; known: {', '.join(engines.names())}")
    for tokens, seqs in budgets:
        try:
            ServeConfig(max_num_batched_tokens=tokens, max_num_seqs=seqs)
        except ServeError as err:
            raise ValueError(f"--budgets: {err}") from None


def serve_line(row, args) -> str:
    mode = f"--disagg {int(row['prefill_instances'])}:{int(row['decode_instances'])}" if row["mode"] == "disaggregated" \
        else f"--replicas {int(row['gpus'] // row['tp'])}"
    slo = "".join(f" --slo-{k} {v}s" for k, v in (("ttft", args.slo_ttft), ("tpot", args.slo_tpot)) if v)
    return (f"perfmodel serve --model {args.model} --hardware {row['hardware']} --engine {row['engine']} --tp {int(row['tp'])} "
            f"{mode} --w-bits {int(row['bits'])} --a-bits {int(row['bits'])} --kv-bits {int(row['bits'])} "
            f"--max-num-batched-tokens {int(row['max_num_batched_tokens'])} --max-num-seqs {int(row['max_num_seqs'])} "
            f"--rate {args.rate:g} --requests 2000 --prompt {args.prompt} --gen {args.gen}{slo}")


def _table(frame, q: str) -> str:
    from hardware.units import format_seconds as f

    if frame.empty:
        return "  (none)"
    view = frame.reindex(columns=["hardware", "gpus", "tp", "engine", "bits", "max_num_batched_tokens", "max_num_seqs", "mode",
                  "prefill_instances", "decode_instances", "usd_per_hour", "ttft_s", "tpot_s", "tok_s_per_gpu",
                  "tok_s_per_user"]).copy()
    import math

    def shown(fmt):  # a configuration pruned before its simulation has no latency: "-", not nan
        return lambda v: fmt(v) if isinstance(v, (int, float)) and math.isfinite(v) else "-"

    view["ttft_s"] = view["ttft_s"].map(shown(f))
    view["tpot_s"] = view["tpot_s"].map(shown(f))
    view["usd_per_hour"] = view["usd_per_hour"].map(shown(lambda v: f"{v:.2f}"))
    view["tok_s_per_gpu"] = view["tok_s_per_gpu"].map(shown(lambda v: f"{v:,.0f}"))
    view["tok_s_per_user"] = view["tok_s_per_user"].map(shown(lambda v: f"{v:,.0f}"))
    view.columns = ["hardware", "gpus", "tp", "engine", "bits", "budget", "seqs", "mode", "xP", "yD", "$/h",
                    f"TTFT {q}", f"TPOT {q}", "tok/s/GPU", "tok/s/user"]
    return view.to_string(index=False)


def _check_floor(frame, target) -> None:
    """An SLO below what any configuration achieves alone (no load) is an input error naming the field."""
    from hardware.units import format_seconds as f

    for key, col, field in (("ttft_s", "prefill_alone_s", "--slo-ttft"), ("tpot_s", "decode_alone_s", "--slo-tpot")):
        goal = getattr(target.slo, key)
        if goal is not None and col in frame and frame[col].notna().any() and frame[col].min() > goal:
            raise ValueError(f"{field}: {f(goal)} is shorter than the fastest single request's "
                             f"{'prefill' if key == 'ttft_s' else 'decode step'} of any configuration searched "
                             f"({f(float(frame[col].min()))})")


def _clean(row: dict) -> dict:
    import math

    import numpy as np

    out = {}
    for k, v in row.items():
        if isinstance(v, (np.floating, float)):
            v = float(v) if math.isfinite(v) else None
        elif isinstance(v, np.integer):
            v = int(v)
        out[k] = v
    return out
