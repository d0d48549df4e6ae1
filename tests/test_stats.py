"""Statistics rules: vectorised metrics against sklearn/scipy, intervals, paired tests, corrections, rankings."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from sklearn import metrics as skm

from flexharness.rules import metrics, stats

FAST = settings(max_examples=25, deadline=None)


def reference(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    """The metric as the registry defines it, computed by sklearn/scipy on one run."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sklearn: "a single label was found", expected here
        return _reference(metric, y, p)


def _reference(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    if metric == "accuracy":
        return skm.accuracy_score(y, p)
    if metric == "f1":
        return skm.f1_score(y, p, pos_label=1, average="binary", zero_division=0)
    if metric == "macro_f1":
        return skm.f1_score(y, p, average="macro", zero_division=0)
    if metric == "mcc":
        return skm.matthews_corrcoef(y, p)
    if metric == "mse":
        return float(np.mean((y - p) ** 2))
    if np.ptp(y) == 0 or np.ptp(p) == 0:
        return 0.0
    return (sps.pearsonr if metric == "pearson" else sps.spearmanr)(y, p)[0]


def classification_data(seed: int, n: int, k: int, n_seeds: int, accuracy: float = 0.7):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    noise = rng.integers(0, k, (n_seeds, n))
    return y, np.where(rng.random((n_seeds, n)) < accuracy, y, noise)


CLASSIFICATION = ["accuracy", "macro_f1", "mcc"]


@FAST
@given(seed=st.integers(0, 10_000), n=st.integers(1, 40), k=st.integers(2, 5), n_seeds=st.integers(1, 3),
       metric=st.sampled_from(CLASSIFICATION + ["f1"]))
def test_classification_metrics_match_sklearn_on_every_resample(seed, n, k, n_seeds, metric):
    y, p = classification_data(seed, n, 2 if metric == "f1" else k, n_seeds)
    idx = np.vstack([np.arange(n), stats.resample_indices(n, 6, seed=seed)])
    got = stats.metric_replicates(metric, y, p, idx)
    want = [[reference(metric, y[row], p[s][row]) for s in range(n_seeds)] for row in idx]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@FAST
@given(seed=st.integers(0, 10_000), n=st.integers(1, 40), k=st.integers(1, 5),
       metric=st.sampled_from(CLASSIFICATION + ["f1"]))
def test_the_metric_registry_matches_sklearn(seed, n, k, metric):
    y, p = classification_data(seed, n, min(k, 2) if metric == "f1" else k, 1)
    assert metrics.METRICS[metric].compute(y, p[0]) == pytest.approx(reference(metric, y, p[0]), abs=1e-12)


@pytest.mark.parametrize("metric", CLASSIFICATION + ["f1"])
def test_edge_cases_absent_class_and_constant_predictions(metric):
    y = np.array([0, 1, 1, 0, 1, 0, 1, 1])
    if metric != "f1":
        y[-1] = 2  # a class that only one example holds
    p = np.vstack([np.zeros(8, int), np.ones(8, int), y])  # constant, constant, perfect
    idx = np.array([np.arange(8), np.arange(7).tolist() + [0], [1] * 8, [0] * 8, [7] * 8])  # class 2 gone, one-class
    got = stats.metric_replicates(metric, y, p, idx)
    want = [[reference(metric, y[row], p[s][row]) for s in range(3)] for row in idx]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@FAST
@given(seed=st.integers(0, 10_000), n=st.integers(2, 40), tied=st.booleans(),
       metric=st.sampled_from(["pearson", "spearman", "mse"]))
def test_regression_metrics_match_scipy_on_every_resample(seed, n, tied, metric):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    p = y + rng.normal(size=(2, n))
    if tied:
        y, p = np.round(y), np.round(p)
    idx = np.vstack([np.arange(n), [0] * n, stats.resample_indices(n, 6, seed=seed)])
    got = stats.metric_replicates(metric, y, p, idx)
    want = [[reference(metric, y[row], p[s][row]) for s in range(2)] for row in idx]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_constant_predictions_score_zero_correlation_even_when_std_is_not_exactly_zero():
    y = np.array([0.2, 0.5, 0.9])
    assert np.std(np.full(3, 0.1)) != 0  # why "constant" means "all values equal", not "std == 0"
    got = stats.metric_replicates("pearson", y, np.full((1, 3), 0.1), np.arange(3)[None])
    assert got.tolist() == [[0.0]]


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="binary"):
        stats.metric_replicates("f1", np.array([0, 1, 2]), np.array([0, 1, 2]), np.arange(3)[None])
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        stats.metric_replicates("auc", np.array([0, 1]), np.array([0, 1]), np.arange(2)[None])
    with pytest.raises(ValueError, match="integer class ids"):
        stats.metric_replicates("accuracy", np.array([0.5, 1.0]), np.array([0, 1]), np.arange(2)[None])
    with pytest.raises(ValueError, match="3 predictions per seed for 2 labels"):
        stats.metric_replicates("accuracy", np.array([0, 1]), np.array([0, 1, 1]), np.arange(2)[None])


