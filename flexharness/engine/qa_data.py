"""Extractive-QA rows from a dataset split: question, context and answers, checked before anything trains.

Two layouts are read. SQuAD's: one column of answers, each row a mapping
``{text: [...], answer_start: [...]}`` (empty lists: no answer, SQuAD v2.0).
Flat: one column of answer text and one of its start character, one answer per
row (an empty or missing text, or a start of -1, is no answer). Every answer's
``answer_start`` must point at its text in the context; the ones that do not
are counted and refused, never trained on. Messages name columns and counts,
never a value of the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from flexharness.engine.qa_spans import span_mismatches
from flexharness.errors import DataError

Location = tuple[str, "int | None", str]


@dataclass(frozen=True)
class Columns:
    """Which columns hold the parts; ``answers`` (SQuAD layout) or ``answer_text`` + ``answer_start`` (flat)."""

    question: str = "question"
    context: str = "context"
    answers: str | None = "answers"
    answer_text: str | None = None
    answer_start: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c for c in (self.question, self.context, self.answers, self.answer_text, self.answer_start) if c)


@dataclass(frozen=True, eq=False)
class Questions:
    questions: tuple[str, ...]
    contexts: tuple[str, ...]
    texts: tuple[tuple[str, ...], ...]   # the gold answers of each question (empty: no answer)
    starts: tuple[tuple[int, ...], ...]
    rows: np.ndarray                     # each question's row in its source split

    def __len__(self) -> int:
        return len(self.questions)

    def take(self, indices: np.ndarray) -> "Questions":
        pick = [int(i) for i in indices]
        return Questions(*(tuple(part[i] for i in pick) for part in (self.questions, self.contexts, self.texts,
                                                                        self.starts)), self.rows[indices])

    @property
    def answerable(self) -> np.ndarray:
        return np.array([len(t) > 0 for t in self.texts], dtype=bool)


def read_questions(table: Mapping[str, Sequence[Any]], columns: Columns, rows: np.ndarray, split: str,
                   where: Location) -> Questions:
    """The questions of ``rows`` of a split read as a column table; a :class:`DataError` at ``where`` on bad rows."""
    questions = _strings(table[columns.question], rows, split, columns.question, where)
    contexts = _strings(table[columns.context], rows, split, columns.context, where)
    if columns.answers:
        texts, starts = _squad_answers(table[columns.answers], rows, split, columns.answers, where)
    else:
        texts, starts = _flat_answers(table[columns.answer_text], table[columns.answer_start], rows, split,
                                      columns, where)
    wrong = span_mismatches(contexts, texts, starts)
    if wrong:
        total = sum(len(t) for t in texts)
        raise DataError(f"split '{split}': {wrong} of {total} answers do not sit where their answer_start says "
                        "(context[answer_start:answer_start + len(text)] is not the text); fix the starts, "
                        "or drop those rows with 'where'", *where)
    return Questions(tuple(questions), tuple(contexts), texts, starts, rows)


def _strings(values: Sequence[Any], rows: np.ndarray, split: str, column: str, where: Location) -> list[str]:
    picked = [values[int(i)] for i in rows]
    bad = sum(not isinstance(v, str) or not v.strip() for v in picked)
    if bad:
        raise DataError(f"split '{split}': column '{column}' holds {bad} value{'s' if bad > 1 else ''} that "
                        "are not non-empty text", *where)
    return picked


def _squad_answers(values: Sequence[Any], rows: np.ndarray, split: str, column: str, where: Location
                   ) -> tuple[tuple[tuple[str, ...], ...], tuple[tuple[int, ...], ...]]:
    texts, starts, bad = [], [], 0
    for i in rows:
        value = values[int(i)]
        text = value.get("text") if isinstance(value, Mapping) else None
        start = value.get("answer_start") if isinstance(value, Mapping) else None
        if not _listed(text, str) or not _listed(start, int) or len(text) != len(start):
            bad += 1
            text, start = [], []
        texts.append(tuple(text))
        starts.append(tuple(int(s) for s in start))
    if bad:
        raise DataError(f"split '{split}': column '{column}' holds {bad} value{'s' if bad > 1 else ''} that are "
                        "not SQuAD answers ({text: [strings], answer_start: [integers]}, lists of one length)",
                        *where)
    return tuple(texts), tuple(starts)


def _listed(value: Any, kind: type) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)


def _flat_answers(text_values: Sequence[Any], start_values: Sequence[Any], rows: np.ndarray, split: str,
                  columns: Columns, where: Location) -> tuple[tuple[tuple[str, ...], ...], tuple[tuple[int, ...], ...]]:
    texts, starts, bad = [], [], 0
    for i in rows:
        text, start = text_values[int(i)], _integral(start_values[int(i)])
        if _missing(text) or text == "":
            texts.append(())
            starts.append(())
        elif isinstance(text, str) and start is not None:
            texts.append((text,))
            starts.append((start,))
        else:
            bad += 1
    if bad:
        raise DataError(f"split '{split}': {bad} row{'s' if bad > 1 else ''} of columns '{columns.answer_text}' "
                        f"and '{columns.answer_start}' are not an answer text with an integer start (an empty "
                        "or missing text means no answer)", *where)
    return tuple(texts), tuple(starts)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _integral(value: Any) -> int | None:
    """An integer start as CSV readers give it (an int, or a whole float in a column with gaps), else None."""
    if isinstance(value, bool) or _missing(value):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    return int(value) if isinstance(value, float) and value.is_integer() else None
