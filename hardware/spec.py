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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


from hardware import inputs, units
from hardware.units import UnitError

#: Compute dtypes a spec may list; int4 and fp4 only where the hardware has a native path.
DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4", "fp4")
KINDS = ("gpu", "cpu", "soc")
#: What a preset's price_per_hour is: a cloud on-demand list price per device-hour ("cloud"), or the
#: card's purchase price amortised over three years with no host, power or margin ("purchase-3y").
#: Rankings compare prices of one basis only.
PRICE_BASES = ("cloud", "purchase-3y")
#: Whole-number fields of a spec and their allowed ranges.
COUNT_RANGES = {"cpu_cores": (1, 10**6), "devices_per_node": (1, 1024), "compute_units": (1, 10**6),
                "pcie_gen": (0, 16), "pcie_lanes": (0, 64)}
#: Parameters of one attention kernel family in a calibration (Calibration.attention_kernels).
ATTENTION_KERNEL_FIELDS = ("flops_fraction", "overhead_s", "read_bytes_per_s", "unit_s", "row_s")
DEVICE_LINK_KINDS = ("nvlink2", "nvlink3", "nvlink4", "nvlink5", "infinity-fabric", "pcie", "none")


class SpecError(ValueError):
    """A hardware spec with a missing, malformed or impossible field; the message names the field."""


