"""KV-cache budgets: capacity under an HBM budget, the least-compressed KV setting meeting a target,
and the split of a total KV budget across layers or heads.

1. `max_concurrency` / `max_context`: closed forms on `perfmodel.longctx` (users x KV per user
   + weights + one prefill chunk of activations <= HBM budget).
2. `cheapest_kv_setting`: a vectorized sweep over KV bits (KIVI, arXiv 2402.02750), token eviction
   to a kept budget (H2O, arXiv 2306.14048; SnapKV, arXiv 2404.14469), key-channel pruning (ThinK,
   arXiv 2407.21018) and block top-k sparse reads (Quest, arXiv 2406.10774; Kinetics); "cheapest"
   = least compression, measured in weighted halvings: sum_k w_k log2(reduction of knob k), so 16->8
   bits, keeping half the tokens and reading half of them each cost one halving (weight 1 unless
   the user supplies accuracy-based weights). The latency/memory come from the project's roofline.
3. `split_kv_budget`: minimise sum_i w_i (b_i)^(-alpha) s.t. sum_i c_i b_i <= B, lo_i <= b_i <= hi_i.
   The power law models the attention mass lost when layer i keeps b_i tokens (importance w_i,
   e.g. PyramidKV's observation that lower layers need more, arXiv 2406.02069); it is convex and
   decreasing, so the budget binds. KKT stationarity gives b_i = (alpha w_i / (lambda c_i))^(1/(1+alpha))
   clipped to the bounds (water-filling with one multiplier, found by bisection in log lambda);
   without bounds, b_i = B w_i^(1/(1+alpha)) c_i^(-1/(1+alpha)) / sum_j c_j^(alpha/(1+alpha)) w_j^(1/(1+alpha)).
   The same problem is built in cvxpy (power cone) and the two are tested against each other.
   (Bit-width splits with an exponential loss are `solvers.bits`.)
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from hardware.spec import Hardware
from perfmodel import kinetics, longctx, shapes
from perfmodel.engines import DEFAULT_ENGINE, Engine
from perfmodel.ops import Precision
from perfmodel.roofline import op_time
from solvers.scenario_args import from_scenario
from workloads.model import ModelSpec
from workloads.scenario import Scenario


class KVBudgetError(ValueError):
    """An impossible KV request: says what is needed and what there is."""


def _gb(x: float) -> str:
    return f"{x / 1e9:.2f} GB"


# -- 1. capacity ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class KVCapacity:
    """Result of `max_concurrency` / `max_context`: the answer, what bounds it, and the memory split."""

    quantity: str
    value: int
    bound_by: str
    users: int
    context: int
    budget_bytes: float
    reserved_bytes: float
    kv_bytes_per_user: float
    kv_bits: float
    tp: int

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([self.__dict__])


#: Largest total of a split (tokens, or bytes with unit costs): 1e15 is a petabyte of KV.
MAX_SPLIT_TOTAL = 1e15


def _number_in(value, low: float, high: float) -> bool:
    """A real number (not a bool, not text) with low < value <= high; False for huge ints and NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    try:
        value = float(value)
    except OverflowError:
        return False
    return math.isfinite(value) and low < value <= high


def _hbm_budget(hw: Hardware, hbm_budget_bytes) -> float:
    budget = hw.hbm_capacity_bytes if hbm_budget_bytes is None else float(hbm_budget_bytes)
    if not math.isfinite(budget) or budget <= 0:
        raise KVBudgetError(f"hbm_budget_bytes: {hbm_budget_bytes!r} must be a finite number above zero")
    if budget > hw.hbm_capacity_bytes:
        raise KVBudgetError(f"hbm_budget_bytes: {_gb(budget)} exceeds {hw.name}'s {_gb(hw.hbm_capacity_bytes)} of HBM")
    return budget


