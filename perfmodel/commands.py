"""CLI commands of the core: `predict`, `hardware list`, `models list` (registered by app.cli)."""
from __future__ import annotations

import json
import math

import numpy as np

import hardware
import workloads
from hardware.inputs import flag
from hardware.units import format_seconds, format_si
from perfmodel import engines
from workloads.scenario import RANGES


def scenario_flag(field: str, whole: bool = True):
    """An argparse type for a Scenario field, in the Scenario's own range (one source: RANGES).
    Bit widths on the command line are whole numbers (an average width is a Python API value)."""
    return flag(*RANGES[field], whole=whole)


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="latency / throughput / memory of a model on a device")
    add_model_hardware_args(p)
    add_scenario_args(p)
    add_engine_arg(p, default=None, default_help=f"default {engines.DEFAULT_ENGINE}, a serving engine; "
                                                 "torch-compile for diffusion models")
    add_dit_args(p)
    p.add_argument("--breakdown", action="store_true", help="also print the per-op table of both phases")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--allow-oversize", action="store_true",
                   help="print the times even when the model does not fit in device memory (exit 0)")
    p.add_argument("--power-cap", type=flag(1.0, 1e5, low_open=True), default=None, metavar="W",
                   help="board power limit in W below the spec's own (nvidia-smi -pl): energy and the capped "
                        "times follow perfmodel.energy; default the spec's power (its TDP)")
    p.set_defaults(handler=run_predict)

    hw = subparsers.add_parser("hardware", help="hardware presets")
    hw_sub = hw.add_subparsers(dest="action", required=True)
    hw_sub.add_parser("list", help="list hardware presets").set_defaults(handler=run_hardware_list)
    show = hw_sub.add_parser("show", help="show one spec with sources")
    show.add_argument("name")
    show.set_defaults(handler=run_hardware_show)

    models = subparsers.add_parser("models", help="model catalog")
    models_sub = models.add_subparsers(dest="action", required=True)
    models_sub.add_parser("list", help="list catalog models").set_defaults(handler=run_models_list)


def add_model_hardware_args(p, model_default: str = "llama-3-8b", hardware_default: str = "h200-sxm-calibrated") -> None:
    p.add_argument("--model", default=model_default, help="catalog name or path to an HF config.json")
    p.add_argument("--hardware", default=hardware_default, help="preset name or path to a spec YAML")


def add_scenario_args(p) -> None:
    p.add_argument("--batch", type=scenario_flag("batch"), default=1)
    p.add_argument("--prompt", type=scenario_flag("prompt"), default=2048, help="prompt tokens per request")
    p.add_argument("--gen", type=scenario_flag("gen"), default=256, help="generated tokens per sample")
    p.add_argument("--w-bits", type=scenario_flag("w_bits"), default=16, help="weight bits, a whole number 1..32")
    p.add_argument("--a-bits", type=scenario_flag("a_bits"), default=16, help="activation bits, 1..32")
    p.add_argument("--kv-bits", type=scenario_flag("kv_bits"), default=16, help="KV-cache bits, 1..32")
    p.add_argument("--tp", type=scenario_flag("tp"), default=1,
                   help="tensor-parallel degree: divides the heads, at most the node's devices")
    p.add_argument("--samples", type=scenario_flag("samples"), default=1, help="best-of-N samples per request")
    p.add_argument("--sparse-budget", type=scenario_flag("sparse_budget"), default=0,
                   help="KV tokens read per step by sparse attention")


def add_dit_args(p) -> None:
    """Flags of a diffusion-model request (used when --model names a DiT: workloads.dit)."""
    g = p.add_argument_group("diffusion models (--model flux.1-dev, wan2.1-t2v-14b, ... or a diffusers config.json)")
    g.add_argument("--resolution", default=None, help="HEIGHTxWIDTH in pixels, e.g. 1024x1024 (default: the model card's)")
    g.add_argument("--frames", type=flag(1, 10000, whole=True), default=None, help="video frames (default: the model card's)")
    g.add_argument("--fps", type=flag(0, 1000, low_open=True), default=None, help="video frames per second")
    g.add_argument("--steps", type=flag(1, 10000, whole=True), default=None, help="denoising steps")
    g.add_argument("--cfg", choices=("on", "off"), default=None,
                   help="classifier-free guidance: on doubles the batch per step (default: the model's)")
    g.add_argument("--devices", type=flag(1, 1024, whole=True), default=1,
                   help="GPUs sharing each request by sequence parallelism (Ulysses)")
    g.add_argument("--density", type=flag(0, 1, low_open=True), default=1.0,
                   help="block-sparse attention density (PAROAttention); 1 = dense")
    g.add_argument("--cached-fraction", type=flag(0, 0.99), default=0.0,
                   help="fraction of each step's block outputs reused from the previous step (step caching)")


