"""CLI: `perfmodel solve offload | flash | attention-offload | moe-hybrid` (registered by app.cli).

Human units ("16 GB", "50 GB/s") are parsed here, at the edge; the solvers take SI floats. scipy is
imported only when a command runs. `offload` and `attention-offload` price GPU steps with an engine
profile (--engine); `flash` and `moe-hybrid` are their papers' closed-form bounds (rates over bytes
and FLOPs, no per-kernel terms), which no engine profile changes, so they take no --engine.
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
from perfmodel.commands import add_engine_arg, engine_from_args, scenario_flag
from solvers.cli_common import solve_subparsers

FRACTION = flag(0, 1, low_open=True)
COUNT = flag(1, 1024, whole=True)


def register(subparsers) -> None:
    solve = solve_subparsers(subparsers)
    off = solve.add_parser("offload", help="FlexGen-style placement of weights / KV / activations on GPU, DRAM, disk")
    off.add_argument("--model", default="opt-30b", help="catalog name or path to an HF config.json")
    off.add_argument("--hardware", default="t4",
                     help="preset name, spec YAML, or 'flexgen-t4' (FlexGen's fitted T4 system)")
    _scenario_args(off, prompt=512, gen=32)
    off.add_argument("--gbs", default=None, help="GPU batch size(s), comma-separated (default: searched)")
    off.add_argument("--n-batches", default=None, help="number(s) of GPU batches, comma-separated (default: searched)")
    off.add_argument("--percent", type=flag(0, 100), nargs=6, metavar=("WG", "WC", "CG", "CC", "HG", "HC"),
                     help="evaluate this placement (FlexGen's --percent) instead of solving; needs one --gbs "
                          "and one --n-batches")
    off.add_argument("--overlap", choices=("flexgen", "max", "sum"), default="flexgen",
                     help="how streams overlap: FlexGen's fitted form, perfect (lower bound), none (upper bound)")
    off.add_argument("--gpu-attention", action="store_true",
                     help="copy off-GPU KV to the GPU for attention instead of attending on the CPU")
    off.add_argument("--gpu-memory", help="override GPU memory, e.g. '16 GB'")
    off.add_argument("--cpu-memory", help="override host DRAM, e.g. '208 GB'")
    off.add_argument("--disk", help="override disk capacity, e.g. '1.5 TB'")
    off.add_argument("--memory-fraction", type=FRACTION, default=0.9, help="usable share of each tier's capacity")
    add_engine_arg(off)
    off.set_defaults(handler=run_offload)

    fl = solve.add_parser("flash", help="LLM in a flash: window and DRAM split for a model bigger than DRAM")
    fl.add_argument("--model", default="opt-6.7b")
    fl.add_argument("--hardware", default="m1-max")
    fl.add_argument("--dram-budget", required=True, help="DRAM for the model, e.g. '7 GB'")
    fl.add_argument("--w-bits", type=scenario_flag("w_bits"), default=16)
    fl.add_argument("--active", type=flag(0, 1, low_open=True), default=0.10,
                    help="FFN neurons active per token (after the predictor), in (0, 1)")
    fl.add_argument("--persistence", type=flag(0, 1), default=0.7, help="chance an active neuron stays active next token")
    fl.add_argument("--no-bundling", action="store_true", help="read up and down projections separately")
    fl.add_argument("--parallel-reads", type=flag(1, 4096), default=32)
    fl.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    fl.set_defaults(handler=run_flash)

    at = solve.add_parser("attention-offload", help="Lamina: attention on memory devices, the rest on compute devices")
    at.add_argument("--model", default="llama-3.1-70b")
    at.add_argument("--compute", default="h100-sxm", help="compute-device preset")
    at.add_argument("--memory", default="h20", help="memory-device preset")
    at.add_argument("--n-compute", type=COUNT, default=2)
    at.add_argument("--n-memory", type=COUNT, default=4)
    _scenario_args(at, prompt=4096, gen=512)
    at.add_argument("--batch", type=scenario_flag("batch"), default=None, help="decode batch (default: the largest that fits)")
    at.add_argument("--alpha", type=FRACTION, default=0.2, help="share of the step transfers may add, in (0, 1]")
    at.add_argument("--link", default=None, help="bandwidth between the pools, e.g. '50 GB/s'")
    add_engine_arg(at)
    at.set_defaults(handler=run_attention)

    mh = solve.add_parser("moe-hybrid", help="MoE-Lens: CPU-GPU hybrid serving throughput bound")
    mh.add_argument("--model", default="mixtral-8x7b")
    mh.add_argument("--hardware", default="h100-sxm")
    _scenario_args(mh, prompt=512, gen=256)
    mh.add_argument("--batch", default=None, help="comma-separated batches (default: powers of two up to capacity)")
    mh.add_argument("--dram", default=None, help="override host DRAM, e.g. '512 GB'")
    mh.add_argument("--gpu-weight-fraction", type=flag(0, 1), default=None)
    mh.set_defaults(handler=run_moe_hybrid)

    for p in (off, fl, at, mh):
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _scenario_args(p, prompt: int, gen: int) -> None:
    p.add_argument("--prompt", type=scenario_flag("prompt"), default=prompt)
    p.add_argument("--gen", type=scenario_flag("gen"), default=gen)
    p.add_argument("--w-bits", type=scenario_flag("w_bits"), default=16)
    p.add_argument("--kv-bits", type=scenario_flag("kv_bits"), default=16)


def _scenario(args) -> workloads.Scenario:
    return workloads.Scenario(prompt=args.prompt, gen=args.gen, w_bits=args.w_bits, kv_bits=args.kv_bits)


def _ints(text, name):
    if text is None:
        return None
    return inputs.number_list(str(text), name, 1, 10**6, whole=True, max_items=1000)


def _system(args):
    """(Hardware, MemoryTiers) with the command's capacity overrides."""
    from perfmodel.tiers import MemoryTiers
    from solvers import offload

    if args.hardware == "flexgen-t4":
        hw, tiers = offload.flexgen_t4()
    else:
        hw = hardware.load(args.hardware)
        tiers = MemoryTiers.from_hardware(hw)
    overrides = {}
    for option, field in (("gpu_memory", "hbm_capacity_bytes"), ("cpu_memory", "dram_capacity_bytes"),
                          ("disk", "flash_capacity_bytes")):
        if getattr(args, option) is not None:
            overrides[field] = parse(getattr(args, option), "bytes", "--" + option.replace("_", "-"))
    if overrides:
        import dataclasses
        tiers = dataclasses.replace(tiers, **overrides)
    return hw, tiers


