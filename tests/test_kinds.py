"""Task kinds: the registry, the cache keys of existing suites, and each kind end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexharness.store.keys import case_fingerprint, digest, training_recipe
from flexharness.engine.kinds import KINDS, RegistryError
from flexharness.results.predictions import read_beside
from flexharness.suite.spec import Case, DatasetSpec, Filter, TrainConfig
from toy import choice_rows, sentiment_rows, tagged_rows, write_conll, write_jsonl


def _case(**dataset) -> Case:
    spec = DatasetSpec(name="reviews", files=(("train", "data/train.csv"),), base_dir="/x", **dataset)
    return Case(suite="toy", axis="tasks", name="polarity", dataset=spec, metrics=("accuracy",),
                train=TrainConfig(seeds=(0, 1)), where=(Filter("topic", values=("a",)),))


def test_cache_keys_of_existing_suites_are_the_keys_computed_before_kinds_existed() -> None:
    """The fingerprint was computed on main before the kind fields were added; the recipe digest again when the
    settings only evaluation reads left the recipe (the weights they never changed share one key now)."""
    case = _case()
    assert (case_fingerprint(case), digest(training_recipe(case))[:16]) == ("0d44a55981ff4a89", "1720efdf9331b10e")
    pair = DatasetSpec(name="pairs", hub=(("path", "glue"), ("name", "mrpc")), text=("sentence1", "sentence2"))
    lora = Case(suite="s", axis="tasks", name="mrpc", dataset=pair, metrics=("f1", "accuracy"),
                train=TrainConfig(method="lora"))
    assert (case_fingerprint(lora), digest(training_recipe(lora))[:16]) == ("d515c4be02a9636a", "d702efbc4518c951")


def test_another_kind_or_columns_change_the_key() -> None:
    base = case_fingerprint(_case())
    assert case_fingerprint(_case(kind="token_classification")) != base
    assert case_fingerprint(_case(columns=(("tokens", "words"),))) != base


def test_the_registry_refuses_taken_and_unknown_kinds() -> None:
    with pytest.raises(RegistryError, match="taken"):
        KINDS.register("sequence_classification", "somewhere:Else")
    with pytest.raises(RegistryError, match="did you mean 'sequence_classification'"):
        KINDS.get("sequence_clasification")
    with pytest.raises(RegistryError, match="module:ClassName"):
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
  - {{name: ner, dataset: ner, metric: [entity_f1, token_accuracy], slices: {{by: topic, values: [car, flight, game, phone]}}}}
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
    result.stdout.fnmatch_lines(["slices tasks/ner [[]*] by topic", "slice *range *n *score", "car *", "flight *",
                                 "game *", "phone *", "slices tasks/conll [[]*] by length", "slice *", "q1 *", "q2 *"])


def test_multiple_choice_runs_on_every_axis_and_its_stored_probabilities_give_its_score(
        pytester: pytest.Pytester, tiny_model: Path) -> None:
    """Choices as a list column with a stem, as named columns with the label as the choice's text, beside a
    sequence classification task in one P_avg; LoRA, domains with transfer, compression, an ensemble and a
    greedy soup, a learning curve, a stability grid, agreement slices."""
    write_jsonl(pytester.path / "mc" / "train.jsonl", choice_rows(160))
    write_jsonl(pytester.path / "mc" / "dev.jsonl", choice_rows(48, seed=1))
    write_jsonl(pytester.path / "reviews.jsonl", sentiment_rows(160))
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
  reviews: {{files: {{train: reviews.jsonl}}}}
tasks:
  - {{name: mc, dataset: mc, metric: accuracy, slices: {{by: agreement, bins: 2}}}}
  - {{name: polarity, dataset: reviews, metric: accuracy, train: {{seeds: [0]}}}}
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
stability: {{tasks: [mc], learning_rates: [3.0e-3, 1.0e-3], seeds: [0]}}
""")
    result = pytester.runpytest("--flex-json=out.json")
    result.assert_outcomes(passed=2 + 1 + 1 + 2 + 2 + 2 + 2 + 2)
    doc = json.loads((pytester.path / "out.json").read_text())
    cases = {(c["axis"], c["name"]): c for c in doc["cases"]}
    assert {c["kind"] for c in doc["cases"] if c["name"] != "polarity"} == {"multiple_choice"}
    assert cases[("tasks", "polarity")]["kind"] == "sequence_classification"
    tasks = next(a for a in doc["aggregates"] if a["axis"] == "tasks")
    assert tasks["n"] == 3 and tasks["p_avg"] == pytest.approx(np.mean(
        [cases[("tasks", name)]["score"] for name in ("mc", "named", "polarity")]))
    stored = _outputs(pytester.path / "out.json")
    own = [stored[("tasks", "mc", s)] for s in (0, 1)]
    assert all(a["outputs"].shape == (48, 3) and np.allclose(a["outputs"].sum(axis=1), 1, atol=1e-5) for a in own)
    accuracy = np.mean([(a["outputs"].argmax(axis=1) == a["labels"]).mean() for a in own])
    assert accuracy == pytest.approx(cases[("tasks", "mc")]["score"]) and accuracy > 0.8
    assert cases[("tasks", "named")]["score"] > 0.6
    assert {m["source"] for m in doc["transfer"]} == {"flight", "other"}
    assert cases[("fusion", "mc-ensemble")]["score"] > 0.8
    result.stdout.fnmatch_lines(["slices tasks/mc [[]*] by agreement", "slice *range *n *score"])


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


