"""CLI: `perfmodel sweep`, `perfmodel recommend`, `perfmodel best-batch` (registered by app.cli).

    perfmodel sweep                                   # the built-in default sweep
    perfmodel sweep spec.yaml -o out.parquet --csv --plot front.png
    perfmodel sweep --grid model=llama-3-8b,qwen3-8b --grid hardware=h200-sxm,l40s \\
        --grid batch=1:256:9:log --grid w_bits=4,8,16 --max-tpot 0.05 --pareto throughput_tok_s:max,tpot_s:min
    perfmodel sweep spec.yaml --scheduler tcp://10.0.0.5:8786      # or --dask for a LocalCluster
    perfmodel sweep --grid model=llama-3-8b --grid hardware=h200-sxm --grid engine=vllm,trtllm,hf-eager
    perfmodel recommend --model llama-3.1-70b --rate 20000 --max-tpot 0.05 --max-ttft 2
    perfmodel best-batch --model llama-3-8b --hardware h200-sxm,l40s --max-tpot 0.03

`--grid FIELD=VALUES`: a comma list (``batch=1,8,64``, ``hbm_bytes_per_s=3.35 TB/s,4.8 TB/s``) or a
range ``start:stop[:num[:log]]`` (``batch=1:256:9:log``; without num only in a --random sweep).
`--engine NAME` prices every row with one engine profile; ``--grid engine=a,b`` compares engines.
pandas, pyarrow and dask are imported inside the handlers.
"""
from __future__ import annotations

import math
from pathlib import Path

from hardware.inputs import InputError, check_output_path, flag, number_list
from hardware.units import format_seconds
from perfmodel.commands import add_engine_arg, engine_from_args
from workloads.scenario import RANGES

#: The sweep `perfmodel sweep` runs without a spec: catalog models on common devices, 8,640 rows.
DEFAULT_SPEC = {
    "axes": {
        "model": ["llama-3-8b", "qwen3-8b", "llama-3.1-70b"],
        "hardware": ["h200-sxm", "h100-sxm", "a100-80gb-sxm", "l40s", "mi300x"],
        "batch": {"start": 1, "stop": 256, "num": 9, "log": True},
        "prompt": [512, 2048, 8192],
        "gen": [256],
        "w_bits": [4, 8, 16],
        "kv_bits": [8, 16],
        "tp": [1, 2, 4, 8],
    },
    "constraints": {"fits": True, "ttft_s": {"max": 2.0}, "tpot_s": {"max": 0.05}},
    "pareto": {"tok_per_usd": "max", "tpot_s": "min"},
}
FRONT_COLUMNS = ["model", "hardware", "engine", "tp", "batch", "prompt", "gen", "w_bits", "kv_bits", "ttft_s", "tpot_s",
                 "throughput_tok_s", "throughput_per_device_tok_s", "tok_per_usd", "usd_per_mtok"]
PLOT_ROWS_MAX = 2_000_000  # above this the plot shows the front alone (rows are not kept in memory)
MAX_BATCH = 100_000  # recommend / best-batch try every batch up to --max-batch
#: Latency limits: a positive number of seconds, at most a day.
SECONDS = flag(0, 86400, low_open=True)