def run_offload(args) -> int:
    from solvers import offload

    model = workloads.load(args.model)
    hw, tiers = _system(args)
    sc = _scenario(args)
    gbs, nbs = _ints(args.gbs, "--gbs"), _ints(args.n_batches, "--n-batches")
    options = dict(tiers=tiers, overlap=args.overlap, memory_fraction=args.memory_fraction,
                   engine=engine_from_args(args))
    if args.percent:
        if not (gbs and nbs and len(gbs) == 1 and len(nbs) == 1):
            raise ValueError("--percent: give exactly one --gbs and one --n-batches to evaluate a placement")
        policy = offload.OffloadPolicy.from_percent(gbs[0], nbs[0], *args.percent,
                                                    cpu_attention=not args.gpu_attention)
        result = offload.evaluate_policy(model, hw, sc, policy, **options)
    else:
        result = offload.offload_policy(model, hw, sc, gbs=gbs, n_batches=nbs,
                                        cpu_attention=not args.gpu_attention, **options)
    if args.json:
        row = result.to_frame().iloc[0].to_dict()
        row["streams_s"] = {phase: dict(result.streams[phase]) for phase in result.streams}
        row["engine"] = options["engine"].name
        print(json.dumps(_clean(row), indent=2))
        return 0
    print(format_offload(result, hw, options["engine"]))
    return 0


def format_offload(result, hw, engine=None) -> str:
    pol = result.policy
    pct = lambda t: "  ".join(f"{name} {100 * v:5.1f}%" for name, v in zip(("GPU", "CPU", "disk"), t))
    lines = [f"{result.model} on {hw.title}  [{result.status}, overlap {result.overlap}"
             + (f", {result.lps_solved} LPs" if result.lps_solved else "")
             + (f", engine {engine.name}" if engine is not None else "") + "]",
             f"GPU batch {pol.gbs} x {pol.n_batches} batches = block {pol.block_size}; attention over "
             f"off-GPU KV on the {'CPU' if pol.cpu_attention else 'GPU'}",
             "",
             f"weights      {pct(pol.weights)}",
             f"KV cache     {pct(pol.kv)}",
             f"activations  {pct(pol.activations)}"]
    if result.n_experts:
        lines.append(f"experts      {pct(pol.experts)}  ({int(math.floor(pol.experts[0] * result.n_experts + 1e-9))} "
                     f"of {result.n_experts} per layer on the GPU)")
    lines += ["",
              f"throughput   {result.throughput_tok_s:,.3f} tok/s generated",
              f"time         prefill {format_seconds(result.prefill_s)}, decode {format_seconds(result.decode_s)}, "
              f"total {format_seconds(result.total_s)}",
              "",
              "peak memory per tier"]
    for tier, label in (("gpu", "GPU"), ("cpu", "DRAM"), ("disk", "disk")):
        lines.append(f"  {label:<5} {format_si(result.peak_bytes[tier], 'B'):>10} of "
                     f"{format_si(result.capacity_bytes[tier], 'B')} usable")
    if not result.fits:
        short = {t: v for t, v in result.shortfall().items() if v > 0}
        lines.append("  does NOT fit: " + ", ".join(f"{t} short by {format_si(v, 'B')}" for t, v in short.items()))
    lines += ["", "per layer (largest layer group), seconds:", result.streams_frame().to_string(float_format="%.4g")]
    return "\n".join(lines)


