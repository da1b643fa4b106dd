"""Planning answers as thin layers over a sweep: the cheapest device set for a target rate under
latency limits, and the best batch size per device.

Both build one `planning.sweep` grid over devices x tensor parallelism x precisions x batch for one
model and workload, filter it with the limits, and rank what is left. A deployment is `replicas`
copies of one configuration (each `tp` devices serving one batch), enough copies to reach the
target rate: replicas = ceil(target / throughput of one copy), the rate model of static batching
that `perfmodel.evaluate` describes. Tensor parallelism stays inside one node (tp <= the device's
`devices_per_node`), as Megatron-LM deploys it, and divides the model's heads (`perfmodel.checks`).

Prices are compared on one basis (`Hardware.price_basis`): cloud on-demand list prices per
device-hour by default; presets priced as an amortised purchase (consumer cards, the H20) are ranked
only among themselves (price_basis="purchase-3y"). By default every preset of that basis is tried,
datasheet specs only: a calibrated spec of a device is a different model of the same device (slower,
measured), and mixing them would rank a device against itself. Every configuration is priced for one engine profile (`engine`, DEFAULT_ENGINE unless given: a serving
engine).

    >>> import workloads
    >>> from planning import recommend
    >>> rec = recommend.cheapest(workloads.load("llama-3-8b"), target_tok_s=20000, max_tpot_s=0.05)
    >>> rec.to_frame().head()  # doctest: +SKIP
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

import hardware as hardware_catalog
from planning import sweep
from perfmodel.engines import DEFAULT_ENGINE, Engine
from planning.sweep import SweepError

#: Batch sizes tried by default: every whole number up to 1024, so "best batch" is exact there.
DEFAULT_BATCH = {"start": 1, "stop": 1024, "step": 1}
RANK_COLUMNS = ["usd_per_hour_total", "total_devices", "tpot_s", "ttft_s"]
PRICE_BASIS_TEXT = {"cloud": "cloud on-demand list prices per device-hour",
                    "purchase-3y": "purchase price amortised over 3 years, GPU only (no host, power or margin)"}
SHOW_COLUMNS = ["hardware", "tp", "replicas", "total_devices", "batch", "w_bits", "kv_bits", "ttft_s",
                "tpot_s", "throughput_tok_s", "total_tok_s", "usd_per_hour_total", "usd_per_mtok"]


class NoFeasibleConfigError(ValueError):
    """No swept configuration meets the limits; the message says which limit and the best reached."""


@dataclass(frozen=True)
class Recommendation:
    """Deployments that meet the target and limits, cheapest first; `best` is the first row."""

    model: str
    target_tok_s: float
    options: Any  # DataFrame, ranked
    swept: int
    engine: str = DEFAULT_ENGINE
    price_basis: str = "cloud"

    @property
    def best(self) -> dict:
        return self.options.iloc[0].to_dict()

    def to_frame(self):
        return self.options


def _spec(model, devices, batch, prompt, gen, samples, w_bits, kv_bits, tp, a_bits, limits, engine,
          price_basis="cloud"):
    axes = {"model": [model], "hardware": _devices(devices, price_basis), "batch": batch,
            "prompt": prompt, "gen": gen, "samples": samples, "w_bits": w_bits, "kv_bits": kv_bits,
            "tp": tp, "a_bits": a_bits}
    return sweep.build(axes, "grid", constraints=limits, engine=engine)


def _catalog_devices(price_basis: str = "cloud") -> list[str]:
    names = [n for n in hardware_catalog.names() if not hardware_catalog.load(n).is_calibrated
             and hardware_catalog.load(n).price_basis == price_basis]
    if not names:
        raise SweepError(f"hardware: no datasheet presets priced on the {price_basis!r} basis are installed; "
                         "pass hardware=[...] names, paths or specs")
    return names


def _devices(devices, price_basis: str) -> list:
    """The devices to rank: those given (all of one price basis), else the catalog's of that basis."""
    if price_basis not in PRICE_BASIS_TEXT:
        raise SweepError(f"price_basis: {price_basis!r} must be one of {', '.join(PRICE_BASIS_TEXT)}")
    if not devices:
        return _catalog_devices(price_basis)
    resolved = [d if isinstance(d, hardware_catalog.Hardware) else hardware_catalog.load(d) for d in devices]
    other = [h for h in resolved if h.price_basis != price_basis]
    if other:
        raise SweepError(f"hardware: {', '.join(h.name for h in other)} is priced on the {other[0].price_basis!r} "
                         f"basis, not {price_basis!r} ({PRICE_BASIS_TEXT[price_basis]}); rank one price basis at "
                         f"a time (--price-basis {other[0].price_basis})")
    return resolved


