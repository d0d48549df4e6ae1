"""What difficulty slices need from the data, for every axis: the column check at collection, and the
examples' token lengths or column slice names (never the column's values) kept beside each item's outputs.

Slicing is no part of the result-cache key (it changes no score): an item reused
from the cache gets the lengths or column values it lacks added to its stored
outputs here, from the data alone, without training anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from flexharness.engine import runner
from flexharness.errors import SuiteError
from flexharness.results import predictions
from flexharness.rules.slices import AGREEMENT, LENGTH, known_names, slice_labels
from flexharness.suite.spec import Case, DatasetSpec, Suite
from flexharness.engine import kinds


def field_of(case: Case) -> str | None:
    """The per-example field a case's slices read; None when they need none (agreement)."""
    if case.slices is None or case.slices.by == AGREEMENT:
        return None
    spec = case.slices
    return predictions.LENGTHS if spec.by == LENGTH else \
        predictions.column_field(spec.by, known_names(spec.by, spec.bins, spec.values, spec.edges))


def check(suite: Suite) -> None:
    """A ``by: COLUMN`` that the case's data does not have fails at collection, at the ``slices`` key."""
    for case in suite.cases:
        if case.slices is None or case.slices.by in (LENGTH, AGREEMENT):
            continue
        columns = _columns(case.dataset)
        if case.slices.by not in columns:
            raise SuiteError(suite.path, case.slices.line, f"{case.slices.key}.by",
                             f"'{case.axis}/{case.name}': dataset '{case.dataset.name}' has no column "
                             f"'{case.slices.by}' {_column_hint(case.dataset, case.slices.by, columns)}; slice "
                             "by a column of the data, or 'by: length' or 'by: agreement'")


def _columns(spec: DatasetSpec) -> list[str]:
    """The columns every split of the source has (a column missing from one split cannot slice its rows)."""

    source = kinds.KINDS.get(spec.kind).load_source(spec)
    found = [set(split.column_names) for split in source.values()]
    return sorted(set.intersection(*found)) if found else []


def _column_hint(spec: DatasetSpec, wanted: str, columns: list[str]) -> str:
    """The columns there are, for a ``disk:`` or ``hub:`` dataset (structure, which an arbitrary file cannot
    fake); a count only for files, whose first line may be anything (docs/security.md)."""
    if spec.disk or spec.hub:
        return f"(it has: {', '.join(columns)})"
    same = any(c.strip().lower() == wanted.strip().lower() for c in columns)
    return (f"({len(columns)} columns in every split, none of that name"
            f"{'; one differs from it only in case or spaces' if same else ''})")


def add_inputs(directory: Path | None, record: dict[str, Any], case: Case, model: str,
               trust_remote_code: bool = False) -> None:
    """Store the lengths or column values the case's slices read beside the item's outputs, if missing.

    Only for evaluation splits whose examples are the case's own (the record's digest matches).
    """
    field, name = field_of(case), record.get("outputs")
    if field is None or directory is None or not isinstance(name, str):
        return
    stored = predictions.load(directory, name)
    if stored is None or all(field in arrays for arrays in stored.values()):
        return
    found = _values(case, model, field, trust_remote_code)
    splits = record.get("splits") or {}
    changed = False
    for split, arrays in stored.items():
        digest, values = found.get(split, (None, None))
        if values is not None and field not in arrays and (splits.get(split) or {}).get("eval_digest") == digest \
                and len(values) == len(arrays["labels"]):
            arrays[field] = values
            changed = True
    if changed:
        predictions.save(directory, name, stored)


def _values(case: Case, model: str, field: str, trust_remote_code: bool) -> dict[str, tuple[str, np.ndarray]]:
    """Per evaluation split of the case: (examples digest, the field's value per example)."""

    config, kind = case.train, kinds.of(case)
    prepared = runner.prepare(case)
    if field == predictions.LENGTHS:
        encoded = runner.encoded_evals(prepared, model, config.max_length, trust_remote_code, kind.key)
        return {split: (runner.examples_digest(examples), kind.example_lengths(tokens))
                for (split, examples), (_, tokens) in zip(prepared.evals, encoded)}
    source = kind.load_source(case.dataset)
    found = {}
    for split, examples in prepared.evals:
        origin = split if split in source else case.dataset.train_split   # a held-out split comes from train
        column = source[origin][case.slices.by]
        found[split] = (runner.examples_digest(examples),
                        slice_labels([column[int(i)] for i in examples.rows], case.slices.values, case.slices.edges))
    return found
