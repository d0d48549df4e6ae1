"""The probe axis: frozen features per layer, linear probes, the pre-screen, its track record, prescreen-only."""

from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import kendalltau

from flexharness.axes import AXES
from flexharness.results import verdict
from flexharness.axes import load_suite, probe_report
from flexharness.axes.probe import layer_indices
from flexharness.errors import DataError, SuiteError
from flexharness.rules import prescreen
from toy import POSITIVE, TOPICS, build_tiny_bert, sentence, write_csv

TRAIN = ("train: {epochs: 1, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0], "
         "max_train_samples: 96, max_eval_samples: 64}")
TASKS = """tasks:
  - {name: sentiment, dataset: reviews, metric: accuracy}
  - {name: topic, dataset: reviews, metric: macro_f1, train: {seeds: [0]}}
"""


@pytest.fixture(scope="module")
def topic_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Toy sentences with two labels: the sentiment word's polarity, and the topic word (4 classes)."""
    rng, rows = random.Random(3), []
    for i in range(320):
        label = ("positive", "negative")[i % 2]
        text = sentence(rng, label)
        rows.append({"text": text, "label": label, "topic": next(t for t in TOPICS if t in text.split())})
    return write_csv(tmp_path_factory.mktemp("topics") / "topics.csv", rows)


@pytest.fixture(scope="module")
def second_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another random BERT of another shape: a second candidate for the ranking."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert-3"), hidden=48, layers=3, heads=2)


def suite(model: Path, data: Path, probe: str, tasks: str = TASKS, extra: str = "") -> str:
    return (f"suite: probing\nmodel: {model}\n{TRAIN}\ndatasets:\n  reviews:\n    files: {{train: {data}}}\n"
            f"    label: label\n  topics:\n    files: {{train: {data}}}\n    label: topic\n"
            f"{tasks.replace('dataset: reviews, metric: macro_f1', 'dataset: topics, metric: macro_f1')}"
            f"{probe}{extra}")


def test_probe_items_scores_per_layer_gap_and_reports(pytester: pytest.Pytester, tiny_model: Path,
                                                     topic_csv: Path) -> None:
    pytester.makefile(".flex.yaml", toy=suite(tiny_model, topic_csv, "probe: {tasks: [topic, sentiment]}\n",
                                              extra="gates:\n  probe: {p_avg: {min: 0.0}}\n"))
    result = pytester.runpytest("--flex-json=out.json", "--flex-report-dir=report", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2 + 2 + 1)  # two fine-tunings, two probes (one seed each), one gate
    result.stdout.fnmatch_lines([
        "probe (frozen pretrained features*", "task *model *metric *probe *layer *LogME*",
        "  topic [[]tiny-bert*] layers 0..2: *[[]*", "track record probing: logme vs fine-tuned over 2 *undefined*",
        "PASS*probe/p_avg.min*"])
    doc = json.loads((pytester.path / "out.json").read_text())
    cases = {(c["axis"], c["name"]): c for c in doc["cases"]}
    entries = {e["task"]: e for e in doc["probes"]}
    assert sorted(entries) == ["sentiment", "topic"]
    for task, entry in entries.items():
        assert entry["layers"] == [0, 1, 2]  # embeddings + two transformer layers
        assert len(entry["layer_scores"]) == 3 and entry["best_layer"] in (0, 1, 2)
        assert entry["best_score"] == max(entry["layer_scores"]) == cases[("probe", task)]["score"]
        assert entry["finetuned"] == cases[("tasks", task)]["score"]
        assert math.isclose(entry["gap"], entry["finetuned"] - entry["best_score"])
        assert entry["logme"] is not None and entry["logme_seconds"] >= 0 and entry["forward_seconds"] > 0
        assert 0.0 <= entry["knn"] <= 1.0 and entry["knn_metric"] == "accuracy"
        assert cases[("probe", task)]["best_layer"] == entry["best_layer"]
    # a random-weight model's features still carry the topic word: well above the 0.25 chance of 4 topics
    assert entries["topic"]["best_score"] > 0.5
    report = pytester.path / "report"
    assert (report / "probe-layers-probing.png").read_bytes()[:4] == b"\x89PNG"
    assert (report / "probe-prescreen-probing.png").exists()
    assert "### Probe: frozen pretrained features" in (report / "summary.md").read_text()


