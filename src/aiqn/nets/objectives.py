"""Training objectives, kept apart from the networks.

- `huber_quantile_loss`: the Huber quantile regression loss rho^kappa_tau of Ostrovski et al.
  2018, eq. 2 (after Huber 1964 and Dabney et al. 2018b); kappa = 0 gives the plain quantile
  loss rho_tau(u) = (tau - 1{u <= 0}) u.
- `categorical_nll`: the PixelCNN's cross-entropy per pixel-channel, in nats, and its
  conversion to bits per dimension.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def huber_quantile_loss(target: torch.Tensor, prediction: torch.Tensor, tau: torch.Tensor, kappa: float) -> torch.Tensor:
    """Elementwise rho^kappa_tau(u) with u = target - prediction (paper eq. 2).

        |tau - 1{u<=0}| / (2 kappa) * u^2          if |u| <= kappa
        |tau - 1{u<=0}| * (|u| - kappa / 2)         otherwise

    u > 0 (under-estimation) is weighted by tau, u <= 0 by 1 - tau. Returns a tensor of the
    broadcast shape; callers reduce it (the paper sums over pixel-channels).
    """
    u = target - prediction
    weight = torch.abs(tau - (u <= 0).to(u.dtype))
    abs_u = torch.abs(u)
    if kappa <= 0:
        return weight * abs_u
    quadratic = weight * u.pow(2) / (2.0 * kappa)
    linear = weight * (abs_u - 0.5 * kappa)
    return torch.where(abs_u <= kappa, quadratic, linear)


def categorical_nll(logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Cross-entropy in nats per pixel-channel.

    logits: (B, C, L, H, W); images: (B, C, H, W) integer levels. Returns (B, C, H, W) (a view).
    The levels axis is brought last in (B, H, W, C, L) order, which is how `GatedPixelCNN.forward`
    lays its logits out in memory, so no copy is made for them.
    """
    B, C, L, H, W = logits.shape
    flat = logits.permute(0, 3, 4, 1, 2).reshape(-1, L)  # (B*H*W*C, L)
    targets = images.permute(0, 2, 3, 1).reshape(-1).long()  # (B*H*W*C,)
    nll = F.cross_entropy(flat, targets, reduction="none")
    return nll.view(B, H, W, C).permute(0, 3, 1, 2)


def nats_to_bits_per_dim(nats_per_dim: float | torch.Tensor) -> float | torch.Tensor:
    """Mean negative log-likelihood in nats per dimension -> bits per dimension."""
    return nats_per_dim / math.log(2.0)
