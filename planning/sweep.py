"""Design-space sweeps: grids or random samples over models, devices, device fields and scenarios;
constraints as filters; the exact Pareto front over chosen objectives.

A sweep is a list of axes. `model` and `hardware` take catalog names (or config / spec paths, or
objects); `engine` takes engine profile names (perfmodel.engines; without that axis every row is
priced for the spec's one `engine`, DEFAULT_ENGINE unless given); a numeric `Hardware` field
(``hbm_bytes_per_s``, ``price_per_hour_usd``, ``flops_per_s.bf16``...) makes variants of each
device; any `Scenario` field takes a list or a range
``{"start": 1, "stop": 128, "num": 8, "log": true}``. Row i of a sweep is a pure function of the spec
and i: in a grid, the mixed-radix digits of i (model and device axes outermost); in a random sample,
a counter-based hash of (seed, i, axis). So a sweep splits into index ranges that evaluate anywhere
(this process, a Dask cluster) and give the same rows whatever the split.

Each chunk groups its rows by (model, device, engine) and calls the vectorized `perfmodel.evaluate`
once per group. The Pareto front of a union is the front of the union of the parts' fronts, so chunks
reduce to their own fronts and the merge is exact.

    >>> from planning import sweep
    >>> spec = sweep.grid(model=["llama-3-8b"], hardware=["h200-sxm"],
    ...                   batch={"start": 1, "stop": 256, "num": 9, "log": True}, prompt=[512, 4096],
    ...                   constraints=["tpot_s <= 0.05", "fits"], pareto="throughput_tok_s:max,tpot_s:min")
    >>> sweep.run(spec).front  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

import hardware
import workloads
from hardware import units
from hardware.spec import DTYPES, Hardware
from perfmodel.checks import tp_allowed
from perfmodel import engines
from perfmodel.engines import Engine
from perfmodel.pareto import pareto_mask
from perfmodel.predict import evaluate
from perfmodel.roofline import BOUNDS
from workloads.model import ModelSpec
from workloads.scenario import Scenario

SCENARIO_FIELDS = tuple(f.name for f in dataclasses.fields(Scenario))
INTEGER_FIELDS = frozenset({"batch", "prompt", "gen", "tp", "samples", "sparse_budget", "quant_group"})
#: Numeric Hardware fields a sweep may vary (each value makes a device variant), plus peak rates.
DEVICE_FIELDS = tuple(f.name for f in dataclasses.fields(Hardware) if f.type in ("float", "int")) + tuple(
    f"flops_per_s.{d}" for d in DTYPES)
#: Columns added to every row beside `evaluate`'s.
DERIVED_COLUMNS = ("devices", "usd_per_hour", "throughput_per_device_tok_s", "tok_per_usd", "context_ok", "tp_ok",
                   "feasible")
KEEP_MODES = ("all", "feasible", "front", "none")
DEFAULT_CHUNK_ROWS = 1 << 17  # ~1e5 rows: where evaluate's per-row cost bottoms out (measured), ~60 MB
SPEC_KEYS = ("axes", "mode", "n", "seed", "constraints", "pareto", "engine")
#: Most rows of one sweep (about 15 minutes at 1e6 rows/s on one machine): a larger one is refused
#: with its size rather than left running for days. Rows are streamed in chunks, so memory is bounded
#: by the chunk size unless rows are collected (`collect=True`), which MAX_COLLECT_ROWS bounds.
MAX_ROWS = 10**9
MAX_COLLECT_ROWS = 4_000_000
#: Most values of one axis (a list, or a range's num / step count).
MAX_AXIS_VALUES = 10**6


class SweepError(ValueError):
    """A malformed sweep spec; the message names the axis, key or column and the bad value."""


# -- axes ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Range:
    """Values from start to stop inclusive: `num` points (linear or log-spaced) or every `step`.

    In a random sweep a range without num or step is sampled continuously (uniform, or log-uniform).
    """

    start: float
    stop: float
    num: int | None = None
    step: float | None = None
    log: bool = False

    def values(self, integer: bool) -> np.ndarray:
        if self.step is not None:
            grid = np.arange(self.start, self.stop + self.step / 2, self.step)
        elif self.log:
            grid = np.geomspace(self.start, self.stop, self.num)
        else:
            grid = np.linspace(self.start, self.stop, self.num)
        if not integer:
            return grid
        # log-spaced integers collide at the small end (1, 1.7, 2.9 -> 1, 2, 3); keep each once
        return np.unique(np.clip(np.round(grid), math.ceil(self.start), math.floor(self.stop)))

    def at(self, u: np.ndarray, integer: bool) -> np.ndarray:
        """Map uniforms u in [0, 1) onto the range (log-uniform when `log`)."""
        if self.log:
            x = np.exp(np.log(self.start) + u * (np.log(self.stop) - np.log(self.start)))
            return np.clip(np.round(x), self.start, self.stop) if integer else x
        if integer:  # every whole number start..stop equally likely
            return np.minimum(np.floor(self.start + u * (self.stop - self.start + 1)), self.stop)
        return self.start + u * (self.stop - self.start)


@dataclass(frozen=True)
class Axis:
    """One swept field. Discrete axes hold `values` (objects for model / hardware / engine, with
    `labels`); continuous ones (random sweeps only) hold a `range`."""

    name: str
    kind: str  # "model" | "hardware" | "device" | "engine" | "scenario"
    values: tuple = ()
    labels: tuple = ()
    range: Range | None = None

    @property
    def integer(self) -> bool:
        return self.name in INTEGER_FIELDS

    @property
    def discrete(self) -> bool:
        return self.range is None

    def __len__(self) -> int:
        return len(self.values)


def make_axis(name: str, raw: Any, mode: str) -> Axis:
    """Validate one axis of a spec and resolve catalog names (errors name the axis)."""
    if name in ("model", "hardware"):
        objects = [_resolve(name, v) for v in _as_list(name, raw)]
        return Axis(name, name, tuple(objects), tuple(o.name for o in objects))
    if name == "engine":
        profiles = [_engine(v, "sweep axis 'engine'") for v in _as_list(name, raw)]
        return Axis(name, "engine", tuple(profiles), tuple(e.name for e in profiles))
    if name in DEVICE_FIELDS:
        values = _numbers(name, raw, mode, continuous_ok=False, parse=_device_value)
        return Axis(name, "device", tuple(values.tolist()))
    if name in SCENARIO_FIELDS:
        spec = _numbers(name, raw, mode, continuous_ok=mode == "random", parse=_scenario_value)
        return Axis(name, "scenario", range=spec) if isinstance(spec, Range) else Axis(name, "scenario",
                                                                                       tuple(spec.tolist()))
    known = ", ".join(("model", "hardware", "engine") + SCENARIO_FIELDS + DEVICE_FIELDS)
    raise SweepError(f"sweep axis {name!r}: unknown field; known: {known}")


def _resolve(name: str, value):
    if name == "model":
        return value if isinstance(value, ModelSpec) else workloads.load(value)
    return value if isinstance(value, Hardware) else hardware.load(value)


def _engine(value, where: str) -> Engine:
    """An engine profile by name (or a profile); SweepError naming `where`, the value and the known names."""
    try:
        return engines.load(value)
    except (engines.EngineError, TypeError):
        raise SweepError(f"{where}: {value!r} is not a known engine profile; known: "
                         f"{', '.join(engines.names())}") from None


def _as_list(name: str, raw) -> list:
    values = list(raw) if isinstance(raw, (list, tuple, np.ndarray)) else [raw]
    if not values:
        raise SweepError(f"sweep axis {name!r}: empty list of values")
    if len(values) > MAX_AXIS_VALUES:
        raise SweepError(f"sweep axis {name!r}: {len(values):,} values; at most {MAX_AXIS_VALUES:,} per axis")
    if any(isinstance(v, (list, tuple, dict)) for v in values):
        raise SweepError(f"sweep axis {name!r}: a list of lists; give one flat list of values")
    return values


def _numbers(name: str, raw, mode: str, continuous_ok: bool, parse):
    """A list of numbers, or a Range (kept continuous only where allowed, else expanded)."""
    integer = name in INTEGER_FIELDS
    if isinstance(raw, Mapping):
        rng = _range(name, raw, integer)
        if rng.num is None and rng.step is None:
            if continuous_ok:
                _check_values(name, np.array([rng.start, rng.stop]))
                return rng
            why = "a grid" if mode == "grid" else "a device field (each value is a device variant)"
            raise SweepError(f"sweep axis {name!r}: range needs 'num' or 'step' in {why}")
        values = rng.values(integer)
    else:
        values = np.array([parse(name, v) for v in _as_list(name, raw)], dtype=float)
    _check_values(name, values)
    return values


def _range(name: str, raw: Mapping, integer: bool) -> Range:
    unknown = set(raw) - {"start", "stop", "num", "step", "log"}
    if unknown:
        raise SweepError(f"sweep axis {name!r}: unknown range key(s) {sorted(unknown)}; "
                         "use start, stop, num or step, log")
    if "start" not in raw or "stop" not in raw:
        raise SweepError(f"sweep axis {name!r}: a range needs 'start' and 'stop', got {dict(raw)}")
    start, stop = _scenario_value(name, raw["start"]), _scenario_value(name, raw["stop"])
    num, step, log = raw.get("num"), raw.get("step"), bool(raw.get("log", False))
    if stop < start:
        raise SweepError(f"sweep axis {name!r}: empty range, start {start:g} > stop {stop:g}")
    if num is not None and step is not None:
        raise SweepError(f"sweep axis {name!r}: give 'num' or 'step', not both")
    if num is not None and (isinstance(num, bool) or not isinstance(num, int) or num < 1):
        raise SweepError(f"sweep axis {name!r}: empty range, num = {num!r} must be a whole number >= 1")
    if step is not None and not (isinstance(step, (int, float)) and step > 0):
        raise SweepError(f"sweep axis {name!r}: step = {step!r} must be a number > 0")
    if log and (start <= 0 or step is not None):
        raise SweepError(f"sweep axis {name!r}: a log range needs start > 0 and num, got start {start:g}")
    if integer and math.ceil(start) > math.floor(stop):
        raise SweepError(f"sweep axis {name!r}: empty range, no whole number between {start:g} and {stop:g}")
    count = num if num is not None else ((stop - start) / step + 1 if step is not None else 0)
    if count > MAX_AXIS_VALUES:
        raise SweepError(f"sweep axis {name!r}: the range has {count:,.0f} values; at most {MAX_AXIS_VALUES:,} "
                         "per axis")
    return Range(float(start), float(stop), num, None if step is None else float(step), log)


def _scenario_value(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise SweepError(f"sweep axis {name!r}: {str(value)[:40]!r} is not a number")
    if isinstance(value, int) and abs(value) > 10**300:
        raise SweepError(f"sweep axis {name!r}: a {len(str(value))}-digit number is out of range")
    if not math.isfinite(float(value)):
        raise SweepError(f"sweep axis {name!r}: {value!r} is not a finite number")
    return float(value)


def _device_value(name: str, value) -> float:
    """Device fields take SI numbers or human quantities ("4.8 TB/s"), parsed here at the edge."""
    if isinstance(value, str):
        return units.parse(value, _dimension(name), name)
    return _scenario_value(name, value)


def _dimension(field: str) -> str:
    if "flops_per_s" in field:
        return "flops_per_s"
    for suffix, dim in (("_bytes_per_s", "bytes_per_s"), ("_bytes", "bytes"), ("_usd", "usd_per_hour"),
                        ("_w", "watts"), ("_s", "seconds")):
        if field.endswith(suffix):
            return dim
    raise SweepError(f"sweep axis {field!r}: a count, give plain numbers")


def _check_values(name: str, values: np.ndarray) -> None:
    if name in SCENARIO_FIELDS:
        Scenario(**{name: values})  # the Scenario's own checks name the field and the bad value
    elif not np.all(np.isfinite(values)) or np.any(values < 0):
        raise SweepError(f"sweep axis {name!r}: {values[~(np.isfinite(values) & (values >= 0))][0]!r} "
                         "must be a finite number >= 0")


# -- constraints and objectives -------------------------------------------------------------------
_OPS = {"<=": np.less_equal, ">=": np.greater_equal, "<": np.less, ">": np.greater, "==": np.equal,
        "!=": np.not_equal}
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|==|!=|<|>)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Constraint:
    """A filter `column op value`, e.g. ``ttft_s <= 0.5``; a bare column name means ``== true``."""

    column: str
    op: str
    value: float

    def mask(self, columns) -> np.ndarray:
        """Rows that satisfy the constraint; `columns` maps names to arrays (a dict or a DataFrame)."""
        return _OPS[self.op](np.asarray(columns[self.column]), self.value)

    def __str__(self) -> str:
        return f"{self.column} {self.op} {self.value:g}"

    @classmethod
    def parse(cls, text: str) -> "Constraint":
        if re.fullmatch(r"\s*[A-Za-z_][\w.]*\s*", text):
            return cls(text.strip(), "==", 1.0)
        match = _CONSTRAINT.match(text)
        if not match:
            raise SweepError(f"constraint {text!r}: expected 'column <= value' (or >=, <, >, ==, !=)")
        return cls(match[1], match[2], _constraint_value(match[1], match[3]))


def _constraint_value(column: str, value) -> float:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return float(value.lower() == "true")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SweepError(f"constraint on {column!r}: {value!r} is not a number") from None
    if math.isnan(number):
        raise SweepError(f"constraint on {column!r}: value is NaN")
    return number


def parse_constraints(raw) -> tuple[Constraint, ...]:
    """From a list of strings, or a mapping {column: true | {max: x, min: y} | "<= x"}."""
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = [part for part in raw.split(",") if part.strip()]
    if isinstance(raw, Mapping):
        return tuple(c for column, rule in raw.items() for c in _constraints_of(column, rule))
    return tuple(c if isinstance(c, Constraint) else Constraint.parse(str(c)) for c in raw)


def _constraints_of(column: str, rule) -> list[Constraint]:
    if isinstance(rule, bool):
        return [Constraint(column, "==", float(rule))]
    if isinstance(rule, str):
        return [Constraint.parse(f"{column} {rule}")]
    if isinstance(rule, Mapping):
        unknown = set(rule) - {"max", "min"}
        if unknown or not rule:
            raise SweepError(f"constraint on {column!r}: expected keys max and/or min, got {dict(rule)}")
        return [Constraint(column, "<=" if k == "max" else ">=", _constraint_value(column, v)) for k, v in rule.items()]
    raise SweepError(f"constraint on {column!r}: {rule!r} is not true/false, '<= x' or {{max: x, min: y}}")


@dataclass(frozen=True)
class Objective:
    """A column to maximise ("max") or minimise ("min")."""

    column: str
    sense: str

    def __str__(self) -> str:
        return f"{self.column}:{self.sense}"


def parse_objectives(raw) -> tuple[Objective, ...]:
    """From "a:max,b:min", a list of such strings, or a mapping {column: max | min}."""
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = [part for part in raw.split(",") if part.strip()]
    pairs = list(raw.items()) if isinstance(raw, Mapping) else [
        (o.column, o.sense) if isinstance(o, Objective) else _split_objective(str(o)) for o in raw]
    out = []
    for column, sense in pairs:
        if sense not in ("max", "min"):
            raise SweepError(f"pareto objective {column!r}: direction {sense!r} must be 'max' or 'min'")
        out.append(Objective(column, sense))
    if len({o.column for o in out}) != len(out):
        raise SweepError(f"pareto: an objective is listed twice in {[str(o) for o in out]}")
    return tuple(out)


def _split_objective(text: str) -> tuple[str, str]:
    column, sep, sense = text.strip().rpartition(":")
    if not sep or not column:
        raise SweepError(f"pareto objective {text!r}: expected 'column:max' or 'column:min'")
    return column.strip(), sense.strip()


# -- the spec ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepSpec:
    """What to sweep: axes (model and device axes first), grid or random mode, filters, objectives,
    and the engine profile that prices every row (unless an `engine` axis varies it)."""

    axes: tuple[Axis, ...]
    mode: str = "grid"
    n: int = 0
    seed: int = 0
    constraints: tuple[Constraint, ...] = ()
    objectives: tuple[Objective, ...] = ()
    engine: Engine = dataclasses.field(default_factory=lambda: engines.load(engines.DEFAULT_ENGINE))

    @classmethod
    def from_dict(cls, data: Mapping) -> "SweepSpec":
        """Build from the YAML structure: {axes: {...}, mode, n, seed, constraints, pareto, engine}."""
        if not isinstance(data, Mapping):
            raise SweepError(f"sweep spec: expected a mapping, got {type(data).__name__}")
        unknown = set(data) - set(SPEC_KEYS)
        if unknown:
            raise SweepError(f"sweep spec: unknown key(s) {sorted(unknown)}; known: {', '.join(SPEC_KEYS)}")
        if not isinstance(data.get("axes"), Mapping) or not data["axes"]:
            raise SweepError("sweep spec: 'axes' must map field names to values, e.g. {batch: [1, 8, 64]}")
        return build(data["axes"], data.get("mode", "grid"), data.get("n", 0), data.get("seed", 0),
                     data.get("constraints"), data.get("pareto"), data.get("engine"))

    @classmethod
    def from_yaml(cls, path) -> "SweepSpec":
        from hardware import inputs

        try:
            data = inputs.load_yaml(path, "sweep spec")
        except inputs.InputError as err:
            raise SweepError(str(err)) from None
        return cls.from_dict(data or {})

    @property
    def size(self) -> int:
        """Number of rows: the grid's product of axis lengths, or the random sample size."""
        return self.n if self.mode == "random" else math.prod(len(a) for a in self.axes)

    @property
    def group_axes(self) -> tuple[Axis, ...]:
        return tuple(a for a in self.axes if a.kind != "scenario")

    @property
    def scenario_axes(self) -> tuple[Axis, ...]:
        return tuple(a for a in self.axes if a.kind == "scenario")

    @property
    def engine_axis(self) -> Axis | None:
        """The `engine` axis when the sweep varies the engine, else None (every row uses `engine`)."""
        return next((a for a in self.axes if a.kind == "engine"), None)

    def describe(self) -> str:
        parts = [f"{a.name}: {len(a) if a.discrete else 'continuous'}" for a in self.axes]
        engine = "" if self.engine_axis else f", engine {self.engine.name}"
        combos = _finite_combinations(self)[2]
        if self.mode == "random" and combos and not _open_axes(self):
            return (f"random {self.size:,} of {combos:,} combinations, without replacement ({', '.join(parts)})"
                    f"{engine}")
        return f"{self.mode} of {self.size:,} rows ({', '.join(parts)}){engine}"


