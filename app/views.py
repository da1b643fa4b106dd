"""Pure helpers behind the planner pages: inputs to model objects, plan results, exports, tables.

Nothing here imports streamlit, so every number a page shows is computed (and tested) without a
browser; the pages in `app/ui/` only lay these results out. Cached page functions key on plain
values (a preset name, a spec's YAML text, a config's JSON text), which is why `resolve_hardware`
and `resolve_model` take such keys instead of objects.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import yaml

import hardware
import perfmodel
import workloads
from hardware import fields
from hardware.spec import (DEVICE_LINK_KINDS, KINDS, PLANNER_SOURCE, PLANNER_TAG, Hardware, SpecError, SpecReader,
                           to_yaml_dict)
from hardware.units import UnitError
from perfmodel import engines
from perfmodel.commands import energy_row, power_source_text
from perfmodel.ops import attention_tensor_bits
from perfmodel.predict import precision
from workloads.model import ModelError, ModelSpec
from workloads.scenario import Scenario

#: Errors a user can cause from the planner; pages show their message instead of a traceback.
USER_ERRORS = (SpecError, UnitError, ModelError, ValueError, KeyError)

#: Tag the planner writes on values entered by hand (every spec value must name a source).
USER_TAG, USER_SOURCE = PLANNER_TAG, PLANNER_SOURCE


# -- hardware specs: form fields, field-by-field validation, YAML round trip ---------------------
@dataclass(frozen=True)
class SpecField:
    """One numeric leaf of the spec YAML schema (hardware/presets/*.yaml) as the form shows it."""

    path: str
    dimension: str | None       # units.SI_UNITS key, or None for a plain count
    label: str
    required: bool = True


def _form_fields() -> tuple[SpecField, ...]:
    """The form's text boxes: the rows of hardware.fields.HARDWARE with a form label, in the table's
    order (a keyed row gives one box per key it offers: compute.<dtype>)."""
    boxes = []
    for f in fields.HARDWARE:
        if not f.form:
            continue
        if f.keyed:  # the keys a device must have first, then the optional ones
            keys = [*f.form_required, *(k for k in f.choices if k not in f.form_required)]
            boxes += [SpecField(f"{f.key}.{k}", f.dimension, f.form.format(k, "" if k in f.form_required
                                                                            else ", optional"),
                                k in f.form_required) for k in keys]
        else:
            boxes.append(SpecField(f.key, f.dimension, f.form, f.required))
    return tuple(boxes)


#: The form's fields. fp32 is required because the roofline runs vector ops (norms, activations)
#: at the fp32 rate; a device without it could not be modeled (fields.HARDWARE: form_required).
SPEC_FIELDS = _form_fields()


def _get(data: dict, path: str):
    for key in path.split("."):
        if not isinstance(data, dict) or data.get(key) is None:
            return None
        data = data[key]
    return data


def _set(data: dict, path: str, value) -> None:
    *parents, leaf = path.split(".")
    for key in parents:
        data = data.setdefault(key, {})
    data[leaf] = value


def spec_field_errors(data, origin: str = "spec") -> dict[str, str]:
    """Check every field of a spec mapping on its own; {path: message} for each bad one.

    Hardware.from_dict stops at the first bad field; a person fixing a spec wants all of them at
    once. Each leaf goes through the same reader the loader uses, so the messages are identical.
    Cross-field rules (e.g. a device-link kind without a bandwidth) are checked by `build_spec`.
    """
    if not isinstance(data, dict):
        return {"spec": f"{origin}: expected a mapping of fields, got {type(data).__name__}"}
    errors: dict[str, str] = {}
    try:
        reader = SpecReader(data, origin)
    except SpecError as err:
        return {"sources": str(err)}
    for key in ("name", "kind"):
        if _get(data, key) is None:
            errors[key] = f"{origin}: missing field {key!r}"
    if _get(data, "kind") is not None and str(data["kind"]) not in KINDS:
        errors["kind"] = f"{origin}: kind: {data['kind']!r} is not one of {KINDS}"
    link = _get(data, "device_link.kind")
    if link is not None and str(link) not in DEVICE_LINK_KINDS:
        errors["device_link.kind"] = f"{origin}: device_link.kind: {link!r} is not one of {DEVICE_LINK_KINDS}"
    paths = {f.path: f for f in SPEC_FIELDS}
    for section in ("compute", "sparse_compute"):  # any dtype the file lists, not only the form's
        rates = _get(data, section)
        for dtype in rates if isinstance(rates, dict) else ():
            paths.setdefault(f"{section}.{dtype}", SpecField(f"{section}.{dtype}", "flops_per_s", dtype, False))
    for field in paths.values():
        if not field.required and _get(data, field.path) is None:
            continue
        try:
            reader.quantity(field.path, field.dimension)
        except SpecError as err:
            errors[field.path] = str(err)
    return errors


def build_spec(data, origin: str = "spec") -> tuple[Hardware | None, dict[str, str]]:
    """A Hardware from a spec mapping, or None and every field's error."""
    errors = spec_field_errors(data, origin)
    if errors:
        return None, errors
    try:
        return Hardware.from_dict(data, origin=origin), {}
    except SpecError as err:
        return None, {"spec": str(err)}


def parse_spec_yaml(text: str, origin: str = "uploaded spec") -> tuple[Hardware | None, dict[str, str]]:
    """Parse an uploaded spec file; YAML syntax errors, deep nesting and alias bombs come back as a
    field error, not an exception (the loader's limits: hardware.inputs)."""
    from hardware import inputs

    try:
        data = inputs.load_yaml_text(text, origin)
    except inputs.InputError as err:
        return None, {"yaml": str(err)}
    return build_spec(data, origin)


def human(value: float, dimension: str | None) -> str:
    """A spec value as text the unit parser reads back to the same number (6 significant digits)."""
    return fields.human_text(value, dimension or "count")


def form_defaults(hw: Hardware | None) -> dict[str, str]:
    """The form's initial texts: a preset's values, or blanks for a device built from nothing."""
    if hw is None:
        return {f.path: "" for f in SPEC_FIELDS} | {"name": "my-device", "kind": "gpu", "device_link.kind": "none"}
    doc = spec_document(hw)
    out = {f.path: _untag(_get(doc, f.path)) for f in SPEC_FIELDS}
    return out | {"name": f"{hw.name}-custom", "kind": hw.kind, "device_link.kind": hw.device_link}


def _untag(text) -> str:
    return "" if text is None else str(text).rsplit(" [", 1)[0]


def spec_from_form(values: dict[str, str]) -> dict:
    """The YAML mapping of a spec typed into the form (blank optional fields are left out)."""
    doc: dict = {"name": values.get("name", "").strip() or None, "title": values.get("name", "").strip() or None,
                 "kind": values.get("kind"), "sources": {USER_TAG: USER_SOURCE}}
    link = values.get("device_link.kind") or "none"
    doc["device_link"] = {"kind": link}
    for f in SPEC_FIELDS:
        text = str(values.get(f.path, "") or "").strip()
        if f.path.startswith("device_link.") and link == "none":
            continue
        if text:
            _set(doc, f.path, f"{text} [{USER_TAG}]")
    return doc


def spec_document(hw: Hardware) -> dict:
    """A Hardware as the spec YAML schema, every value tagged as entered in the planner (the spec
    writer's planner style: hardware.spec.to_yaml_dict).

    `Hardware.from_dict(spec_document(hw))` rebuilds the same datasheet numbers (to 6 digits), so
    an exported custom device runs unchanged through `perfmodel predict --hardware FILE.yaml`.
    Calibration is not exported: a calibrated preset is referred to by its name instead.
    """
    return to_yaml_dict(hw, style="planner")


def spec_yaml(hw: Hardware) -> str:
    return yaml.safe_dump(spec_document(hw), sort_keys=False)


# -- resolving the keys the pages cache on ----------------------------------------------------
def resolve_hardware(key: tuple) -> Hardware:
    """("preset", name) or ("yaml", spec text) -> Hardware; raises SpecError naming the bad field."""
    kind, value = key[0], key[1]
    if kind == "preset":
        return hardware.load(value)
    hw, errors = parse_spec_yaml(value)
    if errors:
        raise SpecError("; ".join(errors.values()))
    return hw


def resolve_model(key: tuple) -> ModelSpec:
    """("catalog", name) or ("config", json text, name) -> ModelSpec; raises ModelError."""
    if key[0] == "catalog":
        return workloads.load(key[1])
    return model_from_config_text(key[1], key[2])


def metric_delta(value: float, fmt: str, lower_is_better: bool = False) -> dict:
    """Keyword arguments for st.metric's delta: a change that rounds to zero in `fmt` is shown grey
    with no arrow ("same as ..."), not as a red or green rise (issue 16); NaN shows no delta."""
    if not math.isfinite(value):
        return {}
    text = fmt.format(value)
    shown = float(text.split()[0])
    if shown == 0:  # "+0.00" or "-0.00": no change at the precision shown
        return {"delta": "±" + text.split(maxsplit=1)[0].lstrip("+-") + " " + text.split(maxsplit=1)[1],
                "delta_color": "off", "delta_arrow": "off"}
    return {"delta": text, "delta_color": "inverse" if lower_is_better else "normal"}


def model_from_config_text(text: str | bytes, name: str = "uploaded") -> ModelSpec:
    """An uploaded HF config.json; bad JSON or an unsupported architecture raises ModelError."""
    from hardware import inputs

    try:
        data = inputs.load_json_text(text, f"model config {name}")
    except inputs.InputError as err:
        raise ModelError(str(err)) from None
    return ModelSpec.from_hf_config(data, name=name)


# -- scenario inputs --------------------------------------------------------------------------
#: Scenario fields the planner exposes, in the CLI's spelling (perfmodel predict --w-bits ...).
SCENARIO_FIELDS = ("batch", "prompt", "gen", "w_bits", "a_bits", "kv_bits", "tp", "samples")


def scenario(inputs: dict) -> Scenario:
    """A Scenario from the page's inputs; ScenarioError names the bad field and value."""
    return Scenario(**{k: inputs[k] for k in SCENARIO_FIELDS if k in inputs})


# -- engine profiles ----------------------------------------------------------------------------
def engine_names() -> list[str]:
    """The engine profiles a page offers (perfmodel.engines), sorted by name."""
    return list(engines.names())


def engine_help() -> str:
    """Every profile's title and description, for the engine selector's help tooltip."""
    lines = [f"Which serving stack executes each step (default {engines.DEFAULT_ENGINE}, a serving engine)."]
    for name in engines.names():
        e = engines.load(name)
        lines.append(f"**{name}**: {e.title}. {e.description}")
    return "\n\n".join(lines)


def cli_command(hardware_ref: str, model_ref: str, inputs: dict, engine: str = engines.DEFAULT_ENGINE) -> str:
    """The `perfmodel predict` command line that reproduces a plan."""
    flags = " ".join(f"--{k.replace('_', '-')} {_num(inputs[k])}" for k in SCENARIO_FIELDS if k in inputs)
    return (f"perfmodel predict --hardware {hardware_ref} --model {model_ref} {flags} "
            f"--engine {engines.load(engine).name} --breakdown")


def _num(value) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def plan_document(hardware_ref: str, model_ref: str, inputs: dict, hw_spec: dict | None = None,
                  model_config: dict | None = None, engine: str = engines.DEFAULT_ENGINE) -> str:
    """The inputs of a view as YAML: references, engine, scenario, the CLI line, and any custom spec inline."""
    doc = {"hardware": hardware_ref, "model": model_ref, "engine": engines.load(engine).name,
           "scenario": {k: _plain(inputs[k]) for k in SCENARIO_FIELDS if k in inputs},
           "cli": cli_command(hardware_ref, model_ref, inputs, engine)}
    if hw_spec is not None:
        doc["hardware_spec"] = hw_spec
    if model_config is not None:
        doc["model_config"] = model_config
    return yaml.safe_dump(doc, sort_keys=False)


def _plain(value):
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    value = float(value)
    return int(value) if value.is_integer() else value


# -- the plan ---------------------------------------------------------------------------------
def plan(model: ModelSpec, hw: Hardware, sc: Scenario, engine: str = engines.DEFAULT_ENGINE) -> dict:
    """Everything the Plan page shows: metrics row, per-op tables of both phases, fit verdict, all
    priced for `engine` (a perfmodel.engines profile name).

    Returns plain data (dicts, DataFrames, strings) so the result can be cached and pickled.
    """
    pred = perfmodel.predict(model, hw, sc, engine=engine)
    # the request's energy and power (perfmodel.energy), the same fields `predict --json` prints
    row = {**pred.row(0), **energy_row(pred)}
    try:
        pred.require_fit()
        verdict = None
    except perfmodel.DoesNotFitError as err:
        verdict = str(err)
    return {"row": row, "prefill": pred.breakdown("prefill"), "decode": pred.breakdown("decode"),
            "does_not_fit": verdict, "suggestions": fit_suggestions(model, hw, sc, row) if verdict else [],
            "roofs": roofs(hw, row["w_bits"], row["a_bits"],
                           fp8_attention=bool(attention_tensor_bits(pred.engine, precision(sc), "prefill"))),
            "summary": summary_frame(row, model, hw, pred.engine.name)}


def fit_suggestions(model: ModelSpec, hw: Hardware, sc: Scenario, row: dict) -> list[str]:
    """What would make a plan fit: a smaller batch, more tensor parallelism, fewer weight bits.

    One vectorized prediction over the alternatives (tp up to the node's devices, 8- and 4-bit
    weights), so the suggestions are the cost model's own answers, not rules of thumb.
    """
    tips = []
    if row["max_batch"] >= 1:
        tips.append(f"batch {int(row['max_batch'])} or less fits at these settings")
    else:
        tips.append(f"the weights alone need {row['weights_bytes'] / 1e9:.1f} GB per device; "
                    f"{hw.name} has {hw.hbm_capacity_bytes / 1e9:.1f} GB")
    tps = np.array([t for t in (2, 4, 8, 16, 32, 64) if t <= hw.devices_per_node and t > row["tp"]], float)
    if tps.size:
        fits = perfmodel.predict(model, hw, sc.replace(tp=tps))["fits"]
        if fits.any():
            tips.append(f"tensor parallelism tp={int(tps[np.argmax(fits)])} fits")
    bits = np.array([b for b in (8.0, 4.0) if b < row["w_bits"]])
    if bits.size:
        fits = perfmodel.predict(model, hw, sc.replace(w_bits=bits))["fits"]
        if fits.any():
            tips.append(f"{int(bits[np.argmax(fits)])}-bit weights fit")
    return tips


def summary_frame(row: dict, model: ModelSpec, hw: Hardware, engine: str = engines.DEFAULT_ENGINE) -> pd.DataFrame:
    """One-row results table (SI units, unit in each column name) for the CSV export."""
    keep = ["batch", "prompt", "gen", "w_bits", "a_bits", "kv_bits", "tp", "samples", "ttft_s", "tpot_s",
            "e2e_s", "throughput_tok_s", "decode_tok_s", "usd_per_mtok", "prefill_bound", "decode_bound",
            "weights_bytes", "kv_bytes", "activation_bytes", "total_bytes", "capacity_bytes", "fits",
            "max_batch", "energy_j", "joules_per_token", "avg_power_w"]
    out = {"model": model.name, "hardware": hw.name, "engine": engines.load(engine).name,
           "calibrated": hw.is_calibrated}
    return pd.DataFrame([out | {k: row[k] for k in keep}])


def memory_frame(row: dict) -> pd.DataFrame:
    """Memory bar segments per device: weights, KV cache, activations, and what is left free."""
    used = row["weights_bytes"] + row["kv_bytes"] + row["activation_bytes"]
    parts = [("weights", row["weights_bytes"]), ("KV cache", row["kv_bytes"]),
             ("activations", row["activation_bytes"]), ("free", max(row["capacity_bytes"] - used, 0.0))]
    frame = pd.DataFrame(parts, columns=["component", "bytes"])
    frame["GB"] = frame["bytes"] / 1e9
    frame["order"] = range(len(frame))
    return frame


def roofs(hw: Hardware, w_bits, a_bits, fp8_attention: bool = False) -> list[dict]:
    """The device roofs the roofline chart draws: peak FLOP/s and memory bandwidth.

    The tensor roof uses the GEMM path the precisions select (perfmodel.roofline.matmul_dtype_rate);
    the vector roof the fp32 rate norms and activations run at. A calibrated spec adds its measured
    roof, which is what the predicted points sit under. `fp8_attention`: the engine runs its prefill
    attention in fp8 over an 8-bit cache (Engine.fp8_prefill_attention), whose roof is the fp8 one.
    """
    from perfmodel.roofline import matmul_dtype_rate

    out = [{"roof": "tensor peak (datasheet)", "flops_per_s": float(matmul_dtype_rate(hw, w_bits, a_bits, False)),
            "bytes_per_s": hw.hbm_bytes_per_s}]
    if fp8_attention:
        out.append({"roof": "fp8 attention peak (datasheet)", "flops_per_s": float(matmul_dtype_rate(hw, 8, 8, False)),
                    "bytes_per_s": hw.hbm_bytes_per_s})
    out.append({"roof": "vector fp32 (datasheet)", "flops_per_s": hw.peak_flops_per_s("fp32"),
                "bytes_per_s": hw.hbm_bytes_per_s})
    if hw.calibration:
        out.append({"roof": "tensor (calibrated)", "flops_per_s": float(matmul_dtype_rate(hw, w_bits, a_bits)),
                    "bytes_per_s": hw.calibration.memory_bytes_per_s})
    return out


def roofline_points(prefill: pd.DataFrame, decode: pd.DataFrame) -> pd.DataFrame:
    """Each op of both phases placed on the roofline: intensity (FLOP/byte) vs achieved FLOP/s.

    Achieved = the op's FLOPs over its modeled time; ops without FLOPs or bytes (embedding lookups,
    communication) have no place on a log-log roofline and are left out.
    """
    frames = []
    for phase, frame in (("prefill", prefill), ("decode", decode)):
        ok = (frame["flops"] > 0) & (frame["bytes"] > 0) & (frame["time_s"] > 0)
        part = frame.loc[ok, ["op", "kind", "bound", "flops", "bytes", "time_s", "share"]].copy()
        part["phase"] = phase
        part["intensity_flop_per_byte"] = part["flops"] / part["bytes"]
        part["achieved_flops_per_s"] = part["flops"] / part["time_s"]
        frames.append(part)
    return pd.concat(frames, ignore_index=True)


def roof_lines(roof_list: list[dict], lo: float, hi: float, n: int = 64) -> pd.DataFrame:
    """Sampled roof curves min(peak, intensity x bandwidth) over [lo, hi] FLOP/byte (log spaced)."""
    lo, hi = max(lo, 1e-3), max(hi, lo * 10)
    x = np.geomspace(lo / 2, hi * 2, n)
    rows = [pd.DataFrame({"roof": r["roof"], "intensity_flop_per_byte": x,
                          "flops_per_s": np.minimum(r["flops_per_s"], x * r["bytes_per_s"])}) for r in roof_list]
    return pd.concat(rows, ignore_index=True)


def breakdown_table(frame: pd.DataFrame) -> pd.DataFrame:
    """A per-op table for display: times in microseconds, share in percent."""
    view = frame[["op", "kind", "count", "flops", "bytes", "compute_s", "memory_s", "overhead_s", "comm_s",
                  "time_s", "bound", "share"]].copy()
    for col in ("compute_s", "memory_s", "overhead_s", "comm_s", "time_s"):
        view[col.replace("_s", "_us")] = view.pop(col) * 1e6
    view["share_pct"] = view.pop("share") * 100
    return view


def metric_texts(row: dict) -> dict[str, str]:
    """The headline numbers as the Plan page prints them."""
    return {
        "TTFT": _ms(row["ttft_s"]), "TPOT": _ms(row["tpot_s"]),
        "Throughput": f"{row['throughput_tok_s']:,.0f} tok/s",
        "Cost": f"${row['usd_per_mtok']:.3g}",
        "Memory": f"{row['total_bytes'] / 1e9:.1f} / {row['capacity_bytes'] / 1e9:.0f} GB",
        "Band": band_text(row),
        "Energy": (f"energy {row['joules_per_token']:.3g} J per generated token, {row['avg_power_w']:.0f} W average "
                   f"per device ({power_source_text(row['power_model'])})") if "joules_per_token" in row else "",
    }


def band_text(row: dict) -> str:
    """The prediction intervals (perfmodel.intervals) of TTFT and TPOT, or why there are none."""
    values = [row.get(k) for k in ("ttft_p10_s", "ttft_p90_s", "tpot_p10_s", "tpot_p90_s")]
    if any(v is None or not np.isfinite(v) for v in values):
        return "No prediction interval: this spec carries no validated error bands (datasheet roofline)."
    return (f"p10-p90 from validated residuals: TTFT {_ms(values[0])} - {_ms(values[1])}, "
            f"TPOT {_ms(values[2])} - {_ms(values[3])}")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


# -- compare ----------------------------------------------------------------------------------
def parse_int_list(text: str, field: str) -> list[int]:
    """'1, 8, 64' -> [1, 8, 64]; a value that is not a whole number >= 1 raises ValueError naming it."""
    items = [t for t in str(text).replace(";", ",").replace(" ", ",").split(",") if t]
    if not items:
        raise ValueError(f"{field}: give at least one value, e.g. '1, 8, 64'")
    out = []
    for item in items:
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"{field}: {item!r} is not a number") from None
        if not math.isfinite(value) or value < 1 or not value.is_integer():
            raise ValueError(f"{field}: {item} is invalid; must be a whole number >= 1")
        out.append(int(value))
    return sorted(set(out))


def compare(pairs: list[tuple[ModelSpec, Hardware]], grid: dict,
            engine: str = engines.DEFAULT_ENGINE) -> tuple[pd.DataFrame, list[str]]:
    """Every (model, device) pair over a grid of settings, one vectorized prediction per pair, each
    priced for `engine` (a perfmodel.engines profile name).

    grid: lists for batch, w_bits, kv_bits, tp and scalars prompt, gen, a_bits. Tensor-parallel
    degrees the pair cannot run (above the device's devices_per_node, or not dividing the model's
    heads: perfmodel.checks) are skipped (a note says so). Returns the rows and the notes (skipped
    pairs with the reason).
    """
    from perfmodel.checks import tp_allowed

    frames, notes = [], []
    for model, hw in pairs:
        tps = [t for t in grid["tp"] if tp_allowed(model, hw, t)]
        if len(tps) < len(grid["tp"]):
            skipped = ", ".join(str(t) for t in grid["tp"] if t not in tps)
            notes.append(f"{model.name} on {hw.name}: tp {skipped} skipped (above {hw.devices_per_node} devices per "
                         "node, or not dividing the heads)")
        if not tps:
            continue
        mesh = np.meshgrid(grid["batch"], grid["w_bits"], grid["kv_bits"], tps, indexing="ij")
        sc = Scenario(batch=mesh[0], w_bits=mesh[1], kv_bits=mesh[2], tp=mesh[3], prompt=grid["prompt"],
                      gen=grid["gen"], a_bits=grid.get("a_bits", 16))
        try:
            frame = perfmodel.predict(model, hw, sc, engine=engine).to_frame()
        except USER_ERRORS as err:
            notes.append(f"{model.name} on {hw.name}: {err}")
            continue
        frame.insert(0, "hardware", hw.name)
        frame.insert(0, "model", model.name)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(), notes
    out = pd.concat(frames, ignore_index=True)
    out["tokens_per_usd"] = 1e6 / out["usd_per_mtok"]
    out["config"] = (out["model"] + " @ " + out["hardware"] + " b" + out["batch"].astype(int).astype(str)
                     + " w" + out["w_bits"].map(_num) + " kv" + out["kv_bits"].map(_num)
                     + " tp" + out["tp"].astype(int).astype(str))
    return out, notes


def sweep_document(devices: list[str], models: list[str], grid: dict, latency: str,
                   engine: str = engines.DEFAULT_ENGINE) -> dict:
    """The Compare page's inputs as a `perfmodel sweep` spec (planning.sweep.SweepSpec.from_dict):
    the same grid and engine, only configurations that fit, and the throughput-vs-latency front."""
    axes = {"model": list(models), "hardware": list(devices)}
    axes |= {k: _plain(v) for k, v in grid.items()}
    return {"axes": axes, "engine": engines.load(engine).name, "constraints": ["fits"],
            "pareto": f"throughput_tok_s:max,{latency}:min"}


def pareto_mask(cost, value) -> np.ndarray:
    """True where a configuration is on the Pareto front of lower `cost`, higher `value` (exact;
    perfmodel.pareto's front, so the planner and `perfmodel sweep` agree)."""
    from perfmodel.pareto import pareto_mask as front

    return front(np.column_stack([np.asarray(cost, float), np.asarray(value, float)]), ["min", "max"])


# -- validation reports -----------------------------------------------------------------------
#: Column spellings a validation report may use; the first present wins.
MEASURED_COLUMNS = ("measured_s", "measured_time_s", "measured", "time_measured_s")
CLASS_COLUMNS = ("kernel_class", "class", "kind", "op_kind", "case_kind")
CASE_COLUMNS = ("case", "name", "case_id", "label")


def prediction_columns(frame: pd.DataFrame) -> list[str]:
    """Numeric columns holding predicted seconds: named predicted*, or <variant>_s with a
    <variant>_ratio or <variant>_ape column beside it (the schema `validate` writes:
    datasheet_s / datasheet_ratio, calibrated_s / calibrated_ratio)."""
    names = set(frame.columns)
    out = []
    for c in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[c]) or c.lower() in MEASURED_COLUMNS:
            continue
        paired = c.endswith("_s") and ({f"{c[:-2]}_ratio", f"{c[:-2]}_ape"} & names)
        if c.lower().startswith("predicted") or paired:
            out.append(c)
    return out


def read_report(frame: pd.DataFrame, origin: str = "report") -> tuple[pd.DataFrame, list[str]]:
    """Normalize a predicted-vs-measured table: columns case, kernel_class, measured_s and one
    column per prediction variant (`prediction_columns`).

    Raises ValueError naming what is missing; rows with a non-positive or missing time are dropped
    (failed cases are recorded with no time)."""
    cols = {c.lower(): c for c in frame.columns}
    measured = next((cols[c] for c in MEASURED_COLUMNS if c in cols), None)
    if measured is None:
        raise ValueError(f"{origin}: no measured-time column; expected one of {', '.join(MEASURED_COLUMNS)}")
    variants = prediction_columns(frame)
    if not variants:
        raise ValueError(f"{origin}: no prediction column: expected numeric columns named predicted* or "
                         "<variant>_s beside <variant>_ratio (e.g. calibrated_s and calibrated_ratio)")
    klass = next((cols[c] for c in CLASS_COLUMNS if c in cols), None)
    case = next((cols[c] for c in CASE_COLUMNS if c in cols), None)
    out = pd.DataFrame({
        "case": frame[case].astype(str) if case else frame.index.astype(str),
        "kernel_class": frame[klass].astype(str) if klass else "all",
        "measured_s": pd.to_numeric(frame[measured], errors="coerce"),
    })
    for v in variants:
        out[v] = pd.to_numeric(frame[v], errors="coerce")
    for extra in ("split", "status"):
        if extra in cols:
            out[extra] = frame[cols[extra]].astype(str)
    ok = (out["measured_s"] > 0) & out[variants].gt(0).all(axis=1)
    return out[ok].reset_index(drop=True), variants


def error_stats(report: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    """Per kernel class and prediction variant: cases, median and 90th-percentile absolute
    percentage error, and the median predicted/measured ratio (bias: < 1 means underpredicted).
    Pooled rows: "all", and "all kernels" (without whole-model steps) when both kinds are present."""
    rows = []
    groups = list(report.groupby("kernel_class")) + [("all", report)]
    steps = report["kernel_class"].str.startswith("model_step")
    if steps.any() and not steps.all():  # whole-model steps are not kernels; validate's reports pool without them
        # nor eagerly launched kernels where the run timed kernels in CUDA graphs (their time is the host's)
        groups.append(("all kernels", report[~steps & ~report["kernel_class"].str.endswith("(eager)")]))
    for klass, group in groups:
        for v in variants:
            ratio = group[v] / group["measured_s"]
            ape = (ratio - 1).abs() * 100
            rows.append({"kernel_class": klass, "prediction": v, "cases": len(group),
                         "median_ape_pct": ape.median(), "p90_ape_pct": ape.quantile(0.9),
                         "median_ratio": ratio.median()})
    return pd.DataFrame(rows)