def parse_resolution(text: str | None) -> tuple[int, int] | None:
    """'1024x1024' -> (1024, 1024); a one-line error naming --resolution otherwise."""
    if text is None:
        return None
    parts = str(text).lower().replace("*", "x").split("x")
    try:
        height, width = (int(v) for v in parts)
    except ValueError:
        raise ValueError(f"--resolution: {text!r} must be HEIGHTxWIDTH in pixels, e.g. 1024x1024") from None
    for name, value in (("height", height), ("width", width)):
        if not 16 <= value <= 16384:
            raise ValueError(f"--resolution: {name} {value} must be from 16 to 16384 pixels")
    return height, width


def add_engine_arg(p, default: str | None = engines.DEFAULT_ENGINE, default_help: str | None = None) -> None:
    """`--engine NAME`: the serving stack whose execution prices each step (perfmodel.engines).

    Every command that prices time takes this same flag. The names are checked by `engine_from_args`
    in the handler rather than by argparse `choices`, so an unknown one gets the CLI's one-line error
    (exit code 2) instead of argparse's usage block; the metavar and help still list them."""
    known = engines.names()
    default_help = default_help or f"default {engines.DEFAULT_ENGINE}, a serving engine"
    p.add_argument("--engine", default=default, metavar="{" + ",".join(known) + "}",
                   help=f"engine profile that executes each step, one of {', '.join(known)} ({default_help}; "
                        "hf-eager is transformers eager, torch-compile a compiled gpt-fast-style model)")


def engine_from_args(args, name: str | None = None) -> engines.Engine:
    """The profile named by --engine (or `name`); an unknown name raises EngineError naming --engine,
    the value and the known profiles."""
    value = getattr(args, "engine", None) if name is None else name
    value = engines.DEFAULT_ENGINE if value is None else value
    try:
        return engines.load(value)
    except engines.EngineError:
        raise engines.EngineError(f"--engine: {value!r} is not a known engine profile; known: "
                                  f"{', '.join(engines.names())}") from None


def scenario_from_args(args) -> workloads.Scenario:
    return workloads.Scenario(batch=args.batch, prompt=args.prompt, gen=args.gen, w_bits=args.w_bits,
                              a_bits=args.a_bits, kv_bits=args.kv_bits, tp=args.tp, samples=args.samples,
                              sparse_budget=args.sparse_budget)


def run_predict(args) -> int:
    import perfmodel
    from workloads import dit

    if dit.is_dit(args.model):
        return run_predict_dit(args)
    engine = engine_from_args(args)
    model, hw = workloads.load(args.model), hardware.load(args.hardware)
    pred = perfmodel.predict(model, hw, scenario_from_args(args), engine=engine)
    if not args.allow_oversize:
        try:
            pred.require_fit()
        except perfmodel.DoesNotFitError as err:
            raise perfmodel.DoesNotFitError(f"{err}; max batch that fits: {int(pred.row(0)['max_batch'])} "
                                            "(--allow-oversize prints the times anyway)") from None
    row = {**pred.row(0), **energy_row(pred, args.power_cap)}
    if args.json:
        print(json.dumps(_json_row(row, model, hw, engine), indent=2))
        return 0
    print(format_prediction(row, model, hw, engine))
    if args.breakdown:
        for phase in ("prefill", "decode"):
            print(f"\n{phase} step, per op:")
            print(format_breakdown(pred.breakdown(phase)))
    return 0


def run_predict_dit(args) -> int:
    """`predict` for a diffusion model: one generation request (workloads.dit, perfmodel.dit)."""
    import perfmodel
    from perfmodel import dit as dit_cost
    from workloads import dit

    pipe, hw = dit.load(args.model), hardware.load(args.hardware)
    size = parse_resolution(args.resolution)
    if not pipe.is_video and args.frames not in (None, 1):
        raise ValueError(f"--frames: {args.frames} must be 1 for the image model {pipe.name}")
    req = pipe.request(height=size[0] if size else None, width=size[1] if size else None, frames=args.frames,
                       steps=args.steps, fps=args.fps, cfg=None if args.cfg is None else args.cfg == "on",
                       batch=args.batch, cached_fraction=args.cached_fraction)
    sparse = dit_cost.DENSE if args.density >= 1 else dit_cost.SparseAttention(args.density)
    pred = dit_cost.predict_dit(pipe, hw, req, engine=args.engine, w_bits=args.w_bits, a_bits=args.a_bits,
                                devices=args.devices, sparse=sparse, power_cap_w=args.power_cap)
    out = pred.to_dict()
    if not out["fits"] and not args.allow_oversize:
        raise perfmodel.DoesNotFitError(
            f"{pipe.name} needs {format_si(out['memory_bytes']['total'], 'B')} per device, {hw.name} has "
            f"{format_si(out['memory_bytes']['capacity'], 'B')} (--allow-oversize prints the times anyway)")
    out["calibrated"] = hw.is_calibrated
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(format_dit_prediction(out, hw))
    if args.breakdown:
        print("\none denoising step, per op:")
        print(format_breakdown(pred.breakdown()))
    return 0