def build(axes: Mapping, mode: str = "grid", n: int = 0, seed: int = 0, constraints=None, pareto=None,
          engine: Engine | str | None = None) -> SweepSpec:
    """Validate and build a SweepSpec (errors name the axis, key or value).

    engine: the profile pricing every row (default DEFAULT_ENGINE, a serving engine); to compare
    engines give an `engine` axis instead (not both)."""
    if mode not in ("grid", "random"):
        raise SweepError(f"sweep mode: {mode!r} must be 'grid' or 'random'")
    if mode == "random" and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise SweepError(f"sweep n: {n!r} must be a whole number >= 1 for a random sweep")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SweepError(f"sweep seed: {seed!r} must be a whole number >= 0")
    for required in ("model", "hardware"):
        if required not in axes:
            raise SweepError(f"sweep axes: {required!r} is required (a catalog name or a list of them)")
    if mode == "random" and n > MAX_ROWS:
        raise SweepError(f"sweep n: {n:,} rows exceed the limit of {MAX_ROWS:,} rows per sweep")
    if not isinstance(axes, Mapping) or not all(isinstance(k, str) for k in axes):
        raise SweepError("sweep axes: must map field names (text) to values")
    if engine is not None and "engine" in axes:
        raise SweepError("sweep engine: give one engine or an 'engine' axis, not both")
    fixed = _engine(engines.DEFAULT_ENGINE if engine is None else engine, "sweep engine")
    built = [make_axis(name, raw, mode) for name, raw in axes.items()]
    order = {"model": 0, "hardware": 1, "device": 2, "engine": 3, "scenario": 4}
    built.sort(key=lambda a: order[a.kind])  # stable: user order within kinds
    spec = SweepSpec(tuple(built), mode, int(n) if mode == "random" else 0, int(seed),
                     parse_constraints(constraints), parse_objectives(pareto), fixed)
    if spec.size > MAX_ROWS:
        raise SweepError(f"sweep: {spec.size:,} rows exceed the limit of {MAX_ROWS:,} rows per sweep (about 15 "
                         "minutes at 1e6 rows/s); narrow an axis or sample with --random N")
    combos = _finite_combinations(spec)[2]
    if mode == "random" and not _open_axes(spec) and n > combos:
        raise SweepError(f"sweep n: {n:,} exceeds the {combos:,} distinct combinations of these axes (rows are "
                         f"drawn without replacement); ask for at most {combos:,} or run the grid")
    return spec