def test_a_decoder_lm_tags_words_and_says_plainly_that_it_has_no_multiple_choice_head(tmp_path: Path) -> None:
    from flexharness.axes import load_suite
    from flexharness.engine import runner
    from flexharness.errors import ModelLoadError
    from toy import build_tiny_decoder

    model = build_tiny_decoder(tmp_path / "gpt2", "gpt2")
    write_jsonl(tmp_path / "t.jsonl", tagged_rows(120))
    write_jsonl(tmp_path / "m.jsonl", choice_rows(20))
    path = tmp_path / "s.flex.yaml"
    path.write_text(f"suite: d\nmodel: {model}\n{RECIPE.replace('seeds: [0, 1]', 'seeds: [0]')}\ndatasets:\n"
                    "  ner: {kind: token_classification, files: {train: t.jsonl}}\n"
                    "  mc: {kind: multiple_choice, files: {train: m.jsonl}, context: context, choices: choices}\n"
                    "tasks:\n  - {name: ner, dataset: ner, metric: entity_f1}\n"
                    "  - {name: mc, dataset: mc, metric: accuracy}\n")
    ner, mc = load_suite(path).cases
    record = runner.run_case(ner, str(model), 0)
    assert record["score"] > record["majority_score"] + 0.2
    with pytest.raises(ModelLoadError, match="no AutoModelForMultipleChoice for its architecture"):
        runner.run_case(mc, str(model), 0)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2 ** 31 - 1), st.sampled_from(["IOB2", "IOBES"]))
def test_entity_scores_are_seqeval_s_and_a_resample_is_the_score_of_the_resampled_sentences(seed: int,
                                                                                            scheme: str) -> None:
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2, IOBES

    from flexharness.rules import tagging

    names = ["O", *(f"{p}-{t}" for t in ("LOC", "PER") for p in ("BIES" if scheme == "IOBES" else "BI"))]
    codes, _ = tagging.parse_tags(names, scheme)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 8, size=12)
    labels = np.full((12, 8), tagging.PAD)
    predictions = np.full((12, 8), tagging.PAD)
    for row, n in enumerate(lengths):
        labels[row, :n] = codes[rng.integers(0, len(codes), n)]
        predictions[row, :n] = np.where(rng.random(n) < 0.6, labels[row, :n], codes[rng.integers(0, len(codes), n)])
    gold, found = [tagging._strings(r) for r in labels], [tagging._strings(r) for r in predictions]
    strict = {"mode": "strict", "scheme": IOBES if scheme == "IOBES" else IOB2}
    expected = {"entity_f1": f1_score(gold, found), "entity_precision": precision_score(gold, found),
                "entity_recall": recall_score(gold, found), "token_accuracy": accuracy_score(gold, found),
                "entity_macro_f1": f1_score(gold, found, average="macro"),
                "entity_f1_strict": f1_score(gold, found, **strict)}
    if any(c in "ES" for tags in gold for c in (t[0] for t in tags if t != "O")) or scheme == "IOB2":
        for metric, value in expected.items():
            assert tagging.value(metric, labels, predictions) == pytest.approx(value)
    draw = rng.integers(0, 12, size=(3, 12))
    replicates = tagging.replicates("entity_f1", labels, predictions, draw)
    assert replicates[:, 0] == pytest.approx([tagging.value("entity_f1", labels[d], predictions[d]) for d in draw])