@dataclass(frozen=True)
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
    with few thread blocks reaches only sm_bytes_per_s per block; normalisation kernels (row
    reductions, unfused fp32 upcasts) reach norm_bytes_per_s and tensor concatenation (a KV cache
    grown by torch.cat) concat_bytes_per_s; every kernel adds
    kernel_overhead_s. Host side (eager frameworks): every op costs dispatch_s of CPU time, every
    decoder layer layer_overhead_s more and every step step_overhead_s; the device waits for the host
    when the host is slower.

    attention_kernels: per attention kernel family an engine profile can name (sdpa, flash,
    vllm, trtllm, sglang), {flops_fraction, overhead_s, read_bytes_per_s, unit_s}: its fraction of
    the bf16 GEMM rate, its floor per call beyond kernel_overhead_s, its KV read bandwidth, and the
    time one work unit (a sequence's kv head and 128-query tile: Q load, softmax state, output
    write) holds an SM; a family not listed runs at attention_flops_fraction /
    attention_overhead_s / memory_read_bytes_per_s with no work-unit term.
    custom_allreduce_*: the engines' custom all-reduce (perfmodel.collectives).
    error_bands: per residual class (perfmodel.intervals), {p10, p90} of measured / predicted on
    the validation's evaluation split: the prediction intervals every predicted time carries.
    sustained_flops_per_s: per dtype, the highest GEMM rate the board's power limit sustains (an
    H200 at 700 W drops its SM clock from 1980 to about 1500 MHz under large bf16 GEMMs: the
    power roof; smaller GEMMs run at matmul_flops_per_s x their wave efficiency, below it).
    reduction_bytes_per_s: whole-tensor reductions (per-tensor amax before fp8 quantization) as
    compilers emit them; grouped_bytes_per_s: weight streaming of grouped (MoE) GEMM kernels;
    moe_routing_s: fixed time of one MoE layer's routing (top-k, sort, permutation kernels).
    """

    matmul_flops_per_s: Mapping[str, float]
    memory_bytes_per_s: float
    kernel_overhead_s: float
    dequant_bytes_per_s: Mapping[str, float] = field(default_factory=dict)
    gemv_bytes_per_s: Mapping[str, float] = field(default_factory=dict)
    memory_read_bytes_per_s: float = 0.0
    norm_bytes_per_s: float = 0.0
    concat_bytes_per_s: float = 0.0
    sm_bytes_per_s: float = 0.0
    split_k_min: int = 1
    dispatch_s: float = 0.0
    layer_overhead_s: float = 0.0
    step_overhead_s: float = 0.0
    attention_flops_fraction: float = 1.0
    attention_overhead_s: float = 0.0
    tile_m: int = 1
    tile_n: int = 1
    gemv_tile_n: int = 0
    host_to_device_bytes_per_s: float = 0.0
    device_to_host_bytes_per_s: float = 0.0
    host_to_device_pageable_bytes_per_s: float = 0.0
    device_to_host_pageable_bytes_per_s: float = 0.0
    transfer_latency_s: float = 0.0
    attention_kernels: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    custom_allreduce_latency_s: float = 0.0
    custom_allreduce_bytes_per_s: float = 0.0
    error_bands: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    sustained_flops_per_s: Mapping[str, float] = field(default_factory=dict)
    reduction_bytes_per_s: float = 0.0
    grouped_bytes_per_s: float = 0.0
    moe_routing_s: float = 0.0
    source: str = ""

    def __post_init__(self):
        object.__setattr__(self, "matmul_flops_per_s", dict(self.matmul_flops_per_s))  # private copies
        object.__setattr__(self, "dequant_bytes_per_s", dict(self.dequant_bytes_per_s))
        object.__setattr__(self, "gemv_bytes_per_s", dict(self.gemv_bytes_per_s))
        object.__setattr__(self, "attention_kernels", {name: dict(v) for name, v in self.attention_kernels.items()})
        object.__setattr__(self, "error_bands", {name: dict(v) for name, v in self.error_bands.items()})
        object.__setattr__(self, "sustained_flops_per_s", dict(self.sustained_flops_per_s))
        for dtype, rate in self.sustained_flops_per_s.items():
            _check_positive(rate, f"calibration.sustained_matmul.{dtype}")
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
        for fmt, rate in self.dequant_bytes_per_s.items():
            _check_positive(rate, f"calibration.dequant.{fmt}")
        for dtype, rate in self.gemv_bytes_per_s.items():
            _check_positive(rate, f"calibration.gemv.{dtype}")
        for dtype, rate in self.matmul_flops_per_s.items():
            _check_positive(rate, f"calibration.matmul.{dtype}")
        _check_positive(self.memory_bytes_per_s, "calibration.memory_bandwidth")
        for f in dataclasses.fields(self):
            if f.type == "float" and f.name != "memory_bytes_per_s":
                _check_non_negative(getattr(self, f.name), f"calibration.{f.name}")
        _check_positive(self.attention_flops_fraction, "calibration.attention_flops_fraction")
        if int(self.gemv_tile_n) < 0:
            raise SpecError(f"calibration.gemv_tile_n: {self.gemv_tile_n!r} must be zero or more")
        for name in ("tile_m", "tile_n", "split_k_min"):
            if int(getattr(self, name)) < 1:
                raise SpecError(f"calibration.{name}: {getattr(self, name)!r} must be a positive integer")

    @property
    def read_bytes_per_s(self) -> float:
        """Bandwidth of read-dominated kernels (GEMM weights, KV-cache reads)."""
        return self.memory_read_bytes_per_s or self.memory_bytes_per_s

    def attention_kernel(self, family: str) -> tuple[float, float, float, float, float]:
        """(fraction of the bf16 GEMM rate, floor per call, KV read bandwidth, time of one work unit
        on one SM, time one query row adds on one SM) of an attention kernel, named
        "<family>-<phase>" (prefill and decode run different kernels: "vllm-decode"), falling back
        to the family's entry, then to the spec's generic attention parameters (and no work-unit or
        row term)."""
        params = self.attention_kernels.get(family) or self.attention_kernels.get(family.rsplit("-", 1)[0], {})
        return (params.get("flops_fraction", self.attention_flops_fraction),
                params.get("overhead_s", self.attention_overhead_s),
                params.get("read_bytes_per_s", self.read_bytes_per_s), params.get("unit_s", 0.0),
                params.get("row_s", 0.0))


@dataclass(frozen=True)
class Hardware:
    """One device and its node, in SI units. Build with `Hardware.from_yaml` or `hardware.load`."""

    name: str
    title: str
    kind: str
    flops_per_s: Mapping[str, float]
    hbm_capacity_bytes: float
    hbm_bytes_per_s: float
    dram_capacity_bytes: float
    dram_bytes_per_s: float
    flash_capacity_bytes: float
    flash_read_bytes_per_s: float
    flash_latency_s: float
    host_link_bytes_per_s: float
    host_link_latency_s: float
    cpu_flops_per_s: float
    cpu_cores: int
    price_per_hour_usd: float
    power_w: float
    devices_per_node: int = 1
    compute_units: int = 1
    pcie_gen: int = 0
    pcie_lanes: int = 0
    device_link: str = "none"
    device_link_bytes_per_s: float = 0.0
    device_link_latency_s: float = 0.0
    sparse_flops_per_s: Mapping[str, float] = field(default_factory=dict)
    calibration: Calibration | None = None
    sources: Mapping[str, str] = field(default_factory=dict)
    price_basis: str = "cloud"

    def __post_init__(self):
        # private copies, so a caller's dict changing later cannot change the frozen spec
        object.__setattr__(self, "flops_per_s", dict(self.flops_per_s))
        object.__setattr__(self, "sparse_flops_per_s", dict(self.sparse_flops_per_s))
        object.__setattr__(self, "sources", dict(self.sources))
        if self.kind not in KINDS:
            raise SpecError(f"kind: {self.kind!r} is not one of {KINDS}")
        if self.device_link not in DEVICE_LINK_KINDS:
            raise SpecError(f"device_link.kind: {self.device_link!r} is not one of {DEVICE_LINK_KINDS}")
        if not self.flops_per_s:
            raise SpecError("compute: at least one dtype rate is required")
        for dtype, rate in {**self.flops_per_s, **self.sparse_flops_per_s}.items():
            if dtype not in DTYPES:
                raise SpecError(f"compute.{dtype}: unknown dtype; known: {DTYPES}")
            _check_positive(rate, f"compute.{dtype}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.endswith(("_bytes", "_bytes_per_s", "_per_s", "_usd", "_w")) and f.type == "float":
                checker = _check_non_negative if f.name.startswith("device_link") else _check_positive
                checker(value, f.name)
        _check_non_negative(self.device_link_latency_s, "device_link_latency_s")
        _check_non_negative(self.flash_latency_s, "flash_latency_s")
        _check_non_negative(self.host_link_latency_s, "host_link_latency_s")
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


def _dimension_of(name: str) -> str | None:
    for suffix, dimension in (("_bytes_per_s", "bytes_per_s"), ("flops_per_s", "flops_per_s"), ("_bytes", "bytes"),
                              ("_usd", "usd_per_hour"), ("_w", "watts"), ("_s", "seconds")):
        if name.endswith(suffix):
            return dimension
    return None


def _check_ranges(hw: "Hardware") -> None:
    """Every SI field inside units.RANGES (zero allowed where the field may be absent), counts whole and
    in COUNT_RANGES, a known price basis: a spec built from Python gets the loader's limits."""
    if not isinstance(hw.name, str) or not hw.name.strip() or len(hw.name) > 200:
        raise SpecError(f"name: {hw.name!r} must be a non-empty string of at most 200 characters")
    if hw.price_basis not in PRICE_BASES:
        raise SpecError(f"price_basis: {hw.price_basis!r} is not one of {PRICE_BASES}")
    rates = {f"compute.{d}": r for d, r in {**hw.flops_per_s, **hw.sparse_flops_per_s}.items()}
    for f in dataclasses.fields(hw):
        if f.type == "float":
            rates[f.name] = getattr(hw, f.name)
    for name, value in rates.items():
        dimension = "flops_per_s" if name.startswith("compute.") else _dimension_of(name)
        if dimension and value != 0:
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
    """YAML paths of the whole-number fields (one source: _COUNT_FIELDS and the int _CAL_NUMBERS)."""
    return {path for path, _ in _COUNT_FIELDS} | {f"calibration.{k}" for k, kind in _CAL_NUMBERS if kind is int}


