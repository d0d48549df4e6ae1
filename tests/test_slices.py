"""Difficulty slices: the pure rules (partitions, exact recombination for accuracy), the suite checks, and one
run end to end (length, column and agreement slices with two seeds, gates, merge, a column added on a cached rerun)."""

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
from flexharness.rules import slices as rules
from flexharness.rules.metrics import score

lengths = st.lists(st.integers(1, 40), min_size=1, max_size=60)


def _members(found: list[rules.Slice]) -> list[int]:
    return sorted(int(i) for s in found for i in s.indices)


@given(lengths, st.integers(2, 6))
def test_length_slices_put_every_example_in_one_bin_shorter_before_longer(values: list[int], bins: int) -> None:
    found = rules.quantile_slices(np.asarray(values), rules.bin_names("length", bins))
    assert _members(found) == list(range(len(values)))
    assert [s.name for s in found] == list(rules.bin_names("length", bins))
    ranges = [(s.low, s.high) for s in found if s.indices.size]
    assert all(high < low for (_, high), (low, _) in zip(ranges, ranges[1:]))  # equal lengths share a bin


@given(st.lists(st.one_of(st.integers(0, 9).map(float), st.just(math.nan), st.none()), min_size=1, max_size=50),
       st.lists(st.integers(1, 8).map(float), min_size=1, max_size=4, unique=True).map(sorted))
def test_column_slices_by_edges_partition_numbers_and_missing_values(values: list, edges: list[float]) -> None:
    names = rules.known_names("score", 3, None, edges)
    found = rules.column_slices(rules.slice_labels(values, None, edges), names)
    assert _members(found) == list(range(len(values)))
    assert (rules.MISSING in [s.name for s in found]) == any(v is None or math.isnan(v) for v in values)
    for s in found:
        if s.name not in rules.RESERVED_SLICES:
            low = names.index(s.name)
            assert all((low == 0 or values[i] >= edges[low - 1]) and (low == len(edges) or values[i] < edges[low])
                       for i in s.indices)


def test_text_column_slices_are_the_values_the_suite_names_and_other() -> None:
    labels = rules.slice_labels(["air", "tech", "air", "x@y.org", None, 1], ["air", 1], None)
    found = rules.column_slices(labels, rules.known_names("topic", 3, ["air", 1]))
    assert {s.name: s.indices.tolist() for s in found} == {"air": [0, 2], "1": [5], "other": [1, 3],
                                                          "(missing)": [4]}
    assert "x@y.org" not in labels and "tech" not in labels


@given(st.integers(1, 5).flatmap(lambda runs: st.lists(st.lists(st.booleans(), min_size=runs, max_size=runs),
                                                       min_size=1, max_size=30)))
def test_agreement_slices_split_by_thirds_of_the_runs(columns: list[list[bool]]) -> None:
    correct = np.asarray(columns).T          # runs × examples
    found = {s.name: s for s in rules.agreement_slices(correct)}
    assert _members(list(found.values())) == list(range(correct.shape[1]))
    share = correct.mean(axis=0)
    assert all(share[i] > 2 / 3 for i in found["easy"].indices)
    assert all(share[i] < 1 / 3 for i in found["hard"].indices)
    assert all(1 / 3 <= share[i] <= 2 / 3 for i in found["medium"].indices)


