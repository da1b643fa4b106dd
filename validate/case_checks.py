"""Row-by-row checks of a cases table (`perfmodel validate predict CASES.csv`), before any prediction.

Each kind's parameters must be present, numeric where they are counts, whole, inside the ranges of its
record (validate.kinds) and consistent (kv_len >= q_len, heads a multiple of kv_heads, a model step's layers within the model).
Checks run on whole columns of one kind at a time; an error names the row (1 = the first data row),
the column, the value and what is allowed. No torch.
"""
from __future__ import annotations

import numpy as np

import workloads
from hardware.inputs import InputError
from validate import kinds

KINDS = kinds.NAMES
DTYPES = kinds.DTYPES
#: kind -> {column: (low, high)} for whole-number parameters (the kinds' records).
COUNTS = {k.name: dict(k.counts) for k in kinds.RECORDS if k.counts}
#: kind -> {column: (low, high)} for whole-number parameters a row may leave blank.
OPTIONAL = {k.name: dict(k.optional) for k in kinds.RECORDS if k.optional}
#: kind -> {column: allowed values} for named parameters (the kinds' records).
CHOICES = {k.name: dict(k.choices) for k in kinds.RECORDS if k.choices}


def _fail(row: int, kind: str, column: str, value, wanted: str):
    value = value.item() if hasattr(value, "item") else value
    raise InputError(f"cases: row {row}: {kind} {column} = {value!r} {wanted}")


def check_cases(frame, first_row: int = 1) -> None:
    """Raise InputError for the first bad row of a cases DataFrame (rows numbered from first_row)."""
    import pandas as pd

    if "kind" not in frame.columns:
        raise InputError("cases: the table has no 'kind' column (see the README's case schema)")
    kinds = frame["kind"].astype(str)
    known = set(KINDS)
    bad = ~kinds.isin(known)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        _fail(first_row + i, "case", "kind", frame["kind"].iloc[i], f"is not one of {', '.join(sorted(known))}")
    for kind, rows in frame.groupby(kinds, sort=False).groups.items():
        part = frame.loc[rows]
        positions = frame.index.get_indexer(rows)
        counts = [(column, bounds, False) for column, bounds in COUNTS.get(kind, {}).items()]
        counts += [(column, bounds, True) for column, bounds in OPTIONAL.get(kind, {}).items() if column in part.columns]
        for column, (low, high), optional in counts:
            if column not in part.columns:
                raise InputError(f"cases: {kind} rows need a {column!r} column")
            raw = part[column]
            values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
            ok = np.isfinite(values) & (values >= low) & (values <= high) & (values == np.round(values))
            if optional:  # a blank cell takes the kind's default
                ok |= raw.isna().to_numpy() | (raw.astype(str).str.strip() == "").to_numpy()
            if not ok.all():
                i = int(np.flatnonzero(~ok)[0])
                _fail(first_row + positions[i], kind, column, raw.iloc[i],
                      f"must be a whole number from {low:,} to {high:,}" + (" (or blank)" if optional else ""))
        for column, allowed in CHOICES.get(kind, {}).items():
            if column not in part.columns:
                raise InputError(f"cases: {kind} rows need a {column!r} column")
            text = part[column].map(_text)
            ok = text.isin(allowed).to_numpy()
            if not ok.all():
                i = int(np.flatnonzero(~ok)[0])
                _fail(first_row + positions[i], kind, column, part[column].iloc[i],
                      f"is not one of {', '.join(allowed)}")
        _consistent(kind, part, positions, first_row)


def _text(value) -> str:
    """A cell as the text a case uses: 8.0 -> '8' (pandas reads whole columns as floats)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _consistent(kind: str, part, positions, first_row: int) -> None:
    number = lambda c: part[c].astype(float).to_numpy()  # noqa: E731 (checked whole numbers above)
    if kind == "attention":
        short = number("kv_len") < number("q_len")
        if short.any():
            i = int(np.flatnonzero(short)[0])
            _fail(first_row + positions[i], kind, "kv_len", part["kv_len"].iloc[i],
                  f"must be at least q_len ({part['q_len'].iloc[i]})")
    if kind in ("attention",):
        ragged = np.mod(number("heads"), number("kv_heads")) != 0
        if ragged.any():
            i = int(np.flatnonzero(ragged)[0])
            _fail(first_row + positions[i], kind, "heads", part["heads"].iloc[i],
                  f"must be a multiple of kv_heads ({part['kv_heads'].iloc[i]})")
    if kind == "model_step":
        if "model" not in part.columns:
            raise InputError("cases: model_step rows need a 'model' column (a catalog name)")
        names, layers = part["model"].astype(str).to_numpy(), number("layers")
        for name in dict.fromkeys(names):
            rows = np.flatnonzero(names == name)
            if name not in workloads.names():
                _fail(first_row + positions[rows[0]], kind, "model", name, "is not a catalog model")
            deep = rows[layers[rows] > workloads.load(name).n_layers]
            if deep.size:
                _fail(first_row + positions[deep[0]], kind, "layers", int(layers[deep[0]]),
                      f"exceeds {name}'s {workloads.load(name).n_layers} layers")