def grid(constraints=None, pareto=None, **axes) -> SweepSpec:
    """A full grid over the given axes (keyword per field; `engine=[...]` is an engine axis)."""
    return build(axes, "grid", 0, 0, constraints, pareto)


def random(n: int, seed: int = 0, constraints=None, pareto=None, **axes) -> SweepSpec:
    """n rows, each axis drawn independently (uniform over a list, uniform or log-uniform over a range)."""
    return build(axes, "random", n, seed, constraints, pareto)


# -- rows of a sweep --------------------------------------------------------------------------------
_MASK64 = (1 << 64) - 1


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's output function (Steele, Lea & Flood 2014, "Fast splittable pseudorandom number
    generators"); uint64 arithmetic wraps, as the generator intends."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform(seed: int, axis: int, index: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) draws for rows `index` of one axis: position index of a splitmix64 stream whose
    start depends on (seed, axis). A pure function of the row, so any chunking gives the same rows."""
    golden = 0x9E3779B97F4A7C15
    start = int(_mix64(np.array([(seed * golden + (axis + 1) * 0xD1B54A32D192ED03) & _MASK64],
                                dtype=np.uint64))[0])
    z = np.uint64(start) + (index.astype(np.uint64) + np.uint64(1)) * np.uint64(golden)
    return (_mix64(z) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def decode(spec: SweepSpec, index: np.ndarray) -> dict[str, np.ndarray]:
    """For rows `index`: codes (positions in `values`) of discrete axes, values of continuous ones."""
    if spec.mode == "grid":
        digits = np.unravel_index(index, [len(a) for a in spec.axes]) if spec.axes else ()
        return {a.name: d for a, d in zip(spec.axes, digits)}
    out = {}
    finite, cards, combos = _finite_combinations(spec)
    with np.errstate(over="ignore"):
        if finite:
            # without replacement: row i takes combination perm(i mod combos) of the finite axes, a
            # fresh permutation for each pass over them (a pure function of the row, like the draws)
            cycle, position = np.divmod(index.astype(np.int64), combos)
            digits = np.unravel_index(permute(spec.seed, cycle, position, combos), cards)
            for a, d in zip(finite, digits):
                out[a.name] = d if a.discrete else math.ceil(a.range.start) + d.astype(float)
        for i, a in enumerate(spec.axes):
            if a.name in out:
                continue
            u = uniform(spec.seed, i, index)
            out[a.name] = np.minimum((u * len(a)).astype(np.int64), len(a) - 1) if a.discrete else \
                a.range.at(u, a.integer)
    return out


#: Above this many combinations a random sweep draws each axis independently: repeats are then
#: vanishingly rare, and the permutation's index arithmetic stays inside int64.
_PERMUTE_MAX = 1 << 62


def _finite_axes(spec: SweepSpec) -> list:
    """Axes with finitely many values: lists, and whole-number ranges sampled uniformly."""
    return [a for a in spec.axes if a.discrete or (a.integer and not a.range.log)]


def _open_axes(spec: SweepSpec) -> list:
    finite = {a.name for a in _finite_axes(spec)}
    return [a for a in spec.axes if a.name not in finite]


def _finite_combinations(spec: SweepSpec) -> tuple[list, list, int]:
    """(finite axes, their sizes, number of combinations); ([], [], 0) when there are too many to permute."""
    finite = _finite_axes(spec)
    cards = [len(a) if a.discrete else math.floor(a.range.stop) - math.ceil(a.range.start) + 1 for a in finite]
    combos = math.prod(cards)
    if spec.mode != "random" or not finite or combos > _PERMUTE_MAX:
        return [], [], 0
    return finite, cards, combos


def permute(seed: int, cycle: np.ndarray, position: np.ndarray, size: int) -> np.ndarray:
    """A pseudorandom permutation of 0..size-1 (one per `cycle`), applied to `position`: a 4-round
    Feistel network on the smallest even number of bits covering size, cycle-walked back into range
    (Black & Rogaway 2002, "Ciphers with arbitrary finite domains")."""
    half = max(1, (max(size - 1, 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)
    keys = [_mix64(np.uint64((seed * 0x9E3779B97F4A7C15 + (r + 1) * 0xD1B54A32D192ED03) & _MASK64)
                   + cycle.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9)) for r in range(4)]

    def encrypt(x: np.ndarray, k: list) -> np.ndarray:
        left, right = x >> np.uint64(half), x & mask
        for key in k:
            left, right = right, left ^ (_mix64(right ^ key) & mask)
        return (left << np.uint64(half)) | right

    y = encrypt(position.astype(np.uint64), keys)
    todo = np.flatnonzero(y >= np.uint64(size))
    while todo.size:
        y[todo] = encrypt(y[todo], [k[todo] if np.ndim(k) else k for k in keys])
        todo = todo[y[todo] >= np.uint64(size)]
    return y.astype(np.int64)


def _device(spec: SweepSpec, codes: dict[str, int]) -> Hardware:
    """The device of one group: the hardware axis entry with the device-field values applied."""
    hw = spec.axes[1].values[codes["hardware"]]
    changes, flops = {}, dict(hw.flops_per_s)
    fields = [a for a in spec.group_axes if a.kind == "device"]
    for a in fields:
        value = a.values[codes[a.name]]
        if a.name.startswith("flops_per_s."):
            flops[a.name.split(".", 1)[1]] = value
        else:
            field_type = next(f.type for f in dataclasses.fields(Hardware) if f.name == a.name)
            changes[a.name] = int(value) if field_type == "int" else float(value)
    return dataclasses.replace(hw, flops_per_s=flops, **changes) if fields else hw


def evaluate_rows(spec: SweepSpec, start: int, stop: int):
    """Rows start..stop-1 of the sweep as a DataFrame: inputs, every `evaluate` column, derived ones,
    and `feasible` (every constraint holds, prompt + gen fits the model's context and tp is one the model
    and node allow: `perfmodel.checks`)."""
    return to_frame(spec, evaluate_columns(spec, start, stop))


def evaluate_columns(spec: SweepSpec, start: int, stop: int) -> dict[str, np.ndarray]:
    """The same rows as flat numpy columns; model / hardware / bound columns hold integer codes
    (`to_frame` turns them into categoricals), so a chunk that keeps few rows builds no big frame."""
    cols = _unfiltered_columns(spec, start, stop)
    cols["feasible"] = _feasible(cols, spec.constraints)
    return cols


def _unfiltered_columns(spec: SweepSpec, start: int, stop: int) -> dict[str, np.ndarray]:
    index = np.arange(start, stop, dtype=np.int64)
    drawn = decode(spec, index)
    groups = spec.group_axes
    key = np.ravel_multi_index([drawn[a.name] for a in groups], [len(a) for a in groups])
    order = np.argsort(key, kind="stable")  # grid keys are already sorted: linear time
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    inputs = {a.name: (np.asarray(a.values, dtype=float)[drawn[a.name]] if a.discrete else drawn[a.name])
              for a in spec.scenario_axes}
    cols: dict[str, np.ndarray] = {"index": index}
    cols.update({a.name: drawn[a.name] if a.kind != "device" else np.asarray(a.values, dtype=float)[drawn[a.name]]
                 for a in groups})
    if spec.engine_axis is None:  # every row names its engine, swept or not
        cols["engine"] = np.zeros(len(index), dtype=np.int8)
    for rows in np.split(order, bounds):
        codes = {a.name: int(drawn[a.name][rows[0]]) for a in groups}
        # the stable sort keeps a group's rows ascending, so this test finds a contiguous run (a grid's
        # groups are): slices give views, not copies
        if rows[-1] - rows[0] + 1 == len(rows):
            rows = slice(int(rows[0]), int(rows[-1]) + 1)
        _fill(cols, rows, len(index), spec, codes, {k: v[rows] for k, v in inputs.items()})
    return cols


def to_frame(spec: SweepSpec, cols: dict[str, np.ndarray], rows: np.ndarray | None = None):
    """A DataFrame of `cols` (optionally only `rows`), codes turned into categoricals."""
    import pandas as pd

    pick = (lambda v: v) if rows is None else (lambda v: v[rows])
    labels = {a.name: _labels(a, pick(cols[a.name])) for a in spec.group_axes if a.kind != "device"}
    if spec.engine_axis is None and "engine" in cols:
        labels["engine"] = pd.Categorical.from_codes(pick(cols["engine"]), categories=[spec.engine.name])
    return pd.DataFrame({k: labels[k] if k in labels else _bound_column(pick(v)) if k.endswith("_bound")
                         else pick(v) for k, v in cols.items()})


def _fill(cols: dict, rows, n: int, spec: SweepSpec, codes: dict, inputs: dict) -> None:
    """Evaluate one (model, device, engine) group in one call and scatter its columns into `cols`."""
    model, hw = spec.axes[0].values[codes["model"]], _device(spec, codes)
    axis = spec.engine_axis
    engine = axis.values[codes["engine"]] if axis is not None else spec.engine
    result = evaluate(model, hw, Scenario(**inputs), engine)
    tp, throughput = result["tp"], result["throughput_tok_s"]
    usd_per_hour = hw.price_per_hour_usd * tp
    result.update(devices=tp, usd_per_hour=usd_per_hour, throughput_per_device_tok_s=throughput / tp,
                  tok_per_usd=throughput * 3600.0 / usd_per_hour,
                  context_ok=result["prompt"] + result["gen"] <= model.max_context,
                  tp_ok=tp_allowed(model, hw, tp))
    for k, v in result.items():
        v = _bound_codes(v) if k.endswith("_bound") else v
        if k not in cols:
            cols[k] = np.empty(n, dtype=v.dtype)
        cols[k][rows] = v


def _labels(axis: Axis, codes: np.ndarray):
    import pandas as pd

    # categories keep their axis order, so frames from any chunk concatenate as categoricals
    return pd.Categorical.from_codes(codes, categories=pd.Index(_unique_labels(axis.labels)))


def _unique_labels(labels: tuple) -> list[str]:
    """Two entries with one name (e.g. a preset and an edited copy) still get distinct labels."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return out


