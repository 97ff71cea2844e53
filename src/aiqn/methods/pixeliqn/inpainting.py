"""Inpainting (the paper's Figures 6 and 12): complete test images whose top part is given.

The known pixel-channels are fixed before sampling and copied at their steps, never drawn
(both samplers take `known` and `known_mask`); every other pixel-channel is drawn in raster
order conditioned on everything above and to its left, known or drawn. Each image gets K
completions from K independent noise draws, so they differ wherever the model is uncertain.

Masks are given by the fraction of rows known from the top (0.5: the top half, as in the
paper). Only a top part is meaningful for a raster-order model: a known pixel below an unknown
one would be kept, but the pixels drawn before it could not see it.
"""

from __future__ import annotations

import numpy as np
import torch

from aiqn.nets.draws import draw_noise, noise_generator
from aiqn.nets import GatedPixelCNN
from aiqn.nets.sampling import sampler


def top_rows_mask(shape: tuple[int, int, int], known_rows: float) -> torch.Tensor:
    """(C, H, W) bool: True on the first round(known_rows * H) rows (every channel)."""
    if not 0.0 <= known_rows < 1.0:
        raise ValueError(f"known_rows must lie in [0, 1), got {known_rows}")
    channels, height, width = shape
    mask = torch.zeros(channels, height, width, dtype=torch.bool)
    mask[:, : int(round(known_rows * height)), :] = True
    return mask


@torch.no_grad()
def inpaint(
    model: GatedPixelCNN, images: np.ndarray, known_mask: torch.Tensor, completions: int, seed: int,
    method: str = "cached", class_labels: torch.Tensor | None = None,
) -> np.ndarray:
    """K completions of each uint8 image (M, C, H, W) with `known_mask` (C, H, W) given.

    Returns (M, K, C, H, W) uint8; completion k of image m uses row m*K + k of one noise batch
    drawn from `noise_generator(seed, 0)`, so a result depends only on the seed and the inputs.
    """
    m = len(images)
    known = torch.from_numpy(np.repeat(images, completions, axis=0)).long()  # (M*K, C, H, W)
    mask = known_mask.expand_as(known).clone()
    noise = draw_noise(m * completions, model, noise_generator(seed, 0))
    labels = None if class_labels is None else class_labels.repeat_interleave(completions)
    drawn = sampler(method)(model, noise, known=known, known_mask=mask, class_labels=labels)
    return drawn.numpy().reshape(m, completions, *images.shape[1:])  # (M, K, C, H, W)


def masked_input(images: np.ndarray, known_mask: torch.Tensor, levels: int) -> np.ndarray:
    """Images with the unknown part set to mid-grey, for display: (M, C, H, W) uint8."""
    shown = images.copy()
    shown[:, ~known_mask.numpy()] = (levels - 1) // 2
    return shown
