"""Sequence classification and regression: one text (or a pair) per row, one label or value per row.

Today's path behind :class:`TaskKind`: the data, tokenization and batches of
``engine.data`` and ``engine.train``, an ``AutoModelForSequenceClassification``,
cross-entropy (or mean squared error for a regression metric), class
probabilities (or the value) stored per example.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flexharness.engine import data
from flexharness.engine.kinds.base import TaskKind
from flexharness.rules import curves
from flexharness.rules.metrics import CLASSIFICATION, REGRESSION
from flexharness.spec import DatasetSpec, Filter


class SequenceClassification(TaskKind):
    key = "sequence_classification"
    metric_kinds = (CLASSIFICATION, REGRESSION)

    def prepare(self, spec: DatasetSpec, where: tuple[Filter, ...], label_kind: str,
                max_train: int | None, max_eval: int | None) -> data.Prepared:
        return data.prepare(spec, where, label_kind, max_train, max_eval)

    def encode(self, examples: data.Examples, tokenizer: Any, max_length: int) -> data.Encoded:
        return data.encode(examples, tokenizer, max_length)

    def restored(self, arrays: dict[str, np.ndarray], examples: data.Examples, key: str | None) -> data.Encoded:
        return data.Encoded.from_arrays(arrays, examples.labels, key)

    def tokens_problem(self, arrays: Any, examples: data.Examples, vocab_size: int, token_types: bool) -> str | None:
        return data.tokens_problem(arrays, len(examples), vocab_size, token_types)

    def filtered_sizes(self, spec: DatasetSpec, where: tuple[Filter, ...], label_kind: str) -> data.FilteredSizes:
        return data.filtered_sizes(spec, where, label_kind)

    def relabelled(self, other: data.Prepared, label_names: tuple[str, ...] | None, source: str, target: str
                   ) -> data.Examples:
        return data.Examples(other.eval.texts, data.labels_as(other, label_names, source, target), other.eval.rows)

    def host_batch(self, encoded: data.Encoded, indices: np.ndarray, pad_id: int, pin: bool,
                   with_labels: bool) -> dict[str, Any]:
        from flexharness.engine import train

        return train.host_batch(encoded, indices, pad_id, pin, encoded.labels if with_labels else None)

    def loss(self, logits: Any, labels: Any) -> Any:
        from flexharness.engine import train

        return train.loss_of(logits, labels, regression=labels.is_floating_point())

    def row_outputs(self, logits: Any, batch: dict[str, Any]) -> list[np.ndarray]:
        values = logits.float()
        values = values if values.shape[-1] == 1 else values.softmax(-1)   # one output: a regression value
        return list(values.cpu().numpy())

    def majority_score(self, prepared: data.Prepared, metric_names: tuple[str, ...]) -> float:
        return curves.majority_baseline(prepared.train.labels, prepared.eval.labels, metric_names)
