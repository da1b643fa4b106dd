"""CLI commands `perfmodel serve` (simulate one deployment under load) and `perfmodel plan` (search
for the cheapest deployment meeting an SLO); registered by app.cli. Heavy work happens in handlers."""
from __future__ import annotations

import json

from hardware.inputs import flag

def seconds_flag(text: str) -> float:
    """A time with its unit ("500ms", "0.5 s"); the CLI's one-line error otherwise."""
    import argparse

    from hardware import units

    try:
        return units.parse(text, "seconds", "value")
    except units.UnitError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("value: ")) from None


def sizes_flag(text: str) -> tuple[int, ...]:
    """'1,2,4,8' -> (1, 2, 4, 8): increasing whole numbers from 1 to 1000000; the CLI's one-line error otherwise."""
    import argparse

    try:
        sizes = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be increasing whole numbers a,b,c (1 to 1000000)") from None
    if not sizes or list(sizes) != sorted(set(sizes)) or sizes[0] < 1 or sizes[-1] > 10**6:
        raise argparse.ArgumentTypeError(f"{text!r} must be increasing whole numbers a,b,c (1 to 1000000)")
    return sizes


def add_serving_args(p) -> None:
    """Engine settings shared by `serve` and `plan`."""
    p.add_argument("--max-num-batched-tokens", type=flag(1, 10**6, whole=True), default=8192,
                   help="token budget per iteration (vLLM's max_num_batched_tokens, default 8192)")
    p.add_argument("--max-num-seqs", type=flag(1, 65536, whole=True), default=256,
                   help="most running requests (vLLM's max_num_seqs, default 256)")
    p.add_argument("--requests", type=flag(1, 10**7, whole=True), default=1000, help="requests to simulate")
    p.add_argument("--prompt", default="512", help="prompt tokens: N, lognormal:MEDIAN:SIGMA or uniform:LOW:HIGH")
    p.add_argument("--gen", default="128", help="output tokens: N, lognormal:MEDIAN:SIGMA or uniform:LOW:HIGH")
    p.add_argument("--seed", type=flag(0, 2**32 - 1, whole=True), default=0)
    p.add_argument("--burst-cv", type=flag(0, 100, low_open=True), default=1.0,
                   help="coefficient of variation of inter-arrival times (1 = Poisson, >1 bursty gamma)")
    p.add_argument("--prefix-fraction", type=flag(0, 0.999), default=0.0,
                   help="fraction of each prompt that is a prefix shared by all requests (prefix cache)")
    p.add_argument("--slo-ttft", type=seconds_flag, default=None, help="TTFT objective, e.g. 500ms")
    p.add_argument("--slo-tpot", type=seconds_flag, default=None, help="TPOT objective, e.g. 40ms")


