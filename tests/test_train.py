"""The fine-tuning loop on a tiny random-weight BERT: it learns, it is deterministic, it batches well."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flexharness.engine import data, models, train
from flexharness.rules import metrics
from flexharness.suite.spec import TrainConfig
from toy import sentiment_rows

RECIPE = TrainConfig(epochs=6, learning_rate=3e-3, batch_size=16, warmup_ratio=0.0)


def toy_split(tiny_model: Path, n: int = 320) -> tuple[data.Encoded, data.Encoded]:
    rows = sentiment_rows(n, seed=3)
    labels = np.array([int(r["label"] == "positive") for r in rows])
    examples = data.Examples((tuple(r["text"] for r in rows),), labels)
    tokenizer = models.load_tokenizer(str(tiny_model))
    cut = n * 3 // 4
    return (data.encode(examples.take(np.arange(cut)), tokenizer, 32),
            data.encode(examples.take(np.arange(cut, n)), tokenizer, 32))


def run(tiny_model: Path, seed: int) -> float:
    train_set, eval_set = toy_split(tiny_model)
    model = models.fresh_model(str(tiny_model), 2, seed)
    train.fine_tune(model, train_set, RECIPE, seed, "cpu", 0, regression=False)
    predictions = train.predict(model, eval_set, 64, "cpu", 0, regression=False)
    return metrics.METRICS["accuracy"].compute(eval_set.labels, predictions)


def test_tiny_bert_beats_chance_and_is_deterministic(tiny_model: Path) -> None:
    first = run(tiny_model, seed=0)
    assert first > 0.8  # chance is 0.5
    assert run(tiny_model, seed=0) == first


def test_each_case_starts_from_the_pretrained_weights(tiny_model: Path) -> None:
    pretrained = models.fresh_model(str(tiny_model), 2, 0)
    train_set, _ = toy_split(tiny_model, 64)
    train.fine_tune(pretrained, train_set, RECIPE, 0, "cpu", 0, regression=False)
    again = models.fresh_model(str(tiny_model), 2, 0)
    untouched = models.fresh_model(str(tiny_model), 2, 0)
    for (name, a), (_, b) in zip(again.named_parameters(), untouched.named_parameters()):
        assert torch.equal(a, b), name
    encoder = dict(pretrained.named_parameters())["bert.encoder.layer.0.attention.self.query.weight"]
    assert not torch.equal(encoder, dict(again.named_parameters())["bert.encoder.layer.0.attention.self.query.weight"])


def test_seeds_change_only_the_head(tiny_model: Path) -> None:
    a, b = (dict(models.fresh_model(str(tiny_model), 3, seed).named_parameters()) for seed in (0, 1))
    differing = {name for name in a if not torch.equal(a[name], b[name])}
    assert differing == {"classifier.weight"}  # the bias starts at zero for every seed


def test_predictions_come_back_in_the_original_order(tiny_model: Path) -> None:
    _, eval_set = toy_split(tiny_model)
    model = models.fresh_model(str(tiny_model), 2, 0)
    sorted_batches = train.predict(model, eval_set, 7, "cpu", 0, regression=False)
    one_by_one = [train.predict(model, data.Encoded((ids,), None, np.array([len(ids)]), np.array([0])), 1, "cpu", 0,
                                regression=False)[0] for ids in eval_set.input_ids]
    assert sorted_batches.tolist() == one_by_one


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 128), min_size=1, max_size=500), st.integers(1, 64), st.booleans(),
       st.integers(0, 5))
def test_batch_order_covers_every_example_once(lengths: list[int], batch_size: int, grouped: bool, seed: int) -> None:
    batches = train.batch_order(np.array(lengths), batch_size, np.random.default_rng(seed), grouped)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert all(len(b) <= batch_size for b in batches)


def test_length_grouping_cuts_padding() -> None:
    lengths = np.random.default_rng(0).integers(5, 120, size=3200)

    def padded(grouped: bool) -> int:
        batches = train.batch_order(lengths, 32, np.random.default_rng(0), grouped)
        return sum(int(lengths[b].max()) * len(b) for b in batches)

    assert padded(True) < 0.7 * padded(False)


def test_divergence_names_the_step_and_learning_rate(tiny_model: Path) -> None:
    train_set, _ = toy_split(tiny_model, 64)
    model = models.fresh_model(str(tiny_model), 2, 0)
    with torch.no_grad():
        model.classifier.weight.fill_(float("nan"))
    with pytest.raises(Exception, match=r"training diverged: loss is nan at step 1 .*learning rate"):
        train.fine_tune(model, train_set, RECIPE, 0, "cpu", 0, regression=False)


def test_cpu_training_uses_the_fused_adamw_and_keeps_freed_blocks(tiny_model: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Both are what made the CPU step faster (docs/speed.md): one AdamW kernel, no page faults per step."""
    from flexharness.engine import allocator

    model = models.fresh_model(str(tiny_model), 2, 0)
    optimizer, _ = train._optimizer(model, RECIPE, 10)
    assert optimizer.defaults["fused"] is True
    assert not allocator.for_device("cuda")
    for name, value in (("LD_PRELOAD", "libjemalloc.so.2"), ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=1")):
        with monkeypatch.context() as patched:
            patched.setenv(name, value)
            assert allocator.keep_freed_blocks.__wrapped__() is False   # the user's allocator choice stands
    chosen = any(os.environ.get(name) for name in allocator.USER_SETTINGS) or "malloc" in os.environ.get(
        "GLIBC_TUNABLES", "")
    if platform.libc_ver()[0] == "glibc" and not chosen:
        assert allocator.keep_freed_blocks.__wrapped__() is True


@given(warmup=st.integers(0, 50), extra=st.integers(0, 200))
@settings(max_examples=40, deadline=None)
def test_the_schedule_is_transformers_linear_warmup(warmup: int, extra: int) -> None:
    from transformers import get_linear_schedule_with_warmup

    total = warmup + extra
    theirs = get_linear_schedule_with_warmup(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0),
                                             warmup, total).lr_lambdas[0]
    assert [train.linear_warmup(step, warmup, total) for step in range(total + 3)] == \
        [theirs(step) for step in range(total + 3)]
