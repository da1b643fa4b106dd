"""CLI: `perfmodel validate run | calibrate | report | predict | all`.

    perfmodel validate all --quick --out out/validate      # measure, calibrate, report on this device
    perfmodel validate predict CASES.csv --hardware h200-sxm -o OUT.csv
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import hardware
from hardware import inputs
from hardware.spec import Hardware

DEFAULT_OUT = "out/validate"
#: Cases read, checked, predicted and written per pass: memory stays bounded for any table size.
PREDICT_CHUNK_ROWS = 100_000

#: aiconfigurator systems with a datasheet preset here.
SYSTEMS = {"h200_sxm": "h200-sxm", "h100_sxm": "h100-sxm", "a100_sxm": "a100-80gb-sxm", "b200_sxm": "b200",
           "l40s": "l40s"}


def register(subparsers) -> None:
    register_external(subparsers)
    p = subparsers.add_parser("validate", help="measure kernels, calibrate the spec, report predicted vs measured")
    sub = p.add_subparsers(dest="action", required=True)

    run = sub.add_parser("run", help="measure the suite on the local device (resumes where it stopped)")
    _common(run)
    run.add_argument("--quick", action="store_true", help="a small suite (about a minute on a CPU)")
    run.add_argument("--limit-s", type=inputs.flag(0, 10**7, low_open=True), default=None,
                     help="stop after this many seconds; rerun to resume")
    run.add_argument("--kinds", default="", help="comma-separated case kinds to run (default: all)")
    run.add_argument("--timing", choices=("all", "graph", "eager"), default="all",
                     help="only the cases timed inside CUDA graphs, or only those launched eagerly")
    run.set_defaults(handler=run_measure)

    cal = sub.add_parser("calibrate", help="fit a calibrated hardware spec from the measurements")
    _common(cal)
    cal.add_argument("--hardware", default=None, help="base spec (default: the preset matching the device)")
    cal.add_argument("--power", default=None, metavar="YAML",
                     help="the board power section fitted by validate/reports/power/fit_power.py "
                          "(power_calibration.yaml): carried into the spec, and whole steps are banded under load")
    cal.add_argument("--engine-kernels", default=None, metavar="YAML",
                     help="a spec fitted to the same GPU's serving-engine tables (perfmodel calibrate --from "
                          "aiconfigurator): its engines' attention kernels, fp8 quantization and custom all-reduce "
                          "are carried into the spec, converted to its rates, with their sources")
    cal.set_defaults(handler=run_calibrate)

    rep = sub.add_parser("report", help="write report.md, CSVs and plots")
    _common(rep)
    rep.add_argument("--hardware", default=None, help="datasheet spec (default: the preset matching the device)")
    rep.set_defaults(handler=run_report)

    allp = sub.add_parser("all", help="run, calibrate and report")
    _common(allp)
    allp.add_argument("--quick", action="store_true")
    allp.add_argument("--limit-s", type=inputs.flag(0, 10**7, low_open=True), default=None)
    allp.add_argument("--kinds", default="")
    allp.add_argument("--hardware", default=None)
    allp.set_defaults(handler=run_all)

    pred = sub.add_parser("predict", help="predict times for cases measured anywhere (the suite's CSV schema)")
    pred.add_argument("cases", help="CSV with a kind column and that kind's parameters")
    pred.add_argument("--hardware", default="h200-sxm", help="preset name or spec YAML (calibrated or not)")
    pred.add_argument("-o", "--output", required=True, help="CSV to write: the cases with predicted_s beside them")
    pred.set_defaults(handler=run_predict_cases)


def register_external(subparsers) -> None:
    p = subparsers.add_parser("calibrate", help="fit a calibrated spec to kernel tables measured by others")
    p.add_argument("--from", dest="source", choices=("aiconfigurator",), required=True,
                   help="whose tables: NVIDIA's aiconfigurator (CUDA-graph-timed GEMM, attention, all-reduce)")
    p.add_argument("--system", required=True, help=f"aiconfigurator system, e.g. h100_sxm (presets: "
                                                   f"{', '.join(SYSTEMS)})")
    p.add_argument("--engine", default="vllm", help="engine whose GEMM and all-reduce tables fit the device "
                                                   "(attention is fitted per engine found); default vllm")
    p.add_argument("--hardware", default=None, help="datasheet spec to start from (default: the system's preset)")
    p.add_argument("--data", default=None, help="folder of <engine>.csv case tables (default: the installed "
                                                "aiconfigurator package's tables)")
    p.add_argument("-o", "--output", required=True, help="spec YAML to write")
    p.set_defaults(handler=run_calibrate_external)


def run_calibrate_external(args) -> int:
    import yaml

    from hardware.spec import to_yaml_dict
    from validate import calibrate_external as ce

    base_name = args.hardware or SYSTEMS.get(args.system)
    if base_name is None:
        raise ValueError(f"--system: {args.system!r} has no datasheet preset; pass --hardware "
                         f"(systems with presets: {', '.join(SYSTEMS)})")
    by_engine = ce.cases_for(args.system, args.data)
    if args.engine not in by_engine:
        raise ValueError(f"--engine: {args.engine!r} has no tables for {args.system}; found: {', '.join(by_engine)}")
    out = inputs.check_output_path(args.output, "--output")
    hw = ce.calibrated_preset(by_engine, hardware.load(base_name).datasheet(), args.engine, args.engine)
    header = (f"# Calibrated from NVIDIA aiconfigurator's measured kernel tables ({args.system}); base spec: "
              f"{base_name}. Written by `perfmodel calibrate --from aiconfigurator`.\n")
    inputs.write_text(out, header + yaml.safe_dump(to_yaml_dict(hw), sort_keys=False), "--output")
    table = ce.residual_table(ce.residuals(by_engine, hw))
    ev = table[table["split"] == "evaluation"]
    for r in ev.to_dict("records"):
        print(f"{r['engine']:<8}{r['class']:<22}{r['cases']:>5}  median {100 * r['median_ape']:5.1f}%  "
              f"p90 {100 * r['p90_ape']:5.1f}%")
    print(f"calibrated spec: {out}")
    return 0


def _common(p) -> None:
    p.add_argument("--out", default=DEFAULT_OUT, help="directory for measurements.csv, the spec and the report")
    p.add_argument("--steps", action="append", default=[],
                   help="CSV of whole steps measured elsewhere (validate/reports/engine/*/steps.csv): scored "
                        "in the report and in the error bands, never fitted (repeatable)")


def measurements_path(args) -> Path:
    return Path(args.out) / "measurements.csv"


def run_measure(args) -> int:
    from validate import bench, cases, runner

    cuda = bench.device().type == "cuda"
    suite = cases.suite(quick=args.quick, cuda=cuda)
    if args.kinds:
        wanted = set(args.kinds.split(","))
        unknown = wanted - set(cases.KINDS)
        if unknown:
            raise ValueError(f"--kinds: unknown kind {sorted(unknown)[0]!r}; known: {', '.join(cases.KINDS)}")
        suite = [c for c in suite if c["kind"] in wanted]
    timing = getattr(args, "timing", "all")
    if timing != "all":
        suite = [c for c in suite if (c.get("timing") == "graph") == (timing == "graph")]
    path = runner.run(suite, measurements_path(args), limit_s=args.limit_s)
    print(f"measurements: {path}")
    return 0


def _measured(args):
    import pandas as pd

    path = measurements_path(args)
    if not path.exists():
        raise ValueError(f"--out: no measurements at {path}; run `perfmodel validate run --out {args.out}` first")
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    return pd.concat([frame] + [_steps(extra) for extra in getattr(args, "steps", [])], ignore_index=True)


def _steps(path: str):
    """Whole steps measured by another script, as evaluation cases of the suite's schema."""
    import pandas as pd

    from validate.cases import kernel_class

    if not Path(path).is_file():
        raise ValueError(f"--steps: file {path!r} does not exist")
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    missing = {"kind", "model", "phase", "batch", "q_len", "kv_len", "dtype", "engine", "measured_s",
               "status"} - set(frame.columns)
    if missing:
        raise ValueError(f"--steps: {path} lacks column(s) {sorted(missing)}")
    frame = frame.assign(split="evaluation")
    frame["class"] = [kernel_class(r) for r in frame.to_dict("records")]
    return frame


