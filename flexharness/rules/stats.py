"""Uncertainty of case scores and of model comparisons, from per-example predictions.

A score from one evaluation split is a sample: these rules say how far it could
move (percentile bootstrap over examples and seeds), whether two models really
differ on the same examples (paired bootstrap, McNemar), how to correct for many
comparisons (Holm, Benjamini-Hochberg), and how to summarise many models (HELM
win rates, rank ranges). Plain numpy in and out; docs/statistics.md has the
definitions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from flexharness.rules import squad, tagging

#: The level and power at which the minimum detectable effect is reported.
ALPHA, POWER = 0.05, 0.8


@dataclass(frozen=True, eq=False)  # holds an array: compare fields, not objects
class Interval:
    """A point estimate, its percentile-bootstrap interval and the replicates behind it."""

    estimate: float
    low: float
    high: float
    replicates: np.ndarray

    def as_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


@dataclass(frozen=True, eq=False)  # holds an array: compare fields, not objects
class Comparison:
    """Model B minus model A on the same examples: difference, interval, p-value, power."""

    difference: float
    low: float
    high: float
    p_value: float
    se: float
    mde: float
    replicates: np.ndarray


@dataclass(frozen=True)
class McNemar:
    """Discordant pairs (examples only A gets right, only B gets right) and the exact p-value."""

    only_a: int
    only_b: int
    p_value: float


@dataclass(frozen=True)
class RankRange:
    """The ranks a model may hold given which differences are significant; ``label`` is "1" or "1–3"."""

    low: int
    high: int

    @property
    def label(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}\u2013{self.high}"


# --- resampling plans ------------------------------------------------------------------------


def _rng(seed: int, key: str, stream: int) -> np.random.Generator:
    """A generator fixed by (seed, key, stream), stable across processes and platforms."""
    words = np.frombuffer(hashlib.sha256(key.encode()).digest()[:16], dtype=np.uint32)
    return np.random.default_rng([seed, stream, *words.tolist()])


def resample_indices(n_examples: int, n_resamples: int = 1000, *, key: str = "", seed: int = 0) -> np.ndarray:
    """Example positions (n_resamples × n_examples) drawn with replacement.

    The same (n_examples, key, seed) gives the same matrix, so two models scored
    on one case get paired replicates without passing indices around.
    """
    if n_examples < 1:
        raise ValueError("cannot resample an empty evaluation split")
    return _rng(seed, key, 0).integers(0, n_examples, size=(n_resamples, n_examples))


def resample_seeds(n_seeds: int, n_resamples: int = 1000, *, key: str = "", seed: int = 0) -> np.ndarray:
    """Seed positions (n_resamples × n_seeds) drawn with replacement, independent of the example draw."""
    return _rng(seed, key, 1).integers(0, n_seeds, size=(n_resamples, n_seeds))


# --- vectorised metrics ----------------------------------------------------------------------


def _class_ids(values: np.ndarray) -> np.ndarray:
    """Class ids as int64; float arrays are accepted only when they hold whole non-negative numbers."""
    ids = np.asarray(values)
    if not np.issubdtype(ids.dtype, np.integer) and not np.all(ids == np.round(ids)):
        raise ValueError("classification metrics need integer class ids")
    ids = ids.astype(np.int64)
    if ids.size and ids.min() < 0:
        raise ValueError("class ids must be non-negative")
    return ids


def _confusion(labels: np.ndarray, predictions: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Confusion counts (B × S × k × k, true × predicted) of every resample and seed, in one bincount."""
    y, p = _class_ids(labels), _class_ids(predictions)
    k = int(max(y.max(), p.max())) + 1
    codes = y[indices][None] * k + p[:, indices]
    offsets = np.arange(codes.shape[0] * codes.shape[1]).reshape(codes.shape[:2] + (1,)) * (k * k)
    counts = np.bincount((codes + offsets).ravel(), minlength=offsets.size * k * k)
    return counts.reshape(codes.shape[:2] + (k, k)).transpose(1, 0, 2, 3).astype(np.float64)