def test_windows_round_trip_through_the_token_cache_arrays(tiny_model: Path) -> None:
    from flexharness.engine import models
    from flexharness.engine.kinds import tagged
    from flexharness.rules import tagging

    rows = tagged_rows(10, long_every=3)
    names = sorted({t for r in rows for t in r["tags"]})
    codes, _ = tagging.parse_tags(names, "IOB2")
    classes = np.unique(np.concatenate([[0], codes]))
    examples = tagged.tagged([tuple(r["tokens"]) for r in rows],
                             [codes[[names.index(t) for t in r["tags"]]] for r in rows], np.arange(10), classes)
    tokenizer = models.load_tokenizer(str(tiny_model))
    windows = tagged.encode(examples, tokenizer, 16)
    assert windows.lengths.max() <= 16 and len(windows.lengths) > len(rows)       # long sentences are cut
    assert sum(int((w >= 0).sum()) for w in windows.token_words) == sum(len(r["tokens"]) for r in rows)
    arrays = windows.arrays()
    assert tagged.problem(arrays, examples, len(tokenizer), True) is None
    back = tagged.restored(arrays, examples, "k")
    assert all(np.array_equal(a, b) for a, b in zip(back.token_labels, windows.token_labels))
    assert np.array_equal(back.labels, tagged.word_labels(examples))
    perfect = [np.where(t >= 0, t, 0) for t in windows.token_labels]              # the gold class per position
    assert np.array_equal(tagged.gather(back, perfect), back.labels)
    arrays["sentence"] = arrays["sentence"] + 100
    assert tagged.problem(arrays, examples, len(tokenizer), True) == "windows of sentences that do not exist"


def test_a_hub_copy_with_tag_ids_reads_the_class_names_and_plain_ids_need_label_names(tmp_path: Path) -> None:
    """The conll2003 suite on a --flex-data-dir copy (tags as ClassLabel ids); plain ids need label_names."""
    import datasets

    from flexharness.axes import check_suite, load_suite
    from flexharness.engine import runner
    from flexharness.errors import DataError
    from flexharness.rules import tagging

    names = ["O", "B-POS", "I-POS", "B-NEG", "I-NEG", "B-TOP", "I-TOP"]
    labelled = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names))})

    def columns(rows: list[dict]) -> dict[str, list]:
        return {"tokens": [r["tokens"] for r in rows], "ner_tags": [[names.index(t) for t in r["tags"]] for r in rows]}

    rows = tagged_rows(30)
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(columns(rows), features=labelled),
                          "validation": datasets.Dataset.from_dict(columns(tagged_rows(6, seed=5)), features=labelled)
                          }).save_to_disk(str(tmp_path / "mirror" / "eriktks" / "conll2003" / "default"))
    suite = load_suite(Path(__file__).parents[1] / "suites" / "conll2003.flex.yaml", hub_mirror=str(tmp_path / "mirror"))
    check_suite(suite)
    prepared = runner.prepare(suite.cases[0])
    assert prepared.label_names == tuple(names) and prepared.eval_split == "validation"
    codes, _ = tagging.parse_tags(names, "IOB2")
    assert np.array_equal(prepared.train.tags[0], codes[[names.index(t) for t in rows[0]["tags"]]])

    datasets.DatasetDict({"train": datasets.Dataset.from_dict(columns(rows))}).save_to_disk(str(tmp_path / "ids"))
    path = tmp_path / "ids.flex.yaml"
    path.write_text("suite: ids\ndatasets:\n  d: {kind: token_classification, disk: ids, tags: ner_tags}\n"
                    "tasks:\n  - {name: t, dataset: d, metric: entity_f1}\n")
    with pytest.raises(DataError, match="holds tag ids, not tag names; list the names in id order"):
        check_suite(load_suite(path))
    path.write_text(path.read_text().replace("tags: ner_tags}", f"tags: ner_tags, label_names: {names}}}"))
    check_suite(load_suite(path))


def test_domains_of_different_kinds_are_refused_at_collection(tmp_path: Path) -> None:
    """Both kinds score accuracy, so the metric does not tell; the transfer targets' kinds do."""
    write_jsonl(tmp_path / "r.jsonl", sentiment_rows(40))
    write_jsonl(tmp_path / "m.jsonl", choice_rows(12))
    message = _check(tmp_path, "  d: {files: {train: r.jsonl}}\n"
                               "  m: {kind: multiple_choice, files: {train: m.jsonl}, context: context, choices: choices}\n",
                     "  - {name: t, dataset: d, metric: accuracy}\n"
                     "domains:\n  metric: accuracy\n  transfer: true\n  members:\n    a: {dataset: d}\n"
                     "    b: {dataset: m}\n")
    assert "dataset 'm' is 'kind: multiple_choice', and this case's model is a sequence_classification model" in message
