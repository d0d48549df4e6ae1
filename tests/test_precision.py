"""Precision (auto | fp32 | bf16), the loss checked every N steps, and the cache keys that must survive both."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from flexharness.harness.storage import RESULTS_DIR
from flexharness.store.keys import canonical_case, digest
from flexharness.engine import models, train
from flexharness.errors import TrainingError
from flexharness.suite.spec import Case, DatasetSpec, TrainConfig
from test_train import RECIPE, toy_split

# digest(canonical_case(OLD_CASE)) computed by the code before 'precision' existed (commit b2b590a)
OLD_CASE = Case(suite="s", axis="tasks", name="t", dataset=DatasetSpec(name="d", files=(("train", "x.csv"),)),
                metrics=("accuracy",), train=TrainConfig(epochs=2, seeds=(0, 1)))
OLD_KEY = "09b46b6ba9029c94c965171ba1f6298af39a644f0096f66b8314e9fde77716ac"


def test_cache_keys_made_before_precision_existed_still_match_at_its_default() -> None:
    assert digest(canonical_case(OLD_CASE)) == OLD_KEY
    for precision in ("fp32", "bf16"):
        changed = replace(OLD_CASE, train=replace(OLD_CASE.train, precision=precision))
        assert digest(canonical_case(changed)) != OLD_KEY


@pytest.mark.parametrize("asked, device, native, used", [
    ("auto", "cpu", True, "fp32"), ("auto", "cpu", False, "fp32"), ("auto", "cuda", False, "bf16"),
    ("fp32", "cuda", True, "fp32"), ("fp32", "cpu", True, "fp32"),
    ("bf16", "cpu", True, "bf16"), ("bf16", "cuda", False, "bf16"),
])
def test_precision_resolution(monkeypatch: pytest.MonkeyPatch, asked: str, device: str, native: bool,
                              used: str) -> None:
    monkeypatch.setattr(train, "cpu_has_native_bf16", lambda: native)
    assert train.resolve_precision(asked, device) == used


@pytest.mark.parametrize("measured, native, used", [(True, True, "bf16"), (True, False, "fp32"),
                                                     (False, True, "fp32")])
def test_auto_takes_bf16_on_a_cpu_only_where_the_measured_rule_held_and_the_cpu_has_it(
        monkeypatch: pytest.MonkeyPatch, measured: bool, native: bool, used: str) -> None:
    monkeypatch.setattr(train, "CPU_AUTO_BF16", measured)
    monkeypatch.setattr(train, "cpu_has_native_bf16", lambda: native)
    assert train.resolve_precision("auto", "cpu") == used


def test_bf16_on_a_cpu_without_native_bf16_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(RuntimeWarning, match=r"no native bf16 instructions .*running in fp32") as caught:
        assert train.resolve_precision("bf16", "cpu") == "fp32"
    assert len(caught) == 1


def _output_dtypes(model: torch.nn.Module) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    model.bert.encoder.layer[0].attention.self.query.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    return seen


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_bf16_trains_under_cpu_autocast_and_says_so(tiny_model: Path, monkeypatch: pytest.MonkeyPatch,
                                                    precision: str, dtype: torch.dtype) -> None:
    monkeypatch.setattr(train, "cpu_has_native_bf16", lambda: True)  # the emulated path is slow, not wrong
    train_set, eval_set = toy_split(tiny_model, 64)
    model = models.fresh_model(str(tiny_model), 2, 0)
    seen = _output_dtypes(model)
    config = TrainConfig(epochs=1, learning_rate=3e-3, batch_size=16, precision=precision)
    stats = train.fine_tune(model, train_set, config, 0, "cpu", 0, regression=False)
    assert stats.precision == precision and seen and set(seen) == {dtype}
    train.predict(model, eval_set, 64, "cpu", 0, regression=False, precision=precision)
    assert seen[-1] == dtype
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: fp32 master weights


def _poison_at(model: torch.nn.Module, bad_step: int, steps: list[int]):
    def progress(event: dict) -> None:
        steps.append(event["step"])
        if event["step"] == bad_step - 1:  # the next forward pass returns nan
            with torch.no_grad():
                model.classifier.weight.fill_(float("nan"))
    return progress


@pytest.mark.parametrize("check_every, bad_step, last_progress", [(20, 6, 17), (4, 10, 11), (1, 3, 2)])
def test_divergence_names_the_first_bad_step_though_the_loss_is_checked_every_n_steps(
        tiny_model: Path, monkeypatch: pytest.MonkeyPatch, check_every: int, bad_step: int, last_progress: int) -> None:
    """Found at the first check at or after the bad step (or at the last step, 18, before its progress event),
    named by the bad step."""
    monkeypatch.setattr(train, "LOSS_CHECK_STEPS", check_every)
    train_set, _ = toy_split(tiny_model, 64)  # 48 examples, batches of 16: 3 steps per epoch, 18 in all
    model = models.fresh_model(str(tiny_model), 2, 0)
    steps: list[int] = []
    with pytest.raises(TrainingError, match=rf"loss is nan at step {bad_step} \(epoch {(bad_step - 1) // 3 + 1},"):
        train.fine_tune(model, train_set, RECIPE, 0, "cpu", 0, regression=False,
                        progress=_poison_at(model, bad_step, steps))
    assert max(steps) == last_progress


def test_progress_reports_the_loss_of_the_last_check(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train, "LOSS_CHECK_STEPS", 5)
    train_set, _ = toy_split(tiny_model, 64)
    events: list[dict] = []
    stats = train.fine_tune(models.fresh_model(str(tiny_model), 2, 0), train_set, RECIPE, 0, "cpu", 0,
                            regression=False, progress=events.append)
    losses = [e["loss"] for e in events]
    assert all(loss != loss for loss in losses[:4])  # nan until the first check
    assert losses[4] == losses[8] and losses[9] != losses[8] and stats.final_loss > 0


def test_batches_prepared_ahead_on_a_thread_come_in_order_and_pass_errors_on() -> None:
    batches = [np.array([i]) for i in range(7)]
    made: list[int] = []

    def make(indices: np.ndarray) -> dict:
        made.append(int(indices[0]))
        if indices[0] == 5:
            raise ValueError("bad batch 5")
        return {"i": int(indices[0])}

    ahead = train.prepared_ahead(make, batches, "cuda")  # the thread path; make itself needs no GPU
    assert [next(ahead)["i"] for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="bad batch 5"):
        next(ahead)
    assert made == [0, 1, 2, 3, 4, 5]  # nothing after the error
    early = train.prepared_ahead(make, batches[:3], "cuda")
    assert next(early) == {"i": 0}
    early.close()  # a run that stops early (divergence) stops the thread too
    assert not any(t.name == "flexharness-batches" for t in threading.enumerate())


def test_precision_option_reaches_every_record(pytester: pytest.Pytester, suite_text) -> None:
    body = "tasks:\n  - {name: polarity, dataset: reviews, metric: accuracy}\n"
    pytester.makefile(".flex.yaml", toy=suite_text(body).replace("seeds: [0]", "seeds: [0], max_train_samples: 48"))
    result = pytester.runpytest("--flex-precision=bf16", "-W", "always::RuntimeWarning")
    result.assert_outcomes(passed=1)
    native = train.cpu_has_native_bf16()
    if not native:
        result.stdout.fnmatch_lines(["*precision bf16: this CPU has no native bf16 instructions*running in fp32"])
    auto = pytester.runpytest()  # precision back at its default: another cache key, so another record
    auto.assert_outcomes(passed=1)
    records = [json.loads(p.read_text())["record"]
               for p in (pytester.path / ".pytest_cache" / "d" / RESULTS_DIR).glob("*.json")]
    assert sorted(r["precision"] for r in records) == sorted(["bf16" if native else "fp32", "fp32"])
    assert not any(r["cached"] for r in records)
