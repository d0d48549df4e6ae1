"""One item fine-tuned by two processes (DDP, gloo on CPU, torch's launcher): the same steps as one process,
one record per item, and shards of such items merge like any other."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flexharness.cli import main
from flexharness.engine.distributed import Parallel
from toy import build_tiny_bert

TRAIN = ("train: {epochs: 2, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0], "
         "max_train_samples: 120, max_eval_samples: 64}")
TWO = "tasks:\n" + "".join(f"  - {{name: t{i}, dataset: reviews, metric: accuracy}}\n" for i in range(2))


def test_each_rank_takes_its_rows_and_the_weights_make_the_whole_batch_mean() -> None:
    batch = np.arange(7)
    parts = [Parallel(rank, 3, rank).share(batch) for rank in range(3)]
    assert sorted(np.concatenate([rows for rows, _ in parts]).tolist()) == list(range(7))
    losses = np.random.default_rng(0).random(7)   # DDP averages the ranks' gradients: the whole batch's mean
    assert sum(weight * losses[rows].mean() for rows, weight in parts) / 3 == pytest.approx(losses.mean())
    rows, weight = Parallel(2, 3, 2).share(np.arange(2))   # a last batch smaller than the world
    assert rows.tolist() == [0] and weight == 0.0


@pytest.fixture(scope="module")
def still_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT without dropout: two processes then take exactly one process's steps."""
    return build_tiny_bert(tmp_path_factory.mktemp("still-bert"), dropout=0.0)


def _seed_scores(doc: dict) -> list[tuple]:
    return [(c["id"], c["seeds"]) for c in doc["cases"]]


def test_two_process_ddp_matches_one_process_and_its_shards_merge(pytester: pytest.Pytester, suite_text,
                                                                 still_model: Path) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(TWO, train=TRAIN))
    model = f"--model={still_model}"
    pytester.runpytest(model, "-p", "no:cacheprovider", "--flex-json=one.json").assert_outcomes(passed=2)
    one = json.loads((pytester.path / "one.json").read_text())
    for k in (1, 2):
        pytester.runpytest(model, "--flex-devices-per-item=2", f"--flex-shard={k}/2",
                           f"--flex-json=s{k}.json").assert_outcomes(passed=1, deselected=1)
    records = [json.loads(p.read_text())["record"]
               for p in (pytester.path / ".pytest_cache" / "d" / "flexharness-results").glob("*.json")]
    assert len(records) == 2 and all(r["devices"] == 2 for r in records)   # one item, one record
    assert main(["merge", str(pytester.path / "s1.json"), str(pytester.path / "s2.json"),
                 "-o", str(pytester.path / "merged.json")]) == 0
    merged = json.loads((pytester.path / "merged.json").read_text())
    for ddp, single in zip(merged["cases"], one["cases"]):
        assert ddp["id"] == single["id"]
        assert ddp["seeds"]["0"] == pytest.approx(single["seeds"]["0"], abs=1e-6)
    rerun = pytester.runpytest(model, "--flex-devices-per-item=2", "--flex-shard=1/2", "--flex-json=again.json")
    rerun.assert_outcomes(passed=1, deselected=1)
    assert json.loads((pytester.path / "again.json").read_text())["cases"][0]["cached"] is True


def test_fsdp_shards_of_the_model_take_the_steps_of_one_process(pytester: pytest.Pytester, suite_text,
                                                                 still_model: Path) -> None:
    sharded = TRAIN.replace("seeds: [0]", "seeds: [0], parallel: fsdp, devices: 2")
    pytester.makefile(".flex.yaml", one=suite_text(TWO, train=TRAIN).replace("suite: toy", "suite: one"),
                      fsdp=suite_text(TWO, train=sharded).replace("suite: toy", "suite: fsdp"))
    done = pytester.runpytest(f"--model={still_model}", "-k", "t0", "--flex-json=both.json")
    done.assert_outcomes(passed=2, deselected=2)
    records = [json.loads(p.read_text())["record"]
               for p in (pytester.path / ".pytest_cache" / "d" / "flexharness-results").glob("*.json")]
    assert sorted(str((r.get("devices"), r.get("parallel"))) for r in records) == ["(2, 'fsdp')", "(None, None)"]
    one, fsdp = sorted(json.loads((pytester.path / "both.json").read_text())["cases"], key=lambda c: c["suite"])[::-1]
    assert (one["suite"], fsdp["suite"]) == ("one", "fsdp")
    assert fsdp["seeds"]["0"] == pytest.approx(one["seeds"]["0"], abs=1e-6)


def test_fsdp_is_refused_for_methods_that_train_few_weights(pytester: pytest.Pytester, suite_text) -> None:
    lora = TRAIN.replace("seeds: [0]", "seeds: [0], parallel: fsdp, method: lora")
    pytester.makefile(".flex.yaml", toy=suite_text(TWO, train=lora))
    result = pytester.runpytest("--collect-only")
    result.stdout.fnmatch_lines(["*toy.flex.yaml:3: train.parallel: 'parallel: fsdp' shards the weights that "
                                 "'method: full' trains; 'method: lora' trains few of them*"])
