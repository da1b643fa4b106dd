"""The validation layer at the edges: files read, files written, numbers typed on a command line.

Every entry point (the CLI, the app, the YAML / JSON / CSV readers) goes through these functions, so
bad input gets one line naming the field, the value and what is allowed, never a traceback, a hang
or a silent wrong number (issue 16). It lives in the bottom package so that `hardware` and
`workloads` can use it too; it imports nothing of the project.

Input files must be regular text files (UTF-8) of at most MAX_TEXT_BYTES; YAML documents at most
MAX_YAML_DEPTH deep and MAX_YAML_NODES nodes once aliases are expanded (no "billion laughs"). Output
paths are checked before any work starts (missing directory, a directory, an unwritable place, an
empty name, a name over 255 bytes), and a write that fails later (a full disk) is reported by path.

Numbers typed as text are ASCII decimals ("1e3", "0.5"; not "٣", "1_000", "nan" or "0x10") inside
documented ranges.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

#: Largest input text file read whole (sweep specs, hardware specs, configs, CSV tables).
MAX_TEXT_BYTES = 64 * 2**20
#: Deepest nesting and most nodes (aliases expanded) accepted in a YAML or JSON document.
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 1_000_000
#: POSIX NAME_MAX on the file systems we know (ext4, xfs, btrfs, tmpfs): bytes per path component.
NAME_MAX = 255


class InputError(ValueError):
    """Bad input at an edge; the message (one line) names the field, the value and what is allowed."""


# -- numbers typed as text ---------------------------------------------------------------------
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d{1,4})?", re.ASCII)


def _shown(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def parse_number(text: Any, field: str, low: float = -math.inf, high: float = math.inf, *,
                 whole: bool = False, low_open: bool = False) -> float:
    """A finite number from text (or a number) inside [low, high] ((low, high] when `low_open`),
    whole when asked; InputError naming `field`, the value and the range otherwise."""
    kind = "a whole number" if whole else "a number"
    if low_open:
        wanted = f"{kind} above {_shown(low)}" + (f" and at most {_shown(high)}" if math.isfinite(high) else "")
    elif math.isfinite(low) and math.isfinite(high):
        wanted = f"{kind} from {_shown(low)} to {_shown(high)}"
    elif math.isfinite(low):
        wanted = f"{kind} >= {_shown(low)}"
    else:
        wanted = kind
    if isinstance(text, bool):
        raise InputError(f"{field}: {text!r} must be {wanted}")
    if isinstance(text, str):
        stripped = text.strip()
        if not _DECIMAL.fullmatch(stripped):
            raise InputError(f"{field}: {text!r} must be {wanted} (plain ASCII decimal digits)")
        value = float(stripped)
    elif isinstance(text, int):
        value = float(text) if abs(text) < 10**300 else math.inf
    elif isinstance(text, float) or (hasattr(text, "dtype") and getattr(text, "ndim", 1) == 0):
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise InputError(f"{field}: {text!r} must be {wanted}") from None
    else:
        raise InputError(f"{field}: {text!r} must be {wanted}")
    bad = not math.isfinite(value) or value > high or (value <= low if low_open else value < low)
    if bad or (whole and not value.is_integer()):
        raise InputError(f"{field}: {text!r} must be {wanted}")
    return value


def parse_whole(text: Any, field: str, low: float = 1, high: float = 2**53) -> int:
    """A whole number in [low, high] (see parse_number)."""
    return int(parse_number(text, field, low, high, whole=True))


def number_list(text: str, field: str, low: float, high: float, *, whole: bool = False,
                max_items: int = 10_000) -> list:
    """A comma list of numbers, each checked as parse_number does; at least one, at most max_items."""
    if not isinstance(text, str):
        raise InputError(f"{field}: {text!r} must be a comma list of numbers")
    items = [t for t in text.split(",") if t.strip()]
    if not items:
        raise InputError(f"{field}: {text!r} lists no values")
    if len(items) > max_items:
        raise InputError(f"{field}: {len(items):,} values; at most {max_items:,}")
    values = [parse_number(t, field, low, high, whole=whole) for t in items]
    return [int(v) for v in values] if whole else values


def flag(low: float = -math.inf, high: float = math.inf, *, whole: bool = False, low_open: bool = False):
    """An argparse `type=` for a number flag in a documented range (argparse adds the flag's name)."""
    import argparse

    def convert(text: str):
        try:
            value = parse_number(text, "value", low, high, whole=whole, low_open=low_open)
        except InputError as err:
            raise argparse.ArgumentTypeError(str(err).removeprefix("value: ")) from None
        return int(value) if whole else value

    convert.__name__ = "whole number" if whole else "number"
    return convert


# -- reading ----------------------------------------------------------------------------------
def check_input_path(path: Any, field: str, max_bytes: int | None = MAX_TEXT_BYTES) -> Path:
    """An existing, readable regular file (or a character device such as /dev/stdin) of at most
    `max_bytes` (None: any size, for files read in chunks); InputError naming `field` and the path
    otherwise."""
    if not isinstance(path, (str, os.PathLike)) or str(path) == "":
        raise InputError(f"{field}: {path!r} is not a file name")
    p = Path(path)
    _check_name_lengths(p, field)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(f"{field}: file {str(p)!r} does not exist") from None
    except OSError as err:
        raise InputError(f"{field}: cannot open {str(p)!r} ({err.strerror or err})") from None
    import stat

    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{field}: {str(p)!r} is a directory; expected a file")
    if not os.access(p, os.R_OK):
        raise InputError(f"{field}: {str(p)!r} cannot be read (permission denied)")
    if max_bytes is not None and stat.S_ISREG(st.st_mode) and st.st_size > max_bytes:
        raise InputError(f"{field}: {str(p)!r} is {st.st_size:,} bytes; the limit is {max_bytes:,} bytes")
    return p


def read_text(path: Any, field: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The whole UTF-8 text of a file of at most `max_bytes` (read at most that much even from a pipe
    or a device that never ends)."""
    p = check_input_path(path, field, max_bytes)
    try:
        with p.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as err:
        raise InputError(f"{field}: cannot read {str(p)!r} ({err.strerror or err})") from None
    if len(data) > max_bytes:
        raise InputError(f"{field}: {str(p)!r} is larger than the limit of {max_bytes:,} bytes")
    if b"\0" in data:
        raise InputError(f"{field}: {str(p)!r} is a binary file; expected text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{field}: {str(p)!r} is not UTF-8 text (byte {err.start})") from None


def load_yaml_text(text: str, field: str) -> Any:
    """yaml.safe_load with bounded depth and alias expansion; InputError naming the line otherwise."""
    import yaml

    try:
        _check_yaml_shape(text, field)
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = str(getattr(err, "problem", None) or err).replace("\n", " ")
        raise InputError(f"{field}: not valid YAML{where} ({problem})") from None
    except RecursionError:
        raise InputError(f"{field}: nested more than {MAX_YAML_DEPTH} levels deep") from None


def _check_yaml_shape(text: str, field: str) -> None:
    """Walk the parse events: depth, and node count with every alias expanded (a billion-laughs
    document is refused before it is built)."""
    import yaml

    depth, nodes, sizes, open_anchors = 0, 0, {}, []
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            nodes += sizes.get(event.anchor, 1)
        elif isinstance(event, (yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            nodes += 1
            if isinstance(event, yaml.ScalarEvent):
                if event.anchor:
                    sizes[event.anchor] = 1
            else:
                depth += 1
                open_anchors.append((event.anchor, nodes))
                if depth > MAX_YAML_DEPTH:
                    raise InputError(f"{field}: nested more than {MAX_YAML_DEPTH} levels deep")
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1
            anchor, start = open_anchors.pop()
            if anchor:
                sizes[anchor] = nodes - start + 1
        if nodes > MAX_YAML_NODES:
            raise InputError(f"{field}: more than {MAX_YAML_NODES:,} values once aliases are expanded")


def load_yaml(path: Any, field: str) -> Any:
    """A YAML file read through read_text and load_yaml_text."""
    return load_yaml_text(read_text(path, field), field)


def load_json(path: Any, field: str) -> Any:
    """A JSON file: bounded size and depth, finite numbers, integers of at most 30 digits."""
    return load_json_text(read_text(path, field), f"{field}: {Path(path).name}")


def load_json_text(text: str | bytes, field: str) -> Any:
    """JSON text with the same limits as load_json (an uploaded file in the app)."""
    if isinstance(text, bytes):
        if len(text) > MAX_TEXT_BYTES:
            raise InputError(f"{field}: {len(text):,} bytes; the limit is {MAX_TEXT_BYTES:,} bytes")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(f"{field}: not UTF-8 text (byte {err.start})") from None
    try:
        return json.loads(text, parse_constant=_no_constant, parse_int=_bounded_int)
    except json.JSONDecodeError as err:
        raise InputError(f"{field}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except RecursionError:
        raise InputError(f"{field}: nested too deeply") from None
    except InputError as err:
        raise InputError(f"{field}: {err}") from None


def _no_constant(name: str):
    raise InputError(f"{name} is not a finite number")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 30:
        raise InputError(f"an integer of {len(text.lstrip('-'))} digits is out of range")
    return int(text)


def depth_of(value: Any, limit: int = MAX_YAML_DEPTH) -> int:
    """Nesting depth of lists / dicts (stops counting past `limit`)."""
    if limit <= 0 or not isinstance(value, (list, dict, tuple)):
        return 0
    items = value.values() if isinstance(value, dict) else value
    return 1 + max((depth_of(v, limit - 1) for v in items), default=0)


# -- writing ----------------------------------------------------------------------------------
def _check_name_lengths(p: Path, field: str) -> None:
    for part in p.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise InputError(f"{field}: a path component of {len(os.fsencode(part))} bytes exceeds the "
                             f"{NAME_MAX}-byte limit on file names")


def check_output_path(path: Any, field: str, suffixes: tuple[str, ...] | None = None) -> Path:
    """A file path that can be written: not empty, no component over 255 bytes, an existing
    writable directory, not itself a directory. Checked before work starts."""
    if not isinstance(path, (str, os.PathLike)) or str(path).strip() == "":
        raise InputError(f"{field}: {path!r} is not a file name")
    p = Path(path)
    _check_name_lengths(p, field)
    if suffixes and p.suffix.lower() not in suffixes:
        raise InputError(f"{field}: {str(p)!r} must end in {' or '.join(suffixes)}")
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise InputError(f"{field}: {str(p)!r} is a directory; give a file name")
    if not parent.is_dir():
        raise InputError(f"{field}: directory {str(parent)!r} does not exist")
    if p.exists():
        if not os.access(p, os.W_OK):
            raise InputError(f"{field}: {str(p)!r} cannot be written (permission denied or read-only)")
    elif not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{field}: cannot create files in {str(parent)!r} (permission denied or read-only)")
    return p


def write_bytes(path: Any, data: bytes, field: str) -> Path:
    """Write a whole file and make sure it reached the disk (a full disk is an error naming the path)."""
    p = check_output_path(path, field)
    try:
        with open(p, "wb") as fh:
            fh.write(data)
            fh.flush()
            if p.is_file():
                os.fsync(fh.fileno())
    except OSError as err:
        raise InputError(f"{field}: writing {str(p)!r} failed ({err.strerror or err})") from None
    return p


def write_text(path: Any, text: str, field: str) -> Path:
    return write_bytes(path, text.encode("utf-8"), field)


def save_figure(fig, path: Any, field: str, dpi: int = 120) -> Path:
    """A matplotlib figure rendered in memory, then written with write_bytes (errors name the path)."""
    import io

    check_output_path(path, field)
    suffix = Path(path).suffix.lower().lstrip(".") or "png"
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format=suffix, dpi=dpi)
    except ValueError as err:
        raise InputError(f"{field}: cannot write a {suffix!r} image ({err})") from None
    return write_bytes(path, buffer.getvalue(), field)


def safe_file_name(name: Any, field: str) -> str:
    """One path component from free text (a spec's `name`): letters, digits, '.', '_' and '-';
    never '..', never a separator, at most 200 bytes. Output names derived from input are confined
    to the directory they are written in."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip(".-") or "unnamed"
    return text[:200]


def confined(directory: Any, name: str, field: str) -> Path:
    """directory / name, refused when it resolves outside `directory`."""
    base = Path(directory).resolve()
    target = (base / name).resolve()
    if target.parent != base:
        raise InputError(f"{field}: {name!r} would be written outside {str(base)!r}")
    return target


# -- tables -----------------------------------------------------------------------------------
def read_csv(path: Any, field: str, **kwargs):
    """A CSV file as a DataFrame (pandas), after the input-path checks; malformed CSV is an
    InputError naming the file."""
    import pandas as pd

    p = check_input_path(path, field)
    try:
        return pd.read_csv(p, **kwargs)
    except pd.errors.EmptyDataError:
        raise InputError(f"{field}: {str(p)!r} is empty; expected a CSV with a header row") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"{field}: {str(p)!r} is not a readable CSV ({str(err).splitlines()[0][:120]})") from None


def numeric_column(frame, column: str, field: str, low: float = -math.inf, high: float = math.inf, *,
                   whole: bool = False):
    """A table column as float64, every cell a finite number in [low, high] (whole when asked);
    InputError naming the row (1 = the first data row), the column, the value and the range."""
    import numpy as np
    import pandas as pd

    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(values) & (values >= low) & (values <= high)
    if whole:
        ok &= values == np.round(values)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        wanted = "a whole number" if whole else "a number"
        limits = f" from {_shown(low)} to {_shown(high)}" if math.isfinite(low) and math.isfinite(high) else (
            f" >= {_shown(low)}" if math.isfinite(low) else "")
        cell = raw.iloc[i]
        cell = cell.item() if hasattr(cell, "item") else cell
        raise InputError(f"{field}: row {i + 1}: {column} = {cell!r} must be {wanted}{limits}")
    return values
