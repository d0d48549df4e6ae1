"""Choosing a compression: the Pareto frontier of score against cost, and the cheapest method that keeps enough.

A method is on the frontier when no other point (the dense model included) scores at least as well at no
more cost, and strictly better on one of the two. Retention (compressed / dense score) is tested one-sided
with a paired bootstrap: the dense and the compressed model are scored on the same resampled examples, so
the example draw cancels out of the ratio, and a method *keeps* a target when the ``confidence`` lower
bound of its retention is at least the target (equivalently, the bootstrap p-value of "retention < target"
is at most 1 − confidence).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from flexharness.rules import stats

QUANTILES = np.linspace(0.0, 1.0, 101)   # the retention distribution a record keeps: every percentile


@dataclass(frozen=True)
class Point:
    name: str
    score: float
    cost: float


def pareto(points: Sequence[Point]) -> list[str]:
    """Names of the points no other point dominates (higher score is better, lower cost is better), by cost."""
    def dominated(p: Point) -> bool:
        return any(q.score >= p.score and q.cost <= p.cost and (q.score > p.score or q.cost < p.cost)
                   for q in points)

    return [p.name for p in sorted(points, key=lambda p: (p.cost, -p.score, p.name)) if not dominated(p)]


def retention_quantiles(metrics: Sequence[str], labels: np.ndarray, dense: np.ndarray, compressed: np.ndarray,
                        *, key: str = "", n_resamples: int = 1000) -> list[float]:
    """Percentiles 0..100 of the paired-bootstrap retention (compressed / dense score, metrics averaged) on one
    evaluation split; ``dense`` and ``compressed`` are predicted class ids (or values) per example."""
    idx = stats.resample_indices(len(labels), n_resamples, key=key)

    def replicates(predictions: np.ndarray) -> np.ndarray:
        return np.mean([stats.metric_replicates(m, labels, predictions, idx)[:, 0] for m in metrics], axis=0)

    base = replicates(dense)
    ratio = np.divide(replicates(compressed), base, out=np.full(len(base), np.nan), where=base > 0)
    ratio = ratio[np.isfinite(ratio)]
    return [round(float(v), 6) for v in np.quantile(ratio, QUANTILES)] if len(ratio) else []


def lower_bound(quantiles: Sequence[float], confidence: float) -> float:
    """The one-sided ``confidence`` lower bound of retention from its percentiles (linear between them)."""
    return float(np.interp(1.0 - confidence, QUANTILES, np.asarray(quantiles, dtype=float)))


def p_below(quantiles: Sequence[float], target: float) -> float:
    """Bootstrap p-value of "retention < target": the share of replicates below it (to the percentile grid)."""
    values = np.asarray(quantiles, dtype=float)
    return float(np.interp(target, values, QUANTILES, left=0.0, right=1.0)) if len(values) else 1.0


def mean_quantiles(per_seed: Sequence[Sequence[float]]) -> list[float]:
    """Over seeds: the mean of the seeds' percentiles (the comonotone combination, never narrower than the
    distribution of the mean over seeds)."""
    kept = [q for q in per_seed if len(q) == len(QUANTILES)]
    return [round(float(v), 6) for v in np.mean(kept, axis=0)] if kept else []


def cheapest_keeping(candidates: Mapping[str, tuple[float, float]], target: float) -> str | None:
    """The cheapest name whose lower bound keeps ``target``; ``candidates`` maps name -> (cost, lower bound).
    Ties in cost by name; None when none keeps it."""
    keeping = [(cost, name) for name, (cost, low) in candidates.items() if low >= target]
    return min(keeping)[1] if keeping else None
