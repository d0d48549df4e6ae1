"""The efficiency axis end to end: nested training subsets really used, the curve and AULC as the rules define
them, the data advantage between two models, reuse of the tasks item, gates, merge, and located suite errors."""

from __future__ import annotations

import json
import math
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexharness.axes import load_suite
from flexharness.axes import efficiency_stats as stats
from flexharness.errors import SuiteError
from flexharness.rules import curves
from toy import build_tiny_bert

TRAIN = ("train: {epochs: 2, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0], "
         "max_train_samples: 96, max_eval_samples: 48}")
TASKS = "tasks:\n  - {name: polarity, dataset: reviews, metric: accuracy}\n"
CURVE = "efficiency: {task: polarity, sizes: [96, 12, 32], seeds: [0]}\n"


def _doc(pytester: pytest.Pytester, name: str) -> dict:
    return json.loads((pytester.path / name).read_text())


def _stored_indices(pytester: pytest.Pytester) -> dict[int, list[list[int]]]:
    """size → the training rows each stored efficiency record says its item trained on."""
    found: dict[int, list[list[int]]] = {}
    for path in (pytester.path / ".pytest_cache" / "d" / "flexharness-results").glob("*.json"):
        entry = json.loads(path.read_text())
        if "::efficiency/" in entry["nodeid"] and "train_indices" in entry["record"]:
            found.setdefault(entry["record"]["train_examples"], []).append(entry["record"]["train_indices"])
    return found


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second, different random-weight BERT: the curves of two models to compare."""
    return build_tiny_bert(tmp_path_factory.mktemp("other-bert"), hidden=16)


def test_curves_use_nested_subsets_follow_the_rules_and_merge_alike(
        pytester: pytest.Pytester, suite_text, tiny_model: Path, other_model: Path) -> None:
    from flexharness.cli import main

    gates = "gates:\n  efficiency: {aulc: {min: 0.0}}\n"
    pytester.makefile(".flex.yaml", toy=suite_text(TASKS + CURVE + gates, TRAIN))
    models = [f"--model={tiny_model}", f"--model={other_model}"]
    result = pytester.runpytest("-v", *models, "--flex-json=whole.json", "--flex-report-dir=report")
    result.assert_outcomes(passed=2 * (1 + 3) + 2)
    # the largest size is all the task keeps: that item is the tasks item
    result.stdout.fnmatch_lines(["*::efficiency/polarity@n=12[[]*seed0] PASSED*",
                                 "*::efficiency/polarity@n=96[[]*seed0] PASSED (cached)*",
                                 "efficiency: toy [[]*] polarity, accuracy", "AULC * over log size*",
                                 "data advantage polarity: *", "PASS*efficiency/aulc.min*"])
    doc = _doc(pytester, "whole.json")
    cases = [c for c in doc["cases"] if c["axis"] == "efficiency"]
    assert all(c["train_examples"] == c["size"] for c in cases)
    summaries = doc["efficiency"]
    assert len(summaries) == 2
    for s in summaries:
        mine = sorted((c for c in cases if c["model"] == s["model"]), key=lambda c: c["size"])
        sizes, scores = [c["size"] for c in mine], [c["score"] for c in mine]
        assert [p["size"] for p in s["curve"]] == sizes == [12, 32, 96]
        assert s["aulc"] == curves.aulc(sizes, scores) and min(scores) <= s["aulc"] <= max(scores)
        assert s["target_size"] == curves.smallest_size_reaching(sizes, scores, 0.9)
    (advantage,) = doc["efficiency_advantage"]
    a, b = summaries
    expected = curves.data_advantage([12, 32, 96], [p["score"] for p in a["curve"]], [p["score"] for p in b["curve"]])
    assert (advantage["model_a"], advantage["model_b"]) == (a["model"], b["model"])
    assert advantage["mean_log2_ratio"] == (expected.mean_log2_ratio if expected else None)

    indices = _stored_indices(pytester)
    assert sorted(indices) == [12, 32]   # n=96 is the tasks record: all of the task's rows
    small, middle = indices[12][0], indices[32][0]
    assert len(set(small)) == 12 and set(small) <= set(middle)
    assert all(rows == indices[12][0] for rows in indices[12])   # the same rows for every model and seed

    (plot,) = (pytester.path / "report").glob("efficiency-toy-polarity.png")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "### Efficiency: toy" in (pytester.path / "report" / "summary.md").read_text()

    paths = [str(pytester.path / f"shard{k}.json") for k in (1, 2)]
    for k, path in enumerate(paths, start=1):
        pytester.runpytest(*models, f"--flex-shard={k}/2", f"--flex-json={path}")
    assert main(["merge", *paths, "-o", str(pytester.path / "merged.json")]) == 0
    merged = _doc(pytester, "merged.json")
    assert merged["efficiency"] == doc["efficiency"]
    assert merged["efficiency_advantage"] == doc["efficiency_advantage"]
    assert [(g["name"], g["value"]) for g in merged["gates"]] == [(g["name"], g["value"]) for g in doc["gates"]]


def test_a_failed_size_makes_the_aulc_gate_incomplete(pytester: pytest.Pytester, suite_text) -> None:
    gates = "gates:\n  efficiency: {aulc: {min: 0.0}}\n"
    pytester.makefile(".flex.yaml", toy=suite_text(TASKS + CURVE + gates, TRAIN))
    pytester.makeconftest("def pytest_runtest_call(item):\n"
                          "    if item.name == 'efficiency/polarity@n=12[seed0]':\n"
                          "        raise RuntimeError('boom')\n")
    result = pytester.runpytest("-m", "efficiency", "--flex-json=out.json")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["*aulc.min: incomplete: 1 of 3 curve points have no score (polarity@n=12)*"])
    (summary,) = _doc(pytester, "out.json")["efficiency"]
    assert summary["missing"] == [12] and summary["aulc"] is None


def test_default_seeds_are_more_for_small_sizes(suite_text, tmp_path: Path) -> None:
    path = tmp_path / "toy.flex.yaml"
    path.write_text(suite_text(TASKS + "efficiency: {task: polarity, sizes: [128, 32, 129]}\n"))
    cases = {c.name: c for c in load_suite(path).cases if c.axis == "efficiency"}
    assert list(cases) == ["polarity@n=32", "polarity@n=128", "polarity@n=129"]
    assert [len(c.train.seeds) for c in cases.values()] == [5, 5, 3]
    assert dict(cases["polarity@n=32"].params)["target"] == 0.9


@pytest.mark.parametrize(("section", "expected"), [
    ("{task: polarty, sizes: [16, 32]}", "efficiency.task: no case named 'polarty'*did you mean 'polarity'*"),
    ("{task: polarity, sizes: [16]}", "efficiency.sizes: expected a list of at least two distinct*"),
    ("{task: polarity, sizes: [16, 16.5]}", "efficiency.sizes: expected a list of at least two distinct*"),
    ("{task: polarity, sizes: [16, 500]}", "efficiency.sizes: size 500 is larger than the 96 training*"),
    ("{task: polarity, sizes: [16, 32], target: 1.5}", "efficiency.target: must be in (0, 1]*"),
    ("{task: polarity, tasks: [polarity], sizes: [16, 32]}", "efficiency.tasks: give either 'task' or 'tasks'*"),
    ("{task: polarity, size: [16, 32]}", "*efficiency.size*did you mean 'sizes'*"),
    ("{task: polarity, sizes: [16, 32], seeds: [0, 0]}", "efficiency.seeds: seeds must be distinct*"),
])
def test_section_errors_name_file_line_and_key(suite_text, tmp_path: Path, section: str, expected: str) -> None:
    path = tmp_path / "toy.flex.yaml"
    text = suite_text(TASKS + f"efficiency: {section}\n", TRAIN)
    path.write_text(text)
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    line = text.splitlines().index(f"efficiency: {section}") + 1
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert fnmatch(message.split(": ", 1)[1], expected), message


def test_a_section_error_is_a_collection_error_without_traceback(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(TASKS + "efficiency: {task: polarity, sizes: [32]}\n", TRAIN))
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*toy.flex.yaml:*: efficiency.sizes: expected a list of at least two*"])
    assert "Traceback" not in result.stdout.str()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3), st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3))
def test_summaries_and_advantages_follow_the_rules(first: list[float], second: list[float]) -> None:
    sizes = [10, 100, 1000]

    def case(model: str, size: int, score: float) -> dict:
        return {"axis": "efficiency", "suite": "s", "model": model, "task": "t", "name": f"t@n={size}", "size": size,
                "score": score, "seed_std": 0.0, "seeds": {"0": score}, "metric": "accuracy",
                "higher_is_better": True, "target": 0.9, "train_examples": size}

    doc = {"cases": [case(m, n, v) for m, scores in (("a", first), ("b", second)) for n, v in zip(sizes, scores)]}
    found = stats.summaries(doc)
    assert [s["aulc"] for s in found] == [curves.aulc(sizes, first), curves.aulc(sizes, second)]
    (forward,) = stats.advantages(found)
    (backward,) = stats.advantages(found[::-1])
    if forward["mean_log2_ratio"] is None:
        assert backward["mean_log2_ratio"] is None and forward["note"]
    else:
        assert math.isclose(forward["mean_log2_ratio"], -backward["mean_log2_ratio"], abs_tol=1e-9)
    assert np.isfinite([s["aulc"] for s in found]).all()
    assert all(v is None or math.isfinite(v) for v in (forward[k] for k in stats.ADVANTAGE_FIELDS))


def test_an_advantage_that_floating_point_cannot_interpolate_is_none_with_a_note() -> None:
    def summary(model: str, scores: list[float]) -> dict:
        return {"suite": "s", "task": "t", "model": model, "aulc": 0.5, "higher_is_better": True,
                "curve": [{"size": n, "score": v} for n, v in zip([10, 100, 1000], scores)]}

    (entry,) = stats.advantages([summary("a", [0.0, 1e-310, 1e-309]), summary("b", [0.0, 5e-310, 1.0])])
    assert entry["mean_log2_ratio"] is None and "too small" in entry["note"]
