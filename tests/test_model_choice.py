"""Choosing a model over a zoo: the pre-screen's per-task rank agreement, top-1 hit and top-K regret."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import kendalltau, weightedtau

from flexharness.axes import probe_report
from flexharness.rules.model_choice import task_choice, weighted_tau_test
from toy import build_tiny_bert, build_zoo, sentiment_rows, write_csv

scores = st.lists(st.integers(0, 20), min_size=3, max_size=6)


@settings(max_examples=30, deadline=None)
@given(scores, scores)
def test_per_task_agreement_is_scipys_and_regret_is_what_top_k_misses(pre: list[int], tuned: list[int]) -> None:
    n = min(len(pre), len(tuned))
    models = [f"m{i}" for i in range(n)]
    found = task_choice(dict(zip(models, map(float, pre))), dict(zip(models, map(float, tuned))), (1, 2))
    x, y = [float(v) for v in pre[:n]], [float(v) for v in tuned[:n]]
    if len(set(x)) < 2 or len(set(y)) < 2:
        assert found.tau is None and found.weighted_tau is None
    else:
        expected = kendalltau(x, y)
        assert math.isclose(found.tau, expected.statistic) and math.isclose(found.p_value, expected.pvalue)
        assert math.isclose(found.weighted_tau, weightedtau(x, y).statistic)
        assert 0.0 < found.weighted_p_value <= 1.0
    first = min(range(n), key=lambda i: (-x[i], models[i]))
    two = sorted(range(n), key=lambda i: (-x[i], models[i]))[:2]
    assert found.top1_hit == (y[first] == max(y))
    assert found.regret == {1: max(y) - y[first], 2: max(y) - max(y[i] for i in two)}


def test_the_weighted_tau_p_value_is_an_exact_permutation_test() -> None:
    tau, p = weighted_tau_test([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0])
    assert tau == pytest.approx(1.0) and p == pytest.approx(2 / 24)   # only the identity and its reverse
    assert task_choice({"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.0}) is None   # two models rank nothing


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four candidates from one tiny checkpoint: 1, 2 and 3 of its 3 layers, and a random-weight copy."""
    source = build_tiny_bert(tmp_path_factory.mktemp("zoo-source"), layers=3)
    return build_zoo(source, tmp_path_factory.mktemp("zoo"), (1, 2, 3))


def test_a_zoo_run_reports_per_task_agreement_equal_to_scipy_on_the_stored_scores(
        pytester: pytest.Pytester, zoo: list[Path], tmp_path: Path) -> None:
    data = write_csv(tmp_path / "r.csv", sentiment_rows(240, labels=("positive", "negative", "neutral")))
    pytester.makefile(".flex.yaml", zoo=f"""
suite: zoo
model: {zoo[0]}
train: {{epochs: 1, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0], max_train_samples: 80,
        max_eval_samples: 40, max_length: 16}}
datasets:
  r: {{files: {{train: {data}}}, label: label}}
tasks:
  - {{name: three, dataset: r, metric: accuracy}}
  - {{name: two, dataset: r, metric: accuracy, where: {{label: [positive, negative]}}}}
probe: {{layers: [1]}}
""")
    result = pytester.runpytest(*(f"--model={m}" for m in zoo), "--flex-prescreen-top=2", "--flex-json=out.json",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(passed=16)
    doc = json.loads((pytester.path / "out.json").read_text())
    choices = {c["prescreen"]: c for c in doc["probe_model_choice"]}
    assert set(choices) == {"logme", "knn", "probe"}
    for choice in choices.values():
        assert [t["n_models"] for t in choice["tasks"]] == [4, 4]
        for task in choice["tasks"]:
            x, y = [s[1] for s in task["scores"]], [s[2] for s in task["scores"]]
            if task["tau"] is None:
                assert len(set(x)) < 2 or len(set(y)) < 2
                continue
            assert math.isclose(task["tau"], kendalltau(x, y).statistic)
            assert math.isclose(task["p_value"], kendalltau(x, y).pvalue)
            assert math.isclose(task["weighted_tau"], weightedtau(x, y).statistic)
            kept = sorted(task["scores"], key=lambda s: (-s[1], s[0]))[:2]
            assert math.isclose(task["regret_top_k"], max(y) - max(s[2] for s in kept))
        assert choice["k"] == 2 and choice["n_tasks"] == 2
        assert math.isclose(choice["top1_hit_rate"], sum(t["top1_hit"] for t in choice["tasks"]) / 2)
    assert any(t["tau"] is not None for c in choices.values() for t in c["tasks"])
    result.stdout.fnmatch_lines(["model choice zoo by logme over 2 task(s), within each task: Kendall tau *"])
    again = copy.deepcopy(doc)
    probe_report.finish(again, {})
    assert again["probe_model_choice"] == doc["probe_model_choice"]