def _fields_from_yaml(r: SpecReader) -> dict:
    compute = r.node("compute")
    if not isinstance(compute, dict) or not compute:
        raise SpecError(f"{r.origin}: compute must list at least one dtype rate")
    sparse = r.node("sparse_compute", required=False) or {}
    link_kind = str(r.node("device_link.kind", required=False) or "none")
    has_link = link_kind != "none"
    fields = dict(
        name=str(r.node("name")),
        title=str(r.node("title", required=False) or r.node("name")),
        kind=str(r.node("kind")),
        flops_per_s={d: r.quantity(f"compute.{d}", "flops_per_s") for d in compute},
        sparse_flops_per_s={d: r.quantity(f"sparse_compute.{d}", "flops_per_s") for d in sparse},
        hbm_capacity_bytes=r.quantity("memory.capacity", "bytes"),
        hbm_bytes_per_s=r.quantity("memory.bandwidth", "bytes_per_s"),
        dram_capacity_bytes=r.quantity("host_memory.capacity", "bytes"),
        dram_bytes_per_s=r.quantity("host_memory.bandwidth", "bytes_per_s"),
        flash_capacity_bytes=r.quantity("flash.capacity", "bytes"),
        flash_read_bytes_per_s=r.quantity("flash.read_bandwidth", "bytes_per_s"),
        flash_latency_s=r.quantity("flash.latency", "seconds"),
        host_link_bytes_per_s=r.quantity("host_link.bandwidth", "bytes_per_s"),
        host_link_latency_s=r.quantity("host_link.latency", "seconds"),
        pcie_gen=int(r.quantity("host_link.pcie_gen", None, required=False, default=0)),
        pcie_lanes=int(r.quantity("host_link.lanes", None, required=False, default=0)),
        device_link=link_kind,
        device_link_bytes_per_s=r.quantity("device_link.bandwidth", "bytes_per_s", required=has_link, default=0.0),
        device_link_latency_s=r.quantity("device_link.latency", "seconds", required=False, default=0.0),
        cpu_cores=int(r.quantity("cpu.cores", None)),
        cpu_flops_per_s=r.quantity("cpu.flops", "flops_per_s"),
        devices_per_node=int(r.quantity("node.devices", None, required=False, default=1)),
        compute_units=int(r.quantity("node.compute_units", None, required=False, default=1)),
        price_per_hour_usd=r.quantity("price_per_hour", "usd_per_hour"),
        power_w=r.quantity("power", "watts"),
        price_basis=str(r.node("price_basis", required=False) or "cloud"),
    )
    fields["calibration"] = _calibration_from_yaml(r)
    fields["sources"] = dict(r.sources)
    return fields