def register(subparsers) -> None:
    from perfmodel.commands import add_engine_arg, add_model_hardware_args

    p = subparsers.add_parser("serve", help="simulate a continuous-batching deployment under load (TTFT/TPOT percentiles)")
    add_model_hardware_args(p)
    add_engine_arg(p)
    p.add_argument("--tp", type=flag(1, 4096, whole=True), default=1, help="tensor-parallel degree per instance")
    p.add_argument("--rate", type=flag(0, 1e7, low_open=True), default=None,
                   help="requests per second (Poisson unless --burst-cv); required unless --trace or --clients")
    p.add_argument("--clients", type=flag(1, 10**7, whole=True), default=None,
                   help="closed loop: this many clients, each sending its next request when answered")
    p.add_argument("--trace", default=None, help="CSV or JSONL trace: arrival_s, prompt_tokens, output_tokens per request")
    add_serving_args(p)
    for name in ("w", "a", "kv"):
        p.add_argument(f"--{name}-bits", type=flag(1, 32, whole=True), default=16, help=f"{name} bits")
    p.add_argument("--kv-blocks", type=flag(1, 10**9, whole=True), default=None,
                   help="KV blocks per instance (default: from the memory model)")
    p.add_argument("--preemption", choices=("recompute", "swap"), default="recompute")
    p.add_argument("--no-chunked-prefill", action="store_true", help="whole prompts only")
    p.add_argument("--no-prefix-caching", action="store_true")
    p.add_argument("--static", action="store_true", help="static batching: a new batch starts when the engine is empty")
    p.add_argument("--decode-batch-sizes", type=sizes_flag, default=None, metavar="A,B,...",
                   help="pad each decode forward to the next of these batch sizes (CUDA-graph capture sizes)")
    p.add_argument("--prefill-token-sizes", type=sizes_flag, default=None, metavar="A,B,...",
                   help="pad each forward with prefill tokens to the next of these token counts")
    p.add_argument("--sequential-prefill", action="store_true",
                   help="each prefill chunk is its own forward, then one decode forward (not one fused batch)")
    p.add_argument("--static-cache-tokens", type=flag(1, 10**8, whole=True), default=None,
                   help="attention spans this many cached positions per sequence (a static KV cache under a mask)")
    p.add_argument("--spec-k", type=flag(1, 16, whole=True), default=None, help="speculative decoding: drafted tokens per step")
    p.add_argument("--spec-alpha", type=flag(0, 0.999), default=0.7, help="speculative acceptance rate per token")
    p.add_argument("--draft", default="mtp", help="speculative proposer: 'mtp' or a catalog draft model")
    p.add_argument("--replicas", type=flag(1, 4096, whole=True), default=1, help="aggregated instances, round-robin")
    p.add_argument("--disagg", default=None, metavar="XP:YD",
                   help="disaggregated: X prefill and Y decode instances, e.g. 1:3")
    p.add_argument("--output", default=None, help="per-request results (.csv or .json)")
    p.add_argument("--compare", default=None, metavar="MEASURED",
                   help="a measured run (CSV/JSONL: arrival_s, prompt_tokens, output_tokens, first_token_s, "
                        "finish_s): simulate the same requests and print predicted / measured per metric")
    p.add_argument("--plot", default=None, help="PNG/SVG of latency percentiles vs load (rates 1/8x..2x --rate)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=run_serve)


def parse_disagg(text: str) -> tuple[int, int]:
    from hardware.inputs import parse_number

    parts = str(text).replace("P", "").replace("D", "").split(":")
    if len(parts) != 2:
        raise ValueError(f"--disagg: {text!r} must be X:Y (prefill instances : decode instances), e.g. 1:3")
    return (int(parse_number(parts[0], "--disagg prefill instances", 1, 4096, whole=True)),
            int(parse_number(parts[1], "--disagg decode instances", 1, 4096, whole=True)))


def config_from_args(args):
    import workloads
    from serving.simulator import ServeConfig, SpecDecode

    spec = None
    if args.spec_k:
        proposer = "mtp" if args.draft == "mtp" else workloads.load(args.draft)
        spec = SpecDecode(int(args.spec_k), float(args.spec_alpha), proposer)
    return ServeConfig(max_num_batched_tokens=args.max_num_batched_tokens, max_num_seqs=args.max_num_seqs,
                       chunked_prefill=not args.no_chunked_prefill, prefix_caching=not args.no_prefix_caching,
                       preemption=args.preemption, static=args.static, spec=spec, kv_blocks=args.kv_blocks,
                       decode_batch_sizes=args.decode_batch_sizes, prefill_token_sizes=args.prefill_token_sizes,
                       fused_prefill_decode=not args.sequential_prefill, static_cache_tokens=args.static_cache_tokens)


def requests_from_args(args, rate=None):
    from serving import workload

    if args.trace:
        return workload.load_trace(args.trace)
    prompt = workload.parse_lengths(args.prompt, "--prompt")
    gen = workload.parse_lengths(args.gen, "--gen")
    if args.clients:
        return workload.closed_loop(args.requests, args.clients, prompt, gen, seed=args.seed,
                                    prefix_fraction=args.prefix_fraction)
    rate = rate if rate is not None else args.rate
    if rate is None:
        raise ValueError("--rate: give a request rate (requests/s), a --trace or --clients")
    return workload.generate(args.requests, rate, prompt, gen, seed=args.seed, burst_cv=args.burst_cv,
                             prefix_fraction=args.prefix_fraction)


def simulate_from_args(args, inst, requests):
    from serving.disagg import simulate_disaggregated, simulate_replicas
    from serving.simulator import simulate

    if args.disagg:
        x, y = parse_disagg(args.disagg)
        return simulate_disaggregated(inst, inst, requests, x, y, seed=args.seed)
    if args.replicas > 1:
        return simulate_replicas(inst, requests, args.replicas, seed=args.seed)
    return simulate(inst, requests, seed=args.seed)


def run_serve(args) -> int:
    import hardware
    import workloads
    from perfmodel.commands import engine_from_args
    from perfmodel.ops import Precision
    from serving.metrics import SLO, summarize
    from serving.simulator import make_instance

    engine = engine_from_args(args)
    model, hw = workloads.load(args.model), hardware.load(args.hardware)
    if args.output is not None:
        from hardware.inputs import check_output_path

        check_output_path(args.output, "--output", (".csv", ".json"))
    if args.plot is not None:
        from hardware.inputs import check_output_path

        check_output_path(args.plot, "--plot", (".png", ".svg", ".pdf"))
    slo = SLO(args.slo_ttft, args.slo_tpot)
    inst = make_instance(model, hw, p=Precision(args.w_bits, args.a_bits, args.kv_bits), tp=args.tp, engine=engine,
                         cfg=config_from_args(args))
    measured = None
    if args.compare is not None:
        from serving.compare import load_measured

        requests, measured = load_measured(args.compare)
    else:
        requests = requests_from_args(args)
    requests.check_context(model.max_context, model.name)
    _check_slo_floor(inst, requests, slo)
    result = simulate_from_args(args, inst, requests)
    summary = summarize(result, slo)
    devices = args.tp * (sum(parse_disagg(args.disagg)) if args.disagg else args.replicas)
    summary.update(model=model.name, hardware=hw.name, engine=engine.name, tp=args.tp, devices=devices,
                   usd_per_hour=hw.price_per_hour_usd * devices,
                   usd_per_mtok=hw.price_per_hour_usd * devices / 3600 / summary["throughput_tok_s"] * 1e6)
    if args.output is not None:
        _write_requests(result, args.output)
    if args.plot is not None:
        write_load_plot(args, inst, args.plot)
    if measured is not None:
        from serving.compare import compare

        table = compare(measured, result)
        summary["compare"] = table.to_dict("records")
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary, args))
        if measured is not None:
            print("\nsimulated vs measured (same requests):")
            print(format_compare(table))
    return 0


