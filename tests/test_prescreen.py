"""The pre-screen rules against independent references: direct formulas, scipy, scikit-learn."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize
from scipy.stats import kendalltau, multivariate_normal, pearsonr
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from flexharness.rules import prescreen
from flexharness.rules.prescreen import (
    kendall_track_record,
    knn_accuracy,
    knn_pearson,
    linear_probe,
    logme,
    logme_fits,
    top_k,
)

SEEDS = st.integers(0, 2**16)


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """Small matrices on shared cores: BLAS threads that spin-wait cost more than they give."""
    with threadpool_limits(limits=1):
        yield


def linear_classes(rng: np.random.Generator, n: int, d: int, noise: float = 0.5):
    """Three classes cut from a noisy linear score of Gaussian features."""
    features = rng.normal(size=(n, d))
    score = features @ rng.normal(size=d) + noise * rng.normal(size=n)
    return features, np.digitize(score, [-1.0, 1.0])


def regression(rng: np.random.Generator, n: int, d: int, noise: float = 1.0):
    features = rng.normal(size=(n, d))
    return features, features @ rng.normal(size=d) + noise * rng.normal(size=n)


def direct_log_evidence(features, y, alpha, beta):
    """log p(y | F, α, β) written out as in the paper, with A = αI + βFᵀF and m = βA⁻¹Fᵀy."""
    n, d = features.shape
    a = alpha * np.eye(d) + beta * features.T @ features
    m = beta * np.linalg.solve(a, features.T @ y)
    return (n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
            - beta / 2 * np.sum((features @ m - y) ** 2) - alpha / 2 * m @ m - np.linalg.slogdet(a)[1] / 2)


def marginal_log_evidence(features, y, alpha, beta):
    """The same evidence as a density: y ~ N(0, I/β + FFᵀ/α) once w ~ N(0, I/α) is integrated out."""
    n = features.shape[0]
    return multivariate_normal(np.zeros(n), np.eye(n) / beta + features @ features.T / alpha).logpdf(y)


def one_hot(labels, column):
    return (labels == np.unique(labels)[column]).astype(float)


# ---- LogME: the evidence and its maximum -----------------------------------------------------

@pytest.mark.parametrize("n, d", [(120, 6), (25, 60)])
def test_logme_evidence_matches_the_direct_formula_and_the_marginal_density(n, d):
    features, labels = linear_classes(np.random.default_rng(0), n, d)
    fits = logme_fits(features, labels)
    assert len(fits) == 3
    for column, fit in enumerate(fits):
        y = one_hot(labels, column)
        assert fit.log_evidence == pytest.approx(direct_log_evidence(features, y, fit.alpha, fit.beta) / n,
                                                 rel=1e-9)
        assert fit.log_evidence == pytest.approx(marginal_log_evidence(features, y, fit.alpha, fit.beta) / n,
                                                 rel=1e-9)
    assert logme(features, labels) == pytest.approx(np.mean([fit.log_evidence for fit in fits]), rel=1e-12)


@pytest.mark.parametrize("regress", [False, True])
def test_the_solution_satisfies_the_papers_fixed_point_equations(regress):
    rng = np.random.default_rng(1)
    features, target = regression(rng, 150, 8) if regress else linear_classes(rng, 150, 8)
    fit = logme_fits(features, target, regression=regress)[0]
    y = target if regress else one_hot(target, 0)
    eigen = np.linalg.eigvalsh(features.T @ features)
    m = fit.beta * np.linalg.solve(fit.alpha * np.eye(8) + fit.beta * features.T @ features, features.T @ y)
    gamma = np.sum(fit.beta * eigen / (fit.alpha + fit.beta * eigen))
    assert fit.alpha == pytest.approx(gamma / (m @ m), rel=1e-7)
    assert fit.beta == pytest.approx((150 - gamma) / np.sum((features @ m - y) ** 2), rel=1e-7)


def test_no_alpha_beta_near_or_far_from_the_fixed_point_has_higher_evidence():
    features, y = regression(np.random.default_rng(2), 80, 5, noise=2.0)
    fit = logme_fits(features, y, regression=True)[0]
    best = direct_log_evidence(features, y, fit.alpha, fit.beta)
    for step, da, db in itertools.product([1e-3, 0.1, 1.0], [-1, 0, 1], [-1, 0, 1]):
        alpha, beta = fit.alpha * math.exp(step * da), fit.beta * math.exp(step * db)
        assert direct_log_evidence(features, y, alpha, beta) <= best + 1e-9 * abs(best)
    found = minimize(lambda p: -direct_log_evidence(features, y, math.exp(p[0]), math.exp(p[1])),
                     x0=[0.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12})
    assert -found.fun <= best + 1e-9 * abs(best)
    assert -found.fun == pytest.approx(best, rel=1e-6)


def test_agrees_with_the_papers_plain_iteration_run_to_convergence():
    """Algorithm 1 of the paper, naively: a d × d solve per step, iterated until nothing moves."""
    features, y = regression(np.random.default_rng(3), 60, 4, noise=0.7)
    eigen = np.linalg.eigvalsh(features.T @ features)
    alpha, beta = 1.0, 1.0
    for _ in range(20_000):
        m = beta * np.linalg.solve(alpha * np.eye(4) + beta * features.T @ features, features.T @ y)
        gamma = np.sum(beta * eigen / (alpha + beta * eigen))
        new_alpha, new_beta = gamma / (m @ m), (60 - gamma) / np.sum((features @ m - y) ** 2)
        if abs(new_alpha - alpha) <= 1e-12 * alpha and abs(new_beta - beta) <= 1e-12 * beta:
            break
        alpha, beta = new_alpha, new_beta
    else:
        pytest.fail("the plain iteration did not converge")
    fit = logme_fits(features, y, regression=True)[0]
    assert fit.alpha == pytest.approx(alpha, rel=1e-6)
    assert fit.beta == pytest.approx(beta, rel=1e-6)
    assert fit.log_evidence == pytest.approx(direct_log_evidence(features, y, alpha, beta) / 60, rel=1e-10)


@pytest.mark.parametrize("n, d", [(90, 12), (12, 90), (30, 30)])
def test_the_n_above_d_and_n_below_d_paths_agree(n, d):
    features, labels = linear_classes(np.random.default_rng(4), n, d)
    targets = prescreen._targets(labels, False, n)
    primal = prescreen._spectrum(features, targets, dual=False)
    dual = prescreen._spectrum(features, targets, dual=True)
    assert primal.sigma.size == dual.sigma.size == min(n, d)
    for column in range(targets.shape[1]):
        a, b = prescreen._fit_target(primal, column), prescreen._fit_target(dual, column)
        assert a.log_evidence == pytest.approx(b.log_evidence, rel=1e-8)


# ---- LogME: the paper's qualitative behaviour ------------------------------------------------

@settings(max_examples=10, deadline=None)
@given(SEEDS)
def test_features_that_determine_the_labels_beat_random_features(seed):
    rng = np.random.default_rng(seed)
    features, labels = linear_classes(rng, 200, 10)
    assert logme(features, labels) > logme(rng.normal(size=features.shape), labels) + 0.03
    features, y = regression(rng, 200, 10)
    assert logme(features, y, True) > logme(rng.normal(size=features.shape), y, True) + 0.05


@settings(max_examples=10, deadline=None)
@given(SEEDS)
def test_pure_noise_dimensions_lower_or_barely_change_the_score(seed):
    rng = np.random.default_rng(seed)
    features, labels = linear_classes(rng, 200, 8)
    base = logme(features, labels)
    for extra in (1, 8, 64):
        assert logme(np.hstack([features, rng.normal(size=(200, extra))]), labels) <= base + 0.01
    assert logme(np.hstack([features, rng.normal(size=(200, 64))]), labels) < base - 0.02


def test_the_toy_behaviour_more_label_noise_lowers_logme():
    """The paper's toy illustration: the noisier the labels given the features, the lower LogME."""
    rng = np.random.default_rng(5)
    features, w = rng.normal(size=(400, 6)), rng.normal(size=6)
    noise = rng.normal(size=400)
    scores = [logme(features, features @ w + level * noise, True) for level in (0.1, 0.3, 1.0, 3.0)]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == 4
    clean, draw = (features @ w > 0).astype(int), rng.random(400)
    flipped = [logme(features, np.where(draw < rate, 1 - clean, clean)) for rate in (0.0, 0.15, 0.5)]
    assert flipped == sorted(flipped, reverse=True) and len(set(flipped)) == 3


