"""One item fine-tuned by two processes (DDP or FSDP, gloo on CPU, torch's launcher): the same steps as one
process, one record per item, and shards of such items merge like any other."""

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


def _records(pytester: pytest.Pytester) -> list[dict]:
    return [json.loads(p.read_text())["record"]
            for p in (pytester.path / ".pytest_cache" / "d" / "flexharness-results").glob("*.json")]


def test_ddp_and_fsdp_items_take_one_process_steps_and_their_shards_merge(pytester: pytest.Pytester, suite_text,
                                                                          still_model: Path) -> None:
    """t0 over two DDP processes, t1 over two FSDP shards, each alone on a shard; the plain suite is the reference."""
    parallel = ("tasks:\n  - {name: t0, dataset: reviews, metric: accuracy, train: {devices: 2}}\n"
                "  - {name: t1, dataset: reviews, metric: accuracy, train: {devices: 2, parallel: fsdp}}\n")
    pytester.makefile(".flex.yaml", one=suite_text(TWO, train=TRAIN).replace("suite: toy", "suite: one"),
                      many=suite_text(parallel, train=TRAIN).replace("suite: toy", "suite: many"))
    model = f"--model={still_model}"
    single = pytester.runpytest("one.flex.yaml", model, "-p", "no:cacheprovider", "--flex-json=one.json")
    single.assert_outcomes(passed=2)
    for k in (1, 2):
        pytester.runpytest("many.flex.yaml", model, f"--flex-shard={k}/2",
                           f"--flex-json=s{k}.json").assert_outcomes(passed=1, deselected=1)
    assert sorted(str((r["devices"], r["parallel"])) for r in _records(pytester)) == ["(2, 'ddp')", "(2, 'fsdp')"]
    assert main(["merge", str(pytester.path / "s1.json"), str(pytester.path / "s2.json"),
                 "-o", str(pytester.path / "merged.json")]) == 0   # one item, one record: shards merge as ever
    merged = {c["name"]: c for c in json.loads((pytester.path / "merged.json").read_text())["cases"]}
    for single in json.loads((pytester.path / "one.json").read_text())["cases"]:
        assert merged[single["name"]]["seeds"]["0"] == pytest.approx(single["seeds"]["0"], abs=1e-6)
    again = pytester.runpytest("many.flex.yaml", model, "--flex-shard=1/2", "--flex-json=again.json")
    again.assert_outcomes(passed=1, deselected=1)
    assert json.loads((pytester.path / "again.json").read_text())["cases"][0]["cached"] is True   # no launch


def test_fsdp_is_refused_for_methods_that_train_few_weights(pytester: pytest.Pytester, suite_text) -> None:
    lora = TRAIN.replace("seeds: [0]", "seeds: [0], parallel: fsdp, method: lora")
    pytester.makefile(".flex.yaml", toy=suite_text(TWO, train=lora))
    result = pytester.runpytest("--collect-only")
    result.stdout.fnmatch_lines(["*toy.flex.yaml:3: train.parallel: 'parallel: fsdp' shards the weights that "
                                 "'method: full' trains; 'method: lora' trains few of them*"])


def test_a_failed_launch_says_which_process_failed_and_why(tmp_path: Path) -> None:
    from flexharness.engine.distributed import _launch
    from flexharness.errors import TrainingError

    failed = r"over 2 processes failed \(exit 1\):\nrank 0: FileNotFoundError: .*job\.pt"
    with pytest.raises(TrainingError, match=failed):
        _launch(tmp_path, 2, "cpu")   # no job file: every process fails to read it
