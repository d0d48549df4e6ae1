"""QA rows read through real ``datasets`` loaders: SQuAD layout and flat columns, and refused bad rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flexharness.engine.qa_data import Columns, read_questions
from flexharness.errors import DataError

WHERE = ("suite.flex.yaml", 7, "datasets.qa")
ROWS = [
    {"question": "what was great", "context": "the movie was great", "answers": {"text": ["great"], "answer_start": [14]}},
    {"question": "who", "context": "the actor was sad", "answers": {"text": ["actor", "the actor"], "answer_start": [4, 0]}},
    {"question": "nothing here", "context": "a plot", "answers": {"text": [], "answer_start": []}},
]


def split_of(path: Path, rows: list[dict], form: str):
    import datasets

    if form == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return datasets.load_dataset("json", data_files=str(path), split="train")
    table = datasets.Dataset.from_list(rows)
    if form == "parquet":
        table.to_parquet(str(path))
        return datasets.load_dataset("parquet", data_files=str(path), split="train")
    table.save_to_disk(str(path))
    return datasets.load_from_disk(str(path))


def read(split, columns: Columns = Columns()):
    return read_questions(split.to_dict(), columns, np.arange(len(split)), "train", WHERE)


@pytest.mark.parametrize("form", ["jsonl", "parquet", "disk"])
def test_squad_layout_from_each_format(tmp_path: Path, form: str) -> None:
    questions = read(split_of(tmp_path / f"qa.{form}", ROWS, form))
    assert questions.answers == (("great",), ("actor", "the actor"), ())
    assert questions.starts == ((14,), (4, 0), ())
    assert list(questions.answerable) == [True, True, False]
    picked = questions.take(np.array([2, 0]))
    assert picked.questions == ("nothing here", "what was great") and list(picked.rows) == [2, 0]


def test_flat_columns_from_csv_with_gaps(tmp_path: Path) -> None:
    import datasets

    path = tmp_path / "qa.csv"
    path.write_text("q,c,answer,start\nwhat,the movie was great,great,14\nnone,a plot,,\n", encoding="utf-8")
    split = datasets.load_dataset("csv", data_files=str(path), split="train")
    questions = read(split, Columns("q", "c", None, "answer", "start"))
    assert questions.answers == (("great",), ()) and questions.starts == ((14,), ())


def test_wrong_answer_starts_are_counted_and_refused(tmp_path: Path) -> None:
    rows = [dict(ROWS[0], answers={"text": ["great"], "answer_start": [13]}), ROWS[1],
            dict(ROWS[1], answers={"text": ["actor", "sad"], "answer_start": [4, 99]})]
    with pytest.raises(DataError) as info:
        read(split_of(tmp_path / "qa.jsonl", rows, "jsonl"))
    message = str(info.value)
    assert message.startswith("suite.flex.yaml:7: datasets.qa: split 'train': 2 of 5 answers do not sit where")
    assert "great" not in message and "sad" not in message     # counts, never the data's values


@pytest.mark.parametrize("bad", [
    {"text": ["great"], "answer_start": []},
    {"text": "great", "answer_start": 14},
    {"text": [1], "answer_start": [14]},
])
def test_answers_that_are_not_squad_answers(bad: dict) -> None:
    table = {"question": ["q"], "context": ["the movie was great"], "answers": [bad]}
    with pytest.raises(DataError, match=r"column 'answers' holds 1 value that are not SQuAD answers"):
        read_questions(table, Columns(), np.arange(1), "train", WHERE)


def test_empty_or_mistyped_text_columns() -> None:
    table = {"question": ["q", "  ", 3], "context": ["c"] * 3, "answers": [{"text": [], "answer_start": []}] * 3}
    with pytest.raises(DataError, match=r"column 'question' holds 2 values that are not non-empty text"):
        read_questions(table, Columns(), np.arange(3), "train", WHERE)


def test_flat_answer_without_a_start() -> None:
    table = {"question": ["q"], "context": ["great"], "a": ["great"], "s": [None]}
    with pytest.raises(DataError, match=r"1 row of columns 'a' and 's' are not an answer text with an integer"):
        read_questions(table, Columns(answers=None, answer_text="a", answer_start="s"), np.arange(1), "eval", WHERE)
