"""Frozen hardware specs in SI units, built from YAML presets with a source for every number.

A `Hardware` is one accelerator (or CPU host, or unified-memory SoC) together with the node around it:
host DRAM, flash, the host link and the device-to-device link. Numbers are datasheet peaks; a
`Calibration`, when present, holds what measurement on a real device found (achieved rates, kernel
floors, framework overhead) and the cost model prefers it (validate/ writes such specs).

YAML leaf syntax: ``<number> <unit> [tag]`` where ``tag`` names an entry of the file's ``sources``
map, e.g. ``bandwidth: 4.8 TB/s [ds]``. Counts are written ``<int> [tag]``.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import field
from pathlib import Path
from typing import Any, Mapping


from hardware import fields, inputs, units
from hardware.units import UnitError

#: The schema's constants live with its table (hardware.fields); named here too, where users import them.
DTYPES, KINDS, PRICE_BASES, DEVICE_LINK_KINDS = fields.DTYPES, fields.KINDS, fields.PRICE_BASES, fields.DEVICE_LINK_KINDS
#: Whole-number fields of a spec and their allowed ranges.
COUNT_RANGES = fields.count_ranges(fields.HARDWARE)
#: Parameters of one attention kernel family in a calibration (Calibration.attention_kernels).
ATTENTION_KERNEL_FIELDS = tuple(f.attr for f in fields.ATTENTION)


class SpecError(ValueError):
    """A hardware spec with a missing, malformed or impossible field; the message names the field."""


@fields.schema_dataclass(fields.CALIBRATION, source=("str", ""))
class Calibration:
    """What measurement on a real device found; every rate here is achieved, not peak.

    Fitted by `validate.calibrate` (see its docstrings for the fitting method). matmul_flops_per_s
    is keyed by dtype (bf16, fp16, fp32, fp8) and by weight-only formats as PyTorch's own packed
    kernels run them (w8a16: torch._weight_int8pack_mm, w4a16: torch._weight_int4pack_mm; bf16
    activations), with dequant_bytes_per_s their weight-streaming rates. Fused serving kernels
    (the default) run weight-only formats at the bf16 rate.

    Device side: GEMM time = padded FLOPs / rate, with tile_m x tile_n output tiles in waves over
    the SMs and split-K below split_k_min reduction length (skinny GEMMs, m <= 64, run GEMV-like
    kernels with gemv_tile_n output columns per block, each block streaming gemv_bytes_per_s for
    its dtype: cuBLAS runs other kernels for fp32 and fp8); a memory-bound kernel reads at
    memory_read_bytes_per_s (streams that read and write equally: memory_bytes_per_s), but a kernel
    with few thread blocks reaches only sm_bytes_per_s per block, a GEMM writes its output at
    gemm_write_bytes_per_s (0: the read rate), and a GEMM kernel's operands start
    streaming gemm_latency_s after it starts (its fill latency); unfused normalisation chains (fp32
    upcasts, separate reductions) reach norm_bytes_per_s, PyTorch's row-per-block LayerNorm kernel
    adds one row's time (row_norm_latency_s + the row's bytes at row_norm_bytes_per_s, one block's
    rate) to its stream, and tensor concatenation (a KV cache grown by torch.cat) reaches
    concat_bytes_per_s; every kernel adds
    kernel_overhead_s. Host side (eager frameworks): every op costs dispatch_s of CPU time, every
    decoder layer layer_overhead_s more and every step step_overhead_s; the device waits for the host
    when the host is slower.

    attention_kernels: per attention kernel family an engine profile can name (sdpa, flash,
    vllm, trtllm, sglang), {flops_fraction, overhead_s, read_bytes_per_s, unit_s}: its fraction of
    the bf16 GEMM rate, its floor per call beyond kernel_overhead_s, its KV read bandwidth, and the
    time one work unit (a sequence's kv head and 128-query tile: Q load, softmax state, output
    write) holds an SM; optionally row_s and key_s (a query row's and a cached key's time per
    unit), stream_latency_s (the KV stream's fixed latency), scores_per_s (the softmax's rate in
    query-key scores): perfmodel.roofline's attention branch gives each its formula and source. A
    family not listed runs at attention_flops_fraction / attention_overhead_s /
    memory_read_bytes_per_s with no work-unit term.
    custom_allreduce_*: the engines' custom all-reduce (perfmodel.collectives).
    act_quant_engine_latency_s / act_quant_engine_row_s: per engine, the fixed time and the time per
    row of its own dynamic fp8 activation quantization (perfmodel.roofline.engine_quant_time_s).
    error_bands: per residual class (perfmodel.intervals), {p10, p90} of measured / predicted on
    the validation's evaluation split: the prediction intervals every predicted time carries.
    sustained_flops_per_s: per dtype, the highest GEMM rate the board's power limit sustains (an
    H200 at 700 W drops its SM clock from 1980 to about 1500 MHz under large bf16 GEMMs: the
    power roof; smaller GEMMs run at matmul_flops_per_s x their wave efficiency, below it).
    reduction_bytes_per_s: whole-tensor reductions (per-tensor amax before fp8 quantization) as
    compilers emit them; grouped_bytes_per_s: weight streaming of grouped (MoE) GEMM kernels;
    moe_routing_s: fixed time of one MoE layer's routing (top-k, sort, permutation kernels).
    moe_kernel_bytes_per_s / moe_kernel_latency_s: per fused-MoE kernel family (Engine.moe_kernel),
    its grouped GEMMs' weight streaming and its fixed time per layer (routing, sorting and launches),
    in place of grouped_bytes_per_s and moe_routing_s for the ops that family runs.
    idle_power_w, joules_per_flop (per dtype class: bf16, fp8, fp32), joules_per_hbm_byte: the
    board power model of perfmodel.energy (P = idle + J/FLOP x FLOP/s + J/byte x HBM byte/s),
    YAML calibration.power with pJ/FLOP and pJ/B. sustained_fraction (per dtype class): the
    fraction of its burst tensor-core rate (the rates above, timed in short bursts) a compute-bound
    kernel keeps once the board sits at its power limit (an H200 at 700 W: 0.89-0.91 for bf16 and
    fp8 GEMMs of every shape measured, within ~0.2 s of continuous load); perfmodel.rates applies it
    to every step and serving prediction, and `at_burst` drops it for isolated-kernel timings.
    source: the citation of the measurement (the YAML tag [measured]).

    Fields: the rows of hardware.fields.CALIBRATION (YAML key, attribute, unit, default).
    """


    def __post_init__(self):
        _private_copies(self, fields.CALIBRATION)
        for f in fields.CALIBRATION:
            for key, rate in getattr(self, f.attr).items() if f.keyed else ():
                _check_positive(rate, f"{f.key}.{key}")
                if f.limits and rate > f.limits[1]:
                    raise SpecError(f"{f.key}.{key}: {rate!r} is out of range; allowed above "
                                    f"{f.limits[0]:g} up to {f.limits[1]:g}")
        for cls, q in self.error_bands.items():
            if set(q) != {"p10", "p90"} or not 0 < q["p10"] <= q["p90"] or not math.isfinite(q["p90"]):
                raise SpecError(f"calibration.error_bands.{cls}: {q!r} must be {{p10, p90}} with 0 < p10 <= p90")
        for family, params in self.attention_kernels.items():
            unknown = set(params) - set(ATTENTION_KERNEL_FIELDS)
            if unknown:
                raise SpecError(f"calibration.attention_kernels.{family}: unknown field {sorted(unknown)[0]!r}; "
                                f"known: {', '.join(ATTENTION_KERNEL_FIELDS)}")
            for key, value in params.items():
                (_check_positive if key != "overhead_s" else _check_non_negative)(
                    value, f"calibration.attention_kernels.{family}.{key}")
        for f in fields.CALIBRATION:
            if f.type == "float" and f.zero_ok:
                _check_non_negative(getattr(self, f.attr), f"calibration.{f.attr}")
            elif f.type == "float":
                _check_positive(getattr(self, f.attr), f.key)
        for f in fields.CALIBRATION:
            if f.unit == "count" and int(getattr(self, f.attr)) < f.limits[0]:
                rule = "must be zero or more" if f.limits[0] == 0 else "must be a positive integer"
                raise SpecError(f"calibration.{f.attr}: {getattr(self, f.attr)!r} {rule}")
            if f.unit == "count" and int(getattr(self, f.attr)) > f.limits[1]:  # as Hardware's counts say it
                raise SpecError(f"calibration.{f.attr}: {getattr(self, f.attr)!r} must be a whole number from "
                                f"{f.limits[0]} to {f.limits[1]}")

    @property
    def read_bytes_per_s(self) -> float:
        """Bandwidth of read-dominated kernels (GEMM weights, KV-cache reads)."""
        return self.memory_read_bytes_per_s or self.memory_bytes_per_s

    def attention_kernel(self, family: str, head_dim: float = 0.0) -> tuple:
        """(fraction of the bf16 GEMM rate, floor per call, KV read bandwidth, time of one work unit
        on one SM (plus unit_head_dim_s per element of `head_dim`: the bytes a unit moves whatever
        its context grow with it), time one query row adds on one SM, time one cached key adds to
        a unit, fixed latency of the KV stream, softmax rate in query-key scores per second (0:
        none), speed of a lone unit on its SM relative to its fair share (0: no longest-unit
        bound), time a split-KV kernel's combine pass takes per block it combines (0: none), rate
        one of its blocks streams its share of the cache (0: none)) of an attention kernel, named "<family>-<phase>" (prefill and decode run different kernels:
        "vllm-decode"), falling back to the family's entry, then to the spec's
        generic attention parameters (and no work-unit, row or key term)."""
        params = self._attention_family(family)
        unit_s = params.get("unit_s", 0.0) + params.get("unit_head_dim_s", 0.0) * head_dim
        return (params.get("flops_fraction", self.attention_flops_fraction),
                params.get("overhead_s", self.attention_overhead_s),
                params.get("read_bytes_per_s", self.read_bytes_per_s), unit_s,
                params.get("row_s", 0.0), params.get("key_s", 0.0), params.get("stream_latency_s", 0.0),
                params.get("scores_per_s", 0.0), params.get("unit_speedup", 0.0), params.get("combine_s", 0.0),
                params.get("block_bytes_per_s", 0.0))

    def attention_l2_bytes_per_s(self, family: str) -> float:
        """The rate an attention kernel family streams a cache held in L2 (its `l2_bytes_per_s`,
        found as `attention_kernel` finds a family), 0 where not fitted."""
        return float(self._attention_family(family).get("l2_bytes_per_s", 0.0))

    def _attention_family(self, family: str) -> Mapping:
        """A kernel family's fitted parameters: its "<family>-<phase>" entry, else the family's own
        entry, else none."""
        return self.attention_kernels.get(family) or self.attention_kernels.get(family.rsplit("-", 1)[0], {})


@fields.schema_dataclass(fields.HARDWARE, calibration=("Calibration | None", None),
                         sources=("Mapping[str, str]", field(default_factory=dict)))
class Hardware:
    """One device and its node, in SI units. Build with `Hardware.from_yaml` or `hardware.load`.

    Fields: the rows of hardware.fields.HARDWARE (YAML key, attribute, unit, default), plus
    `calibration` (a Calibration or None) and `sources` (YAML key -> citation of its value)."""


    def __post_init__(self):
        _private_copies(self, fields.HARDWARE)
        object.__setattr__(self, "sources", dict(self.sources))
        if self.kind not in KINDS:
            raise SpecError(f"kind: {self.kind!r} is not one of {KINDS}")
        if self.architecture and self.architecture not in fields.ARCHITECTURES:
            raise SpecError(f"architecture: {self.architecture!r} is not one of {fields.ARCHITECTURES}")
        if self.device_link not in DEVICE_LINK_KINDS:
            raise SpecError(f"device_link.kind: {self.device_link!r} is not one of {DEVICE_LINK_KINDS}")
        if not self.flops_per_s:
            raise SpecError("compute: at least one dtype rate is required")
        for dtype, rate in {**self.flops_per_s, **self.sparse_flops_per_s}.items():
            if dtype not in DTYPES:
                raise SpecError(f"compute.{dtype}: unknown dtype; known: {DTYPES}")
            _check_positive(rate, f"compute.{dtype}")
        for f in fields.HARDWARE:
            if f.is_si and not f.keyed:
                (_check_non_negative if f.zero_ok else _check_positive)(getattr(self, f.attr), f.attr)
        _check_ranges(self)

    # -- named constructors -------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path) -> "Hardware":
        """Read a spec YAML file (schema: hardware/presets/*.yaml)."""
        try:
            data = inputs.load_yaml(path, "hardware spec")
        except inputs.InputError as err:
            raise SpecError(str(err)) from None
        return cls.from_dict(data, origin=Path(path).name)

    @classmethod
    def from_dict(cls, data: Any, origin: str = "spec") -> "Hardware":
        """Build from the YAML structure (already loaded); human units are parsed here."""
        if not isinstance(data, dict):
            raise SpecError(f"{origin}: expected a mapping of fields, got {type(data).__name__}")
        return cls(**_fields_from_yaml(SpecReader(data, origin)))

    # -- derived views ------------------------------------------------------------------------
    def peak_flops_per_s(self, dtype: str) -> float:
        """Dense peak FLOP/s for `dtype`, falling back to the nearest wider type the device has.

        A device without native fp8 (A100) runs fp8 models by upcasting to bf16/fp16, so it gets
        that rate; int4 without a native path runs at the int8 or fp16 rate (weight-only kernels).
        """
        for candidate in _DTYPE_FALLBACK[dtype]:
            if candidate in self.flops_per_s:
                return self.flops_per_s[candidate]
        raise SpecError(f"compute: {self.name} lists no rate usable for dtype {dtype!r}")

    @property
    def is_calibrated(self) -> bool:
        return self.calibration is not None

    def datasheet(self) -> "Hardware":
        """The same device without calibration: a pure datasheet roofline."""
        return dataclasses.replace(self, calibration=None)

    def summary(self) -> dict:
        """One flat row for catalog tables (SI units)."""
        return {
            "name": self.name, "title": self.title, "kind": self.kind,
            "bf16_flops_per_s": self.flops_per_s.get("bf16", math.nan),
            "fp8_flops_per_s": self.flops_per_s.get("fp8", math.nan),
            "hbm_capacity_bytes": self.hbm_capacity_bytes, "hbm_bytes_per_s": self.hbm_bytes_per_s,
            "host_link_bytes_per_s": self.host_link_bytes_per_s,
            "device_link": self.device_link, "device_link_bytes_per_s": self.device_link_bytes_per_s,
            "devices_per_node": self.devices_per_node,
            "price_per_hour_usd": self.price_per_hour_usd, "power_w": self.power_w,
            "calibrated": self.is_calibrated,
        }


_DTYPE_FALLBACK = {
    "fp32": ("fp32",),
    "tf32": ("tf32", "fp32"),
    "bf16": ("bf16", "fp16", "fp32"),
    "fp16": ("fp16", "bf16", "fp32"),
    "fp8": ("fp8", "int8", "bf16", "fp16", "fp32"),
    "int8": ("int8", "fp8", "bf16", "fp16", "fp32"),
    "int4": ("int4", "int8", "fp8", "bf16", "fp16", "fp32"),
    "fp4": ("fp4", "fp8", "int8", "bf16", "fp16", "fp32"),
}


def _private_copies(spec, table) -> None:
    """Copy every mapping field, so a caller's dict changing later cannot change the frozen spec."""
    for f in table:
        value = getattr(spec, f.attr)
        if f.unit in ("bands", "kernels"):
            object.__setattr__(spec, f.attr, {name: dict(v) for name, v in value.items()})
        elif f.keyed:
            object.__setattr__(spec, f.attr, dict(value))


def _check_ranges(hw: "Hardware") -> None:
    """Every SI field inside units.RANGES (zero allowed where the field may be absent), counts whole and
    in COUNT_RANGES, a known price basis: a spec built from Python gets the loader's limits."""
    if not isinstance(hw.name, str) or not hw.name.strip() or len(hw.name) > 200:
        raise SpecError(f"name: {hw.name!r} must be a non-empty string of at most 200 characters")
    if hw.price_basis not in PRICE_BASES:
        raise SpecError(f"price_basis: {hw.price_basis!r} is not one of {PRICE_BASES}")
    rates = {f"compute.{d}": (r, "flops_per_s") for d, r in {**hw.flops_per_s, **hw.sparse_flops_per_s}.items()}
    rates.update({f.attr: (getattr(hw, f.attr), f.unit) for f in fields.HARDWARE if f.is_si and not f.keyed})
    for name, (value, dimension) in rates.items():
        if value != 0:
            try:
                units.check_range(float(value), dimension, name)
            except UnitError as err:
                raise SpecError(str(err)) from None
    for name, (low, high) in COUNT_RANGES.items():
        value = getattr(hw, name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise SpecError(f"{name}: {value!r} must be a whole number from {low} to {high}")


def _check_positive(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise SpecError(f"{name}: {value!r} must be a finite number greater than zero")


def _check_non_negative(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise SpecError(f"{name}: {value!r} must be a finite number, zero or more")


_LEAF = re.compile(r"^\s*(?P<quantity>[^\[\]]+?)\s*\[(?P<tag>[^\]]+)\]\s*$")


class SpecReader:
    """Reads tagged leaves (``4.8 TB/s [ds]``) out of a loaded YAML mapping, recording sources.

    Public so that a form can check one field at a time with the loader's own messages
    (`quantity(path, dimension)` raises SpecError naming the field and the value)."""

    def __init__(self, data: dict, origin: str):
        self.data, self.origin = data, origin
        self.tags = data.get("sources") or {}
        if not isinstance(self.tags, dict):
            raise SpecError(f"{origin}: sources must map tags to citations")
        self.sources: dict[str, str] = {}

    def node(self, path: str, required: bool = True) -> Any:
        value: Any = self.data
        for key in path.split("."):
            if not isinstance(value, dict) or key not in value or value[key] is None:
                if required:
                    raise SpecError(f"{self.origin}: missing field {path!r}")
                return None
            value = value[key]
        return value

    def quantity(self, path: str, dimension: str | None, required: bool = True, default=None,
                 whole: bool | None = None):
        """A tagged leaf: a quantity of `dimension` with its unit, or (dimension None) a plain number
        > 0, whole for the count fields (_count_paths: cores, devices, lanes, tiles...)."""
        raw = self.node(path, required)
        if raw is None:
            return default
        text, tag = self._split(path, raw)
        if dimension is None:
            whole = path in _count_paths() if whole is None else whole
            try:
                value = inputs.parse_number(text, path, 0.0, 1e6, whole=whole, low_open=True)
            except inputs.InputError as err:
                raise SpecError(f"{self.origin}: {err}") from None
        else:
            try:
                value = units.parse(text, dimension, path)
            except UnitError as err:
                raise SpecError(f"{self.origin}: {err}") from None
        self.sources[path] = self.tags[tag]
        return value

    def _split(self, path: str, raw: Any) -> tuple[str, str]:
        match = _LEAF.match(str(raw))
        if not match:
            raise SpecError(f"{self.origin}: {path}: {raw!r} needs a source tag, e.g. '4.8 TB/s [ds]'")
        tag = match["tag"].strip()
        if tag not in self.tags:
            raise SpecError(f"{self.origin}: {path}: source tag [{tag}] is not listed under sources")
        return match["quantity"].strip(), tag


def _count_paths() -> set[str]:
    """YAML paths of the whole-number fields (the "count" rows of the schema table)."""
    return {f.key for f in (*fields.HARDWARE, *fields.CALIBRATION) if f.unit == "count"}


def _read_field(r: SpecReader, f: fields.Field, has_link: bool):
    """One row of the schema table read from the YAML (human units parsed here)."""
    if f.keyed:
        entries = r.node(f.key, required=False) or {}
        if f.required and (not isinstance(entries, dict) or not entries):
            raise SpecError(f"{r.origin}: {f.key} must list at least one dtype rate")
        return {k: r.quantity(f"{f.key}.{k}", f.dimension) for k in entries}
    if f.unit in ("text", "choice"):
        return str(r.node(f.key, required=f.required) or f.default)
    required = f.required or (f.required_with_link and has_link)
    value = r.quantity(f.key, f.dimension, required=required, default=f.default)
    return int(value) if f.unit == "count" else value


def _fields_from_yaml(r: SpecReader) -> dict:
    compute = r.node("compute")
    if not isinstance(compute, dict) or not compute:
        raise SpecError(f"{r.origin}: compute must list at least one dtype rate")
    has_link = str(r.node("device_link.kind", required=False) or "none") != "none"
    values = {f.attr: _read_field(r, f, has_link) for f in fields.HARDWARE}
    values["title"] = values["title"] or values["name"]
    values["calibration"] = _calibration_from_yaml(r)
    values["sources"] = dict(r.sources)
    return values


def _calibration_from_yaml(r: SpecReader) -> Calibration | None:
    if r.node("calibration", required=False) is None:
        return None
    matmul = r.node("calibration.matmul")
    if not isinstance(matmul, dict) or not matmul:
        raise SpecError(f"{r.origin}: calibration.matmul must list at least one dtype rate")
    values = {}
    for f in fields.CALIBRATION:
        if f.unit == "bands":
            values[f.attr] = _read_bands(r, f.key)
        elif f.unit == "kernels":
            values[f.attr] = _read_kernels(r, f.key)
        elif f.keyed:
            values[f.attr] = _read_field(r, f, False)
        elif (value := r.quantity(f.key, f.dimension, required=f.required, default=None)) is not None:
            values[f.attr] = int(value) if f.unit == "count" else value
    return Calibration(**values, source=str(r.tags.get("measured", "")))


def calibration_section(data: dict, origin: str, section: str, whole: bool = False) -> dict:
    """The Calibration fields of one section of `calibration` read from a file of its own (e.g.
    {"power": {...}} written by validate/reports/power/fit_power.py), by the rows of the field table
    under "calibration.<section>." (the spec's own units and checks), or (`whole`) the row whose key
    is the section itself (e.g. "attention_kernels"). Its tags need no sources list."""
    values = {}
    prefix = f"calibration.{section}" + ("" if whole else ".")
    tags = {match["tag"].strip() for match in (_LEAF.match(str(v)) for v in _leaves(data)) if match}
    reader = SpecReader({"sources": {t: origin for t in tags}, "calibration": data}, origin)
    for f in fields.CALIBRATION:
        if (f.key == prefix) if whole else f.key.startswith(prefix):
            value = _read_kernels(reader, f.key) if f.unit == "kernels" else \
                _read_bands(reader, f.key) if f.unit == "bands" else _read_field(reader, f, False)
            if value not in (None, {}):
                values[f.attr] = value
    if not values:
        raise SpecError(f"{origin}: no calibration.{section} fields (expected {section}: with "
                        + ", ".join(f.key[len(prefix):] for f in fields.CALIBRATION if f.key.startswith(prefix)) + ")")
    return values


def _leaves(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _leaves(value)
    else:
        yield node


def _read_bands(r: SpecReader, key: str) -> dict:
    bands = r.node(key, required=False) or {}
    if not isinstance(bands, dict):
        raise SpecError(f"{r.origin}: {key} must map residual classes to p10 and p90")
    return {cls: {q: r.quantity(f"{key}.{cls}.{q}", None) for q in fields.BAND_QUANTILES} for cls in bands}


def _read_kernels(r: SpecReader, key: str) -> dict:
    families = r.node(key, required=False) or {}
    if not isinstance(families, dict):
        raise SpecError(f"{r.origin}: {key} must map kernel families to parameters")
    return {family: {f.attr: value for f in fields.ATTENTION
                     if (value := r.quantity(f"{key}.{family}.{f.key}", f.dimension, required=False)) is not None}
            for family in families}


# -- writing specs back to YAML (the one writer: presets, calibrated specs, the planner) -------------

def to_yaml_dict(hw: Hardware, style: str = "file") -> dict:
    """The spec in the preset YAML schema (human units, a source tag on every number), row by row of
    hardware.fields: reading it back with `Hardware.from_dict` gives an equal spec.

    style "file" (presets, validate's calibrated specs): each number in its row's unit to 12
    significant digits, tagged with its own source (sources deduplicated as s1, s2, ...; the
    calibration's [measured]). style "planner" (the app's exports and form): SI prefixes, 6 digits,
    every value tagged [user], no calibration (a calibrated device is referred to by name)."""
    if style not in ("file", "planner"):
        raise ValueError(f"style: {style!r} is not 'file' or 'planner'")
    planner = style == "planner"
    tags: dict[str, str] = {PLANNER_TAG: PLANNER_SOURCE} if planner else {}

    def tag(path: str) -> str:
        if planner:
            return PLANNER_TAG
        source = hw.sources.get(path, "unspecified")
        for key, value in tags.items():
            if value == source:
                return key
        key = f"s{len(tags) + 1}"
        tags[key] = source
        return key

    def text(f: fields.Field, value) -> str:
        return fields.human_text(value, f.unit) if planner else f.file_text(value)

    out: dict = {}
    has_link = hw.device_link != "none"
    for f in fields.HARDWARE:
        value = getattr(hw, f.attr)
        if f.key == "kind":  # the sources map follows the header fields, as in the presets
            out.update(kind=value, sources=tags)
        elif not f.written(value, has_link):
            continue
        elif f.unit in ("text", "choice"):
            _put(out, f.key, value)
        elif f.keyed:
            for key, rate in value.items():
                _put(out, f"{f.key}.{key}", f"{text(f, rate)} [{tag(f'{f.key}.{key}')}]")
        else:
            _put(out, f.key, f"{text(f, value)} [{tag(f.key)}]")
    if hw.calibration is not None and not planner:
        tags["measured"] = hw.calibration.source or "measured by validate"
        out["calibration"] = _calibration_yaml(hw.calibration, lambda path: tag(path) if path in hw.sources
                                               else "measured")
    return out


#: Tag and citation of values a person typed into the planner (every spec value must name a source).
PLANNER_TAG = "user"
PLANNER_SOURCE = "entered in the perfmodel planner"


def _put(out: dict, path: str, value) -> None:
    *parents, leaf = path.split(".")
    for key in parents:
        out = out.setdefault(key, {})
    out[leaf] = value


def _calibration_yaml(cal: Calibration, tag) -> dict:
    section: dict = {}
    prefix = "calibration."
    for f in fields.CALIBRATION:
        value, key = getattr(cal, f.attr), f.key[len(prefix):]
        if not f.written(value, False):
            continue
        if f.unit == "bands":
            _put(section, key, {cls: {q: f"{v:.{f.digits}g} [{tag(f'{f.key}.{cls}.{q}')}]" for q, v in band.items()}
                            for cls, band in value.items()})
        elif f.unit == "kernels":
            _put(section, key, {family: {a.key: f"{a.file_text(params[a.attr])} [{tag(f'{f.key}.{family}.{a.key}')}]"
                                     for a in fields.ATTENTION if params.get(a.attr, 0) > 0}
                            for family, params in value.items()})
        elif f.keyed:
            _put(section, key, {k: f"{f.file_text(v)} [{tag(f'{f.key}.{k}')}]" for k, v in value.items()})
        else:
            _put(section, key, f"{f.file_text(value)} [{tag(f.key)}]")
    return section