def register(subparsers) -> None:
    p = subparsers.add_parser("sweep", help="grid / random design-space sweep, constraints, Pareto front")
    p.add_argument("spec", nargs="?", help="sweep spec YAML (axes, mode, n, seed, constraints, pareto); "
                   "without it and without --grid, a built-in default sweep runs")
    p.add_argument("--grid", action="append", default=[], metavar="FIELD=VALUES",
                   help="add or replace an axis: a comma list or start:stop[:num[:log]]")
    add_engine_arg(p, default=None, default_help="default: the spec's engine, else vllm, a serving engine; "
                   "--grid engine=a,b sweeps several")
    p.add_argument("--random", type=flag(1, 10**9, whole=True), metavar="N",
                   help="sample N distinct rows instead of the full grid (at most 1e9)")
    p.add_argument("--seed", type=flag(0, 2**63 - 1, whole=True), help="random seed (default 0)")
    p.add_argument("--constraint", action="append", default=[], metavar="EXPR",
                   help="a filter such as 'ttft_s<=0.5' or 'fits' (repeatable)")
    p.add_argument("--max-ttft", type=SECONDS, metavar="S", help="keep TTFT <= S seconds")
    p.add_argument("--max-tpot", type=SECONDS, metavar="S", help="keep TPOT <= S seconds")
    p.add_argument("--max-usd-per-hour", type=flag(0, 1e9, low_open=True), metavar="USD",
                   help="budget: device cost per hour")
    p.add_argument("--fits", action="store_true", help="keep configurations that fit in device memory")
    p.add_argument("--pareto", metavar="COL:max|min,...", help="Pareto objectives, e.g. "
                   "throughput_per_device_tok_s:max,tpot_s:min")
    p.add_argument("-o", "--output", metavar="PATH", help="write rows to Parquet (or CSV if PATH ends .csv)")
    p.add_argument("--csv", action="store_true", help="also write PATH with a .csv suffix")
    p.add_argument("--keep", choices=("all", "feasible", "front"), default="all",
                   help="rows to write: all (with a feasible column), feasible only, or the front")
    p.add_argument("--plot", metavar="PNG", help="plot the front over the first two objectives")
    p.add_argument("--scheduler", metavar="ADDRESS", help="run on a Dask cluster, e.g. tcp://host:8786")
    p.add_argument("--dask", action="store_true", help="run on a Dask LocalCluster of this machine's cores")
    p.add_argument("--workers", type=flag(1, 4096, whole=True), help="LocalCluster worker processes (default: all cores)")
    p.add_argument("--chunk-rows", type=flag(1, 10**7, whole=True), help="rows per chunk (default 131072)")
    p.add_argument("--top", type=flag(1, 10**6, whole=True), default=20, help="front rows to print")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_sweep)

    r = subparsers.add_parser("recommend", help="cheapest device set for a target rate within latency limits")
    _add_plan_args(r, tp_default="1,2,4,8", w_default="4,8,16", kv_default="8,16")
    r.add_argument("--rate", type=flag(0, 1e12, low_open=True), metavar="TOK/S",
                   help="target generated tokens per second")
    r.add_argument("--rps", type=flag(0, 1e9, low_open=True), metavar="REQ/S",
                   help="target requests per second (instead of --rate)")
    r.add_argument("--top", type=flag(1, 10_000, whole=True), default=10, help="options to print (one per device type)")
    r.set_defaults(handler=run_recommend)

    b = subparsers.add_parser("best-batch", help="per device, the batch size with the best throughput "
                              "within latency limits")
    _add_plan_args(b, tp_default="1", w_default="16", kv_default="16")
    b.add_argument("--objective", default="throughput_per_device_tok_s", help="column to maximise")
    b.set_defaults(handler=run_best_batch)


