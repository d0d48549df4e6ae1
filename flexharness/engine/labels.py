"""A sequence-classification label column as ids: label names in a stable order, one kind of label per dataset.

Messages give counts, never label values (docs/security.md).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from flexharness.errors import DataError
from flexharness.rules.metrics import REGRESSION
from flexharness.suite.spec import DatasetSpec

Encoder = Callable[[list, str], np.ndarray]   # (raw labels of a split, the split's name) -> ids or values


def label_map(spec: DatasetSpec, split: Any, train_labels: list, kind: str
              ) -> tuple[tuple[str, ...] | None, Encoder]:
    """Label names in a stable order (None for regression), and a function turning raw labels into ids."""
    if kind == REGRESSION:
        def to_float(raw: list, split_name: str) -> np.ndarray:
            try:
                return np.asarray(raw, dtype=np.float32)
            except (TypeError, ValueError):
                raise DataError(f"split '{split_name}': label column '{spec.label}' is not numeric, but the "
                                "case's metric is a regression metric; use a classification metric",
                                *spec.locate("label")) from None
        return None, to_float
    feature = split.features.get(spec.label)
    class_names = getattr(feature, "names", None)
    train_kind = None if class_names else _check_label_kinds(spec, train_labels, spec.train_split, None)
    if spec.label_names:
        names = spec.label_names
    elif class_names:
        names = tuple(class_names)
    else:
        names = tuple(str(v) for v in sorted(set(train_labels), key=_sort_key))
    index = {name: i for i, name in enumerate(names)}

    def to_ids(raw: list, split_name: str) -> np.ndarray:
        if not class_names:
            _check_label_kinds(spec, raw, split_name, train_kind)
        keys = [class_names[v] if class_names and isinstance(v, int) and 0 <= v < len(class_names) else str(v)
                for v in raw]
        unknown = {k for k in keys if k not in index}
        if unknown:
            rows = sum(1 for k in keys if k in unknown)
            raise DataError(f"split '{split_name}': {len(unknown)} label value{'s' if len(unknown) > 1 else ''} "
                            f"({rows} rows) never appear in training, which has {len(names)} labels; filter "
                            "them out with 'where' or list every label in 'label_names'", *spec.locate("label"))
        return np.asarray([index[k] for k in keys], dtype=np.int64)
    return names, to_ids


def _label_kind(value: Any) -> str:
    """A CSV column holding ``0`` and ``negative`` is all strings: ``'0'`` still counts as numeric."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "numeric"
    if not isinstance(value, str):
        return "other"
    try:
        float(value)
    except ValueError:
        return "text"
    return "numeric"


def _check_label_kinds(spec: DatasetSpec, raw: list, split_name: str, expected: str | None) -> str | None:
    """One kind of label per dataset: ``0``/``1`` beside ``negative``/``positive`` would be four classes.

    The message gives counts per kind, never the values (docs/security.md).
    """
    counts: dict[str, int] = {}
    for value in raw:
        kind = _label_kind(value)
        counts[kind] = counts.get(kind, 0) + 1
    found = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    column = f"label column '{spec.label}' of dataset '{spec.name}'"
    if "other" in counts:
        raise DataError(f"split '{split_name}': {column} holds values that are not labels ({found}); a label is "
                        "one text, number or true/false per row", *spec.locate("label"))
    if len(counts) > 1:
        raise DataError(f"split '{split_name}': {column} mixes kinds of labels ({found}); they would count as "
                        "different classes: write every label the same way", *spec.locate("label"))
    kind = next(iter(counts), None)
    if expected and kind and kind != expected:
        raise DataError(f"split '{split_name}': {column} holds {found} labels where training holds {expected} "
                        "ones; write every label the same way in all splits", *spec.locate("label"))
    return kind


def _sort_key(value: Any) -> tuple:
    return (0, float(value), "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0.0, str(value))