@settings(max_examples=15, deadline=None)
@given(SEEDS, st.sampled_from([(40, 5), (10, 30)]))
def test_logme_is_invariant_to_example_order_class_ids_and_feature_rotation(seed, shape):
    rng = np.random.default_rng(seed)
    features, labels = linear_classes(rng, *shape)
    score = logme(features, labels)
    order = rng.permutation(shape[0])
    assert logme(features[order], labels[order]) == pytest.approx(score, rel=1e-8)
    assert logme(features, 7 * (2 - labels) + 3) == pytest.approx(score, rel=1e-10)
    rotation, _ = np.linalg.qr(rng.normal(size=(shape[1], shape[1])))
    assert logme(features @ rotation, labels) == pytest.approx(score, rel=1e-7)


def test_logme_accepts_several_regression_columns_and_string_classes():
    features, y = regression(np.random.default_rng(6), 50, 4)
    both = logme(features, np.column_stack([y, -2 * y]), regression=True)
    assert both == pytest.approx((logme(features, y, True) + logme(features, -2 * y, True)) / 2, rel=1e-10)
    labels = np.array(["neg", "pos"] * 25)
    assert logme(features, labels) == pytest.approx(logme(features, (labels == "pos").astype(int)), rel=1e-12)


def test_logme_refuses_degenerate_input():
    rng = np.random.default_rng(7)
    features = rng.normal(size=(30, 3))
    with pytest.raises(ValueError, match="unbounded"):
        logme(features, features @ np.array([1.0, -2.0, 0.5]), regression=True)
    with pytest.raises(ValueError, match="all zeros"):
        logme(features, np.zeros(30), regression=True)
    with pytest.raises(ValueError, match="all zero"):
        logme(np.zeros((30, 3)), np.arange(30) % 2)
    with pytest.raises(ValueError, match="labels for 30"):
        logme(features, np.arange(29) % 2)
    exact = rng.normal(size=(10, 40))
    assert math.isfinite(logme(exact, exact @ rng.normal(size=40), regression=True))


