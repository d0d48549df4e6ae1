"""Extractive QA: question + context windows, answer spans as token positions, and answers back out.

A context longer than ``max_length`` allows is split into overlapping windows
(``doc_stride`` tokens shared by neighbours) with the fast tokenizer's
``return_overflowing_tokens``; each window repeats the question. An answer maps
to the context tokens that cover its characters in a window that holds all of
it, and to the null position (index 0: [CLS] for BERT-like models, the first
token elsewhere) in the windows that do not. Post-processing follows
transformers' ``postprocess_qa_predictions`` (``examples/pytorch/question-answering/utils_qa.py``):
the ``n_best`` start and end logits of every window, spans of at most
``max_answer_length`` tokens inside the context, the best over all windows of
a question, mapped back to characters of the original context; with no-answer
questions (SQuAD v2.0) the answer is empty when the null score beats the best
span's by more than ``null_threshold``. Windows are padded on the right at
collation, so token positions computed here stay valid in a batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from flexharness.engine.data import Encoded
from flexharness.errors import DataError

NULL = 0          # the token position of "no answer in this window"
NOT_CONTEXT = -1  # offsets of the tokens that are not context (question, special tokens, padding)
N_BEST = 20
MAX_ANSWER_LENGTH = 30
TOKEN_ARRAYS = ("input_ids", "offsets", "token_type_ids")


@dataclass(frozen=True)
class Settings:
    """How windows are cut and answers chosen: the dataset's keys (docs/suite-format.md), and whether the
    questions may have no answer (SQuAD v2.0; decided by the training data)."""

    doc_stride: int | None = None        # None: a third of max_length (run_qa's 128 of 384)
    max_answer_length: int = MAX_ANSWER_LENGTH
    n_best: int = N_BEST
    null_threshold: float = 0.0
    with_null: bool = False

    def stride(self, max_length: int) -> int:
        return self.doc_stride if self.doc_stride is not None else max_length // 3


@dataclass(frozen=True, eq=False)
class Windows(Encoded):
    """Token windows of the questions. ``labels`` are the questions' gold answers as the metrics read them (one
    per question, ``qa_data.gold_labels``); ``positions`` the (start, end) token positions each window trains on."""

    example: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # each window's question
    offsets: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 2), np.int32))
    # ^ int32 (windows × longest window × 2): each context token's characters, -1 for every other token
    contexts: tuple[str, ...] = ()   # the questions' contexts, which answers are cut from
    positions: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    settings: Settings = Settings()

    @property
    def context(self) -> np.ndarray:
        return self.offsets[:, :, 0] != NOT_CONTEXT

    def arrays(self) -> dict[str, np.ndarray]:
        """Flat arrays for the disk cache (``diskcache``); the contexts come from the examples."""
        return super().arrays() | {"positions": self.positions, "example": self.example,
                                   "context_offsets": self.offsets}

    @classmethod
    def restored(cls, arrays: dict[str, np.ndarray], like: "Windows", key: str | None) -> "Windows":
        """The windows of :meth:`arrays`; ``like`` (built without tokens) gives labels, contexts and settings."""
        tokens = Encoded.from_arrays({k: arrays[k] for k in TOKEN_ARRAYS if k in arrays}, like.labels, key)
        return cls(tokens.input_ids, tokens.token_type_ids, tokens.lengths, like.labels, key,
                   arrays["example"].astype(np.int64), arrays["context_offsets"].astype(np.int32), like.contexts,
                   arrays["positions"].astype(np.int64), like.settings)


def span_mismatches(contexts: Sequence[str], texts: Sequence[Sequence[str]],
                    starts: Sequence[Sequence[int]]) -> int:
    """How many answers do not sit where their ``answer_start`` says (or have no start, or a start too many)."""
    wrong = 0
    for context, answer_texts, answer_starts in zip(contexts, texts, starts):
        wrong += abs(len(answer_texts) - len(answer_starts))
        for text, start in zip(answer_texts, answer_starts):
            ok = isinstance(start, (int, np.integer)) and 0 <= start and context[start:start + len(text)] == text
            wrong += not ok
    return wrong


def first_answer_spans(texts: Sequence[Sequence[str]], starts: Sequence[Sequence[int]]) -> np.ndarray:
    """(start, end) character span of each question's first answer, (-1, -1) for no answer: what trains."""
    return np.array([(s[0], s[0] + len(t[0])) if len(t) else (-1, -1) for t, s in zip(texts, starts)],
                    dtype=np.int64).reshape(-1, 2)