def _bound_codes(names: np.ndarray) -> np.ndarray:
    """Bound names ("compute", "memory"...) as int8 codes into BOUNDS: 1 byte a row, not 32."""
    if hasattr(names, "codes"):  # perfmodel.evaluate's categorical
        return np.asarray(names.codes, dtype=np.int8)
    codes = np.full(len(names), -1, dtype=np.int8)
    for i, bound in enumerate(BOUNDS):
        codes[names == bound] = i
    return codes


def _bound_column(codes: np.ndarray):
    import pandas as pd

    return pd.Categorical.from_codes(codes, categories=list(BOUNDS))


def _feasible(cols: dict[str, np.ndarray], constraints: tuple[Constraint, ...]) -> np.ndarray:
    ok = cols["context_ok"] & cols["tp_ok"]
    for c in constraints:
        ok &= c.mask(cols)
    return ok


def check_columns(spec: SweepSpec, columns) -> None:
    """Constraints and objectives must name output columns (checked before any chunk runs)."""
    _check_names([c.column for c in spec.constraints] + [o.column for o in spec.objectives], columns)


def _check_names(names, columns) -> None:
    for name in names:
        if name not in columns:
            raise SweepError(f"sweep: unknown column {name!r} in a constraint or objective; "
                             f"columns: {', '.join(columns)}")


