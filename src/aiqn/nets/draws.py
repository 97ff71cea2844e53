"""The random draws of autoregressive sampling, shared by the naive and the cached sampler.

One uniform per pixel-channel, drawn up front: the categorical head turns it into a level by
inverse-CDF sampling, the quantile head takes it as its sample point tau. Batch b of a run with
seed s uses its own generator, so any batch (shard) can be regenerated alone.
"""

from __future__ import annotations

import numpy as np
import torch

from aiqn.nets import GatedPixelCNN, from_unit


def noise_generator(seed: int, batch_index: int) -> torch.Generator:
    """A torch generator for batch `batch_index` of a sampling run with `seed` (independent
    streams per batch, so a batch can be regenerated alone)."""
    state = np.random.SeedSequence([seed, batch_index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def draw_noise(n: int, model: GatedPixelCNN, generator: torch.Generator) -> torch.Tensor:
    """One uniform per pixel-channel: (n, C, H, W) float32 in [0, 1), on the CPU."""
    cfg = model.config
    return torch.rand(n, cfg.channels, cfg.height, cfg.width, generator=generator)


def inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Categorical draw by inversion: the number of levels whose CDF lies below u.

    probs: (B, L) rows summing to 1; u: (B,) in [0, 1). Returns (B,) int64 in 0..L-1.
    """
    cdf = probs.cumsum(dim=-1)
    return (cdf < u[:, None]).sum(dim=-1).clamp(max=probs.shape[-1] - 1)


def choose_level(head: str, output: torch.Tensor, u: torch.Tensor, levels: int) -> torch.Tensor:
    """The level drawn at one pixel-channel for a batch, (B,) int64.

    categorical: `output` (B, L) logits, drawn by inversion of u (B,);
    quantile: `output` (B,) is Q(tau) in [-1, 1], rounded to the nearest level (tau is already
    inside the network, so u is not used here).
    """
    if head == "categorical":
        return inverse_cdf(torch.softmax(output.float(), dim=-1), u)
    return from_unit(output, levels)


def start_images(noise: torch.Tensor, levels_shape: tuple[int, int, int], known=None, known_mask=None):
    """Blank (B, C, H, W) int64 images on noise's device with known pixel-channels filled in;
    returns (images, known, known_mask) with the latter two on the same device (or None)."""
    images = torch.zeros(noise.shape[0], *levels_shape, dtype=torch.long, device=noise.device)
    if known is not None:
        known, known_mask = known.to(noise.device).long(), known_mask.to(noise.device).bool()
        images = torch.where(known_mask, known, images)
    return images, known, known_mask


def keep_known(value: torch.Tensor, known, known_mask, channel: int, row: int, col: int) -> torch.Tensor:
    """Inpainting: where a pixel-channel is given, the given level replaces the drawn one."""
    if known is None:
        return value
    return torch.where(known_mask[:, channel, row, col], known[:, channel, row, col], value)
