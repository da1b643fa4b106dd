"""The hardware spec schema, written once: one row per field of a spec YAML file.

Each row says where the field lives in the YAML file (dotted key), which dataclass attribute holds
it (SI units, unit in the name), its unit kind (how the YAML text is parsed and written), whether a
spec must give it, its value when absent, the allowed range, and the text the planner's form shows.
Everything that knows the schema reads it from here:

- the dataclasses `hardware.spec.Hardware` and `Calibration` get their fields from HARDWARE and
  CALIBRATION (`dataclass_fields`), so the attribute list is not written twice;
- `Hardware.from_yaml` reads, and `hardware.spec.to_yaml_dict` writes (the one writer: presets,
  validate's calibrated specs, the planner's exports), row by row;
- the planner's custom-spec form (app.views.SPEC_FIELDS) is the rows with a `form` label;
- range checks and their messages use `Field.range`.

Adding a field to the schema is adding a row here (tests/hardware/test_fields.py holds reader,
writer, dataclass and form to the table). Rows are in the order the writer emits them, which is
also the order of the keys in the committed presets.

Unit kinds: a `hardware.units.SI_UNITS` dimension ("bytes", "bytes_per_s", "flops_per_s",
"seconds", "watts", "usd_per_hour", "joules_per_flop", "joules_per_byte"); "count" (a whole number, written without a unit); "number" (a
plain number > 0, e.g. a fraction); "text" and "choice" (untagged strings); "bands" and "kernels"
(the calibration's nested maps of error bands and attention kernel families, ATTENTION rows).
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field
from typing import Any

from hardware import units

#: Compute dtypes a spec may list; int4 and fp4 only where the hardware has a native path.
DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4", "fp4")
KINDS = ("gpu", "cpu", "soc")
#: What a preset's price_per_hour is: a cloud on-demand list price per device-hour ("cloud"), or the
#: card's purchase price amortised over three years with no host, power or margin ("purchase-3y").
#: Rankings compare prices of one basis only.
PRICE_BASES = ("cloud", "purchase-3y")
DEVICE_LINK_KINDS = ("nvlink2", "nvlink3", "nvlink4", "nvlink5", "infinity-fabric", "pcie", "none")
#: GPU architectures a spec may name: kernels an engine picks per architecture (its tile tables,
#: Engine.fp8_gemm_tiles_hopper) apply where the spec names theirs; "" (unnamed) gets none.
ARCHITECTURES = ("volta", "turing", "ampere", "ada", "hopper", "blackwell", "cdna3")

#: The unit each kind is written in by the spec writer (file style): (unit text, SI value of one unit).
FILE_UNITS = {name: d.file_unit for name, d in units.DIMENSIONS.items()}
#: SI symbol of each dimension, for the planner's human-readable values (format_si adds the prefix).
SI_SYMBOLS = {name: d.symbol for name, d in units.DIMENSIONS.items()}
#: Python type of a dataclass attribute per unit kind (a keyed field is a Mapping of these).
_TYPES = {"count": "int", "text": "str", "choice": "str", "bands": "Mapping[str, Mapping[str, float]]",
          "kernels": "Mapping[str, Mapping[str, float]]"}


@dataclass(frozen=True)
class Field:
    """One field of the spec schema.

    key: dotted YAML key (for a keyed field, the mapping's key: "compute" holds compute.<dtype>).
    attr: dataclass attribute (Hardware's, or Calibration's for keys under "calibration.").
    unit: unit kind (module docstring). required: a spec without it is refused (a keyed field: it
    must list at least one entry); the dataclass attribute then has no default. required_with_link:
    required when the spec's device_link.kind is not "none". default: value when
    absent (dataclass default too). choices: allowed values of a "choice" (or a keyed field's keys
    the form offers). limits: allowed range of a count or number (SI kinds: units.RANGES).
    zero_ok: 0 is accepted (a link or latency that may be absent), else the value must be > 0.
    form: the planner form's label ("" = not in the form; a keyed row's label is formatted with
    the key and ", optional" for keys not in form_required). write: when the writer writes it
    (`written`): "always", "nonzero", "link".
    file_unit: the writer's (unit, scale) when not FILE_UNITS[unit]. digits: significant digits
    written."""

    key: str
    attr: str
    unit: str
    required: bool = True
    required_with_link: bool = False
    default: Any = None
    choices: tuple = ()
    limits: tuple[float, float] | None = None
    zero_ok: bool = False
    keyed: bool = False
    form: str = ""
    form_required: tuple = ()
    write: str = "always"
    file_unit: tuple[str, float] | None = None
    digits: int = 12

    @property
    def is_si(self) -> bool:
        return self.unit in units.SI_UNITS

    @property
    def dimension(self) -> str | None:
        """The units.parse dimension of a leaf, None for a plain count or number."""
        return self.unit if self.is_si else None

    @property
    def range(self) -> tuple[float, float] | None:
        """Allowed (low, high) in SI units (counts and numbers: `limits`)."""
        return units.RANGES[self.unit] if self.is_si else self.limits

    @property
    def type(self) -> str:
        """The dataclass attribute's annotation."""
        leaf = _TYPES.get(self.unit, "float")
        return f"Mapping[str, {leaf}]" if self.keyed else leaf

    def file_text(self, value) -> str:
        """`value` (SI) as the spec writer writes it, without the source tag: '4800 GB/s'."""
        if not self.is_si:
            return f"{value:.{self.digits}g}"
        unit, scale = self.file_unit or FILE_UNITS[self.unit]
        return f"{value / scale:.{self.digits}g} {unit}"

    def written(self, value, has_link: bool) -> bool:
        """Whether the writer writes this value: "always"; "nonzero" (not 0, not empty, a text not
        its default); "link" (a device link's nonzero parameter, only when the spec has a link)."""
        if self.write == "always":
            return True
        if self.write == "link" and not has_link:
            return False
        return value != self.default if self.unit in ("text", "choice") else bool(value)


