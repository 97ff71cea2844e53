"""AGAVE's objective (Lucas & Verbeek 2018, eq. 7, negated, nats per image, batch mean), with one
reparameterised z = mu + sigma * eps:

    loss = reconstruction + [use_aux] * auxiliary + lambda * kl
    reconstruction = -sum_i log p(x_i | x_<i, f(z))       (the PixelCNN, categorical softmax)
    auxiliary      = -sum_j log p(y_j | z)                 (eq. 10 over y's levels)
    kl             = KL(q(z|x) || N(0, I))                 (closed form)

`use_aux=False` is eq. 6 (with lambda as the KL weight): the ablation of section 4.4 / Figure 7.
"""

from __future__ import annotations

import torch

from aiqn.methods.agave.model import Agave
from aiqn.nets.objectives import categorical_nll
from aiqn.nets.pixelcnn import to_unit
from aiqn.nets.vae import gaussian_kl


def decoder_terms(model: Agave, images: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
                  noise: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image terms (B,) in nats at z = mean + exp(logvar / 2) * noise, all (B, d), for integer
    images (B, C, H, W): reconstruction -log p(x | f(z)), auxiliary -log p(y | z), and
    log_weight = log p(z) - log q(z | x) (the importance weight's prior/posterior part)."""
    z = mean + torch.exp(0.5 * logvar) * noise  # (B, d)
    means = model.decode(z)  # (B, C_y, H_y, W_y)
    x_unit = to_unit(images, model.config.levels).to(means.dtype)
    logits = model.pixel_logits(x_unit, model.condition(means))  # (B, C, L, H, W)
    reconstruction = categorical_nll(logits, images).flatten(1).sum(1)  # (B,)
    auxiliary = -model.aux_log_prob(model.aux_image(images), means).flatten(1).sum(1)  # (B,)
    # log N(z; 0, I) - log N(z; mean, sigma^2) = -1/2 sum (z^2 - noise^2 - logvar)
    log_weight = -0.5 * (z.pow(2) - noise.pow(2) - logvar).sum(1)  # (B,)
    return {"reconstruction": reconstruction, "auxiliary": auxiliary, "log_weight": log_weight}


def agave_terms(model: Agave, images: torch.Tensor, noise: torch.Tensor) -> dict[str, torch.Tensor]:
    """The terms of eq. 7 per image (B,), nats: reconstruction, auxiliary, kl (closed form), and
    log_weight (see `decoder_terms`), for integer images (B, C, H, W) and eps `noise` (B, d)."""
    mean, logvar = model.encode(images)
    out = decoder_terms(model, images, mean, logvar, noise.to(mean))
    out["kl"] = gaussian_kl(mean, logvar).sum(1)  # (B,)
    return out


def agave_objective(terms: dict[str, torch.Tensor], kl_weight: float, use_aux: bool = True) -> torch.Tensor:
    """Negated eq. 7, batch mean in nats per image: reconstruction + [use_aux] auxiliary + lambda KL."""
    loss = terms["reconstruction"] + kl_weight * terms["kl"]
    if use_aux:
        loss = loss + terms["auxiliary"]
    return loss.mean()
