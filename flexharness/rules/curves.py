"""Stability and data-efficiency rules: best-of-k runs, failed runs, nested subsets and learning curves.

Issue 14 asks whether a model adapts without per-task tuning (Dodge et al. 2019, 2020; Mosbach et al.
2021); issue 16 asks how much data it needs (VTAB; Le Scao & Rush 2021). Pure functions over plain
data, so hypothesis can check every promise and the results side can recompute them from a JSON file.
docs/curves.md holds the exact definitions.
"""

from __future__ import annotations

import heapq
import math
import warnings
from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

import numpy as np

from flexharness.rules import metrics
from flexharness.rules.aggregate import mean, population_std


@dataclass(frozen=True)
class SettingSummary:
    """Seed statistics per hyper-parameter setting, and how much the choice of setting matters."""

    means: dict[Hashable, float]
    seed_stds: dict[Hashable, float]
    best: Hashable
    best_score: float
    spread: float
    sigma: float


@dataclass(frozen=True)
class DataAdvantage:
    """How many more examples model b needs than model a for the same score (positive: a needs fewer)."""

    mean_log2_ratio: float
    mean_extra_examples: float
    ratio_at_top: float
    score_low: float
    score_high: float


def _finite(values: Sequence[float], what: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what}: needs a non-empty list of numbers, got {values!r}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what}: every score must be finite, got {values!r}")
    return array


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def expected_max(scores: Sequence[float], k: int, higher_is_better: bool = True) -> list[float]:
    """E[best of j runs] for j = 1..k, the runs drawn uniformly with replacement from ``scores``.

    Dodge et al. (2019): with v_(1) ≤ … ≤ v_(N), E[max_j] = Σ v_(i) [(i/N)^j − ((i−1)/N)^j]. Summed by
    parts, E[max_j] = v_(N) − Σ_{i<N} (v_(i+1) − v_(i)) (i/N)^j: every term is ≥ 0 and shrinks with j,
    so the curve never gets worse with j, in floating point too.
    """
    values, k = _finite(scores, "expected_max"), _count(k, "expected_max: k")
    sign = 1.0 if higher_is_better else -1.0
    ordered = np.sort(sign * values)
    gaps = np.diff(ordered)
    base = np.arange(1, ordered.size) / ordered.size
    power = np.ones_like(base)
    curve = []
    for _ in range(k):
        power = power * base
        best = min(max(ordered[-1] - math.fsum(gaps * power), ordered[0]), ordered[-1])
        curve.append(float(sign * best))
    return curve


def failed_runs(scores: Sequence[float], majority_score: float, margin: float = 0.0,
                higher_is_better: bool = True) -> list[bool]:
    """Which runs failed: a run fails when it does not beat the majority-class score by more than ``margin``.

    Higher is better: failed ⇔ score ≤ majority + margin; lower is better: failed ⇔ score ≥ majority − margin.
    Margin 0 is Mosbach et al.'s (2021) rule: no better than predicting the majority class.
    """
    values = _finite(scores, "failed_runs")
    if not math.isfinite(majority_score) or not math.isfinite(margin) or margin < 0:
        raise ValueError(f"failed_runs: majority score and margin must be finite, margin ≥ 0; "
                         f"got {majority_score!r}, {margin!r}")
    if higher_is_better:
        return [bool(v <= majority_score + margin) for v in values]
    return [bool(v >= majority_score - margin) for v in values]


def failure_rate(scores: Sequence[float], majority_score: float, margin: float = 0.0,
                 higher_is_better: bool = True) -> float:
    """The fraction of runs that failed (see ``failed_runs``)."""
    failed = failed_runs(scores, majority_score, margin, higher_is_better)
    return sum(failed) / len(failed)