_CAL_QUANTITIES = (  # (yaml key, field, dimension)
    ("memory_bandwidth", "memory_bytes_per_s", "bytes_per_s"),
    ("memory_read_bandwidth", "memory_read_bytes_per_s", "bytes_per_s"),
    ("norm_bandwidth", "norm_bytes_per_s", "bytes_per_s"),
    ("concat_bandwidth", "concat_bytes_per_s", "bytes_per_s"),
    ("sm_bandwidth", "sm_bytes_per_s", "bytes_per_s"),
    ("kernel_overhead", "kernel_overhead_s", "seconds"),
    ("dispatch", "dispatch_s", "seconds"),
    ("layer_overhead", "layer_overhead_s", "seconds"),
    ("step_overhead", "step_overhead_s", "seconds"),
    ("attention_overhead", "attention_overhead_s", "seconds"),
    ("host_to_device_bandwidth", "host_to_device_bytes_per_s", "bytes_per_s"),
    ("device_to_host_bandwidth", "device_to_host_bytes_per_s", "bytes_per_s"),
    ("host_to_device_pageable_bandwidth", "host_to_device_pageable_bytes_per_s", "bytes_per_s"),
    ("device_to_host_pageable_bandwidth", "device_to_host_pageable_bytes_per_s", "bytes_per_s"),
    ("transfer_latency", "transfer_latency_s", "seconds"),
    ("custom_allreduce_latency", "custom_allreduce_latency_s", "seconds"),
    ("custom_allreduce_bandwidth", "custom_allreduce_bytes_per_s", "bytes_per_s"),
    ("reduction_bandwidth", "reduction_bytes_per_s", "bytes_per_s"),
    ("grouped_gemm_bandwidth", "grouped_bytes_per_s", "bytes_per_s"),
    ("moe_routing", "moe_routing_s", "seconds"),
)
#: YAML keys of an attention kernel family's parameters: (key, field, dimension or None for a number).
_ATTENTION_KEYS = (("flops_fraction", "flops_fraction", None), ("overhead", "overhead_s", "seconds"),
                   ("read_bandwidth", "read_bytes_per_s", "bytes_per_s"), ("unit", "unit_s", "seconds"),
                   ("row", "row_s", "seconds"))
_CAL_NUMBERS = (("attention_flops_fraction", float), ("tile_m", int), ("tile_n", int), ("split_k_min", int),
                ("gemv_tile_n", int))


