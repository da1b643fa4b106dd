"""A workload scenario: what is served, validated on construction.

Every field may be a scalar or a numpy array; arrays broadcast together, so one `Scenario` can hold a
million configurations and the cost model evaluates all of them in one call.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np


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
        _check(self.batch, "batch", lambda x: (x >= 1) & (x == np.floor(x)), "a whole number >= 1")
        _check(self.prompt, "prompt", lambda x: (x >= 1) & (x == np.floor(x)), "a whole number >= 1")
        _check(self.gen, "gen", lambda x: (x >= 1) & (x == np.floor(x)), "a whole number >= 1")
        _check(self.tp, "tp", lambda x: (x >= 1) & (x == np.floor(x)), "a whole number >= 1")
        _check(self.samples, "samples", lambda x: (x >= 1) & (x == np.floor(x)), "a whole number >= 1")
        _check(self.quant_group, "quant_group", lambda x: (x >= 1) & (x == np.floor(x)), "a whole number >= 1")
        _check(self.sparse_budget, "sparse_budget", lambda x: (x >= 0) & (x == np.floor(x)), "a whole number >= 0")
        for name in ("w_bits", "a_bits", "kv_bits"):
            _check(getattr(self, name), name, lambda x: (x >= 1) & (x <= 32), "between 1 and 32 bits")

    @property
    def shape(self) -> tuple[int, ...]:
        return np.broadcast_shapes(*(np.shape(getattr(self, f.name)) for f in dataclasses.fields(self)))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def replace(self, **changes) -> "Scenario":
        return dataclasses.replace(self, **changes)

    def columns(self) -> dict[str, np.ndarray]:
        """Every field broadcast to the scenario shape and flattened (for DataFrame columns)."""
        shape = self.shape
        return {f.name: np.broadcast_to(getattr(self, f.name), shape).reshape(-1)
                for f in dataclasses.fields(self)}


def _as_array(value, name: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ScenarioError(f"{name}: {value!r} is not a number") from None
    if array.size == 0:
        raise ScenarioError(f"{name}: empty array")
    return array


def _check(value, name: str, ok, wanted: str) -> None:
    array = np.asarray(value)
    good = ok(array) & np.isfinite(array)
    if not np.all(good):
        bad = array[~good] if array.ndim else array
        raise ScenarioError(f"{name}: {np.ravel(bad)[0]:g} is invalid; must be {wanted}")