def majority_baseline(labels_train: Sequence, labels_eval: Sequence, metric_name: str | Sequence[str]) -> float:
    """The score of a model that learnt only the label prior: the floor a fine-tuned run has to beat.

    Classification: always predict the most frequent training label (a tie goes to the smallest label).
    Regression: always predict the training mean. Scored by flexharness.metrics; several metric names
    give their mean, as a case score does (metrics.score).
    """
    names = (metric_name,) if isinstance(metric_name, str) else tuple(metric_name)
    unknown = [n for n in names if n not in metrics.METRICS]
    if not names or unknown:
        raise ValueError(f"majority_baseline: unknown metric {unknown or names!r}; known: {sorted(metrics.METRICS)}")
    kinds = {metrics.METRICS[n].kind for n in names}
    if len(kinds) > 1:
        raise ValueError(f"majority_baseline: {list(names)} mix classification and regression metrics")
    train, y_eval = np.asarray(labels_train), np.asarray(labels_eval)
    if train.size == 0 or y_eval.size == 0:
        raise ValueError("majority_baseline: needs training and evaluation labels")
    if kinds == {metrics.REGRESSION}:
        constant = np.mean(train.astype(float))
    else:
        classes, counts = np.unique(train, return_counts=True)
        constant = classes[np.argmax(counts)]
    prediction = np.full(y_eval.shape, constant)
    with warnings.catch_warnings():  # sklearn and scipy warn about a constant prediction: it is the point
        warnings.simplefilter("ignore")
        values = [metrics.METRICS[n].compute(y_eval, prediction) for n in names]
    return float(np.mean(values))


def setting_summary(runs: Mapping[Hashable, Sequence[float]], higher_is_better: bool = True) -> SettingSummary:
    """Per setting (e.g. a learning rate): the mean and population std over its seeds; then the best
    setting (a tie goes to the first listed) and the spread of the setting means (max − min, population std)."""
    if not runs:
        raise ValueError("setting_summary: needs at least one setting")
    checked = {key: _finite(scores, f"setting_summary: setting {key!r}").tolist() for key, scores in runs.items()}
    means = {key: mean(scores) for key, scores in checked.items()}
    stds = {key: population_std(scores) for key, scores in checked.items()}
    pick = max if higher_is_better else min
    best = pick(means, key=means.__getitem__)
    values = list(means.values())
    return SettingSummary(means=means, seed_stds=stds, best=best, best_score=means[best],
                          spread=max(values) - min(values), sigma=population_std(values))


def nested_subsets(labels: Sequence, sizes: Sequence[int], seed: int, bins: int = 5) -> dict[int, np.ndarray]:
    """Sorted training indices per size, each size's set inside every larger one, stratified by label.

    Nested, so the points of a learning curve differ only by added examples; stratified, so small sets
    keep the label mix, and from as many examples as there are classes every class is present. Float
    labels (regression) are stratified by ``bins`` equal-count bins of their rank. A size's set depends
    only on the labels, the size and the seed, never on the other sizes asked for.
    """
    strata = _strata(labels, _count(bins, "nested_subsets: bins"))
    wanted = sorted({_count(s, "nested_subsets: a size") for s in sizes})
    if not wanted or wanted[-1] > strata.size:
        raise ValueError(f"nested_subsets: sizes must be between 1 and {strata.size}, got {list(sizes)!r}")
    _, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    rng = np.random.default_rng(seed)
    members = [rng.permutation(np.flatnonzero(inverse == c)) for c in range(counts.size)]
    order = _draw_order(counts)
    subsets = {}
    for size in wanted:
        taken = np.bincount(order[:size], minlength=counts.size)
        subsets[size] = np.sort(np.concatenate([m[:t] for m, t in zip(members, taken)]))
    return subsets


def _strata(labels: Sequence, bins: int) -> np.ndarray:
    """Class labels as they are; float labels as equal-count rank bins (ties split by position)."""
    array = np.asarray(labels)
    if array.ndim != 1 or array.size == 0:
        raise ValueError("nested_subsets: needs a non-empty list of labels")
    if not np.issubdtype(array.dtype, np.floating):
        return array
    if not np.all(np.isfinite(array)):
        raise ValueError("nested_subsets: float labels must be finite")
    ranks = np.empty(array.size, dtype=np.int64)
    ranks[np.argsort(array, kind="stable")] = np.arange(array.size)
    return ranks * min(bins, array.size) // array.size


