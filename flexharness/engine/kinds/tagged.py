"""Tagged sentences for token classification: rows → words and tag codes → windows of sub-word ids.

Words are split into sub-words with the fast tokenizer's ``word_ids``; the first sub-word of a word
carries its tag, the others are ignored by the loss (-100). A sentence longer than ``max_length``
is cut into windows of whole words, never truncated, so every word is scored. Tags are stored as
``rules.tagging`` codes (no tag names beside outputs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flexharness.engine.data import Encoded, Examples
from flexharness.errors import DataError
from flexharness.rules.tagging import PAD

IGNORED = -100   # a sub-word that is not a word's first: no loss, no prediction


@dataclass(frozen=True, eq=False)
class TaggedExamples(Examples):
    """Sentences: ``texts`` holds the words joined (for digests and slices), ``labels`` one zero per sentence
    (subsampling has no class to stratify), ``words`` the words and ``tags`` the tag codes per word."""

    words: tuple[tuple[str, ...], ...] = ()
    tags: tuple[np.ndarray, ...] = ()
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))   # model label ids → tag codes

    def take(self, indices: np.ndarray) -> "TaggedExamples":
        base = super().take(indices)
        return TaggedExamples(base.texts, base.labels, base.rows, tuple(self.words[i] for i in indices),
                              tuple(self.tags[i] for i in indices), self.classes)


def tagged(words: list[tuple[str, ...]], codes: list[np.ndarray], rows: np.ndarray, classes: np.ndarray
           ) -> TaggedExamples:
    """Examples of sentences; the digest text holds the words and their tags, so either changing shows."""
    texts = (tuple(" ".join(w) for w in words), tuple(" ".join(map(str, c.tolist())) for c in codes))
    return TaggedExamples(texts, np.zeros(len(words), np.int64), rows, tuple(words), tuple(codes), classes)


@dataclass(frozen=True, eq=False)
class Windows(Encoded):
    """Windows of sub-word ids (the rows batches hold); ``labels`` are the tag codes per word (sentences ×
    longest sentence, ``PAD`` beyond a sentence's end), what outputs are scored against."""

    token_labels: tuple[np.ndarray, ...] = ()   # per window: class id at each word's first sub-word, else -100
    token_words: tuple[np.ndarray, ...] = ()    # per window: the word's position in its sentence, else -1
    sentence: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))   # per window: its sentence
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def arrays(self) -> dict[str, np.ndarray]:
        arrays = super().arrays()
        arrays |= {"token_labels": _flat(self.token_labels), "token_words": _flat(self.token_words),
                   "sentence": self.sentence.astype(np.int64)}
        return arrays


def _flat(rows: tuple[np.ndarray, ...]) -> np.ndarray:
    return np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)


def word_labels(examples: TaggedExamples) -> np.ndarray:
    """Tag codes per word, sentences × longest sentence, ``PAD`` past each sentence's end."""
    width = max((len(t) for t in examples.tags), default=0)
    out = np.full((len(examples.tags), width), PAD, dtype=np.int64)
    for row, codes in enumerate(examples.tags):
        out[row, :len(codes)] = codes
    return out


def restored(arrays: dict[str, np.ndarray], examples: TaggedExamples, key: str | None) -> Windows:
    base = Encoded.from_arrays(arrays, word_labels(examples), key)
    cuts = np.cumsum(base.lengths)[:-1]
    return Windows(base.input_ids, base.token_type_ids, base.lengths, base.labels, key,
                   tuple(np.split(arrays["token_labels"], cuts)), tuple(np.split(arrays["token_words"], cuts)),
                   arrays["sentence"], examples.classes)


