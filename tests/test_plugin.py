"""End-to-end runs of the plugin through pytester, on a tiny random-weight BERT."""

from __future__ import annotations

import json
import shutil
import math
import re
import xml.etree.ElementTree as ET

import pytest

from toy import failed_testcases

TASKS = """tasks:
  - {name: polarity, dataset: reviews, metric: accuracy}
  - {name: polarity_f1, dataset: reviews, metric: [f1, accuracy]}
"""


def test_cases_fine_tune_score_and_gate(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(TASKS + "gates:\n  tasks: {p_avg: {min: 0.7}}\n  case_min: 0.6\n"
                                                           "  cases: {tasks/polarity_f1: {min: 0.65}}\n"))
    result = pytester.runpytest("--flex-json=out.json", "--junitxml=junit.xml")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*flexharness summary*", "*tasks/polarity *accuracy*", "PASS*tasks/p_avg.min*"])
    doc = json.loads((pytester.path / "out.json").read_text())
    scores = [c["score"] for c in doc["cases"]]
    assert all(s > 0.7 for s in scores), scores  # the toy task is learnable: well above chance (0.5)
    (aggregate,) = doc["aggregates"]
    assert math.isclose(aggregate["p_avg"], sum(scores) / len(scores))
    mean = aggregate["p_avg"]
    assert math.isclose(aggregate["sigma_p"], math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores)),
                        abs_tol=1e-12)
    f1_case = doc["cases"][1]
    assert math.isclose(f1_case["score"], sum(f1_case["metrics"].values()) / 2)
    testcases = {tc.get("name"): tc for tc in ET.parse(pytester.path / "junit.xml").iter("testcase")}
    assert {"tasks/polarity[seed0]", "gates/tasks/p_avg.min", "gates/case_min",
            "gates/cases/tasks/polarity_f1.min"} <= set(testcases)
    props = {p.get("name"): p.get("value") for p in testcases["tasks/polarity[seed0]"].iter("property")}
    assert float(props["score"]) == doc["cases"][0]["seeds"]["0"]


def test_unreachable_threshold_fails_the_run_with_a_gate_testcase(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(TASKS + "gates:\n  tasks: {p_avg: {min: 1.01}}\n"
                                                           "  cases: {tasks/polarity: {min: 1.01}}\n"))
    result = pytester.runpytest("--junitxml=junit.xml")
    result.assert_outcomes(passed=2, failed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["FAILED *::gates/tasks/p_avg.min*", "FAILED *::gates/cases/tasks/polarity.min*"])
    assert failed_testcases(pytester.path / "junit.xml") == ["gates/tasks/p_avg.min", "gates/cases/tasks/polarity.min"]


def test_xdist_gives_the_same_cases_and_verdicts(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(TASKS + "gates:\n  tasks: {p_avg: {min: 1.01}}\n  case_min: 0.5\n"))
    plain = pytester.runpytest("--flex-json=plain.json")
    spread = pytester.runpytest("-n", "2", "--flex-json=xdist.json")
    plain.assert_outcomes(passed=3, failed=1)
    spread.assert_outcomes(passed=3, failed=1)
    for run in (plain, spread):  # gates count in the progress, which ends at exactly 100 %
        percents = [int(p) for p in re.findall(r"\[\s*(\d+)%\]", run.stdout.str())]
        assert percents and percents[-1] == 100 and max(percents) == 100, percents
    a, b = (json.loads((pytester.path / name).read_text()) for name in ("plain.json", "xdist.json"))
    assert [(c["name"], c["seeds"]) for c in a["cases"]] == [(c["name"], c["seeds"]) for c in b["cases"]]
    assert [(g["name"], g["passed"]) for g in a["gates"]] == [(g["name"], g["passed"]) for g in b["gates"]]


def test_errored_case_makes_its_axis_gates_incomplete(pytester: pytest.Pytester, suite_text, tmp_path) -> None:
    broken = tmp_path / "broken.csv"
    broken.write_text("text,label\nonly one row,positive\n")
    body = (TASKS + "  - {name: broken, dataset: tiny, metric: accuracy}\n"
            "gates:\n  tasks: {p_avg: {min: 0.1}}\n")
    text = suite_text(body).replace("datasets:\n", f"datasets:\n  tiny:\n    files: {{train: {broken}}}\n")
    pytester.makefile(".flex.yaml", toy=text)
    result = pytester.runpytest("--flex-json=out.json")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["*tasks/broken*only 0 training examples*", "*incomplete: 1 of 3 tasks cases*"])
    doc = json.loads((pytester.path / "out.json").read_text())
    assert doc["aggregates"][0]["p_avg"] is None
    assert [c["status"] for c in doc["cases"]] == ["passed", "passed", "failed"]


def test_marker_model_and_seed_options(pytester: pytest.Pytester, suite_text, tiny_model) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(TASKS))
    twin = shutil.copytree(tiny_model, pytester.path / "models" / tiny_model.name)  # same label, another model
    result = pytester.runpytest("--collect-only", "-q", "-m", "tasks", "--flex-seeds=0,1",
                                f"--model={tiny_model}", f"--model={twin}")
    result.stdout.fnmatch_lines(["*tasks/polarity[[]*-seed0]", "*tasks/polarity[[]*-seed1]"])
    assert "4 tests collected" not in result.stdout.str()
    result.stdout.fnmatch_lines(["8 tests collected*"])
    assert pytester.runpytest("--collect-only", "-q", "-m", "domains").ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_collect_only_does_not_import_torch(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(TASKS))
    pytester.makeconftest("import sys\ndef pytest_collection_finish(session):\n"
                          "    print('TORCH-IMPORTED' if 'torch' in sys.modules else 'TORCH-ABSENT')\n")
    result = pytester.runpytest_subprocess("--collect-only", "-q")
    result.stdout.fnmatch_lines(["TORCH-ABSENT"])


@pytest.mark.parametrize("argument, message", [
    ("--flex-seeds=a,b", "*--flex-seeds: expected a non-empty list of non-negative integers, e.g. 0,1,2*"),
    ("--flex-epochs=0", "*--flex-epochs: expected a positive integer*"),
    ("--flex-device=tpu", "*--flex-device: expected one of auto, cpu, cuda*"),
    ("--flex-precision=fp16", "*--flex-precision: expected one of auto, fp32, bf16, got 'fp16'*"),
])
def test_bad_options_are_usage_errors(pytester: pytest.Pytester, argument: str, message: str) -> None:
    result = pytester.runpytest(argument)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