def test_case_interval_is_seeded_and_its_spread_is_the_binomial_standard_error():
    y, p = classification_data(0, 1000, 2, 1, accuracy=0.6)
    first = stats.case_interval("accuracy", y, p, key="sst2", seed=3)
    again = stats.case_interval("accuracy", y, p, key="sst2", seed=3)
    other = stats.case_interval("accuracy", y, p, key="imdb", seed=3)
    assert (first.low, first.high) == (again.low, again.high)
    np.testing.assert_array_equal(first.replicates, again.replicates)
    assert not np.array_equal(first.replicates, other.replicates)
    acc = skm.accuracy_score(y, p[0])
    assert first.estimate == pytest.approx(acc)
    textbook_se = math.sqrt(acc * (1 - acc) / 1000)
    assert first.replicates.std() == pytest.approx(textbook_se, rel=0.1)
    assert first.high - first.low == pytest.approx(2 * 1.96 * textbook_se, rel=0.15)


def test_seed_resampling_follows_the_binomial_law_of_the_seed_draw():
    y = np.arange(50) % 2
    p = np.vstack([y, y, 1 - y])  # seed accuracies 1, 1, 0 on every example resample
    iv = stats.case_interval("accuracy", y, p, n_resamples=4000)
    shares = [np.mean(np.isclose(iv.replicates, v / 3)) for v in range(4)]
    want = [math.comb(3, v) * (2 / 3) ** v * (1 / 3) ** (3 - v) for v in range(4)]  # good seeds drawn ~ Bin(3, 2/3)
    np.testing.assert_allclose(shares, want, atol=0.03)
    assert iv.estimate == pytest.approx(2 / 3)


def test_identical_seeds_give_the_single_run_interval():
    y, p = classification_data(5, 200, 3, 1)
    one = stats.case_interval("macro_f1", y, p[0], key="k")
    three = stats.case_interval("macro_f1", y, np.vstack([p, p, p]), key="k")
    np.testing.assert_allclose(one.replicates, three.replicates, rtol=0, atol=1e-12)


@FAST
@given(seed=st.integers(0, 10_000), n=st.integers(5, 60), n_seeds=st.integers(1, 3),
       metric=st.sampled_from(["accuracy", "macro_f1", "mcc", "mse"]))
def test_interval_stays_in_the_metric_range(seed, n, n_seeds, metric):
    y, p = classification_data(seed, n, 3, n_seeds)
    iv = stats.case_interval(metric, y, p, seed=seed, n_resamples=200)
    lowest, highest = {"accuracy": (0, 1), "macro_f1": (0, 1), "mcc": (-1, 1), "mse": (0, 4)}[metric]
    assert lowest - 1e-12 <= iv.low <= iv.high <= highest + 1e-12


def test_interval_of_a_symmetric_case_contains_the_estimate():
    y = np.tile([0, 1], 200)
    p = np.where(np.arange(400) % 4 < 2, y, 1 - y)  # accuracy exactly 0.5: a symmetric binomial
    iv = stats.case_interval(["accuracy", "macro_f1"], y, p, key="sym")
    assert iv.estimate == pytest.approx(0.5)
    assert iv.low < iv.estimate < iv.high


def intervals(draw_scores: list[list[float]]) -> list[stats.Interval]:
    return [stats.Interval(float(np.mean(r)), 0.0, 1.0, np.array(r)) for r in draw_scores]


@FAST
@given(st.integers(1, 5).flatmap(lambda c: st.lists(
    st.lists(st.floats(0, 1), min_size=20, max_size=20), min_size=c, max_size=c)))
def test_aggregate_replicates_are_the_mean_and_population_std_over_cases(rows):
    cases = intervals(rows)
    p_avg, sigma = stats.aggregate_interval(cases)
    arr = np.array(rows)
    np.testing.assert_allclose(p_avg.replicates, arr.mean(axis=0))
    np.testing.assert_allclose(sigma.replicates, [np.sqrt(np.mean((c - c.mean()) ** 2)) for c in arr.T], atol=1e-12)
    scores = [c.estimate for c in cases]
    assert p_avg.estimate == pytest.approx(np.mean(scores))
    assert sigma.estimate == pytest.approx(np.sqrt(np.mean((np.array(scores) - np.mean(scores)) ** 2)), abs=1e-12)
    assert arr.min() - 1e-12 <= p_avg.low <= p_avg.high <= arr.max() + 1e-12 and sigma.low >= 0


