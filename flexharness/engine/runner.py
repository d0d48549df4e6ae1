"""One case, end to end: data → tokens → fresh pretrained copy → fine-tune → evaluate → record.

The record is a dict of plain builtins: it travels to the controller through
``report.user_properties`` (and so through pytest-xdist) unchanged.
"""

from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from flexharness.engine import data as data_mod
from flexharness.engine import diskcache, kinds, models, train
from flexharness.rules import calibration, metrics
from flexharness.errors import DataError
from flexharness.engine.faults import OutOfMemoryAsFailure
from flexharness.suite.resources import position_limit
from flexharness.engine.weights import Kept
from flexharness.suite.spec import Case, TrainConfig


@dataclass(frozen=True)
class Tokenized:
    """A prepared dataset's token ids, and where they came from (``diskcache``: computed, disk or memory)."""

    train: data_mod.Encoded
    evals: tuple[tuple[str, data_mod.Encoded], ...]
    source: str
    seconds: float

    def fields(self) -> dict[str, Any]:
        """The record's ``tokenize`` entry: a run that tokenized a dataset once says so once."""
        return {"source": self.source, "seconds": round(self.seconds, 3)}


@functools.lru_cache(maxsize=16)
def _tokenized(case_data: data_mod.Prepared, model_ref: str, max_length: int, trust_remote_code: bool,
               kind_key: str = kinds.DEFAULT) -> Tokenized:
    """Tokenize a prepared dataset once per (data, tokenizer, max length): in this process for seeds and
    cases, on disk (``diskcache``) for other xdist workers and later runs. The task kind ``kind_key`` encodes
    (a kind other than the default is part of the disk key).

    Never longer than a local model's position table: the default ``max_length`` may exceed a small
    model's (a written one that does is refused at collection).
    """
    kind = kinds.KINDS.get(kind_key)
    tokenizer = models.load_tokenizer(model_ref, trust_remote_code)
    max_length = min(max_length, position_limit(models.resolve_model(model_ref)) or max_length)
    identity = models.tokenizer_fingerprint(tokenizer)
    token_types = "token_type_ids" in tokenizer.model_input_names
    splits = [("train", case_data.train), *case_data.evals]
    done = []
    for name, examples in splits:
        key = diskcache.key_of({"kind": "tokens", "format": 1, "data": examples_digest(examples),
                                "tokenizer": identity, "max_length": max_length,
                                **({"task_kind": kind_key} if kind_key != kinds.DEFAULT else {}),
                                **kind.encoding_inputs(examples)})
        fetched = diskcache.fetch(
            "tokens", key, lambda: kind.stored_arrays(kind.encode(examples, tokenizer, max_length)),
            lambda arrays: kind.tokens_problem(arrays, examples, len(tokenizer), token_types),
            f"{len(examples)} examples of split '{name}' for {model_ref} (max_length {max_length})")
        done.append((name, kind.restored(fetched.arrays, examples, key), fetched))
    source = diskcache.COMPUTED if any(f.source == diskcache.COMPUTED for *_, f in done) else diskcache.DISK
    return Tokenized(done[0][1], tuple((name, encoded) for name, encoded, _ in done[1:]), source,
                     sum(f.seconds for *_, f in done))


def _encoded(case_data: data_mod.Prepared, model_ref: str, max_length: int, trust_remote_code: bool,
             kind_key: str = kinds.DEFAULT) -> Tokenized:
    """:func:`_tokenized`, saying ``memory`` when this process had tokenized the data already."""
    hits = _tokenized.cache_info().hits
    found = _tokenized(case_data, model_ref, max_length, trust_remote_code, kind_key)
    return replace(found, source=diskcache.MEMORY, seconds=0.0) if _tokenized.cache_info().hits > hits else found


def encoded_evals(prepared: data_mod.Prepared, model_ref: str, max_length: int, trust_remote_code: bool = False,
                  kind_key: str = kinds.DEFAULT) -> tuple[tuple[str, data_mod.Encoded], ...]:
    """The evaluation splits tokenized exactly as a run of the case tokenizes them (shared with it)."""
    return _encoded(prepared, model_ref, max_length, trust_remote_code, kind_key).evals


@dataclass(frozen=True)
class Inputs:
    """What a case trains and evaluates on, tokenized for one model."""

    prepared: data_mod.Prepared
    train: data_mod.Encoded
    evals: tuple[tuple[str, data_mod.Encoded], ...]   # (split, tokens); the first is the case's own
    pad_id: int
    regression: bool
    tokenize: dict[str, Any]                          # ``Tokenized.fields``
    kind: kinds.TaskKind                              # the case's task kind: batches, loss, outputs, metrics

    @property
    def eval(self) -> data_mod.Encoded:
        return self.evals[0][1]