def human_text(value: float, unit: str) -> str:
    """A value as the planner shows it, with an SI prefix and 6 significant digits ('4.8 TB/s');
    the unit parser reads it back to the same number."""
    if unit not in units.SI_UNITS:
        return str(int(value))
    if unit == "seconds":
        for scale, name in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")):
            if abs(value) >= scale:
                return f"{value / scale:.6g} {name}"
    return units.format_si(value, SI_SYMBOLS[unit], digits=6)


# -- the tables --------------------------------------------------------------------------------
#: Fields of a device and its node (Hardware). Sources: the per-field tags of each preset.
HARDWARE = (
    Field("name", "name", "text", form=""),
    Field("title", "title", "text", required=False, default=""),
    Field("kind", "kind", "choice", choices=KINDS),
    Field("architecture", "architecture", "choice", required=False, default="", choices=ARCHITECTURES,
          write="nonzero"),
    Field("price_basis", "price_basis", "choice", required=False, default="cloud", choices=PRICE_BASES,
          write="nonzero"),
    Field("compute", "flops_per_s", "flops_per_s", keyed=True, choices=DTYPES, form="{} peak (dense{})",
          form_required=("fp32", "bf16")),
    Field("sparse_compute", "sparse_flops_per_s", "flops_per_s", required=False, default={}, keyed=True,
          choices=DTYPES),
    Field("memory.capacity", "hbm_capacity_bytes", "bytes", form="Device memory capacity"),
    Field("memory.bandwidth", "hbm_bytes_per_s", "bytes_per_s", form="Device memory bandwidth"),
    # the device's last-level (L2) cache: a benchmark that replays one call on one set of buffers
    # finds them there when they fit (perfmodel.roofline: Op.warm_l2); a model step never does.
    # 0: not known (no such regime is priced)
    Field("memory.l2_cache", "l2_cache_bytes", "bytes", required=False, default=0.0, zero_ok=True, write="nonzero"),
    Field("host_memory.capacity", "dram_capacity_bytes", "bytes", form="Host DRAM capacity"),
    Field("host_memory.bandwidth", "dram_bytes_per_s", "bytes_per_s", form="Host DRAM bandwidth"),
    Field("flash.capacity", "flash_capacity_bytes", "bytes", form="Flash / NVMe capacity"),
    Field("flash.read_bandwidth", "flash_read_bytes_per_s", "bytes_per_s", form="Flash read bandwidth"),
    Field("flash.latency", "flash_latency_s", "seconds", zero_ok=True, form="Flash latency"),
    Field("host_link.bandwidth", "host_link_bytes_per_s", "bytes_per_s", form="Host link bandwidth (each way)"),
    Field("host_link.latency", "host_link_latency_s", "seconds", zero_ok=True, form="Host link latency"),
    Field("cpu.flops", "cpu_flops_per_s", "flops_per_s", file_unit=("GFLOP/s", 1e9), form="CPU peak"),
    Field("price_per_hour", "price_per_hour_usd", "usd_per_hour", form="Price per device-hour"),
    Field("power", "power_w", "watts", form="Power"),
    Field("host_link.pcie_gen", "pcie_gen", "count", required=False, default=0, limits=(0, 16), write="nonzero"),
    Field("host_link.lanes", "pcie_lanes", "count", required=False, default=0, limits=(0, 64), write="nonzero"),
    Field("cpu.cores", "cpu_cores", "count", limits=(1, 10**6), form="CPU cores"),
    Field("node.devices", "devices_per_node", "count", required=False, default=1, limits=(1, 1024),
          form="Devices per node"),
    Field("node.compute_units", "compute_units", "count", required=False, default=1, limits=(1, 10**6),
          form="Compute units (SMs)"),
    Field("device_link.kind", "device_link", "choice", required=False, default="none", choices=DEVICE_LINK_KINDS),
    Field("device_link.bandwidth", "device_link_bytes_per_s", "bytes_per_s", required=False, required_with_link=True,
          default=0.0, zero_ok=True, write="link", form="Device link bandwidth (each way)"),
    Field("device_link.latency", "device_link_latency_s", "seconds", required=False, default=0.0, zero_ok=True,
          write="link", form="Device link latency"),
)