def _share_bounds(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """floor and ceil of every class's target share q_c(n), n = 0..N (rows), computed in integers.

    Below C (the number of classes) classes share equally, q_c(n) = n/C; from C on no class gets less
    than one and the others share the rest in proportion to their counts (water-filling).
    """
    total, classes = int(counts.sum()), counts.size
    n = np.arange(total + 1)
    pinned, rest, going = np.zeros_like(n), np.full_like(n, total), np.ones(n.size, dtype=bool)
    order = np.argsort(counts, kind="stable")
    is_pinned = np.zeros((n.size, classes), dtype=bool)
    for c in order[:-1]:  # smallest first: pinned while its proportional share of what is left is ≤ 1
        going &= (n - pinned) * counts[c] <= rest
        is_pinned[:, c] = going
        pinned, rest = pinned + going, rest - going * counts[c]
    share = (n - pinned)[:, None] * counts[None, :]
    low, high = share // rest[:, None], -(-share // rest[:, None])
    low[is_pinned], high[is_pinned] = 1, 1
    small = n <= classes
    low[small], high[small] = (n[small] // classes)[:, None], (-(-n[small] // classes))[:, None]
    return low, high


def _draw_order(counts: np.ndarray) -> np.ndarray:
    """The class of the 1st, 2nd, …, N-th draw, so that every prefix of n draws holds between
    floor(q_c(n)) and ceil(q_c(n)) of class c.

    The j-th example of class c may be drawn once ceil(q_c) ≥ j and must be drawn by the first n with
    floor(q_c(n)) ≥ j. Such a sequence exists (Tijdeman 1980, the chairman assignment problem) and
    earliest-deadline-first over these unit jobs finds one. Ties go to the larger class, then the label order.
    """
    low, high = _share_bounds(counts)
    jobs = []
    for c, m in enumerate(counts):
        j = np.arange(1, m + 1)
        releases, deadlines = np.searchsorted(high[:, c], j), np.searchsorted(low[:, c], j)
        jobs += [(int(r), int(d), -int(m), c) for r, d in zip(releases, deadlines)]
    jobs.sort()
    ready: list[tuple[int, int, int]] = []
    order, nxt = np.empty(len(jobs), dtype=np.int64), 0
    for position in range(1, len(jobs) + 1):
        while nxt < len(jobs) and jobs[nxt][0] <= position:
            heapq.heappush(ready, jobs[nxt][1:])
            nxt += 1
        order[position - 1] = heapq.heappop(ready)[2]
    return order


def _curve(sizes: Sequence[int], scores: Sequence[float], what: str, minimum: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Sizes (ascending) and their scores, checked: distinct positive integer sizes, finite scores."""
    counts = [_count(s, f"{what}: a size") for s in sizes]
    values = _finite(scores, what)
    if len(set(counts)) != len(counts) or len(counts) != values.size or len(counts) < minimum:
        raise ValueError(f"{what}: needs at least {minimum} distinct sizes with one score each, "
                         f"got sizes {list(sizes)!r} and {values.size} scores")
    order = np.argsort(counts)
    return np.asarray(counts, dtype=np.int64)[order], values[order]


def aulc(sizes: Sequence[int], scores: Sequence[float]) -> float:
    """Normalised area under the learning curve over log size: a constant curve at s gives s.

    AULC = Σ_i (x_{i+1} − x_i)(s_i + s_{i+1})/2 / (x_last − x_first), x = ln(size), the trapezoid rule.
    """
    n, y = _curve(sizes, scores, "aulc")
    x = np.log(n)
    area = math.fsum(np.diff(x) * (y[1:] + y[:-1]) / 2)
    return float(min(max(area / (x[-1] - x[0]), y.min()), y.max()))


def smallest_size_reaching(sizes: Sequence[int], scores: Sequence[float], fraction: float,
                           higher_is_better: bool = True) -> int | None:
    """The smallest size whose score reaches ``fraction`` of the largest size's score, or None.

    Higher is better: reaches ⇔ score ≥ fraction·final (None when final ≤ 0). Lower is better: reaches
    ⇔ fraction·score ≤ final, i.e. final/score ≥ fraction (None when final < 0).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"smallest_size_reaching: fraction must be in (0, 1], got {fraction!r}")
    n, y = _curve(sizes, scores, "smallest_size_reaching", minimum=1)
    final = y[-1]
    if (final <= 0) if higher_is_better else (final < 0):
        return None
    reached = y >= fraction * final if higher_is_better else fraction * y <= final
    return int(n[np.argmax(reached)])


def data_advantage(sizes: Sequence[int], scores_a: Sequence[float], scores_b: Sequence[float],
                   higher_is_better: bool = True) -> DataAdvantage | None:
    """The horizontal gap between two learning curves over the scores both reach (Le Scao & Rush 2021).

    Each curve becomes its running best (direction-aware) and n(y) is the smallest size at which it
    reaches score y, interpolated linearly in ln(size). Over [low, high], the scores both running bests
    cover, the result averages log2(n_b(y)/n_a(y)) and n_b(y) − n_a(y) over y, and gives n_b/n_a at high.
    None when the score ranges do not overlap in an interval.
    """
    n, ya = _curve(sizes, scores_a, "data_advantage")
    _, yb = _curve(sizes, scores_b, "data_advantage")
    x = np.log(n)
    sign = 1.0 if higher_is_better else -1.0
    best_a, best_b = np.maximum.accumulate(sign * ya), np.maximum.accumulate(sign * yb)
    low, high = max(best_a[0], best_b[0]), min(best_a[-1], best_b[-1])
    if not high > low:
        return None
    cuts = np.unique(np.concatenate([[low, high], best_a, best_b]))
    cuts = cuts[(cuts >= low) & (cuts <= high)]
    width, middle = np.diff(cuts), (cuts[:-1] + cuts[1:]) / 2
    (la, slope_a), (lb, slope_b) = _log_size_at(x, best_a, middle), _log_size_at(x, best_b, middle)
    # Within a piece both ln n(y) are linear, so the midpoint gives the exact mean of ln n, and
    # n(middle)·sinh(h)/h with h = slope·width/2 the exact mean of n = exp(ln n).
    extra = np.exp(lb) * _sinhc(slope_b * width / 2) - np.exp(la) * _sinhc(slope_a * width / 2)
    top_a, top_b = _log_size_at(x, best_a, np.array([high]))[0], _log_size_at(x, best_b, np.array([high]))[0]
    return DataAdvantage(
        mean_log2_ratio=float(math.fsum(width * (lb - la)) / (high - low) / math.log(2)),
        mean_extra_examples=float(math.fsum(width * extra) / (high - low)),
        ratio_at_top=float(np.exp(top_b[0] - top_a[0])),
        score_low=float(sign * low), score_high=float(sign * high))


def _log_size_at(x: np.ndarray, best: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ln of the smallest size at which the non-decreasing curve ``best`` reaches y (best[0] < y ≤ best[-1]),
    and d(ln size)/dy there."""
    i = np.searchsorted(best, y, side="left")  # best[i−1] < y ≤ best[i]
    slope = (x[i] - x[i - 1]) / (best[i] - best[i - 1])
    return x[i - 1] + (y - best[i - 1]) * slope, slope


def _sinhc(h: np.ndarray) -> np.ndarray:
    """sinh(h)/h, 1 at 0."""
    safe = np.where(h == 0, 1.0, h)
    return np.where(h == 0, 1.0, np.sinh(safe) / safe)


def expected_best_setting(means: Sequence[float], higher_is_better: bool = True) -> list[float]:
    """E[best of k settings] for k = 1..G, the k settings drawn from the G of a grid **without** replacement.

    A tuning budget of k settings (each run with all its seeds) tried in random order: k = 1 gives the grid mean,
    k = G the best setting mean exactly. Summed by parts, E[best_k] = v_(G) − Σ_{i<G} (v_(i+1) − v_(i)) C(i,k)/C(G,k):
    every term is ≥ 0 and shrinks with k, so the curve never gets worse with k, in floating point too.
    """
    values = _finite(means, "expected_best_setting")
    sign = 1.0 if higher_is_better else -1.0
    ordered = np.sort(sign * values)
    gaps, size = np.diff(ordered), ordered.size
    curve = []
    for k in range(1, size + 1):
        below = np.array([math.comb(i, k) / math.comb(size, k) for i in range(1, size)])  # P(best ≤ v_(i))
        best = min(max(ordered[-1] - math.fsum(gaps * below), ordered[0]), ordered[-1])
        curve.append(float(sign * best))
    return curve
