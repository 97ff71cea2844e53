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

The cached sampler (`aiqn.nets.cached_sampling`) gives the same samples much faster and is the
pipeline's default; this module keeps the naive one as the reference, and `generate`, which
draws N samples in resumable shards with either. Inpainting and class conditioning are
arguments (`known`, `class_labels`), not separate code paths.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from aiqn.nets.draws import choose_level, draw_noise, keep_known, noise_generator, start_images
from aiqn.nets import GatedPixelCNN, to_unit
from aiqn.core.damage import DamagedFile
from aiqn.core.io import read_npz, save_npz_atomic

log = logging.getLogger(__name__)


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
    images, known, known_mask = start_images(noise, (cfg.channels, cfg.height, cfg.width), known, known_mask)
    if class_labels is not None:
        class_labels = class_labels.to(device)
    if cond_map is not None:
        cond_map = cond_map.to(device=device, dtype=dtype)
    tau = noise.to(dtype) if cfg.head == "quantile" else None
    for row in range(cfg.height):
        for col in range(cfg.width):
            for channel in range(cfg.channels):
                out = model(to_unit(images, cfg.levels).to(dtype), tau, cond_map, class_labels)
                at = out[:, channel, :, row, col] if cfg.head == "categorical" else out[:, channel, row, col]
                value = choose_level(cfg.head, at, noise[:, channel, row, col], cfg.levels)
                images[:, channel, row, col] = keep_known(value, known, known_mask, channel, row, col)
                yield (row, col, channel), images


def sample_naive(model: GatedPixelCNN, noise: torch.Tensor, **conditioning) -> torch.Tensor:
    """Drain `sample_progressive`: returns the finished (B, C, H, W) uint8 images on the CPU."""
    images = None
    for _, images in sample_progressive(model, noise, **conditioning):
        pass
    return images.to(torch.uint8).cpu()


sample = sample_naive  # the reference sampler


def sampler(method: str):
    """The sampling function for `method`: "cached" (default in the pipeline) or "naive"."""
    from aiqn.nets.cached_sampling import sample_cached

    samplers = {"naive": sample_naive, "cached": sample_cached}
    if method not in samplers:
        raise ValueError(f"unknown sampling method {method!r}; choose one of {sorted(samplers)}")
    return samplers[method]


def generate(
    model: GatedPixelCNN,
    n: int,
    batch_size: int,
    seed: int,
    class_labels: torch.Tensor | None = None,
    method: str = "cached",
    shard_dir: str | Path | None = None,
    shard_key: dict | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Draw `n` samples in batches; batch b uses `noise_generator(seed, b)`, so the result does
    not depend on the device or on which batches were drawn in an earlier, interrupted run.

    With `shard_dir`, each batch is written there as `shard_{b:05d}.npz` (atomically) together
    with `shard_key` (what produced it: checkpoint hash, seed, ...); a rerun reuses every shard
    whose key matches and draws only the missing ones. Returns (n, C, H, W) uint8.
    """
    draw = sampler(method)
    key = json.dumps({**(shard_key or {}), "seed": seed, "batch_size": batch_size, "method": method},
                     sort_keys=True)
    if shard_dir is not None:
        Path(shard_dir).mkdir(parents=True, exist_ok=True)
    batches, drawn, began = [], 0, time.time()
    bar = tqdm(total=n, desc=f"sample ({method})", unit="img", disable=not progress, mininterval=2.0)
    for batch_index, start in enumerate(range(0, n, batch_size)):
        size = min(batch_size, n - start)
        shard = None if shard_dir is None else Path(shard_dir) / f"shard_{batch_index:05d}.npz"
        images = _load_shard(shard, key, size)
        if images is None:
            noise = draw_noise(size, model, noise_generator(seed, batch_index))
            labels = None if class_labels is None else class_labels[start : start + size]
            images = draw(model, noise, class_labels=labels).numpy()
            drawn += size
            if shard is not None:
                save_npz_atomic(shard, images=images, key=np.array(key))
            log.info("sampled %d/%d (%.2f samples/s)", start + size, n, drawn / (time.time() - began))
        else:
            log.info("shard %s reused (%d samples)", shard, size)
        batches.append(images)
        bar.update(size)
    bar.close()
    elapsed = time.time() - began
    log.info("%d samples drawn in %.1f s (%.2f samples/s), %d reused from shards", drawn, elapsed,
             drawn / max(elapsed, 1e-9), n - drawn)
    return np.concatenate(batches)


def _load_shard(path: Path | None, key: str, size: int) -> np.ndarray | None:
    """A finished shard's images if it exists and was made under the same key, else None."""
    if path is None or not path.exists():
        return None
    try:
        arrays = read_npz(path, "a sampling shard", {"images": (4, "u"), "key": (0, "U")})
    except DamagedFile as damaged:  # a damaged shard is redrawn, never used
        log.warning("shard %s is damaged (%s): it is drawn again", path, damaged.problem)
        return None
    if str(arrays["key"]) == key and len(arrays["images"]) == size:
        return arrays["images"]
    log.warning("shard %s does not match this run: it is drawn again", path)
    return None