# ---- k-NN --------------------------------------------------------------------------------------

def blobs(rng: np.random.Generator, n: int, d: int = 16, classes: int = 3, spread: float = 0.3):
    centres = rng.normal(size=(classes, d))
    labels = rng.integers(0, classes, n)
    return centres[labels] + spread * rng.normal(size=(n, d)), labels


def test_knn_separates_blobs_and_is_at_chance_on_random_labels():
    rng = np.random.default_rng(8)
    x, y = blobs(rng, 600)
    assert knn_accuracy(x[:400], y[:400], x[400:], y[400:]) >= 0.99
    noise = rng.normal(size=(1400, 16))
    coin = rng.integers(0, 2, 1400)
    assert abs(knn_accuracy(noise[:400], coin[:400], noise[400:], coin[400:]) - 0.5) < 0.05


def test_knn_matches_scikit_learns_brute_force_cosine_neighbours():
    rng = np.random.default_rng(9)
    x, y = blobs(rng, 300, spread=1.5)
    reference = KNeighborsClassifier(n_neighbors=7, metric="cosine", algorithm="brute").fit(x[:200], y[:200])
    expected = np.mean(reference.predict(x[200:]) == y[200:])
    assert knn_accuracy(x[:200], y[:200], x[200:], y[200:], k=7) == pytest.approx(expected, abs=1e-12)
    target = x @ rng.normal(size=16) + rng.normal(size=300)
    regressor = KNeighborsRegressor(n_neighbors=7, metric="cosine", algorithm="brute").fit(x[:200], target[:200])
    expected_r = pearsonr(regressor.predict(x[200:]), target[200:]).statistic
    assert knn_pearson(x[:200], target[:200], x[200:], target[200:], k=7) == pytest.approx(expected_r, rel=1e-10)


