"""Test-time compute allocation: which model, how many samples N, how long a generation and which
sparse-attention budget give the best expected accuracy for a budget in eFLOPs, seconds or dollars.

Accuracy comes from user-supplied curves (`AccuracyCurves`): per problem j, the probability p_j that
one sample is correct, for each (model, generation-length cap, sparse budget). With N samples:

    pass@N   = mean_j 1 - (1 - p_j)^N        (an oracle verifier picks a correct sample; Kinetics'
                                             "coverage"; unbiased from counts: 1 - C(n-c, N)/C(n, N),
                                             Chen et al. 2021, arXiv 2107.03374)
    majority = mean_j P[Bin(N, p_j) > N/2] + P[Bin(N, p_j) = N/2] / 2
               (binary vote: every wrong answer agrees, the pessimistic case; with scattered wrong
               answers plurality voting does at least this well)

Curves that give only the mean accuracy per length are one "problem" each: pass@N then treats every
problem as equally hard, which overstates the gain from sampling.

Cost is the Kinetics cost (`perfmodel.kinetics`) averaged over the problems (each with its prompt
length and mean generated tokens when the curves give them): eFLOPs at an intensity, or on a
`Hardware` the idealized runtime (compute / FLOP/s + memory / bytes/s: the same device for every
model, so models compare on equal hardware) and its dollar price. Cost-of-pass = expected cost of one
attempt / its success probability (Erol et al. 2025, "Cost-of-Pass", arXiv 2504.13359).

The search is exhaustive over the curve points x N options (a few thousand candidates, one
vectorized cost call per model): the accuracy of a (model, length, budget) point is only known where
the curves give it, so there is nothing to relax.
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hardware.spec import Hardware
from perfmodel import kinetics
from perfmodel.pareto import pareto_mask
from workloads.model import ModelSpec

DEMO_CURVES = Path(__file__).parent / "data" / "tts_demo_curves.csv"
UNITS = ("efflops", "seconds", "dollars")
STRATEGIES = ("pass@k", "majority")
DEFAULT_SAMPLES = (1, 2, 4, 8, 16, 32, 64)


class CurveError(ValueError):
    """Accuracy curves that are malformed or not probabilities; names the column and the row."""


class BudgetError(ValueError):
    """A budget nothing fits in, or an impossible budget value; says the cheapest option."""


# -- accuracy under N samples -------------------------------------------------------------------
def pass_at_k(p, k):
    """1 - (1 - p)^k, elementwise (p the per-sample success probability)."""
    return 1.0 - np.power(1.0 - np.asarray(p, float), np.asarray(k, float))


def pass_at_k_unbiased(n, c, k):
    """Unbiased pass@k from c correct out of n samples: 1 - C(n - c, k) / C(n, k), for k <= n
    (Chen et al. 2021), as a product to stay finite: 1 - prod_{i=n-c+1}^{n} (1 - k / i)."""
    n, c, k = (np.asarray(x, float) for x in (n, c, k))
    if np.any(k > n):
        raise CurveError(f"samples: pass@{float(np.max(k)):g} needs at least that many samples per problem, "
                         f"the curves have {float(np.min(n)):g}")
    from scipy.special import gammaln

    # C(n-c, k) / C(n, k) = (n-c)! (n-k)! / (n! (n-c-k)!), zero when n - c < k
    with np.errstate(invalid="ignore"):
        log_ratio = gammaln(n - c + 1) + gammaln(n - k + 1) - gammaln(n + 1) - gammaln(np.maximum(n - c - k, 0) + 1)
    return np.where(n - c < k, 1.0, 1.0 - np.exp(log_ratio))


def majority_at_k(p, k):
    """Binary majority vote of k samples: P[X > k/2] + P[X = k/2] / 2, X ~ Binomial(k, p).

    Summed over the pmf C(k, x) p^x (1 - p)^(k - x) in log space (xlogy keeps p = 0 and p = 1 exact;
    scipy's binom.sf overflows for subnormal p)."""
    from scipy.special import gammaln, xlog1py, xlogy

    p, k = np.broadcast_arrays(np.asarray(p, float), np.asarray(k, float))
    x = np.arange(int(np.max(k, initial=0)) + 1, dtype=float).reshape((-1,) + (1,) * p.ndim)
    valid = x <= k
    xk = np.where(valid, x, 0.0)
    log_pmf = gammaln(k + 1) - gammaln(xk + 1) - gammaln(k - xk + 1) + xlogy(xk, p) + xlog1py(k - xk, -p)
    weight = np.where(2 * x > k, 1.0, np.where(2 * x == k, 0.5, 0.0)) * valid
    return np.sum(weight * np.exp(log_pmf), axis=0)


def cost_of_pass(cost, accuracy):
    """Expected cost per correct answer: cost of one attempt / its success probability; inf when the
    attempt never succeeds (Erol et al. 2025)."""
    cost, accuracy = np.asarray(cost, float), np.asarray(accuracy, float)
    with np.errstate(divide="ignore"):
        return np.where(accuracy > 0, cost / np.maximum(accuracy, 1e-300), np.inf)


# -- the curves -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class AccuracyCurves:
    """Per-sample success rates in long form. Required columns: model, gen_len, p (or samples and
    correct: counts per problem). Optional: problem (default: one problem per row group),
    sparse_budget (0 = dense), prompt (tokens), mean_gen (mean generated tokens under the gen_len
    cap; default gen_len). `source` says where the numbers come from."""

    frame: object
    source: str = ""

    def __post_init__(self):
        object.__setattr__(self, "frame", _validated(self.frame))

    @classmethod
    def from_csv(cls, path: str | Path) -> "AccuracyCurves":
        """Read a CSV (lines starting with '#' are comments; the first comment is kept as `source`)."""
        import pandas as pd

        path = Path(path)
        if not path.exists():
            raise CurveError(f"curves: file {str(path)!r} does not exist")
        comments = [line[1:].strip() for line in path.read_text().splitlines() if line.startswith("#")]
        try:
            frame = pd.read_csv(path, comment="#")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise CurveError(f"curves {path.name}: not a readable CSV ({err})") from None
        return cls(frame, source=comments[0] if comments else str(path))

    @classmethod
    def demo(cls) -> "AccuracyCurves":
        """The shipped SYNTHETIC demo curves (see the file's header); not measurements."""
        return cls.from_csv(DEMO_CURVES)

    @property
    def models(self) -> list[str]:
        return sorted(self.frame["model"].unique())


def _validated(frame):
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        frame = pd.DataFrame(frame)
    frame = frame.copy()
    if "p" not in frame.columns and {"samples", "correct"} <= set(frame.columns):
        _require_numeric(frame, "samples", low=1)
        _require_numeric(frame, "correct", low=0)
        if (frame["correct"] > frame["samples"]).any():
            row = int(np.flatnonzero(frame["correct"] > frame["samples"])[0])
            raise CurveError(f"correct: row {row} has {frame['correct'].iloc[row]} correct of "
                             f"{frame['samples'].iloc[row]} samples")
        frame["p"] = frame["correct"] / frame["samples"]
    missing = [c for c in ("model", "gen_len", "p") if c not in frame.columns]
    if missing:
        raise CurveError(f"curves: missing column(s) {missing}; have {list(frame.columns)}")
    if len(frame) == 0:
        raise CurveError("curves: no rows")
    p = _require_numeric(frame, "p", low=0)
    if (p > 1).any():
        row = int(np.flatnonzero(p > 1)[0])
        raise CurveError(f"p: {p[row]:g} in row {row} (model {frame['model'].iloc[row]!r}) is not a "
                         f"probability; success rates must lie in [0, 1]")
    _require_numeric(frame, "gen_len", low=1)
    for col, default in (("sparse_budget", 0), ("problem", None)):
        if col not in frame.columns:
            frame[col] = default if default is not None else frame.groupby(["model", "gen_len", "sparse_budget"]).cumcount()
    _require_numeric(frame, "sparse_budget", low=0)
    for col in ("prompt", "mean_gen"):
        if col in frame.columns:
            _require_numeric(frame, col, low=0 if col == "prompt" else 1)
    if "mean_gen" in frame.columns and (frame["mean_gen"] > frame["gen_len"]).any():
        row = int(np.flatnonzero(frame["mean_gen"] > frame["gen_len"])[0])
        raise CurveError(f"mean_gen: {frame['mean_gen'].iloc[row]:g} in row {row} exceeds its gen_len cap "
                         f"{frame['gen_len'].iloc[row]:g}")
    frame["model"] = frame["model"].astype(str)
    return frame.reset_index(drop=True)


def _require_numeric(frame, col: str, low: float):
    values = frame[col].to_numpy()
    try:
        arr = values.astype(float)
    except (TypeError, ValueError):
        raise CurveError(f"{col}: column holds non-numbers (first: {values[0]!r})") from None
    bad = ~np.isfinite(arr) | (arr < low)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        what = "a probability in [0, 1]" if col == "p" else f"a finite number of at least {low:g}"
        raise CurveError(f"{col}: {float(arr[row]):g} in row {row} must be {what}")
    return arr


# -- candidates and the plan -----------------------------------------------------------------------
@dataclass(frozen=True)
class CostModel:
    """How cost is measured. unit: efflops | seconds | dollars. hardware is needed for seconds and
    dollars and sets the eFLOPs intensity (else Kinetics' 562.5). params: parameter count per model
    name (e.g. `kinetics.KINETICS_PARAMS`; default exact counts)."""

    unit: str = "efflops"
    hardware: Hardware | None = None
    prompt: int = 128
    block_size: int = 16
    params: dict = field(default_factory=dict)
    intensity: float | None = None

    def __post_init__(self):
        if self.unit not in UNITS:
            raise BudgetError(f"unit: {self.unit!r} must be one of {UNITS}")
        if self.unit != "efflops" and self.hardware is None:
            raise BudgetError(f"unit: {self.unit!r} needs a hardware spec (the device the time is measured on)")

    def efflops_intensity(self) -> float:
        if self.intensity is not None:
            return self.intensity
        return kinetics.intensity(self.hardware) if self.hardware is not None else kinetics.B200_INTENSITY


def candidates(curves: AccuracyCurves, models: dict, cost: CostModel = CostModel(), samples=DEFAULT_SAMPLES,
               strategy: str = "pass@k"):
    """Every (model, gen_len, sparse_budget, N) the curves allow, with expected accuracy and costs.

    models: name -> ModelSpec for every model in the curves. Columns: model, gen_len, sparse_budget,
    samples, accuracy, efflops, idealized_runtime_s and dollars (with hardware), cost (in cost.unit),
    cost_of_pass (cost.unit per correct answer)."""
    import pandas as pd

    if strategy not in STRATEGIES:
        raise BudgetError(f"strategy: {strategy!r} must be one of {STRATEGIES}")
    n = np.asarray(samples, float)
    if n.ndim != 1 or n.size == 0 or np.any(~np.isfinite(n)) or np.any(n < 1) or np.any(n != np.round(n)):
        raise BudgetError(f"samples: {list(np.atleast_1d(samples))!r} must be whole numbers of at least 1")
    missing = sorted(set(curves.models) - set(models))
    if missing:
        raise CurveError(f"model: no model spec for {missing}")
    parts = [_model_candidates(curves.frame[curves.frame["model"] == name], models[name], cost, n, strategy)
             for name in curves.models]
    return pd.concat(parts, ignore_index=True)


def _model_candidates(rows, spec: ModelSpec, cost: CostModel, n, strategy: str):
    import pandas as pd

    prompt = rows["prompt"].to_numpy(float) if "prompt" in rows else np.full(len(rows), float(cost.prompt))
    gen = rows["mean_gen"].to_numpy(float) if "mean_gen" in rows else rows["gen_len"].to_numpy(float)
    cap = rows["gen_len"].to_numpy(float)
    kinetics.check_context(spec, prompt, cap)
    # the cost integrals are continuous; mean lengths need not be whole tokens
    gen, prompt = np.maximum(np.round(gen), 1.0), np.round(prompt)
    c = kinetics.kinetics_cost(spec, prompt[:, None], gen[:, None], n[None, :], params=cost.params.get(spec.name),
                               sparse_budget=rows["sparse_budget"].to_numpy(float)[:, None],
                               block_size=cost.block_size)
    p = rows["p"].to_numpy(float)[:, None]
    acc = pass_at_k(p, n[None, :]) if strategy == "pass@k" else majority_at_k(p, n[None, :])
    table = {"accuracy": acc, "efflops": c.efflops(cost.efflops_intensity())}
    if cost.hardware is not None:
        table["idealized_runtime_s"] = c.device_seconds(cost.hardware)
        table["dollars"] = c.dollars(cost.hardware)
        table["memory_bytes"] = _serving_bytes(spec, prompt[:, None], cap[:, None], n[None, :])
        table["fits"] = table["memory_bytes"] <= cost.hardware.hbm_capacity_bytes
    keys = rows[["gen_len", "sparse_budget"]].reset_index(drop=True)
    frames = []
    for i, ni in enumerate(n):
        f = keys.copy()
        f["samples"] = int(ni)
        for col, values in table.items():
            f[col] = values[:, i]
        frames.append(f)
    long = pd.concat(frames, ignore_index=True)
    out = long.groupby(["gen_len", "sparse_budget", "samples"], as_index=False).mean()
    out.insert(0, "model", spec.name)
    out["cost"] = out[{"efflops": "efflops", "seconds": "idealized_runtime_s", "dollars": "dollars"}[cost.unit]]
    out["cost_of_pass"] = cost_of_pass(out["cost"], out["accuracy"])
    return out


def _serving_bytes(spec: ModelSpec, prompt, cap, n):
    """Device memory of one request's N samples at once: 16-bit weights plus the KV cache of the
    prompt (shared) and every sample's generation cap (perfmodel.memory, one source)."""
    from perfmodel import memory
    from perfmodel.ops import Precision

    p = Precision(16, 16, 16)
    return memory.weight_bytes(spec, p) + memory.kv_cache_bytes(spec, p, memory.kv_tokens(1, prompt, cap, n))


def pareto_frontier(frame, cost_col: str = "cost", acc_col: str = "accuracy"):
    """Rows not dominated by a cheaper-or-equal, at-least-as-accurate row (`perfmodel.pareto`, the one
    front), sorted by cost; of rows tied in both cost and accuracy the first is kept."""
    ordered = frame.sort_values([cost_col, acc_col], ascending=[True, False], kind="stable")
    front = ordered[pareto_mask(ordered[[cost_col, acc_col]].to_numpy(float), ["min", "max"])]
    return front.drop_duplicates([cost_col, acc_col]).reset_index(drop=True)


@dataclass(frozen=True)
class TTSPlan:
    """The best configuration within the budget, every candidate and the cost-accuracy frontier."""

    best: dict
    budget: float
    unit: str
    strategy: str
    table: object = field(repr=False)
    frontier: object = field(repr=False)
    source: str = ""

    def to_frame(self):
        return self.table

    def plot(self, path: str | Path | None = None, ax=None):
        """Accuracy against cost per model, the frontier and the budget (matplotlib figure)."""
        return plot_frontier(self, path, ax)


def plan_tts(curves: AccuracyCurves, budget: float, models: dict, cost: CostModel = CostModel(),
             samples=DEFAULT_SAMPLES, strategy: str = "pass@k") -> TTSPlan:
    """Maximise expected accuracy subject to cost <= budget (in cost.unit), per request."""
    if not (isinstance(budget, (int, float, np.floating)) and math.isfinite(budget) and budget > 0):
        raise BudgetError(f"budget: {budget!r} must be a finite number above zero")
    table = candidates(curves, models, cost, samples, strategy)
    fits = table["fits"].to_numpy(bool) if "fits" in table else np.ones(len(table), bool)
    if not fits.any():
        small = table.loc[table["memory_bytes"].idxmin()]
        raise BudgetError(f"memory: no candidate's weights and KV cache of all samples fit {cost.hardware.name}'s "
                          f"{cost.hardware.hbm_capacity_bytes / 1e9:.1f} GB; the smallest ({small.model}, N "
                          f"{small.samples:g}, gen_len {small.gen_len:g}) needs {small.memory_bytes / 1e9:.1f} GB")
    table = table[fits].reset_index(drop=True)
    within = table[table["cost"] <= budget]
    if within.empty:
        cheapest = table.loc[table["cost"].idxmin()]
        raise BudgetError(f"budget: {_fmt(budget, cost.unit)} is below the cheapest option "
                          f"({cheapest.model}, gen_len {cheapest.gen_len:g}, N {cheapest.samples:g}, sparse "
                          f"{cheapest.sparse_budget:g}: {_fmt(cheapest.cost, cost.unit)})")
    best = within.sort_values(["accuracy", "cost"], ascending=[False, True]).iloc[0]
    return TTSPlan(best=best.to_dict(), budget=float(budget), unit=cost.unit, strategy=strategy, table=table,
                   frontier=pareto_frontier(table), source=curves.source)


def _fmt(value: float, unit: str) -> str:
    return {"efflops": f"{value:.4g} eFLOPs", "seconds": f"{value:.4g} s", "dollars": f"${value:.4g}"}[unit]


def plot_frontier(plan: TTSPlan, path=None, ax=None):
    """Scatter of every candidate (colour = model), the Pareto frontier, the budget and the choice."""
    import matplotlib

    if ax is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = ax.figure if ax is not None else plt.figure(figsize=(7, 4.5))
    ax = ax if ax is not None else fig.add_subplot()
    for name, group in plan.table.groupby("model"):
        ax.scatter(group["cost"], group["accuracy"], s=8, alpha=0.5, label=name)
    ax.step(plan.frontier["cost"], plan.frontier["accuracy"], "k-", where="post", lw=1.2, label="Pareto frontier")
    ax.axvline(plan.budget, color="grey", ls="--", lw=1, label="budget")
    ax.scatter([plan.best["cost"]], [plan.best["accuracy"]], marker="*", s=180, color="red", zorder=5,
               label=f"choice: {plan.best['model']} N={int(plan.best['samples'])} L={int(plan.best['gen_len'])}")
    ax.set_xscale("log")
    ax.set_xlabel({"efflops": "eFLOPs per request", "seconds": "idealized runtime per request (s)",
                   "dollars": "USD per request"}[plan.unit])
    ax.set_ylabel(f"expected accuracy ({plan.strategy})")
    note = textwrap.fill(plan.source, 90) if plan.source else ""
    ax.set_title("Test-time scaling: accuracy vs cost" + (f"\n{note}" if note else ""), fontsize=8)
    ax.legend(fontsize=7, loc="best")
    ax.grid(True, which="both", alpha=0.3)
    if path is not None:
        from hardware import inputs

        fig.tight_layout()
        try:
            inputs.save_figure(fig, path, "plot", dpi=120)
        except inputs.InputError as err:
            raise BudgetError(str(err)) from None
    return fig


def load_models(names, catalog_loader=None) -> dict:
    """Model specs for the curve's model names from the workloads catalog (or an HF config path)."""
    import workloads

    load = catalog_loader or workloads.load
    return {name: load(name) for name in names}