def _limits(max_ttft_s, max_tpot_s) -> list[str]:
    limits = ["fits"]
    for column, value in (("ttft_s", max_ttft_s), ("tpot_s", max_tpot_s)):
        if value is not None:
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise SweepError(f"max_{column}: {value!r} must be a number of seconds > 0")
            limits.append(f"{column} <= {value!r}")
    return limits


def _sweep_frame(spec: sweep.SweepSpec, progress: bool, keep: str = "all"):
    """The sweep's rows (all, or feasible only), with `feasible` also requiring tp within one node."""
    frame = sweep.run(spec, keep=keep, progress=progress).frame  # feasible rows have tp_ok (perfmodel.checks)
    return frame if keep == "all" else frame[frame["feasible"].to_numpy()].copy()


def cheapest(model, target_tok_s: float | None = None, hardware=None, *, requests_per_s: float | None = None,
             prompt=2048, gen=256, samples=1, max_ttft_s=None, max_tpot_s=None, w_bits=(4, 8, 16),
             kv_bits=(8, 16), tp=(1, 2, 4, 8), a_bits=16, batch=DEFAULT_BATCH, top: int = 20,
             progress: bool = False, engine: Engine | str = DEFAULT_ENGINE,
             price_basis: str = "cloud") -> Recommendation:
    """The cheapest device set (USD per hour) that generates `target_tok_s` tokens/s (or serves
    `requests_per_s` requests of `gen` tokens x `samples`) within the TTFT / TPOT limits.

    Options are ranked by total USD/h, then fewer devices, then lower TPOT and TTFT; each device
    type appears once (its cheapest configuration). Raises NoFeasibleConfigError naming the limit
    that no configuration meets and the best value any reached.
    """
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or not 1 <= top <= 10_000:
        raise SweepError(f"top: {top!r} must be a whole number from 1 to 10,000")
    target = _target(target_tok_s, requests_per_s, gen, samples)
    spec = _spec(model, hardware, batch, prompt, gen, samples, w_bits, kv_bits, tp, a_bits,
                 _limits(max_ttft_s, max_tpot_s), engine, price_basis)
    feasible = _sweep_frame(spec, progress, keep="feasible")  # the full table only to explain a failure
    if feasible.empty:
        raise NoFeasibleConfigError(_why_none(_sweep_frame(spec, False), spec, _model_name(spec)))
    feasible["replicas"] = np.ceil(target / feasible["throughput_tok_s"].to_numpy())
    feasible["total_devices"] = feasible["replicas"] * feasible["tp"]
    feasible["total_tok_s"] = feasible["replicas"] * feasible["throughput_tok_s"]
    feasible["usd_per_hour_total"] = feasible["replicas"] * feasible["usd_per_hour"]
    feasible["price_basis"] = price_basis
    ranked = feasible.sort_values(RANK_COLUMNS + ["index"], kind="stable")
    options = ranked.drop_duplicates("hardware").head(top).reset_index(drop=True)
    return Recommendation(_model_name(spec), target, options, spec.size, spec.engine.name, price_basis)


def _target(target_tok_s, requests_per_s, gen, samples) -> float:
    if (target_tok_s is None) == (requests_per_s is None):
        raise SweepError("target: give exactly one of target_tok_s (generated tokens/s) or requests_per_s")
    if target_tok_s is not None:
        value, name = target_tok_s, "target_tok_s"
    else:
        value, name = requests_per_s, "requests_per_s"
        if np.ndim(gen) or np.ndim(samples) or isinstance(gen, (dict, list)) or isinstance(samples, (dict, list)):
            raise SweepError("requests_per_s: needs one gen and one samples value to convert to tokens/s")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise SweepError(f"{name}: {value!r} must be a number > 0")
    return float(value) if target_tok_s is not None else float(value) * gen * samples


def _model_name(spec: sweep.SweepSpec) -> str:
    return spec.axes[0].labels[0]


