"""CQF's losses (Shmelkov et al. 2018): the Sonderby generator loss (eq. 7), the discriminator's
cross-entropy with Gulrajani et al.'s gradient penalty, bits/dim of the coverage bound, and a
context that keeps a network's parameters out of a graph."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from aiqn.nets.objectives import nats_to_bits_per_dim



def sonderby_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 7: -E[log D(G(z)) / (1 - D(G(z)))] = -mean of the discriminator logits (B,) on generated images."""
    return -fake_logits.mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-E[log D(real)] - E[log(1 - D(fake))] from logits (B,): softplus(-l_real) + softplus(l_fake)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def gradient_penalty(discriminator: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     alpha: torch.Tensor) -> torch.Tensor:
    """E[(|grad_x l(x^)|_2 - 1)^2] at x^ = alpha * real + (1 - alpha) * fake (Gulrajani et al. 2017),
    alpha (B,); real and fake are treated as constants. The result keeps the graph (double backward)."""
    a = alpha.to(real).view(-1, *([1] * (real.dim() - 1)))
    x = (a * real.detach() + (1.0 - a) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(x).sum(), x, create_graph=True)
    norm = grad.flatten(1).pow(2).sum(1).add(1e-12).sqrt()  # (B,); the epsilon keeps d norm finite at 0
    return (norm - 1.0).pow(2).mean()


def bits_per_dim_from_nats(nats_per_image: float | torch.Tensor, dims: int) -> float | torch.Tensor:
    """-log P(x) in nats per image -> bits per dimension of the 0..levels-1 data."""
    return nats_to_bits_per_dim(nats_per_image / dims)


@contextlib.contextmanager
def frozen(*modules: torch.nn.Module | None):
    """Parameters of `modules` excluded from the graph built inside (no gradients reach them)."""
    params = [p for m in modules if m is not None for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
