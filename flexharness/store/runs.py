"""The store an item's runs go through: one cached-run path for every axis, the fusion ingredients included.

A run is found by its result-cache key (``store.keys``) with its per-example outputs and, when asked, its
fine-tuned weights; otherwise it is computed, and its record, outputs and weights are stored before it is
returned, so other items, xdist workers and reruns find it. Under ``--flex-no-cache`` (``reuse`` False)
records of earlier runs are not reused, but a run this store computed is: nothing is fine-tuned twice in
one process. The axes see this class through the ``Store`` protocol of ``flexharness.axes.base``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any, Callable

from flexharness.engine.runner import PER_EXAMPLE
from flexharness.engine.weights import STATE, Kept, save_weights, usable
from flexharness.results import predictions
from flexharness.store.keys import KeyedAs, digest, result_key, weights_key
from flexharness.store.records import Records
from flexharness.suite.spec import Case, Planned


@dataclasses.dataclass(frozen=True)
class StoredRun:
    """A run's record (``cached`` says whether it was found), its per-example outputs when stored, and the
    file of its fine-tuned weights when they were asked for."""

    record: dict[str, Any]
    outputs: dict[str, Any] | None = None
    weights: Path | None = None


@dataclasses.dataclass
class ItemStore:
    """Records, per-example outputs and fine-tuned weights in three folders; one instance per process."""

    records: Records
    outputs: Path
    weights: Path
    device: str
    reuse: bool = True
    computed: set[str] = dataclasses.field(default_factory=set)   # keys of the runs this store computed
    kept_here: set[Path] = dataclasses.field(default_factory=set)  # kept weights this store wrote

    def key(self, planned: Planned, keyed_as: KeyedAs = KeyedAs()) -> str | None:
        """The run's result-cache key; None while a hub model is not downloaded yet."""
        return result_key(planned, self.device, keyed_as)[0]

    def run(self, planned: Planned, nodeid: str, compute: Callable[[], dict[str, Any]],
            keyed_as: KeyedAs = KeyedAs(), with_outputs: bool = False, with_weights: bool = False,
            output_fields: tuple[str, ...] = (), weights_at: Path | None = None) -> StoredRun:
        """The stored run when its record (and, as asked, its outputs and weights) are all there; else
        ``compute()``'s, stored first. A computed record may hold ``PER_EXAMPLE`` arrays and, with
        ``with_weights``, the fine-tuned ``STATE``: both are stored apart, never inside the record.
        ``output_fields``: per-example arrays every stored split must hold beside labels and outputs; a run
        stored without them (by a version that did not keep them) is computed again. ``weights_at``: the run
        keeps its weights there itself (a ``Kept`` file of its recipe) instead of in the store's file named by
        its key; a stored run without them is computed again."""
        key, model_print = result_key(planned, self.device, keyed_as)
        with self._claimed(key):
            if key is not None and (self.reuse or key in self.computed):
                found = self._found(key, planned, with_outputs, self._weights(key, with_weights, weights_at),
                                    output_fields)
                if found is not None:
                    return found
            return self._computed(planned, nodeid, compute, keyed_as, key, model_print, with_weights, weights_at)

    def _claimed(self, key: str | None) -> contextlib.AbstractContextManager[Any]:
        """The run's lock while it is looked up and computed: an xdist worker that asks for a run another worker
        is computing (a fusion item and the tasks item of the same run) waits and finds it, instead of
        computing it a second time. The operating system drops the lock of a process that dies."""
        if key is None:
            return contextlib.nullcontext()
        from filelock import FileLock

        return FileLock(str(self.records.directory / f"{key}.lock"))

    def _computed(self, planned: Planned, nodeid: str, compute: Callable[[], dict[str, Any]], keyed_as: KeyedAs,
                  key: str | None, model_print: str | None, with_weights: bool, weights_at: Path | None) -> StoredRun:
        """``compute()``'s run, its outputs and weights stored apart and its record under its key."""
        record = {**compute(), "cached": False, "model_fingerprint": model_print}
        if key is None:  # a hub model is in the local hub cache now
            key, record["model_fingerprint"] = result_key(planned, self.device, keyed_as)
        name = key or digest([nodeid, self.device, planned.seed, model_print])
        per_example, state = record.pop(PER_EXAMPLE, None), record.pop(STATE, None)
        if per_example:
            predictions.save(self.outputs, name, per_example)
            record["outputs"] = name
        weights = self._weights(name, with_weights, weights_at)
        if weights is not None and state is not None:
            save_weights(weights, state)
        if key is not None:
            self.records.put(key, nodeid, record)
            self.computed.add(key)
        return StoredRun(record, per_example, weights)

    def _weights(self, name: str, with_weights: bool, weights_at: Path | None) -> Path | None:
        """Where a run's weights are, when asked: ``weights_at`` where it keeps them itself, else the store's file."""
        return (weights_at or self.weights / f"{name}.safetensors") if with_weights else None

    def _found(self, key: str, planned: Planned, with_outputs: bool, weights: Path | None,
               output_fields: tuple[str, ...]) -> StoredRun | None:
        record = self.records.get(key, planned)
        if record is None:
            return None
        outputs = predictions.load(self.outputs, record["outputs"], output_fields) \
            if with_outputs and record.get("outputs") else None
        if (with_outputs and not outputs) or (weights is not None and not usable(weights, f"run seed {planned.seed}")):
            return None
        return StoredRun({**record, "cached": True}, outputs, weights)

    def kept(self, case: Case, model: str, seed: int) -> Kept | None:
        """Where the fine-tuned weights of ``case``'s training recipe are kept (``weights_key``); None while a
        hub model is not downloaded yet (nothing is kept then)."""
        key = weights_key(case, model, seed, self.device)
        return Kept(self.weights / f"{key}.safetensors", self.reuse, self.kept_here) if key else None
