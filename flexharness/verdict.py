"""The verdict of a results document: aggregates, the axes' own sections and every gate, from the document alone.

A pytest run and ``flexharness merge`` both call :func:`recompute`, so N
merged shards decide exactly what one unsharded run decides.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from flexharness.axes import AXES
from flexharness.results import merge
from flexharness.rules import aggregate as agg
from flexharness.rules import baseline as base

GATE_FIELDS = ("name", "suite", "model", "passed", "value", "threshold", "message")


def case_scores(doc: Mapping[str, Any]) -> list[agg.CaseScore]:
    return [agg.CaseScore(c["suite"], c["model"], c["axis"], c["name"], c["higher_is_better"], c["seeds"])
            for c in doc["cases"]]


def recompute(doc: dict[str, Any]) -> list[agg.GateResult]:
    """Fill ``aggregates``, the axes' sections and ``gates`` of ``doc``; return the gates.

    Gate specs come from the document's ``suites`` (the regression tolerance already resolved), the
    reference from its ``baseline``.
    """
    scores = case_scores(doc)
    doc["aggregates"] = [dataclasses.asdict(a) for a in agg.aggregate(scores)]
    specs = {s["name"]: s.get("gates") or {} for s in doc.get("suites") or []}
    gates = agg.suite_gates(scores, specs)
    for axis in AXES:
        gates += axis.finish(doc, specs)
    if doc.get("baseline"):
        reference = base.parse(doc["baseline"], doc["baseline"].get("path", "baseline"))
        gates += base.regression_gates(scores, reference, base.current_run(doc))
    doc["gates"] = [{key: getattr(g, key) for key in GATE_FIELDS} for g in gates]
    return gates


def merged(docs: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """``(name, document)`` pairs (shards, or runs split by seed) joined into one run, its verdict recomputed."""
    doc = merge.merge(docs, [key for axis in AXES for key in axis.document_keys])
    recompute(doc)
    return doc
