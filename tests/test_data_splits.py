"""One end of data preparation for every task kind (``data.split_rows``): a hold-out the harness makes keeps
every group of rows with one text on one side and counts the repeats; the overlap check guards only the
evaluation splits a user names; subsampling and the size check are the same for every kind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexharness.axes import load_suite
from flexharness.engine import data, kinds
from flexharness.errors import DataError
from flexharness.rules.metrics import CLASSIFICATION
from toy import choice_rows, tagged_rows
from toy_qa import qa_rows

KEYS = {"extractive_qa": "", "token_classification": "",
        "multiple_choice": ", context: context, question: stem, choices: choices"}
METRIC = {"extractive_qa": "squad_f1", "token_classification": "entity_f1", "multiple_choice": "accuracy"}


def repeated_rows(kind: str) -> tuple[list[dict], int]:
    """(rows, how many distinct hold-out texts): every text three times, once as another row of the same text
    (another question on the context, the sentence tagged otherwise, another stem for the item), once copied."""
    if kind == "extractive_qa":
        rows = qa_rows(40)
        return rows + [{**row, "question": "which word"} for row in rows] + rows, 40
    if kind == "token_classification":
        rows = tagged_rows(40)
        return rows + [{**row, "tags": ["O"] * len(row["tokens"])} for row in rows] + rows, \
            len({tuple(row["tokens"]) for row in rows})
    rows = choice_rows(40)
    return rows + [{**row, "stem": row["stem"] + " then"} for row in rows] + rows, 40


def group_text(kind: str, examples: data.Examples) -> list[tuple[str, ...]]:
    """What the test expects to stay on one side, read from the examples' own fields."""
    if kind == "extractive_qa":
        return [data.text_key((c,)) for c in examples.contexts]
    if kind == "token_classification":
        return [data.text_key((" ".join(words),)) for words in examples.words]
    return [data.text_key((c, "\x1f".join(item))) for c, item in zip(examples.texts[0], examples.choices)]


def prepared_case(tmp_path: Path, kind: str, train: list[dict], other: list[dict] | None = None):
    """(kind, case) of a suite whose dataset holds ``train`` and, given ``other``, an 'eval' split of it."""
    for name, rows in (("train", train), ("eval", other)):
        if rows is not None:
            (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    files = "{train: train.jsonl" + (", eval: eval.jsonl}" if other is not None else "}")
    suite = tmp_path / "s.flex.yaml"
    suite.write_text(f"suite: s\nmodel: m\ndatasets:\n  rows: {{files: {files}, kind: {kind}{KEYS[kind]}}}\n"
                     f"tasks:\n  - {{name: t, dataset: rows, metric: {METRIC[kind]}}}\n")
    case = load_suite(suite).cases[0]
    return kinds.of(case), case


@pytest.mark.parametrize("kind", list(KEYS))
def test_a_hold_out_of_each_kind_keeps_rows_of_one_text_on_one_side_and_counts_the_repeats(
        tmp_path: Path, kind: str) -> None:
    rows, distinct = repeated_rows(kind)
    reader, case = prepared_case(tmp_path, kind, rows)
    prepared = reader.prepare(case.dataset, case.where, case.label_kind, None, None)   # no overlap error
    trained = set(group_text(kind, prepared.train))
    held = group_text(kind, prepared.eval)
    assert prepared.eval_split == "held-out 0.2 of train"
    assert held and not trained & set(held)
    assert prepared.held_out_copies == len(rows) - distinct
    assert len(prepared.train) + len(prepared.eval) == len(rows)


@pytest.mark.parametrize("kind", list(KEYS))
def test_an_evaluation_split_a_user_names_that_copies_training_is_a_located_error_in_each_kind(
        tmp_path: Path, kind: str) -> None:
    rows, _ = repeated_rows(kind)
    reader, case = prepared_case(tmp_path, kind, rows, rows[:30])
    with pytest.raises(DataError, match=r"dataset 'rows': 30 of 30 rows of the evaluation split 'eval' \(100%\) "
                                        r"are exact copies of training rows, more than the 20% allowed") as info:
        reader.prepare(case.dataset, case.where, case.label_kind, None, None)
    assert (info.value.path, info.value.line, info.value.key) == (str(tmp_path / "s.flex.yaml"), 4, "datasets.rows")


@pytest.mark.parametrize(("kind", "noun"), [("extractive_qa", "questions"), ("token_classification", "sentences"),
                                            ("multiple_choice", "items")])
def test_every_kind_subsamples_and_checks_sizes_alike(tmp_path: Path, kind: str, noun: str) -> None:
    rows, _ = repeated_rows(kind)
    reader, case = prepared_case(tmp_path, kind, rows)
    prepared = reader.prepare(case.dataset, case.where, case.label_kind, 20, 5)
    assert (len(prepared.train), len(prepared.eval)) == (20, 5)
    assert prepared.train.rows.tolist() == sorted(prepared.train.rows.tolist())   # a subset, in the data's order
    with pytest.raises(DataError, match=rf"max_train_samples 1 \(in the suite, or --flex-max-train-samples\) keeps "
                                        rf"fewer training {noun} than the 2 a case needs; raise it"):
        reader.prepare(case.dataset, case.where, case.label_kind, 1, None)


def test_a_qa_hold_out_and_subsample_keep_the_share_of_unanswerable_questions(tmp_path: Path) -> None:
    rows = qa_rows(400, unanswerable=0.25)
    reader, case = prepared_case(tmp_path, "extractive_qa", rows)
    prepared = reader.prepare(case.dataset, case.where, case.label_kind, 100, 40)
    share = 1 - float(np.mean([bool(row["answers"]["text"]) for row in rows]))
    for examples, size in ((prepared.train, 100), (prepared.eval, 40)):
        assert abs((1 - examples.answerable.mean()) - share) <= 1 / size   # largest-remainder rounding


@settings(max_examples=60, deadline=None)
@given(groups=st.lists(st.integers(0, 11), min_size=2, max_size=60), labels=st.lists(st.integers(0, 2), min_size=60,
                                                                                     max_size=60),
       fraction=st.floats(0.05, 0.6))
def test_hold_out_never_splits_a_group_and_counts_its_repeats(groups: list[int], labels: list[int],
                                                              fraction: float) -> None:
    n = len(groups)
    rows = data.Examples((tuple(f"row {i}" for i in range(n)),), np.asarray(labels[:n], dtype=np.int64),
                         np.arange(n, dtype=np.int64))
    texts = [(f"Text  {g}" if i % 2 else f"text {g}",) for i, g in enumerate(groups)]   # one text, spelt two ways
    rest, held, copies = data.hold_out(rows, fraction, CLASSIFICATION, texts=texts)
    assert sorted([*rest.rows.tolist(), *held.rows.tolist()]) == list(range(n))
    assert not {groups[i] for i in rest.rows} & {groups[i] for i in held.rows}
    assert copies == n - len(set(groups))
    plain = data.hold_out(rows, fraction, CLASSIFICATION)   # every row its own text: the plain stratified draw
    drawn = data.stratified_indices(rows.labels, data.hold_out_size(n, fraction), np.random.default_rng(data.DATA_SEED),
                                    stratify=True)
    assert plain[1].rows.tolist() == drawn.tolist() and plain[2] == 0