def _f1_per_class(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class F1 (0 where a class is neither true nor predicted, as zero_division=0) and presence."""
    tp = np.diagonal(c, axis1=-2, axis2=-1)
    support = c.sum(-1) + c.sum(-2)
    return np.divide(2 * tp, support, out=np.zeros_like(tp), where=support > 0), support > 0


def _accuracy(c: np.ndarray) -> np.ndarray:
    return np.trace(c, axis1=-2, axis2=-1) / c.sum((-2, -1))


def _binary_f1(c: np.ndarray) -> np.ndarray:
    if c.shape[-1] > 2:
        raise ValueError("metric 'f1' is binary (label id 1 is positive); use 'macro_f1' for more than two labels")
    if c.shape[-1] < 2:
        return np.zeros(c.shape[:2])
    return _f1_per_class(c)[0][..., 1]


def _macro_f1(c: np.ndarray) -> np.ndarray:
    """Mean F1 over the classes present in the resample's labels or predictions (sklearn's label set)."""
    f1, present = _f1_per_class(c)
    return f1.sum(-1) / present.sum(-1)


def _mcc(c: np.ndarray) -> np.ndarray:
    """Multiclass Matthews correlation (Gorodkin's R_K), 0 where it is undefined, as sklearn does."""
    t, p = c.sum(-1), c.sum(-2)
    n, correct = t.sum(-1), np.trace(c, axis1=-2, axis2=-1)
    cov_tp = correct * n - (t * p).sum(-1)
    cov_pp, cov_tt = n**2 - (p * p).sum(-1), n**2 - (t * t).sum(-1)
    denom = cov_pp * cov_tt
    safe = np.sqrt(np.where(denom > 0, denom, 1.0))
    return np.where(denom > 0, cov_tp / safe, 0.0)


def _gather(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Resampled values (rows × B × n) as floats."""
    return np.asarray(values, dtype=np.float64)[:, indices]


def _ranks(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank) within every resample, without sorting B times.

    A resample keeps the order of the distinct values, so a value's rank is the
    count of drawn elements below it plus half its own draws.
    """
    rows = []
    for row in np.asarray(values, dtype=np.float64):
        uniq, inverse = np.unique(row, return_inverse=True)
        drawn = inverse[indices]
        offsets = np.arange(indices.shape[0])[:, None] * uniq.size
        counts = np.bincount((drawn + offsets).ravel(), minlength=offsets.size * uniq.size).reshape(-1, uniq.size)
        rank_of_value = np.cumsum(counts, axis=1) - (counts - 1) / 2
        rows.append(np.take_along_axis(rank_of_value, drawn, axis=1))
    return np.stack(rows)


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r along the last axis; 0 where either side is constant (no correlation to speak of)."""
    xc, yc = x - x.mean(-1, keepdims=True), y - y.mean(-1, keepdims=True)
    denom = np.sqrt((xc * xc).sum(-1) * (yc * yc).sum(-1))
    constant = (np.ptp(x, axis=-1) == 0) | (np.ptp(y, axis=-1) == 0)
    r = (xc * yc).sum(-1) / np.where(constant, 1.0, denom)
    return np.where(constant, 0.0, np.clip(r, -1.0, 1.0))


def _question_scores(column: str, labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """SQuAD exact match or F1 of every question (seeds × questions) from stored labels and answers."""
    return np.stack([getattr(squad.scored_labels(labels, row), column) for row in predictions])


def _squad_metric(column: str) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """Extractive QA: each question scored once per seed, then the mean over each resample's questions."""
    return lambda y, p, idx: _gather(_question_scores(column, y[0], p), idx).mean(-1)


_FROM_CONFUSION: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "accuracy": _accuracy, "f1": _binary_f1, "macro_f1": _macro_f1, "mcc": _mcc,
}
_FROM_VALUES: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "pearson": lambda y, p, idx: _pearson(_gather(y, idx), _gather(p, idx)),
    "spearman": lambda y, p, idx: _pearson(_ranks(y, idx), _ranks(p, idx)),  # constant values, constant ranks
    "mse": lambda y, p, idx: ((_gather(y, idx) - _gather(p, idx)) ** 2).mean(-1),
    "exact_match": _squad_metric("exact"), "squad_f1": _squad_metric("f1"),
}
METRIC_NAMES = tuple(_FROM_CONFUSION) + tuple(_FROM_VALUES)


def _per_seed(predictions: np.ndarray) -> np.ndarray:
    """Predictions as seeds × examples; a single run may be passed as a flat array."""
    p = np.asarray(predictions)
    return p[None] if p.ndim == 1 else p


