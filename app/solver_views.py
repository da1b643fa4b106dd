"""Pure helpers behind the solver pages: call a solver, return plain frames and numbers.

No streamlit here (tests call these directly). Each solver module is imported inside the function
that uses it, so the Plan, Compare and Validation pages work even where a solver (or cvxpy) is
missing; the page then says "not available yet".
"""
from __future__ import annotations

import importlib
import io
import math

import numpy as np
import pandas as pd

from perfmodel.engines import DEFAULT_ENGINE

#: The modules each solver page needs.
PAGE_MODULES = {
    "bits": ("solvers.bits", "solvers.bits_cost"),
    "offload": ("solvers.offload", "solvers.flash"),
    "kv": ("solvers.kv", "perfmodel.longctx"),
    "tts": ("solvers.tts", "perfmodel.kinetics"),
}


def missing_modules(page: str) -> list[str]:
    """Modules of `page` that cannot be imported here (not written yet, or a dependency missing)."""
    missing = []
    for name in PAGE_MODULES[page]:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


# -- bit allocation ---------------------------------------------------------------------------------
def demo_sensitivities(model, seed: int = 0, spread: float = 1.0) -> pd.DataFrame:
    """SYNTHETIC per-layer sensitivities for a model's quantizable linear layers: params = rows x
    cols (exact), coef drawn log-normal (sigma `spread`) with a fixed seed. Not measured: stands in
    until a user uploads real ones (e.g. from the solvers' torch sensitivity helper)."""
    from solvers.bits_cost import model_layer_table

    table = model_layer_table(model)
    rng = np.random.default_rng(seed)
    return table.assign(name=table["layer"], params=table["rows"] * table["cols"],
                        coef=rng.lognormal(0.0, spread, len(table)))


def read_sensitivities(text: str | bytes, origin: str = "sensitivities") -> pd.DataFrame:
    """An uploaded sensitivity CSV (columns params, coef; optional name, layer, rows, cols, rmin,
    rmax, tie); ValueError naming what is wrong."""
    try:
        frame = pd.read_csv(io.StringIO(text.decode() if isinstance(text, bytes) else text), comment="#")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{origin}: not a readable CSV ({err})") from None
    missing = [c for c in ("params", "coef") if c not in frame.columns]
    if missing:
        raise ValueError(f"{origin}: missing column(s) {missing}; have {list(frame.columns)}")
    return frame


def allocate(frame: pd.DataFrame, model, hw, avg_bits: float, candidates=None, latency_budget_s=None,
             memory_budget_bytes=None, scope: str = "model", engine: str = DEFAULT_ENGINE) -> dict:
    """Solve, and set the result beside uniform widths at the same average (bytes, latency, loss).

    Latency (and a latency budget) needs each layer's GEMM shape: rows/cols columns, or layer
    names of `model` ("layers.3.ffn_up"); without them latency is NaN and only bits and bytes count.
    The rest of the decode step is `engine`'s. scope="layer": every layer keeps `avg_bits` and only
    its groups (columns) trade bits."""
    from solvers import bits, bits_cost

    groups = bits.BitGroups.from_frame(frame)
    try:  # latency needs each layer's shape: rows/cols columns, or layer names of the model
        costs = bits_cost.costs_from_frame(frame, hw, model=model, engine=engine)
    except ValueError:
        costs = None
    result = bits.allocate_bits(groups, avg_bits, candidates=candidates, costs=costs, scope=scope,
                                latency_budget_s=latency_budget_s, memory_budget_bytes=memory_budget_bytes)
    if costs is None and not math.isfinite(result.bytes_):
        result = bits_cost.with_costs(result, None)
    stored = np.full(groups.size, result.avg_bits + bits_cost.GROUP_OVERHEAD_BITS if result.avg_bits < 8
                     else result.avg_bits)
    uniform = {"loss": result.uniform_loss, "bytes": bits_cost.bytes_of(groups.params, stored),
               "latency_s": costs.time_s(costs.bit_sums(groups.layers, groups.params, stored)) if costs else math.nan}
    table = result.to_frame()
    # for the chart: a group's position and its kind (the op name of "layers.3.ffn_up" style names)
    table.insert(0, "index", np.arange(len(table)))
    table.insert(1, "kind", table["name"].str.rsplit(".", n=1).str[-1].where(table["name"].str.contains("."), "group"))
    summary = pd.DataFrame([{**result.summary(), "uniform_bytes": uniform["bytes"],
                             "uniform_latency_s": uniform["latency_s"]}])
    return {"summary": summary, "table": table, "uniform": uniform, "result": result.summary()}


def bits_cli(sensitivities_csv: str, avg_bits: float, hw: str, model: str, candidates=None, latency_s=None,
             memory_bytes=None, scope: str = "model", engine: str = DEFAULT_ENGINE) -> str:
    """The `perfmodel solve bits` line that reproduces the page (sensitivities saved as a CSV)."""
    line = (f"perfmodel solve bits --sensitivities {sensitivities_csv} --avg-bits {avg_bits:g} "
            f"--hardware {hw} --model {model} --engine {engine}")
    if candidates:
        line += " --candidates " + ",".join(f"{c:g}" if isinstance(c, (int, float)) else str(c) for c in candidates)
    if latency_s:
        line += f" --latency-budget '{latency_s:.9g} s'"
    if memory_bytes:
        line += f" --memory-budget '{memory_bytes:.9g} B'"
    if scope != "model":
        line += f" --scope {scope}"
    return line