def format_compare(table) -> str:
    from hardware.units import format_seconds as f

    lines = [f"{'metric':<18}{'measured':>12}{'predicted':>12}{'ratio':>8}  within 15%"]
    for r in table.to_dict("records"):
        show = (lambda v: f"{v:,.1f}") if r["metric"] == "throughput_tok_s" else f
        lines.append(f"{r['metric']:<18}{show(r['measured']):>12}{show(r['predicted']):>12}{r['ratio']:>8.3f}  "
                     f"{'yes' if r['within'] else 'NO'}")
    return "\n".join(lines)


def _check_slo_floor(inst, requests, slo) -> None:
    """An SLO tighter than the fastest possible request is an input error naming the field: TTFT
    cannot beat one prefill of the shortest prompt alone, TPOT one decode step at batch 1."""
    costs = inst.costs
    shortest = int(min(requests.prompt_tokens.min(), inst.cfg.max_num_batched_tokens))
    prefill = costs.mixed_step_s(0, 0.0, [(shortest, 0.0)], 1)
    decode = costs.decode_step_s(1, float(shortest))
    from hardware.units import format_seconds

    if slo.ttft_s is not None and slo.ttft_s < prefill:
        raise ValueError(f"--slo-ttft: {format_seconds(slo.ttft_s)} is shorter than one prefill of the shortest "
                         f"prompt ({shortest} tokens: {format_seconds(prefill)}) on this configuration")
    if slo.tpot_s is not None and slo.tpot_s < decode:
        raise ValueError(f"--slo-tpot: {format_seconds(slo.tpot_s)} is shorter than one decode step at batch 1 "
                         f"({format_seconds(decode)}) on this configuration")


