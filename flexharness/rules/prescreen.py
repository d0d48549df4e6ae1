"""Pre-screen transferability from frozen features, in seconds instead of fine-tuning runs.

LogME, cosine k-NN and a linear probe score how well a model's frozen features fit
a task's labels; a Kendall track record says how well those scores ranked the
models that were then fine-tuned; ``top_k`` picks which candidates to fine-tune.
Plain numpy in, floats out: the harness extracts the features, these rules judge them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Hashable, Mapping

import numpy as np

DEFAULT_K = 20
C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)
ALPHA_GRID = (10000.0, 1000.0, 100.0, 10.0, 1.0, 0.1)
HOLDOUT_FRACTION = 0.2
_CHUNK = 1024


def _one_blas_thread():
    """BLAS on one thread: for matrices this small, threads spin-waiting on busy cores cost up to 40×."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


@dataclass(frozen=True)
class EvidenceFit:
    """One target's maximised evidence: the hyper-parameters and log p(y | F, α, β) / n."""

    alpha: float
    beta: float
    log_evidence: float


@dataclass(frozen=True)
class _Spectrum:
    """What the evidence needs of F and Y: eigenvalues σ_i of FᵀF (> 0), z = UᵀY and ‖y‖² − ‖z‖²."""

    sigma: np.ndarray
    z: np.ndarray
    outside: np.ndarray
    n: int


def _matrix(features: np.ndarray) -> np.ndarray:
    """The features as a float64 matrix, refused early when they could only give NaN scores."""
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or not np.isfinite(array).all():
        raise ValueError(f"features must be a finite, non-empty n × d matrix, got shape {array.shape}")
    return array


def _targets(labels: np.ndarray, regression: bool, n: int) -> np.ndarray:
    """One column per regression target, or one one-hot column per class present."""
    array = np.asarray(labels)
    if array.shape[0] != n:
        raise ValueError(f"{array.shape[0]} labels for {n} feature rows")
    if regression:
        columns = array.astype(np.float64).reshape(n, -1)
        if not np.isfinite(columns).all():
            raise ValueError("regression targets must be finite")
        return columns
    if array.ndim != 1:
        raise ValueError("class labels must be one-dimensional")
    classes = np.unique(array)
    return (array[:, None] == classes[None, :]).astype(np.float64)


def _spectrum(features: np.ndarray, targets: np.ndarray, dual: bool | None = None) -> _Spectrum:
    """Decompose the smaller Gram matrix: FᵀF (d × d) when n ≥ d, FFᵀ (n × n) when n < d."""
    n, d = features.shape
    dual = n < d if dual is None else dual
    gram = features @ features.T if dual else features.T @ features
    sigma, vectors = np.linalg.eigh(gram)
    keep = sigma > sigma.max() * max(n, d) * np.finfo(np.float64).eps
    if not keep.any():
        raise ValueError("the features are all zero")
    sigma, vectors = sigma[keep], vectors[:, keep]
    if dual:
        z = vectors.T @ targets
    else:
        z = (vectors.T @ (features.T @ targets)) / np.sqrt(sigma)[:, None]
    # The part of y outside the span of F; exactly none when F spans ℝⁿ, not a rounding residue.
    outside = np.zeros(targets.shape[1]) if sigma.size == n else np.maximum(
        (targets**2).sum(axis=0) - (z**2).sum(axis=0), 0.0)
    return _Spectrum(sigma, z, outside, n)


def _terms(spectrum: _Spectrum, column: int, ratio: float) -> tuple[float, float, float, float]:
    """γ, n − γ, mᵀm and ||Fm − y||² at α/β = ratio, from the eigenvalues alone.

    n − γ sums the shrunk shares α/(α + βσ_i) themselves, not 1 − share, so it stays exact
    when γ nears n; the part of y outside the span of F adds to the residual untouched.
    """
    sigma, z2 = spectrum.sigma, spectrum.z[:, column] ** 2
    share, rest = sigma / (sigma + ratio), ratio / (sigma + ratio)
    slack = float(rest.sum()) + (spectrum.n - sigma.size)
    m2 = float((share**2 * z2 / sigma).sum())
    residual = float((rest**2 * z2).sum()) + float(spectrum.outside[column])
    return float(share.sum()), slack, m2, residual


def _log_evidence(spectrum: _Spectrum, column: int, alpha: float, beta: float) -> float:
    """log p(y | F, α, β); d/2·log α and the (d − r)·log α of log|A| cancel into Σ log(1 + βσ_i/α)."""
    _, _, m2, residual = _terms(spectrum, column, alpha / beta)
    n = spectrum.n
    return (n / 2 * math.log(beta) - n / 2 * math.log(2 * math.pi) - beta / 2 * residual
            - alpha / 2 * m2 - 0.5 * float(np.log1p(beta * spectrum.sigma / alpha).sum()))


