"""Extractive-QA scores as the official SQuAD evaluation scripts compute them.

Answers are compared after the official normalisation (lower case, no ASCII
punctuation, no articles a/an/the, whitespace collapsed). Exact match and F1 of
a question are the maximum over its gold answers. No-answer questions (SQuAD
v2.0: an empty gold list, or gold answers that all normalise to nothing) have
the empty string as their only gold answer, so they score 1 exactly when the
prediction is empty. That is the v2.0 script's rule; on v1.1 data, where every
question has an answer, both scripts agree. Scores are fractions in [0, 1],
not the scripts' percentages, like every other metric of the harness.
"""

from __future__ import annotations

import collections
import re
import string
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

ANSWER_SEPARATOR = "\x1f"   # between a question's gold answers in one stored label
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and articles, collapse whitespace (the scripts' ``normalize_answer``)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def exact(gold: str, prediction: str) -> float:
    return float(normalize_answer(gold) == normalize_answer(prediction))


def token_f1(gold: str, prediction: str) -> float:
    """Bag-of-tokens F1; when either side is empty, 1 if both are and 0 otherwise."""
    gold_tokens, predicted = answer_tokens(gold), answer_tokens(prediction)
    if not gold_tokens or not predicted:
        return float(gold_tokens == predicted)
    same = sum((collections.Counter(gold_tokens) & collections.Counter(predicted)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_answers(answers: Sequence[str]) -> list[str]:
    """The answers that count: those that normalise to something, else the empty answer alone."""
    kept = [answer for answer in answers if normalize_answer(answer)]
    return kept or [""]


def question_scores(prediction: str, answers: Sequence[str]) -> tuple[float, float]:
    """(exact match, F1) of one prediction: the maximum over the gold answers."""
    golds = gold_answers(answers)
    return max(exact(g, prediction) for g in golds), max(token_f1(g, prediction) for g in golds)


@dataclass(frozen=True, eq=False)
class Scored:
    """Per-question scores; every summary (and every resample of questions) is a mean over them."""

    exact: np.ndarray        # float64, one per question
    f1: np.ndarray
    has_answer: np.ndarray   # bool: the question has a gold answer (SQuAD v2.0's HasAns)


def score(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> Scored:
    """Score each question's prediction against its gold answers."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} questions")
    pairs = np.array([question_scores(p, a) for p, a in zip(predictions, answers)], dtype=np.float64).reshape(-1, 2)
    has = np.array([gold_answers(a) != [""] for a in answers], dtype=bool).reshape(-1)
    return Scored(pairs[:, 0], pairs[:, 1], has)


def summary(scored: Scored) -> dict[str, float]:
    """exact and f1 over all questions, and over the HasAns / NoAns subsets where they are not empty."""
    out = {"exact": _mean(scored.exact), "f1": _mean(scored.f1), "total": float(len(scored.exact))}
    for name, mask in (("HasAns", scored.has_answer), ("NoAns", ~scored.has_answer)):
        if mask.any():
            out |= {f"{name}_exact": _mean(scored.exact[mask]), f"{name}_f1": _mean(scored.f1[mask]),
                    f"{name}_total": float(mask.sum())}
    return out


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else 0.0


def golds_of(label: str) -> list[str]:
    """A stored label's gold answers (``ANSWER_SEPARATOR`` between them; empty: no answer)."""
    return label.split(ANSWER_SEPARATOR) if label else []


def scored_labels(labels: np.ndarray, predictions: np.ndarray) -> Scored:
    """:func:`score` of stored labels (one string per question) and predicted answers."""
    return score([str(p) for p in predictions], [golds_of(str(label)) for label in labels])


def _metric(column: str) -> Callable[[np.ndarray, np.ndarray], float]:
    def compute(labels: np.ndarray, predictions: np.ndarray) -> float:
        return _mean(getattr(scored_labels(labels, predictions), column))

    return compute


METRICS = {"exact_match": _metric("exact"), "squad_f1": _metric("f1")}   # for ``rules.metrics``
SPLIT_NAMES = {"HasAns_exact": "has_answer_exact", "HasAns_f1": "has_answer_f1", "NoAns_exact": "no_answer_exact",
               "NoAns_f1": "no_answer_f1"}


def split_scores(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """SQuAD v2.0's HasAns / NoAns scores, when the questions hold unanswerable ones (else nothing)."""
    found = summary(scored_labels(labels, predictions))
    if "NoAns_total" not in found:
        return {}
    return {name: found[key] for key, name in SPLIT_NAMES.items() if key in found}
