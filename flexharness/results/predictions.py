"""Per-example outputs of every item, kept apart from the results JSON so that it stays small.

Each item's outputs (labels and class probabilities, or predicted values, per
evaluation split, and what difficulty slices need: the examples' token lengths
and the values of the columns a suite slices by) live in one ``.npz`` file named by its result-cache key,
beside the cached record; a run copies those of its cases into one file beside
its results JSON (``RESULTS.predictions.npz``), which ``flexharness merge`` and
later analyses read. Only numeric arrays and one JSON index are stored, and they
are read with ``allow_pickle=False``: a results folder from elsewhere cannot run code.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

PerExample = Mapping[str, Mapping[str, np.ndarray]]   # split -> {"labels": ..., "outputs": ..., optional fields}
FIELDS = ("labels", "outputs")     # always there; "lengths" and column fields (see column_field) may be
LENGTHS = "lengths"


def column_field(column: str, names: Sequence[str] = ()) -> str:
    """The field of one column's slice names (under the slices ``names`` a suite gives): hex-encoded, so that any
    column name is a safe array name, and new names in the suite are a new field."""
    return "column:" + "\x00".join((column, *names)).encode("utf-8", "surrogatepass").hex()


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_npz(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of ``path``; None when it is missing or damaged (the statistics are then left out)."""
    try:
        with np.load(path, allow_pickle=False) as found:
            return {name: found[name] for name in found.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def save(directory: Path, name: str, per_example: PerExample) -> None:
    _write_npz(directory / f"{name}.npz",
               {f"{field}/{split}": np.asarray(array) for split, arrays in per_example.items()
                for field, array in arrays.items()})


def load(directory: Path, name: str, fields: Sequence[str] = ()) -> dict[str, dict[str, np.ndarray]] | None:
    """The per-example arrays of ``name`` by split; None when the file is missing or damaged, or a split lacks
    labels, outputs or one of ``fields``."""
    found = _read_npz(directory / f"{name}.npz")
    if found is None:
        return None
    result: dict[str, dict[str, np.ndarray]] = {}
    for key, array in found.items():
        field, _, split = key.partition("/")
        result.setdefault(split, {})[field] = array
    return result if all({*FIELDS, *fields} <= set(arrays) for arrays in result.values()) else None


def beside(results_path: str | Path) -> Path:
    """Where a results file's per-example outputs are written: ``out.json`` → ``out.predictions.npz``."""
    path = Path(results_path)
    return path.with_name(f"{path.stem}.predictions.npz")


def write_beside(results_path: str | Path, entries: Iterable[tuple[dict[str, Any], Mapping[str, np.ndarray]]]) -> Path:
    """One file of ``(meta, {"labels", "outputs", ...})`` entries; meta says suite, model, axis, case, seed,
    digest. Every array field of an entry is kept (lengths and column values too)."""
    arrays: dict[str, np.ndarray] = {}
    index = []
    for number, (meta, fields) in enumerate(entries):
        index.append(meta)
        arrays |= {f"{number}/{field}": np.asarray(value) for field, value in fields.items() if field != "digest"}
    arrays["index"] = np.array(json.dumps(index))
    target = beside(results_path)
    _write_npz(target, arrays)
    return target


def read_beside(results_path: str | Path) -> list[tuple[dict[str, Any], dict[str, np.ndarray]]]:
    """The entries written by :func:`write_beside`; empty when there is no such file. A damaged one (unreadable,
    or entries of the wrong shape) is a :class:`PredictionsWarning`: its intervals and slices are left out."""
    target = beside(results_path)
    if not target.exists():
        return []
    found = _read_npz(target)
    try:
        if found is None or "index" not in found:
            raise ValueError("not a readable .npz file with an index")
        index = json.loads(str(found["index"]))
        entries: list[dict[str, np.ndarray]] = [{} for _ in index]
        for key, array in found.items():
            number, _, field = key.partition("/")
            if field:
                entries[int(number)][field] = array
        for meta, fields in zip(index, entries):
            _check_entry(meta, fields)
        return list(zip(index, entries))
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        warnings.warn(PredictionsWarning(f"per-example outputs {target} ignored ({str(exc)[:120]}); the intervals, "
                                         "paired tests and slices that need them are left out"), stacklevel=2)
        return []


class PredictionsWarning(UserWarning):
    """A results file's ``.predictions.npz`` is damaged; the statistics that need it are left out."""


def _check_entry(meta: Any, fields: Mapping[str, np.ndarray]) -> None:
    """ValueError unless an entry names its case and holds one label and one output row per example."""
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k), str) for k in ("suite", "model", "axis", "case",
                                                                                      "digest")):
        raise ValueError("an entry does not name its suite, model, axis, case and digest")
    if not set(FIELDS) <= set(fields):
        raise ValueError(f"an entry lacks {', '.join(sorted(set(FIELDS) - set(fields)))}")
    labels, outputs = fields["labels"], fields["outputs"]
    if labels.ndim == 0 or outputs.ndim == 0 or len(outputs) != len(labels) \
            or labels.dtype.kind not in "iuf" or outputs.dtype.kind not in "iuf":   # a tagger's rows are sentences
        raise ValueError("labels and outputs are not numeric arrays of one row per example")
