"""The token-to-expert routing a benchmark's MoE rows ran, as the load on the one device it timed.

NVIDIA's aiconfigurator collectors time one MoE layer on one GPU standing for rank 0 of an
expert-parallel group: the layer holds num_experts / moe_ep experts (each matrix split over
moe_tp), every token is routed over all experts, and the rank computes the token-expert pairs that
land on its own experts. The router logits are synthetic, one of two workloads (aiconfigurator
collector/helper.py, read 2026-12-05):

- "balanced" (`balanced_logits`): token t picks experts (t + j s) mod E for j < k, s = ceil(E / k);
  with fewer tokens than s, expert floor(t s / T) + j s instead (the tokens spread over the stride);
- "power_law_<alpha>" (`_generate_power_law_distribution`): per-expert counts drawn from a power law
  of exponent alpha (inverse-CDF samples between 1 and 0.8 T where T k > E, else between 0.01 and
  2), scaled to T k pairs and rounded, capped at T (a token picks an expert once) with the excess
  and the rounding's shortfall handed out one pair at a time, rank by rank in turn, each to the
  rank's least-loaded expert below the cap (a surplus taken from the most loaded); the expert group
  with the most pairs is then swapped to rank 0, so the timed rank is the busiest. The collector
  averages five such draws.

`rank0_load` gives the (pairs, distinct experts) of rank 0 for perfmodel.ops.moe_ops' `routed`:
exact for "balanced", the mean of seeded draws of the same algorithm (our own implementation) for
a power law. Without a named workload routing is uniform and independent (moe_ops' expectation).
"""
from __future__ import annotations

import functools
import math

import numpy as np

#: Draws of a power-law workload averaged per row (the collector times five).
POWER_LAW_DRAWS = 5


def rank0_load(tokens: int, experts: int, top_k: int, ep: int, distribution: str | None) -> tuple | None:
    """(token-expert pairs, distinct experts with a pair) on rank 0 of `ep` under the named
    workload, or None where the workload is not one of the collector's (uniform routing)."""
    if not distribution:
        return None
    tokens, experts, top_k, ep = int(tokens), int(experts), int(top_k), max(int(ep), 1)
    if experts % ep:
        raise ValueError(f"moe_ep: {ep} does not divide experts = {experts}")
    if distribution == "balanced":
        counts = _balanced_counts(tokens, experts, top_k)
        return _local(counts, experts // ep)
    if distribution.startswith("power_law_"):
        try:
            alpha = float(distribution[len("power_law_"):])
        except ValueError:
            raise ValueError(f"distribution: {distribution!r} names no power-law exponent") from None
        return _power_law_load(tokens, experts, top_k, ep, alpha)
    raise ValueError(f"distribution: {distribution!r} is not 'balanced' or 'power_law_<alpha>'")


def _local(counts: np.ndarray, per_rank: int) -> tuple:
    mine = counts[:per_rank]
    return float(mine.sum()), float(np.count_nonzero(mine))


def _balanced_counts(tokens: int, experts: int, top_k: int) -> np.ndarray:
    """Pairs per expert of the collector's balanced workload."""
    stride = math.ceil(experts / top_k)
    t = np.arange(tokens, dtype=np.int64)[:, None]
    j = np.arange(top_k, dtype=np.int64)[None, :]
    if tokens >= stride:
        picked = (t + j * stride) % experts
    else:  # float positions truncated to whole experts (the collector's .long())
        picked = np.floor((t * stride / tokens + j * stride) % experts).astype(np.int64)
    # a token's picks are distinct experts where k s >= E; a repeat counts once (one-hot sum)
    hits = np.zeros((tokens, experts), dtype=bool)
    np.put_along_axis(hits, picked, True, axis=1)
    return hits.sum(axis=0)


@functools.lru_cache(maxsize=4096)
def _power_law_load(tokens: int, experts: int, top_k: int, ep: int, alpha: float) -> tuple:
    """Mean rank-0 load over POWER_LAW_DRAWS seeded draws (the same seeds for every row)."""
    loads = [_local(_power_law_counts(tokens, experts, top_k, ep, alpha, np.random.default_rng(seed)),
                    experts // ep) for seed in range(POWER_LAW_DRAWS)]
    return tuple(float(np.mean(v)) for v in zip(*loads))


def _power_law_counts(tokens: int, experts: int, top_k: int, ep: int, alpha: float, rng) -> np.ndarray:
    """Pairs per expert of one power-law draw, the busiest rank's experts first."""
    low, high = (1.0, tokens * 0.8) if tokens * top_k > experts else (0.01, 2.0)
    u = rng.random(experts)
    e = 1.0 - alpha
    samples = ((high ** e - low ** e) * u + low ** e) ** (1.0 / e)
    target = tokens * top_k
    counts = np.round(samples / samples.sum() * target).astype(np.int64)
    overflow = int(np.clip(counts - tokens, 0, None).sum())
    counts = np.minimum(counts, tokens).reshape(ep, experts // ep)
    if overflow:
        _hand_out(counts, overflow, tokens, +1)
    delta = target - int(counts.sum())
    if delta:
        _hand_out(counts, abs(delta), tokens, 1 if delta > 0 else -1)
    busiest = int(np.argmax(counts.sum(axis=1)))
    counts[[0, busiest]] = counts[[busiest, 0]]
    return counts.reshape(-1)


def _hand_out(counts: np.ndarray, units: int, cap: int, step: int) -> None:
    """Add (step +1) or take (-1) `units` pairs one at a time, rank by rank in turn, each to the
    rank's least-loaded expert below `cap` (or from its most-loaded above 0), in place. A rank
    gets units // ranks, the first units % ranks one more (every rank has room in the
    collector's cases: T k <= E T); within a rank, one at a time to the least loaded is filling
    its lowest counts level by level (`_level`)."""
    ranks = counts.shape[0]
    for r in range(ranks):
        share = units // ranks + (1 if r < units % ranks else 0)
        if share:
            counts[r] = _level(counts[r], share, cap) if step > 0 else -_level(-counts[r], share, 0)


def _level(row: np.ndarray, units: int, cap: int) -> np.ndarray:
    """`units` single increments, each to the smallest entry below `cap`: the smallest entries
    raised to a common level (ties broken towards the first, as argmin does)."""
    order = np.argsort(row, kind="stable")
    values = row[order].astype(np.int64)
    room = int(np.clip(cap - values, 0, None).sum())
    units = min(units, room)
    lo, hi = int(values[0]), cap
    while lo < hi:  # the highest level whose fill takes at most `units`
        mid = (lo + hi + 1) // 2
        if int(np.clip(np.minimum(mid, cap) - values, 0, None).sum()) <= units:
            lo = mid
        else:
            hi = mid - 1
    out = np.empty_like(values)
    out[order] = np.maximum(values, lo)
    left = units - int((out[order] - values).sum())
    # the rest one each to the entries at the level, in the row's own order (argmin's first)
    out[np.flatnonzero((out == lo) & (out < cap))[:left]] += 1
    return out