def case_inputs(case: Case, model_ref: str, trust_remote_code: bool = False,
                prepared: data_mod.Prepared | None = None) -> Inputs:
    """The case's data tokenized for one model; ``prepared`` replaces the case's own rows (fusion's ingredients)."""
    config = case.train
    kind = kinds.of(case)
    prepared = prepared if prepared is not None else prepare(case)
    complaint = metrics.unfit(case.metrics, prepared.num_labels)
    if complaint:
        raise DataError(complaint, case.dataset.origin, case.line, "metric")
    tokens = _encoded(prepared, model_ref, config.max_length, trust_remote_code, kind.key)
    tokenizer = models.load_tokenizer(model_ref, trust_remote_code)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Inputs(prepared, tokens.train, tokens.evals, pad_id, case.label_kind == metrics.REGRESSION, tokens.fields(),
                  kind)


def prepare(case: Case) -> data_mod.Prepared:
    """The case's rows, read by its task kind (filtered, split, subsampled)."""
    config = case.train
    return kinds.of(case).prepare(case.dataset, case.where, case.label_kind, config.max_train_samples,
                                  config.max_eval_samples)


def fresh_model(case: Case, inputs: Inputs, model_ref: str, seed: int, trust_remote_code: bool = False) -> Any:
    """A pretrained copy with the case's kind's head for its labels, the head seeded from ``seed``."""
    return models.fresh_model(model_ref, inputs.kind.num_labels(inputs.prepared), seed, trust_remote_code,
                              inputs.kind.model_class, case.train.pooling)


def evaluate(model: Any, case: Case, inputs: Inputs, device: str) -> tuple[float, dict[str, float], float, np.ndarray]:
    """(score, per-metric scores, seconds spent predicting, predictions) on the case's own eval split."""
    start = time.perf_counter()
    outputs = train.predict_outputs(model, inputs.eval, case.train.eval_batch_size, device, inputs.pad_id,
                                    inputs.regression, case.train.precision, inputs.kind)
    seconds = time.perf_counter() - start
    score, per_metric = inputs.kind.score(case.metrics, inputs.eval.labels, outputs)
    return score, per_metric, seconds, metrics.predictions_from_outputs(outputs)


PER_EXAMPLE = "per_example"   # record key of {split: {"labels", "outputs", ...}} arrays; stored apart, never sent on
Predict = Callable[[data_mod.Prepared], Any]
AfterTraining = Callable[[data_mod.Prepared, Predict], dict[str, Any]]
TrainRows = Callable[[np.ndarray], np.ndarray]   # the case's training labels -> the row indices to train on


def run_case(case: Case, model_ref: str, seed: int, device_option: str = "auto",
             trust_remote_code: bool = False, progress: train.ProgressFn | None = None,
             after_training: AfterTraining | None = None, train_rows: TrainRows | None = None,
             kept: Kept | None = None) -> dict[str, Any]:
    """Fine-tune and score ``case`` for one model and seed, on each of its eval splits.

    ``after_training(prepared, predict)`` adds an axis's own fields to the record while the fine-tuned
    model is alive: ``predict`` runs it on another prepared dataset's first evaluation split.
    ``train_rows(labels)`` picks the training rows (the efficiency axis's nested subsets); the record then
    holds them as ``train_indices``, and the evaluation rows stay the case's own. With ``kept`` the fine-tuned
    weights are kept there for another item, or loaded from there when another item trained them
    (``weights_reused: "disk"``; the training fields are then that run's).
    """
    config = case.train
    chosen = train_subset(case, train_rows) if train_rows is not None else None
    inputs = case_inputs(case, model_ref, trust_remote_code, chosen[0] if chosen else None)
    device = models.resolve_device(device_option)
    setup_start = time.perf_counter()
    model = fresh_model(case, inputs, model_ref, seed, trust_remote_code)
    setup_seconds = time.perf_counter() - setup_start

    def predict_on(other: data_mod.Prepared):  # another domain's (first) evaluation split
        encoded = _encoded(other, model_ref, config.max_length, trust_remote_code, inputs.kind.key).evals[0][1]
        return train.predict(model, encoded, config.eval_batch_size, device, inputs.pad_id, inputs.regression,
                             config.precision, inputs.kind)

    try:
        with OutOfMemoryAsFailure(config):
            trained, reused = fine_tune_kept(model, inputs, config, seed, device, progress, kept)
            eval_start = time.perf_counter()
            splits, per_example = score_splits(model, case, inputs, device)
            eval_seconds = time.perf_counter() - eval_start
            extra = after_training(inputs.prepared, predict_on) if after_training else {}
    finally:
        model = None   # the last reference (the closure above shares it), dropped before the memory is released
        train.release_memory()
    first = splits[inputs.prepared.eval_split]
    return {
        "score": first["score"], "metrics": first["metrics"], "seed": seed, "device": device,
        **{name: first[name] for name in calibration.FIELDS if name in first},
        **example_counts(inputs), "splits": splits, **trained, **({"weights_reused": reused} if kept else {}),
        "eval_seconds": round(eval_seconds, 3), "setup_seconds": round(setup_seconds, 3),
        "majority_score": majority_score(case, inputs.prepared),
        "pooling": models.pooling_of(config.pooling, model_ref), **extra,
        **({"train_indices": chosen[1].tolist()} if chosen else {}), PER_EXAMPLE: per_example,
    }


