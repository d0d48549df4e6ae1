"""Fine-tuned weights kept on disk: a compression case loads its task's fine-tuned model instead of training it
again, in one run, across xdist workers and on a rerun; the scores do not depend on where the model came from."""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from flexharness.axes import load_suite
from flexharness.harness.storage import WEIGHTS_DIR
from flexharness.store.keys import training_recipe, weights_key
from flexharness.engine import compress, models
from flexharness.engine.weights import Kept
from flexharness.suite.spec import Filter

SUITE = """  scores:
    files: {train: CSV}
    label: score
tasks:
  - {name: polarity, dataset: scores, metric: pearson}
compression:
  task: polarity
  methods:
    - {method: magnitude, sparsity: [SPARSITY], when: after, scope: layer}
    - {method: int8}
"""


TRAIN = "train: {epochs: 1, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0]}"


def _suite(csv: Path, sparsity: str = "0.9") -> str:
    """A regression task (a score that moves with every weight) and two compression cases on it."""
    return SUITE.replace("SPARSITY", sparsity).replace("CSV", str(csv))


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """A pytest run as a new process sees it: without the dense models an earlier in-process run memoised."""
    compress._DENSE.clear()
    return pytester.runpytest(*args)


def _records(junit: Path) -> dict[str, dict]:
    """Each item's record by its name (``tasks/polarity[seed0]``...)."""
    records = {}
    for case in ET.parse(junit).iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        if "flex_result" in props:
            records[case.get("name")] = json.loads(props["flex_result"])
    return records


def _kept_files(pytester: pytest.Pytester) -> list[Path]:
    return sorted((pytester.path / ".pytest_cache" / "d" / WEIGHTS_DIR).glob("*.safetensors"))


def _fine_tunes(records: dict[str, dict]) -> int:
    """How many items fine-tuned the task's model: the task's item unless it loaded the weights, and each
    compression item that neither loaded them nor found them in its process."""
    tasks = sum(r.get("weights_reused") is False for name, r in records.items() if name.startswith("tasks/"))
    dense = sum(r["dense_reused"] is False for name, r in records.items() if name.startswith("compression/"))
    return tasks + dense


COMPRESSED = ("score", "compressed_score", "dense_score", "measured_sparsity")


def test_compression_loads_the_tasks_fine_tune_and_scores_alike(pytester: pytest.Pytester, suite_text,
                                                                toy_csv: Path) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(_suite(toy_csv), TRAIN))
    first = _run(pytester, "--junitxml=one.xml")
    first.assert_outcomes(passed=3)
    first.stdout.fnmatch_lines(["dense models of the items run: 0 fine-tuned, 1 loaded from kept weights, "
                                "1 already in memory"])
    loaded = _records(pytester.path / "one.xml")
    assert loaded["tasks/polarity[seed0]"]["weights_reused"] is False
    assert [loaded[f"compression/{n}[seed0]"]["dense_reused"] for n in ("magnitude-after-layer-90", "int8")] == \
        ["disk", "memo"]
    assert _fine_tunes(loaded) == 1
    assert len(_kept_files(pytester)) == 1
    stale = _kept_files(pytester)[0].with_name("stale.safetensors")
    stale.write_bytes(b"from an earlier run")

    # The dense model trained by the compression item itself (its task deselected, the cache cleared).
    second = _run(pytester, "--cache-clear", "-m", "compression", "--junitxml=two.xml", "--flex-json=two.json")
    second.assert_outcomes(passed=2)
    assert [c["dense_from"] for c in json.loads((pytester.path / "two.json").read_text())["cases"]] == \
        [{"trained": 1}, {"memory": 1}]
    trained = _records(pytester.path / "two.xml")
    assert not stale.exists()
    assert [trained[f"compression/{n}[seed0]"]["dense_reused"] for n in ("magnitude-after-layer-90", "int8")] == \
        [False, "memo"]
    for name, record in trained.items():
        assert {k: record[k] for k in COMPRESSED} == {k: loaded[name][k] for k in COMPRESSED}
    assert len(_kept_files(pytester)) == 1   # kept by the compression item, for reruns


def test_one_fine_tune_across_xdist_workers(pytester: pytest.Pytester, suite_text, toy_csv: Path) -> None:
    """Whichever worker starts the fine-tune first keeps it; the other waits for it and loads it."""
    pytester.makefile(".flex.yaml", toy=suite_text(_suite(toy_csv), TRAIN))
    _run(pytester, "-n", "2", "--junitxml=out.xml").assert_outcomes(passed=3)
    records = _records(pytester.path / "out.xml")
    assert len(records) == 3 and _fine_tunes(records) == 1
    assert len(_kept_files(pytester)) == 1