def _calibration_from_yaml(r: SpecReader) -> Calibration | None:
    if r.node("calibration", required=False) is None:
        return None
    matmul = r.node("calibration.matmul")
    if not isinstance(matmul, dict) or not matmul:
        raise SpecError(f"{r.origin}: calibration.matmul must list at least one dtype rate")
    values = {"matmul_flops_per_s": {d: r.quantity(f"calibration.matmul.{d}", "flops_per_s") for d in matmul}}
    dequant = r.node("calibration.dequant", required=False) or {}
    values["dequant_bytes_per_s"] = {f: r.quantity(f"calibration.dequant.{f}", "bytes_per_s") for f in dequant}
    sustained = r.node("calibration.sustained_matmul", required=False) or {}
    values["sustained_flops_per_s"] = {d: r.quantity(f"calibration.sustained_matmul.{d}", "flops_per_s")
                                       for d in sustained}
    gemv = r.node("calibration.gemv", required=False) or {}
    values["gemv_bytes_per_s"] = {d: r.quantity(f"calibration.gemv.{d}", "bytes_per_s") for d in gemv}
    for key, attr, dimension in _CAL_QUANTITIES:
        required = key in ("memory_bandwidth", "kernel_overhead")
        value = r.quantity(f"calibration.{key}", dimension, required=required, default=None)
        if value is not None:
            values[attr] = value
    for key, kind in _CAL_NUMBERS:
        value = r.quantity(f"calibration.{key}", None, required=False, default=None)
        if value is not None:
            values[key] = kind(value)
    families = r.node("calibration.attention_kernels", required=False) or {}
    if not isinstance(families, dict):
        raise SpecError(f"{r.origin}: calibration.attention_kernels must map kernel families to parameters")
    bands = r.node("calibration.error_bands", required=False) or {}
    if not isinstance(bands, dict):
        raise SpecError(f"{r.origin}: calibration.error_bands must map residual classes to p10 and p90")
    values["error_bands"] = {cls: {q: r.quantity(f"calibration.error_bands.{cls}.{q}", None) for q in ("p10", "p90")}
                             for cls in bands}
    values["attention_kernels"] = {
        family: {attr: value for key, attr, dim in _ATTENTION_KEYS
                 if (value := r.quantity(f"calibration.attention_kernels.{family}.{key}", dim, required=False))
                 is not None}
        for family in families}
    return Calibration(**values, source=str(r.tags.get("measured", "")))


# -- writing specs back to YAML (round trip) -------------------------------------------------------

_YAML_FIELDS = (  # (yaml path, attribute, unit written, dimension)
    ("memory.capacity", "hbm_capacity_bytes", "GB", 1e9),
    ("memory.bandwidth", "hbm_bytes_per_s", "GB/s", 1e9),
    ("host_memory.capacity", "dram_capacity_bytes", "GB", 1e9),
    ("host_memory.bandwidth", "dram_bytes_per_s", "GB/s", 1e9),
    ("flash.capacity", "flash_capacity_bytes", "GB", 1e9),
    ("flash.read_bandwidth", "flash_read_bytes_per_s", "GB/s", 1e9),
    ("flash.latency", "flash_latency_s", "us", 1e-6),
    ("host_link.bandwidth", "host_link_bytes_per_s", "GB/s", 1e9),
    ("host_link.latency", "host_link_latency_s", "us", 1e-6),
    ("cpu.flops", "cpu_flops_per_s", "GFLOP/s", 1e9),
    ("price_per_hour", "price_per_hour_usd", "USD/h", 1.0),
    ("power", "power_w", "W", 1.0),
)
_COUNT_FIELDS = (("host_link.pcie_gen", "pcie_gen"), ("host_link.lanes", "pcie_lanes"), ("cpu.cores", "cpu_cores"),
                 ("node.devices", "devices_per_node"), ("node.compute_units", "compute_units"))
