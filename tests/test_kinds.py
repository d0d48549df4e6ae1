"""Task kinds: the registry, the cache keys of existing suites, and each kind end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flexharness.cache import case_fingerprint, digest, training_recipe
from flexharness.engine.kinds import KINDS, KindRegistryError
from flexharness.results.predictions import read_beside
from flexharness.spec import Case, DatasetSpec, Filter, TrainConfig
from toy import choice_rows, tagged_rows, write_conll, write_jsonl


def _case(**dataset) -> Case:
    spec = DatasetSpec(name="reviews", files=(("train", "data/train.csv"),), base_dir="/x", **dataset)
    return Case(suite="toy", axis="tasks", name="polarity", dataset=spec, metrics=("accuracy",),
                train=TrainConfig(seeds=(0, 1)), where=(Filter("topic", values=("a",)),))


def test_cache_keys_of_existing_suites_are_the_keys_computed_before_kinds_existed() -> None:
    """The hex digests were computed on main before the kind fields were added."""
    case = _case()
    assert (case_fingerprint(case), digest(training_recipe(case))[:16]) == ("0d44a55981ff4a89", "d735422ff289a991")
    pair = DatasetSpec(name="pairs", hub=(("path", "glue"), ("name", "mrpc")), text=("sentence1", "sentence2"))
    lora = Case(suite="s", axis="tasks", name="mrpc", dataset=pair, metrics=("f1", "accuracy"),
                train=TrainConfig(method="lora"))
    assert (case_fingerprint(lora), digest(training_recipe(lora))[:16]) == ("d515c4be02a9636a", "ae5dbc0a2c30b60e")


def test_another_kind_or_columns_change_the_key() -> None:
    base = case_fingerprint(_case())
    assert case_fingerprint(_case(kind="token_classification")) != base
    assert case_fingerprint(_case(columns=(("tokens", "words"),))) != base


def test_the_registry_refuses_taken_and_unknown_kinds() -> None:
    with pytest.raises(KindRegistryError, match="taken"):
        KINDS.register("sequence_classification", "somewhere:Else")
    with pytest.raises(KindRegistryError, match="did you mean 'sequence_classification'"):
        KINDS.get("sequence_clasification")
    with pytest.raises(KindRegistryError, match="module:ClassName"):
        KINDS.register("loose", "no_colon_here")
    assert KINDS.keys()[0] == "sequence_classification"


RECIPE = "train: {epochs: 3, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, max_length: 24, seeds: [0, 1]}"


def _entity_f1(labels: np.ndarray, outputs: np.ndarray, strict: bool = False) -> float:
    """seqeval's own micro F1 on the stored codes, written out as tags: an independent computation."""
    from seqeval.metrics import f1_score
    from seqeval.scheme import IOBES

    def tags(row: np.ndarray) -> list[str]:
        return ["O" if c == 0 else f"{'BIES'[(c - 1) % 4]}-T{(c - 1) // 4}" for c in row[row != -100]]

    mode = {"mode": "strict", "scheme": IOBES} if strict else {}
    return f1_score([tags(r) for r in labels], [tags(r) for r in outputs], **mode)


def _outputs(path: Path) -> dict[tuple[str, str, int], dict[str, np.ndarray]]:
    """(axis, case, seed) -> the stored arrays of its case's own evaluation split."""
    found = {}
    for meta, arrays in read_beside(path):
        found[(meta["axis"], meta["case"], int(meta["seed"]))] = arrays
    return found