@settings(max_examples=60, deadline=None)   # the first call imports scikit-learn
@given(st.integers(1, 3), st.integers(2, 40), st.integers(2, 5), st.integers(0, 2 ** 31))
def test_slice_accuracies_weighted_by_counts_recombine_to_the_case_accuracy(seeds: int, n: int, bins: int,
                                                                            seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    predictions = rng.integers(0, 3, (seeds, n))
    found = rules.quantile_slices(rng.integers(1, 30, n), rules.bin_names("length", bins))
    rows = rules.scores(("accuracy",), labels, predictions, found)
    case = float(np.mean([score(("accuracy",), labels, row)[0] for row in predictions]))
    assert sum(r["n"] for r in rows) == n
    assert rules.recombined(rows) == pytest.approx(case, abs=1e-12)
    assert rules.additive(("accuracy",)) and not rules.additive(("macro_f1",))


def _suite(tmp_path: Path, body: str, model: Path, data: Path) -> Path:
    path = tmp_path / "s.flex.yaml"
    path.write_text(f"suite: s\nmodel: {model}\ndatasets:\n  reviews: {{files: {{train: {data}}}, label: label}}\n"
                    + body)
    return path


@pytest.mark.parametrize("body, line, words", [
    ("slices: {by: length, bins: 1}\ntasks:\n  - {name: a, dataset: reviews, metric: accuracy}\n", 5,
     "slices.bins: must be from 2 to 20"),
    ("slices: {bins: 3}\ntasks:\n  - {name: a, dataset: reviews, metric: accuracy}\n", 5, "slices.by: required"),
    ("tasks:\n  - {name: a, dataset: reviews, metric: pearson, slices: {by: agreement}}\n", 6,
     "regression metric (pearson)"),
    ("slices: {by: length}\ntasks:\n  - {name: a, dataset: reviews, metric: accuracy}\n"
     "gates:\n  slices:\n    tasks/a: {hardest: {min: 0.5}}\n", 10, "no slice 'hardest'"),
    ("tasks:\n  - {name: a, dataset: reviews, metric: accuracy}\ngates:\n  slices:\n    tasks/a: {hard: {min: 0.5}}\n",
     9, "'tasks/a' has no slices"),
])
def test_slice_mistakes_are_located_suite_errors(tmp_path: Path, tiny_model: Path, toy_csv: Path, body: str,
                                                 line: int, words: str) -> None:
    with pytest.raises(SuiteError) as found:
        load_suite(_suite(tmp_path, body, tiny_model, toy_csv))
    assert f":{line}:" in str(found.value) and words in str(found.value)


def test_a_column_the_data_lacks_fails_at_collection(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(
        "tasks:\n  - {name: a, dataset: reviews, metric: accuracy,\n     slices: {by: topic, values: [flight]}}\n"))
    result = pytester.runpytest("-p", "no:cacheprovider", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*toy.flex.yaml:10: tasks[[]0].slices.by: 'tasks/a': dataset 'reviews' has no "
                                 "column 'topic' (3 columns in every split, none of that name); slice by a column*"])
    assert "Traceback" not in result.stdout.str()


TRAIN = ("train: {epochs: 2, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0, 1], "
         "max_train_samples: 64, max_eval_samples: 40}")
TASKS = ("slices: {by: length}\n"
         "tasks:\n  - {name: polarity, dataset: reviews, metric: accuracy}\n"
         "  - {name: agreed, dataset: reviews, metric: accuracy,\n"
         "     slices: {by: agreement}}\n")
GATES = "gates:\n  slices:\n    tasks/polarity: {short: {min: 0.0}, long: {min: 1.01}}\n"


def test_slices_end_to_end_with_gates_merge_and_a_column_added_on_a_cached_rerun(
        pytester: pytest.Pytester, suite_text) -> None:
    from flexharness.cli import main

    pytester.makefile(".flex.yaml", toy=suite_text(TASKS + GATES, TRAIN))
    result = pytester.runpytest("--flex-json=out.json", "--flex-report-dir=report")
    result.assert_outcomes(passed=4 + 1, failed=1)
    result.stdout.fnmatch_lines(["slices tasks/polarity [[]*] by length", "slice *range *n *score", "short *",
                                 "medium *", "long *", "count-weighted mean * = the case score*",
                                 "FAIL  toy [[]*] slices/tasks/polarity/long.min: long.min = *, required >= 1.01*"])
    doc = json.loads((pytester.path / "out.json").read_text())
    cases = {c["name"]: c for c in doc["cases"]}
    for case in cases.values():
        entry = case["slices"]
        assert sum(s["n"] for s in entry["slices"]) == case["eval_examples"]
        assert entry["additive"] and entry["recombined"] == pytest.approx(case["score"], abs=1e-9)
    assert [s["name"] for s in cases["polarity"]["slices"]["slices"]] == ["short", "medium", "long"]
    assert [s["name"] for s in cases["agreed"]["slices"]["slices"]] == ["easy", "medium", "hard"]
    agreed = {s["name"]: s for s in cases["agreed"]["slices"]["slices"]}
    assert agreed["easy"]["score"] in (1.0, None) and agreed["hard"]["score"] in (0.0, None)
    assert "## Difficulty slices" in (pytester.path / "report" / "summary.md").read_text()
    assert (pytester.path / "report" / "slices-toy-tasks-polarity.png").is_file()

    assert main(["merge", str(pytester.path / "out.json"), "-o", str(pytester.path / "merged.json")]) == 1
    merged = json.loads((pytester.path / "merged.json").read_text())
    assert [c["slices"] for c in merged["cases"]] == [c["slices"] for c in doc["cases"]]
    assert [g["passed"] for g in merged["gates"]] == [g["passed"] for g in doc["gates"]]

    column = TASKS.replace("slices: {by: length}", "slices: {by: score, values: [0, 1]}")   # 1.0 / 0.0 per label
    pytester.makefile(".flex.yaml", toy=suite_text(column, TRAIN))
    rerun = pytester.runpytest("--flex-json=again.json")
    rerun.assert_outcomes(passed=4)
    polarity = next(c for c in json.loads((pytester.path / "again.json").read_text())["cases"]
                    if c["name"] == "polarity")
    assert polarity["cached"] and {s["name"]: s["n"] for s in polarity["slices"]["slices"]} == {"0": 20, "1": 20}
