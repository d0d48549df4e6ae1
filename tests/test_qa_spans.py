"""QA windows and post-processing with the tiny BERT's fast tokenizer, on generated contexts."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from flexharness.engine import qa_spans
from flexharness.errors import DataError
from toy import NEGATIVE, NEUTRAL, POSITIVE, TOPICS

WORDS = POSITIVE + NEGATIVE + NEUTRAL + TOPICS + ["unknownword", "x"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def generated(n: int, seed: int = 0, max_words: int = 60) -> tuple[list[str], list[str], list[list[str]], list[list[int]]]:
    """Questions, contexts (some far longer than a window, some with punctuation) and one answer each."""
    rng = random.Random(seed)
    questions, contexts, texts, starts = [], [], [], []
    for _ in range(n):
        words = [rng.choice(WORDS) + rng.choice(["", "", "", ",", "."]) for _ in range(rng.randint(3, max_words))]
        a = rng.randrange(len(words))
        b = min(len(words), a + rng.randint(1, 3))
        context = " ".join(words)
        start = len(" ".join(words[:a])) + (1 if a else 0)
        questions.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))))
        contexts.append(context)
        texts.append([" ".join(words[a:b])])
        starts.append([start])
    return questions, contexts, texts, starts


def test_span_mismatches_count_wrong_starts_only() -> None:
    contexts = ["good film", "bad plot here", "x"]
    texts = [["film"], ["plot", "here"], ["x"]]
    assert qa_spans.span_mismatches(contexts, texts, [[5], [4, 9], [0]]) == 0
    assert qa_spans.span_mismatches(contexts, texts, [[4], [4, 99], [-1]]) == 3
    assert qa_spans.span_mismatches(contexts, texts, [[5], [4], ["0"]]) == 2   # a start missing, one not a number


def test_windows_cover_long_contexts_and_label_answers(tokenizer) -> None:
    questions, contexts, texts, starts = generated(60)
    assert qa_spans.span_mismatches(contexts, texts, starts) == 0
    spans = qa_spans.first_answer_spans(texts, starts)
    windows = qa_spans.encode_windows(tokenizer, questions, contexts, spans, max_length=24, doc_stride=6)
    assert windows.lengths.max() <= 24
    counts = np.bincount(windows.example, minlength=len(contexts))
    assert counts.min() >= 1 and counts.max() > 3          # the longest contexts need several windows
    assert np.all(np.diff(windows.example) >= 0)
    labelled = np.zeros(len(contexts), dtype=bool)
    for w, (start, end) in enumerate(windows.positions):
        q = windows.example[w]
        if start == qa_spans.NULL:
            assert end == qa_spans.NULL
            continue
        a, b = windows.offsets[w, start, 0], windows.offsets[w, end, 1]
        assert contexts[q][a:b] == texts[q][0]              # word-aligned answers come back exactly
        labelled[q] = True
    assert labelled.all()                                    # every answer fits some window


def test_windows_without_the_answer_point_at_null(tokenizer) -> None:
    context = " ".join(["movie"] * 40 + ["great"])
    spans = qa_spans.first_answer_spans([["great"]], [[context.index("great")]])
    windows = qa_spans.encode_windows(tokenizer, ["good"], [context], spans, max_length=16, doc_stride=4)
    labels = windows.positions
    assert len(labels) > 2 and (labels[:-1] == qa_spans.NULL).all() and labels[-1, 0] > 0
    nothing = qa_spans.first_answer_spans([[]], [[]])
    assert (qa_spans.encode_windows(tokenizer, ["good"], [context], nothing, 16, 4).positions == 0).all()


def test_neighbouring_windows_share_doc_stride_tokens(tokenizer) -> None:
    context = " ".join(WORDS * 3)
    windows = qa_spans.encode_windows(tokenizer, ["good film"], [context], None, max_length=20, doc_stride=5)
    first, second = (windows.offsets[w][windows.context[w]] for w in (0, 1))
    assert [tuple(p) for p in first[-5:]] == [tuple(p) for p in second[:5]]


def test_a_window_too_small_for_question_and_stride_is_a_clear_error(tokenizer) -> None:
    with pytest.raises(DataError, match=r"1 of 2 questions leave at most 'doc_stride: 4' context tokens"):
        qa_spans.encode_windows(tokenizer, ["good", "good " * 10], ["film"] * 2, None, max_length=16, doc_stride=4)


def test_arrays_round_trip(tokenizer) -> None:
    questions, contexts, texts, starts = generated(8, seed=3)
    windows = qa_spans.encode_windows(tokenizer, questions, contexts, qa_spans.first_answer_spans(texts, starts), 24, 6)
    back = qa_spans.Windows.restored(windows.arrays(), windows, key="k")
    assert np.array_equal(back.offsets, windows.offsets) and np.array_equal(back.example, windows.example)
    assert np.array_equal(back.positions, windows.positions)
    assert all(np.array_equal(a, b) for a, b in zip(back.input_ids, windows.input_ids))


def test_logits_at_the_labels_give_back_the_gold_answers(tokenizer) -> None:
    questions, contexts, texts, starts = generated(40, seed=1)
    windows = qa_spans.encode_windows(tokenizer, questions, contexts, qa_spans.first_answer_spans(texts, starts), 24, 6)
    starts_logits, ends_logits = peaked(windows, windows.positions)
    answers = qa_spans.best_answers(starts_logits, ends_logits, windows, with_null=False)
    assert list(answers.texts) == [t[0] for t in texts]
    assert all(contexts[q][a:b] == answers.texts[q] for q, (a, b) in enumerate(answers.spans))


def test_null_threshold_decides_no_answer(tokenizer) -> None:
    questions, contexts, texts, starts = generated(10, seed=2, max_words=8)
    windows = qa_spans.encode_windows(tokenizer, questions, contexts, qa_spans.first_answer_spans(texts, starts), 40, 6)
    assert np.all(np.bincount(windows.example) == 1)
    s, e = peaked(windows, windows.positions)
    s[:, 0] = e[:, 0] = 4.0     # null score 8 against a span score of 10: diff -2
    kept = qa_spans.best_answers(s, e, windows, with_null=True, null_threshold=0.0)
    assert list(kept.texts) == [t[0] for t in texts] and np.allclose(kept.null_diffs, -2.0)
    emptied = qa_spans.best_answers(s, e, windows, with_null=True, null_threshold=-3.0)
    assert set(emptied.texts) == {""} and (emptied.spans == 0).all()
    assert list(emptied.span_texts) == list(kept.texts)


def test_spans_longer_than_max_answer_length_are_not_answers(tokenizer) -> None:
    context = "good movie was great"
    windows = qa_spans.encode_windows(tokenizer, ["film"], [context], None, 16, 2)
    s, e = peaked(windows, np.array([[3, 6]]))   # [CLS] film [SEP] then the whole context: four tokens
    assert qa_spans.best_answers(s, e, windows, False).texts == (context,)
    short = qa_spans.best_answers(s, e, windows, False, max_answer_length=3)
    assert short.texts != (context,) and len(short.texts[0].split()) <= 3


def peaked(windows: qa_spans.Windows, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logits with one clear peak per window, at the given start and end positions."""
    rng = np.random.default_rng(0)
    shape = windows.offsets.shape[:2]
    starts, ends = rng.normal(0, 0.1, shape), rng.normal(0, 0.1, shape)
    rows = np.arange(shape[0])
    starts[rows, positions[:, 0]] = ends[rows, positions[:, 1]] = 5.0
    return starts, ends