#: Fields of a calibration (Calibration, under the YAML key "calibration"): what measurement on a
#: real device found (validate.calibrate's docstrings give the fitting method of each). Absent
#: optional fields are 0 (or empty) and the writer leaves them out.
_CAL = "calibration."
CALIBRATION = (
    Field(_CAL + "matmul", "matmul_flops_per_s", "flops_per_s", keyed=True),
    Field(_CAL + "dequant", "dequant_bytes_per_s", "bytes_per_s", required=False, default={}, keyed=True,
          write="nonzero"),
    Field(_CAL + "sustained_matmul", "sustained_flops_per_s", "flops_per_s", required=False, default={}, keyed=True,
          write="nonzero"),
    Field(_CAL + "gemv", "gemv_bytes_per_s", "bytes_per_s", required=False, default={}, keyed=True, write="nonzero"),
    Field(_CAL + "memory_bandwidth", "memory_bytes_per_s", "bytes_per_s"),
    Field(_CAL + "memory_read_bandwidth", "memory_read_bytes_per_s", "bytes_per_s", required=False, default=0.0,
          zero_ok=True, write="nonzero"),
    Field(_CAL + "norm_bandwidth", "norm_bytes_per_s", "bytes_per_s", required=False, default=0.0, zero_ok=True,
          write="nonzero"),
    Field(_CAL + "row_norm_bandwidth", "row_norm_bytes_per_s", "bytes_per_s", required=False, default=0.0,
          zero_ok=True, write="nonzero"),
    Field(_CAL + "row_norm_latency", "row_norm_latency_s", "seconds", required=False, default=0.0, zero_ok=True,
          write="nonzero"),
    Field(_CAL + "concat_bandwidth", "concat_bytes_per_s", "bytes_per_s", required=False, default=0.0, zero_ok=True,
          write="nonzero"),
    Field(_CAL + "sm_bandwidth", "sm_bytes_per_s", "bytes_per_s", required=False, default=0.0, zero_ok=True,
          write="nonzero"),
    Field(_CAL + "gemm_write_bandwidth", "gemm_write_bytes_per_s", "bytes_per_s", required=False, default=0.0,
          zero_ok=True, write="nonzero"),
    Field(_CAL + "kernel_overhead", "kernel_overhead_s", "seconds", zero_ok=True),
    *(Field(_CAL + key, attr, "seconds", required=False, default=0.0, zero_ok=True, write="nonzero")
      for key, attr in (("dispatch", "dispatch_s"), ("layer_overhead", "layer_overhead_s"),
                        ("step_overhead", "step_overhead_s"), ("attention_overhead", "attention_overhead_s"))),
    *(Field(_CAL + key, attr, "bytes_per_s", required=False, default=0.0, zero_ok=True, write="nonzero")
      for key, attr in (("host_to_device_bandwidth", "host_to_device_bytes_per_s"),
                        ("device_to_host_bandwidth", "device_to_host_bytes_per_s"),
                        ("host_to_device_pageable_bandwidth", "host_to_device_pageable_bytes_per_s"),
                        ("device_to_host_pageable_bandwidth", "device_to_host_pageable_bytes_per_s"))),
    Field(_CAL + "transfer_latency", "transfer_latency_s", "seconds", required=False, default=0.0, zero_ok=True,
          write="nonzero"),
    # NCCL's all-reduce inside the node, fitted to nccl-tests times (perfmodel.collectives.LinkCalibration:
    # per-direction bandwidth, one Simple ring step, a fixed cost per call, NVLink SHARP available or not)
    *(Field(_CAL + key, attr, unit, required=False, default=0.0, zero_ok=True, write="nonzero")
      for key, attr, unit in (("link_bandwidth", "link_bytes_per_s", "bytes_per_s"),
                              ("link_step_latency", "link_step_latency_s", "seconds"),
                              ("link_launch", "link_launch_s", "seconds"))),
    Field(_CAL + "link_nvls", "link_nvls", "count", required=False, default=0, limits=(0, 1), write="nonzero"),
    # per engine (its own custom all-reduce kernel: vLLM's, TensorRT-LLM's, SGLang's), where fitted;
    # the two scalars below serve engines without an entry
    Field(_CAL + "custom_allreduce_engine_latency", "custom_allreduce_engine_latency_s", "seconds", required=False,
          default={}, keyed=True, write="nonzero"),
    Field(_CAL + "custom_allreduce_engine_bandwidth", "custom_allreduce_engine_bytes_per_s", "bytes_per_s",
          required=False, default={}, keyed=True, write="nonzero"),
    Field(_CAL + "custom_allreduce_engine_peer_latency", "custom_allreduce_engine_peer_latency_s", "seconds",
          required=False, default={}, keyed=True, write="nonzero"),
    Field(_CAL + "custom_allreduce_engine_two_shot_peer_latency", "custom_allreduce_engine_two_shot_peer_latency_s",
          "seconds", required=False, default={}, keyed=True, write="nonzero"),
    # per engine (its own dynamic fp8 activation quantization ahead of an fp8 GEMM: vLLM's
    # scaled_fp8_quant, SGLang's per-token kernel, TensorRT-LLM's FP8 QDQ path), where fitted
    Field(_CAL + "act_quant_engine_latency", "act_quant_engine_latency_s", "seconds", required=False,
          default={}, keyed=True, write="nonzero"),
    Field(_CAL + "act_quant_engine_row", "act_quant_engine_row_s", "seconds", required=False,
          default={}, keyed=True, write="nonzero"),
    Field(_CAL + "custom_allreduce_latency", "custom_allreduce_latency_s", "seconds", required=False, default=0.0,
          zero_ok=True, write="nonzero"),
    Field(_CAL + "custom_allreduce_bandwidth", "custom_allreduce_bytes_per_s", "bytes_per_s", required=False,
          default=0.0, zero_ok=True, write="nonzero"),
    Field(_CAL + "custom_allreduce_peer_latency", "custom_allreduce_peer_latency_s", "seconds", required=False,
          default=0.0, zero_ok=True, write="nonzero"),
    Field(_CAL + "reduction_bandwidth", "reduction_bytes_per_s", "bytes_per_s", required=False, default=0.0,
          zero_ok=True, write="nonzero"),
    Field(_CAL + "grouped_gemm_bandwidth", "grouped_bytes_per_s", "bytes_per_s", required=False, default=0.0,
          zero_ok=True, write="nonzero"),
    Field(_CAL + "moe_routing", "moe_routing_s", "seconds", required=False, default=0.0, zero_ok=True,
          write="nonzero"),
    # per fused-MoE kernel family an engine profile names (Engine.moe_kernel: vllm-triton, sglang-triton,
    # trtllm-cutlass, flashinfer-cutlass), where fitted: its weight streaming and its fixed time per layer
    Field(_CAL + "moe_kernel_bandwidth", "moe_kernel_bytes_per_s", "bytes_per_s", required=False, default={},
          keyed=True, write="nonzero"),
    Field(_CAL + "moe_kernel_latency", "moe_kernel_latency_s", "seconds", required=False, default={},
          keyed=True, write="nonzero"),
    Field(_CAL + "attention_flops_fraction", "attention_flops_fraction", "number", required=False, default=1.0,
          limits=(0.0, 1e6), write="nonzero"),
    Field(_CAL + "tile_m", "tile_m", "count", required=False, default=1, limits=(1, 10**6), write="nonzero"),
    Field(_CAL + "tile_n", "tile_n", "count", required=False, default=1, limits=(1, 10**6), write="nonzero"),
    Field(_CAL + "split_k_min", "split_k_min", "count", required=False, default=1, limits=(1, 10**6),
          write="nonzero"),
    Field(_CAL + "gemv_tile_n", "gemv_tile_n", "count", required=False, default=0, limits=(0, 10**6),
          zero_ok=True, write="nonzero"),
    Field(_CAL + "gemm_latency", "gemm_latency_s", "seconds", required=False, default=0.0, zero_ok=True,
          write="nonzero"),
    # the board power model (perfmodel.energy), fitted on power read through NVML while kernels run
    # (validate/reports/power/fit_power.py): idle power (awake, between a workload's kernels), energy
    # per FLOP per dtype class and per HBM byte, and the fraction of its burst tensor-core rate the
    # board sustains at its power limit
    Field(_CAL + "power.idle", "idle_power_w", "watts", required=False, default=0.0, zero_ok=True, write="nonzero"),
    Field(_CAL + "power.energy_per_flop", "joules_per_flop", "joules_per_flop", required=False, default={},
          keyed=True, write="nonzero"),
    Field(_CAL + "power.energy_per_hbm_byte", "joules_per_hbm_byte", "joules_per_byte", required=False,
          default=0.0, zero_ok=True, write="nonzero"),
    Field(_CAL + "power.sustained_fraction", "sustained_fraction", "number", required=False, default={},
          keyed=True, limits=(0.0, 1.0), write="nonzero", digits=6),
    Field(_CAL + "error_bands", "error_bands", "bands", required=False, default={}, write="nonzero", digits=6),
    Field(_CAL + "attention_kernels", "attention_kernels", "kernels", required=False, default={}, write="nonzero"),
)

