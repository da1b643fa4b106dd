"""Solvers over the cost models: bit allocation, offloading placement, KV budgets, test-time compute.

    >>> import solvers
    >>> plan = solvers.offload_policy(model, hardware.load("t4"), scenario)   # doctest: +SKIP

Names resolve lazily, so `import solvers` stays cheap and cvxpy loads only for the solvers that use it.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "allocate_bits": "solvers.bits", "allocate_within_layers": "solvers.bits", "BitGroups": "solvers.bits",
    "Budgets": "solvers.bits",
    "BitAllocation": "solvers.bits", "InfeasibleBudgetError": "solvers.bits",
    "offload_policy": "solvers.offload", "OffloadPolicy": "solvers.offload", "OffloadError": "solvers.offload",
    "max_concurrency": "solvers.kv", "max_context": "solvers.kv", "cheapest_kv_setting": "solvers.kv",
    "split_kv_budget": "solvers.kv", "KVBudgetError": "solvers.kv",
    "plan_tts": "solvers.tts", "AccuracyCurves": "solvers.tts", "pass_at_k": "solvers.tts",
    "majority_at_k": "solvers.tts", "cost_of_pass": "solvers.tts",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'solvers' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