def test_tagging_runs_on_every_axis_and_its_stored_tags_give_its_score(
        pytester: pytest.Pytester, tiny_model: Path) -> None:
    """JSONL and CoNLL (IOBES) tagging, long sentences in windows, LoRA and head, domains with transfer,
    compression, output and weight fusion, learning curves, slices and intervals in one run."""
    write_jsonl(pytester.path / "ner" / "train.jsonl", tagged_rows(160, long_every=9))
    write_jsonl(pytester.path / "ner" / "dev.jsonl", tagged_rows(48, seed=1, long_every=6))
    write_conll(pytester.path / "conll" / "train.conll", tagged_rows(120, seed=2, scheme="IOBES"))
    write_conll(pytester.path / "conll" / "dev.conll", tagged_rows(40, seed=3, scheme="IOBES"))
    pytester.makefile(".flex.yaml", toy=f"""suite: toy
model: {tiny_model}
{RECIPE}
datasets:
  ner: {{kind: token_classification, files: {{train: ner/train.jsonl, dev: ner/dev.jsonl}}}}
  conll: {{kind: token_classification, files: {{train: conll/train.conll, dev: conll/dev.conll}}, tag_scheme: IOBES}}
tasks:
  - {{name: ner, dataset: ner, metric: [entity_f1, token_accuracy], slices: {{by: topic, bins: 2}}}}
  - {{name: conll, dataset: conll, metric: entity_f1_strict, slices: {{by: length, bins: 2}},
      train: {{epochs: 8, batch_size: 8}}}}
  - {{name: adapt, dataset: ner, metric: entity_f1, train: {{method: [lora, head], seeds: [0]}}}}
domains:
  dataset: ner
  metric: entity_f1
  transfer: true
  train: {{seeds: [0]}}
  members:
    flight: {{where: {{topic: flight}}}}
    phone: {{where: {{topic: [phone, car, game]}}}}
compression:
  task: ner
  train: {{seeds: [0]}}
  methods: [{{method: magnitude, sparsity: 0.5}}, {{method: heads, fraction: 0.5}}, {{method: layers, keep: 1}}, {{method: int8}}]
fusion: {{task: ner, methods: [ensemble, uniform_soup]}}
efficiency: {{task: ner, sizes: [24, 96], seeds: [0]}}
""")
    result = pytester.runpytest("--flex-json=out.json", "-p", "no:randomly")
    result.assert_outcomes(passed=2 * 2 + 2 + 2 + 4 + 2 + 2)
    doc = json.loads((pytester.path / "out.json").read_text())
    cases = {(c["axis"], c["name"]): c for c in doc["cases"]}
    assert {c["kind"] for c in doc["cases"]} == {"token_classification"}
    ner = cases[("tasks", "ner")]
    assert ner["metrics"]["entity_f1"] > 0.5 and ner["interval"]["low"] <= ner["score"] <= ner["interval"]["high"]
    stored = _outputs(pytester.path / "out.json")
    for seed in (0, 1):
        arrays = stored[("tasks", "ner", seed)]
        assert arrays["labels"].shape == arrays["outputs"].shape            # every word of every sentence
        assert (arrays["labels"] != -100).sum() == (arrays["outputs"] != -100).sum()
    own = [_entity_f1(stored[("tasks", "ner", s)]["labels"], stored[("tasks", "ner", s)]["outputs"]) for s in (0, 1)]
    assert np.mean(own) == pytest.approx(ner["metrics"]["entity_f1"])
    conll = cases[("tasks", "conll")]
    strict = [_entity_f1(stored[("tasks", "conll", s)]["labels"], stored[("tasks", "conll", s)]["outputs"], True)
              for s in (0, 1)]
    assert np.mean(strict) == pytest.approx(conll["score"]) and conll["score"] > 0.3
    assert {m["source"] for m in doc["transfer"]} == {"flight", "phone"}
    assert all(c["retention"] is not None for (axis, _), c in cases.items() if axis == "compression")
    assert {name for axis, name in cases if axis == "fusion"} == {"ner-ensemble", "ner-uniform_soup"}
    assert {(a, n) for a, n in cases if a == "tasks"} >= {("tasks", "adapt-lora"), ("tasks", "adapt-head")}
    result.stdout.fnmatch_lines(["slices tasks/ner [[]*] by topic: car * flight * game * phone *",
                                 "slices tasks/conll [[]*] by length: q1 * q2 *"])


def test_multiple_choice_runs_on_every_axis_and_its_stored_probabilities_give_its_score(
        pytester: pytest.Pytester, tiny_model: Path) -> None:
    """Choices as a list column with a stem, as named columns with the label as the choice's text; LoRA,
    domains with transfer, compression, an ensemble and a greedy soup, a learning curve, agreement slices."""
    write_jsonl(pytester.path / "mc" / "train.jsonl", choice_rows(160))
    write_jsonl(pytester.path / "mc" / "dev.jsonl", choice_rows(48, seed=1))
    pytester.makefile(".flex.yaml", toy=f"""suite: toy
model: {tiny_model}
{RECIPE}
datasets:
  mc:
    kind: multiple_choice
    files: {{train: mc/train.jsonl, dev: mc/dev.jsonl}}
    context: context
    question: stem
    choices: choices
  named:
    kind: multiple_choice
    files: {{train: mc/train.jsonl, dev: mc/dev.jsonl}}
    context: context
    choices: [choice0, choice1, choice2]
    label: answer
tasks:
  - {{name: mc, dataset: mc, metric: accuracy, slices: {{by: agreement, bins: 2}}}}
  - {{name: named, dataset: named, metric: accuracy, train: {{method: lora, learning_rate: 1.0e-2, seeds: [0]}}}}
domains:
  dataset: mc
  metric: accuracy
  transfer: true
  train: {{seeds: [0]}}
  members:
    flight: {{where: {{context: {{matches: flight}}}}}}
    other: {{where: {{context: {{matches: "^(?!.*flight)"}}}}}}
compression: {{task: mc, train: {{seeds: [0]}}, methods: [{{method: magnitude, sparsity: 0.5}}, {{method: int8}}]}}
fusion: {{task: mc, methods: [ensemble, greedy_soup]}}
efficiency: {{task: mc, sizes: [16, 96], seeds: [0]}}
""")
    result = pytester.runpytest("--flex-json=out.json")
    result.assert_outcomes(passed=2 + 1 + 2 + 2 + 2 + 2)
    doc = json.loads((pytester.path / "out.json").read_text())
    cases = {(c["axis"], c["name"]): c for c in doc["cases"]}
    assert {c["kind"] for c in doc["cases"]} == {"multiple_choice"}
    stored = _outputs(pytester.path / "out.json")
    own = [stored[("tasks", "mc", s)] for s in (0, 1)]
    assert all(a["outputs"].shape == (48, 3) and np.allclose(a["outputs"].sum(axis=1), 1, atol=1e-5) for a in own)
    accuracy = np.mean([(a["outputs"].argmax(axis=1) == a["labels"]).mean() for a in own])
    assert accuracy == pytest.approx(cases[("tasks", "mc")]["score"]) and accuracy > 0.8
    assert cases[("tasks", "named")]["score"] > 0.6
    assert {m["source"] for m in doc["transfer"]} == {"flight", "other"}
    assert cases[("fusion", "mc-ensemble")]["score"] > 0.8
    result.stdout.fnmatch_lines(["slices tasks/mc [[]*] by agreement: *"])