def base_hardware(measured, name: str | None) -> Hardware:
    """The datasheet spec to start from: given, or the preset matching the measured device."""
    from validate.local import hardware_for_device

    if name:
        return hardware.load(name)
    return hardware_for_device(str(measured["device_name"].iloc[0]), str(measured["device_type"].iloc[0]))


def run_calibrate(args) -> int:
    import yaml

    from hardware.spec import to_yaml_dict
    from validate.calibrate import calibrate, with_error_bands

    measured = _measured(args)
    # read and checked before the fit, so a bad file costs no fitting time
    engine_spec = _engine_kernels_spec(args.engine_kernels) if getattr(args, "engine_kernels", None) else None
    base = base_hardware(measured, args.hardware).datasheet()
    device = measured["device_name"].iloc[0]
    source = (f"perfmodel validate on {device} (torch {measured['torch'].iloc[0]}), "
              f"{measured['timestamp'].iloc[0][:10]}; calibration split of {args.out}/measurements.csv")
    records = measured.to_dict("records")
    fitted = calibrate(records, base, source)
    if getattr(args, "power", None):
        fitted = dataclasses.replace(fitted, calibration=dataclasses.replace(
            fitted.calibration, **power_section(args.power, fitted.calibration),
            source=f"{source}; calibration.power fitted by validate/reports/power/fit_power.py ({args.power})"))
    if engine_spec is not None:
        from validate.calibrate_external import with_engine_kernels

        fitted = with_engine_kernels(fitted, engine_spec)
    calibrated = with_error_bands(records, fitted)
    # the file is named after the spec's `name`, which comes from input: one safe component, inside --out
    path = inputs.confined(args.out, inputs.safe_file_name(calibrated.name, "name") + ".yaml", "--out")
    header = f"# Calibrated from measurements; base spec: {base.name}. Written by `perfmodel validate calibrate`.\n"
    inputs.write_text(path, header + yaml.safe_dump(to_yaml_dict(calibrated), sort_keys=False), "--out")
    print(f"calibrated spec: {path}")
    return 0


