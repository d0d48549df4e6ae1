"""The :class:`TaskKind` interface: what one type of task (sequence classification, tagging, ...) owns.

A kind is a template (as mteb's ``AbsTask`` is): the suite reader, the engine's
training loop and evaluation (``engine.train``, ``engine.runner``), the cache
and the statistics run the shared loop and call these methods for the kind's
own part: the dataset keys it reads, how rows become examples and token ids,
the ``AutoModelFor...`` class, batches and loss, how logits become stored
per-example outputs, its metrics and its floor. Axes, the loop, the cache and
the reports name no kind; a kind reaches them through one line in
``flexharness.engine.kinds`` (``KINDS``), and suites name it with ``kind:``.

Collection-time methods (``read_dataset``, ``check_case``) read plain data and
must not import torch (``check_data`` may read the data); run-time methods import it lazily.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np

from flexharness.suite.schema import Reader
from flexharness.suite.spec import Case, DatasetSpec, Filter


def local(spec: DatasetSpec) -> bool:
    """Whether reading the dataset needs no hub: files, a ``save_to_disk`` folder, a ``--flex-data-dir`` copy."""
    from flexharness.engine import data
    from flexharness.suite.reader import local_hub

    return not spec.hub or local_hub(spec) is not None or data.mirror_path(spec) is not None and \
        data.mirror_path(spec).is_dir()


class TaskKind:
    """One task kind: its suite keys, data, model class, batches, loss, outputs and metrics."""

    key: ClassVar[str]                                   # the value of a dataset's ``kind:``
    model_class: ClassVar[str] = "AutoModelForSequenceClassification"   # the transformers class it builds
    dataset_keys: ClassVar[tuple[str, ...]] = ()         # dataset keys it reads beside the common ones
    file_formats: ClassVar[dict[str, str]] = {}          # file suffix -> ``format:`` value it reads itself
    metric_kinds: ClassVar[tuple[str, ...]] = ()         # ``rules.metrics.Metric.kind`` values that score it
    no_probe: ClassVar[str | None] = None                # why a linear probe on frozen pooled features is not
                                                         # defined for this kind (the probe axis refuses it)
    ensemble_method: ClassVar[str] = "mean_outputs"      # how :meth:`ensemble` combines runs (in its records)
    ensemble_fields: ClassVar[tuple[str, ...]] = ()      # per-example arrays beside ``outputs`` that
                                                         # :meth:`ensemble` reads (:meth:`ensemble_arrays`)

    # ---- the suite: read at collection, plain data only --------------------------------------------

    def read_dataset(self, reader: Reader) -> tuple[tuple[str, Any], ...]:
        """This kind's own keys of one dataset (``reader`` is ``datasets.NAME``), for ``DatasetSpec.columns``."""
        return ()

    def check_case(self, case: Case) -> str | None:
        """Why ``case`` cannot run with this kind (its metric, axis or method), or None; said at collection.

        The default refuses metrics of other kinds."""
        from flexharness.rules.metrics import METRICS

        wrong = [m for m in case.metrics if METRICS[m].kind not in self.metric_kinds]
        if not wrong:
            return None
        fitting = ", ".join(m for m, spec in METRICS.items() if spec.kind in self.metric_kinds)
        return (f"metric '{wrong[0]}' does not score a {self.key} task (dataset '{case.dataset.name}' is "
                f"'kind: {self.key}'); use one of {fitting}")

    def check_data(self, case: Case) -> None:
        """Collection-time checks that read the data (columns, tags, choices): raise a located ``DataError``.
        Only for data on this machine (:func:`local`): a hub dataset is read, and fails, at run time."""

    # ---- data: rows -> examples -> token ids ----------------------------------------------------

    def load_source(self, spec: DatasetSpec) -> Any:
        """The dataset's raw ``datasets.DatasetDict`` (slices read its other columns)."""
        from flexharness.engine import data

        return data.load_source(spec)

    def filtered_sizes(self, spec: DatasetSpec, where: tuple[Filter, ...], label_kind: str) -> Any:
        """Rows ``where`` keeps, before hold-out and subsampling, as ``data.FilteredSizes`` (the domains axis)."""
        from flexharness.engine import data

        prepared = self.prepare(spec, where, label_kind, None, None)
        held_out = prepared.eval_split not in self.load_source(spec)
        train = len(prepared.train) + (len(prepared.eval) if held_out else 0)
        return data.FilteredSizes(train, None if held_out else min(len(e) for _, e in prepared.evals), 2)

    def relabelled(self, other: Any, label_names: tuple[str, ...] | None, source: str, target: str) -> Any:
        """``other``'s evaluation examples labelled as a model trained with ``label_names`` reads them (a model
        of ``source``, e.g. "domain 'a'", scored on ``target``); a ``DataError`` when it cannot."""
        return other.eval

    def prepare(self, spec: DatasetSpec, where: tuple[Filter, ...], label_kind: str,
                max_train: int | None, max_eval: int | None) -> Any:
        """The case's rows as ``data.Prepared``: filtered, labels mapped, evaluation split chosen, subsampled."""
        raise NotImplementedError

    def encode(self, examples: Any, tokenizer: Any, max_length: int) -> Any:
        """Token ids of ``examples`` (an ``Encoded`` whose rows are what batches hold: texts, windows, items)."""
        raise NotImplementedError

    def encoding_inputs(self, examples: Any) -> dict[str, Any]:
        """What decides :meth:`encode`'s result beside the rows, tokenizer and ``max_length`` (a doc stride):
        part of the disk token cache's key when not empty."""
        return {}

    def stored_arrays(self, encoded: Any) -> dict[str, np.ndarray]:
        """``encoded`` as flat arrays for the disk token cache (``diskcache``); ``Encoded.labels`` hold the labels
        as the metrics read them (a tagger's tag codes per word)."""
        return encoded.arrays()

    def restored(self, arrays: dict[str, np.ndarray], examples: Any, key: str | None) -> Any:
        """The inverse of :meth:`stored_arrays`."""
        raise NotImplementedError

    def tokens_problem(self, arrays: Any, examples: Any, vocab_size: int, token_types: bool) -> str | None:
        """What keeps stored token arrays from being the tokens of ``examples``, or None."""
        raise NotImplementedError

    def num_labels(self, prepared: Any) -> int:
        """The size of the head the model gets (1 for regression and multiple choice)."""
        return prepared.num_labels

    def train_labels(self, examples: Any) -> np.ndarray:
        """One label per row of ``examples`` (sentence, item): what subsampling stratifies and curves count."""
        return examples.labels

    def hold_out_texts(self, examples: Any) -> Any:
        """Each training row's text as this kind's hold-outs group rows (one group stays on one side): None for
        the row's own texts; a QA question's context, a choice item's passage, a sentence's words."""
        return None

    def example_labels(self, examples: Any) -> np.ndarray:
        """The labels of ``examples`` as the metrics read them (what ``Encoded.labels`` holds after encoding)."""
        return examples.labels

    def example_lengths(self, encoded: Any) -> np.ndarray:
        """Tokens per example (a sentence's windows, an item's choices together): slices by length."""
        return np.asarray(encoded.lengths, dtype=np.int64)

    # ---- the model, batches and loss ----------------------------------------------------------

    def host_batch(self, data: Any, indices: np.ndarray, pad_id: int, pin: bool, with_labels: bool) -> dict[str, Any]:
        """Rows ``indices`` of ``data`` as a padded batch of CPU tensors, ``labels`` included when asked."""
        raise NotImplementedError

    def logits(self, output: Any) -> Any:
        """What :meth:`loss` and :meth:`row_outputs` read from a model's output (``output.logits`` for most heads)."""
        return output.logits

    def loss(self, logits: Any, labels: Any) -> Any:
        """The training loss of one batch's logits."""
        raise NotImplementedError

    # ---- outputs and metrics -----------------------------------------------------------------

    def row_outputs(self, logits: Any, batch: dict[str, Any]) -> list[np.ndarray]:
        """One array per row of the batch from its logits (probabilities, predicted ids, ...)."""
        raise NotImplementedError

    def gather(self, data: Any, rows: list[np.ndarray]) -> np.ndarray:
        """The per-example outputs (the ``PER_EXAMPLE`` array stored beside records) from all rows' arrays."""
        return np.stack(rows) if rows else np.empty((0, 1), dtype=np.float32)

    def ensemble_arrays(self, data: Any, rows: list[np.ndarray]) -> dict[str, np.ndarray]:
        """The per-example arrays of one split of a run that an output ensemble combines: ``outputs`` and the
        :attr:`ensemble_fields`. The default keeps the outputs alone; a kind that keeps more makes its outputs
        from what it keeps, so that an ensemble of one run is that run."""
        return {"outputs": self.gather(data, rows)}

    def ensemble(self, runs: list[Mapping[str, np.ndarray]], data: Any) -> np.ndarray:
        """The outputs of an output ensemble of several runs from their :meth:`ensemble_arrays` of one split;
        ``data`` is the split's encoded rows when the kind has :attr:`ensemble_fields`, else None. The default
        is the mean of the runs' probabilities (or values)."""
        return np.mean(np.stack([r["outputs"].astype(np.float64) for r in runs]), axis=0).astype(np.float32)

    def score(self, metric_names: tuple[str, ...], labels: np.ndarray, outputs: np.ndarray
              ) -> tuple[float, dict[str, float]]:
        """(case score, per-metric scores) from stored labels and outputs: the statistics recompute the same."""
        from flexharness.rules import metrics

        return metrics.score_outputs(metric_names, labels, outputs)

    def majority_score(self, prepared: Any, metric_names: tuple[str, ...]) -> float:
        """The score of a model that learnt only the label prior: the floor a failed run does not beat."""
        raise NotImplementedError
