"""The tasks axis at full breadth: GLUE-shaped data, pair and regression tasks, several eval splits."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import datasets
import pytest

from toy import build_tiny_bert, sentence, write_csv

SUITES = Path(__file__).resolve().parents[1] / "suites"
GLUE_SHAPES = {  # config: (text columns, label names or None for regression, eval splits)
    "cola": (["sentence"], ["unacceptable", "acceptable"], ["validation"]),
    "sst2": (["sentence"], ["negative", "positive"], ["validation"]),
    "mrpc": (["sentence1", "sentence2"], ["not_equivalent", "equivalent"], ["validation"]),
    "stsb": (["sentence1", "sentence2"], None, ["validation"]),
    "qqp": (["question1", "question2"], ["not_duplicate", "duplicate"], ["validation"]),
    "mnli": (["premise", "hypothesis"], ["entailment", "neutral", "contradiction"],
             ["validation_matched", "validation_mismatched"]),
    "qnli": (["question", "sentence"], ["entailment", "not_entailment"], ["validation"]),
    "rte": (["sentence1", "sentence2"], ["entailment", "not_entailment"], ["validation"]),
    "wnli": (["sentence1", "sentence2"], ["not_entailment", "entailment"], ["validation"]),
}


def glue_like(columns: list[str], names: list[str] | None, n: int, rng: random.Random, test: bool) -> datasets.Dataset:
    """Rows shaped like the hub's GLUE config: ClassLabel labels, float labels for STS-B, -1 on test."""
    label = datasets.ClassLabel(names=names) if names else datasets.Value("float32")
    features = datasets.Features({**{c: datasets.Value("string") for c in columns}, "label": label,
                                  "idx": datasets.Value("int32")})
    rows = []
    for i in range(n):
        value = (-1 if test else i % len(names)) if names else float(i % 6)
        sentiment = "positive" if (value if names else value > 2) else "negative"
        rows.append({**{c: sentence(rng, sentiment) for c in columns}, "label": value, "idx": i})
    return datasets.Dataset.from_list(rows, features=features)


@pytest.fixture(scope="module")
def glue_mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mirror")
    rng = random.Random(0)
    for config, (columns, names, eval_splits) in GLUE_SHAPES.items():
        splits = {"train": glue_like(columns, names, 48, rng, False)}
        splits.update({s: glue_like(columns, names, 24, rng, False) for s in eval_splits})
        splits.update({s.replace("validation", "test"): glue_like(columns, names, 8, rng, True) for s in eval_splits})
        datasets.DatasetDict(splits).save_to_disk(str(root / "nyu-mll" / "glue" / config))
    return root


def test_glue_suite_collects_offline_without_torch(pytester: pytest.Pytester) -> None:
    shutil.copy(SUITES / "glue.flex.yaml", pytester.path)
    pytester.makeconftest("import sys\ndef pytest_collection_finish(session):\n"
                          "    print('TORCH-IMPORTED' if 'torch' in sys.modules else 'TORCH-ABSENT')\n")
    result = pytester.runpytest_subprocess("--collect-only", "-q")
    result.stdout.fnmatch_lines(["glue.flex.yaml::tasks/cola[[]seed0]", "glue.flex.yaml::tasks/mnli[[]seed0]",
                                 "TORCH-ABSENT", "9 tests collected*"])


@pytest.fixture(scope="module")
def long_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT with room for the GLUE suite's max_length of 128 tokens."""
    return build_tiny_bert(tmp_path_factory.mktemp("long-tiny-bert"), positions=130)


def test_glue_suite_runs_every_task_from_local_copies(pytester: pytest.Pytester, glue_mirror: Path,
                                                      long_tiny_model: Path) -> None:
    shutil.copy(SUITES / "glue.flex.yaml", pytester.path)
    result = pytester.runpytest(f"--model={long_tiny_model}", f"--flex-data-dir={glue_mirror}", "--flex-epochs=1",
                                "--flex-json=out.json")
    result.assert_outcomes(passed=9, failed=1)  # a random tiny model cannot reach the GLUE gate
    doc = json.loads((pytester.path / "out.json").read_text())
    cases = {c["name"]: c for c in doc["cases"]}
    assert list(cases) == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli:validation_matched",
                           "mnli:validation_mismatched", "qnli", "rte", "wnli"]
    assert all(c["score"] is not None for c in cases.values())
    assert set(cases["stsb"]["metrics"]) == {"pearson", "spearman"}
    assert set(cases["mrpc"]["metrics"]) == {"f1", "accuracy"}
    assert cases["mnli:validation_matched"]["eval_examples"] == 24
    assert doc["aggregates"][0]["n"] == 10


PAIRS = """tasks:
  - {name: pair, dataset: pairs, metric: [f1, accuracy], train: {epochs: 6}}
  - {name: similarity, dataset: pairs_sts, metric: [pearson, spearman], train: {epochs: 6}}
gates:
  tasks: {p_avg: {min: 0.6}}
"""


def test_pair_and_regression_tasks_learn(pytester: pytest.Pytester, suite_text, tmp_path: Path) -> None:
    """The label lives in the second sentence only: a model that never sees the pair cannot learn it."""
    rng = random.Random(1)
    rows = []
    for i in range(400):
        sentiment = "positive" if i % 2 else "negative"
        rows.append({"first": sentence(rng, "neutral"),
                     "second": sentence(rng, sentiment), "label": int(i % 2),
                     "similarity": (4.0 if i % 2 else 1.0) + rng.uniform(-0.5, 0.5)})
    path = write_csv(tmp_path / "pairs.csv", rows)
    extra = (f"  pairs:\n    files: {{train: {path}}}\n    text: [first, second]\n"
             f"  pairs_sts:\n    files: {{train: {path}}}\n    text: [first, second]\n    label: similarity\n")
    pytester.makefile(".flex.yaml", toy=suite_text(PAIRS).replace("datasets:\n", "datasets:\n" + extra))
    result = pytester.runpytest("--flex-json=out.json")
    result.assert_outcomes(passed=3)
    cases = {c["name"]: c for c in json.loads((pytester.path / "out.json").read_text())["cases"]}
    assert cases["pair"]["metrics"]["accuracy"] > 0.8
    assert cases["similarity"]["metrics"]["pearson"] > 0.6
    assert cases["similarity"]["score"] == pytest.approx(sum(cases["similarity"]["metrics"].values()) / 2)