def _engine_kernels_spec(path: str):
    """The spec --engine-kernels names: a calibrated spec (one fitted to engine tables) with a bf16
    GEMM rate, which its attention families' rate fractions are relative to."""
    from hardware.spec import Hardware

    spec = Hardware.from_yaml(inputs.check_input_path(path, "--engine-kernels"))
    if spec.calibration is None or "bf16" not in spec.calibration.matmul_flops_per_s:
        raise ValueError(f"--engine-kernels: {path!r} has no calibration with a bf16 GEMM rate; expected a spec "
                         "written by `perfmodel calibrate --from aiconfigurator`")
    return spec


def power_section(path: str, cal) -> dict:
    """Calibration fields of a power_calibration.yaml: its `power:` mapping, and the attention kernel
    families it measured (`attention_kernels:`), each family's parameters not given there taken from
    the calibration's entry for the family it refines ("sdpa-prefill" for "sdpa-prefill-bidirectional")."""
    import yaml

    from hardware.spec import calibration_section

    data = yaml.safe_load(inputs.read_text(path, "--power")) if Path(path).is_file() else None
    if not isinstance(data, dict) or "power" not in data:
        raise ValueError(f"--power: {path!r} is not a YAML file with a `power:` section (fit_power.py writes one)")
    values = calibration_section(data, Path(path).name, "power")
    families = {}
    for family, params in (data.get("attention_kernels") or {}).items():
        parsed = calibration_section({"attention_kernels": {family: params}}, Path(path).name,
                                     "attention_kernels", whole=True)["attention_kernels"][family]
        families[family] = {**cal.attention_kernels.get(family.rsplit("-", 1)[0], {}), **parsed}
    if families:
        values["attention_kernels"] = {**cal.attention_kernels, **families}
    return values


def run_report(args) -> int:
    from validate.report import write_report

    measured = _measured(args)
    base = base_hardware(measured, args.hardware).datasheet()
    spec = inputs.confined(args.out, inputs.safe_file_name(f"{base.name}-calibrated", "name") + ".yaml", "--out")
    if not spec.exists():
        raise ValueError(f"--out: no calibrated spec at {spec}; run `perfmodel validate calibrate` first")
    path = write_report(measured, base, Hardware.from_yaml(spec), Path(args.out))
    print(f"report: {path}")
    return 0


def run_all(args) -> int:
    for step in (run_measure, run_calibrate, run_report):
        code = step(args)
        if code:
            return code
    return 0


def run_predict_cases(args) -> int:
    """Stream the cases in chunks: read, check every row (errors name the row), predict, append."""
    path = inputs.check_input_path(args.cases, "cases", max_bytes=None)
    output = inputs.check_output_path(args.output, "--output")
    if output.resolve() == path.resolve():
        raise inputs.InputError(f"--output: {str(output)!r} is the cases file itself; write elsewhere")
    hw = hardware.load(args.hardware)
    # a regular file is written beside itself and renamed at the end: an error leaves no partial output
    partial = output.with_name(f".{output.name}.partial") if not output.exists() or output.is_file() else output
    try:
        done = _predict_stream(path, partial, hw)
        if partial != output:
            partial.replace(output)
    except OSError as err:
        raise inputs.InputError(f"--output: writing {str(output)!r} failed ({err.strerror or err})") from None
    finally:
        if partial != output:
            partial.unlink(missing_ok=True)
    print(f"wrote {done} predictions to {output}", file=sys.stderr)
    return 0


def _predict_stream(path: Path, out_path: Path, hw: Hardware) -> int:
    import pandas as pd

    from validate.case_checks import check_cases
    from validate.predict_cases import predict_frame

    done = 0
    try:
        reader = pd.read_csv(path, keep_default_na=False, na_values=[""], chunksize=PREDICT_CHUNK_ROWS)
        with open(out_path, "w", newline="") as fh:
            for frame in reader:
                check_cases(frame, first_row=done + 1)
                out = predict_frame(frame, hw)
                if "measured_s" in out.columns:
                    measured = pd.to_numeric(out["measured_s"], errors="coerce")
                    out["ratio"] = out["predicted_s"] / measured.where(measured > 0)
                out.to_csv(fh, index=False, header=done == 0)
                done += len(frame)
    except pd.errors.EmptyDataError:
        raise inputs.InputError(f"cases: {str(path)!r} is empty; expected a CSV with a header row") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise inputs.InputError(f"cases: {str(path)!r} is not a readable CSV ({str(err).splitlines()[0][:120]})") from None
    if done == 0:
        raise inputs.InputError(f"cases: {str(path)!r} has a header but no rows")
    return done
