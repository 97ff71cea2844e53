"""KID, the FID bootstrap and the memorisation check against direct implementations and closed
forms; the EMA warm-up against its product formula."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.stats
from scipy.spatial.distance import cdist

from aiqn.core.config import TrainBase
from aiqn.metrics import frechet_distance, gaussian_statistics
from aiqn.metrics.frechet import bootstrap_fid
from aiqn.metrics.kid import kernel_inception_distance, mmd2_unbiased
from aiqn.metrics.memorisation import memorisation_fraction, nearest_neighbours, pixel_vectors


def direct_mmd2(x, y):
    """The unbiased MMD^2 of Gretton et al. 2012 (eq. 3), pair by pair, with k = (x.y/d + 1)^3."""
    m, d = x.shape
    k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_mmd2_matches_the_pairwise_sum():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 5)), rng.normal(0.5, 1.0, size=(12, 5))
    assert mmd2_unbiased(x, y) == pytest.approx(direct_mmd2(x, y), rel=1e-12)


def test_kid_with_one_full_subset_is_the_unbiased_mmd():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(10, 4)), rng.normal(size=(10, 4)) * 2
    mean, std = kernel_inception_distance(x, y, subsets=3, subset_size=10)
    assert mean == pytest.approx(direct_mmd2(x, y), rel=1e-12)  # every subset is the whole set (rows permuted)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_is_unbiased_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(2)
    same = [kernel_inception_distance(rng.normal(size=(60, 8)), rng.normal(size=(60, 8)), 20, 30, seed=s)[0]
            for s in range(20)]
    # unbiased: the mean over independent draws is within 3 standard errors of 0 (it can be negative)
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(len(same))
    assert min(same) < 0 < max(same)
    far = kernel_inception_distance(rng.normal(size=(60, 8)), rng.normal(1.0, 1.0, size=(60, 8)), 20, 30)[0]
    assert far > 10 * np.std(same)


def test_kid_refuses_a_subset_larger_than_a_set():
    with pytest.raises(ValueError, match="kid_subset_size"):
        kernel_inception_distance(np.zeros((5, 2)), np.zeros((9, 2)), subsets=1, subset_size=6)


def test_bootstrap_interval_matches_a_direct_bias_shifted_bootstrap():
    rng = np.random.default_rng(3)
    features, reference = rng.normal(size=(80, 3)), rng.normal(0.3, 1.0, size=(500, 3))
    mu_ref, sigma_ref = gaussian_statistics(reference)
    low, high = bootstrap_fid(features, mu_ref, sigma_ref, resamples=100, seed=7)
    draws = np.random.default_rng(7)
    values = np.array([frechet_distance(*gaussian_statistics(features[draws.integers(0, 80, 80)]), mu_ref, sigma_ref)
                       for _ in range(100)])
    point = frechet_distance(*gaussian_statistics(features), mu_ref, sigma_ref)
    expected = np.quantile(values, [0.025, 0.975]) - (values.mean() - point)
    assert (low, high) == pytest.approx(tuple(expected), rel=1e-12)
    assert low < point < high


def test_bootstrap_interval_covers_the_true_fid_about_95_percent_of_the_time():
    """Coverage against scipy's exact binomial interval: the FID of N(0, I) samples against the exact
    statistics of N(0.5 e1, I) is 0.25 plus a small bias; count how often the interval covers the
    population value over repeated draws."""
    rng = np.random.default_rng(4)
    mu_ref, sigma_ref = np.array([0.5, 0.0]), np.eye(2)
    covered, trials = 0, 60
    for t in range(trials):
        low, high = bootstrap_fid(rng.normal(size=(400, 2)), mu_ref, sigma_ref, resamples=100, seed=t)
        covered += low <= 0.25 <= high
    interval = scipy.stats.binomtest(covered, trials).proportion_ci(0.99)
    assert interval.low <= 0.95 and covered >= 0.75 * trials  # near nominal (percentile intervals under-cover a little)


def test_nearest_neighbours_match_scipy_cdist():
    rng = np.random.default_rng(5)
    queries, bank = rng.normal(size=(37, 6)), rng.normal(size=(50, 6))
    distances, indices = nearest_neighbours(queries, bank, batch=8)
    full = cdist(queries, bank)
    np.testing.assert_allclose(distances, full.min(1), rtol=1e-10)
    np.testing.assert_array_equal(indices, full.argmin(1))


def test_memorisation_fraction_is_near_the_percentile_for_fresh_draws_and_one_for_copies():
    rng = np.random.default_rng(6)
    levels = 17
    images = lambda n: rng.integers(0, levels, size=(n, 1, 4, 4), dtype=np.uint8)  # noqa: E731
    train, heldout, fresh = images(300), images(200), images(400)
    bank = pixel_vectors(train, levels)
    heldout_d, _ = nearest_neighbours(pixel_vectors(heldout, levels), bank)
    fresh_d, _ = nearest_neighbours(pixel_vectors(fresh, levels), bank)
    copies_d, copied = nearest_neighbours(pixel_vectors(train[:100], levels), bank)
    fraction, threshold = memorisation_fraction(fresh_d, heldout_d, 5.0)
    assert threshold > 0 and fraction < 0.15
    assert memorisation_fraction(copies_d, heldout_d, 5.0)[0] == 1.0
    np.testing.assert_array_equal(copied, np.arange(100))


def test_ema_warmup_rate_and_its_weight_on_the_initial_parameters():
    config = TrainBase(ema_rate=0.995)
    assert config.ema_rate_at(0) == pytest.approx(0.1)
    assert config.ema_rate_at(10_000) == 0.995
    # weight left on the initial weights after 400 updates: prod_n rate_n; (1+n)/(10+n) telescopes to 9! 400! / 409!
    left = np.prod([config.ema_rate_at(n) for n in range(400)])
    assert left == pytest.approx(np.exp(sum(np.log(np.arange(1, 10))) - sum(np.log(np.arange(401, 410)))), rel=1e-9)
    assert left < 1e-15 < 0.995 ** 400
    assert TrainBase(ema_rate=0.995, ema_warmup=False).ema_rate_at(0) == 0.995
