"""One case, end to end: data → tokens → fresh pretrained copy → fine-tune → evaluate → record.

The record is a dict of plain builtins: it travels to the controller through
``report.user_properties`` (and so through pytest-xdist) unchanged.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from flexharness import data as data_mod
from flexharness import metrics, models, train
from flexharness.domains import transfer_record
from flexharness.errors import DataError
from flexharness.faults import OutOfMemoryAsFailure
from flexharness.suite import Case


@functools.lru_cache(maxsize=16)
def _encoded(case_data: data_mod.Prepared, model_ref: str, max_length: int, trust_remote_code: bool):
    """Tokenize a prepared dataset once per (data, tokenizer, max length), shared by seeds and cases."""
    tokenizer = models.load_tokenizer(model_ref, trust_remote_code)
    return (data_mod.encode(case_data.train, tokenizer, max_length),
            tuple((name, data_mod.encode(examples, tokenizer, max_length)) for name, examples in case_data.evals))


def run_case(case: Case, model_ref: str, seed: int, device_option: str = "auto",
             trust_remote_code: bool = False, progress: train.ProgressFn | None = None) -> dict[str, Any]:
    """Fine-tune and score ``case`` for one model and seed."""
    config = case.train
    prepared = data_mod.prepare(case.dataset, case.where, case.kind, config.max_train_samples,
                                config.max_eval_samples)
    complaint = metrics.unfit(case.metrics, prepared.num_labels)
    if complaint:
        raise DataError(complaint, case.dataset.origin, case.line, "metric")
    train_data, eval_sets = _encoded(prepared, model_ref, config.max_length, trust_remote_code)
    device = models.resolve_device(device_option)
    tokenizer = models.load_tokenizer(model_ref, trust_remote_code)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    regression = case.kind == metrics.REGRESSION
    setup_start = time.perf_counter()
    model = models.fresh_model(model_ref, prepared.num_labels, seed, trust_remote_code)
    setup_seconds = time.perf_counter() - setup_start

    def predict_on(other: data_mod.Prepared):  # another domain's (first) evaluation split
        encoded = _encoded(other, model_ref, config.max_length, trust_remote_code)[1][0][1]
        return train.predict(model, encoded, config.eval_batch_size, device, pad_id, regression)

    try:
        with OutOfMemoryAsFailure(config):
            stats = train.fine_tune(model, train_data, config, seed, device, pad_id, regression, progress)
            eval_start = time.perf_counter()
            splits = {}
            for name, eval_data in eval_sets:
                predictions = train.predict(model, eval_data, config.eval_batch_size, device, pad_id, regression)
                score, per_metric = metrics.score(case.metrics, eval_data.labels, predictions)
                splits[name] = {"score": score, "metrics": per_metric, "eval_examples": len(eval_data.labels)}
            eval_seconds = time.perf_counter() - eval_start
            extra = transfer_record(case, prepared, predict_on)
    finally:
        del model
        train.release_memory()
    first = splits[prepared.eval_split]
    return {
        "score": first["score"], "metrics": first["metrics"], "seed": seed, "device": device,
        "train_examples": len(prepared.train), "eval_examples": first["eval_examples"],
        "eval_split": prepared.eval_split, "splits": splits, "num_labels": prepared.num_labels,
        "train_seconds": round(stats.seconds, 3), "eval_seconds": round(eval_seconds, 3),
        "setup_seconds": round(setup_seconds, 3), "steps": stats.steps, "final_loss": stats.final_loss,
        "train_tokens": stats.train_tokens, **extra,
    }
