"""Extractive-QA rows from a dataset split: question, context and answers, checked before anything trains.

Two layouts are read. SQuAD's: one column of answers, each row a mapping
``{text: [...], answer_start: [...]}`` (empty lists: no answer, SQuAD v2.0).
Flat: one column of answer text and one of its start character, one answer per
row (an empty or missing text is no answer). Every answer's
``answer_start`` must point at its text in the context; the ones that do not
are counted and refused, never trained on. Messages name columns and counts,
never a value of the data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from flexharness.engine import data
from flexharness.engine.data import Examples, Prepared
from flexharness.engine.qa_spans import Settings, Windows, encode_windows, first_answer_spans, span_mismatches
from flexharness.errors import DataError
from flexharness.rules.squad import ANSWER_SEPARATOR
from flexharness.suite.spec import DatasetSpec, Filter

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
class Questions(Examples):
    """Examples whose ``texts`` are (questions, contexts) and whose ``labels`` are the gold answers, joined."""

    answers: tuple[tuple[str, ...], ...] = ()   # the gold answers of each question (empty: no answer)
    starts: tuple[tuple[int, ...], ...] = ()
    settings: Settings = Settings()              # how they are windowed and answered

    @classmethod
    def of(cls, questions: Sequence[str], contexts: Sequence[str], answers: Sequence[Sequence[str]],
           starts: Sequence[Sequence[int]], rows: np.ndarray) -> "Questions":
        return cls((tuple(questions), tuple(contexts)), gold_labels(answers), rows,
                   tuple(tuple(a) for a in answers), tuple(tuple(s) for s in starts))

    @property
    def questions(self) -> tuple[str, ...]:
        return self.texts[0]

    @property
    def contexts(self) -> tuple[str, ...]:
        return self.texts[1]

    def take(self, indices: np.ndarray) -> "Questions":
        pick = [int(i) for i in indices]
        parts = ([part[i] for i in pick] for part in (self.questions, self.contexts, self.answers, self.starts))
        rows = self.rows[indices] if self.rows is not None else np.asarray(pick, dtype=np.int64)
        return replace(Questions.of(*parts, rows), settings=self.settings)

    def windows(self, tokenizer: Any, max_length: int) -> Windows:
        """These questions as labelled token windows, ready for batches and post-processing."""
        spans = first_answer_spans(self.answers, self.starts)
        found = encode_windows(tokenizer, self.questions, self.contexts, spans, max_length,
                               self.settings.stride(max_length))
        return replace(found, labels=self.labels, settings=self.settings)

    def without_tokens(self) -> Windows:
        """Windows that hold only what the token arrays do not (contexts, labels, settings): for ``restored``."""
        return Windows((), None, np.zeros(0, np.int64), self.labels, contexts=self.contexts, settings=self.settings)

    @property
    def answerable(self) -> np.ndarray:
        return np.array([len(t) > 0 for t in self.answers], dtype=bool)


def gold_labels(answers: Sequence[Sequence[str]]) -> np.ndarray:
    """Each question's gold answers as one string (``rules.squad.ANSWER_SEPARATOR`` between them): the stored
    labels that the metrics read, one per question."""
    return text_array([ANSWER_SEPARATOR.join(a) for a in answers])


def text_array(texts: Sequence[str]) -> np.ndarray:
    """A numpy unicode array (stored and read without pickle), also of no or only empty strings."""
    return np.array(list(texts) or [""], dtype=str)[:len(texts)]


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
    separated = sum(ANSWER_SEPARATOR in t for answer_texts in texts for t in answer_texts)
    if separated:
        raise DataError(f"split '{split}': {separated} answers hold the control character U+001F, which "
                        "flexharness keeps between gold answers; remove it", *where)
    wrong = span_mismatches(contexts, texts, starts)
    if wrong:
        total = sum(len(t) for t in texts)
        raise DataError(f"split '{split}': {wrong} of {total} answers do not sit where their answer_start says "
                        "(context[answer_start:answer_start + len(text)] is not the text); fix the starts, "
                        "or drop those rows with 'where'", *where)
    return Questions.of(questions, contexts, texts, starts, rows)


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


def answerable(questions: Questions) -> np.ndarray:
    """One label per question, answerable or not: subsets and hold-outs keep the share of unanswerable ones."""
    return questions.answerable.astype(np.int64)


def _contexts(questions: Questions) -> Iterable[tuple[str]]:
    """Questions on one context stay on one side of a hold-out: a model trained on a passage is not scored on it."""
    return ((context,) for context in questions.contexts)


QUESTIONS = data.RowKind("questions", strata=answerable, texts=_contexts)


def prepare(spec: DatasetSpec, where: tuple[Filter, ...], columns: Columns, settings: Settings,
            max_train: int | None, max_eval: int | None) -> Prepared:
    """A QA case's questions: filtered, evaluation split chosen or held out, subsampled (by question)."""
    source = data.load_source(spec)
    train = _split(spec, data.train_split(spec, source), where, columns, spec.train_split)
    settings = replace(settings, with_null=not bool(train.answerable.all()))
    evals = [(name, replace(_split(spec, source[name], where, columns, name), settings=settings))
             for name in data.eval_split_names(spec, source)]
    return data.split_rows(spec, where, replace(train, settings=settings), evals, None, max_train, max_eval, QUESTIONS)


def _split(spec: DatasetSpec, split: Any, where: tuple[Filter, ...], columns: Columns, name: str) -> Questions:
    """The questions of one split that ``where`` keeps."""
    present = set(split.column_names)
    for needed in (*columns.names, *(f.column for f in where)):
        if needed not in present:
            raise DataError(f"split '{name}' has no column '{needed}' ({len(present)} columns, none of that name); "
                            "name a column the data has", *spec.locate("kind"))
    table = split.select_columns(sorted({*columns.names, *(f.column for f in where)})).to_dict()
    size = len(table[columns.question])
    kept = np.array([i for i in range(size) if all(data._passes(f, table[f.column][i]) for f in where)],
                    dtype=np.int64)
    return read_questions(table, columns, kept, name, spec.locate("kind"))