def _free_bytes(model, hw, budget, w_bits, tp, prefill_chunk) -> tuple[float, float]:
    reserved = float(longctx.reserved_bytes(model, w_bits, 16, tp, prefill_chunk))
    if reserved >= budget:
        raise KVBudgetError(f"hbm budget: {model.name} needs {_gb(reserved)} per device for weights and one "
                            f"prefill chunk of activations (w_bits {w_bits:g}, tp {tp}), has {_gb(budget)}")
    return budget - reserved, reserved


_SCENARIO_FIELDS = {"kv_bits": "kv_bits", "w_bits": "w_bits", "tp": "tp"}


def _with_scenario(scenario, **given) -> tuple:
    """(kv_bits, w_bits, tp): the ones given, else the scenario's (`solvers.scenario_args`), else
    16, 16, 1."""
    args = from_scenario(scenario, given, {k: v for k, v in _SCENARIO_FIELDS.items() if k in given})
    defaults = {"kv_bits": 16, "w_bits": 16, "tp": 1}
    return tuple(defaults[k] if args[k] is None else args[k] for k in given)


def max_concurrency(model: ModelSpec, hw: Hardware, context: int, *, kv_bits=None, w_bits=None, tp=None,
                    hbm_budget_bytes=None, prefill_chunk=longctx.PREFILL_CHUNK_TOKENS,
                    scenario: Scenario | None = None) -> KVCapacity:
    """Most users of `context` tokens whose KV fits in the HBM budget (per device, under tp).
    `scenario` may supply kv_bits, w_bits and tp (default 16, 16, 1)."""
    kv_bits, w_bits, tp = _with_scenario(scenario, kv_bits=kv_bits, w_bits=w_bits, tp=tp)
    longctx.check_request(model, hw, context, tp)
    longctx.check_bits(kv_bits=kv_bits, w_bits=w_bits)
    budget = _hbm_budget(hw, hbm_budget_bytes)
    free, reserved = _free_bytes(model, hw, budget, w_bits, tp, prefill_chunk)
    per_user = float(longctx.kv_bytes_per_user(model, context, kv_bits, tp))
    users = int(free // per_user)
    if users < 1:
        raise KVBudgetError(f"hbm budget: one user at {context} tokens needs {_gb(per_user)} of KV per device, "
                            f"{_gb(free)} is left after weights and activations")
    return KVCapacity("users", users, "hbm", users, int(context), budget, reserved, per_user, kv_bits, int(tp))


def max_context(model: ModelSpec, hw: Hardware, users: int, *, kv_bits=None, w_bits=None, tp=None,
                hbm_budget_bytes=None, prefill_chunk=longctx.PREFILL_CHUNK_TOKENS,
                scenario: Scenario | None = None) -> KVCapacity:
    """Longest context each of `users` users can hold at once; capped by the model's maximum.
    `scenario` may supply kv_bits, w_bits and tp (default 16, 16, 1)."""
    kv_bits, w_bits, tp = _with_scenario(scenario, kv_bits=kv_bits, w_bits=w_bits, tp=tp)
    longctx.check_request(model, hw, 1, tp)
    longctx.check_bits(kv_bits=kv_bits, w_bits=w_bits)
    if isinstance(users, bool) or not (isinstance(users, (int, np.integer)) and 1 <= users <= 10**7):
        raise KVBudgetError(f"users: {users!r:.40} must be a whole number from 1 to 10,000,000")
    budget = _hbm_budget(hw, hbm_budget_bytes)
    free, reserved = _free_bytes(model, hw, budget, w_bits, tp, prefill_chunk)
    per_token = float(longctx.kv_bytes_per_user(model, 1, kv_bits, tp))
    tokens = int(free // (users * per_token))
    if tokens < 1:
        raise KVBudgetError(f"hbm budget: {users} users need {_gb(users * per_token)} of KV per token of context, "
                            f"{_gb(free)} is left after weights and activations")
    bound = "model max_context" if tokens >= model.max_context else "hbm"
    tokens = min(tokens, model.max_context)
    return KVCapacity("context", tokens, bound, int(users), tokens, budget, reserved, tokens * per_token,
                      kv_bits, int(tp))


# -- 2. the least-compressed KV setting meeting a target -----------------------------------------
#: Knobs of `cheapest_kv_setting` and their defaults.
DEFAULT_KV_BITS = (16, 8, 4, 2)
DEFAULT_KEEP_FRACTIONS = (1.0, 0.5, 0.25, 0.125)
DEFAULT_THINK_RATIOS = (0.0, 0.25, 0.5)
DEFAULT_SPARSE_BUDGETS = (0, 8192, 4096, 2048, 1024)
DEFAULT_WEIGHTS = {"kv_bits": 1.0, "evict": 1.0, "think": 1.0, "sparse": 1.0}


def stored_kv_bits(kv_bits, think_ratio, quant_group=128):
    """Mean stored bits per KV element: keys keep (1 - ratio) of their channels (ThinK), values all;
    below 8 bits each group of `quant_group` elements adds a 16-bit scale and zero (KIVI layout)."""
    bits = shapes.stored_bits(kv_bits, quant_group)
    return bits * (1 - np.asarray(think_ratio, float) / 2)


def compression_halvings(context, kv_bits, keep, think_ratio, sparse_budget, weights=None):
    """Weighted log2 reduction of each knob: bits 16/b, tokens context/keep, key channels
    1/(1 - ratio/2) of the KV, reads keep/min(keep, budget). The objective `cheapest_kv_setting` minimises."""
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    keep = np.minimum(keep, context)
    reads = np.where(np.asarray(sparse_budget) > 0, np.minimum(keep, np.maximum(sparse_budget, 1)), keep)
    return (w["kv_bits"] * np.log2(16.0 / np.asarray(kv_bits, float)) + w["evict"] * np.log2(context / keep)
            + w["think"] * -np.log2(1 - np.asarray(think_ratio, float) / 2) + w["sparse"] * np.log2(keep / reads))


def kv_setting_costs(model: ModelSpec, hw: Hardware, context, users, kv_bits, keep, think_ratio, sparse_budget,
                     *, w_bits=16, tp=1, block_size=16, quant_group=128,
                     engine: Engine | str = DEFAULT_ENGINE) -> dict:
    """KV bytes per device for `users` users and decode latency per token, for broadcast knob arrays.

    Latency = the roofline decode step with `keep` cached tokens read at the stored bits (sparse:
    min(keep, budget) tokens), plus, for sparse settings, block scoring and top-k per layer
    (`kinetics.sparse_attention_ops`, a fused kernel reading selected blocks in place). The decode
    step is `engine`'s (perfmodel.engines; DEFAULT_ENGINE, a serving engine, unless given).
    """
    bits = stored_kv_bits(kv_bits, think_ratio, quant_group)
    kept = np.minimum(keep, context)
    rep_keys = np.where(np.asarray(sparse_budget) > 0, 0.5 * (1 - np.asarray(think_ratio)) / block_size, 0.0)
    per_user = longctx.kv_bytes_per_user(model, kept, bits, tp) * (1 + rep_keys)
    step = longctx.decode_time_s(model, hw, kept, users, w_bits=w_bits, kv_bits=bits, tp=tp,
                                 sparse_budget=sparse_budget, engine=engine)
    p = Precision(w_bits, 16, bits)
    ops = kinetics.sparse_attention_ops(model, users, kept, np.maximum(sparse_budget, 1), block_size, p, tp,
                                        materialized_gather=False)[:2]
    selection = sum(model.n_layers * np.asarray(op_time(op, hw, p, tp).time_s) for op in ops)
    latency = step + np.where(np.asarray(sparse_budget) > 0, selection, 0.0)
    return {"kv_bytes": users * per_user, "stored_bits": bits, "decode_s_per_token": latency}


@dataclass(frozen=True)
class KVSetting:
    """The chosen setting and the table of every candidate that met the target (best first)."""

    kv_bits: float
    keep_tokens: int
    think_ratio: float
    sparse_budget: int
    kv_bytes: float
    decode_s_per_token: float
    halvings: float
    candidates: object = field(repr=False, default=None)

    def to_frame(self):
        return self.candidates


def cheapest_kv_setting(model: ModelSpec, hw: Hardware, context: int, *, users: int = 1, latency_target_s=None,
                        memory_target_bytes=None, kv_bits=DEFAULT_KV_BITS, keep_fractions=DEFAULT_KEEP_FRACTIONS,
                        think_ratios=DEFAULT_THINK_RATIOS, sparse_budgets=DEFAULT_SPARSE_BUDGETS, weights=None,
                        w_bits=None, tp=None, block_size=16, engine: Engine | str = DEFAULT_ENGINE,
                        scenario: Scenario | None = None) -> KVSetting:
    """The least-compressed KV setting whose per-token decode latency (for `users` users at `context`)
    is within `latency_target_s` and whose KV bytes per device fit `memory_target_bytes`; every
    candidate must also fit in HBM beside the weights. Raises KVBudgetError saying the best reachable.
    Latency is `engine`'s decode step (perfmodel.engines). `scenario` may supply w_bits and tp
    (default 16, 1); the KV bits are the candidates searched."""
    w_bits, tp = _with_scenario(scenario, w_bits=w_bits, tp=tp)
    longctx.check_request(model, hw, context, tp)
    longctx.check_bits(w_bits=w_bits)
    if not (isinstance(users, (int, np.integer)) and not isinstance(users, bool) and 1 <= users <= 10**7):
        raise KVBudgetError(f"users: {users!r} must be a whole number from 1 to 10,000,000")
    if latency_target_s is None and memory_target_bytes is None:
        raise KVBudgetError("target: give latency_target_s or memory_target_bytes (or both)")
    for name, value in (("latency_target_s", latency_target_s), ("memory_target_bytes", memory_target_bytes)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise KVBudgetError(f"{name}: {value!r} must be a finite number above zero")
    _check_knobs(kv_bits, keep_fractions, think_ratios, sparse_budgets, weights)
    grid = np.meshgrid(np.asarray(kv_bits, float), np.asarray(keep_fractions, float),
                       np.asarray(think_ratios, float), np.asarray(sparse_budgets, float), indexing="ij")
    b, frac, think, sparse = (g.reshape(-1) for g in grid)
    keep = np.maximum(np.floor(frac * context), 1.0)
    costs = kv_setting_costs(model, hw, context, users, b, keep, think, sparse, w_bits=w_bits, tp=tp,
                             block_size=block_size, engine=engine)
    halvings = compression_halvings(context, b, keep, think, sparse, weights)
    free = hw.hbm_capacity_bytes - longctx.reserved_bytes(model, w_bits, 16, tp)
    ok = costs["kv_bytes"] <= free
    if latency_target_s is not None:
        ok &= costs["decode_s_per_token"] <= latency_target_s
    if memory_target_bytes is not None:
        ok &= costs["kv_bytes"] <= memory_target_bytes
    if not ok.any():
        raise KVBudgetError(_unreachable(costs, free, latency_target_s, memory_target_bytes, users, context))
    import pandas as pd

    frame = pd.DataFrame({"kv_bits": b, "keep_tokens": keep, "think_ratio": think, "sparse_budget": sparse,
                          "stored_bits": costs["stored_bits"], "kv_bytes": costs["kv_bytes"],
                          "decode_s_per_token": costs["decode_s_per_token"], "halvings": halvings})[ok]
    frame = frame.sort_values(["halvings", "decode_s_per_token"]).reset_index(drop=True)
    best = frame.iloc[0]
    return KVSetting(float(best.kv_bits), int(best.keep_tokens), float(best.think_ratio), int(best.sparse_budget),
                     float(best.kv_bytes), float(best.decode_s_per_token), float(best.halvings), frame)


def _check_knobs(kv_bits, keep_fractions, think_ratios, sparse_budgets, weights) -> None:
    checks = (("kv_bits", kv_bits, lambda v: 0 < v <= 16), ("keep_fractions", keep_fractions, lambda v: 0 < v <= 1),
              ("think_ratios", think_ratios, lambda v: 0 <= v < 1), ("sparse_budgets", sparse_budgets, lambda v: v >= 0))
    for name, values, rule in checks:
        arr = np.atleast_1d(np.asarray(values, float))
        if arr.size == 0 or not np.all(np.isfinite(arr)) or not all(rule(v) for v in arr):
            raise KVBudgetError(f"{name}: {list(np.atleast_1d(values))!r} has a value out of range")
    unknown = set(weights or {}) - set(DEFAULT_WEIGHTS)
    if unknown:
        raise KVBudgetError(f"weights: unknown knob(s) {sorted(unknown)}; known: {sorted(DEFAULT_WEIGHTS)}")
    for knob, value in (weights or {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 <= value <= 1e6:
            raise KVBudgetError(f"weights: {knob} = {value!r} must be a penalty weight from 0 to 1e6")


def _unreachable(costs, free, latency, memory, users, context) -> str:
    fits = costs["kv_bytes"] <= free
    if not fits.any():
        return (f"hbm: even the most compressed setting needs {_gb(costs['kv_bytes'].min())} of KV for {users} "
                f"users at {context} tokens, {_gb(free)} is free")
    parts = []
    if latency is not None:
        parts.append(f"latency_target_s {latency * 1e3:.4g} ms (fastest reachable "
                     f"{costs['decode_s_per_token'][fits].min() * 1e3:.4g} ms)")
    if memory is not None:
        parts.append(f"memory_target_bytes {_gb(memory)} (smallest reachable {_gb(costs['kv_bytes'].min())})")
    return "no KV setting meets " + " and ".join(parts)


# -- 3. split a KV budget across layers or heads ---------------------------------------------------
@dataclass(frozen=True)
class KVSplit:
    """Token budgets per group (layer or head) and the predicted loss sum_i w_i b_i^(-alpha)."""

    status: str
    method: str
    budgets: np.ndarray
    importance: np.ndarray
    unit_cost: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    names: tuple
    alpha: float
    total: float
    objective: float
    multiplier: float
    solve_time_s: float
    stats: dict = field(default_factory=dict)

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame({"group": self.names, "importance": self.importance, "budget": self.budgets,
                             "share": self.unit_cost * self.budgets / np.sum(self.unit_cost * self.budgets),
                             "loss": power_loss(self.importance, self.budgets, self.alpha)})


def power_loss(importance, budgets, alpha):
    """w b^(-alpha) per group (0 for zero importance, even at b = 0)."""
    w, b = np.asarray(importance, float), np.asarray(budgets, float)
    with np.errstate(divide="ignore"):
        return np.where(w > 0, w * np.power(np.maximum(b, 1e-300), -alpha), 0.0)


@dataclass(frozen=True)
class _SplitProblem:
    w: np.ndarray
    c: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    total: float
    alpha: float
    names: tuple


def _split_problem(importance, total, lower, upper, alpha, unit_cost, names) -> _SplitProblem:
    w = np.atleast_1d(np.asarray(importance, float))
    n = w.size
    if n == 0:
        raise KVBudgetError("importance: at least one group is needed")
    names = tuple(str(s) for s in names) if names is not None else tuple(f"layer{i}" for i in range(n))
    if len(names) != n:
        raise KVBudgetError(f"names: {len(names)} names for {n} groups")
    c = np.broadcast_to(np.asarray(unit_cost, float), (n,)).copy()
    lo = np.broadcast_to(np.asarray(lower, float), (n,)).copy()
    hi = np.broadcast_to(np.asarray(np.inf if upper is None else upper, float), (n,)).copy()
    for label, arr, ok, rule in (("importance", w, w >= 0, "finite, zero or more"),
                                 ("unit_cost", c, c > 0, "finite and above zero"),
                                 ("lower", lo, lo >= 0, "finite, zero or more"), ("upper", hi, hi > 0, "above zero")):
        bad = ~(ok & (np.isfinite(arr) | (label == "upper")))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise KVBudgetError(f"{label}: {float(arr[i]):g} for group {names[i]!r} must be {rule}")
    if not np.any(w > 0):
        raise KVBudgetError("importance: every group has importance 0; at least one must be above zero")
    if n > 10**6:
        raise KVBudgetError(f"importance: {n:,} groups; at most 1,000,000")
    if np.any(lo > hi):
        i = int(np.flatnonzero(lo > hi)[0])
        raise KVBudgetError(f"lower: {lo[i]:g} exceeds upper {hi[i]:g} for group {names[i]!r}")
    if not _number_in(alpha, 0, 100):
        raise KVBudgetError(f"alpha: {alpha!r:.40} must be a number above 0 and at most 100")
    if not _number_in(total, 0, MAX_SPLIT_TOTAL):
        raise KVBudgetError(f"total: {total!r:.40} must be a number above 0 and at most {MAX_SPLIT_TOTAL:g}")
    floor = float(c @ lo)
    if total < floor:
        raise KVBudgetError(f"total: {total:g} is infeasible; the lower bounds alone need {floor:g}")
    return _SplitProblem(w, c, lo, hi, float(total), float(alpha), names)


def _budgets_at(pb: _SplitProblem, log_lam: float) -> np.ndarray:
    """Stationary point b_i = (alpha w_i / (lambda c_i))^(1/(1+alpha)), clipped to the bounds."""
    with np.errstate(divide="ignore"):
        log_b = (np.log(pb.alpha * pb.w / pb.c) - log_lam) / (1 + pb.alpha)
    return np.clip(np.exp(log_b), pb.lo, pb.hi)


def split_kv_budget(importance, total, *, lower=0.0, upper=None, alpha=1.0, unit_cost=1.0, names=None,
                    method: str = "closed-form") -> KVSplit:
    """Split `total` (tokens, or bytes with `unit_cost` bytes per token of each group) across groups
    to minimise sum_i w_i b_i^(-alpha) within bounds. method: "closed-form" or "cvxpy"."""
    pb = _split_problem(importance, total, lower, upper, alpha, unit_cost, names)
    if method not in ("closed-form", "cvxpy"):
        raise KVBudgetError(f"method: {method!r} must be 'closed-form' or 'cvxpy'")
    start = time.perf_counter()
    if float(pb.c @ np.where(pb.w > 0, pb.hi, pb.lo)) <= pb.total:
        b, lam, status, stats = np.where(pb.w > 0, pb.hi, pb.lo), 0.0, "budget-exceeds-upper-bounds", {}
    elif method == "closed-form":
        b, lam, stats = _solve_closed_form(pb)
        status = "optimal"
    else:
        b, lam, status, stats = _solve_cvxpy(pb)
    objective = float(np.sum(power_loss(pb.w, b, pb.alpha)))
    return KVSplit(status, method, b, pb.w, pb.c, pb.lo, pb.hi, pb.names, pb.alpha, pb.total, objective, lam,
                   time.perf_counter() - start, stats)


def unbounded_split(importance, total, alpha=1.0, unit_cost=1.0) -> np.ndarray:
    """The closed form without bounds: b_i proportional to (w_i / c_i)^(1/(1+alpha)), scaled to spend
    the budget exactly (sum_i c_i b_i = total)."""
    w = np.asarray(importance, float)
    c = np.broadcast_to(np.asarray(unit_cost, float), w.shape)
    shape = (w / c) ** (1 / (1 + alpha))
    return total * shape / float(c @ shape)


def _solve_closed_form(pb: _SplitProblem) -> tuple[np.ndarray, float, dict]:
    """Bisection on log lambda: spend(lambda) = sum c_i b_i(lambda) decreases in lambda."""
    active = pb.w > 0
    if not np.any(np.isfinite(pb.hi[active])) and np.all(pb.lo == 0):
        b = np.zeros_like(pb.w)
        b[active] = unbounded_split(pb.w[active], pb.total, pb.alpha, pb.c[active])
        lam = pb.alpha * pb.w[active][0] * b[active][0] ** (-pb.alpha - 1) / pb.c[active][0]
        return b, float(lam), {"iterations": 0}
    lo_l, hi_l = -800.0, 800.0  # exp(+-800) brackets any multiplier of float inputs
    for it in range(1, 300):
        mid = 0.5 * (lo_l + hi_l)
        if float(pb.c @ _budgets_at(pb, mid)) > pb.total:
            lo_l = mid
        else:
            hi_l = mid
        if hi_l - lo_l < 1e-13:
            break
    return _budgets_at(pb, hi_l), float(np.exp(hi_l)), {"iterations": it}


def _solve_cvxpy(pb: _SplitProblem):
    """The same program in cvxpy. Budgets are scaled by s = total / sum(c) (x = b / s) so the solver
    sees numbers near 1: the loss becomes s^(-alpha) sum_i w_i x_i^(-alpha), the same minimiser."""
    import cvxpy as cp

    active = np.flatnonzero(pb.w > 0)
    scale = pb.total / float(pb.c.sum())
    w, c, lo, hi = pb.w[active], pb.c[active], pb.lo[active] / scale, pb.hi[active] / scale
    x = cp.Variable(active.size, name="budget_scaled")
    left = (pb.total - float(pb.c[pb.w == 0] @ pb.lo[pb.w == 0])) / scale
    total = cp.Parameter(nonneg=True, name="total_scaled", value=left)
    loss = cp.sum(cp.multiply(w / w.max(), cp.power(x, -pb.alpha)))
    constraints = [c @ x <= total, x >= lo]
    finite = np.isfinite(hi)
    if finite.any():
        constraints.append(x[np.flatnonzero(finite)] <= hi[finite])
    problem = cp.Problem(cp.Minimize(loss), constraints)
    problem.solve(solver=cp.CLARABEL)
    if problem.status not in ("optimal", "optimal_inaccurate"):
        raise KVBudgetError(f"cvxpy: the split problem is {problem.status}")
    out = pb.lo.copy()
    out[active] = np.clip(x.value * scale, pb.lo[active], pb.hi[active])
    # the multiplier of the unscaled problem: lambda = dual * w_max * s^(-alpha-1)
    lam = float(constraints[0].dual_value) * w.max() * scale ** (-pb.alpha - 1)
    stats = {"solver": problem.solver_stats.solver_name, "solve_time_s": problem.solver_stats.solve_time,
             "iterations": problem.solver_stats.num_iters}
    return out, lam, problem.status, stats


def round_split(split: KVSplit, step: int = 1) -> np.ndarray:
    """Budgets on multiples of `step` tokens (e.g. a block size), spending at most the total: round
    down, then hand out the remaining steps one at a time to the group whose loss drops most
    (greedy is optimal for a separable convex objective on a lattice when unit costs are equal)."""
    if not (isinstance(step, (int, np.integer)) and step >= 1):
        raise KVBudgetError(f"step: {step!r} must be a whole number of at least 1")
    b = np.maximum(np.floor(split.budgets / step) * step, split.lower)
    left = split.total - float(split.unit_cost @ b)
    while True:
        fits = (split.unit_cost * step <= left + 1e-9) & (b + step <= split.upper) & (split.importance > 0)
        if not fits.any():
            return b
        gain = power_loss(split.importance, b, split.alpha) - power_loss(split.importance, b + step, split.alpha)
        i = int(np.argmax(np.where(fits, gain, -np.inf)))
        b[i] += step
        left -= split.unit_cost[i] * step