#: Parameters of one attention kernel family (calibration.attention_kernels.<family>.<key>).
ATTENTION = (
    Field("flops_fraction", "flops_fraction", "number", limits=(0.0, 1e6)),
    Field("overhead", "overhead_s", "seconds", zero_ok=True),
    Field("read_bandwidth", "read_bytes_per_s", "bytes_per_s"),
    Field("unit", "unit_s", "seconds"),
    Field("row", "row_s", "seconds"),
    # time a work unit adds per element of its head dim: the bytes a unit moves however short its
    # context (its queries, its output, the first key/value tile its pipeline fills) grow with the
    # head dim; absent (0): a unit's time is unit alone
    Field("unit_head_dim", "unit_head_dim_s", "seconds", required=False, default=0.0, zero_ok=True),
    # time a cached key adds to every work unit: a kernel whose units each stream their sequence's
    # whole cache (SDPA under a mask), or a split-KV decode kernel whose few units stream long runs
    # of keys each at one SM's rate (fitted where it lowers the family's cost by 1%:
    # validate.calibrate_external._fit_attention_family); absent (0): none
    Field("key", "key_s", "seconds", required=False, default=0.0, zero_ok=True),
    # fixed latency of the KV stream (a split-KV kernel's prologue and its combine pass): memory-
    # bound time is this + bytes / read_bandwidth (Hockney's form); absent (0) where not fitted
    Field("stream_latency", "stream_latency_s", "seconds", required=False, default=0.0, zero_ok=True),
    # softmax rate in query-key scores per second (one exponential each, on the SMs' special-function
    # units, beside the two dot products' tensor-core FLOPs; written as FLOP/s, one exponential a
    # FLOP, as FlashAttention-3 quotes it); absent (0): no softmax term
    Field("score_rate", "scores_per_s", "flops_per_s", required=False, default=0.0, zero_ok=True),
    # a kernel whose units each stream all their keys on one SM (prefill: roofline.has_longest_unit):
    # how many times its fair share of the kernel's rates (1 / SMs) one unit gets on its SM, which
    # bounds the kernel by its longest unit (roofline.longest_unit_s); absent (0): no such bound
    Field("unit_speedup", "unit_speedup", "number", required=False, default=0.0, zero_ok=True, limits=(0.0, 1e6)),
    # a decode kernel that splits each sequence's keys over thread blocks by a host heuristic
    # (perfmodel.roofline.KV_SPLIT_RULES): the time its final pass takes per block whose partial
    # softmax and output it combines; absent (0): none
    Field("split_combine", "combine_s", "seconds", required=False, default=0.0, zero_ok=True),
    # the same kernel: the rate one block streams its share of a (sequence, kv head)'s cache (a
    # block's keys ride one SM's load pipeline, whatever the rest of the device does); absent (0): none
    Field("split_block_bandwidth", "block_bytes_per_s", "bytes_per_s", required=False, default=0.0, zero_ok=True),
    # the rate the kernel streams a cache that sits in L2 (a table timed by replaying one call on
    # one cache whose bytes fit the L2: Op.warm_l2, Hardware.l2_cache_bytes); fitted where such
    # rows beat the device memory's bandwidth (validate.calibrate_external); absent (0): none
    Field("l2_bandwidth", "l2_bytes_per_s", "bytes_per_s", required=False, default=0.0, zero_ok=True),
)
#: The two quantiles of one error band (calibration.error_bands.<class>.<q>).
BAND_QUANTILES = ("p10", "p90")