@settings(max_examples=25, deadline=None)
@given(SEEDS, st.integers(1, 40), st.floats(0.01, 100.0))
def test_knn_accuracy_is_a_proportion_and_ignores_row_lengths(seed, k, scale):
    rng = np.random.default_rng(seed)
    x, y = blobs(rng, 60, d=4, spread=2.0)
    accuracy = knn_accuracy(x[:30], y[:30], x[30:], y[30:], k=k)
    assert 0.0 <= accuracy <= 1.0
    lengths = scale * rng.uniform(0.5, 2.0, size=(60, 1))
    assert knn_accuracy(x[:30] * lengths[:30], y[:30], x[30:] * lengths[30:], y[30:], k=k) == accuracy


def test_knn_default_k_is_twenty_clipped_to_the_training_rows_and_pearson_can_be_undefined():
    rng = np.random.default_rng(10)
    x, y = blobs(rng, 80, spread=1.0)
    assert prescreen.DEFAULT_K == 20
    assert knn_accuracy(x[:50], y[:50], x[50:], y[50:]) == knn_accuracy(x[:50], y[:50], x[50:], y[50:], k=20)
    assert knn_accuracy(x[:5], y[:5], x[50:], y[50:]) == knn_accuracy(x[:5], y[:5], x[50:], y[50:], k=5)
    assert knn_pearson(x[:50], np.ones(50), x[50:], rng.normal(size=30)) is None


# ---- linear probe --------------------------------------------------------------------------------

def test_linear_probe_refits_the_chosen_strength_on_all_training_rows():
    rng = np.random.default_rng(11)
    x, y = blobs(rng, 300, spread=1.5)
    result = linear_probe(x[:200], y[:200], x[200:], y[200:], seed=3)
    assert result.strength in prescreen.C_GRID and set(result.validation) == set(prescreen.C_GRID)
    assert result.validation[result.strength] == max(result.validation.values())
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=result.strength, max_iter=1000))
    np.testing.assert_array_equal(result.predictions, reference.fit(x[:200], y[:200]).predict(x[200:]))
    assert np.mean(result.predictions == y[200:]) > 0.8


def test_linear_probe_never_looks_at_the_eval_rows():
    rng = np.random.default_rng(12)
    x, y = blobs(rng, 400, spread=3.0)
    first = linear_probe(x[:200], y[:200], x[200:300], y[200:300], seed=0)
    second = linear_probe(x[:200], y[:200], x[300:], rng.permutation(y[300:]), seed=0)
    assert (first.strength, first.validation) == (second.strength, second.validation)
    again = linear_probe(x[:200], y[:200], x[200:300], y[200:300], seed=0)
    np.testing.assert_array_equal(first.predictions, again.predictions)


def test_linear_probe_ties_keep_the_most_regularised_value():
    x, y = blobs(np.random.default_rng(14), 200, spread=0.05)
    result = linear_probe(x[:150], y[:150], x[150:], y[150:], seed=1)
    assert set(result.validation.values()) == {1.0}
    assert result.strength == min(prescreen.C_GRID)
    assert prescreen.ALPHA_GRID == tuple(sorted(prescreen.ALPHA_GRID, reverse=True))


def test_linear_probe_regression_chooses_ridge_alpha_and_predicts_floats():
    features, y = regression(np.random.default_rng(13), 300, 20, noise=3.0)
    result = linear_probe(features[:200], y[:200], features[200:], y[200:], regression=True, seed=0)
    assert result.strength in prescreen.ALPHA_GRID and result.predictions.dtype == np.float64
    assert pearsonr(result.predictions, y[200:]).statistic > 0.8


@settings(max_examples=20, deadline=None)
@given(SEEDS, st.lists(st.integers(1, 30), min_size=2, max_size=5))
def test_holdout_is_a_seeded_per_class_fifth_that_leaves_every_class_a_fit_row(seed, counts):
    labels = np.repeat(np.arange(len(counts)), counts)
    expected = [min(round(0.2 * count), count - 1) for count in counts]
    if sum(expected) == 0:
        with pytest.raises(ValueError, match="no validation slice"):
            prescreen.holdout_mask(labels, False, seed)
        return
    mask = prescreen.holdout_mask(labels, False, seed)
    np.testing.assert_array_equal(mask, prescreen.holdout_mask(labels, False, seed))
    assert [int(mask[labels == value].sum()) for value in range(len(counts))] == expected


# ---- Kendall track record and top-k ------------------------------------------------------------

