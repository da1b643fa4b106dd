"""A workload scenario: what is served, validated on construction.

Every field may be a scalar or a numpy array; arrays broadcast together, so one `Scenario` can hold a
million configurations and the cost model evaluates all of them in one call.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np


#: Allowed range of every field (inclusive).
RANGES = {
    "batch": (1, 10**7), "prompt": (1, 10**9), "gen": (1, 10**9), "tp": (1, 4096), "samples": (1, 10**6),
    "quant_group": (1, 10**9), "sparse_budget": (0, 10**9),
    "w_bits": (1, 32), "a_bits": (1, 32), "kv_bits": (1, 32),
}
BIT_FIELDS = ("w_bits", "a_bits", "kv_bits")
#: Most configurations one Scenario may hold (a sweep holds any number, chunk by chunk).
MAX_SIZE = 10**8


class ScenarioError(ValueError):
    """An impossible scenario value; the message names the field and the value."""


@dataclass(frozen=True)
class Scenario:
    """One (or a broadcast array of) serving configuration(s).

    batch: concurrent requests; prompt: prompt tokens per request; gen: generated tokens per sample;
    w_bits / a_bits / kv_bits: weight, activation and KV-cache precision; tp: tensor-parallel degree;
    samples: best-of-N samples per request (they share the prompt's KV); sparse_budget: KV tokens read
    per decode step by block top-k sparse attention (0 = dense); quant_group: weights per scale group
    for sub-8-bit weights (each group stores a 16-bit scale and a 16-bit zero point).

    Allowed values are in RANGES (inclusive); counts are whole numbers, bit widths may be fractional
    (the average width of a mixed-precision allocation). Arrays of different lengths must broadcast.
    """

    batch: object = 1
    prompt: object = 1024
    gen: object = 128
    w_bits: object = 16
    a_bits: object = 16
    kv_bits: object = 16
    tp: object = 1
    samples: object = 1
    sparse_budget: object = 0
    quant_group: object = 128

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = _as_array(getattr(self, f.name), f.name)
            object.__setattr__(self, f.name, value if value.ndim else value[()])
        for name, (low, high) in RANGES.items():
            whole = name not in BIT_FIELDS
            _check(getattr(self, name), name, lambda x: (x >= low) & (x <= high) & ((x == np.floor(x)) | (not whole)),
                   f"{'a whole number' if whole else 'a number of bits'} from {low:,} to {high:,}")
        try:
            shape = np.broadcast_shapes(*(np.shape(getattr(self, f.name)) for f in dataclasses.fields(self)))
        except ValueError:
            shapes = {f.name: np.shape(getattr(self, f.name)) for f in dataclasses.fields(self)
                      if np.ndim(getattr(self, f.name))}
            raise ScenarioError("arrays of different shapes do not broadcast: "
                                + ", ".join(f"{k} {v}" for k, v in shapes.items())) from None
        # the broadcast shape, fixed at construction (every metric of a prediction asks for it)
        object.__setattr__(self, "_shape", shape)
        if math.prod(shape) > MAX_SIZE:
            raise ScenarioError(f"scenario: {math.prod(shape):,} configurations exceed the limit of {MAX_SIZE:,} "
                                "in one Scenario; use planning.sweep, which evaluates in chunks")

    @classmethod
    def from_checked(cls, **fields) -> "Scenario":
        """A Scenario of values already checked (slices of a validated Scenario, taken by the cost
        model's evaluation in chunks): no second validation pass over millions of values."""
        scenario = object.__new__(cls)
        for name, value in fields.items():
            object.__setattr__(scenario, name, value)
        object.__setattr__(scenario, "_shape", np.broadcast_shapes(*(np.shape(v) for v in fields.values())))
        return scenario

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def size(self) -> int:
        return math.prod(self._shape)

    def replace(self, **changes) -> "Scenario":
        return dataclasses.replace(self, **changes)

    def columns(self) -> dict[str, np.ndarray]:
        """Every field broadcast to the scenario shape and flattened (for DataFrame columns)."""
        shape = self.shape
        if shape == ():  # one scenario: each field a one-element column (the rows of one array)
            values = np.array([getattr(self, name) for name in _FIELD_NAMES], dtype=float).reshape(-1, 1)
            return dict(zip(_FIELD_NAMES, values))
        return {name: np.broadcast_to(getattr(self, name), shape).reshape(-1) for name in _FIELD_NAMES}


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Scenario))


def _as_array(value, name: str) -> np.ndarray:
    if isinstance(value, (str, bytes, bool, np.bool_)) or (isinstance(value, (list, tuple)) and any(
            isinstance(v, (str, bytes, bool, np.bool_)) for v in value)):
        raise ScenarioError(f"{name}: {_short(value)} is not a number")
    try:
        array = np.asarray(value, dtype=np.float64)
    except OverflowError:
        raise ScenarioError(f"{name}: {_short(value)} is out of range; allowed {RANGES[name][0]:,} to "
                            f"{RANGES[name][1]:,}") from None
    except (TypeError, ValueError):
        raise ScenarioError(f"{name}: {_short(value)} is not a number") from None
    if array.dtype.kind not in "fiu" or array.ndim > 8:
        raise ScenarioError(f"{name}: {_short(value)} is not a number or an array of numbers")
    if array.size == 0:
        raise ScenarioError(f"{name}: empty array")
    return array


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check(value, name: str, ok, wanted: str) -> None:
    array = np.asarray(value)
    good = ok(array) & np.isfinite(array)
    if not np.all(good):
        bad = array[~good] if array.ndim else array
        raise ScenarioError(f"{name}: {np.ravel(bad)[0]:g} is invalid; must be {wanted}")
