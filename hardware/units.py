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
from dataclasses import dataclass

@dataclass(frozen=True)
class Dimension:
    """One physical dimension a spec or CLI value may have, stated once: the SI unit `parse`
    returns (pint's spelling), the accepted range in that unit (inclusive: wide enough for any real
    device or budget, narrow enough that no product of them overflows a float), the SI symbol
    `format_si` prefixes, the unit the spec writer and hints use with its SI value, and the words
    error messages use."""

    si_unit: str
    low: float
    high: float
    symbol: str
    file_unit: tuple[str, float]
    example: str
    hint_unit: str = ""  # the unit suggested for a bare number, when not the file unit

    @property
    def accepted(self) -> str:
        """A typical value written with the file unit, for error messages: '4.8 TB/s'."""
        return _TYPICAL[self.symbol]


DIMENSIONS = {
    "bytes": Dimension("byte", 1.0, 1e18, "B", ("GB", 1e9), "bytes (e.g. GB, GiB)"),       # 1 B .. 1 EB
    "bytes_per_s": Dimension("byte / second", 1.0, 1e16, "B/s", ("GB/s", 1e9),
                             "bytes per second (e.g. GB/s, TB/s)"),                      # .. 10 PB/s
    "flops_per_s": Dimension("FLOP / second", 1.0, 1e20, "FLOP/s", ("TFLOP/s", 1e12),
                             "operations per second (e.g. TFLOP/s, TOP/s)"),             # .. 100 EFLOP/s
    "seconds": Dimension("second", 1e-12, 1e7, "s", ("us", 1e-6), "seconds (e.g. us, ms)", "ms"),  # 1 ps .. 116 days
    "watts": Dimension("watt", 1e-3, 1e7, "W", ("W", 1.0), "watts (W)"),
    "usd_per_hour": Dimension("USD / hour", 1e-6, 1e6, "USD/h", ("USD/h", 1.0), "USD/h"),
    # energy per operation and per byte moved: picojoules on today's chips (0.1-20 pJ/FLOP,
    # 10-500 pJ/byte of DRAM traffic); the range spans 1 fJ .. 1 uJ
    "joules_per_flop": Dimension("joule / FLOP", 1e-15, 1e-6, "J/FLOP", ("pJ/FLOP", 1e-12),
                                 "joules per operation (e.g. pJ/FLOP)"),
    "joules_per_byte": Dimension("joule / byte", 1e-15, 1e-6, "J/B", ("pJ/B", 1e-12),
                                 "joules per byte (e.g. pJ/B)"),
}
_TYPICAL = {"B": "141 GB", "B/s": "4.8 TB/s", "FLOP/s": "989 TFLOP/s", "s": "20 ms", "W": "700 W",
            "USD/h": "3.5 USD/h", "J/FLOP": "0.8 pJ/FLOP", "J/B": "130 pJ/B"}
#: Dimension names accepted by `parse`, mapped to the SI unit the value is returned in.
SI_UNITS = {name: d.si_unit for name, d in DIMENSIONS.items()}
#: Accepted range of each dimension in SI units (inclusive).
RANGES = {name: (d.low, d.high) for name, d in DIMENSIONS.items()}
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
        unit = DIMENSIONS[dimension].symbol
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


def _bare_hint(number: float, dimension: str) -> str:
    """How to write a bare number with a unit: the value read as SI, with a prefix ('80 GB' for
    80000000000 bytes), plus the byte convention."""
    shown = format_si(number, DIMENSIONS[dimension].symbol) if math.isfinite(number) and number > 0 else \
        f"{number:g} {_unit_hint(dimension)}"
    if dimension == "seconds" and math.isfinite(number) and 0 < number < 1:
        shown = format_seconds(number)
    note = " (GB = 1e9 bytes, GiB = 2**30; a bare number could be bits or bytes)" if dimension.startswith("bytes") else ""
    return f"e.g. '{shown}' if you meant {number:g} {DIMENSIONS[dimension].symbol}{note}"


def _unit_hint(dimension: str) -> str:
    return DIMENSIONS[dimension].hint_unit or DIMENSIONS[dimension].file_unit[0]


def _accepted(dimension: str) -> str:
    return DIMENSIONS[dimension].accepted


def _example(dimension: str) -> str:
    return DIMENSIONS[dimension].example


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
