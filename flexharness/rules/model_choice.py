"""How well a pre-screen chooses among candidate models: rank agreement within each task, then over tasks.

A transferability score is judged the way the literature judges it (LogME, You et al. 2021): by how it
ranks *the candidate models of one task* against their fine-tuned scores, because a pre-screen's values
(a log evidence per example) do not compare across tasks. Per task: Kendall τ-b with scipy's p-value,
weighted τ (hyperbolic weights, so the top of the ranking counts most; scipy gives no p-value, so it is a
permutation test here), whether the pre-screen's first choice was the fine-tuned best, and the regret of
keeping only its top K (the best fine-tuned score minus the best among those kept). Scores must be
oriented so that higher is better on both sides.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

MIN_MODELS = 3           # a rank correlation over fewer models says nothing
EXACT_PERMUTATIONS = 7   # up to this many models the permutation test enumerates every ordering
RANDOM_PERMUTATIONS = 5000
PERMUTATION_SEED = 0


@dataclass(frozen=True)
class TaskChoice:
    """One task's verdict on the pre-screen: agreement over its candidate models and the cost of trusting it."""

    n_models: int
    tau: float | None
    p_value: float | None
    weighted_tau: float | None
    weighted_p_value: float | None
    top1_hit: bool
    regret: dict[int, float]      # K -> best fine-tuned score minus the best among the pre-screen's top K


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _weighted(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import weightedtau

    return float(weightedtau(x, y).statistic)


def weighted_tau_test(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """(weighted τ, two-sided permutation p-value): the share of orderings of ``y`` whose |τ_w| is at least the
    observed one; every ordering up to ``EXACT_PERMUTATIONS`` values, else a fixed-seed random sample."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    observed = _weighted(xs, ys)
    if len(ys) <= EXACT_PERMUTATIONS:
        orders = (np.array(p) for p in itertools.permutations(range(len(ys))))
        values = [_weighted(xs, ys[order]) for order in orders]
    else:
        rng = np.random.default_rng(PERMUTATION_SEED)
        values = [_weighted(xs, rng.permutation(ys)) for _ in range(RANDOM_PERMUTATIONS)] + [observed]
    extreme = sum(1 for v in values if abs(v) >= abs(observed) - 1e-12)
    return observed, extreme / len(values)


def task_choice(prescreen: Mapping[str, float | None], finetuned: Mapping[str, float | None],
                ks: Sequence[int] = (1,)) -> TaskChoice | None:
    """The pre-screen's record on one task over the models scored on both sides; None below ``MIN_MODELS``.

    τ and weighted τ are None when either side is all ties. The first choice is the pre-screen's best (ties by
    model name, as ``prescreen.top_k`` keeps them); it is a hit when its fine-tuned score is the best one.
    """
    from scipy.stats import kendalltau

    from flexharness.rules.prescreen import top_k

    models = sorted(m for m in prescreen if m in finetuned and _finite(prescreen[m]) and _finite(finetuned[m]))
    if len(models) < MIN_MODELS:
        return None
    x = [float(prescreen[m]) for m in models]
    y = [float(finetuned[m]) for m in models]
    tau = p_value = weighted = weighted_p = None
    if len(set(x)) > 1 and len(set(y)) > 1:
        found = kendalltau(x, y, variant="b")
        tau, p_value = float(found.statistic), float(found.pvalue)
        weighted, weighted_p = weighted_tau_test(x, y)
    ranked = top_k({m: prescreen[m] for m in models}, len(models))
    best = max(y)
    tuned = dict(zip(models, y))
    regret = {k: best - max(tuned[m] for m in ranked[:k]) for k in ks if k >= 1}
    return TaskChoice(len(models), tau, p_value, weighted, weighted_p, tuned[ranked[0]] == best, regret)


def mean_or_none(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None