# -- Pareto fronts ----------------------------------------------------------------------------------
def pareto_front(frame, objectives):
    """The front rows of `frame` (exact), best first by the first objective, then by sweep index."""
    objectives = parse_objectives(objectives) if not (objectives and isinstance(objectives[0], Objective)) \
        else tuple(objectives)
    if not objectives:
        raise SweepError("pareto: no objectives given (e.g. 'throughput_tok_s:max,tpot_s:min')")
    _check_names([o.column for o in objectives], list(frame.columns))
    points = np.column_stack([frame[o.column].to_numpy(dtype=float) for o in objectives]) if len(frame) else \
        np.empty((0, len(objectives)))
    return sort_front(frame[pareto_mask(points, [o.sense for o in objectives])], objectives)


def sort_front(front, objectives: tuple[Objective, ...]):
    """Best first by the first objective, then the next ones, then by sweep index."""
    keys = [o.column for o in objectives] + (["index"] if "index" in front.columns else [])
    ascending = [o.sense == "min" for o in objectives] + ([True] if "index" in front.columns else [])
    return front.sort_values(keys, ascending=ascending, kind="stable").reset_index(drop=True)


# -- running a sweep in chunks ----------------------------------------------------------------------
@dataclass(frozen=True)
class ChunkResult:
    """What one chunk sends back: its counts, the rows kept, and its own front (feasible rows)."""

    start: int
    rows: int
    feasible: int
    kept: Any  # DataFrame or None
    front: Any  # DataFrame or None