def _add_plan_args(p, tp_default: str, w_default: str, kv_default: str) -> None:
    p.add_argument("--model", default="llama-3-8b", help="catalog name or path to an HF config.json")
    p.add_argument("--hardware", help="comma list of presets or spec paths (default: every datasheet preset "
                   "priced on --price-basis)")
    p.add_argument("--price-basis", choices=("cloud", "purchase-3y"), default="cloud",
                   help="rank devices whose price is a cloud on-demand rate (default) or an amortised purchase")
    p.add_argument("--prompt", type=flag(*RANGES["prompt"], whole=True), default=2048, help="prompt tokens per request")
    p.add_argument("--gen", type=flag(*RANGES["gen"], whole=True), default=256, help="generated tokens per sample")
    p.add_argument("--samples", type=flag(*RANGES["samples"], whole=True), default=1,
                   help="best-of-N samples per request")
    add_engine_arg(p)
    p.add_argument("--max-ttft", type=SECONDS, metavar="S", help="TTFT limit, seconds")
    p.add_argument("--max-tpot", type=SECONDS, metavar="S", help="TPOT limit, seconds")
    p.add_argument("--tp", default=tp_default, help="tensor-parallel degrees to try (comma list)")
    p.add_argument("--w-bits", default=w_default, help="weight bit-widths to try (comma list)")
    p.add_argument("--kv-bits", default=kv_default, help="KV-cache bit-widths to try (comma list)")
    p.add_argument("--a-bits", type=flag(*RANGES["a_bits"], whole=True), default=16)
    p.add_argument("--max-batch", type=flag(1, MAX_BATCH, whole=True), default=1024,
                   help=f"try every batch 1..N (N at most {MAX_BATCH:,})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


# -- sweep ------------------------------------------------------------------------------------------
def parse_grid_arg(text: str) -> tuple[str, object]:
    """'batch=1,8,64' -> ('batch', [1, 8, 64]); 'batch=1:256:9:log' -> ('batch', {range})."""
    from planning.sweep import SweepError

    name, sep, values = text.partition("=")
    name, values = name.strip(), values.strip()
    if not sep or not name or not values:
        raise SweepError(f"--grid {text!r}: expected FIELD=VALUES, e.g. batch=1,8,64 or batch=1:256:9:log")
    if ":" in values and "," not in values and name not in ("model", "hardware", "engine"):
        return name, _parse_range(name, values)
    return name, [_scalar(v.strip()) for v in values.split(",") if v.strip()]


def _parse_range(name: str, text: str) -> dict:
    from planning.sweep import SweepError

    parts = text.split(":")
    log = parts[-1].lower() == "log"
    parts = parts[:-1] if log else parts
    if len(parts) not in (2, 3):
        raise SweepError(f"--grid {name}={text}: a range is start:stop[:num[:log]]")
    out = {"start": _number(name, parts[0]), "stop": _number(name, parts[1]), "log": log}
    if len(parts) == 3:
        num = _number(name, parts[2])
        if num != int(num):
            raise SweepError(f"--grid {name}={text}: num {parts[2]!r} must be a whole number")
        out["num"] = int(num)
    return out


def _number(name: str, text: str) -> float:
    from planning.sweep import SweepError

    from hardware.inputs import parse_number

    try:
        return parse_number(text, f"--grid {name}")
    except InputError as err:
        raise SweepError(str(err)) from None


def _scalar(text: str):
    """Numbers as numbers; anything else (catalog names, '4.8 TB/s') stays text for the spec to read.
    Text Python would read as a number but that is not a plain ASCII decimal ('٣', 'nan', '1_000')
    is refused."""
    from hardware.inputs import parse_number

    try:
        value = float(text)
    except ValueError:
        return text
    try:
        value = parse_number(text, "--grid value")
    except InputError as err:
        from planning.sweep import SweepError

        raise SweepError(str(err)) from None
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def spec_from_args(args):
    """The spec file (or the built-in default), with --grid / --random / constraint flags applied."""
    from planning import sweep

    # --grid adds or replaces axes of the spec file, or of the built-in default sweep (whose other axes,
    # constraints and objectives stay)
    data = dict(_load_yaml(args.spec) if args.spec is not None else _default_spec())
    data["axes"] = {**(data.get("axes") or {}), **dict(parse_grid_arg(g) for g in args.grid)}
    if args.engine is not None:
        if "engine" in data["axes"]:
            raise sweep.SweepError("--engine: the sweep has an 'engine' axis; give one or the other")
        data["engine"] = engine_from_args(args)
    if args.random is not None:
        data["mode"], data["n"] = "random", args.random
    if args.seed is not None:
        data["seed"] = args.seed
    extra = list(args.constraint) + (["fits"] if args.fits else [])
    for limit, column in ((args.max_ttft, "ttft_s"), (args.max_tpot, "tpot_s"), (args.max_usd_per_hour, "usd_per_hour")):
        if limit is not None:
            extra.append(f"{column} <= {limit!r}")
    constraints = sweep.parse_constraints(data.get("constraints")) + sweep.parse_constraints(extra)
    data["constraints"] = list(constraints)
    if args.pareto is not None:
        data["pareto"] = args.pareto
    return sweep.SweepSpec.from_dict(data)


def _load_yaml(path: str) -> dict:
    from hardware import inputs
    from planning.sweep import SweepError

    try:
        data = inputs.load_yaml(path, "sweep spec")
    except InputError as err:
        raise SweepError(str(err)) from None
    if not isinstance(data, dict):
        raise SweepError(f"sweep spec {path}: expected a mapping with an 'axes' key")
    return data


def _default_spec() -> dict:
    """DEFAULT_SPEC with the devices that are installed (presets may be added or removed)."""
    import hardware

    from planning.sweep import SweepError

    installed = set(hardware.names())
    devices = [d for d in DEFAULT_SPEC["axes"]["hardware"] if d in installed]
    if not devices:
        raise SweepError("sweep: no hardware presets installed for the default sweep; give a spec or --grid")
    return {**DEFAULT_SPEC, "axes": {**DEFAULT_SPEC["axes"], "hardware": devices}}


def _outputs(args) -> tuple[Path | None, Path | None]:
    from planning.sweep import SweepError

    if args.output is None:
        if args.csv:
            raise SweepError("--csv: needs -o PATH (the CSV is written next to it)")
        return None, None
    out = check_output_path(args.output, "-o")
    if out.suffix.lower() == ".csv":
        return None, out
    import pyarrow.parquet  # noqa: F401, before the sweep runs: a missing extra is reported at once

    return out, (check_output_path(out.with_suffix(".csv"), "--csv") if args.csv else None)


def run_sweep(args) -> int:
    from planning import sweep

    spec = spec_from_args(args)
    parquet, csv = _outputs(args)
    if args.plot is not None:
        check_output_path(args.plot, "--plot")
        if len(spec.objectives) < 2:
            raise sweep.SweepError("--plot: needs at least two --pareto objectives")
    if args.keep == "front" and not spec.objectives:
        raise sweep.SweepError("--keep front: needs --pareto objectives")
    collect = bool(args.plot) and spec.size <= PLOT_ROWS_MAX
    options = dict(keep=args.keep if (parquet or csv) else ("all" if collect else "none"), path=parquet,
                   csv_path=csv, collect=collect, progress=not args.no_progress,
                   chunk_rows=args.chunk_rows or sweep.DEFAULT_CHUNK_ROWS)
    print(f"sweep: {spec.describe()}")
    if args.scheduler or args.dask:
        from planning import sweep_dask

        result = sweep_dask.run(spec, scheduler=args.scheduler, n_workers=args.workers, **options)
    else:
        result = sweep.run(spec, **options)
    print(result.summary())
    if result.front is not None and len(result.front):
        print(format_front(result.front, spec, args.top))
    elif spec.objectives:
        print("no feasible rows: the front is empty")
    for path in (parquet, csv):
        if path is not None:
            print(f"wrote {path} ({args.keep} rows)")
    if args.plot is not None:
        _plot(result, args.plot)
    return 0


def _plot(result, path: str) -> None:
    from planning.sweep import SweepError

    if result.front is None or not len(result.front) or len(result.spec.objectives) < 2:
        raise SweepError("--plot: needs a front over at least two --pareto objectives with feasible rows")
    result.plot_front(path)
    print(f"plotted {path}")


def format_front(front, spec, top: int) -> str:
    shown = [c for c in FRONT_COLUMNS if c in front.columns and (c != "engine" or spec.engine_axis is not None)]
    columns = list(dict.fromkeys(shown + [o.column for o in spec.objectives]))
    view = front[columns].head(top).copy()
    for column in columns:
        if column.endswith("_s") and column not in ("throughput_tok_s", "throughput_per_device_tok_s"):
            view[column] = view[column].map(format_seconds)
        elif view[column].dtype.kind == "f":
            view[column] = view[column].map(_short)
    more = f"\n... {len(front) - top} more front rows" if len(front) > top else ""
    return view.to_string(index=False) + more


def _short(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e6:
        return f"{value:g}"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


# -- recommend / best-batch -------------------------------------------------------------------------
def _plan_kwargs(args) -> dict:
    import workloads

    devices = [d.strip() for d in args.hardware.split(",") if d.strip()] if args.hardware is not None else None
    if args.hardware is not None and not devices:
        raise InputError(f"--hardware: {args.hardware!r} lists no device")
    bits = lambda name, text: number_list(text, name, *RANGES["w_bits"], whole=True, max_items=32)
    return dict(hardware=devices, prompt=args.prompt, gen=args.gen, samples=args.samples, engine=engine_from_args(args),
                max_ttft_s=args.max_ttft, max_tpot_s=args.max_tpot,
                tp=number_list(args.tp, "--tp", *RANGES["tp"], whole=True, max_items=64),
                w_bits=bits("--w-bits", args.w_bits), kv_bits=bits("--kv-bits", args.kv_bits),
                a_bits=args.a_bits, batch=_batch_range(args.max_batch), progress=not args.no_progress,
                model=workloads.load(args.model), price_basis=args.price_basis)


def _batch_range(max_batch: int) -> dict:
    from planning.sweep import SweepError

    if max_batch < 1:
        raise SweepError(f"--max-batch: {max_batch} must be >= 1")
    return {"start": 1, "stop": max_batch, "step": 1}


def run_recommend(args) -> int:
    from planning import recommend

    kwargs = _plan_kwargs(args)
    model = kwargs.pop("model")
    rec = recommend.cheapest(model, args.rate, requests_per_s=args.rps, top=args.top, **kwargs)
    print(f"{rec.model}: cheapest device sets for {rec.target_tok_s:,.0f} generated tok/s "
          f"(prompt {args.prompt}, gen {args.gen}, engine {rec.engine}; {rec.swept:,} configurations swept)")
    print(f"prices: {recommend.PRICE_BASIS_TEXT[rec.price_basis]} (--price-basis {rec.price_basis})")
    view = rec.to_frame()[recommend.SHOW_COLUMNS].copy()
    for column in ("ttft_s", "tpot_s"):
        view[column] = view[column].map(format_seconds)
    for column in view.columns:
        if view[column].dtype.kind == "f":
            view[column] = view[column].map(_short)
    print(view.to_string(index=False))
    best = rec.best
    print(f"\nbest: {int(best['replicas'])} x {best['hardware']} (tp {best['tp']:g}, batch {best['batch']:g}, "
          f"w{best['w_bits']:g}/kv{best['kv_bits']:g}) = {int(best['total_devices'])} devices, "
          f"${best['usd_per_hour_total']:,.2f}/h")
    return 0


def run_best_batch(args) -> int:
    from planning import recommend

    kwargs = _plan_kwargs(args)
    model = kwargs.pop("model")
    engine = kwargs["engine"]
    table = recommend.best_batch(model, objective=args.objective, **kwargs)
    print(f"{model.name}: best batch per device, prompt {args.prompt}, gen {args.gen}, engine {engine.name}")
    none = table["batch"].isna().to_numpy()
    for column in ("ttft_s", "tpot_s"):
        table[column] = table[column].map(lambda v: format_seconds(v) if math.isfinite(v) else "-")
    table["total_GB"] = (table.pop("total_bytes") / 1e9).map(lambda v: f"{v:.1f}" if math.isfinite(v) else "-")
    for column in table.columns:
        if table[column].dtype.kind == "f":
            table[column] = table[column].map(lambda v: _short(v) if math.isfinite(v) else "-")
    table.loc[none, "batch"] = "none"
    table.loc[none, "limited_by"] = "no batch meets: " + table.loc[none, "limited_by"].astype(str)
    print(table.drop(columns=["model", "a_bits"]).to_string(index=False))
    if none.any():
        print(f"\n{int(none.sum())} of {len(table)} configurations: no batch size meets the limits "
              "(batch 'none'; the reason is under limited_by)")
    return 0