def _why_none(frame, spec: sweep.SweepSpec, model: str) -> str:
    """Name the first limit nothing meets, with the best value reached by rows meeting the others."""
    fits = frame["fits"].to_numpy() & frame["context_ok"].to_numpy() & frame["tp_ok"].to_numpy()
    if not frame["context_ok"].any():
        return f"no configuration: prompt + gen exceeds {model}'s maximum context"
    if not frame["tp_ok"].any():
        return f"no configuration: no swept tp divides {model}'s heads within one node of a swept device"
    if not fits.any():
        smallest = frame.loc[frame["context_ok"], "total_bytes"].idxmin()
        row = frame.loc[smallest]
        return (f"{model} fits on no swept device: the smallest footprint is {row['total_bytes'] / 1e9:.1f} GB "
                f"per device ({row['hardware']}, tp {row['tp']:g}, w{row['w_bits']:g}/kv{row['kv_bits']:g}, "
                f"batch {row['batch']:g}) against {row['capacity_bytes'] / 1e9:.1f} GB")
    for c in spec.constraints:
        if c.column in ("ttft_s", "tpot_s"):
            best = frame.loc[fits, c.column].idxmin()
            if frame.loc[best, c.column] > c.value:
                row = frame.loc[best]
                return (f"no configuration of {model} meets {c}: the lowest is {row[c.column]:.4g} s "
                        f"({row['hardware']}, tp {row['tp']:g}, batch {row['batch']:g}, "
                        f"w{row['w_bits']:g}/kv{row['kv_bits']:g})")
    return f"no configuration of {model} meets all of: {'; '.join(str(c) for c in spec.constraints)} together"


def best_batch(model, hardware=None, *, prompt=2048, gen=256, samples=1, max_ttft_s=None, max_tpot_s=None,
               w_bits=(16,), kv_bits=(16,), tp=(1,), a_bits=16, batch=DEFAULT_BATCH,
               objective: str = "throughput_per_device_tok_s", progress: bool = False,
               engine: Engine | str = DEFAULT_ENGINE, price_basis: str = "cloud"):
    """Per device (and tp / precision), the batch that maximises `objective` within the limits, with
    what stops a larger batch: "memory", a latency limit, "saturated" (larger batches fit but do no
    better) or "batch range" (the largest batch tried). Rows where no batch is feasible say why.
    Times are `engine`'s (a profile name or perfmodel.engines.Engine)."""
    spec = _spec(model, hardware, batch, prompt, gen, samples, w_bits, kv_bits, tp, a_bits,
                 _limits(max_ttft_s, max_tpot_s), engine, price_basis)
    frame = _sweep_frame(spec, progress)
    if not isinstance(objective, str) or objective not in frame.columns or frame[objective].dtype.kind not in "fiu":
        raise SweepError(f"objective: {objective!r} is not a numeric output column; e.g. "
                         "throughput_per_device_tok_s, throughput_tok_s, tok_per_usd")
    keys = ["hardware", "tp", "w_bits", "kv_bits", "a_bits"]
    rows = [_best_of_group(group.sort_values("batch"), objective, spec)
            for _, group in frame.groupby(keys, observed=True, sort=False)]
    import pandas as pd

    return pd.DataFrame(rows).reset_index(drop=True)


def _best_of_group(group, objective: str, spec: sweep.SweepSpec) -> dict:
    ok = group["feasible"].to_numpy()
    keep = ["batch", objective, "ttft_s", "tpot_s", "throughput_tok_s", "total_bytes", "max_batch",
            "usd_per_mtok"]
    if not ok.any():
        first = group.iloc[0].to_dict()
        return {**_identity(first), **{k: np.nan for k in dict.fromkeys(keep)},
                "limited_by": _failed(first, spec) or "the limits"}
    feasible = group[ok]
    best = feasible.loc[feasible[objective].idxmax()].to_dict()
    larger = group[group["batch"].to_numpy() > best["batch"]]
    if larger.empty:
        reason = "batch range"
    else:
        nxt = larger.iloc[0].to_dict()
        reason = _failed(nxt, spec) or "saturated"
    return {**_identity(best), **{k: best[k] for k in dict.fromkeys(keep)}, "limited_by": reason}


def _identity(row: dict) -> dict:
    return {k: row[k] for k in ("model", "hardware", "tp", "w_bits", "kv_bits", "a_bits", "prompt", "gen")}


def _failed(row: dict, spec: sweep.SweepSpec) -> str:
    """Which limits a row misses, in words ("memory", "tpot_s <= 0.05"...); empty if none."""
    reasons = [] if row["fits"] else ["memory"]
    reasons += [str(c) for c in spec.constraints if c.column != "fits" and not _holds(c, row[c.column])]
    if not row["context_ok"]:
        reasons.append("context")
    if not row["tp_ok"]:
        reasons.append("tp (heads / devices per node)")
    return ", ".join(reasons)


def _holds(c: sweep.Constraint, value) -> bool:
    return bool(sweep._OPS[c.op](value, c.value))
