"""Tiny learnable extractive-QA data on the toy vocabulary: the answer is the one sentiment word.

Contexts run to a few dozen words, longer than the tests' windows, so the doc
stride and the null position in windows without the answer are exercised.
With ``unanswerable`` a share of contexts holds no sentiment word (SQuAD v2.0).
"""

from __future__ import annotations

import random

from toy import NEGATIVE, NEUTRAL, POSITIVE, TOPICS


def qa_rows(n: int, seed: int = 0, unanswerable: float = 0.0, words: tuple[int, int] = (8, 40)) -> list[dict]:
    """SQuAD-layout rows: question, context, answers {text, answer_start}; the question names the pool."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        context_words = [rng.choice(NEUTRAL + TOPICS) for _ in range(rng.randint(*words))]
        pool = POSITIVE if i % 2 else NEGATIVE
        answer = None if rng.random() < unanswerable else rng.choice(pool)
        if answer is not None:
            context_words.insert(rng.randrange(len(context_words) + 1), answer)
        context = " ".join(context_words)
        start = _start(context_words, answer)
        rows.append({"id": f"q{i}", "question": "what was good" if pool is POSITIVE else "what was bad",
                     "context": context, "topic": context_words[0],
                     "answers": {"text": [answer] if answer else [], "answer_start": [start] if answer else []}})
    return rows


def _start(words: list[str], answer: str | None) -> int:
    if answer is None:
        return -1
    index = words.index(answer)
    return len(" ".join(words[:index])) + (1 if index else 0)


def flat(rows: list[dict]) -> list[dict]:
    """The same rows with flat answer columns (an empty text: no answer)."""
    return [{"question": r["question"], "context": r["context"], "answer": (r["answers"]["text"] or [""])[0],
             "start": (r["answers"]["answer_start"] or [-1])[0]} for r in rows]