def encode_windows(tokenizer: Any, questions: Sequence[str], contexts: Sequence[str], spans: np.ndarray | None,
                   max_length: int, doc_stride: int) -> Windows:
    """Tokenize question + context into windows; ``spans`` (from :func:`first_answer_spans`) label them."""
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("extractive QA needs a fast tokenizer (character offsets of its tokens); this model's "
                        "tokenizer has none")
    questions = [q.lstrip() for q in questions]  # leading blanks only waste the window (as run_qa does)
    _check_room(tokenizer, questions, max_length, doc_stride)
    out = tokenizer(questions, list(contexts), truncation="only_second", max_length=max_length, stride=doc_stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True, padding=False,
                    return_attention_mask=False, return_token_type_ids=None)
    ids = tuple(np.asarray(x, dtype=np.int64) for x in out["input_ids"])
    types = out.get("token_type_ids")
    types = tuple(np.asarray(x, dtype=np.int64) for x in types) if types is not None else None
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    example = np.asarray(out["overflow_to_sample_mapping"], dtype=np.int64)
    offsets = _context_offsets(out, lengths)
    positions = np.zeros((len(ids), 2), dtype=np.int64)
    if spans is not None:
        positions = answer_positions(offsets, spans[example])
    return Windows(ids, types, lengths, np.zeros(len(contexts)), None, example, offsets, tuple(contexts), positions)


def _check_room(tokenizer: Any, questions: list[str], max_length: int, doc_stride: int) -> None:
    """A window must hold the question, the special tokens and more than ``doc_stride`` context tokens."""
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    lengths = np.array([len(x) for x in tokenizer(questions, add_special_tokens=False)["input_ids"]] or [0])
    cramped = int(np.sum(max_length - specials - lengths <= doc_stride))
    if cramped:
        raise DataError(f"{cramped} of {len(questions)} questions leave at most 'doc_stride: {doc_stride}' context "
                        f"tokens in a window of 'max_length: {max_length}' (the longest question has "
                        f"{int(lengths.max())} tokens, plus {specials} special tokens); raise 'max_length' or "
                        "lower 'doc_stride'")


def _context_offsets(out: Any, lengths: np.ndarray) -> np.ndarray:
    """Character offsets of the context tokens of every window, padded with -1 (not context)."""
    width = int(lengths.max(initial=0))
    offsets = np.full((len(lengths), width, 2), NOT_CONTEXT, dtype=np.int32)
    for w, (pairs, sequence) in enumerate(zip(out["offset_mapping"], (e.sequence_ids for e in out.encodings))):
        keep = np.fromiter((s == 1 for s in sequence), dtype=bool, count=len(sequence))
        offsets[w, :len(sequence)][keep] = np.asarray(pairs, dtype=np.int32).reshape(-1, 2)[keep]
    return offsets


