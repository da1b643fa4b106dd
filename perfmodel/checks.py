"""Consistency of a model, a device and a scenario taken together (each is valid on its own).

Tensor parallelism splits attention heads over devices, so an engine refuses a degree that does not
divide them (vLLM: "Total number of attention heads must be divisible by tensor parallel size";
KV heads are split when tp divides them and replicated when they divide tp). And this project models
tensor parallelism inside one node, over its device link (NVLink, Infinity Fabric, PCIe), as
Megatron-LM deploys it: a degree beyond the node's devices would need an inter-node link the spec
does not describe, so it is refused rather than modeled as one big NVLink ring.
"""
from __future__ import annotations

import numpy as np

from hardware.spec import Hardware
from workloads.model import ModelSpec


class ParallelismError(ValueError):
    """A tensor-parallel degree the model or the node cannot run; the message says which rule."""


def tp_allowed(model: ModelSpec, hw: Hardware, tp) -> np.ndarray:
    """Elementwise: whether each tp degree divides the heads and fits in one node."""
    tp = np.asarray(tp, dtype=float)
    whole = np.isfinite(tp) & (tp >= 1) & (tp == np.round(tp))
    t = np.where(whole, tp, 1.0)
    ok = whole & (np.mod(model.n_heads, t) == 0) & (t <= hw.devices_per_node)
    if not model.is_mla:
        k = float(model.n_kv_heads)
        ok &= np.where(t >= k, np.mod(t, k) == 0, np.mod(k, t) == 0)
    return ok


def why_tp_not_allowed(model: ModelSpec, hw: Hardware, tp: float) -> str | None:
    """The reason one tp degree is refused, in words; None when it is allowed."""
    if tp > hw.devices_per_node:
        return (f"tp: {tp:g} exceeds the {hw.devices_per_node} devices per node of {hw.name}; tensor parallelism "
                "is modeled inside one node (an inter-node link is not described by the spec); allowed: "
                + _allowed(model, hw))
    if model.n_heads % tp:
        return (f"tp: {tp:g} does not divide {model.name}'s {model.n_heads} attention heads; allowed on "
                f"{hw.name}: {_allowed(model, hw)}")
    if not model.is_mla and not tp_allowed(model, hw, tp):
        return (f"tp: {tp:g} neither divides nor is a multiple of {model.name}'s {model.n_kv_heads} KV heads; "
                f"allowed on {hw.name}: {_allowed(model, hw)}")
    return None


def _allowed(model: ModelSpec, hw: Hardware) -> str:
    degrees = np.arange(1, hw.devices_per_node + 1)
    return ", ".join(str(int(d)) for d in degrees[tp_allowed(model, hw, degrees)])


#: Verdicts of single degrees by (model, spec, tp), checked against the objects themselves (a
#: scalar prediction asks every call; the array rules cost it ~15 us).
_VERDICTS: dict = {}


def check_parallelism(model: ModelSpec, hw: Hardware, tp) -> None:
    """Raise ParallelismError naming the first refused tp degree (see the module doc)."""
    if isinstance(tp, (int, float)) and not isinstance(tp, bool):  # one degree: its verdict once
        key = (id(model), id(hw), float(tp))
        hit = _VERDICTS.get(key)
        if hit is None or hit[0] is not model or hit[1] is not hw:
            if len(_VERDICTS) >= 512:
                _VERDICTS.clear()
            hit = _VERDICTS[key] = (model, hw, bool(tp_allowed(model, hw, tp)))
        if not hit[2]:
            raise ParallelismError(why_tp_not_allowed(model, hw, float(tp)))
        return
    tp = np.atleast_1d(np.asarray(tp, dtype=float))
    bad = tp[~tp_allowed(model, hw, tp)]
    if bad.size:
        raise ParallelismError(why_tp_not_allowed(model, hw, float(bad[0])))
