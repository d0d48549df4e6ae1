"""Choosing a compression: Pareto frontiers, paired-bootstrap retention, the cheapest method keeping a target."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexharness.axes import compression_choice
from flexharness.errors import SuiteError
from flexharness.rules import frontier, stats

points = st.lists(st.tuples(st.integers(0, 10), st.integers(0, 10)), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(points)
def test_the_frontier_holds_exactly_the_undominated_points(pairs: list[tuple[int, int]]) -> None:
    found = [frontier.Point(f"p{i}", float(s), float(c)) for i, (s, c) in enumerate(pairs)]
    front = set(frontier.pareto(found))

    def dominates(q: frontier.Point, p: frontier.Point) -> bool:
        return q.score >= p.score and q.cost <= p.cost and (q.score, q.cost) != (p.score, p.cost)

    for p in found:
        assert (p.name in front) == (not any(dominates(q, p) for q in found))


def test_retention_is_paired_and_its_lower_bound_decides() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    dense = np.where(rng.random(400) < 0.9, labels, 1 - labels)
    compressed = np.where(rng.random(400) < 0.95, dense, 1 - dense)
    quantiles = frontier.retention_quantiles(("accuracy",), labels, dense, compressed, key="k")
    idx = stats.resample_indices(400, 1000, key="k")
    ratio = (compressed[idx] == labels[idx]).mean(1) / (dense[idx] == labels[idx]).mean(1)
    np.testing.assert_allclose(quantiles, np.quantile(ratio, frontier.QUANTILES), atol=1e-6)
    low = frontier.lower_bound(quantiles, 0.95)
    assert low == pytest.approx(np.quantile(ratio, 0.05), abs=1e-6)
    assert frontier.p_below(quantiles, low) == pytest.approx(0.05, abs=0.011)
    assert frontier.cheapest_keeping({"a": (1.0, 0.90), "b": (2.0, 0.99), "c": (3.0, 0.995)}, 0.97) == "b"
    assert frontier.cheapest_keeping({"a": (1.0, 0.90)}, 0.97) is None


CHOOSE = """tasks:
  - {name: polarity, dataset: reviews, metric: accuracy}
compression:
  task: polarity
  choose: {retention: 0.5, by: size_mb}
  methods:
    - {method: magnitude, sparsity: [0.3]}
    - {method: layers, keep: 1}
    - {method: int8}
"""


def test_choose_picks_the_cheapest_kept_method_on_the_frontier(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(CHOOSE))
    result = pytester.runpytest("-m", "compression", "--flex-json=out.json", "--flex-report-dir=report",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["compression frontier *size_mb: *", "compression choice * retention >= 0.5 *",
                                 "PASS*compression choose retention >= 0.5*"])
    doc = json.loads((pytester.path / "out.json").read_text())
    [choice], [front] = doc["compression_choice"], doc["compression_frontier"]
    cases = {c["name"]: c for c in doc["cases"]}
    for case in cases.values():
        low, high = case["retention_interval"]
        assert low <= case["retention"] <= high and case["retention_lower"] >= low
        assert case["latency"]["batch"] == cases["int8"]["latency"]["batch"] and case["latency"]["repeats"] == 15
    kept = [c for c in cases.values() if c["retention_lower"] >= 0.5 and c["name"] in front["frontier"]["size_mb"]]
    assert choice["chosen"] == min(kept, key=lambda c: (c["size_mb"], c["name"]))["name"]
    assert choice["chosen"] in front["frontier"]["size_mb"] and cases[choice["chosen"]]["retention_lower"] >= 0.5
    assert (pytester.path / "report" / "compression-frontier-tiny-bert0.png").stat().st_size > 0
    strict = copy.deepcopy(doc)
    for case in strict["cases"]:
        case["choose"] = {**case["choose"], "retention": 5.0}
    strict["compression_choice"] = compression_choice.choices(strict)
    [gate] = compression_choice.gates(strict)
    assert not gate.passed and "no method" in gate.message


def test_a_bad_choose_is_a_located_error(tmp_path: Path, toy_csv: Path) -> None:
    from flexharness.axes import load_suite

    path = tmp_path / "c.flex.yaml"
    path.write_text(f"suite: c\nmodel: x\ndatasets:\n  reviews:\n    files: {{train: {toy_csv}}}\n    label: label\n"
                    + CHOOSE.replace("by: size_mb", "by: speed"))
    with pytest.raises(SuiteError, match=r"c.flex.yaml:\d+: compression.choose.by: expected one of size_mb"):
        load_suite(path)