def _write_requests(result, path) -> None:
    from hardware.inputs import write_text

    frame = result.per_request_frame()
    if str(path).lower().endswith(".json"):
        write_text(path, frame.to_json(orient="records", indent=1), "--output")
    else:
        write_text(path, frame.to_csv(index=False), "--output")


def format_summary(s: dict, args) -> str:
    from hardware.units import format_seconds as f

    mode = f"disaggregated {args.disagg}" if args.disagg else f"{args.replicas} replica(s)"
    lines = [f"{s['model']} on {s['hardware']} x{s['devices']} (tp {s['tp']}, {mode}), engine {s['engine']}",
             f"{s['requests']} requests over {s['duration_s']:.1f} s ({s['request_rate_req_s']:.2f} req/s achieved)",
             "",
             f"{'':<6}{'p50':>11}{'p90':>11}{'p99':>11}"]
    for key, name in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("itl_s", "ITL"), ("e2e_s", "e2e"), ("wait_s", "wait")):
        lines.append(f"{name:<6}" + "".join(f"{f(s[key][q]):>11}" for q in ("p50", "p90", "p99")))
    lines += ["",
              f"throughput   {s['throughput_tok_s']:,.1f} output tok/s  (${s['usd_per_mtok']:.3f} per million at "
              f"${s['usd_per_hour']:.2f}/h)",
              f"KV cache     {s['kv_capacity_blocks']} blocks; utilization mean {100 * s['kv_utilization']['mean']:.0f}%, "
              f"max {100 * s['kv_utilization']['max']:.0f}%",
              f"queue        mean {s['queue_length']['mean']:.2f}, max {s['queue_length']['max']}; "
              f"preempted {s['preempted']} times ({s['preempted_requests']} requests)"]
    if "goodput_req_s" in s:
        lines.append(f"goodput      {s['goodput_req_s']:.2f} req/s meet the SLO ({100 * s['slo_attainment']:.1f}% of requests)")
    return "\n".join(lines)


def load_curve(args, inst):
    """Summaries at rates factor x --rate (same seed and lengths): serving.curves."""
    from serving import workload
    from serving.curves import load_curve as curve
    from serving.curves import rates_around
    from serving.metrics import SLO

    if args.rate is None or args.trace or args.clients:
        raise ValueError("--plot: a load sweep needs --rate (not a trace or closed loop)")
    return curve(inst, rates_around(args.rate), args.requests, workload.parse_lengths(args.prompt, "--prompt"),
                 workload.parse_lengths(args.gen, "--gen"), seed=args.seed, slo=SLO(args.slo_ttft, args.slo_tpot),
                 burst_cv=args.burst_cv, prefix_fraction=args.prefix_fraction, simulate_fn=lambda i, r: simulate_from_args(args, i, r))


def write_load_plot(args, inst, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hardware.inputs import save_figure

    curve = load_curve(args, inst)
    rates = curve["rate_req_s"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, name, slo in ((axes[0], "ttft_s", "TTFT", args.slo_ttft), (axes[1], "tpot_s", "TPOT", args.slo_tpot)):
        for q, style in (("p50", "-o"), ("p90", "--o"), ("p99", ":o")):
            ax.plot(rates, curve[f"{key[:-2]}_{q}_s"] * 1e3, style, label=q)
        if slo:
            ax.axhline(slo * 1e3, color="red", lw=1, label="SLO")
        ax.set_xlabel("offered load (requests/s)")
        ax.set_ylabel(f"{name} (ms)")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(f"{inst.model.name} on {inst.hw.name} x{inst.tp}, engine {inst.engine.name}")
    fig.tight_layout()
    save_figure(fig, path, "--plot")
    plt.close(fig)