def metric_replicates(metric: str, labels: np.ndarray, predictions: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The metric on every resample and seed (B × S); ``indices`` are example positions (B × n).

    On ``indices = arange(n)[None]`` this equals the metric registry's value on the full split.
    """
    preds, idx = _per_seed(predictions), np.asarray(indices)
    if metric in tagging.METRIC_NAMES:   # seeds × sentences × words: counts per sentence, summed per resample
        return tagging.replicates(metric, labels, preds, idx)
    if preds.shape[-1] != len(labels):
        raise ValueError(f"{preds.shape[-1]} predictions per seed for {len(labels)} labels")
    if metric in _FROM_CONFUSION:
        return _FROM_CONFUSION[metric](_confusion(np.asarray(labels), preds, idx))
    if metric in _FROM_VALUES:
        return _FROM_VALUES[metric](np.asarray(labels)[None], preds, idx).T
    raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRIC_NAMES)}")


# --- intervals -------------------------------------------------------------------------------


def _percentiles(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    if not 0 < confidence < 1:
        raise ValueError("confidence must lie strictly between 0 and 1")
    low, high = np.quantile(replicates, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def case_interval(metrics: str | Sequence[str], labels: np.ndarray, predictions: np.ndarray, *, key: str = "",
                  seed: int = 0, n_resamples: int = 1000, confidence: float = 0.95) -> Interval:
    """Percentile-bootstrap interval of one case score (mean over metrics, then over seeds).

    Every replicate resamples the examples (the same positions for every seed)
    and, with several seeds, the seeds too. ``key`` names the evaluation split:
    the same key, seed and size give the same draws, which pairs models.
    """
    names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    preds = _per_seed(predictions)
    n_seeds, n = preds.shape[:2]
    full = np.mean([metric_replicates(m, labels, preds, np.arange(n)[None]) for m in names], axis=0)
    idx = resample_indices(n, n_resamples, key=key, seed=seed)
    per_seed = np.mean([metric_replicates(m, labels, preds, idx) for m in names], axis=0)
    if n_seeds > 1:
        per_seed = np.take_along_axis(per_seed, resample_seeds(n_seeds, n_resamples, key=key, seed=seed), axis=1)
    replicates = per_seed.mean(axis=1)
    return Interval(float(full.mean()), *_percentiles(replicates, confidence), replicates)


def _stack(intervals: Sequence[Interval]) -> np.ndarray:
    if not intervals:
        raise ValueError("no cases to aggregate")
    sizes = {iv.replicates.shape for iv in intervals}
    if len(sizes) != 1:
        raise ValueError(f"cases have different numbers of replicates: {sorted(sizes)}")
    return np.stack([iv.replicates for iv in intervals])


def aggregate_interval(cases: Iterable[Interval], *, confidence: float = 0.95) -> tuple[Interval, Interval]:
    """Intervals of P_avg and σ_P (population std) of an axis from its cases' replicates.

    Replicate b of P_avg is the mean over cases of their replicate b; each case
    was resampled on its own, the set of cases is fixed.
    """
    cases = list(cases)
    reps, scores = _stack(cases), np.array([iv.estimate for iv in cases])
    p_reps, s_reps = reps.mean(axis=0), reps.std(axis=0)
    return (Interval(float(scores.mean()), *_percentiles(p_reps, confidence), p_reps),
            Interval(float(scores.std()), *_percentiles(s_reps, confidence), s_reps))


# --- comparisons -----------------------------------------------------------------------------


def minimum_detectable_effect(se: float, *, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true difference a two-sided test at ``alpha`` finds with ``power`` (normal approximation)."""
    from scipy.stats import norm

    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * se)


def bootstrap_p_value(differences: np.ndarray) -> float:
    """Two-sided p-value: twice the smaller share of replicates on either side of 0, (1 + count)/(B + 1).

    It is (up to 1/B) the smallest level at which the percentile interval
    excludes 0, so the p-value and the interval tell the same story; it is never 0.
    """
    d = np.asarray(differences)
    tail = min(int((d <= 0).sum()), int((d >= 0).sum()))
    return min(1.0, 2 * (1 + tail) / (d.size + 1))


def paired_difference(a: Interval, b: Interval, *, confidence: float = 0.95, alpha: float = ALPHA,
                      power: float = POWER) -> Comparison:
    """B − A from replicates drawn with the same indices (same key, seed and size) for both."""
    if a.replicates.shape != b.replicates.shape:
        raise ValueError("paired replicates must come from the same resamples")
    d = b.replicates - a.replicates
    se = float(d.std(ddof=1)) if d.size > 1 else 0.0
    return Comparison(b.estimate - a.estimate, *_percentiles(d, confidence), bootstrap_p_value(d), se,
                      minimum_detectable_effect(se, alpha=alpha, power=power), d)


def axis_difference(a: Mapping[str, Interval], b: Mapping[str, Interval], *, confidence: float = 0.95,
                    alpha: float = ALPHA, power: float = POWER) -> Comparison:
    """P_avg(B) − P_avg(A) over the same cases, pairing replicates case by case."""
    if set(a) != set(b):
        raise ValueError(f"the models have different cases: {sorted(set(a) ^ set(b))}")
    names = sorted(a)
    p_a, _ = aggregate_interval([a[n] for n in names])
    p_b, _ = aggregate_interval([b[n] for n in names])
    return paired_difference(p_a, p_b, confidence=confidence, alpha=alpha, power=power)


