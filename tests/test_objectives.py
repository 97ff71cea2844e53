"""Losses against hand-computed values (paper eq. 2) and the quantile property."""

import math

import numpy as np
import pytest
import torch

from aiqn.nets.objectives import categorical_nll, huber_quantile_loss, nats_to_bits_per_dim


@pytest.mark.parametrize(
    "u,tau,kappa,expected",
    [
        (0.5, 0.3, 0.0, 0.3 * 0.5),  # under-estimation weighted by tau
        (-0.5, 0.3, 0.0, 0.7 * 0.5),  # over-estimation weighted by 1 - tau
        (0.5, 0.3, 1.0, 0.3 / 2.0 * 0.25),  # |u| <= kappa: quadratic
        (-0.5, 0.3, 1.0, 0.7 / 2.0 * 0.25),
        (2.0, 0.9, 1.0, 0.9 * (2.0 - 0.5)),  # |u| > kappa: linear
        (-2.0, 0.9, 1.0, 0.1 * (2.0 - 0.5)),
        (0.0, 0.25, 0.1, 0.0),
        (0.001, 0.5, 0.002, 0.5 / 0.004 * 1e-6),
    ],
)
def test_huber_quantile_loss_hand_computed(u, tau, kappa, expected):
    target, prediction = torch.tensor(u, dtype=torch.double), torch.tensor(0.0, dtype=torch.double)
    loss = huber_quantile_loss(target, prediction, torch.tensor(tau, dtype=torch.double), kappa)
    assert float(loss) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_huber_quantile_loss_is_continuous_at_kappa():
    kappa, tau = 0.3, torch.tensor(0.2, dtype=torch.double)
    inside = huber_quantile_loss(torch.tensor(kappa - 1e-9, dtype=torch.double), torch.tensor(0.0, dtype=torch.double), tau, kappa)
    outside = huber_quantile_loss(torch.tensor(kappa + 1e-9, dtype=torch.double), torch.tensor(0.0, dtype=torch.double), tau, kappa)
    assert float(inside) == pytest.approx(float(outside), abs=1e-8)


@pytest.mark.parametrize("tau", [0.1, 0.5, 0.83])
@pytest.mark.parametrize("kappa", [0.0, 1e-3])
def test_minimizer_over_a_constant_is_the_empirical_quantile(tau, kappa):
    """argmin_q sum_i rho_tau(x_i - q) is the empirical tau-quantile (up to kappa smoothing)."""
    sample = torch.from_numpy(np.random.default_rng(0).normal(size=2001)).double()
    candidates = torch.linspace(-3, 3, 6001, dtype=torch.double)  # grid step 1e-3
    losses = huber_quantile_loss(sample[None, :], candidates[:, None], torch.tensor(tau, dtype=torch.double), kappa).sum(1)
    best = float(candidates[losses.argmin()])
    # order statistic k with k/n closest to tau (the plain quantile loss is minimized there)
    sorted_sample = np.sort(sample.numpy())
    empirical = sorted_sample[int(math.ceil(tau * len(sorted_sample))) - 1]
    assert best == pytest.approx(empirical, abs=2e-3)


def test_categorical_nll_hand_computed():
    logits = torch.zeros(1, 1, 4, 1, 2)  # uniform over 4 levels at both pixels
    logits[0, 0, 2, 0, 1] = math.log(3.0)  # pixel 1: p(level 2) = 3/6
    images = torch.tensor([[[[0, 2]]]])
    nll = categorical_nll(logits, images)
    assert nll.shape == (1, 1, 1, 2)
    assert float(nll[0, 0, 0, 0]) == pytest.approx(math.log(4.0))
    assert float(nll[0, 0, 0, 1]) == pytest.approx(math.log(2.0))
    assert nats_to_bits_per_dim(math.log(4.0)) == pytest.approx(2.0)