# -- derived views -----------------------------------------------------------------------------
def count_ranges(table) -> dict[str, tuple[int, int]]:
    """attr -> (low, high) of every whole-number field."""
    return {f.attr: f.limits for f in table if f.unit == "count"}


def dataclass_fields(table, extra: dict[str, tuple[str, Any]]) -> dict[str, tuple[str, Any]]:
    """attr -> (annotation, default or MISSING) for a dataclass built from `table`: required fields
    first (they have no default), then the optional ones, then `extra` (attr -> (annotation,
    default)), the fields the class has beyond the YAML leaves; each group in table order."""
    def default(f: Field):
        if f.required:
            return MISSING
        return field(default_factory=dict) if isinstance(f.default, dict) else f.default

    ordered = [f for f in table if f.required] + [f for f in table if not f.required]
    return {**{f.attr: (f.type, default(f)) for f in ordered}, **extra}


def schema_dataclass(table, **extra):
    """Class decorator: make the class a frozen dataclass whose fields are `table`'s attributes
    (plus `extra`: attr=(annotation, default)), keeping its methods and docstring. The one place
    a spec attribute is declared is its row."""
    def apply(cls):
        spec = dataclass_fields(table, extra)
        cls.__annotations__ = {attr: annotation for attr, (annotation, _) in spec.items()}
        for attr, (_, default) in spec.items():
            if default is not MISSING:
                setattr(cls, attr, default)
        return dataclass(frozen=True)(cls)

    return apply