def _gap(spectrum: _Spectrum, column: int, log_ratio: float) -> float:
    """log(g(t) / t) for the fixed-point map g(t) = (γ / mᵀm) / ((n − γ) / ||Fm − y||²) of t = α/β.

    Its sign is the sign of d log-evidence / d log t, so its root is the paper's fixed point.
    """
    ratio = math.exp(log_ratio)
    gamma, slack, m2, residual = _terms(spectrum, column, ratio)
    return math.log(gamma * residual) - math.log(slack * ratio * m2)


def _solve_ratio(spectrum: _Spectrum, column: int) -> float:
    """The fixed point α/β nearest to the paper's start α = β = 1, in the direction the evidence rises.

    Steps of doubling length in log(α/β) bracket it, Brent's method pins it. Where the evidence
    keeps rising the ratio stops at σ_min·ε or σ_max/ε, where double precision can no longer
    tell it from its limit.
    """
    from scipy.optimize import brentq

    eps = np.finfo(np.float64).eps
    low, high = math.log(spectrum.sigma.min() * eps), math.log(spectrum.sigma.max() / eps)
    if not spectrum.z[:, column].any():
        return math.exp(high)
    start = min(max(0.0, low), high)
    direction = 1.0 if _gap(spectrum, column, start) > 0 else -1.0
    previous, step = start, 1.0
    while True:
        current = min(max(start + direction * step, low), high)
        if direction * _gap(spectrum, column, current) <= 0:
            return math.exp(brentq(lambda u: _gap(spectrum, column, u), min(previous, current),
                                   max(previous, current), xtol=1e-12, rtol=1e-14))
        if current in (low, high):
            if current == low and spectrum.sigma.size < spectrum.n:
                raise ValueError("the evidence is unbounded: the target is an exact linear function "
                                 "of the features")
            return math.exp(current)
        previous, step = current, 2 * step


def _fit_target(spectrum: _Spectrum, column: int) -> EvidenceFit:
    """Maximise the evidence of one target; β is the optimum for the solved α/β."""
    if spectrum.outside[column] == 0 and not spectrum.z[:, column].any():
        raise ValueError("a regression target is all zeros")
    ratio = _solve_ratio(spectrum, column)
    _, _, m2, residual = _terms(spectrum, column, ratio)
    beta = spectrum.n / (residual + ratio * m2)
    alpha = ratio * beta
    return EvidenceFit(alpha, beta, _log_evidence(spectrum, column, alpha, beta) / spectrum.n)


def logme_fits(features: np.ndarray, labels: np.ndarray, regression: bool = False) -> list[EvidenceFit]:
    """The maximised evidence of each target: one per class (sorted ids) or regression column."""
    matrix = _matrix(features)
    with _one_blas_thread():
        spectrum = _spectrum(matrix, _targets(labels, regression, matrix.shape[0]))
    return [_fit_target(spectrum, column) for column in range(spectrum.z.shape[1])]


def logme(features: np.ndarray, labels: np.ndarray, regression: bool = False) -> float:
    """LogME (You et al., ICML 2021): mean over targets of the maximum log evidence / n."""
    return float(np.mean([fit.log_evidence for fit in logme_fits(features, labels, regression)]))