def fine_tune_kept(model: Any, inputs: Inputs, config: TrainConfig, seed: int, device: str,
                   progress: train.ProgressFn | None, kept: Kept | None) -> tuple[dict[str, Any], str | bool]:
    """(training fields of the record, ``"disk"`` or False): fine-tune ``model``, or load into it the weights
    ``kept`` holds for the same recipe, model and seed. A fresh fine-tune is kept there. Both happen under the
    file's lock, so an item that finds another process training this model waits and loads its weights."""
    def fine_tune() -> dict[str, Any]:
        stats = train.fine_tune(model, inputs.train, config, seed, device, inputs.pad_id, inputs.regression, progress,
                                inputs.kind)
        return {"precision": stats.precision, **train_fields(stats)}

    if kept is None:
        return fine_tune(), False
    with kept.claimed():
        loaded = kept.load_into(model)
        if loaded is not None:
            return loaded, "disk"
        fields = fine_tune()
        kept.save(model, fields)
    return fields, False


def train_subset(case: Case, train_rows: TrainRows) -> tuple[data_mod.Prepared, np.ndarray]:
    """The case's prepared data with only the training rows ``train_rows`` picks, and those rows' indices."""
    prepared = prepare(case)
    indices = np.asarray(train_rows(kinds.of(case).train_labels(prepared.train)), dtype=np.int64)
    return data_mod.Prepared(prepared.train.take(indices), prepared.evals, prepared.label_names,
                             prepared.held_out_copies), indices


def score_splits(model: Any, case: Case, inputs: Inputs, device: str,
                 for_ensemble: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """(record ``splits``, ``PER_EXAMPLE`` arrays): the model scored on each evaluation split of ``inputs``.

    ``for_ensemble``: the run is one an output ensemble combines, so each split keeps the kind's
    ``ensemble_arrays`` (QA's start and end logits beside its answers)."""
    kind = inputs.kind
    splits, per_example = {}, {}
    for (name, eval_data), (_, examples) in zip(inputs.evals, inputs.prepared.evals):
        rows = train.predict_rows(model, eval_data, case.train.eval_batch_size, device, inputs.pad_id,
                                  case.train.precision, kind)
        arrays = kind.ensemble_arrays(eval_data, rows) if for_ensemble else {"outputs": kind.gather(eval_data, rows)}
        splits[name] = split_entry(case, eval_data.labels, arrays["outputs"], examples_digest(examples))
        per_example[name] = {"labels": eval_data.labels, **arrays}
    return splits, per_example


def split_entry(case: Case, labels: np.ndarray, outputs: np.ndarray, digest: str) -> dict[str, Any]:
    """One split's entry of a record: score, per-metric scores, calibration (classification: ECE and Brier score
    of the probabilities), size and the examples' digest."""
    score, per_metric = kinds.of(case).score(case.metrics, labels, outputs)
    return {"score": score, "metrics": per_metric, **calibration.of_outputs(labels, outputs),
            "eval_examples": len(labels), "eval_digest": digest}


def examples_digest(examples: data_mod.Examples) -> str:
    """Which examples, in which order: two items may be compared example by example only if these match."""
    content = hashlib.sha256()
    for column in examples.texts:
        content.update("\x1f".join(column).encode("utf-8", "surrogatepass") + b"\x1e")
    content.update(np.ascontiguousarray(examples.labels).tobytes())
    return content.hexdigest()[:16]


def majority_score(case: Case, prepared: data_mod.Prepared) -> float:
    """The case's score for a model that learnt only the label prior: the floor a failed run does not beat."""
    return kinds.of(case).majority_score(prepared, case.metrics)


def example_counts(inputs: Inputs) -> dict[str, Any]:
    """How many examples, and how they were tokenized (``tokenize``: computed, disk or memory, seconds)."""
    prepared = inputs.prepared
    return {"train_examples": len(prepared.train), "eval_examples": len(prepared.eval),
            "eval_split": prepared.eval_split, "num_labels": prepared.num_labels, "tokenize": inputs.tokenize,
            **({"held_out_copies": prepared.held_out_copies} if prepared.held_out_copies is not None else {})}


def train_fields(stats: train.TrainStats) -> dict[str, Any]:
    return {"train_seconds": round(stats.seconds, 3), "steps": stats.steps, "final_loss": stats.final_loss,
            "train_tokens": stats.train_tokens, "train_method": stats.method,
            "trainable_params": stats.trainable_params, "total_params": stats.total_params,
            **({"devices": stats.devices, "parallel": stats.parallel} if stats.devices > 1 else {})}