def test_averaging_independent_cases_shrinks_the_interval_by_root_k():
    cases = []
    for k in range(4):
        y, p = classification_data(k, 600, 2, 1, accuracy=0.75)
        cases.append(stats.case_interval("accuracy", y, p, key=f"case{k}"))
    p_avg, _ = stats.aggregate_interval(cases)
    mean_se = np.mean([c.replicates.std() for c in cases])
    assert p_avg.replicates.std() == pytest.approx(mean_se / 2, rel=0.15)
    with pytest.raises(ValueError, match="different numbers of replicates"):
        stats.aggregate_interval([cases[0], stats.Interval(0.5, 0, 1, np.zeros(10))])


@FAST
@given(seed=st.integers(0, 10_000), n=st.integers(10, 80))
def test_identical_models_differ_by_nothing_and_swapping_negates(seed, n):
    y, p = classification_data(seed, n, 2, 2)
    a = stats.case_interval("accuracy", y, p, key="c", n_resamples=300)
    same = stats.paired_difference(a, stats.case_interval("accuracy", y, p.copy(), key="c", n_resamples=300))
    assert (same.difference, same.low, same.high, same.p_value, same.se) == (0, 0, 0, 1.0, 0)
    b = stats.case_interval("accuracy", y, classification_data(seed + 1, n, 2, 2)[1], key="c", n_resamples=300)
    ab, ba = stats.paired_difference(a, b), stats.paired_difference(b, a)
    assert ab.difference == -ba.difference and ab.p_value == ba.p_value
    assert ab.low == pytest.approx(-ba.high) and ab.high == pytest.approx(-ba.low)


def test_bootstrap_p_value_and_minimum_detectable_effect_by_hand():
    d = np.array([-0.1, 0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])  # 2 replicates at or below 0 of 9
    assert stats.bootstrap_p_value(d) == pytest.approx(2 * (1 + 2) / 10)
    assert stats.bootstrap_p_value(np.ones(999)) == pytest.approx(2 / 1000)
    assert stats.minimum_detectable_effect(0.01) == pytest.approx((1.959964 + 0.841621) * 0.01, rel=1e-6)


def test_mcnemar_matches_the_exact_binomial_by_hand():
    y = np.ones(40, int)
    a = np.ones(40, int)
    b = np.ones(40, int)
    a[:2] = 0   # 2 examples only B gets right
    b[2:12] = 0  # 10 examples only A gets right
    result = stats.mcnemar(y, a, b)
    assert (result.only_a, result.only_b) == (10, 2)
    assert result.p_value == pytest.approx(2 * sum(math.comb(12, i) for i in range(3)) / 2**12)  # 0.03857
    assert stats.mcnemar(y, a, a).p_value == 1.0
    with pytest.raises(ValueError, match="one run per side"):
        stats.mcnemar(y, np.vstack([a, a]), b)


def test_majority_vote_breaks_ties_towards_the_smaller_class():
    votes = np.array([[0, 2, 1, 1], [0, 1, 2, 1], [1, 2, 0, 2]])
    assert stats.majority_vote(votes).tolist() == [0, 2, 0, 1]


def test_paired_test_finds_what_overlapping_intervals_miss():
    rng = np.random.default_rng(13)
    y = rng.integers(0, 2, 1000)
    a = np.where(rng.random(1000) < 0.80, y, 1 - y)
    b = a.copy()
    fixed = rng.choice(np.flatnonzero(a != y), 30, replace=False)
    b[fixed] = y[fixed]  # B = A plus 30 corrected examples: +3 points
    ia, ib = (stats.case_interval("accuracy", y, p, key="polarity") for p in (a, b))
    assert ib.estimate - ia.estimate == pytest.approx(0.03)
    assert ia.high > ib.low  # unpaired: the two intervals overlap
    paired = stats.paired_difference(ia, ib)
    assert paired.p_value < 0.01 and paired.low > 0 and paired.mde < 0.03
    assert stats.mcnemar(y, a, b).p_value < 0.01


def test_axis_difference_pairs_cases_by_name():
    y, p = classification_data(2, 300, 2, 1)
    better = np.where(np.arange(300) < 30, y, p[0])
    a = {c: stats.case_interval("accuracy", y, p, key=c) for c in ("x", "y")}
    b = {c: stats.case_interval("accuracy", y, better, key=c) for c in ("y", "x")}
    diff = stats.axis_difference(a, b)
    assert diff.difference == pytest.approx(np.mean([b[c].estimate - a[c].estimate for c in a]))
    assert diff.low >= 0
    with pytest.raises(ValueError, match="different cases"):
        stats.axis_difference(a, {"x": b["x"]})


