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
OTHER = "other"                               # the slice of a column's values the suite does not name
RESERVED_SLICES = (OTHER, MISSING)


@dataclass(frozen=True)
class Slice:
    name: str
    indices: np.ndarray                  # positions of its examples in the evaluation split
    low: float | None = None             # the range a binned slice covers (its smallest and largest value)
    high: float | None = None


def known_names(by: str, bins: int, values: Sequence[object] | None = None,
                edges: Sequence[float] | None = None) -> tuple[str, ...]:
    """The slice names a spec gives, whatever the data: a column's are the values or bins the suite names."""
    if by == AGREEMENT:
        return AGREEMENT_NAMES
    if by == LENGTH:
        return bin_names(by, bins)
    return (*(edge_names(edges) if edges else map(str, values or ())), OTHER, MISSING)


def edge_names(edges: Sequence[float]) -> tuple[str, ...]:
    """``under 0.5``, ``0.5 to 0.8``, ``0.8 or more``: bins [edge_i, edge_i+1) named by the suite's edges."""
    inner = tuple(f"{a:g} to {b:g}" for a, b in zip(edges, edges[1:]))
    return (f"under {edges[0]:g}", *inner, f"{edges[-1]:g} or more")


def slice_labels(raw: Sequence[object], values: Sequence[object] | None, edges: Sequence[float] | None) -> np.ndarray:
    """Each example's slice name from its column value: a value the suite names (as it wrote it), the bin of
    its edges, ``other`` or ``(missing)``. What is kept and shown is these names, never the data's values."""
    names = edge_names(edges) if edges else ()
    lookup = {}
    for value in values or ():
        lookup[str(value)] = str(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lookup[float(value)] = str(value)
    found = []
    for value in raw:
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        if value is None or (number is not None and math.isnan(number)):
            found.append(MISSING)
        elif edges:
            found.append(OTHER if number is None else names[int(np.searchsorted(edges, number, side="right"))])
        else:
            found.append(lookup.get(float(number) if number is not None else str(value), OTHER))
    return np.asarray(found, dtype=str)


def column_slices(labels: np.ndarray, names: Sequence[str]) -> list[Slice]:
    """One slice per name the suite gives (``other`` and ``(missing)`` only when they hold examples), from the
    per-example slice names :func:`slice_labels` stored."""
    labels = np.asarray(labels).astype(str)
    slices = [Slice(name, np.flatnonzero(labels == name)) for name in names]
    return [s for s in slices if s.indices.size or s.name not in RESERVED_SLICES]


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