def test_track_record_with_two_models_equals_scipy_and_merge_agrees(
        pytester: pytest.Pytester, tiny_model: Path, second_model: Path, topic_csv: Path) -> None:
    pytester.makefile(".flex.yaml", toy=suite(tiny_model, topic_csv, "probe: {pooling: first, layers: [1, 2]}\n"))
    result = pytester.runpytest(f"--model={tiny_model}", f"--model={second_model}", "--flex-json=out.json",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(passed=8)
    doc = json.loads((pytester.path / "out.json").read_text())
    assert {e["pooling"] for e in doc["probes"]} == {"first"} and {len(e["layers"]) for e in doc["probes"]} == {2}
    for record in doc["probe_track_record"]:
        pairs = record["pairs"]
        assert record["n"] == len(pairs) == 4
        expected = kendalltau([p[2] for p in pairs], [p[3] for p in pairs])
        if record["tau"] is not None:
            assert math.isclose(record["tau"], expected.statistic) and math.isclose(record["p_value"], expected.pvalue)
        else:
            assert len({p[2] for p in pairs}) < 2 or len({p[3] for p in pairs}) < 2
    assert {r["prescreen"] for r in doc["probe_track_record"]} == {"logme", "knn", "probe"}
    result.stdout.fnmatch_lines(["pre-screen ranking probing by logme (mean rank over tasks): *, *"])
    # finishing is idempotent, and the run split by model into two files merges into the same sections
    again = copy.deepcopy(doc)
    probe_report.finish(again, {})
    assert again["probes"] == doc["probes"] and again["probe_track_record"] == doc["probe_track_record"]
    halves = []
    for model in (str(tiny_model), str(second_model)):
        half = copy.deepcopy(doc)
        half["cases"] = [c for c in doc["cases"] if c["model"] == model]
        half["probes"] = [e for e in doc["probes"] if e["model"] == model]
        halves.append((model, half))
    merged = verdict.merged(halves, list(AXES))
    assert merged["probes"] == doc["probes"] and merged["probe_track_record"] == doc["probe_track_record"]


def test_prescreen_only_deselects_fine_tuning_and_keeps_the_top_models(
        pytester: pytest.Pytester, tiny_model: Path, second_model: Path, topic_csv: Path) -> None:
    pytester.makefile(".flex.yaml", toy=suite(tiny_model, topic_csv, "probe: {}\n",
                                              extra="gates:\n  tasks: {p_avg: {min: 0.99}}\n"))
    pytester.makeini("[pytest]\nflex_prescreen_only = true\n")
    result = pytester.runpytest(f"--model={tiny_model}", f"--model={second_model}", "--flex-prescreen-top=1",
                                "--flex-json=out.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, deselected=4)  # no tasks item ran, so no tasks gate either
    doc = json.loads((pytester.path / "out.json").read_text())
    assert {c["axis"] for c in doc["cases"]} == {"probe"}
    (by_logme,) = [r for r in doc["prescreen"] if r["by"] == "logme"]
    per_task = {}
    for entry in doc["probes"]:
        per_task.setdefault(entry["task"], {})[entry["model"]] = entry["logme"]
    ranks = {m: sum(prescreen.top_k(s, 2).index(m) + 1 for s in per_task.values()) / 2 for m in per_task["topic"]}
    assert by_logme["keep"] == sorted(ranks, key=lambda m: (ranks[m], m))[:1]
    assert [r for r in doc["prescreen"] if r["by"] == "knn"][0]["keep"] is None
    result.stdout.fnmatch_lines([f"keep for the full run (top 1 by logme): --model {by_logme['keep'][0]}"])


@pytest.mark.parametrize("probe, key, message", [
    ("probe: {tasks: [topik]}", "probe.tasks", "did you mean 'topic'"),
    ("probe: {pooling: max}", "probe.pooling", "use mean or first"),
    ("probe: {layers: [1, 1]}", "probe.layers", "distinct layer indices"),
    ("probe: {layerz: all}", "probe.layerz", "did you mean 'layers'"),
])
def test_a_bad_probe_section_names_file_line_and_key(tmp_path: Path, tiny_model: Path, topic_csv: Path,
                                                     probe: str, key: str, message: str) -> None:
    path = tmp_path / "bad.flex.yaml"
    path.write_text(suite(tiny_model, topic_csv, probe + "\n"))
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    assert f"{path}:" in str(caught.value) and key in str(caught.value) and message in str(caught.value)


def test_the_probe_needs_tasks_and_uses_the_first_seed(tmp_path: Path, tiny_model: Path, topic_csv: Path) -> None:
    path = tmp_path / "probe.flex.yaml"
    path.write_text(suite(tiny_model, topic_csv, "probe: {tasks: topic}\n", tasks="").replace(
        TRAIN, "train: {seeds: [3, 4]}") + "tasks: [{name: topic, dataset: topics, metric: accuracy}]\n")
    (case,) = [c for c in load_suite(path).cases if c.axis == "probe"]
    assert case.train.seeds == (3,) and dict(case.params)["layers"] == "all"
    path.write_text(suite(tiny_model, topic_csv, "probe: {}\n", tasks=""))
    with pytest.raises(SuiteError, match="add a 'tasks:' list"):
        load_suite(path)


def test_a_layer_the_model_lacks_is_a_clear_error(tmp_path: Path, tiny_model: Path, topic_csv: Path) -> None:
    path = tmp_path / "probe.flex.yaml"
    path.write_text(suite(tiny_model, topic_csv, "probe: {layers: [2, 7]}\n"))
    case = next(c for c in load_suite(path).cases if c.axis == "probe")
    assert layer_indices((2,), 3, case) == [2]
    with pytest.raises(DataError, match=r"2 transformer layers .* layer 7 cannot be probed"):
        layer_indices((2, 7), 3, case)


def test_pooled_features_do_not_depend_on_padding_or_batch(tiny_model: Path) -> None:
    """Mean over real tokens and first token: one example alone or padded in a batch gives the same row."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from flexharness.engine import data, features

    tokenizer, model = AutoTokenizer.from_pretrained(tiny_model), AutoModel.from_pretrained(tiny_model)
    texts = ["good movie", "the film was really quite boring and the plot was poor", POSITIVE[2]]
    examples = data.Examples(((*texts,),), np.zeros(3, dtype=np.int64))
    pooled = features.encode_pooled(model, data.encode(examples, tokenizer, 32), 8, "cpu", tokenizer.pad_token_id)
    assert pooled["mean"].shape == (3, 3, 32)
    for i, text in enumerate(texts):
        with torch.inference_mode():
            hidden = model(**tokenizer(text, return_tensors="pt"), output_hidden_states=True).hidden_states
        alone = torch.stack(hidden)[:, 0]
        assert np.allclose(pooled["mean"][:, i], alone.mean(dim=1).numpy(), atol=1e-5)
        assert np.allclose(pooled["first"][:, i], alone[:, 0].numpy(), atol=1e-5)


@given(st.dictionaries(st.sampled_from("abcde"), st.none() | st.floats(-5, 5), min_size=1), st.integers(1, 6))
def test_with_one_task_the_ranking_is_top_k(scores: dict, top: int) -> None:
    entries = [{"suite": "s", "model": m, "task": "t", "logme": v, "knn": None} for m, v in scores.items()]
    by_logme, by_knn = probe_report.rankings(entries, {"s": {"top": top, "by": "logme"}})
    assert [m["model"] for m in by_logme["models"]] == prescreen.top_k(scores, len(scores))
    assert by_logme["keep"] == prescreen.top_k(scores, top) and by_knn["keep"] is None


def test_a_lower_is_better_task_takes_the_lowest_layer_and_a_positive_gap_when_fine_tuning_helps() -> None:
    seed = {"layers": [0, 1, 2], "layer_scores": [0.5, 0.3, 0.3], "logme": -1.0, "knn": 0.2}
    doc = {"cases": [{"suite": "s", "model": "m", "axis": "tasks", "name": "sts", "score": 0.2}],
           "probes": [{"suite": "s", "model": "m", "task": "sts", "finetuned_case": "sts", "metric": "mse",
                       "higher_is_better": False, "pooling": "mean", "seeds": {"0": seed, "1": None}}]}
    probe_report.finish(doc, {})
    (entry,) = doc["probes"]
    assert entry["best_layer"] == 1 and entry["best_score"] == 0.3  # the shallower of two equal layers
    assert math.isclose(entry["gap"], 0.1) and entry["finetuned"] == 0.2
    assert entry["knn_seconds"] is None and doc["probe_track_record"][0]["pairs"] == [["sts", "m", -1.0, -0.2]]
