"""Difficulty slices of a results document, from the items' stored per-example outputs.

Each case whose suite asks for ``slices`` gets a ``slices`` entry: per slice its
name, example count and score (the case's metric on those examples, per seed,
then the mean over seeds), and the count-weighted recombination of the slice
scores, which equals the case score for metrics that are means over examples
(``additive``). A pytest run and ``flexharness merge`` both call :func:`annotate`
and :func:`gates` (through ``verdict.recompute``), so both decide alike.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from flexharness.results import predictions
from flexharness.rules import slices as rules
from flexharness.rules.aggregate import GateResult
from flexharness.rules.metrics import predictions_from_outputs, score

CaseKey = tuple[str, str, str, str]
SeedOutputs = Mapping[str, Mapping[str, Any]]     # seed -> {"labels", "outputs", "digest", optional fields}


def specs_of(doc: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(suite, ``AXIS/CASE``) -> ``{"by", "bins"}``, from the document's ``suites``."""
    return {(s["name"], case_id): spec for s in doc.get("suites") or []
            for case_id, spec in (s.get("slices") or {}).items()}


def annotate(doc: dict[str, Any], outputs: Mapping[CaseKey, SeedOutputs]) -> None:
    """Set ``slices`` on every case its suite slices (None on the others)."""
    specs = specs_of(doc)
    for case in doc["cases"]:
        spec = specs.get((case["suite"], f"{case['axis']}/{case['name']}"))
        case["slices"] = _case_slices(doc, case, spec, outputs) if spec else None


def _key(case: Mapping[str, Any]) -> CaseKey:
    return case["suite"], case["model"], case["axis"], case["name"]


def _runs(case: Mapping[str, Any], found: SeedOutputs | None) -> list[Mapping[str, Any]] | None:
    """The outputs of every scored seed, of one set of examples, reproducing the case score; else None."""
    seeds = [seed for seed, value in case["seeds"].items() if value is not None]
    if case["score"] is None or not found or not seeds or any(seed not in found for seed in seeds):
        return None
    runs = [found[seed] for seed in seeds]
    if len({run["digest"] for run in runs}) != 1 or any(len(run["labels"]) == 0 for run in runs):
        return None
    metrics = tuple(case["metric"].split("+"))
    own = [score(metrics, np.asarray(run["labels"]), predictions_from_outputs(np.asarray(run["outputs"])))[0]
           for run in runs]
    if not math.isclose(float(np.mean(own)), case["score"], rel_tol=1e-6, abs_tol=1e-6):
        return None   # the case score is not this metric of these outputs (a retention ratio, say)
    return runs


def _case_slices(doc: Mapping[str, Any], case: Mapping[str, Any], spec: Mapping[str, Any],
                 outputs: Mapping[CaseKey, SeedOutputs]) -> dict[str, Any]:
    by, bins = spec["by"], int(spec.get("bins", 3))
    entry: dict[str, Any] = {"by": by, "bins": bins, **{k: spec[k] for k in ("values", "edges") if spec.get(k)},
                             "additive": rules.additive(case["metric"].split("+")),
                             "recombined": None, "slices": []}
    runs = _runs(case, outputs.get(_key(case)))
    if runs is None:
        return {**entry, "note": f"no per-example outputs that reproduce the case score ({_why_no_runs(case)})"}
    labels = np.asarray(runs[0]["labels"])
    found = _slices(doc, case, spec, runs, outputs)
    if isinstance(found, str):
        return {**entry, "note": found}
    stacked = np.stack([predictions_from_outputs(np.asarray(run["outputs"])) for run in runs])
    rows = rules.scores(case["metric"].split("+"), labels, stacked, found)
    return {**entry, "recombined": rules.recombined(rows), "slices": rows}


def _why_no_runs(case: Mapping[str, Any]) -> str:
    """The one reason that fits the case: a failed seed, a cache entry from before outputs were kept, or a score
    that is not the metric of per-example outputs (a probe's best layer, a retention ratio)."""
    if case["score"] is None or any(value is None for value in case["seeds"].values()):
        return "a seed has no score"
    if case.get("cached"):
        return "its records come from a cache entry that kept no outputs: rerun with --flex-no-cache"
    return "its score is not the metric of one set of per-example outputs"


def _slices(doc: Mapping[str, Any], case: Mapping[str, Any], spec: Mapping[str, Any],
            runs: list[Mapping[str, Any]], outputs: Mapping[CaseKey, SeedOutputs]) -> list[rules.Slice] | str:
    """The case's slices, or why there are none."""
    by, bins = spec["by"], int(spec.get("bins", 3))
    if by == rules.AGREEMENT:
        return rules.agreement_slices(_correct(doc, case, runs[0]["digest"], outputs))
    names = rules.known_names(by, bins, spec.get("values"), spec.get("edges"))
    field = predictions.LENGTHS if by == rules.LENGTH else predictions.column_field(by, names)
    values = runs[0].get(field)
    if values is None or len(values) != len(runs[0]["labels"]):
        what = "token lengths" if by == rules.LENGTH else f"slices of column '{by}'"
        return f"the stored outputs hold no {what} (rerun the case to store them)"
    if by == rules.LENGTH:
        return rules.quantile_slices(np.asarray(values), names)
    return rules.column_slices(np.asarray(values), names)


def _correct(doc: Mapping[str, Any], case: Mapping[str, Any], digest: str,
             outputs: Mapping[CaseKey, SeedOutputs]) -> np.ndarray:
    """Runs × examples: which of the run's models and seeds got each example of this case right."""
    rows = []
    for other in doc["cases"]:
        if (other["suite"], other["axis"], other["name"]) != (case["suite"], case["axis"], case["name"]):
            continue
        for seed, run in (outputs.get(_key(other)) or {}).items():
            if run["digest"] == digest and other["seeds"].get(seed) is not None:
                rows.append(predictions_from_outputs(np.asarray(run["outputs"])) == np.asarray(run["labels"]))
    return np.stack(rows)


def gates(doc: Mapping[str, Any], gate_specs: Mapping[str, Mapping[str, Any]]) -> list[GateResult]:
    """``gates: {slices: {AXIS/CASE: {SLICE: {min: X}}}}`` of every suite, per model."""
    found = []
    for case in doc["cases"]:
        case_id = f"{case['axis']}/{case['name']}"
        floors = ((gate_specs.get(case["suite"]) or {}).get("slices") or {}).get(case_id) or {}
        entry = case.get("slices") or {}
        rows = {row["name"]: row for row in entry.get("slices") or []}
        for name, floor in floors.items():
            note = entry.get("note") or f"the case has no slice '{name}' (its slices: {', '.join(rows) or 'none'})"
            found.append(rules.slice_gate(case["suite"], case["model"], case_id, name, rows.get(name), floor,
                                          case["higher_is_better"], note))
    return found