class Chunks:
    """The (start, stop) row ranges of a sweep, computed on demand (a sequence: len, index, iterate)."""

    def __init__(self, size: int, rows: int):
        self.size, self.rows = size, rows

    def __len__(self) -> int:
        return -(-self.size // self.rows)

    def __getitem__(self, i: int) -> tuple[int, int]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return i * self.rows, min((i + 1) * self.rows, self.size)

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def chunks(spec: SweepSpec, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Chunks:
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or not 1 <= chunk_rows <= 10**7:
        raise SweepError(f"chunk_rows: {chunk_rows!r} must be a whole number from 1 to 10,000,000")
    return Chunks(spec.size, int(chunk_rows))


def run_chunk(spec: SweepSpec, start: int, stop: int, keep: str = "all") -> ChunkResult:
    """Evaluate rows start..stop-1 and reduce them as `keep` says (runs on Dask workers too)."""
    cols = evaluate_columns(spec, start, stop)
    feasible = np.flatnonzero(cols["feasible"])
    front = None
    if spec.objectives:
        points = np.column_stack([cols[o.column][feasible] for o in spec.objectives])
        front_rows = feasible[pareto_mask(points, [o.sense for o in spec.objectives])]
        front = sort_front(to_frame(spec, cols, front_rows), spec.objectives)
    kept = {"all": lambda: to_frame(spec, cols), "feasible": lambda: to_frame(spec, cols, feasible),
            "front": lambda: None, "none": lambda: None}[keep]()
    return ChunkResult(start, stop - start, len(feasible), kept, front)


@dataclass(frozen=True)
class SweepResult:
    """Rows kept (all, feasible only, or none), the exact Pareto front, and counts."""

    spec: SweepSpec
    frame: Any  # DataFrame of kept rows, or None
    front: Any  # DataFrame of the Pareto front (feasible rows), or None without objectives
    rows: int
    feasible_rows: int
    seconds: float

    @property
    def feasible(self):
        """Kept rows that satisfy every constraint (and fit the model's context)."""
        if self.frame is None:
            raise SweepError("sweep result: rows were not kept (keep='front' or 'none', or not collected)")
        return self.frame[self.frame["feasible"].to_numpy()].reset_index(drop=True)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else math.inf

    def plot_front(self, path=None, ax=None):
        """Scatter the feasible rows and the front over the first two objectives (PNG if `path`)."""
        return plot_front(self.front, self.spec.objectives, self.frame if self.frame is not None else None,
                          path, ax)

    def summary(self) -> str:
        rate = f"{self.rows_per_s:,.0f} rows/s" if math.isfinite(self.rows_per_s) else "n/a"
        line = f"{self.rows:,} scenarios, {self.feasible_rows:,} feasible ({self.seconds:.2f} s, {rate})"
        if self.spec.constraints:
            line += "\nconstraints: " + "; ".join(str(c) for c in self.spec.constraints)
        if self.front is not None:
            line += f"\nPareto front over {', '.join(str(o) for o in self.spec.objectives)}: {len(self.front)} rows"
        return line


class Collector:
    """Takes chunk results in sweep order; streams kept rows to Parquet / CSV; merges fronts."""

    def __init__(self, spec: SweepSpec, keep: str = "all", path=None, csv_path=None, collect: bool = True):
        if keep not in KEEP_MODES:
            raise SweepError(f"keep: {keep!r} must be one of {KEEP_MODES}")
        if keep == "front" and not spec.objectives:
            raise SweepError("keep='front' needs pareto objectives in the spec")
        self.spec, self.keep, self.path, self.csv_path, self.collect = spec, keep, path, csv_path, collect
        self.frames, self.fronts, self.empty_front, self.rows, self.feasible = [], [], None, 0, 0
        self.next_start, self._parquet, self._csv_started, self.t0 = 0, None, False, time.perf_counter()

    def add(self, chunk: ChunkResult) -> None:
        if chunk.start != self.next_start:
            raise RuntimeError(f"chunk at row {chunk.start} arrived before row {self.next_start}")
        self.next_start += chunk.rows
        self.rows, self.feasible = self.rows + chunk.rows, self.feasible + chunk.feasible
        if chunk.front is not None and len(chunk.front):
            self.fronts.append(chunk.front)
        elif chunk.front is not None and self.empty_front is None:
            self.empty_front = chunk.front  # the columns of an empty front, should no chunk have one
        if chunk.kept is not None:
            self._write(chunk.kept)
            if self.collect:
                self.frames.append(chunk.kept)

    def _write(self, frame) -> None:
        try:
            self._write_chunk(frame)
        except OSError as err:
            where = self.path if self.path is not None else self.csv_path
            raise SweepError(f"output: writing {str(where)!r} failed ({err.strerror or err})") from None

    def _write_chunk(self, frame) -> None:
        if self.path is not None:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(str(self.path), table.schema)
            self._parquet.write_table(table)
        if self.csv_path is not None:
            frame.to_csv(self.csv_path, mode="a" if self._csv_started else "w", header=not self._csv_started,
                         index=False)
            self._csv_started = True

    def finish(self) -> SweepResult:
        import pandas as pd

        front = None
        if self.spec.objectives:
            front = pareto_front(_distinct(pd.concat(self.fronts, ignore_index=True), self.spec), self.spec.objectives) \
                if self.fronts else self.empty_front
            if self.keep == "front" and front is not None:
                self._write(front)
        if self._parquet is not None:
            try:
                self._parquet.close()
            except OSError as err:
                raise SweepError(f"output: writing {str(self.path)!r} failed ({err.strerror or err})") from None
        frame = pd.concat(self.frames, ignore_index=True) if self.frames else None
        if self.keep == "front" and self.collect:
            frame = front
        return SweepResult(self.spec, frame, front, self.rows, self.feasible, time.perf_counter() - self.t0)


def check_collect(spec: SweepSpec, keep: str, collect: bool) -> None:
    """Refuse, before any work, to hold more than MAX_COLLECT_ROWS rows in memory."""
    if collect and keep in ("all", "feasible") and spec.size > MAX_COLLECT_ROWS:
        raise SweepError(f"sweep: keeping {spec.size:,} rows in memory exceeds the limit of {MAX_COLLECT_ROWS:,} "
                         "(about 2 GB); stream them to a file (-o PATH, collect=False) or keep='front'")


def _distinct(frame, spec: SweepSpec):
    """One row per configuration (a random sweep's open axes can repeat a whole-number value)."""
    keys = [a.name for a in spec.axes if a.name in frame.columns]
    return frame.drop_duplicates(keys, keep="first") if spec.mode == "random" and keys else frame


def prepare(spec: SweepSpec) -> None:
    """Fail fast, before any chunk runs: evaluate row 0 to learn the columns, then check names."""
    if spec.size == 0:
        raise SweepError("sweep: no rows to evaluate")
    check_columns(spec, list(_unfiltered_columns(spec, 0, 1)) + ["feasible"])


def run(spec: SweepSpec, chunk_rows: int = DEFAULT_CHUNK_ROWS, keep: str = "all", path=None, csv_path=None,
        collect: bool = True, progress: bool = False) -> SweepResult:
    """Evaluate the sweep here, chunk by chunk (memory bounded by the chunk size unless collecting).

    keep: rows to keep and write: "all" (with a `feasible` column), "feasible", "front" (only the Pareto
    front) or "none". path / csv_path: stream the kept rows to Parquet / CSV. collect=False keeps
    nothing in memory but the front.
    """
    prepare(spec)
    check_collect(spec, keep, collect)
    collector = Collector(spec, keep, path, csv_path, collect)
    parts = chunks(spec, chunk_rows)
    with progress_bar(spec.size, progress) as bar:
        for lo, hi in parts:
            collector.add(run_chunk(spec, lo, hi, keep))
            bar.update(hi - lo)
    return collector.finish()


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n):
        pass


def progress_bar(total: int, enabled: bool):
    """tqdm on stderr when asked for and installed; otherwise nothing."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, unit=" rows", unit_scale=True, desc="sweep", leave=False)


# -- plots ------------------------------------------------------------------------------------------
def plot_front(front, objectives, frame=None, path=None, ax=None, max_points: int = 20000):
    """Front of the first two objectives as a step line over a sample of the feasible rows; a third
    objective colours the front. Saves a PNG when `path` is given; returns the matplotlib Axes."""
    objectives = parse_objectives(objectives) if not (objectives and isinstance(objectives[0], Objective)) \
        else tuple(objectives)
    if front is None or not len(front) or len(objectives) < 2:
        raise SweepError("plot: needs a non-empty Pareto front over at least two objectives")
    from matplotlib.figure import Figure  # a standalone figure: no pyplot state, no backend switch

    x, y = objectives[0].column, objectives[1].column
    if ax is None:
        ax = Figure(figsize=(7, 4.5)).subplots()
    fig = ax.figure
    if frame is not None and len(frame):
        feasible = frame[frame["feasible"].to_numpy()] if "feasible" in frame else frame
        sample = feasible.sample(max_points, random_state=0) if len(feasible) > max_points else feasible
        ax.scatter(sample[x], sample[y], s=4, color="0.8", label=f"feasible ({len(feasible):,})")
    ordered = front.sort_values(x)
    color = front[objectives[2].column] if len(objectives) > 2 else "C3"
    points = ax.scatter(front[x], front[y], s=18, c=color, zorder=3, label=f"Pareto front ({len(front)})")
    if len(objectives) == 2:
        ax.step(ordered[x], ordered[y], where="post", color="C3", lw=1)
    elif len(front):
        fig.colorbar(points, ax=ax, label=f"{objectives[2].column} ({objectives[2].sense})")
    for setter, column, sense in ((ax.set_xlabel, x, objectives[0].sense), (ax.set_ylabel, y, objectives[1].sense)):
        setter(f"{column} ({'higher' if sense == 'max' else 'lower'} is better)")
    _log_if_wide(ax, front, frame, x, y)
    ax.legend(loc="best", fontsize=8)
    if path is not None:
        from hardware import inputs

        fig.tight_layout()
        try:
            inputs.save_figure(fig, path, "plot", dpi=120)
        except inputs.InputError as err:
            raise SweepError(str(err)) from None
    return ax


def _log_if_wide(ax, front, frame, x, y) -> None:
    data = frame if frame is not None and len(frame) else front
    for column, setter in ((x, ax.set_xscale), (y, ax.set_yscale)):
        values = data[column].to_numpy(dtype=float)
        values = values[np.isfinite(values) & (values > 0)]
        if len(values) and values.max() / values.min() > 100:  # over two decades: log scale
            setter("log")