def answer_positions(offsets: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """(start, end) token positions of each window's answer span, or (NULL, NULL) when the window lacks it.

    ``spans`` holds each window's (start, end) characters, (-1, -1) for no answer. The start is the last
    context token that begins at or before the answer's first character, the end the first context token
    that ends at or after its last one (run_qa's rule, kept inside the context).
    """
    context = offsets[:, :, 0] != NOT_CONTEXT
    index = np.arange(offsets.shape[1])
    first_char = np.where(context, offsets[:, :, 0], np.iinfo(np.int32).max).min(axis=1, initial=np.iinfo(np.int32).max)
    last_char = np.where(context, offsets[:, :, 1], -1).max(axis=1, initial=-1)
    start_char, end_char = spans[:, 0:1], spans[:, 1:2]
    inside = (spans[:, 0] >= 0) & (first_char <= spans[:, 0]) & (last_char >= spans[:, 1])
    start = np.where(context & (offsets[:, :, 0] <= start_char), index, -1).max(axis=1, initial=-1)
    end = np.where(context & (offsets[:, :, 1] >= end_char), index, offsets.shape[1]).min(axis=1,
                                                                                       initial=offsets.shape[1])
    return np.where(inside[:, None], np.stack([start, end], axis=1), NULL).astype(np.int64)


@dataclass(frozen=True, eq=False)
class Answers:
    texts: tuple[str, ...]   # the predicted answer per question ("" for no answer)
    spans: np.ndarray        # int64 (questions × 2): its characters in the context, (0, 0) when empty
    null_diffs: np.ndarray   # float64: null score minus the best span's score (+inf when no span fits)
    span_texts: tuple[str, ...]   # the best non-null answer per question, whatever the threshold says


def best_answers(start_logits: np.ndarray, end_logits: np.ndarray, windows: Windows, with_null: bool, null_threshold: float = 0.0, n_best: int = N_BEST,
                 max_answer_length: int = MAX_ANSWER_LENGTH) -> Answers:
    """Each question's answer from the logits of its windows (windows × longest window, padding ignored)."""
    context = windows.context
    width = context.shape[1]
    in_window = np.arange(width) < windows.lengths[:, None]  # padding never competes for the n best
    starts = np.where(in_window, start_logits[:, :width], -np.inf)
    ends = np.where(in_window, end_logits[:, :width], -np.inf)
    score, start, end = _best_spans(starts, ends, context, n_best, max_answer_length)
    contexts = windows.contexts
    n = len(contexts)
    best = _best_window(score, windows.example, n)
    null = np.full(n, np.inf)
    np.minimum.at(null, windows.example, starts[:, NULL] + ends[:, NULL])
    found = best >= 0
    pick = np.where(found, best, 0)
    chars = np.stack([windows.offsets[pick, start[pick], 0], windows.offsets[pick, end[pick], 1]], axis=1)
    chars = np.where(found[:, None], chars, 0).astype(np.int64)
    diffs = np.where(found, null - np.where(found, score[pick], 0.0), np.inf)
    span_texts = tuple(c[a:b] for c, (a, b) in zip(contexts, chars))
    empty = ~found | (with_null & (diffs > null_threshold))
    texts = tuple("" if e else t for e, t in zip(empty, span_texts))
    return Answers(texts, np.where(empty[:, None], 0, chars), diffs, span_texts)


def _best_spans(starts: np.ndarray, ends: np.ndarray, context: np.ndarray, n_best: int,
                max_answer_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per window: the best valid (start, end) among the ``n_best`` best starts × ends, and its score (-inf if none)."""
    k = min(n_best, starts.shape[1])
    top_start = np.argsort(-starts, axis=1, kind="stable")[:, :k]
    top_end = np.argsort(-ends, axis=1, kind="stable")[:, :k]
    rows = np.arange(len(starts))[:, None]
    s, e = top_start[:, :, None], top_end[:, None, :]
    valid = (context[rows, top_start][:, :, None] & context[rows, top_end][:, None, :]
             & (e >= s) & (e - s + 1 <= max_answer_length))
    scores = np.where(valid, starts[rows, top_start][:, :, None] + ends[rows, top_end][:, None, :], -np.inf)
    if k == 0:
        nothing = np.zeros(len(starts), dtype=np.int64)
        return np.full(len(starts), -np.inf), nothing, nothing
    flat = scores.reshape(len(starts), -1)
    best = flat.argmax(axis=1)   # the first of equals: HF's stable sort, starts before ends
    rows = np.arange(len(starts))
    return flat[rows, best], top_start[rows, best // k], top_end[rows, best % k]


def _best_window(score: np.ndarray, example: np.ndarray, n: int) -> np.ndarray:
    """The window of each question with the best finite span score (the first of equals), or -1."""
    order = np.lexsort((np.arange(len(score)), -score, example))
    first = np.ones(len(order), dtype=bool)
    first[1:] = example[order][1:] != example[order][:-1]
    best = np.full(n, -1, dtype=np.int64)
    chosen = order[first]
    best[example[chosen]] = np.where(np.isfinite(score[chosen]), chosen, -1)
    return best
