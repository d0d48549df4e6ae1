"""Stability and data-efficiency rules against brute force, closed forms and scipy/numpy references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.integrate import trapezoid

from flexharness.rules.curves import (aulc, data_advantage, expected_max, failed_runs, failure_rate,
                                      majority_baseline, nested_subsets, setting_summary, smallest_size_reaching)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
scores = st.floats(-10, 10, allow_nan=False)
score_lists = st.lists(scores, min_size=1, max_size=6)


# ---------------------------------------------------------------- expected best of k runs


@SETTINGS
@given(score_lists.filter(lambda v: len(v) <= 4), st.integers(1, 4), st.booleans())
def test_expected_max_equals_enumeration_of_every_draw(values: list[float], k: int, higher: bool) -> None:
    pick = max if higher else min
    for j, value in enumerate(expected_max(values, k, higher), start=1):
        draws = [pick(t) for t in itertools.product(values, repeat=j)]
        assert value == pytest.approx(math.fsum(draws) / len(draws), abs=1e-9)


@SETTINGS
@given(score_lists, st.booleans())
def test_expected_max_starts_at_the_mean_never_gets_worse_and_tends_to_the_best(values: list[float],
                                                                                higher: bool) -> None:
    curve = expected_max(values, 1000, higher)
    assert curve[0] == pytest.approx(np.mean(values), abs=1e-9)
    steps = np.diff(curve) if higher else -np.diff(curve)
    assert np.all(steps >= 0)
    assert curve[-1] == pytest.approx(max(values) if higher else min(values), abs=1e-9)
    assert all(min(values) <= v <= max(values) for v in curve)


@pytest.mark.parametrize("ones, n", [(1, 10), (3, 4), (5, 7)])
def test_expected_max_of_zeros_and_ones_is_one_minus_the_chance_of_no_one(ones: int, n: int) -> None:
    curve = expected_max([1.0] * ones + [0.0] * (n - ones), 6)
    assert curve == pytest.approx([1 - (1 - ones / n) ** k for k in range(1, 7)], abs=1e-12)


def test_expected_max_matches_monte_carlo() -> None:
    values = np.array([0.61, 0.70, 0.70, 0.74, 0.52, 0.80, 0.33])
    draws = np.random.default_rng(0).choice(values, size=(200_000, 5)).max(axis=1)
    assert expected_max(values.tolist(), 5)[-1] == pytest.approx(draws.mean(), abs=2e-3)


@pytest.mark.parametrize("values, k", [([], 1), ([0.5, math.nan], 1), ([0.5], 0), ([0.5], True), ([0.5], 1.5)])
def test_expected_max_rejects_bad_input(values: list[float], k: object) -> None:
    with pytest.raises(ValueError, match="expected_max"):
        expected_max(values, k)  # type: ignore[arg-type]


# ---------------------------------------------------------------- failed runs and the majority baseline


def test_a_run_no_better_than_the_majority_class_failed() -> None:
    assert failed_runs([0.50, 0.5001, 0.49, 0.90], 0.50) == [True, False, True, False]
    assert failed_runs([0.50, 0.55, 0.56], 0.50, margin=0.05) == [True, True, False]
    assert failed_runs([1.0, 0.9, 1.2], 1.0, margin=0.1, higher_is_better=False) == [True, True, True]
    assert failed_runs([0.8, 0.95], 1.0, margin=0.1, higher_is_better=False) == [False, True]
    assert failure_rate([0.3, 0.9, 0.5, 0.95], 0.5) == 0.5


@SETTINGS
@given(score_lists, scores, st.floats(0, 2))
def test_failed_runs_mirror_for_lower_is_better(values: list[float], majority: float, margin: float) -> None:
    mirrored = failed_runs([-v for v in values], -majority, margin, higher_is_better=False)
    assert failed_runs(values, majority, margin) == mirrored
    assert failure_rate(values, majority, margin) == sum(mirrored) / len(values)


@pytest.mark.parametrize("majority, margin", [(math.nan, 0.0), (0.5, -0.1), (0.5, math.inf)])
def test_failed_runs_rejects_bad_thresholds(majority: float, margin: float) -> None:
    with pytest.raises(ValueError, match="failed_runs"):
        failed_runs([0.5], majority, margin)


labels = st.lists(st.integers(0, 3), min_size=1, max_size=40)


@SETTINGS
@given(labels, labels)
def test_majority_baseline_by_hand(train: list[int], evaluation: list[int]) -> None:
    counts = np.bincount(train)
    majority = int(np.flatnonzero(counts == counts.max())[0])  # a tie goes to the smallest label
    share = evaluation.count(majority) / len(evaluation)
    f1_majority = 2 * share / (1 + share)  # precision = share, recall = 1 (0 when absent)
    present = len(set(evaluation) | {majority})
    assert majority_baseline(train, evaluation, "accuracy") == pytest.approx(share)
    assert majority_baseline(train, evaluation, "macro_f1") == pytest.approx(f1_majority / present)
    assert majority_baseline(train, evaluation, "mcc") == 0.0
    if max(train + evaluation) <= 1:
        assert majority_baseline(train, evaluation, "f1") == pytest.approx(f1_majority if majority == 1 else 0.0)
    both = majority_baseline(train, evaluation, ["accuracy", "mcc"])
    assert both == pytest.approx(share / 2)


@SETTINGS
@given(st.lists(scores, min_size=1, max_size=20), st.lists(scores, min_size=1, max_size=20))
def test_majority_baseline_for_regression_predicts_the_training_mean(train: list[float],
                                                                     evaluation: list[float]) -> None:
    y = np.asarray(evaluation)
    expected_mse = np.var(y) + (np.mean(y) - np.mean(train)) ** 2
    assert majority_baseline(train, evaluation, "mse") == pytest.approx(expected_mse, rel=1e-9, abs=1e-9)
    assert majority_baseline(train, evaluation, "pearson") == 0.0
    assert majority_baseline(train, evaluation, ("spearman", "pearson")) == 0.0


@pytest.mark.parametrize("metric", ["bleu", [], ["accuracy", "mse"]])
def test_majority_baseline_rejects_unknown_or_mixed_metrics(metric: object) -> None:
    with pytest.raises(ValueError, match="majority_baseline"):
        majority_baseline([0, 1], [0, 1], metric)  # type: ignore[arg-type]


# ---------------------------------------------------------------- settings (e.g. learning rates)


@SETTINGS
@given(st.lists(score_lists, min_size=1, max_size=5), st.booleans())
def test_setting_summary_matches_numpy(runs: list[list[float]], higher: bool) -> None:
    keyed = {f"lr{i}": v for i, v in enumerate(runs)}
    summary = setting_summary(keyed, higher_is_better=higher)
    means = [np.mean(v) for v in runs]
    best = int(np.argmax(means) if higher else np.argmin(means))
    assert list(summary.means.values()) == pytest.approx(means, abs=1e-9)
    assert list(summary.seed_stds.values()) == pytest.approx([np.std(v) for v in runs], abs=1e-9)
    assert summary.best_score == pytest.approx(means[best], abs=1e-9)
    assert summary.means[summary.best] == summary.best_score
    assert summary.spread == pytest.approx(np.ptp(means), abs=1e-9)
    assert summary.sigma == pytest.approx(np.std(means), abs=1e-9)


def test_setting_summary_example() -> None:
    summary = setting_summary({1e-5: [0.80, 0.82], 3e-5: [0.85, 0.86], 1e-4: [0.30, 0.90]})
    assert summary.best == 3e-5 and summary.best_score == pytest.approx(0.855)
    assert summary.seed_stds[1e-4] == pytest.approx(0.30)
    assert summary.spread == pytest.approx(0.255)
    mse = setting_summary({"a": [0.2, 0.4], "b": [0.1, 0.1], "c": [0.1, 0.1]}, higher_is_better=False)
    assert mse.best == "b" and mse.seed_stds["b"] == 0.0  # a tie goes to the first listed


# ---------------------------------------------------------------- nested, stratified subsets


def _water_filled(counts: np.ndarray, n: int) -> np.ndarray:
    """Shares q_c = max(1, λ·m_c) with Σ q_c = n, λ found by bisection (independent of the module)."""
    lo, hi = 0.0, float(n)
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.maximum(1.0, mid * counts).sum() < n else (lo, mid)
    return np.maximum(1.0, hi * counts)


skewed_labels = st.lists(st.integers(0, 5), min_size=2, max_size=60).map(
    lambda v: v + [0] * (3 * len(v)) if v[0] == 0 else v)  # often one dominant class


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(skewed_labels, st.integers(0, 2**32 - 1))
def test_nested_subsets_nest_keep_sizes_and_stratify(values: list[int], seed: int) -> None:
    y = np.asarray(values)
    n_all, classes = len(y), np.unique(y)
    counts = np.array([np.sum(y == c) for c in classes])
    subsets = nested_subsets(y, range(1, n_all + 1), seed)
    assert sorted(subsets) == list(range(1, n_all + 1))
    for size in range(1, n_all):
        assert set(subsets[size]) <= set(subsets[size + 1])
    for size, idx in subsets.items():
        assert len(idx) == len(set(idx.tolist())) == size and np.all(np.diff(idx) > 0)
        taken = np.array([np.sum(y[idx] == c) for c in classes])
        if size < len(classes):
            assert taken.max() <= 1  # too few for every class: classes take turns
        else:
            assert taken.min() >= 1  # every class present
            assert np.all(np.abs(taken - _water_filled(counts, size)) < 1 + 1e-9)
        if size * counts.min() >= n_all:  # no class needs the floor of one: plain proportional shares
            assert np.all(np.abs(taken - size * counts / n_all) < 1)


@SETTINGS
@given(skewed_labels, st.data(), st.integers(0, 2**32 - 1))
def test_nested_subsets_depend_on_the_size_and_seed_only(values: list[int], data: st.DataObject, seed: int) -> None:
    sizes = data.draw(st.lists(st.integers(1, len(values)), min_size=1, max_size=5, unique=True))
    together = nested_subsets(values, sizes, seed)
    for size in sizes:
        assert np.array_equal(together[size], nested_subsets(values, [size], seed)[size])


def test_nested_subsets_on_a_skewed_label_mix() -> None:
    y = np.array(["neg"] * 70 + ["neu"] * 20 + ["pos"] * 10)
    subsets = nested_subsets(y, [3, 10, 50, 100], seed=7)
    counts = {n: [int(np.sum(y[idx] == c)) for c in ("neg", "neu", "pos")] for n, idx in subsets.items()}
    assert counts == {3: [1, 1, 1], 10: [7, 2, 1], 50: [35, 10, 5], 100: [70, 20, 10]}
    assert not np.array_equal(subsets[10], nested_subsets(y, [10], seed=8)[10])


@SETTINGS
@given(st.lists(st.floats(-100, 100, allow_nan=False), min_size=10, max_size=40, unique=True),
       st.integers(0, 1000))
def test_nested_subsets_stratify_regression_labels_by_rank_bins(values: list[float], seed: int) -> None:
    y = np.asarray(values[: len(values) // 5 * 5])
    quintile = np.searchsorted(np.sort(y), y) // (len(y) // 5)  # five equal-count bins of the sorted labels
    for size, idx in nested_subsets(y, [5, len(y) // 2, len(y)], seed).items():
        taken = np.bincount(quintile[idx], minlength=5)
        assert np.all(np.abs(taken - size / 5) < 1)


@pytest.mark.parametrize("y, sizes", [([0] * 10, [0]), ([0] * 10, [11]), ([0] * 10, []), ([0] * 10, [2.5]),
                                      ([], [1]), ([0.5, math.nan], [1])])
def test_nested_subsets_rejects_impossible_input(y: list, sizes: list) -> None:
    with pytest.raises(ValueError, match="nested_subsets"):
        nested_subsets(y, sizes, seed=0)


# ---------------------------------------------------------------- learning curves


size_grids = st.lists(st.integers(1, 5000), min_size=2, max_size=7, unique=True)


@SETTINGS
@given(size_grids, st.data())
def test_aulc_is_the_normalised_trapezoid_over_log_size(sizes: list[int], data: st.DataObject) -> None:
    ys = data.draw(st.lists(scores, min_size=len(sizes), max_size=len(sizes)))
    order = np.argsort(sizes)
    x, y = np.log(np.asarray(sizes, float)[order]), np.asarray(ys)[order]
    reference = trapezoid(y, x) / (x[-1] - x[0])
    assert aulc(sizes, ys) == pytest.approx(reference, abs=1e-9)
    assert min(ys) <= aulc(sizes, ys) <= max(ys)
    assert aulc(sizes, [ys[0]] * len(sizes)) == ys[0]


@SETTINGS
@given(size_grids, st.floats(-1, 1), st.floats(-1, 1))
def test_aulc_of_a_line_in_log_size_is_its_value_at_the_middle(sizes: list[int], a: float, b: float) -> None:
    ys = [a + b * math.log(n) for n in sizes]
    middle = (math.log(min(sizes)) + math.log(max(sizes))) / 2
    assert aulc(sizes, ys) == pytest.approx(a + b * middle, abs=1e-9)


def test_aulc_known_value_and_bad_input() -> None:
    assert aulc([1000, 10, 100], [0.8, 0.5, 0.7]) == pytest.approx((0.5 + 0.7) / 4 + (0.7 + 0.8) / 4)
    for sizes, ys in (([10], [0.5]), ([10, 10], [0.5, 0.6]), ([10, 20], [0.5]), ([0, 20], [0.5, 0.6])):
        with pytest.raises(ValueError, match="aulc"):
            aulc(sizes, ys)


GRID = [8, 16, 32, 64, 128, 256, 512, 1024]


@pytest.mark.parametrize("fraction", [0.5, 0.8, 0.9, 0.95, 1.0])
def test_smallest_size_reaching_on_closed_form_curves(fraction: float) -> None:
    rising = [1 - 1 / math.sqrt(n) for n in GRID]  # reaches f·final once n ≥ 1/(1 − f·final)²
    need = 1 / (1 - fraction * rising[-1]) ** 2
    assert smallest_size_reaching(GRID, rising, fraction) == min(n for n in GRID if n >= need - 1e-9)
    falling = [1 / n for n in GRID]  # an error: f·(1/n) ≤ 1/N once n ≥ f·N
    expected = min(n for n in GRID if n >= fraction * GRID[-1] - 1e-9)
    assert smallest_size_reaching(GRID, falling, fraction, higher_is_better=False) == expected


def test_smallest_size_reaching_edge_cases() -> None:
    assert smallest_size_reaching([10, 100, 1000], [0.9, 0.5, 0.8], 0.9) == 10  # the first size that reaches
    assert smallest_size_reaching([10, 100], [0.1, -0.2], 0.9) is None  # no positive final score
    assert smallest_size_reaching([10, 100], [0.3, 0.0], 0.9, higher_is_better=False) == 100  # only 0 reaches 0
    assert smallest_size_reaching([10, 100], [0.3, -0.1], 0.9, higher_is_better=False) is None  # negative error
    with pytest.raises(ValueError, match="fraction"):
        smallest_size_reaching([10, 100], [0.1, 0.2], 0.0)


@SETTINGS
@given(size_grids, st.data(), st.floats(0.01, 1), st.booleans())
def test_smallest_size_reaching_is_a_listed_size_when_the_final_score_counts(sizes: list[int], data: st.DataObject,
                                                                           fraction: float, higher: bool) -> None:
    ys = data.draw(st.lists(st.floats(0.01, 10), min_size=len(sizes), max_size=len(sizes)))
    found = smallest_size_reaching(sizes, ys, fraction, higher)
    assert found in sizes
    final = ys[int(np.argmax(sizes))]
    score = ys[sizes.index(found)]
    assert score >= fraction * final if higher else fraction * score <= final


def _shifted_log_curves(r: float, alpha: float = 0.2, beta: float = 0.1) -> tuple[list[float], list[float]]:
    """score = α + β·ln(n) for a, and the same curve needing r times the data for b."""
    return [alpha + beta * math.log(n) for n in GRID], [alpha + beta * math.log(n / r) for n in GRID]


@SETTINGS
@given(st.floats(1.0, 60.0))
def test_data_advantage_of_a_curve_shifted_by_r_times_the_data(r: float) -> None:
    a, b = _shifted_log_curves(r)
    result = data_advantage(GRID, a, b)
    assert result is not None
    low_n, high_n = GRID[0], GRID[-1] / r  # a's sizes over the shared score range
    assert result.mean_log2_ratio == pytest.approx(math.log2(r), abs=1e-9)
    assert result.ratio_at_top == pytest.approx(r, rel=1e-9)
    mean_n_a = (high_n - low_n) / math.log(high_n / low_n)  # the mean of n over a uniform ln n
    assert result.mean_extra_examples == pytest.approx((r - 1) * mean_n_a, rel=1e-9, abs=1e-9)
    assert (result.score_low, result.score_high) == pytest.approx((a[0], b[-1]))


@SETTINGS
@given(st.lists(st.floats(0.001, 1.0), min_size=len(GRID), max_size=len(GRID)),
       st.lists(st.floats(0.001, 1.0), min_size=len(GRID), max_size=len(GRID)), st.booleans())
def test_data_advantage_against_a_fine_numerical_integral(steps_a: list[float], steps_b: list[float],
                                                          higher: bool) -> None:
    a, b = np.cumsum(steps_a), np.cumsum(steps_b) + 0.5 * sum(steps_a) - 0.5 * sum(steps_b)
    sign = 1 if higher else -1
    result = data_advantage(GRID, (sign * a).tolist(), (sign * b).tolist(), higher)
    overlap = min(a[-1], b[-1]) > max(a[0], b[0])
    assert (result is not None) == overlap
    if result is None:
        return
    y = np.linspace(max(a[0], b[0]), min(a[-1], b[-1]), 200_001)
    log_a, log_b = np.interp(y, a, np.log(GRID)), np.interp(y, b, np.log(GRID))  # both strictly rising
    assert result.mean_log2_ratio == pytest.approx(np.mean(log_b - log_a) / math.log(2), abs=1e-4)
    extra = np.mean(np.exp(log_b) - np.exp(log_a))
    assert result.mean_extra_examples == pytest.approx(extra, rel=1e-3, abs=1e-2)
    swapped = data_advantage(GRID, (sign * b).tolist(), (sign * a).tolist(), higher)
    assert swapped is not None
    assert swapped.mean_log2_ratio == pytest.approx(-result.mean_log2_ratio, abs=1e-9)
    assert swapped.ratio_at_top == pytest.approx(1 / result.ratio_at_top, rel=1e-9)


def test_data_advantage_uses_the_running_best_and_needs_overlap() -> None:
    a, b = _shifted_log_curves(4.0)
    dipped = list(a)
    dipped[3] = a[1]  # a bad run at 64 examples: the running best keeps the 32-example score
    envelope = list(a)
    envelope[3] = a[2]
    result, plain = data_advantage(GRID, dipped, b), data_advantage(GRID, a, b)
    assert result is not None and plain is not None
    assert result == data_advantage(GRID, envelope, b)
    assert result.mean_log2_ratio < plain.mean_log2_ratio
    same = data_advantage(GRID, a, a)
    assert same is not None and same.mean_log2_ratio == 0 and same.ratio_at_top == 1
    assert data_advantage(GRID, a, [v - 10 for v in a]) is None
    assert data_advantage(GRID, a, [a[0]] * len(GRID)) is None  # a flat curve covers no interval