def run_flash(args) -> int:
    from solvers import flash

    model, hw = workloads.load(args.model), hardware.load(args.hardware)
    plan = flash.plan_flash(model, hw, parse(args.dram_budget, "bytes", "--dram-budget"),
                            flash.NeuronActivity(args.active, args.persistence), w_bits=args.w_bits,
                            bundling=not args.no_bundling, parallel_reads=args.parallel_reads, device=args.device)
    if args.json:
        print(json.dumps(_clean(plan.to_frame().iloc[0].to_dict()), indent=2))
        return 0
    print("\n".join([
        f"{model.name} from flash on {hw.title} ({args.device}), DRAM budget {format_si(plan.dram_budget_bytes, 'B')}",
        f"window {plan.window} tokens, {100 * plan.static_fraction:.1f}% of FFN neurons pinned, "
        f"{plan.new_neurons_per_token:,.0f} neurons loaded per token",
        f"per token: flash I/O {format_seconds(plan.io_s)}, memory management {format_seconds(plan.memory_s)}, "
        f"compute {format_seconds(plan.compute_s)} = {format_seconds(plan.latency_s)}",
        f"DRAM used {format_si(plan.dram_bytes, 'B')}; naive loading {format_seconds(plan.naive_latency_s)} "
        f"per token ({plan.speedup:.1f}x slower)"]))
    return 0


def run_attention(args) -> int:
    from solvers.attention_offload import attention_offload

    engine = engine_from_args(args)
    model = workloads.load(args.model)
    link = parse(args.link, "bytes_per_s", "--link") if args.link is not None else None
    res = attention_offload(model, hardware.load(args.compute), hardware.load(args.memory), _scenario(args),
                            args.n_compute, args.n_memory, args.batch, args.alpha, link, engine=engine)
    frame = res.to_frame()
    if args.json:
        print(json.dumps([_clean(r) for r in frame.to_dict(orient="records")], indent=2))
        return 0
    row = res.lamina
    print(f"{model.name}, context {args.prompt}+{args.gen}: minimum link {format_si(row['min_link_bytes_per_s'], 'B/s')} "
          f"for transfers within {100 * args.alpha:.0f}% of the step "
          f"(link {format_si(row['link_bytes_per_s'], 'B/s')}; engine {engine.name})\n")
    view = frame[["setup", "devices", "usd_per_hour", "batch", "step_s", "tok_s", "tok_s_pipelined", "tokens_per_usd"]]
    print(view.to_string(index=False, float_format="%.4g"))
    return 0


def run_moe_hybrid(args) -> int:
    from perfmodel.tiers import MemoryTiers
    from solvers.moe_hybrid import moe_hybrid_bound

    model, hw = workloads.load(args.model), hardware.load(args.hardware)
    tiers = MemoryTiers.from_hardware(hw)
    if args.dram is not None:
        import dataclasses
        tiers = dataclasses.replace(tiers, dram_capacity_bytes=parse(args.dram, "bytes", "--dram"))
    res = moe_hybrid_bound(model, hw, _scenario(args), _ints(args.batch, "--batch"), tiers, args.gpu_weight_fraction)
    frame = res.to_frame()
    if args.json:
        print(json.dumps({"max_batch": res.max_batch, "rows": [_clean(r) for r in frame.to_dict(orient="records")]},
                         indent=2))
        return 0
    print(f"{model.name} on {hw.title}: CPU attention over DRAM KV, GPU linear layers; DRAM holds "
          f"{res.max_batch} sequences of {args.prompt}+{args.gen} tokens\n")
    print(frame[["batch", "gpu_tok_s", "pcie_tok_s", "dram_tok_s", "cpu_tok_s", "throughput_tok_s", "bound"]]
          .to_string(index=False, float_format="%.4g"))
    return 0


def _clean(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        if isinstance(v, dict):
            out[k] = _clean(v)
        elif isinstance(v, (np.bool_, bool)):
            out[k] = bool(v)
        elif isinstance(v, (np.integer,)):
            out[k] = int(v)
        elif isinstance(v, (float, np.floating)):
            out[k] = float(v) if math.isfinite(v) else None
        else:
            out[k] = v
    return out