# -- KV budgets ---------------------------------------------------------------------------------------
def kv_capacity(model, hw, context: int, users: int, kv_bits=16, w_bits=16, tp=1) -> pd.DataFrame:
    """Most users at `context`, and the longest context for `users` (both per device under tp)."""
    from solvers import kv

    common = dict(kv_bits=kv_bits, w_bits=w_bits, tp=tp)
    rows = [kv.max_concurrency(model, hw, context, **common).to_frame(),
            kv.max_context(model, hw, users, **common).to_frame()]
    return pd.concat(rows, ignore_index=True)


def serving_table(model, hw, contexts, tps, batch=1, w_bits=16, kv_bits=16,
                  engine: str = DEFAULT_ENGINE) -> pd.DataFrame:
    """perfmodel.longctx over contexts x tensor-parallel degrees for `engine` (contexts above the
    model's maximum are left out)."""
    from perfmodel import longctx

    ctx = np.array([c for c in contexts if c <= model.max_context], float)
    if ctx.size == 0:
        raise ValueError(f"context: every length exceeds {model.name}'s maximum of {model.max_context} tokens")
    plan = longctx.analyze(model, hw, ctx[None, :], tp=np.asarray(tps, float)[:, None], batch=batch,
                           w_bits=w_bits, kv_bits=kv_bits, engine=engine)
    return plan.to_frame()


def kv_setting(model, hw, context, users, latency_target_s=None, memory_target_bytes=None, w_bits=16, tp=1,
               engine: str = DEFAULT_ENGINE) -> dict:
    from solvers import kv

    best = kv.cheapest_kv_setting(model, hw, context, users=users, latency_target_s=latency_target_s,
                                  memory_target_bytes=memory_target_bytes, w_bits=w_bits, tp=tp, engine=engine)
    chosen = {k: v for k, v in best.__dict__.items() if k != "candidates"}
    return {"best": chosen, "candidates": best.to_frame()}


def demo_importance(n_layers: int) -> np.ndarray:
    """SYNTHETIC layer importance falling linearly from 2 at the first layer to 1 at the last (the
    shape of PyramidKV's observation that lower layers attend more broadly, arXiv 2406.02069)."""
    return np.linspace(2.0, 1.0, n_layers)


def kv_split(importance, total, lower=0.0, upper=None, alpha=1.0, names=None) -> pd.DataFrame:
    from solvers import kv

    split = kv.split_kv_budget(np.asarray(importance, float), total, lower=lower, upper=upper, alpha=alpha,
                               names=names)
    return split.to_frame()


# -- offloading -----------------------------------------------------------------------------------------
TIER_NAMES = ("gpu", "cpu", "disk")


def offload(model, hw, prompt: int, gen: int, overlap: str = "flexgen", cpu_attention: bool = True,
            engine: str = DEFAULT_ENGINE) -> dict:
    """The FlexGen-style LP placement and its predicted throughput (GPU steps priced for `engine`), as frames."""
    from solvers import offload as off
    from workloads import Scenario

    result = off.offload_policy(model, hw, Scenario(batch=1, prompt=prompt, gen=gen), overlap=overlap,
                                cpu_attention=cpu_attention, engine=engine)
    pol = result.policy
    placement = pd.DataFrame([{"data": name, "tier": tier, "fraction": value}
                              for name, triple in (("weights", pol.weights), ("KV cache", pol.kv),
                                                   ("activations", pol.activations))
                              for tier, value in zip(TIER_NAMES, triple)])
    tiers = pd.DataFrame([{"tier": t, "peak_GB": result.peak_bytes[t] / 1e9,
                           "capacity_GB": result.capacity_bytes[t] / 1e9} for t in TIER_NAMES])
    candidates = result.candidates_frame().assign(block_size=lambda f: f["gbs"] * f["n_batches"])
    return {"summary": result.to_frame(), "placement": placement, "tiers": tiers,
            "streams": result.streams_frame().reset_index(names="phase"),
            "candidates": candidates[candidates["status"] == "optimal"]}


def flash_plan(model, hw, dram_budget_bytes: float, w_bits=16, active=0.10, persistence=0.7, bundling=True,
               device="cpu") -> dict:
    from solvers import flash

    activity = flash.NeuronActivity(active_fraction=active, persistence=persistence)
    plan = flash.plan_flash(model, hw, dram_budget_bytes, activity, w_bits=w_bits, bundling=bundling, device=device)
    parts = pd.DataFrame([{"plan": "windowed + bundled" if bundling else "windowed", "part": part, "ms": value * 1e3}
                          for part, value in (("flash I/O", plan.io_s), ("memory management", plan.memory_s),
                                              ("compute", plan.compute_s))]
                         + [{"plan": "naive (load what misses)", "part": "total", "ms": plan.naive_latency_s * 1e3}])
    return {"summary": plan.to_frame(), "parts": parts}


# -- test-time scaling ---------------------------------------------------------------------------------
def tts_plan(curves_csv: str | None, budget: float, unit: str, hw, strategy: str, samples) -> dict:
    """solvers.tts on the shipped SYNTHETIC demo curves (curves_csv None) or an uploaded CSV."""
    from solvers import tts

    if curves_csv is None:
        curves = tts.AccuracyCurves.demo()
    else:
        try:
            frame = pd.read_csv(io.StringIO(curves_csv), comment="#")
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise tts.CurveError(f"curves: not a readable CSV ({err})") from None
        curves = tts.AccuracyCurves(frame, source="uploaded curves")
    cost = tts.CostModel(unit=unit, hardware=hw)
    plan = tts.plan_tts(curves, budget, tts.load_models(curves.models), cost, list(samples), strategy)
    return {"best": plan.best, "frontier": plan.frontier, "table": plan.to_frame(), "source": plan.source,
            "unit": plan.unit}
