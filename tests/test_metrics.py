"""Tests for FID (Heusel et al. 2017) and Inception Score (Salimans et al. 2016)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg

from aiqn.metrics import (
    frechet_distance,
    gaussian_statistics,
    inception_score,
    load_statistics,
    save_statistics,
)


def _random_cov(rng: np.random.Generator, d: int, n: int) -> np.ndarray:
    a = rng.normal(size=(n, d))
    return np.cov(a, rowvar=False)


def _fid_sqrtm(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_fid_identical_is_zero():
    rng = np.random.default_rng(0)
    mu, sigma = gaussian_statistics(rng.normal(size=(200, 16)))
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_fid_diagonal_closed_form():
    rng = np.random.default_rng(1)
    d = 8
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.1, 3.0, size=d), rng.uniform(0.1, 3.0, size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fid_matches_scipy_sqrtm(seed):
    rng = np.random.default_rng(seed)
    d = 16
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_cov(rng, d, 100), _random_cov(rng, d, 100)
    expected = _fid_sqrtm(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)
    # Symmetric in its arguments.
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-6)


def test_fid_near_singular_no_complex_warning():
    rng = np.random.default_rng(3)
    d = 16
    mu1, s1 = gaussian_statistics(rng.normal(size=(10, d)))  # rank <= 9 < 16
    mu2, s2 = gaussian_statistics(rng.normal(size=(12, d)) + 0.5)  # rank <= 11
    assert np.linalg.matrix_rank(s1) < d
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any ComplexWarning / RuntimeWarning fails the test
        got = frechet_distance(mu1, s1, mu2, s2)
    assert isinstance(got, float) and np.isfinite(got)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = _fid_sqrtm(mu1, s1, mu2, s2)
    assert got == pytest.approx(expected, rel=1e-6)
    # A rank-deficient covariance against itself gives ~0: zero eigenvalues carry float64
    # round-off of ~1e-16 * ||S||^2, whose square roots add ~1e-8 each, so compare relative
    # to the trace scale rather than with the 1e-8 absolute bound used for full rank.
    self_fid = frechet_distance(mu1, s1, mu1, s1)
    assert abs(self_fid) < 1e-6 * np.trace(s1)


def test_fid_shape_mismatch_raises():
    mu, sigma = np.zeros(4), np.eye(4)
    with pytest.raises(ValueError):
        frechet_distance(mu, sigma, np.zeros(5), np.eye(5))
    with pytest.raises(ValueError):
        frechet_distance(mu, np.eye(3), mu, sigma)
    with pytest.raises(ValueError):
        frechet_distance(np.zeros((4, 1)), sigma, mu, sigma)


def test_gaussian_statistics_matches_numpy():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(50, 7)).astype(np.float32)
    mu, sigma = gaussian_statistics(x)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-12)
    assert sigma.shape == (7, 7)


def test_statistics_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    mu, sigma = gaussian_statistics(rng.normal(size=(30, 6)))
    path = tmp_path / "stats" / "ref.npz"
    save_statistics(path, mu, sigma, dataset="digits", n=30, extractor="digits-classifier")
    mu2, sigma2, meta = load_statistics(path)
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(sigma, sigma2)
    assert meta == {"dataset": "digits", "n": 30, "extractor": "digits-classifier"}


def test_is_uniform_is_one():
    probs = np.full((100, 10), 0.1)
    mean, std = inception_score(probs, splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_is_balanced_one_hot_is_k():
    k, splits = 5, 4
    # Each split of 10 consecutive rows holds every class exactly twice.
    probs = np.tile(np.eye(k), (2 * splits, 1))  # (40, 5)
    mean, std = inception_score(probs, splits=splits)
    assert mean == pytest.approx(k, rel=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_is_hand_computed_two_samples():
    p = np.array([[0.9, 0.1], [0.2, 0.8]])
    marginal = p.mean(axis=0)
    kl = [np.sum(row * np.log(row / marginal)) for row in p]
    expected = float(np.exp(np.mean(kl)))
    mean, std = inception_score(p, splits=1)
    assert mean == pytest.approx(expected, rel=1e-12)
    assert std == 0.0
    # With zeros: one-hot rows [1,0] and [0.5,0.5]; marginal [0.75, 0.25].
    q = np.array([[1.0, 0.0], [0.5, 0.5]])
    kl0 = np.log(1 / 0.75)
    kl1 = 0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25)
    mean, _ = inception_score(q, splits=1)
    assert mean == pytest.approx(np.exp((kl0 + kl1) / 2), rel=1e-12)


def test_is_too_few_samples_raises():
    with pytest.raises(ValueError):
        inception_score(np.full((5, 3), 1 / 3), splits=10)
