"""The bit-allocation problem's data and result types, shared by every solver of it (bits.py's entry
point, bits_closed, bits_convex, bits_integer, bits_cost): in a module of their own so that the entry
point can import the solvers and the solvers these types without an import circle.

Loss model (BAQ, arXiv 2506.05664): a group j of n_j weights quantized to R_j bits adds

    loss_j(R_j) = n_j c_j 2^(-theta R_j)

to the layer-wise reconstruction loss, with c_j the group's loss per weight at zero bits (fitted
from one calibration pass: c_j = l_j(Rbar) / n_j * 2^(theta Rbar)) and theta about 2 (uniform
rounding noise has variance step^2 / 12, and the step halves with each extra bit; the BAQ repo
fits 1.95). A group is a layer, an input column of a layer, or any other set of weights that shares
one width. The budget on the average width is sum_j n_j R_j <= Rbar sum_j n_j.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import numpy as np

#: Default loss exponent: quantization noise power falls 4x (2^2) per extra bit.
THETA = 2.0


class InfeasibleBudgetError(ValueError):
    """A budget no allocation within the bounds can meet; says the smallest feasible value."""

    def __init__(self, budget: str, requested: float, smallest: float, unit: str = "", why: str = ""):
        self.budget, self.requested, self.smallest = budget, float(requested), float(smallest)
        why = why or "every group at its lowest allowed width"
        super().__init__(f"{budget}: {_fmt(requested, unit)} is infeasible; the smallest feasible "
                         f"{budget} is {_fmt(smallest, unit)} ({why})")


def _fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1e3:.6g} ms"
    if unit == "B":
        return f"{value / 1e9:.6g} GB"
    return f"{value:.6g}{(' ' + unit) if unit else ''}"


def wsum(weights, values) -> float:
    """sum_j w_j v_j with numpy's own SIMD loop (BLAS ddot spawns threads and is ~10x slower for
    one vector product on a busy 2-core machine). `values` may be a scalar or a bool array."""
    if np.ndim(values) == 0:
        return float(np.sum(weights)) * float(values)
    return float(np.einsum("i,i->", weights, values))


def _array(value, n: int, field_name: str) -> np.ndarray:
    try:
        arr = np.broadcast_to(np.asarray(value, dtype=float), (n,)).copy()
    except (ValueError, TypeError):
        raise ValueError(f"{field_name}: expected a number or {n} numbers, got {np.shape(value)}") from None
    return arr


#: Allowed ranges of a sensitivity table's cells (`from_frame`, the CLI's CSV): (low, high) per column.
TABLE_RANGES = {"params": (1.0, 1e13), "coef": (0.0, 1e30), "rmin": (0.0, 32.0), "rmax": (0.0, 32.0)}


def _check(arr: np.ndarray, field_name: str, names, low: float | None = None, strict: bool = False,
           high: float | None = None) -> None:
    """Every entry finite (above `low`, at most `high` when given); the error names the first bad group
    and the range."""
    bad = ~np.isfinite(arr)
    if low is not None:
        bad |= (arr <= low) if strict else (arr < low)
    if high is not None:
        bad |= arr > high
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        rule = "finite" if low is None else f"finite and {'greater than' if strict else 'at least'} {low:g}"
        rule += f" and at most {high:g}" if high is not None else ""
        raise ValueError(f"{field_name}: {float(arr[i])!r} for group {names[i]!r} must be {rule}")


@dataclass(frozen=True)
class BitGroups:
    """The groups to allocate widths to. Arrays have one entry per group.

    params: n_j weights per group; coef: c_j, loss per weight at zero bits; rmin / rmax: width bounds;
    layer: index of the layer each group belongs to (for latency; None = each group is a layer);
    tie: a label per group, groups with the same label >= 0 share one width (-1 = free).
    """

    params: np.ndarray
    coef: np.ndarray
    theta: float = THETA
    rmin: object = 0.0
    rmax: object = 16.0
    names: tuple = ()
    layer: object = None
    tie: object = None

    def __post_init__(self):
        params = np.atleast_1d(np.asarray(self.params, dtype=float))
        n = params.size
        if n == 0:
            raise ValueError("params: at least one group is needed")
        names = tuple(str(s) for s in self.names) if len(self.names) else tuple(f"g{i}" for i in range(n))
        if len(names) != n:
            raise ValueError(f"names: {len(names)} names for {n} groups")
        s = object.__setattr__
        s(self, "names", names)
        s(self, "params", params)
        s(self, "coef", _array(self.coef, n, "coef"))
        s(self, "rmin", _array(self.rmin, n, "rmin"))
        s(self, "rmax", _array(self.rmax, n, "rmax"))
        _check(params, "params", names, 0.0, strict=True)
        _check(self.coef, "coef", names, 0.0)
        _check(self.rmin, "rmin", names)
        _check(self.rmax, "rmax", names)
        if not (isinstance(self.theta, (int, float)) and math.isfinite(self.theta) and self.theta > 0):
            raise ValueError(f"theta: {self.theta!r} must be a finite number greater than zero")
        if np.any(self.rmin > self.rmax):
            i = int(np.flatnonzero(self.rmin > self.rmax)[0])
            raise ValueError(f"rmin: {self.rmin[i]:g} exceeds rmax {self.rmax[i]:g} for group {names[i]!r}")
        for name in ("layer", "tie"):
            value = getattr(self, name)
            if value is not None:
                arr = np.asarray(value)
                if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
                    raise ValueError(f"{name}: expected {n} integer labels, got shape {arr.shape} of {arr.dtype}")
                s(self, name, arr.astype(np.int64))
        if self.layer is not None and np.any(self.layer < 0):
            raise ValueError("layer: labels must be zero or more")

    @classmethod
    def from_frame(cls, frame, theta: float = THETA, rmin: float = 0.0, rmax: float = 16.0) -> "BitGroups":
        """From a table with columns params, coef and optionally name, rmin, rmax, layer, tie.

        `layer` and `tie` may hold any labels (e.g. layer names); they are turned into integer codes
        (layers in order of first appearance; empty tie labels mean untied)."""
        from hardware.inputs import numeric_column

        missing = [c for c in ("params", "coef") if c not in frame.columns]
        if missing:
            raise ValueError(f"sensitivities: missing column(s) {missing}; have {list(frame.columns)}")
        if len(frame) == 0:
            raise ValueError("sensitivities: the table has no rows")
        # a table's cells are checked here (row, column, value, range); BitGroups itself allows any finite
        # width bounds (a negative rmin is "no lower bound" in the math)
        get = lambda c, d: numeric_column(frame, c, "sensitivities", *TABLE_RANGES[c]) \
            if c in frame.columns else d  # noqa: E731
        names = tuple(frame["name"].astype(str)) if "name" in frame.columns else ()
        layer = _codes(frame["layer"]) if "layer" in frame.columns else None
        tie = None
        if "tie" in frame.columns:
            labels = frame["tie"].fillna("").astype(str)
            codes = _codes(labels)
            tie = np.where(labels.to_numpy() == "", -1, codes)
        return cls(params=get("params", None), coef=get("coef", None), theta=theta, rmin=get("rmin", rmin),
                   rmax=get("rmax", rmax), names=names, layer=layer, tie=tie)

    @property
    def size(self) -> int:
        return self.params.size

    @property
    def total_params(self) -> float:
        return float(np.sum(self.params))

    @property
    def layers(self) -> np.ndarray:
        """Layer index of each group (each group its own layer when none was given)."""
        return np.arange(self.size) if self.layer is None else self.layer

    def loss(self, widths) -> np.ndarray:
        """Predicted loss of each group at `widths`: n_j c_j 2^(-theta R_j)."""
        return self.params * self.coef * np.exp2(np.multiply(-self.theta, widths, dtype=float))

    def total_loss(self, widths) -> float:
        """sum_j n_j c_j 2^(-theta R_j), without the per-group temporaries."""
        scaled = np.exp2(np.multiply(-self.theta, widths, dtype=float))
        return float(np.einsum("i,i,i->", self.params, self.coef, scaled))

    def uniform_loss(self, avg_bits: float) -> float:
        """Predicted loss when every group gets `avg_bits` (ignoring bounds): the BAQ baseline."""
        return wsum(self.params, self.coef) * float(np.exp2(-self.theta * avg_bits))

    def average_bits(self, widths) -> float:
        return wsum(self.params, np.asarray(widths, dtype=float)) / self.total_params

    def tie_sets(self) -> list[np.ndarray]:
        """Index arrays of the groups that share a width (sets of two or more)."""
        if self.tie is None:
            return []
        sets = []
        for label in np.unique(self.tie[self.tie >= 0]):
            members = np.flatnonzero(self.tie == label)
            if members.size > 1:
                sets.append(members)
        return sets

    def take(self, index) -> "BitGroups":
        """The groups at `index` (an integer array) as their own problem: same theta, each group its
        own layer; ties kept among the taken groups."""
        index = np.asarray(index, dtype=np.int64)
        tie = None if self.tie is None else self.tie[index]
        return BitGroups(params=self.params[index], coef=self.coef[index], theta=self.theta, rmin=self.rmin[index],
                         rmax=self.rmax[index], names=tuple(self.names[i] for i in index), tie=tie)

    def tie_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Bounds after ties: a tied set's width lies in the intersection of its members' bounds."""
        lo, hi = self.rmin.copy(), self.rmax.copy()
        for members in self.tie_sets():
            lo[members], hi[members] = lo[members].max(), hi[members].min()
            if lo[members[0]] > hi[members[0]]:
                raise ValueError(f"tie: groups {[self.names[i] for i in members[:4]]} must share a width but their "
                                 f"bounds do not overlap (rmin {lo[members[0]]:g} > rmax {hi[members[0]]:g})")
        return lo, hi