def test_a_new_compression_case_loads_the_weights_on_a_rerun(pytester: pytest.Pytester, suite_text,
                                                             toy_csv: Path) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(_suite(toy_csv, "0.5"), TRAIN))
    _run(pytester).assert_outcomes(passed=3)
    pytester.makefile(".flex.yaml", toy=suite_text(_suite(toy_csv, "0.7"), TRAIN))
    _run(pytester, "--junitxml=rerun.xml").assert_outcomes(passed=3)
    records = _records(pytester.path / "rerun.xml")
    assert records["tasks/polarity[seed0]"]["cached"] is True
    assert records["compression/int8[seed0]"]["cached"] is True
    assert records["compression/magnitude-after-layer-70[seed0]"]["cached"] is False
    assert records["compression/magnitude-after-layer-70[seed0]"]["dense_reused"] == "disk"


def test_damaged_weights_are_trained_again_with_a_warning(pytester: pytest.Pytester, suite_text, toy_csv: Path,
                                                          tiny_model: Path) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(_suite(toy_csv, "0.5"), TRAIN))
    _run(pytester).assert_outcomes(passed=3)
    kept = _kept_files(pytester)[0]
    kept.write_bytes(kept.read_bytes()[:200])
    pytester.makefile(".flex.yaml", toy=suite_text(_suite(toy_csv, "0.7"), TRAIN))
    result = _run(pytester, "--junitxml=rerun.xml")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*DamagedWeightsWarning: kept weights * ignored (*); fine-tuning the model again*"])
    assert _records(pytester.path / "rerun.xml")["compression/magnitude-after-layer-70[seed0]"]["dense_reused"] is False
    assert Kept(kept).load_into(models.fresh_model(str(tiny_model), 1, 0)) is not None   # replaced, whole


def test_the_weights_key_holds_what_changes_the_weights(tmp_path: Path, suite_text, toy_csv: Path,
                                                        tiny_model: Path) -> None:
    path = tmp_path / "toy.flex.yaml"
    path.write_text(suite_text(_suite(toy_csv), TRAIN))
    suite = load_suite(path)
    task, compressed = suite.cases[0], suite.cases[1]
    assert training_recipe(task) == training_recipe(compressed)
    key = weights_key(task, str(tiny_model), 0, "cpu")
    assert key == weights_key(compressed, str(tiny_model), 0, "cpu")
    assert key != weights_key(task, str(tiny_model), 1, "cpu")
    for changed in ({"learning_rate": 1e-3}, {"epochs": 3}, {"max_train_samples": 50}, {"method": "lora"}):
        other = dataclasses.replace(task, train=dataclasses.replace(task.train, **changed))
        assert weights_key(other, str(tiny_model), 0, "cpu") != key, changed
    filtered = dataclasses.replace(task, where=(Filter("label", ("positive", "negative")),))
    assert weights_key(filtered, str(tiny_model), 0, "cpu") != key
    renamed = dataclasses.replace(task, suite="other", name="other", line=99, params=(("x", 1),))
    assert weights_key(renamed, str(tiny_model), 0, "cpu") == key
    for scored_only in ({"max_eval_samples": 7}, {"eval_batch_size": 3}):   # never change what is trained on
        other = dataclasses.replace(task, train=dataclasses.replace(task.train, **scored_only))
        assert weights_key(other, str(tiny_model), 0, "cpu") == key, scored_only


def test_compression_scoring_fewer_rows_still_loads_the_tasks_fine_tune(pytester: pytest.Pytester, suite_text,
                                                                       toy_csv: Path) -> None:
    """A compression section that caps its evaluation rows (as the quickstart does) trains nothing again."""
    fewer = _suite(toy_csv).replace("  task: polarity\n", "  task: polarity\n  train: {max_eval_samples: 20}\n")
    pytester.makefile(".flex.yaml", toy=suite_text(fewer, TRAIN))
    result = _run(pytester, "--junitxml=one.xml")
    result.assert_outcomes(passed=3)
    records = _records(pytester.path / "one.xml")
    assert _fine_tunes(records) == 1
    scored = {name: records[name]["eval_examples"] for name in ("compression/int8[seed0]", "tasks/polarity[seed0]")}
    assert scored["compression/int8[seed0]"] == 20 < scored["tasks/polarity[seed0]"]