def _neighbours(train: np.ndarray, evaluate: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k most cosine-similar training rows; ties go to the lower index."""
    if not 1 <= k <= train.shape[0]:
        raise ValueError(f"k must lie in 1..{train.shape[0]}, got {k}")
    if train.shape[1] != evaluate.shape[1]:
        raise ValueError(f"train has {train.shape[1]} feature columns, eval has {evaluate.shape[1]}")

    def unit(rows: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        return rows / np.where(norms > 0, norms, 1.0)

    train_unit, eval_unit = unit(train), unit(evaluate)
    blocks = [np.argsort(-(eval_unit[start:start + _CHUNK] @ train_unit.T), axis=1, kind="stable")[:, :k]
              for start in range(0, eval_unit.shape[0], _CHUNK)]
    return np.concatenate(blocks)


def knn_predict(train_features: np.ndarray, train_labels: np.ndarray, eval_features: np.ndarray,
                k: int = DEFAULT_K, regression: bool = False) -> np.ndarray:
    """Cosine k-NN: majority class (ties to the smallest label) or the neighbours' mean target."""
    train, evaluate = _matrix(train_features), _matrix(eval_features)
    labels = np.asarray(train_labels)
    if labels.shape[0] != train.shape[0]:
        raise ValueError(f"{labels.shape[0]} train labels for {train.shape[0]} train rows")
    with _one_blas_thread():
        index = _neighbours(train, evaluate, min(k, train.shape[0]))
    if regression:
        return labels.astype(np.float64)[index].mean(axis=1)
    classes, codes = np.unique(labels, return_inverse=True)
    votes = np.zeros((index.shape[0], classes.size), dtype=np.int64)
    np.add.at(votes, (np.arange(index.shape[0])[:, None], codes[index]), 1)
    return classes[votes.argmax(axis=1)]


def knn_accuracy(train_features: np.ndarray, train_labels: np.ndarray, eval_features: np.ndarray,
                 eval_labels: np.ndarray, k: int = DEFAULT_K) -> float:
    """Accuracy of cosine k-NN (k = 20, clipped to the training size) on the eval rows."""
    predicted, expected = knn_predict(train_features, train_labels, eval_features, k), np.asarray(eval_labels)
    if expected.shape[0] != predicted.shape[0]:
        raise ValueError(f"{expected.shape[0]} eval labels for {predicted.shape[0]} eval rows")
    return float(np.mean(predicted == expected))


def knn_pearson(train_features: np.ndarray, train_targets: np.ndarray, eval_features: np.ndarray,
                eval_targets: np.ndarray, k: int = DEFAULT_K) -> float | None:
    """Pearson r of cosine k-NN regression on the eval rows; None when either side is constant."""
    predicted = knn_predict(train_features, train_targets, eval_features, k, regression=True)
    return pearson(predicted, np.asarray(eval_targets, dtype=np.float64))


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson correlation, None where it is undefined (a constant side) rather than NaN."""
    dx, dy = x - x.mean(), y - y.mean()
    scale = math.sqrt(float(dx @ dx) * float(dy @ dy))
    return float(dx @ dy) / scale if scale > 0 else None


@dataclass(frozen=True)
class ProbeResult:
    """A linear probe's eval predictions, its chosen C (or ridge α) and the held-out score per grid value."""

    predictions: np.ndarray
    strength: float
    validation: dict[float, float]


def holdout_mask(labels: np.ndarray, regression: bool, seed: int,
                 fraction: float = HOLDOUT_FRACTION) -> np.ndarray:
    """A seeded validation slice of the training rows; per class, so every class keeps a fit row."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    mask = np.zeros(labels.shape[0], dtype=bool)
    groups = [np.arange(labels.shape[0])] if regression else [
        np.flatnonzero(labels == value) for value in np.unique(labels)]
    for rows in groups:
        take = min(int(round(fraction * rows.size)), rows.size - 1)
        mask[rng.permutation(rows)[:take]] = True
    if not mask.any():
        raise ValueError(f"{labels.shape[0]} training rows leave no validation slice")
    return mask


def _probe(strength: float, regression: bool, seed: int):
    """Standardise (fit on the rows it is fitted on), then logistic regression or ridge."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = Ridge(alpha=strength) if regression else LogisticRegression(
        C=strength, max_iter=1000, random_state=seed)
    return make_pipeline(StandardScaler(), model)


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray,
                 regression: bool = False, seed: int = 0) -> ProbeResult:
    """Pick C / α on a held-out training slice (accuracy / MSE), refit on all training rows.

    Both grids run from strong to weak regularisation, so a tie keeps the simpler model.

    ``eval_y`` is only checked for length: the eval rows never influence the choice.
    """
    train, evaluate, labels = _matrix(train_x), _matrix(eval_x), np.asarray(train_y)
    if labels.shape[0] != train.shape[0] or np.asarray(eval_y).shape[0] != evaluate.shape[0]:
        raise ValueError("features and labels differ in length")
    held = holdout_mask(labels, regression, seed)
    grid = ALPHA_GRID if regression else C_GRID
    validation = {}
    with _one_blas_thread():
        for strength in grid:
            model = _probe(strength, regression, seed).fit(train[~held], labels[~held])
            predicted = model.predict(train[held])
            validation[strength] = float(-np.mean((predicted - labels[held]) ** 2) if regression
                                         else np.mean(predicted == labels[held]))
        best = max(grid, key=lambda strength: validation[strength])
        predictions = _probe(best, regression, seed).fit(train, labels).predict(evaluate)
    return ProbeResult(predictions, best, validation)


@dataclass(frozen=True)
class TrackRecord:
    """Kendall τ-b between pre-screen and fine-tuned scores, its p-value and the pairs used."""

    tau: float
    p_value: float
    n: int


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def kendall_track_record(prescreen_scores: Mapping[Hashable, float | None],
                         finetuned_scores: Mapping[Hashable, float | None]) -> TrackRecord | None:
    """τ-b over the (task, model) keys scored on both sides; None below 3 pairs or when a side is all ties."""
    from scipy.stats import kendalltau

    keys = [key for key in prescreen_scores
            if key in finetuned_scores and _finite(prescreen_scores[key]) and _finite(finetuned_scores[key])]
    x = [float(prescreen_scores[key]) for key in keys]
    y = [float(finetuned_scores[key]) for key in keys]
    if len(keys) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    result = kendalltau(x, y, variant="b")
    return TrackRecord(float(result.statistic), float(result.pvalue), len(keys))


def top_k(candidates: Mapping[str, float | None], k: int) -> list[str]:
    """The k best names by pre-screen score, ties by name; unscored names rank after all scored."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")

    def order(item: tuple[str, float | None]) -> tuple[bool, float, str]:
        name, score = item
        return (not _finite(score), -score if _finite(score) else 0.0, name)

    return [name for name, _ in sorted(candidates.items(), key=order)[:k]]
