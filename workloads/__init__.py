"""Workload descriptors: models from HF config.json files, serving scenarios, a model catalog.

    >>> import workloads
    >>> workloads.load("llama-3-8b").param_count()
    8030261248
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from workloads.model import FAMILIES, ModelError, ModelSpec
from workloads.scenario import Scenario, ScenarioError

CATALOG_DIR = Path(__file__).parent
__all__ = ["FAMILIES", "ModelError", "ModelSpec", "Scenario", "ScenarioError", "load", "names", "catalog",
           "catalog_entry"]


@lru_cache(maxsize=1)
def _index() -> dict:
    return yaml.safe_load((CATALOG_DIR / "catalog.yaml").read_text()) or {}


def names() -> list[str]:
    """Catalog model names, sorted."""
    return sorted(_index())


def catalog_entry(name: str) -> dict:
    """The catalog's metadata for a model (config file, HF repo, published parameter count, source)."""
    if name not in _index():
        raise ModelError(f"model: unknown catalog model {name!r}; known: {', '.join(names())}")
    return dict(_index()[name])


def load(name_or_path: str | Path) -> ModelSpec:
    """A catalog model by name (``"llama-3-8b"``) or an HF config.json by path."""
    text = str(name_or_path)
    if text.endswith(".json") or "/" in text:
        folder = Path(text)
        if folder.is_dir() and (folder / "config.json").is_file():  # an HF model folder
            return ModelSpec.from_hf_config(folder / "config.json")
        return ModelSpec.from_hf_config(text)
    return _load_catalog(text)


@lru_cache(maxsize=None)
def _load_catalog(name: str) -> ModelSpec:
    entry = catalog_entry(name)
    return ModelSpec.from_hf_config(CATALOG_DIR / entry["config"], name=name)


def catalog():
    """All catalog models as a pandas DataFrame (shapes, exact and published parameter counts)."""
    import pandas as pd

    rows = []
    for name in names():
        row = load(name).summary()
        entry = catalog_entry(name)
        row["published_params"] = entry.get("published_params", entry.get("published_params_approx"))
        row["hf_repo"] = entry.get("hf_repo", "")
        rows.append(row)
    return pd.DataFrame(rows).set_index("name")
