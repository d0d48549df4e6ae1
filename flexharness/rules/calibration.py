"""Calibration of a classifier's stored probabilities: expected calibration error and the Brier score.

ECE (Guo et al. 2017): the examples binned by confidence (the largest class probability) into
``ECE_BINS`` equal-width bins over [0, 1] (a confidence of exactly 1 falls in the last bin), then the mean
over bins of |accuracy − mean confidence| weighted by the bin's share of examples. Brier score: the mean
over examples of the squared distance between the probability vector and the one-hot label (0 is perfect,
2 the worst; binary tasks give twice the one-column Brier score). Both are lower-is-better.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

ECE_BINS = 15
FIELDS = ("ece", "brier")


def ece(labels: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS) -> float:
    probs = np.asarray(probabilities, dtype=np.float64)
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = predicted == np.asarray(labels)
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def brier(labels: np.ndarray, probabilities: np.ndarray) -> float:
    probs = np.asarray(probabilities, dtype=np.float64)
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(probs)), np.asarray(labels, dtype=np.int64)] = 1.0
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def of_outputs(labels: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """``ece`` and ``brier`` of class probabilities (examples × classes, one class id per example); empty for
    anything else: regression values, a tagger's tag ids per word, answer strings, no rows."""
    outputs, labels = np.asarray(outputs), np.asarray(labels)
    if (outputs.ndim != 2 or outputs.shape[1] < 2 or len(outputs) == 0 or outputs.dtype.kind != "f"
            or labels.shape != (len(outputs),) or labels.dtype.kind not in "iu"):
        return {}
    return {"ece": ece(labels, outputs), "brier": brier(labels, outputs)}


def mean_fields(records: Iterable[Mapping[str, Any]]) -> dict[str, float | None]:
    """Each calibration field's mean over the records (seeds) that have it; None when none has."""
    found = list(records)
    result: dict[str, float | None] = {}
    for name in FIELDS:
        values = [r[name] for r in found if isinstance(r.get(name), (int, float))]
        result[name] = sum(values) / len(values) if values else None
    return result
