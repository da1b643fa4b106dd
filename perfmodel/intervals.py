"""Prediction intervals: a p10-p90 band around every predicted time, from validated residuals.

A calibrated spec carries, per residual class, the 10th and 90th percentiles of measured /
predicted over the validation's evaluation split (cases the fit never saw; validate/calibrate.py
writes them as Calibration.error_bands). A step's band comes from the most specific evidence:

1. whole steps of the same engine profile and phase were validated ("model_step_decode
   torch-compile"): band = T x [p10, p90] of those steps' ratios (their errors already include how
   op errors combine);
2. otherwise the ops' own classes (matmul, attention_prefill / attention_decode, vector,
   allreduce): band = [sum_c T_c p10_c, sum_c T_c p90_c] over the classes c of the step's ops,
   with T_c the time of class c. Errors within a class share fitted parameters, and classes share
   the floor and bandwidths, so they are summed as fully correlated (comonotone): the widest band
   consistent with the per-class quantiles, never narrower than the truth if those hold.

Host time that is not device time (eager dispatch, the engine's per-step host time) is kept as
predicted. A spec without bands (datasheet presets) gives no band: `band` returns NaN and
predictions leave the interval columns out (an uncalibrated roofline has no validated error).
"""
from __future__ import annotations

import numpy as np

#: Residual class of each op kind (attention is split by phase in `op_class`).
KIND_CLASSES = {"matmul": "matmul", "moe": "matmul", "attention": "attention", "norm": "vector",
                "elementwise": "vector", "concat": "vector", "embedding": "vector", "comm": "allreduce"}
BAND_CLASSES = ("matmul", "attention_prefill", "attention_decode", "vector", "allreduce")


def op_class(kind: str, phase: str) -> str:
    """The residual class an op's time is banded with."""
    cls = KIND_CLASSES.get(kind, "vector")
    return f"attention_{phase}" if cls == "attention" else cls


def step_class(phase: str, engine: str) -> str:
    """The residual class of whole validated steps of an engine profile and phase."""
    return f"model_step_{phase}" + ("" if engine == "hf-eager" else f" {engine}")


def class_offsets(bands: dict, phase: str, engine: str) -> dict | None:
    """{class: (p10 - 1, p90 - 1)} of the residual classes with a band: what each class's band
    adds beyond its predicted time, T_c (p_c - 1), so a step's band is its time plus the sums of
    those (`band`; the fast path sums them into its priced tables). None where the spec has no
    bands or whole steps of the engine and phase carry the band (the classes play no part)."""
    if not bands or bands.get(step_class(phase, engine)):
        return None
    return {cls: (q["p10"] - 1.0, q["p90"] - 1.0) for cls in BAND_CLASSES if (q := bands.get(cls))}


def band(total, class_times: dict, bands: dict, phase: str, engine: str, out: tuple = (None, None),
         offsets: tuple | None = None):
    """(p10, p90) of a step whose predicted time is `total`, of which `class_times` maps residual
    classes to their device time (see the module docstring). NaN where the spec has no bands.
    `out`: arrays the two bands of arrays are written into where the shapes allow (a sweep's
    output columns). `offsets`: the step's sums over classes of T_c (p10_c - 1) and T_c (p90_c - 1)
    (`class_offsets`) where its caller summed them already, in place of `class_times`."""
    if not bands:
        nan = np.full(np.shape(total), np.nan) if np.ndim(total) else np.nan
        return nan, nan
    whole = bands.get(step_class(phase, engine))
    if whole:
        if out[0] is None:
            return total * whole["p10"], total * whole["p90"]
        return np.multiply(total, whole["p10"], out=out[0]), np.multiply(total, whole["p90"], out=out[1])
    if offsets is not None:  # host time and classes without a band: as predicted
        fits = out[0] is not None and np.shape(total) == out[0].shape
        return tuple(np.add(total, offset, out=slot if fits else None) for offset, slot in zip(offsets, out))
    if isinstance(total, np.ndarray) and total.ndim:  # many scenarios: in place where the shapes allow
        banded = [(t, q) for cls, t in class_times.items() if (q := bands.get(cls))]
        if banded and _same_arrays(total, [t for t, _ in banded]):
            return _band_in_place(total, banded, out)
    return offset_band(total, class_times, class_offsets(bands, phase, engine))


def offset_band(total, class_times: dict, offsets: dict) -> tuple:
    """`band` of a step from its classes' offsets (`class_offsets`, which a caller may keep per
    spec and engine): total + sum_c T_c (p10_c - 1) and total + sum_c T_c (p90_c - 1), host time
    and classes without a band as predicted (the sums in `_band_in_place`'s order: the same
    doubles for one scenario as for a sweep's row)."""
    lo, hi = 0.0, 0.0
    for cls, t in class_times.items():
        factors = offsets.get(cls)
        if factors:
            lo, hi = lo + t * factors[0], hi + t * factors[1]
    return lo + total, hi + total


def _same_arrays(total, times: list) -> bool:
    """Whether the step time and every class time are float arrays of one shape."""
    return all(isinstance(t, np.ndarray) and t.shape == total.shape and t.dtype == float for t in [total, *times])


def _band_in_place(total: np.ndarray, banded: list, out: tuple = (None, None)) -> tuple:
    """`band`'s sums over classes for arrays, rearranged as total + sum_c T_c (p_c - 1) (the same
    band to rounding: what a class's band adds beyond its predicted time), into two accumulators
    and one scratch array (a sweep's chunk: four passes a class, where the sum and the remainder
    took five and one more)."""
    (first, q), rest = banded[0], banded[1:]
    lo, hi = np.multiply(first, q["p10"] - 1.0, out=out[0]), np.multiply(first, q["p90"] - 1.0, out=out[1])
    scratch = np.empty_like(total)
    for t, q in rest:
        lo += np.multiply(t, q["p10"] - 1.0, out=scratch)
        hi += np.multiply(t, q["p90"] - 1.0, out=scratch)
    lo += total  # host time and classes without a band: as predicted
    hi += total
    return lo, hi