def majority_vote(predictions: np.ndarray) -> np.ndarray:
    """Per example, the class most seeds predict (ties go to the smaller class id)."""
    preds = _class_ids(_per_seed(predictions))
    n = preds.shape[1]
    k = int(preds.max()) + 1
    counts = np.bincount((np.arange(n) * k + preds).ravel(), minlength=n * k).reshape(n, k)
    return counts.argmax(axis=1)


def mcnemar(labels: np.ndarray, predictions_a: np.ndarray, predictions_b: np.ndarray) -> McNemar:
    """McNemar's exact test of accuracy on the same examples, one run per side."""
    from scipy.stats import binomtest

    pa, pb = _per_seed(predictions_a), _per_seed(predictions_b)
    if pa.shape[0] != 1 or pb.shape[0] != 1:
        raise ValueError("McNemar's test compares one run per side: pass majority_vote(predictions), "
                         "or use paired_difference for the mean over seeds")
    y = np.asarray(labels)
    right_a, right_b = pa[0] == y, pb[0] == y
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    p = 1.0 if only_a + only_b == 0 else float(binomtest(only_b, only_a + only_b, 0.5).pvalue)
    return McNemar(only_a, only_b, p)


# --- many comparisons ------------------------------------------------------------------------


def _p_array(p_values: Sequence[float]) -> np.ndarray:
    p = np.asarray(p_values, dtype=np.float64).ravel()
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    return p


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error rate), in the input order."""
    p = _p_array(p_values)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((p.size - np.arange(p.size)) * p[order]))
    out = np.empty_like(p)
    out[order] = adjusted
    return out


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (false discovery rate), in the input order."""
    p = _p_array(p_values)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * p.size / np.arange(1, p.size + 1)
    adjusted = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    out = np.empty_like(p)
    out[order] = adjusted
    return out


CORRECTIONS: dict[str, Callable[[Sequence[float]], np.ndarray]] = {"holm": holm, "bh": benjamini_hochberg}


def pairwise_p_values(models: Mapping[str, Interval], *, correction: str = "holm") -> dict[tuple[str, str], float]:
    """Adjusted paired-bootstrap p-values of every pair of models (keys in the mapping's order)."""
    names = list(models)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    raw = [paired_difference(models[a], models[b]).p_value for a, b in pairs]
    return dict(zip(pairs, CORRECTIONS[correction](raw).tolist())) if pairs else {}


def win_rates(scores: Mapping[str, Mapping[str, float | None]],
              higher_is_better: bool | Mapping[str, bool] = True) -> dict[str, float | None]:
    """HELM's win rate: per case, the share of other models a model beats (ties half), averaged over cases.

    ``scores`` maps model → case → score. A case with fewer than two scores is
    skipped; a model with no comparable case gets None.
    """
    cases = list(dict.fromkeys(c for per_model in scores.values() for c in per_model))
    rates: dict[str, list[float]] = {m: [] for m in scores}
    for case in cases:
        values = {m: float(v) for m, per in scores.items() if (v := per.get(case)) is not None and np.isfinite(v)}
        if len(values) < 2:
            continue
        sign = 1.0 if (higher_is_better if isinstance(higher_is_better, bool) else higher_is_better[case]) else -1.0
        arr = np.array(list(values.values())) * sign
        for model, own in zip(values, arr):
            wins = (own > arr).sum() + 0.5 * ((own == arr).sum() - 1)
            rates[model].append(float(wins) / (len(arr) - 1))
    return {m: (float(np.mean(r)) if r else None) for m, r in rates.items()}


def rank_ranges(scores: Mapping[str, float], p_values: Mapping[tuple[str, str], float], *, alpha: float = 0.05,
                higher_is_better: bool = True) -> dict[str, RankRange]:
    """Each model's possible ranks: [1 + #significantly better, n − #significantly worse], best first."""
    sign = 1.0 if higher_is_better else -1.0

    def p_of(a: str, b: str) -> float:
        p = p_values.get((a, b), p_values.get((b, a)))
        if p is None:
            raise ValueError(f"no p-value for the pair {a!r}, {b!r}")
        return p

    names = sorted(scores, key=lambda m: -sign * scores[m])
    ranges = {}
    for a in names:
        significant = [b for b in names if b != a and p_of(a, b) < alpha]
        better = sum(sign * (scores[b] - scores[a]) > 0 for b in significant)
        worse = sum(sign * (scores[b] - scores[a]) < 0 for b in significant)
        ranges[a] = RankRange(1 + better, len(names) - worse)
    return ranges
