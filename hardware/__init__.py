"""Hardware specs: frozen SI dataclasses and a catalog of YAML presets with sources.

    >>> import hardware
    >>> hw = hardware.load("h200-sxm")
    >>> hw.hbm_bytes_per_s
    4800000000000.0
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from hardware.spec import DTYPES, Calibration, Hardware, SpecError

PRESETS_DIR = Path(__file__).parent / "presets"

__all__ = ["DTYPES", "Calibration", "Hardware", "SpecError", "load", "names", "catalog", "PRESETS_DIR"]


def names() -> list[str]:
    """Names of the shipped presets, sorted."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load(name_or_path: str | Path) -> Hardware:
    """A preset by name (``"h200-sxm"``) or a spec file by path (``"my-gpu.yaml"``)."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text:
        return Hardware.from_yaml(text)
    if text not in names():
        raise SpecError(f"hardware: unknown preset {text!r}; known: {', '.join(names())}")
    return _load_preset(text)


@lru_cache(maxsize=None)
def _load_preset(name: str) -> Hardware:
    return Hardware.from_yaml(PRESETS_DIR / f"{name}.yaml")


def catalog():
    """All presets as a pandas DataFrame, one row per device (SI units)."""
    import pandas as pd

    return pd.DataFrame([load(n).summary() for n in names()]).set_index("name")