def _codes(series) -> np.ndarray:
    """Integer codes of labels, in order of first appearance."""
    import pandas as pd

    return pd.factorize(series, sort=False)[0].astype(np.int64)


def gm_am_ratio(coef, params=None) -> float:
    """Predicted loss ratio of the unbounded optimal allocation over the uniform one: GM(c) / AM(c),
    both weighted by the group sizes (BAQ, arXiv 2506.05664: equal loss at the optimum means the
    loss sum becomes N * GM; uniform gives N * AM). Always <= 1 (AM-GM inequality)."""
    c = np.asarray(coef, dtype=float)
    w = np.ones_like(c) if params is None else np.asarray(params, dtype=float)
    if np.any(c <= 0):
        return 0.0  # a loss-free group takes no bits: the geometric mean is zero
    gm = np.exp2(w @ np.log2(c) / w.sum())
    return float(gm / (w @ c / w.sum()))


@dataclass(frozen=True)
class Budgets:
    """The limits an allocation must meet; None = no limit.

    avg_bits: weighted average width; memory_bytes: bytes of the allocated weights (with the
    format's scales); latency_s: modeled decode step time (needs a `LayerCosts`)."""

    avg_bits: float | None = None
    memory_bytes: float | None = None
    latency_s: float | None = None

    def __post_init__(self):
        for name in ("avg_bits", "memory_bytes", "latency_s"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float, np.floating)) and math.isfinite(value)
                                          and value > 0):
                raise ValueError(f"{name}: {value!r} must be a finite number greater than zero")
        if self.avg_bits is None and self.memory_bytes is None and self.latency_s is None:
            raise ValueError("budget: give at least one of avg_bits, memory_bytes, latency_s")

    def active(self) -> dict:
        return {k: v for k, v in (("avg_bits", self.avg_bits), ("memory_bytes", self.memory_bytes),
                                  ("latency_s", self.latency_s)) if v is not None}


