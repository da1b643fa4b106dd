"""Human units at the edge: parse "4.8 TB/s" into 4.8e12 bytes/s, and format SI values back.

Conventions (stated once, used everywhere): GB, TB, MB are decimal (1e9, 1e12, 1e6 bytes) as in
vendor datasheets; GiB, TiB, MiB are binary (2**30, ...). FLOP counts one floating-point operation
(a multiply-add is 2 FLOP); "OP" is the same unit for integer datasheets (TOPS). Money is USD.

A quantity is written as a plain decimal number and a unit ("4.8 TB/s", "141 GB", "1e3 GB/s"). A bare
number is refused wherever a unit is needed ("141000000000" for a capacity is an error that shows the
accepted form: bits or bytes would be a guess), and so are decimal commas ("4,8 TB/s"), exponent
expressions ("10**10**10 B/s") and values outside each dimension's RANGES. Numbers given to a field
whose name carries its SI unit (a sweep axis `hbm_bytes_per_s`, a CSV column `bytes`) are SI.

Only YAML loaders, the CLI and the app call this module; cost formulas take plain SI floats.
"""
from __future__ import annotations

import functools
import math
import re

#: Dimension names accepted by `parse`, mapped to the SI unit the value is returned in.
SI_UNITS = {
    "bytes": "byte",
    "bytes_per_s": "byte / second",
    "flops_per_s": "FLOP / second",
    "seconds": "second",
    "watts": "watt",
    "usd_per_hour": "USD / hour",
}


#: Accepted range of each dimension in SI units (inclusive): wide enough for any real device or
#: budget, narrow enough that no product of them overflows a float.
RANGES = {
    "bytes": (1.0, 1e18),            # 1 byte .. 1 EB
    "bytes_per_s": (1.0, 1e16),      # 1 B/s .. 10 PB/s
    "flops_per_s": (1.0, 1e20),      # 1 FLOP/s .. 100 EFLOP/s
    "seconds": (1e-12, 1e7),         # 1 ps .. about 116 days
    "watts": (1e-3, 1e7),
    "usd_per_hour": (1e-6, 1e6),
}
#: "<decimal number> <unit>": the number has at most 4 exponent digits; the unit is words joined by
#: '/', '*' or spaces, each with at most a one-digit power (no "10**10**10" for pint to evaluate).
_QUANTITY = re.compile(r"\s*(?P<number>[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d{1,4})?)\s*"
                       r"(?P<unit>[A-Za-z_\u00b5\u03bc]+(\^-?\d|\*\*-?\d)?"
                       r"(\s*[/*\u00b7 ]\s*[A-Za-z_\u00b5\u03bc]+(\^-?\d|\*\*-?\d)?)*)?\s*", re.ASCII)
MAX_QUANTITY_CHARS = 64


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
        raise UnitError(f"{field}: {text!r} has no unit; write it with one, e.g. '{text} {_unit_hint(dimension)}'")
    match = _QUANTITY.fullmatch(text) if len(text) <= MAX_QUANTITY_CHARS else None
    if match is None and re.match(r"\s*[+-]?(nan|inf)", text, re.IGNORECASE):
        raise UnitError(f"{field}: {text!r} is not a finite number")
    if match is None:
        hint = "; use '.' for decimals" if "," in text else ""
        raise UnitError(f"{field}: cannot read {text[:MAX_QUANTITY_CHARS]!r} as a number and a unit in "
                        f"{_example(dimension)}, e.g. '{_accepted(dimension)}'{hint}")
    if not match["unit"]:
        raise UnitError(f"{field}: {text.strip()!r} has no unit; write it with one, "
                        + _bare_hint(float(match["number"]), dimension))
    ureg = registry()
    import pint

    try:
        unit = ureg.Unit(match["unit"].replace("**", "^"))
        value = float(match["number"]) * ureg.Quantity(1.0, unit).to(SI_UNITS[dimension]).magnitude
    except pint.DimensionalityError:
        raise UnitError(f"{field}: {text!r} has the wrong unit; expected {_example(dimension)}") from None
    except Exception:  # pint raises several types for unknown units
        raise UnitError(f"{field}: cannot read {text!r} as a quantity in {_example(dimension)}") from None
    if value == math.inf:
        return check_range(value, dimension, field, text)
    return check_range(check_positive(float(value), field, text), dimension, field, text)


def check_range(value: float, dimension: str, field: str, shown: object | None = None) -> float:
    """Return `value` (SI) if it lies in RANGES[dimension], else raise UnitError naming the range."""
    low, high = RANGES[dimension]
    if not low <= value <= high:
        unit = SI_UNITS[dimension].replace("byte / second", "B/s").replace("byte", "B").replace(
            "FLOP / second", "FLOP/s").replace("second", "s").replace("watt", "W").replace("USD / hour", "USD/h")
        raise UnitError(f"{field}: {shown if shown is not None else value!r} is out of range; allowed "
                        f"{format_si(low, unit).strip()} to {format_si(high, unit).strip()}")
    return value


def check_positive(value: float, field: str, shown: object | None = None) -> float:
    """Return `value` if it is a finite number > 0, else raise UnitError naming the field."""
    shown = value if shown is None else shown
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise UnitError(f"{field}: {shown!r} is not a finite number")
    if value <= 0:
        raise UnitError(f"{field}: {shown!r} must be greater than zero")
    return float(value)


_SI_SYMBOL = {"bytes": "B", "bytes_per_s": "B/s", "flops_per_s": "FLOP/s", "seconds": "s", "watts": "W",
              "usd_per_hour": "USD/h"}


def _bare_hint(number: float, dimension: str) -> str:
    """How to write a bare number with a unit: the value read as SI, with a prefix ('80 GB' for
    80000000000 bytes), plus the byte convention."""
    shown = format_si(number, _SI_SYMBOL[dimension]) if math.isfinite(number) and number > 0 else \
        f"{number:g} {_unit_hint(dimension)}"
    if dimension == "seconds" and math.isfinite(number) and 0 < number < 1:
        shown = format_seconds(number)
    note = " (GB = 1e9 bytes, GiB = 2**30; a bare number could be bits or bytes)" if dimension.startswith("bytes") else ""
    return f"e.g. '{shown}' if you meant {number:g} {_SI_SYMBOL[dimension]}{note}"


def _unit_hint(dimension: str) -> str:
    return {"bytes": "GB", "bytes_per_s": "GB/s", "flops_per_s": "TFLOP/s", "seconds": "ms", "watts": "W",
            "usd_per_hour": "USD/h"}[dimension]


def _accepted(dimension: str) -> str:
    return {"bytes": "141 GB", "bytes_per_s": "4.8 TB/s", "flops_per_s": "989 TFLOP/s", "seconds": "20 ms",
            "watts": "700 W", "usd_per_hour": "3.5 USD/h"}[dimension]


def _example(dimension: str) -> str:
    return {
        "bytes": "bytes (e.g. GB, GiB)",
        "bytes_per_s": "bytes per second (e.g. GB/s, TB/s)",
        "flops_per_s": "operations per second (e.g. TFLOP/s, TOP/s)",
        "seconds": "seconds (e.g. us, ms)",
        "watts": "watts (W)",
        "usd_per_hour": "USD/h",
    }[dimension]


_PREFIXES = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


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
