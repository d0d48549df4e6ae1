"""The stability axis end to end: a learning-rate × seed grid per task, reuse of the tasks items, failure rate,
spread, the expected best score, their gates, and the same verdict after a merge."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexharness.axes import load_suite
from flexharness.errors import SuiteError
from flexharness.rules.curves import expected_best_setting
from toy import failed_testcases

TRAIN = ("train: {epochs: 4, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0], "
         "max_train_samples: 240, max_eval_samples: 64}")
TASKS = "tasks:\n  - {name: polarity, dataset: reviews, metric: accuracy}\n"
# 3e-3 is the tasks recipe (learnt in two epochs); 1e-9 cannot move the random-weight model off chance.
GRID = "stability: {{tasks: [polarity], learning_rates: [3.0e-3, 1.0e-9], seeds: [0, 1], margin: {margin}{extra}}}\n"


def _doc(pytester: pytest.Pytester, name: str = "out.json") -> dict:
    return json.loads((pytester.path / name).read_text())


def _suite(suite_text, extra: str = "", gates: str = "", margin: float = 0.1) -> str:
    return suite_text(TASKS + GRID.format(extra=extra, margin=margin) + gates, TRAIN)


def test_grid_items_reuse_tasks_records_and_the_summary_follows_the_definitions(
        pytester: pytest.Pytester, suite_text) -> None:
    gates = "gates:\n  stability: {failure_rate: {max: 1.0}, spread: {max: 1.0}, p_avg: {min: 0.0}}\n"
    pytester.makefile(".flex.yaml", toy=_suite(suite_text, gates=gates))
    result = pytester.runpytest("-v", "--flex-json=out.json", "--flex-report-dir=report")
    result.assert_outcomes(passed=1 + 4 + 3)
    # the tasks item ran first; the stability item with the same recipe and seed is its record
    result.stdout.fnmatch_lines(["*::tasks/polarity[[]seed0] PASSED*",
                                 "*::stability/polarity@lr=3e-03[[]seed0] PASSED (cached)*",
                                 "stability: toy * polarity, accuracy: majority-class score 0.5000, a run fails at "
                                 "score <= 0.6000",
                                 "lr=3e-03 (best) *", "lr=1e-09 * 2/2",
                                 "expected best of k runs: k=1 *", "PASS*stability/failure_rate.max*"])
    assert result.stdout.str().count("PASSED (cached)") == 1  # another seed or learning rate is another run
    doc = _doc(pytester)
    cases = {c["name"]: c for c in doc["cases"] if c["axis"] == "stability"}
    assert list(cases) == ["polarity@lr=3e-03", "polarity@lr=1e-09"]
    task = next(c for c in doc["cases"] if c["axis"] == "tasks")
    assert cases["polarity@lr=3e-03"]["seeds"]["0"] == task["seeds"]["0"]
    assert cases["polarity@lr=3e-03"]["cached_items"] == 1 and cases["polarity@lr=1e-09"]["cached_items"] == 0
    assert cases["polarity@lr=1e-09"]["setting"] == {"learning_rate": 1e-9}

    (summary,) = doc["stability"]
    runs = [v for c in cases.values() for v in c["seeds"].values()]
    majority = summary["majority_score"]
    assert majority == 0.5  # the toy labels alternate: a balanced evaluation split
    assert summary["failed"] == sum(v <= majority + 0.1 for v in runs) == 2
    assert summary["failure_rate"] == summary["failed"] / 4
    assert [e["failed"] for e in summary["settings"]] == [0, 2]
    means = [c["score"] for c in cases.values()]
    assert summary["best_setting"] == "polarity@lr=3e-03" and summary["best_score"] == max(means)
    assert math.isclose(summary["spread"], max(means) - min(means))
    assert math.isclose(summary["grid_mean"], np.mean(runs))
    curve = summary["expected_max"]
    assert len(curve) == 4 and math.isclose(curve[0], np.mean(runs)) and np.all(np.diff(curve) >= 0)
    assert summary["expected_best_setting"][-1] == max(means)
    (aggregate,) = [a for a in doc["aggregates"] if a["axis"] == "stability"]
    assert math.isclose(aggregate["p_avg"], np.mean(means)) and math.isclose(aggregate["sigma_p"], np.std(means))
    gates = {g["name"]: g for g in doc["gates"]}
    assert gates["stability/failure_rate.max"]["value"] == summary["failure_rate"]
    assert gates["stability/spread.max"]["value"] == summary["spread"]
    (plot,) = (pytester.path / "report").glob("stability-toy-polarity.png")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "### Stability: toy" in (pytester.path / "report" / "summary.md").read_text()

    again = pytester.runpytest("-v", "-m", "stability", "--flex-json=again.json")
    again.assert_outcomes(passed=4 + 3)
    again.stdout.fnmatch_lines(["*::stability/polarity@lr=1e-09[[]seed1] PASSED (cached)*"])
    assert _doc(pytester, "again.json")["stability"] == doc["stability"]


def test_gates_fail_through_gate_testcases_and_a_margin_counts_more_runs_as_failed(
        pytester: pytest.Pytester, suite_text) -> None:
    gates = "gates:\n  stability: {failure_rate: {max: 0.1}, spread: {max: 0.01}}\n"
    pytester.makefile(".flex.yaml", toy=_suite(suite_text, gates=gates, margin=0.6))
    result = pytester.runpytest("-m", "stability", "--junitxml=junit.xml", "--flex-json=out.json")
    result.assert_outcomes(passed=4, failed=2)
    result.stdout.fnmatch_lines(["*a run fails at score <= 1.1000",
                                 "*stability/failure_rate.max: failure_rate = 1.0000 (4 of 4 runs failed: "
                                 "polarity 4/4), required <= 0.1: FAILED",
                                 "*stability/spread.max: spread = * (largest, task polarity; best setting "
                                 "polarity@lr=3e-03), required <= 0.01: FAILED"])
    assert failed_testcases(pytester.path / "junit.xml") == ["gates/stability/failure_rate.max",
                                                             "gates/stability/spread.max"]
    (summary,) = _doc(pytester)["stability"]
    assert summary["margin"] == 0.6 and summary["failed"] == 4 and summary["failure_rate"] == 1.0


def test_a_failed_item_makes_the_gates_incomplete(pytester: pytest.Pytester, suite_text) -> None:
    gates = "gates:\n  stability: {failure_rate: {max: 1.0}, spread: {max: 1.0}}\n"
    pytester.makefile(".flex.yaml", toy=_suite(suite_text, gates=gates))
    pytester.makeconftest("def pytest_runtest_call(item):\n"
                          "    if item.name == 'stability/polarity@lr=1e-09[seed1]':\n"
                          "        raise RuntimeError('boom')\n")
    result = pytester.runpytest("-k", "1e-09", "--flex-json=out.json")
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines(["*failure_rate.max: incomplete: 1 of 2 stability runs have no score*",
                                 "*spread.max: incomplete: 1 of 2 stability runs have no score*"])
    (summary,) = _doc(pytester)["stability"]
    assert summary["missing"] == 1 and summary["spread"] is None and summary["expected_max"] == []
    assert [e["failed"] for e in summary["settings"]] == [None]


def test_shards_merge_into_the_summaries_and_gates_of_one_run(pytester: pytest.Pytester, suite_text) -> None:
    from flexharness.cli import main

    gates = "gates:\n  stability: {failure_rate: {max: 0.1}, spread: {max: 1.0}}\n"
    pytester.makefile(".flex.yaml", toy=_suite(suite_text, gates=gates))
    pytester.runpytest("--flex-json=whole.json").assert_outcomes(passed=5 + 1, failed=1)
    paths = [str(pytester.path / f"shard{k}.json") for k in (1, 2)]
    for k, path in enumerate(paths, start=1):
        pytester.runpytest(f"--flex-shard={k}/2", f"--flex-json={path}")
    assert main(["merge", *paths, "-o", str(pytester.path / "merged.json")]) == 1
    whole, merged = _doc(pytester, "whole.json"), _doc(pytester, "merged.json")
    assert merged["stability"] == whole["stability"]
    assert [(g["name"], g["passed"], g["value"]) for g in merged["gates"]] == \
           [(g["name"], g["passed"], g["value"]) for g in whole["gates"]]


def test_collection_names_one_item_per_task_setting_and_seed(pytester: pytest.Pytester, suite_text) -> None:
    grid = ("stability: {tasks: [polarity, polarity_f1], learning_rates: [1.0e-5, 2.0e-5], epochs: [1, 3], "
            "seeds: [0, 1, 2]}\n")
    text = suite_text(TASKS + "  - {name: polarity_f1, dataset: reviews, metric: f1}\n" + grid, TRAIN)
    pytester.makefile(".flex.yaml", toy=text)
    result = pytester.runpytest("--collect-only", "-q", "-m", "stability")
    result.stdout.fnmatch_lines(["*::stability/polarity@lr=1e-05,ep=1[[]seed0]",
                                 "*::stability/polarity_f1@lr=2e-05,ep=3[[]seed2]",
                                 "24/26 tests collected (2 deselected)*"])
    cases = {c.name: c for c in load_suite(pytester.path / "toy.flex.yaml").cases if c.axis == "stability"}
    assert (cases["polarity@lr=2e-05,ep=3"].train.learning_rate, cases["polarity@lr=2e-05,ep=3"].train.epochs) \
        == (2e-5, 3)
    assert cases["polarity@lr=2e-05,ep=3"].train.batch_size == 16  # the rest of the task's recipe


def test_the_cache_key_is_the_tasks_key_exactly_when_the_recipe_matches(suite_text, tiny_model: Path,
                                                                       tmp_path: Path) -> None:
    from flexharness.cache import result_key
    from flexharness.spec import Planned

    path = tmp_path / "toy.flex.yaml"
    path.write_text(suite_text(TASKS + GRID.format(extra=", batch_sizes: [16, 8]", margin=0), TRAIN))
    cases = {f"{c.axis}/{c.name}": c for c in load_suite(path).cases}

    def key(name: str, seed: int = 0) -> str | None:
        return result_key(Planned(name, cases[name], str(tiny_model), seed), "cpu")[0]

    assert key("tasks/polarity") is not None
    assert key("stability/polarity@lr=3e-03,bs=16") == key("tasks/polarity")
    assert key("stability/polarity@lr=3e-03,bs=16", seed=1) != key("tasks/polarity")
    others = [key(n) for n in ("stability/polarity@lr=3e-03,bs=8", "stability/polarity@lr=1e-09,bs=16")]
    assert len({*others, key("tasks/polarity")}) == 3


@pytest.mark.parametrize("section, message", [
    ("stability: {tasks: [polarty]}\n",
     "toy.flex.yaml:10: stability.tasks: no case named 'polarty' under 'tasks:' (did you mean 'polarity'?)"),
    ("stability: {tasks: [polarity], learning_rate: [1.0e-5]}\n",
     "toy.flex.yaml:10: stability.learning_rate: unknown key (did you mean 'learning_rates'?)"),
    ("stability: {tasks: [polarity], learning_rates: [1.0e-5, -1]}\n",
     "toy.flex.yaml:10: stability.learning_rates: expected a non-empty list of numbers greater than 0"),
    ("stability: {tasks: [polarity], learning_rates: [1.0e-5, 0.00001]}\n",
     "toy.flex.yaml:10: stability.learning_rates: values must be distinct (as case names write them: 1e-05, 1e-05)"),
    ("stability: {tasks: [polarity], batch_sizes: [16, 1.5]}\n",
     "toy.flex.yaml:10: stability.batch_sizes: expected an integer, got float 1.5"),
    ("stability: {tasks: [polarity], seeds: [0, 0]}\n",
     "toy.flex.yaml:10: stability.seeds: seeds must be distinct"),
    ("stability: {tasks: [polarity], margin: -0.1}\n", "toy.flex.yaml:10: stability.margin: must be 0 or more"),
    ("stability: {tasks: [polarity]}\ngates:\n  stability: {failure_rate: {min: 0.1}}\n",
     "toy.flex.yaml:12: gates.stability.failure_rate.min: failure_rate is a worst-case bound: it takes only 'max'"),
    ("stability: {tasks: [polarity]}\ngates:\n  stability: {failure_rat: {max: 0.1}}\n",
     "toy.flex.yaml:12: gates.stability.failure_rat: unknown key (did you mean 'failure_rate'?)"),
])
def test_schema_errors_name_file_line_and_key(suite_text, tmp_path: Path, section: str, message: str) -> None:
    path = tmp_path / "toy.flex.yaml"
    path.write_text(suite_text(TASKS + section))
    with pytest.raises(SuiteError) as excinfo:
        load_suite(path)
    assert str(excinfo.value).startswith(f"{tmp_path}/{message}"), str(excinfo.value)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=6), st.booleans())
def test_expected_best_setting_is_the_mean_over_every_subset_and_reaches_the_best(values: list[float],
                                                                                  higher: bool) -> None:
    import itertools

    pick = max if higher else min
    curve = expected_best_setting(values, higher)
    for k, value in enumerate(curve, start=1):
        subsets = [pick(s) for s in itertools.combinations(values, k)]
        assert value == pytest.approx(math.fsum(subsets) / len(subsets), abs=1e-9)
    steps = np.diff(curve) if higher else -np.diff(curve)
    assert np.all(steps >= 0) and curve[-1] == pick(values)


def _case(model: str, name: str, setting: dict, seeds: dict) -> dict:
    values = list(seeds.values())
    score = None if None in values else float(np.mean(values))
    return {"suite": "s", "model": model, "axis": "stability", "name": name, "metric": "accuracy",
            "higher_is_better": True, "seeds": seeds, "score": score,
            "seed_std": None if score is None else float(np.std(values)), "task": name.split("@")[0],
            "setting": setting, "margin": 0.0}


def test_summaries_gates_and_plots_come_from_the_document_alone(tmp_path: Path) -> None:
    from flexharness.axes import AXES

    grid = [("t@lr=1e-05,bs=8", {"learning_rate": 1e-5, "batch_size": 8}, {"0": 0.5, "1": 0.9}),
            ("t@lr=1e-05,bs=16", {"learning_rate": 1e-5, "batch_size": 16}, {"0": 0.8, "1": 0.8})]
    doc = {"cases": [_case(m, n, s, seeds) for m in ("a", "b") for n, s, seeds in grid],
           "stability_majority": [{"suite": "s", "model": "a", "task": "t", "majority_score": None},
                                  {"suite": "s", "model": "a", "task": "t", "majority_score": 0.5},
                                  {"suite": "s", "model": "b", "task": "t", "majority_score": None}]}
    specs = {"s": {"stability": {"failure_rate": {"max": 0.3}, "spread": {"max": 0.05}}}}
    gates = AXES.get("stability").finish(doc, specs)
    a, b = doc["stability"]
    assert (a["failed"], a["failure_rate"], a["best_setting"]) == (1, 0.25, "t@lr=1e-05,bs=16")
    assert math.isclose(a["spread"], 0.1) and math.isclose(a["grid_mean"], 0.75)
    assert a["expected_best_setting"] == [0.75, 0.8]
    assert b["majority_score"] is None and b["failure_rate"] is None
    assert [(g.model, g.name.split("/")[1], g.passed) for g in gates] == [
        ("a", "failure_rate.max", True), ("a", "spread.max", False),
        ("b", "failure_rate.max", False), ("b", "spread.max", False)]
    assert "majority-class score of t is unknown" in gates[2].message and gates[2].value is None
    (png,) = AXES.get("stability").plots(doc, tmp_path)
    assert png.name == "stability-s-t.png" and png.read_bytes()[:4] == b"\x89PNG"
    assert AXES.get("stability").finish(doc, specs) == gates  # idempotent: merge refinishes a finished document
