"""SQuAD exact match and F1: hand-computed cases, the official script's rules, and properties."""

from __future__ import annotations

import collections
import re
import string

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexharness.rules import squad


def official_v2(gold: str, prediction: str) -> tuple[int, float]:
    """compute_exact / compute_f1 of the SQuAD v2.0 evaluation script, written out independently."""

    def normalize(s: str) -> str:
        s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
        return " ".join(re.sub(r"\b(a|an|the)\b", " ", s).split())

    def tokens(s: str) -> list[str]:
        return normalize(s).split() if s else []

    g, p = tokens(gold), tokens(prediction)
    common = collections.Counter(g) & collections.Counter(p)
    same = sum(common.values())
    if not g or not p:
        f1 = float(g == p)
    elif same == 0:
        f1 = 0.0
    else:
        precision, recall = same / len(p), same / len(g)
        f1 = 2 * precision * recall / (precision + recall)
    return int(normalize(gold) == normalize(prediction)), f1


@pytest.mark.parametrize("text, normal", [
    ("The  Quick, brown fox!", "quick brown fox"),
    ("An apple a day", "apple day"),
    ("theater  anthem", "theater anthem"),
    ("  Denver\tBroncos. ", "denver broncos"),
    ("the", ""),
    ("état (1990)", "état 1990"),
])
def test_normalisation(text: str, normal: str) -> None:
    assert squad.normalize_answer(text) == normal


@pytest.mark.parametrize("prediction, answers, em, f1", [
    ("Denver Broncos", ["Denver Broncos", "The Denver Broncos", "Broncos"], 1.0, 1.0),
    ("the Denver Broncos!", ["Denver Broncos"], 1.0, 1.0),
    ("Broncos", ["Denver Broncos"], 0.0, 2 / 3),
    ("cat on mat", ["the cat sat on the mat"], 0.0, 6 / 7),
    ("x y y", ["x x y"], 0.0, 2 / 3),
    ("Broncos", ["Denver Broncos", "Carolina Panthers"], 0.0, 2 / 3),
    ("Panthers", ["Denver Broncos", "Carolina Panthers", "Panthers"], 1.0, 1.0),
    ("nothing alike", ["Denver Broncos"], 0.0, 0.0),
    ("", ["Denver Broncos"], 0.0, 0.0),
    ("", [], 1.0, 1.0),            # v2.0 no-answer question, empty prediction
    ("Broncos", [], 0.0, 0.0),     # ... any answer is wrong
    ("", ["the", "."], 1.0, 1.0),  # gold answers that normalise to nothing count as no answer
])
def test_question_scores(prediction: str, answers: list[str], em: float, f1: float) -> None:
    got_em, got_f1 = squad.question_scores(prediction, answers)
    assert got_em == em
    assert got_f1 == pytest.approx(f1)


def test_summary_splits_has_and_no_answer() -> None:
    scored = squad.score(["Broncos", "", "Panthers", ""], [["Denver Broncos"], [], ["Carolina Panthers"], ["x"]])
    np.testing.assert_allclose(scored.exact, [0, 1, 0, 0])
    np.testing.assert_allclose(scored.f1, [2 / 3, 1, 2 / 3, 0])
    out = squad.summary(scored)
    assert out["exact"] == pytest.approx(0.25) and out["f1"] == pytest.approx((4 / 3 + 1) / 4)
    assert out["HasAns_total"] == 3 and out["HasAns_f1"] == pytest.approx(4 / 9) and out["HasAns_exact"] == 0
    assert out["NoAns_total"] == 1 and out["NoAns_exact"] == 1 and out["total"] == 4


def test_summary_of_v1_data_has_no_no_answer_split() -> None:
    out = squad.summary(squad.score(["a b"], [["b"]]))
    assert "NoAns_total" not in out and out["HasAns_total"] == 1


def test_score_refuses_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 predictions for 1 questions"):
        squad.score(["a", "b"], [["a"]])


text = st.lists(st.sampled_from(list("ab t,.!é") + ["an", " a ", "The", "the", "\t"]), max_size=8).map("".join)


@settings(max_examples=300, deadline=None)
@given(prediction=text, answers=st.lists(text, max_size=4))
def test_properties(prediction: str, answers: list[str]) -> None:
    em, f1 = squad.question_scores(prediction, answers)
    assert 0.0 <= em <= f1 <= 1.0
    golds = [a for a in answers if squad.normalize_answer(a)] or [""]
    reference = [official_v2(g, prediction) for g in golds]
    assert em == max(r[0] for r in reference)
    assert f1 == pytest.approx(max(r[1] for r in reference))


@settings(max_examples=200, deadline=None)
@given(answers=st.lists(text, min_size=1, max_size=4), pick=st.integers(0, 3))
def test_a_gold_answer_scores_one(answers: list[str], pick: int) -> None:
    counted = [a for a in answers if squad.normalize_answer(a)] or answers  # the others count as no answer
    assert squad.question_scores(counted[pick % len(counted)], answers) == (1.0, 1.0)


def test_bootstrap_of_qa_metrics_resamples_questions() -> None:
    from flexharness.rules import stats

    labels = np.array(["Denver Broncos", "", "Carolina Panthers\x1fPanthers", "x"])
    runs = np.array([["Broncos", "", "Panthers", "y"], ["Denver Broncos", "z", "Panthers", "x"]])
    for metric, column in (("squad_f1", "f1"), ("exact_match", "exact")):
        interval = stats.case_interval(metric, labels, runs, key="k", n_resamples=200)
        per_seed = [getattr(squad.scored_labels(labels, row), column).mean() for row in runs]
        assert interval.estimate == pytest.approx(np.mean(per_seed))
        assert interval.low <= interval.estimate <= interval.high
        one = stats.metric_replicates(metric, labels, runs, np.array([[0, 0, 0, 0]]))
        assert one[0].tolist() == pytest.approx([getattr(squad.scored_labels(labels[[0]], r[[0]]), column)[0]
                                                 for r in runs])
