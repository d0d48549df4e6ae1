"""Token ids and frozen features are computed once and kept on disk: for xdist workers and for later runs."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flexharness.harness.storage import ARRAYS_DIR
from flexharness.harness.collect import RESULT_PROPERTY
from flexharness.engine import diskcache, features, models, runner

FAST = ("train: {epochs: 1, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0], "
        "max_train_samples: 64, max_eval_samples: 32}")
ONE = "tasks:\n  - {name: polarity, dataset: reviews, metric: accuracy}\n"
TWO = ONE + "  - {name: polarity_f1, dataset: reviews, metric: f1}\n"


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """A run as a new process sees it: this process's memory of earlier in-process runs is dropped."""
    runner._tokenized.cache_clear()
    features._features.cache_clear()
    return pytester.runpytest("--junitxml=junit.xml", *args)


def _records(pytester: pytest.Pytester) -> dict[str, dict]:
    """Each item's record, read back from the JUnit XML (the same for plain and xdist runs)."""
    found = {}
    for case in ET.parse(pytester.path / "junit.xml").iter("testcase"):
        for prop in case.iter("property"):
            if prop.get("name") == RESULT_PROPERTY:
                found[case.get("name")] = json.loads(prop.get("value"))
    return found


def _token_files(pytester: pytest.Pytester) -> list[Path]:
    return sorted((pytester.path / ".pytest_cache" / "d" / ARRAYS_DIR / "tokens").glob("*.npz"))


def test_a_later_run_loads_the_tokens_and_a_new_max_length_tokenizes_again(pytester: pytest.Pytester,
                                                                            suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(ONE, train=FAST))
    _run(pytester).assert_outcomes(passed=1)
    first = _records(pytester)["tasks/polarity[seed0]"]
    assert first["tokenize"]["source"] == "computed" and not first["cached"]
    assert len(_token_files(pytester)) == 2   # the training rows and the evaluation rows

    # another learning rate: the result cache misses, the tokens are the same
    pytester.makefile(".flex.yaml", toy=suite_text(ONE, train=FAST.replace("3.0e-3", "1.0e-3")))
    _run(pytester).assert_outcomes(passed=1)
    second = _records(pytester)["tasks/polarity[seed0]"]
    assert second["tokenize"]["source"] == "disk" and not second["cached"]
    assert second["train_tokens"] == first["train_tokens"]
    assert len(_token_files(pytester)) == 2

    pytester.makefile(".flex.yaml", toy=suite_text(ONE, train=FAST.replace("seeds: [0]", "seeds: [0], max_length: 6")))
    _run(pytester).assert_outcomes(passed=1)
    third = _records(pytester)["tasks/polarity[seed0]"]
    assert third["tokenize"]["source"] == "computed"
    assert third["train_tokens"] < first["train_tokens"]
    files = _token_files(pytester)
    assert len(files) == 4
    newest = max(files, key=lambda f: f.stat().st_mtime_ns)
    with np.load(newest, allow_pickle=False) as stored:
        assert np.diff(stored["offsets"]).max() == 6


def test_two_xdist_workers_on_the_same_data_tokenize_once(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(TWO, train=FAST))
    _run(pytester, "-n", "2").assert_outcomes(passed=2)
    sources = sorted(r["tokenize"]["source"] for r in _records(pytester).values())
    assert sources in (["computed", "disk"], ["computed", "memory"])   # memory: both items ran in one worker
    assert len(_token_files(pytester)) == 2


def test_without_a_cache_folder_the_workers_share_a_temporary_one(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(TWO, train=FAST))
    _run(pytester, "-n", "2", "-p", "no:cacheprovider").assert_outcomes(passed=2)
    sources = sorted(r["tokenize"]["source"] for r in _records(pytester).values())
    assert sources in (["computed", "disk"], ["computed", "memory"])


def test_a_damaged_token_file_is_recomputed_with_a_warning(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(ONE, train=FAST))
    _run(pytester).assert_outcomes(passed=1)
    damaged = _token_files(pytester)[0]
    damaged.write_bytes(b"PK\x03\x04 not a whole archive")
    pytester.makefile(".flex.yaml", toy=suite_text(ONE, train=FAST.replace("3.0e-3", "1.0e-3")))
    result = _run(pytester)
    result.assert_outcomes(passed=1)   # pytest's own warnings vary with the checkout: count ours below
    assert result.stdout.str().count("ArrayCacheWarning: array cache: ignored") == 1
    result.stdout.fnmatch_lines([f"*ArrayCacheWarning: array cache: ignored tokens/{damaged.name} (* examples of "
                                 "split *): unreadable (BadZipFile); recomputing it*"])
    assert _records(pytester)["tasks/polarity[seed0]"]["tokenize"]["source"] == "computed"
    with np.load(damaged, allow_pickle=False) as stored:   # written whole again
        assert stored["offsets"][0] == 0


