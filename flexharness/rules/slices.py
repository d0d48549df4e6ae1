"""Difficulty slices: which slice each evaluation example falls in, and the case's metric per slice.

Pure functions of plain arrays (no data loading, no models), so the rules can
be checked with hypothesis: every way of slicing puts each example in exactly
one slice, and for metrics that are means over examples (accuracy, mse) the
count-weighted mean of the slice scores is the case score.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from flexharness.rules import aggregate as agg
from flexharness.rules.metrics import score

LENGTH, AGREEMENT = "length", "agreement"
AGREEMENT_NAMES = ("easy", "medium", "hard")
LENGTH_NAMES = ("short", "medium", "long")     # three length bins; other counts are q1..qN
ADDITIVE = frozenset({"accuracy", "mse"})      # means over examples: slice scores recombine exactly
MISSING = "(missing)"                         # the slice of examples whose column holds no value


@dataclass(frozen=True)
class Slice:
    name: str
    indices: np.ndarray                  # positions of its examples in the evaluation split
    low: float | None = None             # the range a binned slice covers (its smallest and largest value)
    high: float | None = None


def known_names(by: str, bins: int) -> tuple[str, ...] | None:
    """The slice names a spec gives whatever the data; None for a column (its values name the slices)."""
    if by == AGREEMENT:
        return AGREEMENT_NAMES
    if by == LENGTH:
        return bin_names(by, bins)
    return None


def bin_names(by: str, bins: int) -> tuple[str, ...]:
    return LENGTH_NAMES if by == LENGTH and bins == len(LENGTH_NAMES) else tuple(f"q{i + 1}" for i in range(bins))


def quantile_slices(values: np.ndarray, names: Sequence[str]) -> list[Slice]:
    """One slice per quantile bin, in order; equal values always share a bin, so a bin may be empty.

    Bin ``i`` holds the values in ``(edge[i-1], edge[i]]`` of the inner quantile edges (the first bin
    everything up to the first edge, the last everything above the last edge).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return [Slice(name, np.zeros(0, dtype=np.int64)) for name in names]
    edges = np.quantile(values, np.linspace(0.0, 1.0, len(names) + 1)[1:-1])
    which = np.searchsorted(edges, values, side="left")
    slices = []
    for i, name in enumerate(names):
        members = np.flatnonzero(which == i)
        found = values[members]
        slices.append(Slice(name, members, float(found.min()) if members.size else None,
                            float(found.max()) if members.size else None))
    return slices


def column_slices(values: np.ndarray, bins: int) -> list[Slice]:
    """A column's values: one slice per value, or ``bins`` quantile bins of a numeric column with more values.

    Missing values (NaN, or ``(missing)`` in a text column) form a slice of their own.
    """
    values = np.asarray(values)
    if values.dtype.kind in "iuf":
        numbers = values.astype(np.float64)
        present = ~np.isnan(numbers)
        distinct = np.unique(numbers[present])
        if distinct.size > bins:
            slices = quantile_slices(numbers[present], bin_names("", bins))
            positions = np.flatnonzero(present)
            slices = [Slice(s.name, positions[s.indices], s.low, s.high) for s in slices]
        else:
            slices = [Slice(f"{v:g}", np.flatnonzero(numbers == v), float(v), float(v)) for v in distinct]
        missing = np.flatnonzero(~present)
        return slices + ([Slice(MISSING, missing)] if missing.size else [])
    text = values.astype(str)
    return [Slice(str(v), np.flatnonzero(text == v)) for v in np.unique(text)]


def agreement_slices(correct: np.ndarray) -> list[Slice]:
    """From a runs × examples array of right answers: ``easy`` when more than two thirds of the runs got an
    example right, ``hard`` when fewer than one third did, ``medium`` otherwise (exact in integers)."""
    correct = np.asarray(correct, dtype=bool)
    runs = correct.shape[0]
    right = correct.sum(axis=0)
    share = right / max(runs, 1)
    groups = {"easy": 3 * right > 2 * runs, "hard": 3 * right < runs}
    groups["medium"] = ~(groups["easy"] | groups["hard"])
    slices = []
    for name in AGREEMENT_NAMES:
        members = np.flatnonzero(groups[name])
        slices.append(Slice(name, members, float(share[members].min()) if members.size else None,
                            float(share[members].max()) if members.size else None))
    return slices


def additive(metrics: Sequence[str]) -> bool:
    """Whether the count-weighted mean of slice scores equals the case score for these metrics."""
    return all(m in ADDITIVE for m in metrics)


def slice_score(metrics: Sequence[str], labels: np.ndarray, predictions: np.ndarray,
                members: np.ndarray) -> float | None:
    """The case's metric on one slice, per seed (rows of ``predictions``), then the mean over seeds."""
    if members.size == 0:
        return None
    with warnings.catch_warnings():   # a slice of one class makes some metrics warn; they still return a number
        warnings.simplefilter("ignore")
        per_seed = [score(tuple(metrics), labels[members], row[members])[0] for row in predictions]
    finite = [s for s in per_seed if math.isfinite(s)]
    return agg.mean(finite) if len(finite) == len(per_seed) else None


def scores(metrics: Sequence[str], labels: np.ndarray, predictions: np.ndarray,
           slices: Sequence[Slice]) -> list[dict[str, object]]:
    """Per slice: name, count, score (None when empty) and the range it covers."""
    rows = []
    for s in slices:
        row: dict[str, object] = {"name": s.name, "n": int(s.indices.size),
                                  "score": slice_score(metrics, labels, predictions, s.indices)}
        if s.low is not None:
            row |= {"low": s.low, "high": s.high}
        rows.append(row)
    return rows


def recombined(rows: Sequence[Mapping[str, object]]) -> float | None:
    """Σ n·score / Σ n over the slices that have a score: the case score for additive metrics."""
    scored = [(int(r["n"]), float(r["score"])) for r in rows if r["score"] is not None]  # type: ignore[arg-type]
    total = sum(n for n, _ in scored)
    return math.fsum(n * s for n, s in scored) / total if total else None


def slice_gate(suite: str, model: str, case_id: str, name: str, row: Mapping[str, object] | None,
               floor: float, higher_is_better: bool, missing_note: str) -> agg.GateResult:
    """One slice's floor, in the metric's direction; named ``slices/AXIS/CASE/SLICE.min``.

    Without the slice, or without a score in it, the gate fails as incomplete with ``missing_note``."""
    value = None if row is None else row["score"]
    if row is not None and not row["n"]:
        missing_note = "the slice has no examples"
    gate = agg.floor_gate(f"slices/{case_id}/{name}.min", value, floor, higher_is_better,  # type: ignore[arg-type]
                          missing_note)
    return agg.GateResult(**{**gate.__dict__, "suite": suite, "model": model})