def test_holm_and_bh_by_hand_and_against_scipy():
    p = [0.01, 0.04, 0.03, 0.005]
    np.testing.assert_allclose(stats.holm(p), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(stats.benjamini_hochberg(p), [0.02, 0.04, 0.04, 0.02])
    assert stats.holm([]).size == 0
    with pytest.raises(ValueError):
        stats.holm([0.5, 1.2])


@FAST
@given(st.lists(st.floats(0, 1), min_size=1, max_size=12))
def test_adjusted_p_values_are_monotone_and_no_smaller_than_raw(p):
    raw = np.array(p)
    order = np.argsort(raw, kind="stable")
    for adjusted in (stats.holm(raw), stats.benjamini_hochberg(raw)):
        assert np.all(adjusted >= raw - 1e-15) and np.all(adjusted <= 1)
        assert np.all(np.diff(adjusted[order]) >= -1e-15)
    np.testing.assert_allclose(stats.benjamini_hochberg(raw), sps.false_discovery_control(raw), atol=1e-12)
    assert np.all(stats.holm(raw) >= stats.benjamini_hochberg(raw) - 1e-15)


def test_win_rates_by_hand():
    scores = {"a": {"t1": 0.9, "t2": 0.5, "mse": 1.0},
              "b": {"t1": 0.8, "t2": 0.5, "mse": 2.0},
              "c": {"t1": 0.7, "t2": 0.6, "mse": None}}
    hib = {"t1": True, "t2": True, "mse": False}
    rates = stats.win_rates(scores, hib)
    assert rates["a"] == pytest.approx((1 + 0.25 + 1) / 3)
    assert rates["b"] == pytest.approx((0.5 + 0.25 + 0) / 3)
    assert rates["c"] == pytest.approx((0 + 1) / 2)
    assert stats.win_rates({"solo": {"t": 1.0}}) == {"solo": None}


@FAST
@given(st.integers(2, 5).flatmap(lambda m: st.lists(
    st.lists(st.sampled_from([0.1, 0.5, 0.9, 0.3]), min_size=3, max_size=3), min_size=m, max_size=m)),
    st.booleans())
def test_win_rates_sum_to_half_the_models(rows, higher_is_better):
    scores = {f"m{i}": {f"c{j}": v for j, v in enumerate(row)} for i, row in enumerate(rows)}
    rates = stats.win_rates(scores, higher_is_better)
    assert sum(rates.values()) == pytest.approx(len(rows) / 2)
    assert all(0 <= r <= 1 for r in rates.values())


def test_rank_ranges_by_hand():
    scores = {"a": 0.90, "b": 0.88, "c": 0.70}
    p = {("a", "b"): 0.40, ("a", "c"): 0.001, ("c", "b"): 0.01}
    ranges = stats.rank_ranges(scores, p)
    assert list(ranges) == ["a", "b", "c"]
    assert [r.label for r in ranges.values()] == ["1\u20132", "1\u20132", "3"]
    lower = stats.rank_ranges({"a": 0.1, "b": 0.2}, {("a", "b"): 0.01}, higher_is_better=False)
    assert {m: r.label for m, r in lower.items()} == {"a": "1", "b": "2"}
    with pytest.raises(ValueError, match="no p-value"):
        stats.rank_ranges(scores, {("a", "b"): 0.4})


@FAST
@given(st.lists(st.floats(0, 1), min_size=1, max_size=6, unique=True), st.randoms(use_true_random=False))
def test_rank_ranges_are_consistent(values, rnd):
    scores = {f"m{i}": v for i, v in enumerate(values)}
    names = list(scores)
    p = {(a, b): rnd.choice([0.001, 0.5]) for i, a in enumerate(names) for b in names[i + 1:]}
    ranges = stats.rank_ranges(scores, p)
    m = len(values)
    assert all(1 <= r.low <= r.high <= m for r in ranges.values())
    assert next(iter(ranges.values())).low == 1
    none = stats.rank_ranges(scores, {k: 0.5 for k in p})
    assert {r.label for r in none.values()} == ({"1"} if m == 1 else {f"1\u2013{m}"})
    every = stats.rank_ranges(scores, {k: 0.001 for k in p})
    assert sorted(r.low for r in every.values()) == list(range(1, m + 1))


def test_pairwise_p_values_feed_rank_ranges():
    y, p = classification_data(7, 800, 2, 1, accuracy=0.6)
    strong = np.where(np.arange(800) < 300, y, p[0])
    models = {"base": stats.case_interval("accuracy", y, p, key="t"),
              "copy": stats.case_interval("accuracy", y, p.copy(), key="t"),
              "strong": stats.case_interval("accuracy", y, strong, key="t")}
    pv = stats.pairwise_p_values(models)
    assert set(pv) == {("base", "copy"), ("base", "strong"), ("copy", "strong")}
    assert pv[("base", "copy")] == 1.0 and pv[("base", "strong")] < 0.01
    ranks = stats.rank_ranges({m: iv.estimate for m, iv in models.items()}, pv)
    assert {m: r.label for m, r in ranks.items()} == {"strong": "1", "base": "2\u20133", "copy": "2\u20133"}