@dataclass(frozen=True)
class BitAllocation:
    """A solved allocation: widths per group and what the loss and cost models predict for them.

    objective: predicted loss sum_j n_j c_j 2^(-theta R_j) (R_j from `loss_widths` where a format's
    error differs from its nominal width's); uniform_loss: the same at uniform width
    equal to the allocation's average (the baseline BAQ compares against); bytes_ / latency_s: the
    cost model's prediction (NaN when no cost model was given)."""

    status: str
    method: str
    widths: np.ndarray
    groups: BitGroups
    objective: float
    uniform_loss: float
    bytes_: float = math.nan
    latency_s: float = math.nan
    loss_level: float = math.nan
    formats: tuple = ()
    loss_widths: np.ndarray | None = None
    solve_time_s: float = 0.0
    stats: Mapping = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "stats", MappingProxyType(dict(self.stats)))

    @property
    def avg_bits(self) -> float:
        return self.groups.average_bits(self.widths)

    @property
    def predicted_gain(self) -> float:
        """Predicted loss over the uniform allocation's at the same average width (< 1 is better)."""
        return self.objective / self.uniform_loss if self.uniform_loss > 0 else math.nan

    @property
    def group_loss(self) -> np.ndarray:
        """Predicted loss per group (formats use their RTN-equivalent width, e.g. fp8 -> 6.3 bits)."""
        return self.groups.loss(self.widths if self.loss_widths is None else self.loss_widths)

    def to_frame(self):
        """One row per group: name, layer, params, coef, width, format, predicted loss."""
        import pandas as pd

        g = self.groups
        frame = pd.DataFrame({"name": g.names, "layer": g.layers, "params": g.params, "coef": g.coef,
                              "width": self.widths, "loss": self.group_loss})
        if self.formats:
            frame.insert(5, "format", list(self.formats))
        return frame

    def summary(self) -> dict:
        return {"status": self.status, "method": self.method, "groups": self.groups.size,
                "avg_bits": self.avg_bits, "objective": self.objective, "uniform_loss": self.uniform_loss,
                "predicted_gain": self.predicted_gain, "bytes": self.bytes_, "latency_s": self.latency_s,
                "solve_time_s": self.solve_time_s, **dict(self.stats)}