def _check(tmp_path: Path, datasets: str, tasks: str) -> str:
    """The located error that reading and checking a suite gives (no model is loaded)."""
    from flexharness.axes import check_suite, load_suite
    from flexharness.errors import FlexError

    path = tmp_path / "bad.flex.yaml"
    path.write_text(f"suite: bad\nmodel: none\ndatasets:\n{datasets}tasks:\n{tasks}")
    with pytest.raises(FlexError) as caught:
        check_suite(load_suite(path))
    return str(caught.value).replace(str(path), "bad.flex.yaml")


HOSTILE = {
    "unknown kind": ("  d: {kind: token_clasification, files: {train: t.jsonl}}\n", "ner",
                     "bad.flex.yaml:4: datasets.d.kind: unknown task kind 'token_clasification' (did you mean "
                     "'token_classification'?)"),
    "missing column": ("  d: {kind: token_classification, files: {train: t.jsonl}, tokens: words}\n", "ner",
                       "bad.flex.yaml:4: datasets.d.tokens: split 'train' has no column 'words'"),
    "scheme of the data": ("  d: {kind: token_classification, files: {train: t.jsonl}, tag_scheme: IOBES}\n", "odd",
                           "datasets.d.tag_scheme: dataset 'd': 2 of 5 tags are neither 'O' nor PREFIX-TYPE"),
    "scheme seqeval lacks": ("  d: {kind: token_classification, files: {train: t.jsonl}, tag_scheme: BIO}\n", "ner",
                             "datasets.d.tag_scheme: seqeval reads IOB1, IOB2, IOBES, not 'BIO'"),
    "wrong metric": ("  d: {kind: token_classification, files: {train: t.jsonl}}\n", "ner-accuracy",
                     "metric 'accuracy' does not score a token_classification task"),
    "tags and words differ": ("  d: {kind: token_classification, files: {train: t.jsonl}}\n", "short",
                              "datasets.d.tags: split 'train': 1 rows do not hold a list of words"),
    "unequal choices": ("  d: {kind: multiple_choice, files: {train: t.jsonl}, context: context, choices: choices}\n",
                        "mc", "datasets.d.choices: split 'train': items have different numbers of choices (2, 3)"),
    "label not a choice": ("  d: {kind: multiple_choice, files: {train: t.jsonl}, context: context, choices: choices, "
                           "label: answer}\n", "mc", "datasets.d.label: split 'train': 1 rows have a label that is "
                                                     "neither the index of a choice nor the text of one"),
    "malformed CoNLL": ("  d: {kind: token_classification, files: {train: t.conll}}\n", "ner",
                        "CoNLL file of split 'train', line 3: no token and tag column -1"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_bad_kind_input_is_a_located_error_at_collection(tmp_path: Path, case: str) -> None:
    datasets, data, expected = HOSTILE[case]
    rows = tagged_rows(12)
    if data == "odd":
        rows = [{"tokens": ["a", "b", "c"], "tags": ["O", "B-X", "E-X"]}] * 6 + [
            {"tokens": ["a", "b", "c"], "tags": ["O", "U-X", "L-X"]}] * 6
    if data == "short":
        rows[3]["tags"] = rows[3]["tags"][:-1]
    if data == "mc":
        rows = choice_rows(12)
        rows[5]["choices"] = rows[5]["choices"][:2] if "label:" not in datasets else rows[5]["choices"]
        rows[5]["answer"] = "not one of them" if "label:" in datasets else rows[5]["answer"]
        rows[5]["label"] = 0
    write_jsonl(tmp_path / "t.jsonl", rows)
    (tmp_path / "t.conll").write_text("a X O\nb X B-X\nlonely\n")
    task = {"ner-accuracy": "accuracy"}.get(data, "entity_f1" if "token" in datasets else "accuracy")
    message = _check(tmp_path, datasets, f"  - {{name: t, dataset: d, metric: {task}}}\n")
    assert expected in message
    assert "U-X" not in message and "not one of them" not in message   # no value from the data
