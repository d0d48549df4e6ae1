"""Baselines and regression gates: the drop rule (pure) and the gates of a real run against edited baselines."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flexharness.rules.aggregate import CaseScore
from flexharness.rules.baseline import (Baseline, Current, Tolerance, judge, parse_tolerance, per_seed_means,
                                  regression_gates, welch_p)
from toy import failed_testcases

SEEDS = "--flex-seeds=0,1,2"  # on the toy recipe of conftest.py
ONE = "tasks:\n  - {name: polarity, dataset: reviews, metric: accuracy}\ngates:\n  regression: {abs: 0.02}\n"


@pytest.mark.parametrize("text, expected", [
    ("0.02", Tolerance("abs", 0.02)), ("abs:0.02", Tolerance("abs", 0.02)),
    ("rel:0.05", Tolerance("rel", 0.05)), ("5%", Tolerance("rel", 0.05)), ("rel:5%", Tolerance("rel", 0.05)),
])
def test_tolerance_syntax(text: str, expected: Tolerance) -> None:
    assert parse_tolerance(text) == expected


@pytest.mark.parametrize("text", ["", "x", "abs:-1", "max:0.1", "nan", "inf"])
def test_bad_tolerance_is_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="--flex-tolerance"):
        parse_tolerance(text)


def test_drop_rule_is_direction_aware_absolute_or_relative() -> None:
    abs02 = Tolerance("abs", 0.02)
    assert judge([0.77], [0.80], True, abs02).failed            # 0.03 worse
    assert not judge([0.78], [0.80], True, abs02).failed        # exactly the tolerance
    assert not judge([0.95], [0.80], True, abs02).failed        # better
    assert judge([0.23], [0.20], False, abs02).failed           # lower is better: a rise is the drop
    assert not judge([0.10], [0.20], False, abs02).failed
    rel = Tolerance("rel", 0.05)
    assert judge([0.80], [0.80], True, rel).limit == pytest.approx(0.76)
    assert judge([0.75], [0.80], True, rel).failed and not judge([0.77], [0.80], True, rel).failed
    assert judge([0.40], [0.30], False, Tolerance("rel", 0.2)).failed  # limit 0.36


def test_with_seeds_a_drop_must_also_be_significant() -> None:
    tol = Tolerance("abs", 0.02)
    clear = judge([0.70, 0.71, 0.69], [0.80, 0.81, 0.79], True, tol)
    assert clear.failed and clear.p_value < 0.001
    noisy = judge([0.70, 0.80, 0.75], [0.90, 0.60, 0.85], True, tol)  # 0.033 worse on average, seeds all over
    assert noisy.beyond and not noisy.failed and noisy.p_value > 0.05
    assert welch_p([0.5, 0.5], [0.6, 0.6], True) == 0.0  # no spread at all: the difference is certain
    assert judge([0.5, 0.5], [0.6, 0.6], True, tol).failed


@given(base=st.lists(st.floats(0, 1), min_size=1, max_size=4), gain=st.floats(0, 1),
       tol=st.floats(0, 0.5), higher=st.booleans())
def test_never_fails_a_run_that_is_at_least_as_good(base: list[float], gain: float, tol: float, higher: bool) -> None:
    current = [b + gain if higher else b - gain for b in base]
    assert not judge(current, base, higher, Tolerance("abs", tol)).failed


@given(base=st.floats(0, 1), drop=st.floats(0, 1), tol=st.floats(0, 0.5))
def test_without_seeds_a_drop_fails_exactly_when_beyond_the_tolerance(base: float, drop: float, tol: float) -> None:
    verdict = judge([base - drop], [base], True, Tolerance("abs", tol))
    if abs(drop - tol) > 1e-9:
        assert verdict.failed == (drop > tol)


def _case(name: str, seeds: dict, model: str = "m", axis: str = "tasks") -> CaseScore:
    return CaseScore("s", model, axis, name, True, {str(k): v for k, v in seeds.items()})


def _current(**kwargs) -> Current:
    return Current(kwargs.pop("harness", "0.2"), kwargs.pop("suites", {"s": "aaa"}),
                   {"s": Tolerance("abs", 0.02)}, **kwargs)


def test_regression_gates_per_case_and_p_avg_with_per_seed_noise() -> None:
    base = Baseline("base.json", "0.2", {"s": "aaa"}, (
        _case("a", {0: 0.80, 1: 0.81}), _case("b", {0: 0.60, 1: 0.62}), _case("gone", {0: 0.5, 1: 0.5})))
    cases = [_case("a", {0: 0.70, 1: 0.71}), _case("b", {0: 0.61, 1: 0.62}), _case("new", {0: 0.9, 1: 0.9})]
    gates = {g.name: g for g in regression_gates(cases, base, _current())}
    assert set(gates) == {"regression/tasks/a", "regression/tasks/b", "regression/tasks/new",
                          "regression/tasks/p_avg"}
    assert not gates["regression/tasks/a"].passed and "FAILED: regression" in gates["regression/tasks/a"].message
    assert gates["regression/tasks/b"].passed
    assert gates["regression/tasks/new"].passed and "new case" in gates["regression/tasks/new"].message
    p_avg = gates["regression/tasks/p_avg"]
    assert p_avg.value == pytest.approx((0.705 + 0.615) / 2)  # over the cases both runs scored: a and b
    assert "over the 2 tasks cases both runs scored" in p_avg.message
    assert per_seed_means(cases[:2]) == pytest.approx([0.655, 0.665])


def test_an_incomplete_case_fails_its_regression_gates() -> None:
    base = Baseline("base.json", "0.2", {"s": "aaa"}, (_case("a", {0: 0.8}),))
    gates = regression_gates([_case("a", {0: None})], base, _current())
    assert [g.passed for g in gates] == [False, False]
    assert all("incomplete" in g.message for g in gates)


def test_a_baseline_from_another_model_suite_or_harness_says_so() -> None:
    base = Baseline("base.json", "0.1", {"s": "old"}, (_case("a", {0: 0.8}, model="/x/bert-base"),),
                    fingerprints={("s", "tasks", "a"): "c1"})
    (case, p_avg) = regression_gates([_case("a", {0: 0.8}, model="/y/roberta")], base,
                                     _current(fingerprints={("s", "tasks", "a"): "c2"}))
    for text in ("baseline made with flexharness 0.1, this run uses 0.2",
                 "baseline made from another version of suite 's' (fingerprint old, now aaa)",
                 "baseline made with model bert-base, this run evaluates roberta"):
        assert text in case.message and text in p_avg.message
    assert "case configuration changed since the baseline" in case.message
    same_name = Baseline("base.json", "0.2", {"s": "aaa"}, (_case("a", {0: 0.8}),), model_prints={("s", "m"): "w1"})
    (case, _) = regression_gates([_case("a", {0: 0.8})], same_name, _current(model_prints={("s", "m"): "w2"}))
    assert "baseline made with other weights of model m (fingerprint w1, now w2)" in case.message


def _edit(pytester: pytest.Pytester, source: str, target: str, shifts: list[float], **top) -> None:
    doc = json.loads((pytester.path / source).read_text())
    for case in doc["cases"]:
        case["seeds"] = {k: v + shift for (k, v), shift in zip(case["seeds"].items(), shifts)}
    doc.update(top)
    (pytester.path / target).write_text(json.dumps(doc))


def _failed_testcases(pytester: pytest.Pytester, junit: str) -> list[str]:
    return failed_testcases(pytester.path / junit)


def test_regression_gates_in_a_real_run(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(ONE))
    pytester.runpytest(SEEDS, "--flex-save-baseline=base.json").assert_outcomes(passed=3)
    saved = json.loads((pytester.path / "base.json").read_text())
    assert saved["kind"] == "flexharness-baseline" and saved["harness_version"]
    assert len(saved["cases"][0]["seeds"]) == 3 and saved["suites"][0]["fingerprint"]

    _edit(pytester, "base.json", "better.json", [0.1, 0.1, 0.1])
    # every item is cached from here on
    worse = pytester.runpytest(SEEDS, "--flex-baseline=better.json", "--junitxml=junit.xml")
    worse.assert_outcomes(passed=3, failed=2)
    assert worse.ret == pytest.ExitCode.TESTS_FAILED
    worse.stdout.fnmatch_lines(["FAIL*regression/tasks/polarity: score * vs baseline *Welch p = *FAILED: regression"])
    assert _failed_testcases(pytester, "junit.xml") == ["gates/regression/tasks/polarity",
                                                         "gates/regression/tasks/p_avg"]
    pytester.runpytest(SEEDS, "--flex-baseline=better.json", "--flex-tolerance=rel:0.5").assert_outcomes(passed=5)

    _edit(pytester, "base.json", "close.json", [0.01, 0.01, 0.01])
    pytester.runpytest(SEEDS, "--flex-baseline=close.json").assert_outcomes(passed=5)  # within abs 0.02

    _edit(pytester, "base.json", "noisy.json", [0.25, -0.15, 0.05], harness_version="0.0.1")
    noisy = pytester.runpytest(SEEDS, "--flex-baseline=noisy.json")  # 0.05 better on average, seeds disagree
    noisy.assert_outcomes(passed=5)
    noisy.stdout.fnmatch_lines(["PASS*regression/tasks/polarity: [[]baseline made with flexharness 0.0.1, "
                                "this run uses *] score *ok: beyond the tolerance but within seed noise"])


def test_unreadable_baseline_is_a_usage_error(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(ONE))
    (pytester.path / "bad.json").write_text("{not json")
    result = pytester.runpytest("--flex-baseline=bad.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--flex-baseline: baseline bad.json is not valid JSON*"])
