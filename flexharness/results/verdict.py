"""The verdict of a results document: aggregates, the axes' own sections and every gate, from the document alone.

A pytest run and ``flexharness merge`` both call :func:`recompute`, so N
merged shards decide exactly what one unsharded run decides.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Iterable, Mapping, Protocol, Sequence

from flexharness.results import merge, predictions, significance, slicing
from flexharness.rules import aggregate as agg
from flexharness.rules import baseline as base

GATE_FIELDS = ("name", "suite", "model", "passed", "value", "threshold", "message")


class Deciding(Protocol):
    """What an axis adds to the verdict: the top-level lists it owns, rebuilt from the document (and from the items'
    per-example outputs where it needs them), and its gates."""

    document_keys: ClassVar[tuple[str, ...]]

    def from_outputs(self, doc: dict[str, Any], outputs: Mapping[significance.CaseKey, significance.SeedOutputs],
                     settings: significance.Settings) -> None: ...

    def finish(self, doc: dict[str, Any], gate_specs: Mapping[str, Mapping[str, Any]]) -> list[agg.GateResult]: ...


def case_scores(doc: Mapping[str, Any]) -> list[agg.CaseScore]:
    return [agg.CaseScore(c["suite"], c["model"], c["axis"], c["name"], c["higher_is_better"], c["seeds"])
            for c in doc["cases"]]


def recompute(doc: dict[str, Any], axes: Iterable[Deciding],
              outputs: Mapping[significance.CaseKey, significance.SeedOutputs] | None = None,
              settings: significance.Settings = significance.Settings(),
              baseline_outputs: Mapping[significance.CaseKey, significance.SeedOutputs] | None = None
              ) -> list[agg.GateResult]:
    """Fill ``aggregates`` (with intervals), comparisons, slices, the axes' sections and ``gates`` of ``doc``.

    ``axes`` are the registered axes, in order. Gate specs come from the document's ``suites`` (the
    regression tolerance already resolved), the reference from its ``baseline``; ``outputs`` are the cases' per-example outputs (see
    ``results.significance``): without them there are no intervals and no comparisons. With the
    baseline's outputs too, the regression gates test each case paired on the same examples.
    """
    scores = case_scores(doc)
    doc["aggregates"] = [dataclasses.asdict(a) for a in agg.aggregate(scores)]
    specs = {s["name"]: s.get("gates") or {} for s in doc.get("suites") or []}
    measured = significance.annotate(doc, outputs or {}, settings, specs)
    slicing.annotate(doc, outputs or {})
    gates = agg.suite_gates(scores, specs, significance.gate_bounds(doc)) + slicing.gates(doc, specs)
    for axis in axes:
        axis.from_outputs(doc, outputs or {}, settings)
        gates += axis.finish(doc, specs)
    if doc.get("baseline"):
        reference = base.parse(doc["baseline"], doc["baseline"].get("path", "baseline"))
        paired = significance.baseline_tests(doc, measured, baseline_outputs or {}, settings)
        gates += base.regression_gates(scores, reference, base.current_run(doc, paired))
    doc["gates"] = [{key: getattr(g, key) for key in GATE_FIELDS} for g in gates]
    return gates


def merged(docs: Sequence[tuple[str, Mapping[str, Any]]], axes: Sequence[Deciding],
           settings: significance.Settings = significance.Settings()) -> dict[str, Any]:
    """``(name, document)`` pairs (shards, or runs split by seed) joined into one run, its verdict recomputed.

    The per-example outputs beside each named file (``NAME.predictions.npz``, when there) feed the intervals.
    """
    doc = merge.merge(docs, [key for axis in axes for key in axis.document_keys])
    recompute(doc, axes, outputs_beside([name for name, _ in docs]), settings)
    return doc


def outputs_beside(paths: Sequence[str]) -> dict[significance.CaseKey, dict[str, dict[str, Any]]]:
    """The per-example outputs written beside results files, joined by case and seed."""
    found: dict[significance.CaseKey, dict[str, dict[str, Any]]] = {}
    for path in paths:
        for meta, arrays in predictions.read_beside(path):
            key = (meta["suite"], meta["model"], meta["axis"], meta["case"])
            found.setdefault(key, {})[str(meta["seed"])] = {**arrays, "digest": meta["digest"]}
    return found
