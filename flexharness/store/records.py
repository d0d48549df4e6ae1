"""Stored records: one JSON file per record, found again by its result-cache key.

A file is written to a temporary name and renamed into place, so a run killed at any moment leaves either
the whole record or none: a rerun recomputes only what had not finished. A stored entry must have the shape
a fresh record has; one that does not is recomputed with one warning.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any, Callable

from flexharness.files import RESULTS_LIMIT, read_text
from flexharness.results.io import write_atomic
from flexharness.suite.spec import Planned


class CacheRecordWarning(UserWarning):
    """A cached record was damaged or of the wrong shape, and was recomputed."""


_RECORD_TYPES = {"score": "number", "metrics": "metrics", "seed": "int", "device": "str",
                 "train_examples": "int", "eval_examples": "int"}


def entry_problem(entry: Any, key: str, planned: Planned) -> str | None:
    """What is wrong with a stored entry, or None: a record must have the shape a fresh one has."""
    if not isinstance(entry, dict) or not isinstance(entry.get("record"), dict):
        return "not a record"
    if entry.get("key") != key:
        return "stored under another key"
    record = entry["record"]
    problem = _shape_problem(record, _RECORD_TYPES)
    if problem is None and record["seed"] != planned.seed:
        problem = f"seed {record['seed']} where {planned.seed} was asked"
    if problem is None and len(planned.case.scored_names) > 1:
        splits = record.get("splits")
        names = planned.case.dataset.eval_splits
        if not isinstance(splits, dict) or any(not isinstance(splits.get(n), dict) for n in names):
            problem = f"'splits' does not hold every evaluation split ({', '.join(names)})"
        else:
            problem = next(filter(None, (_shape_problem(splits[n], {k: _RECORD_TYPES[k] for k in
                                                                    ("score", "metrics", "eval_examples")})
                                         for n in names)), None)
    return problem


def _shape_problem(record: dict[str, Any], types: dict[str, str]) -> str | None:
    for name, kind in types.items():
        if name not in record:
            return f"'{name}' is missing"
        if not _CHECKS[kind](record[name]):
            return f"'{name}' is not {_KINDS[kind]}"
    return None


def _number(value: Any) -> bool:
    """A score as a fresh record holds it: null (no score), or any number (NaN too: a metric can give it)."""
    return value is None or isinstance(value, (int, float)) and not isinstance(value, bool)


_CHECKS: dict[str, Callable[[Any], bool]] = {
    "number": _number,
    "metrics": lambda v: isinstance(v, dict) and all(isinstance(k, str) and _number(x) for k, x in v.items()),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "str": lambda v: isinstance(v, str),
}
_KINDS = {"number": "a number or null", "metrics": "a mapping of metric names to numbers", "int": "a count",
          "str": "a string"}


@dataclasses.dataclass(frozen=True)
class Records:
    """One JSON file per record, named by its key."""

    directory: Path

    def get(self, key: str, planned: Planned) -> dict[str, Any] | None:
        """The stored record, or None: absent, or damaged (then one warning, and the item is recomputed)."""
        path = self.directory / f"{key}.json"
        try:
            entry = json.loads(read_text(path, RESULTS_LIMIT))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            problem: str | None = f"unreadable ({type(exc).__name__})"
        else:
            problem = entry_problem(entry, key, planned)
        if problem:
            warnings.warn(CacheRecordWarning(f"result cache: ignored the record {path.name} for "
                                             f"{planned.name}: {problem}; recomputing it"), stacklevel=2)
            return None
        return entry["record"]

    def put(self, key: str, nodeid: str, record: dict[str, Any]) -> None:
        entry = {"key": key, "nodeid": nodeid, "record": record}
        write_atomic(self.directory / f"{key}.json", lambda handle: json.dump(entry, handle, sort_keys=True))