def to_yaml_dict(hw: Hardware) -> dict:
    """The spec in the preset YAML schema (human units, a source tag on every number); reading it
    back with `Hardware.from_dict` gives an equal spec up to 12 significant digits."""
    tags: dict[str, str] = {}

    def tag(path: str) -> str:
        source = hw.sources.get(path, "unspecified")
        for key, value in tags.items():
            if value == source:
                return key
        key = f"s{len(tags) + 1}"
        tags[key] = source
        return key

    out: dict = {"name": hw.name, "title": hw.title, "kind": hw.kind, "sources": tags}
    if hw.price_basis != "cloud":
        out["price_basis"] = hw.price_basis

    def put(path: str, text: str) -> None:
        node = out
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = text

    def number(value: float, unit: str, scale: float, path: str) -> str:
        return f"{value / scale:.12g} {unit} [{tag(path)}]"

    for dtype, rate in hw.flops_per_s.items():
        put(f"compute.{dtype}", number(rate, "TFLOP/s", 1e12, f"compute.{dtype}"))
    for dtype, rate in hw.sparse_flops_per_s.items():
        put(f"sparse_compute.{dtype}", number(rate, "TFLOP/s", 1e12, f"sparse_compute.{dtype}"))
    for path, attr, unit, scale in _YAML_FIELDS:
        put(path, number(getattr(hw, attr), unit, scale, path))
    for path, attr in _COUNT_FIELDS:
        if getattr(hw, attr):
            put(path, f"{getattr(hw, attr)} [{tag(path)}]")
    put("device_link.kind", hw.device_link)
    if hw.device_link != "none":
        put("device_link.bandwidth", number(hw.device_link_bytes_per_s, "GB/s", 1e9, "device_link.bandwidth"))
        put("device_link.latency", number(hw.device_link_latency_s, "us", 1e-6, "device_link.latency"))
    if hw.calibration is not None:
        out["calibration"] = _cite(_calibration_yaml(hw.calibration, tags), "calibration", hw.sources, tag)
    return out


def _cite(section, path: str, sources: Mapping[str, str], tag) -> object:
    """Replace the generic [measured] tag of each calibration leaf by the leaf's own source where
    the spec records one (a calibration fitted to tables measured by others cites each table)."""
    if isinstance(section, dict):
        return {k: _cite(v, f"{path}.{k}", sources, tag) for k, v in section.items()}
    if path in sources and isinstance(section, str) and section.endswith("[measured]"):
        return section[: -len("[measured]")] + f"[{tag(path)}]"
    return section


def _calibration_yaml(cal: Calibration, tags: dict) -> dict:
    tags["measured"] = cal.source or "measured by validate"
    section: dict = {"matmul": {d: f"{r / 1e12:.12g} TFLOP/s [measured]" for d, r in cal.matmul_flops_per_s.items()}}
    if cal.dequant_bytes_per_s:
        section["dequant"] = {f: f"{r / 1e9:.12g} GB/s [measured]" for f, r in cal.dequant_bytes_per_s.items()}
    if cal.sustained_flops_per_s:
        section["sustained_matmul"] = {d: f"{r / 1e12:.12g} TFLOP/s [measured]"
                                       for d, r in cal.sustained_flops_per_s.items()}
    if cal.gemv_bytes_per_s:
        section["gemv"] = {d: f"{r / 1e9:.12g} GB/s [measured]" for d, r in cal.gemv_bytes_per_s.items()}
    units_for = {"bytes_per_s": ("GB/s", 1e9), "seconds": ("us", 1e-6)}
    for key, attr, dimension in _CAL_QUANTITIES:
        value = getattr(cal, attr)
        if value > 0 or key in ("memory_bandwidth", "kernel_overhead"):
            unit, scale = units_for[dimension]
            section[key] = f"{value / scale:.12g} {unit} [measured]"
    for key, _ in _CAL_NUMBERS:
        if getattr(cal, key) > 0:
            section[key] = f"{getattr(cal, key):.12g} [measured]"
    if cal.error_bands:
        section["error_bands"] = {cls: {q: f"{v:.6g} [measured]" for q, v in band.items()}
                                  for cls, band in cal.error_bands.items()}
    if cal.attention_kernels:
        section["attention_kernels"] = {family: {
            key: (f"{params[attr]:.12g} [measured]" if dim is None else
                  f"{params[attr] / units_for[dim][1]:.12g} {units_for[dim][0]} [measured]")
            for key, attr, dim in _ATTENTION_KEYS if params.get(attr, 0) > 0}
            for family, params in cal.attention_kernels.items()}
    return section