def reference_postprocess(starts, ends, windows, contexts, with_null, threshold, n_best, max_len) -> list[str]:
    """transformers' utils_qa.postprocess_qa_predictions, written out loop by loop (without its 'empty' text)."""
    answers = []
    for q, context in enumerate(contexts):
        prelim, null = [], None
        for w in np.flatnonzero(windows.example == q):
            n = windows.lengths[w]
            s, e, offsets = starts[w, :n], ends[w, :n], windows.offsets[w, :n]
            if null is None or null > s[0] + e[0]:
                null = s[0] + e[0]
            for i in np.argsort(s)[-1:-n_best - 1:-1]:
                for j in np.argsort(e)[-1:-n_best - 1:-1]:
                    if offsets[i, 0] < 0 or offsets[j, 0] < 0 or j < i or j - i + 1 > max_len:
                        continue
                    prelim.append((s[i] + e[j], context[offsets[i, 0]:offsets[j, 1]]))
        best = max(prelim, key=lambda p: p[0]) if prelim else None
        if best is None or (with_null and null - best[0] > threshold):
            answers.append("")
        else:
            answers.append(best[1])
    return answers


@pytest.mark.parametrize("with_null", [False, True])
def test_post_processing_matches_the_reference_loop(tokenizer, with_null: bool) -> None:
    questions, contexts, _, _ = generated(50, seed=4)
    windows = qa_spans.encode_windows(tokenizer, questions, contexts, None, max_length=24, doc_stride=8)
    rng = np.random.default_rng(7)
    starts, ends = (rng.normal(0, 2, windows.offsets.shape[:2]) for _ in range(2))
    got = qa_spans.best_answers(starts, ends, windows, with_null, 0.5, n_best=5, max_answer_length=4)
    assert list(got.texts) == reference_postprocess(starts, ends, windows, contexts, with_null, 0.5, 5, 4)


@pytest.mark.parametrize("family", ["gpt2", "qwen2"])
def test_decoder_tokenizers_window_and_label_too(tmp_path: Path, family: str) -> None:
    from transformers import AutoTokenizer

    from toy import build_tiny_decoder

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_decoder(tmp_path, family))
    questions, contexts, texts, starts = generated(20, seed=5)
    windows = qa_spans.encode_windows(tokenizer, questions, contexts, qa_spans.first_answer_spans(texts, starts), 24, 6)
    s, e = peaked(windows, windows.positions)
    answers = qa_spans.best_answers(s, e, windows, with_null=False)
    assert [a.strip() for a in answers.texts] == [t[0] for t in texts]   # byte-level offsets keep a leading blank
