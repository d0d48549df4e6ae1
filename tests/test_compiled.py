"""Compiled training (engine/compiled.py): bucketed widths that leave the scores alone, and the forward hook.

torch.compile itself is measured by ``benchmarks/bench_finetune.py --compile``: compiling even the tiny
BERT takes longer than this whole file should, so these tests check what decides its correctness instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from flexharness.engine import compiled, models, train
from test_train import RECIPE, toy_split


def test_bucketed_pads_to_the_next_multiple_and_never_past_max_length() -> None:
    batch = {"input_ids": torch.full((2, 17), 7), "attention_mask": torch.ones(2, 17, dtype=torch.long),
             "labels": torch.tensor([0, 1])}
    padded = compiled.bucketed(batch, pad_id=3, max_length=128)
    assert padded["input_ids"].shape == (2, 32)
    assert bool((padded["input_ids"][:, 17:] == 3).all()) and bool((padded["input_ids"][:, :17] == 7).all())
    assert int(padded["attention_mask"].sum()) == 2 * 17
    assert torch.equal(padded["labels"], batch["labels"])
    assert compiled.bucketed(batch, 3, max_length=20)["input_ids"].shape == (2, 20)
    assert compiled.bucketed(batch, 3, max_length=17) is batch


def test_bucketed_batches_give_the_logits_of_unpadded_ones(tiny_model: Path) -> None:
    model = models.fresh_model(str(tiny_model), 2, 0).eval()
    _, eval_set = toy_split(tiny_model, 64)
    batch = train.collate(eval_set, list(range(8)), 0, "cpu")
    with torch.no_grad():
        plain = model(**batch).logits
        padded = model(**compiled.bucketed(batch, 0, 32)).logits
    assert compiled.bucketed(batch, 0, 32)["input_ids"].shape[1] % compiled.BUCKET == 0
    torch.testing.assert_close(padded, plain, rtol=1e-4, atol=1e-5)


def test_fine_tune_calls_the_forward_it_is_given(tiny_model: Path) -> None:
    train_set, eval_set = toy_split(tiny_model, 160)
    widths: list[int] = []

    def forward(model: Any, batch: dict[str, Any]) -> Any:
        batch = compiled.bucketed(batch, 0, 32)
        widths.append(batch["input_ids"].shape[1])
        return model(**batch).logits

    hooked, plain = (models.fresh_model(str(tiny_model), 2, 0) for _ in range(2))
    train.fine_tune(hooked, train_set, RECIPE, 0, "cpu", 0, regression=False, compiled=forward)
    train.fine_tune(plain, train_set, RECIPE, 0, "cpu", 0, regression=False)
    assert widths and all(width % compiled.BUCKET == 0 or width == 32 for width in widths)
    # Adam turns the rounding noise of another width into full-size steps of weights with no real gradient,
    # so the weights drift apart; what the padding must not change is what the model learnt
    hooked_ids, plain_ids = (train.predict(m, eval_set, 64, "cpu", 0, False) for m in (hooked, plain))
    assert np.mean(hooked_ids == plain_ids) >= 0.9
