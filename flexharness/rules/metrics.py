"""Metric registry: name → scoring function, direction and the kind of task it needs.

scikit-learn and scipy do the arithmetic; they are imported on first use so
that collecting a suite stays cheap.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from flexharness.rules import squad, tagging

CLASSIFICATION = "classification"
REGRESSION = "regression"
TAGGING = "tagging"          # entity-level and token scores of tagged sentences (rules.tagging)
EXTRACTIVE_QA = "extractive_qa"   # labels: gold answers per question; predictions: answer strings (rules.squad)


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str
    higher_is_better: bool
    compute: Callable[[np.ndarray, np.ndarray], float]


def _accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(y_true, y_pred))


def _f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    if max(int(y_true.max(initial=0)), int(y_pred.max(initial=0))) > 1:
        raise ValueError("metric 'f1' is binary (label id 1 is positive); use 'macro_f1' for more than two labels")
    return float(f1_score(y_true, y_pred, pos_label=1, average="binary", zero_division=0))


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def _mcc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(y_true, y_pred))


def _correlation(fn_name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    def compute(y_true: np.ndarray, y_pred: np.ndarray) -> float:
        from scipy import stats

        if np.ptp(y_pred) == 0 or np.ptp(y_true) == 0:
            return 0.0  # constant predictions carry no correlation; scipy would return nan (np.std may be 1e-17)
        # float64: scipy computes in the inputs' precision, and float32 model outputs lose the fourth digit
        return float(getattr(stats, fn_name)(np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64))[0])

    return compute


def _mse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean((np.asarray(y_true, float) - np.asarray(y_pred, float)) ** 2))


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", CLASSIFICATION, True, _accuracy),
        Metric("f1", CLASSIFICATION, True, _f1),
        Metric("macro_f1", CLASSIFICATION, True, _macro_f1),
        Metric("mcc", CLASSIFICATION, True, _mcc),
        Metric("pearson", REGRESSION, True, _correlation("pearsonr")),
        Metric("spearman", REGRESSION, True, _correlation("spearmanr")),
        Metric("mse", REGRESSION, False, _mse),
        *(Metric(name, TAGGING, True, functools.partial(tagging.value, name)) for name in tagging.METRIC_NAMES),
        *(Metric(name, EXTRACTIVE_QA, True, compute) for name, compute in squad.METRICS.items()),
    )
}


def unfit(metric_names: tuple[str, ...], num_labels: int) -> str | None:
    """Why these metrics cannot score data with ``num_labels`` labels; checked before any training."""
    if "f1" in metric_names and num_labels > 2:
        return f"metric 'f1' is binary (label id 1 is positive) but the data has {num_labels} labels; use 'macro_f1'"
    return None


def score(metric_names: tuple[str, ...], y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, dict[str, float]]:
    """Score predictions with each metric; the case score is their mean (as the GLUE score does)."""
    values = {name: METRICS[name].compute(y_true, y_pred) for name in metric_names}
    return float(np.mean(list(values.values()))), values


def predictions_from_outputs(outputs: np.ndarray) -> np.ndarray:
    """Class ids from probabilities (examples × labels); the values themselves for regression (examples × 1);
    integer outputs are predictions already (a tagger's tag ids per word)."""
    if outputs.dtype.kind in "iuU":   # ids, or answer strings (extractive QA)
        return outputs
    return outputs[:, 0] if outputs.shape[1] == 1 else outputs.argmax(-1)


def score_outputs(metric_names: tuple[str, ...], labels: np.ndarray, outputs: np.ndarray
                  ) -> tuple[float, dict[str, float]]:
    """:func:`score` of the predictions that stored per-example outputs give."""
    return score(metric_names, labels, predictions_from_outputs(outputs))