def tau_b_by_counting(x, y):
    """Kendall's τ-b from its definition: (concordant − discordant) / sqrt((n0 − n1)(n0 − n2))."""
    pairs = list(itertools.combinations(range(len(x)), 2))
    s = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in pairs)
    ties_x = sum(x[i] == x[j] for i, j in pairs)
    ties_y = sum(y[i] == y[j] for i, j in pairs)
    return s / math.sqrt((len(pairs) - ties_x) * (len(pairs) - ties_y))


def test_kendall_matches_the_definition_and_the_exact_null_distribution():
    x = [1.0, 2.0, 2.0, 3.0, 4.0, 5.0, 5.0]
    y = [0.3, 0.1, 0.4, 0.4, 0.9, 0.6, 0.8]
    record = kendall_track_record(dict(enumerate(x)), dict(enumerate(y)))
    assert record.n == 7 and record.tau == pytest.approx(tau_b_by_counting(x, y), rel=1e-12)
    perfect = kendall_track_record({i: float(i) for i in range(5)}, {i: 10.0 + i for i in range(5)})
    assert perfect.tau == pytest.approx(1.0) and perfect.p_value == pytest.approx(2 / math.factorial(5), rel=1e-9)


def test_kendall_uses_only_pairs_scored_on_both_sides_and_is_none_when_undefined():
    pre = {("sst2", "a"): 0.1, ("sst2", "b"): 0.5, ("mnli", "a"): 0.3, ("mnli", "b"): None, ("qqp", "a"): 0.2}
    tuned = {("sst2", "a"): 0.7, ("sst2", "b"): 0.9, ("mnli", "a"): 0.8, ("mnli", "b"): 0.6,
             ("cola", "a"): 0.1}
    record = kendall_track_record(pre, tuned)
    assert record.n == 3 and record.tau == pytest.approx(1.0)
    assert kendall_track_record({1: 0.1, 2: 0.2}, {1: 0.3, 2: 0.4}) is None
    assert kendall_track_record({1: 0.1, 2: 0.1, 3: 0.1}, {1: 0.3, 2: 0.4, 3: 0.5}) is None
    assert kendall_track_record({1: 0.1, 2: float("nan"), 3: 0.3}, {1: 0.3, 2: 0.4, 3: 0.5}) is None


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(-5, 5), st.integers(-5, 5)), min_size=3, max_size=12))
def test_kendall_is_symmetric_bounded_and_blind_to_monotone_rescaling(pairs):
    pre = {i: float(a) for i, (a, _) in enumerate(pairs)}
    tuned = {i: float(b) for i, (_, b) in enumerate(pairs)}
    record = kendall_track_record(pre, tuned)
    if len(set(pre.values())) < 2 or len(set(tuned.values())) < 2:
        assert record is None
        return
    assert -1.0 <= record.tau <= 1.0
    assert record.tau == pytest.approx(kendalltau(list(pre.values()), list(tuned.values())).statistic)
    assert kendall_track_record(tuned, pre).tau == pytest.approx(record.tau)
    stretched = kendall_track_record({k: math.exp(v) for k, v in pre.items()}, tuned)
    assert stretched.tau == pytest.approx(record.tau) and stretched.p_value == pytest.approx(record.p_value)


def test_top_k_orders_by_score_then_name_and_puts_unscored_last():
    scores = {"b": 0.5, "a": 0.5, "c": 0.9, "d": None, "e": float("nan"), "f": -1.0}
    assert top_k(scores, 2) == ["c", "a"]
    assert top_k(scores, 10) == ["c", "a", "b", "f", "d", "e"]
    with pytest.raises(ValueError):
        top_k(scores, 0)


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(st.text("abcxyz", min_size=1, max_size=3), st.floats(-5, 5), max_size=8),
       st.integers(1, 10), st.randoms())
def test_top_k_is_the_best_prefix_whatever_the_insertion_order(scores, k, random):
    chosen = top_k(scores, k)
    items = list(scores.items())
    random.shuffle(items)
    assert top_k(dict(items), k) == chosen
    assert len(chosen) == min(k, len(scores))
    rest = [name for name in scores if name not in chosen]
    assert all(scores[c] > scores[r] or (scores[c] == scores[r] and c < r) for c in chosen for r in rest)
