"""One case, end to end: data → tokens → fresh pretrained copy → fine-tune → evaluate → record.

The record is a dict of plain builtins: it travels to the controller through
``report.user_properties`` (and so through pytest-xdist) unchanged.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

from flexharness import data as data_mod
from flexharness import metrics, models, train
from flexharness.suite import Case


@functools.lru_cache(maxsize=16)
def _encoded(case_data: data_mod.Prepared, model_ref: str, max_length: int, trust_remote_code: bool):
    """Tokenize a prepared dataset once per (data, tokenizer, max length), shared by seeds and cases."""
    tokenizer = models.load_tokenizer(model_ref, trust_remote_code)
    return (data_mod.encode(case_data.train, tokenizer, max_length),
            data_mod.encode(case_data.eval, tokenizer, max_length))


@dataclass(frozen=True)
class Inputs:
    """What a case trains and evaluates on, tokenized for one model."""

    prepared: data_mod.Prepared
    train: data_mod.Encoded
    eval: data_mod.Encoded
    pad_id: int
    regression: bool


def case_inputs(case: Case, model_ref: str, trust_remote_code: bool = False) -> Inputs:
    config = case.train
    prepared = data_mod.prepare(case.dataset, case.where, case.kind, config.max_train_samples,
                                config.max_eval_samples)
    train_data, eval_data = _encoded(prepared, model_ref, config.max_length, trust_remote_code)
    tokenizer = models.load_tokenizer(model_ref, trust_remote_code)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Inputs(prepared, train_data, eval_data, pad_id, case.kind == metrics.REGRESSION)


def evaluate(model: Any, case: Case, inputs: Inputs, device: str) -> tuple[float, dict[str, float], float]:
    """(score, per-metric scores, seconds spent predicting) on the case's eval split."""
    start = time.perf_counter()
    predictions = train.predict(model, inputs.eval, case.train.eval_batch_size, device, inputs.pad_id,
                                inputs.regression)
    seconds = time.perf_counter() - start
    score, per_metric = metrics.score(case.metrics, inputs.eval.labels, predictions)
    return score, per_metric, seconds


def run_case(case: Case, model_ref: str, seed: int, device_option: str = "auto",
             trust_remote_code: bool = False, progress: train.ProgressFn | None = None) -> dict[str, Any]:
    """Fine-tune and score ``case`` for one model and seed."""
    inputs = case_inputs(case, model_ref, trust_remote_code)
    device = models.resolve_device(device_option)
    setup_start = time.perf_counter()
    model = models.fresh_model(model_ref, inputs.prepared.num_labels, seed, trust_remote_code)
    setup_seconds = time.perf_counter() - setup_start
    try:
        stats = train.fine_tune(model, inputs.train, case.train, seed, device, inputs.pad_id, inputs.regression,
                                progress)
        score, per_metric, eval_seconds = evaluate(model, case, inputs, device)
    finally:
        del model
        train.release_memory()
    return {
        "score": score, "metrics": per_metric, "seed": seed, "device": device,
        **example_counts(inputs), **train_fields(stats),
        "eval_seconds": round(eval_seconds, 3), "setup_seconds": round(setup_seconds, 3),
    }


def example_counts(inputs: Inputs) -> dict[str, Any]:
    prepared = inputs.prepared
    return {"train_examples": len(prepared.train), "eval_examples": len(prepared.eval),
            "eval_split": prepared.eval_split, "num_labels": prepared.num_labels}


def train_fields(stats: train.TrainStats) -> dict[str, Any]:
    return {"train_seconds": round(stats.seconds, 3), "steps": stats.steps, "final_loss": stats.final_loss,
            "train_tokens": stats.train_tokens}