def format_dit_prediction(out: dict, hw) -> str:
    mode = "calibrated" if hw.is_calibrated else "datasheet roofline (uncalibrated)"
    video = out["frames"] > 1
    what = f"{out['frames']} frames " if video else ""
    latent = f" ({out['latent_frames']} latent frames)" if video else ""
    cost = (f"${out['usd_per_video_s']:.4f} per second of video" if video else f"${out['usd_per_image']:.5f} per image")
    mem = out["memory_bytes"]
    lines = [
        f"{out['model']} ({out['params'] / 1e9:.2f} B params) on {hw.title} x{out['devices']}  "
        f"[{mode}, engine {out['engine']}]",
        f"{what}{out['height']}x{out['width']}, {out['steps']} steps, cfg {'on' if out['cfg'] else 'off'}, "
        f"batch {out['batch']}: {out['image_tokens']:,} image tokens{latent} + {out['context_tokens']} text tokens",
        "",
        f"{'stage':<16}{'time':>12}",
        f"{'text encoders':<16}{format_seconds(out['text_encode_s']):>12}",
        f"{'denoising step':<16}{format_seconds(out['step_s']):>12}   x {out['steps_run']:g}",
        f"{'VAE decode':<16}{format_seconds(out['vae_decode_s']):>12}",
        f"{'request':<16}{format_seconds(out['e2e_s']):>12}   (end to end)",
        "",
        f"cost         {cost} (${out['usd_per_request']:.4f} per request)",
        f"energy       {format_si(out['energy_j'], 'J')} per request, {format_si(out['energy_per_sample_j'], 'J')} per "
        f"{'video' if video else 'image'}, avg {out['avg_power_w']:.0f} W per device ({power_source_text(out['power_model'])}"
        f"{'' if out['power_cap_w'] >= hw.power_w else ', cap %.0f W: e2e %s' % (out['power_cap_w'], format_seconds(out['e2e_capped_s']))})",
        "",
        "memory per device",
        f"  transformer  {format_si(mem['weights'], 'B')}",
        f"  encoders     {format_si(mem['text_encoders'], 'B')}",
        f"  VAE          {format_si(mem['vae'], 'B')}",
        f"  activations  {format_si(max(mem['activations'], mem['vae_activations']), 'B')}",
        f"  total        {format_si(mem['total'], 'B')} of {format_si(mem['capacity'], 'B')}"
        f"  -> fits: {'yes' if out['fits'] else 'NO'}",
    ]
    return "\n".join(lines)


def power_source_text(source: str) -> str:
    """How the energy line names where the power model's numbers came from (perfmodel.energy)."""
    return "power model calibrated on this device" if source == "calibration" else "power model from datasheet defaults"


def energy_row(pred, power_cap_w: float | None = None) -> dict:
    """Energy and power of scenario 0 (perfmodel.energy.prediction_energy) as plain floats, with the
    cap and which parameters produced them (the spec's power calibration or datasheet defaults)."""
    from perfmodel import energy

    values = energy.prediction_energy(pred, power_cap_w)
    pm = energy.power_model(pred.hardware, power_cap_w)
    return {**{k: float(np.asarray(v).reshape(-1)[0]) for k, v in values.items()},
            "power_cap_w": pm.cap_w, "power_model": pm.source}


def _json_row(row: dict, model, hw, engine: engines.Engine | str = engines.DEFAULT_ENGINE) -> dict:
    def clean(v):
        if isinstance(v, (np.bool_, bool)):
            return bool(v)
        if isinstance(v, (float, np.floating)):
            return float(v) if math.isfinite(v) else None
        if isinstance(v, (np.integer,)):
            return int(v)
        return v

    out = {k: clean(v) for k, v in row.items()}
    out["model"], out["hardware"], out["calibrated"] = model.name, hw.name, hw.is_calibrated
    out["engine"] = engines.load(engine).name
    out["memory_bytes"] = {"weights": out["weights_bytes"], "kv": out["kv_bytes"],
                           "activations": out["activation_bytes"], "total": out["total_bytes"],
                           "capacity": out["capacity_bytes"]}
    return out


def _band(row: dict, metric: str) -> str:
    """The p10-p90 prediction interval of a time (perfmodel.intervals), or why there is none."""
    lo, hi = row.get(f"{metric}_p10_s"), row.get(f"{metric}_p90_s")
    if lo is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return "n/a (no bands)"
    return f"{format_seconds(lo)} - {format_seconds(hi)}"