def test_no_cache_keeps_the_arrays_in_memory_only(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(ONE, train=FAST))
    _run(pytester, "--flex-no-cache").assert_outcomes(passed=1)
    assert _records(pytester)["tasks/polarity[seed0]"]["tokenize"]["source"] == "computed"
    assert _token_files(pytester) == []


def test_probe_features_are_kept_across_runs(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(ONE + "probe: {tasks: [polarity]}\n", train=FAST))
    _run(pytester, "-m", "probe").assert_outcomes(passed=1)
    first = _records(pytester)["probe/polarity[seed0]"]
    assert first["features"]["source"] == "computed" and first["tokenize"]["source"] == "computed"

    # other layers: the result cache misses, the features of every layer are on disk
    pytester.makefile(".flex.yaml", toy=suite_text(ONE + "probe: {tasks: [polarity], layers: [1, 2]}\n", train=FAST))
    _run(pytester, "-m", "probe").assert_outcomes(passed=1)
    second = _records(pytester)["probe/polarity[seed0]"]
    assert second["features"]["source"] == "disk" and second["tokenize"]["source"] == "disk"
    assert second["layer_scores"] == first["layer_scores"][1:]
    assert second["forward_seconds"] == first["forward_seconds"]   # the cost of the pass that made them


def _square(values: np.ndarray, log: Path) -> dict[str, np.ndarray]:
    with log.open("a") as handle:
        handle.write("computed\n")
    return {"squares": values ** 2}


def _fetch_in_another_process(directory: str, log: str, start: Any) -> None:
    start.wait()
    with diskcache.using(Path(directory)):
        found = diskcache.fetch("demo", "k" * 64, lambda: _square(np.arange(1000), Path(log)), lambda a: None,
                                "squares")
    assert (found.arrays["squares"] == np.arange(1000) ** 2).all()


def test_two_processes_asking_at_once_compute_once(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    start, log = context.Event(), tmp_path / "log.txt"
    workers = [context.Process(target=_fetch_in_another_process, args=(str(tmp_path), str(log), start))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    assert log.read_text() == "computed\n"


@pytest.mark.parametrize("stored, problem", [
    ({"squares": np.arange(3)}, "wrong size"),
    ({"other": np.arange(5)}, "holds other"),
], ids=["wrong-size", "wrong-names"])
def test_a_stored_file_of_the_wrong_shape_is_recomputed(tmp_path: Path, stored: dict, problem: str) -> None:
    def check(arrays: dict) -> str | None:
        if set(arrays) != {"squares"}:
            return f"holds {', '.join(arrays)}"
        return None if arrays["squares"].shape == (5,) else "wrong size"

    with diskcache.using(tmp_path):
        key = diskcache.key_of(["squares", 5])
        diskcache._save(tmp_path / "demo" / f"{key}.npz", key, stored)
        with pytest.warns(diskcache.ArrayCacheWarning, match=f"demo/{key}.npz \\(squares\\): {problem}"):
            found = diskcache.fetch("demo", key, lambda: {"squares": np.arange(5) ** 2}, check, "squares")
        assert found.source == "computed"
        assert diskcache.fetch("demo", key, lambda: {}, check, "squares").source == "disk"


def test_a_file_stored_under_another_key_is_not_believed(tmp_path: Path) -> None:
    with diskcache.using(tmp_path):
        key = diskcache.key_of("a")
        diskcache._save(tmp_path / "demo" / f"{key}.npz", diskcache.key_of("b"), {"x": np.zeros(2)})
        with pytest.warns(diskcache.ArrayCacheWarning, match="stored under another key"):
            assert diskcache.fetch("demo", key, lambda: {"x": np.ones(2)}, lambda a: None, "x").source == "computed"


def test_the_tokenizer_is_keyed_by_its_vocabulary_not_its_name(tiny_model: Path, tmp_path: Path) -> None:
    copy, changed = tmp_path / "copy", tmp_path / "changed"
    shutil.copytree(tiny_model, copy)
    shutil.copytree(tiny_model, changed)
    definition = json.loads((changed / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = definition["model"]["vocab"]
    first, second = sorted(vocab, key=vocab.get)[5:7]
    vocab[first], vocab[second] = vocab[second], vocab[first]   # same name and size, other ids
    (changed / "tokenizer.json").write_text(json.dumps(definition), encoding="utf-8")
    prints = {name: models.tokenizer_fingerprint(models.load_tokenizer(str(path)))
              for name, path in (("model", tiny_model), ("copy", copy), ("changed", changed))}
    assert prints["copy"] == prints["model"]
    assert prints["changed"] != prints["model"]
