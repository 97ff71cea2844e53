"""Samplers for the Gated PixelCNN family.

The naive reference sampler runs one full forward pass of the network per pixel and per colour
channel (raster order, then R -> G -> B), as in van den Oord et al. 2016b and Ostrovski et al.
2018, section 4.

All randomness is drawn up front by `draw_noise`, one number per pixel-channel:
- categorical head (PixelCNN): u ~ U[0, 1), turned into a level by inverse-CDF sampling;
- quantile head (PixelIQN): tau ~ U[0, 1], the network's input sample point.
So a faster sampler can be checked against this one on exactly the same draws.

How generated values re-enter the network: PixelIQN outputs a real number in the network's
[-1, 1] scale. It is rounded to the nearest of the dataset's L levels (clamped to the range)
before it is written into the image that conditions the next pixels. Training inputs are always
on that grid, so feeding off-grid values would condition the network on inputs it never saw;
and the saved samples are uint8 levels anyway, so the network conditions on exactly the image
it finally outputs.

NOTE: the cached fast sampler is not here yet (see issue 3); inpainting and class conditioning
are arguments (`known`, `class_labels`), not separate code paths.
"""

from __future__ import annotations

import logging
import time
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from aiqn.models import GatedPixelCNN, from_unit, to_unit

log = logging.getLogger(__name__)


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


@torch.no_grad()
def sample_progressive(
    model: GatedPixelCNN,
    noise: torch.Tensor,
    class_labels: torch.Tensor | None = None,
    cond_map: torch.Tensor | None = None,
    known: torch.Tensor | None = None,
    known_mask: torch.Tensor | None = None,
) -> Iterator[tuple[tuple[int, int, int], torch.Tensor]]:
    """Naive sampler as a generator: yields ((row, col, channel), image) after every step.

    noise: (B, C, H, W) from `draw_noise`; `known` (B, C, H, W) integer levels and `known_mask`
    (same shape, bool) fix pixel-channels (inpainting): they are copied, never sampled.
    The yielded image is (B, C, H, W) int64 levels on the model's device.
    """
    cfg = model.config
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    noise = noise.to(device)
    B = noise.shape[0]
    images = torch.zeros(B, cfg.channels, cfg.height, cfg.width, dtype=torch.long, device=device)
    if known is not None:
        known, known_mask = known.to(device).long(), known_mask.to(device).bool()
        images = torch.where(known_mask, known, images)
    if class_labels is not None:
        class_labels = class_labels.to(device)
    if cond_map is not None:
        cond_map = cond_map.to(device=device, dtype=dtype)
    tau = noise.to(dtype) if cfg.head == "quantile" else None
    for row in range(cfg.height):
        for col in range(cfg.width):
            for channel in range(cfg.channels):
                out = model(to_unit(images, cfg.levels).to(dtype), tau, cond_map, class_labels)
                if cfg.head == "categorical":
                    probs = F.softmax(out[:, channel, :, row, col].float(), dim=-1)  # (B, L)
                    value = inverse_cdf(probs, noise[:, channel, row, col])
                else:
                    value = from_unit(out[:, channel, row, col], cfg.levels)
                if known is not None:
                    value = torch.where(known_mask[:, channel, row, col], known[:, channel, row, col], value)
                images[:, channel, row, col] = value
                yield (row, col, channel), images


def sample(model: GatedPixelCNN, noise: torch.Tensor, **conditioning) -> torch.Tensor:
    """Drain `sample_progressive`: returns the finished (B, C, H, W) uint8 images on the CPU."""
    images = None
    for _, images in sample_progressive(model, noise, **conditioning):
        pass
    return images.to(torch.uint8).cpu()


def generate(
    model: GatedPixelCNN,
    n: int,
    batch_size: int,
    seed: int,
    class_labels: torch.Tensor | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Draw `n` samples in batches; batch b uses `noise_generator(seed, b)`, so the result does
    not depend on the device. Returns (n, C, H, W) uint8. Logs the rate in samples/s."""
    batches = []
    began = time.time()
    bar = tqdm(total=n, desc="sample", unit="img", disable=not progress, mininterval=2.0)
    for batch_index, start in enumerate(range(0, n, batch_size)):
        size = min(batch_size, n - start)
        noise = draw_noise(size, model, noise_generator(seed, batch_index))
        labels = None if class_labels is None else class_labels[start : start + size]
        batches.append(sample(model, noise, class_labels=labels).numpy())
        bar.update(size)
        log.info("sampled %d/%d (%.1f samples/s)", start + size, n, (start + size) / (time.time() - began))
    bar.close()
    return np.concatenate(batches)
