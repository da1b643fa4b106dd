"""Human units at the edge: parse "4.8 TB/s" into 4.8e12 bytes/s, and format SI values back.

Conventions (stated once, used everywhere): GB, TB, MB are decimal (1e9, 1e12, 1e6 bytes) as in
vendor datasheets; GiB, TiB, MiB are binary (2**30, ...). FLOP counts one floating-point operation
(a multiply-add is 2 FLOP); "OP" is the same unit for integer datasheets (TOPS). Money is USD.

Only YAML loaders, the CLI and the app call this module; cost formulas take plain SI floats.
"""
from __future__ import annotations

import functools
import math

#: Dimension names accepted by `parse`, mapped to the SI unit the value is returned in.
SI_UNITS = {
    "bytes": "byte",
    "bytes_per_s": "byte / second",
    "flops_per_s": "FLOP / second",
    "seconds": "second",
    "watts": "watt",
    "usd_per_hour": "USD / hour",
}


@functools.lru_cache(maxsize=1)
def registry():
    """The shared pint registry, with FLOP, OP and USD defined (imported and built lazily: pint is
    slow to load, and only the edges need it)."""
    import pint

    ureg = pint.UnitRegistry()
    ureg.define("FLOP = [flop] = flop = FLOPs")
    ureg.define("OP = FLOP = op = OPS")
    ureg.define("USD = [currency] = usd = dollar")
    return ureg


class UnitError(ValueError):
    """A value with missing, unknown or wrong units; the message names the field."""


def parse(text: str | float | int, dimension: str, field: str = "value") -> float:
    """Parse a human quantity such as "141 GB" or "4.8 TB/s" into an SI float of `dimension`.

    Raises UnitError naming `field` when the text is not a number with a unit of that dimension,
    or when the value is not finite and positive.
    """
    if dimension not in SI_UNITS:
        raise UnitError(f"{field}: unknown dimension {dimension!r}; known: {sorted(SI_UNITS)}")
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise UnitError(f"{field}: expected a quantity like '4.8 TB/s', got {text!r}")
    if isinstance(text, (int, float)):
        raise UnitError(f"{field}: {text!r} has no unit; write it with one, e.g. '{text} {_example(dimension)}'")
    ureg = registry()
    import pint

    try:
        quantity = ureg.Quantity(text.strip())
        value = quantity.to(SI_UNITS[dimension]).magnitude
    except pint.DimensionalityError:
        raise UnitError(f"{field}: {text!r} has the wrong unit; expected {_example(dimension)}") from None
    except Exception:  # pint raises several types for unparsable text
        raise UnitError(f"{field}: cannot read {text!r} as a quantity in {_example(dimension)}") from None
    return check_positive(float(value), field, text)


def check_positive(value: float, field: str, shown: object | None = None) -> float:
    """Return `value` if it is a finite number > 0, else raise UnitError naming the field."""
    shown = value if shown is None else shown
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise UnitError(f"{field}: {shown!r} is not a finite number")
    if value <= 0:
        raise UnitError(f"{field}: {shown!r} must be greater than zero")
    return float(value)


def _example(dimension: str) -> str:
    return {
        "bytes": "bytes (e.g. GB, GiB)",
        "bytes_per_s": "bytes per second (e.g. GB/s, TB/s)",
        "flops_per_s": "operations per second (e.g. TFLOP/s, TOP/s)",
        "seconds": "seconds (e.g. us, ms)",
        "watts": "watts (W)",
        "usd_per_hour": "USD/h",
    }[dimension]


_PREFIXES = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def format_si(value: float, unit: str, digits: int = 3) -> str:
    """Format an SI value with a decimal prefix: format_si(4.8e12, "B/s") -> '4.8 TB/s'."""
    if not math.isfinite(value):
        return f"{value} {unit}"
    for scale, prefix in _PREFIXES:
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g} {prefix}{unit}"
    return f"{value:.{digits}g} {unit}"


def format_seconds(value: float) -> str:
    """Format seconds with the unit that keeps 1-3 integer digits: 0.00123 -> '1.23 ms'."""
    if not math.isfinite(value):
        return str(value)
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} s"