def problem(arrays: dict[str, np.ndarray], examples: TaggedExamples, vocab_size: int, token_types: bool) -> str | None:
    """What keeps stored windows from being the windows of ``examples``, or None."""
    names = {"input_ids", "offsets", "token_labels", "token_words", "sentence",
             *(("token_type_ids",) if token_types else ())}
    if set(arrays) != names:
        return f"holds {', '.join(sorted(arrays)) or 'nothing'} where {', '.join(sorted(names))} was expected"
    ids, offsets, sentence = arrays["input_ids"], arrays["offsets"], arrays["sentence"]
    if any(a.ndim != 1 or a.dtype.kind not in "iu" for a in arrays.values()):
        return "not flat integer arrays"
    if len(offsets) != len(sentence) + 1 or offsets[0] != 0 or offsets[-1] != len(ids) or np.any(np.diff(offsets) < 0):
        return "offsets out of order"
    if len(sentence) and (sentence.min() < 0 or sentence.max() >= len(examples.tags)):
        return "windows of sentences that do not exist"
    if len(ids) and (ids.min() < 0 or ids.max() >= vocab_size):
        return f"token ids outside the vocabulary of {vocab_size}"
    if any(len(arrays[name]) != len(ids) for name in names - {"offsets", "sentence"}):
        return "labels or word positions not one per token"
    return None


def encode(examples: TaggedExamples, tokenizer: object, max_length: int) -> Windows:
    """Windows of whole words that fit ``max_length`` with the special tokens; every word in one window."""
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("token classification aligns tags to sub-words with a fast tokenizer's word_ids(); this "
                        "model's tokenizer is not a fast one: save the model with a fast (tokenizers) tokenizer")
    budget = max(1, max_length - tokenizer.num_special_tokens_to_add(pair=False))
    pieces = tokenizer([list(w) for w in examples.words], is_split_into_words=True, add_special_tokens=False)
    spans = []   # (sentence, first word, end word)
    for n, words in enumerate(examples.words):
        sizes = np.bincount([w for w in pieces.word_ids(n) if w is not None], minlength=len(words))
        spans += [(n, start, end) for start, end in _cuts(sizes, budget)]
    windows = tokenizer([list(examples.words[n][a:b]) for n, a, b in spans], is_split_into_words=True,
                        truncation=True, max_length=max_length)
    labels, positions = [], []
    for w, (n, start, _) in enumerate(spans):
        ids = windows.word_ids(w)
        first = [i is not None and (k == 0 or ids[k - 1] != i) for k, i in enumerate(ids)]
        word = np.asarray([start + i if f else -1 for i, f in zip(ids, first)], dtype=np.int64)
        lookup = np.searchsorted(examples.classes, examples.tags[n])
        labels.append(np.where(word >= 0, lookup[np.maximum(word, 0)], IGNORED))
        positions.append(word)
    ids = tuple(np.asarray(x, dtype=np.int64) for x in windows["input_ids"])
    types = windows.get("token_type_ids")
    types = tuple(np.asarray(x, dtype=np.int64) for x in types) if types is not None else None
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    return Windows(ids, types, lengths, word_labels(examples), None, tuple(labels), tuple(positions),
                   np.asarray([n for n, *_ in spans], dtype=np.int64), examples.classes)


def _cuts(sizes: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive word ranges whose sub-words fit ``budget`` (a longer word alone is one window)."""
    cuts, start, used = [], 0, 0
    for i, size in enumerate(sizes.tolist()):
        if used and used + size > budget:
            cuts.append((start, i))
            start, used = i, 0
        used += size
    return cuts + [(start, len(sizes))] if len(sizes) else [(0, 0)]


def gather(data: Windows, rows: list[np.ndarray]) -> np.ndarray:
    """Predicted tag codes per word (sentences × longest sentence); a word the tokenizer dropped is ``O``."""
    out = np.where(data.labels == PAD, PAD, 0).astype(np.int64)
    for w, predicted in enumerate(rows):
        word = data.token_words[w]
        at = np.flatnonzero(word >= 0)
        out[data.sentence[w], word[at]] = data.classes[predicted[at]]
    return out
