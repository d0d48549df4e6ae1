"""Calibration: ECE with 15 equal-width confidence bins and the Brier score, per case, in tables and gates."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flexharness.results import predictions
from flexharness.rules import calibration


def test_ece_and_brier_follow_their_definitions() -> None:
    rng = np.random.default_rng(1)
    probs = rng.dirichlet([1.0, 1.0, 1.0], size=500)
    labels = rng.integers(0, 3, 500)
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    edges = np.linspace(0, 1, 16)
    expected = sum(((confidence > lo) & (confidence <= hi)).mean()
                   * abs(correct[(confidence > lo) & (confidence <= hi)].mean()
                         - confidence[(confidence > lo) & (confidence <= hi)].mean())
                   for lo, hi in zip(edges[:-1], edges[1:]) if ((confidence > lo) & (confidence <= hi)).any())
    assert calibration.ece(labels, probs) == pytest.approx(expected, abs=1e-9)
    assert calibration.brier(labels, probs) == pytest.approx(((probs - np.eye(3)[labels]) ** 2).sum(1).mean())
    perfect = np.eye(3)[labels]
    assert calibration.ece(labels, perfect) == 0.0 and calibration.brier(labels, perfect) == 0.0
    assert calibration.of_outputs(labels, rng.random((500, 1))) == {}


def test_cases_carry_calibration_and_gates_bound_it(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(
        "tasks:\n  - {name: polarity, dataset: reviews, metric: accuracy}\n"
        "gates:\n  tasks: {ece: {max: 1.0}, brier: {max: 0.0}}\n"))
    result = pytester.runpytest("--flex-json=out.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["calibration (tasks: ECE over 15 equal-width confidence bins*",
                                 "polarity *", "PASS*tasks/ece.max*", "FAIL*tasks/brier.max*"])
    [case] = json.loads((pytester.path / "out.json").read_text())["cases"]
    [(meta, arrays)] = predictions.read_beside(pytester.path / "out.json")
    assert case["ece"] == pytest.approx(calibration.ece(arrays["labels"], arrays["outputs"]))
    assert case["brier"] == pytest.approx(calibration.brier(arrays["labels"], arrays["outputs"]))