def format_prediction(row: dict, model, hw, engine: engines.Engine | str = engines.DEFAULT_ENGINE) -> str:
    fits = "yes" if row["fits"] else "NO"
    mode = "calibrated" if hw.is_calibrated else "datasheet roofline (uncalibrated)"
    lines = [
        f"{model.name} ({row['params'] / 1e9:.2f} B params) on {hw.title} x{int(row['tp'])}  "
        f"[{mode}, engine {engines.load(engine).name}]",
        f"batch {int(row['batch'])}, prompt {int(row['prompt'])}, gen {int(row['gen'])}, "
        f"samples {int(row['samples'])}, bits w{row['w_bits']:g}/a{row['a_bits']:g}/kv{row['kv_bits']:g}",
        "",
        f"{'phase':<10}{'time':>12}  {'p10-p90':<21}bound",
        f"{'prefill':<10}{format_seconds(row['ttft_s']):>12}  {_band(row, 'ttft'):<21}{row['prefill_bound']}   (TTFT)",
        f"{'decode':<10}{format_seconds(row['tpot_s']):>12}  {_band(row, 'tpot'):<21}{row['decode_bound']}"
        "   (TPOT, mean per token)",
        f"{'request':<10}{format_seconds(row['e2e_s']):>12}  {'':<21}     (end to end)",
        "",
        f"throughput   {row['throughput_tok_s']:,.1f} tok/s generated (decode alone {row['decode_tok_s']:,.1f} tok/s)",
        f"cost         ${row['usd_per_mtok']:.3f} per million generated tokens",
        f"energy       {format_si(row['joules_per_token'], 'J')} per generated token, {format_si(row['energy_j'], 'J')} "
        f"per batch; {row['prefill_power_w']:.0f} W prefill, {row['decode_power_w']:.0f} W decode per device "
        f"({power_source_text(row['power_model'])})",
        *([f"power cap    {row['power_cap_w']:.0f} W: TTFT {format_seconds(row['ttft_capped_s'])}, TPOT "
           f"{format_seconds(row['tpot_capped_s'])}, request {format_seconds(row['e2e_capped_s'])}"]
          if row["power_cap_w"] < hw.power_w else []),
        "",
        "memory per device",
        f"  weights      {format_si(row['weights_bytes'], 'B')}",
        f"  KV cache     {format_si(row['kv_bytes'], 'B')}",
        f"  activations  {format_si(row['activation_bytes'], 'B')}",
        f"  total        {format_si(row['total_bytes'], 'B')} of {format_si(row['capacity_bytes'], 'B')}"
        f"  -> fits: {fits} (max batch {int(row['max_batch'])})",
    ]
    return "\n".join(lines)


def format_breakdown(frame) -> str:
    view = frame[["op", "kind", "count", "flops", "bytes", "time_s", "bound", "share"]].copy()
    view["flops"] = view["flops"].map(lambda v: format_si(v, "FLOP"))
    view["bytes"] = view["bytes"].map(lambda v: format_si(v, "B"))
    view["time_s"] = view["time_s"].map(format_seconds)
    view["share"] = view["share"].map(lambda v: f"{100 * v:.1f}%")
    return view.rename(columns={"time_s": "time"}).to_string(index=False)


def run_hardware_list(args) -> int:
    frame = hardware.catalog()
    view = frame[["title", "kind", "bf16_flops_per_s", "hbm_capacity_bytes", "hbm_bytes_per_s",
                  "price_per_hour_usd"]].copy()
    view["bf16_flops_per_s"] = view["bf16_flops_per_s"].map(lambda v: format_si(v, "FLOP/s"))
    view["hbm_capacity_bytes"] = view["hbm_capacity_bytes"].map(lambda v: format_si(v, "B"))
    view["hbm_bytes_per_s"] = view["hbm_bytes_per_s"].map(lambda v: format_si(v, "B/s"))
    view.columns = ["title", "kind", "bf16 peak", "memory", "bandwidth", "USD/h"]
    print(view.to_string())
    return 0


def run_hardware_show(args) -> int:
    hw = hardware.load(args.name)
    for key, value in hw.summary().items():
        print(f"{key:<24} {value}")
    print("\nsources:")
    for field, source in hw.sources.items():
        print(f"  {field:<28} {source}")
    return 0


def run_models_list(args) -> int:
    frame = workloads.catalog()
    view = frame[["family", "params", "active_params", "layers", "d_model", "heads", "kv_heads", "experts",
                  "max_context"]].copy()
    view["params"] = view["params"].map(lambda v: f"{v / 1e9:.2f} B")
    view["active_params"] = view["active_params"].map(lambda v: f"{v / 1e9:.2f} B")
    print(view.to_string())
    return 0
