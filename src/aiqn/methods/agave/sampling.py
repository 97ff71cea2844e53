"""AGAVE's samples (Figure 5): z ~ N(0, I) -> f(z) (saved: the left column of Figure 5) ->
`samples_per_latent` PixelCNN samples conditioned on it, with the cached (default) or the naive
sampler of `aiqn.nets.sampling` and its `cond_map` argument. `reconstruct_agave` does the same from
q(z|x) of given images (Figures 3 and 7: ground truth, f(z), PixelCNN samples)."""

from __future__ import annotations

import numpy as np
import torch

from aiqn.methods.agave.bounds import _generator
from aiqn.methods.agave.model import Agave
from aiqn.methods.agave.train import agave_from_checkpoint
from aiqn.nets.pixelcnn import from_unit
from aiqn.nets.sampling import sampler


@torch.no_grad()
def _conditional_samples(model: Agave, means: torch.Tensor, noise: torch.Tensor, per_latent: int, method: str
                         ) -> torch.Tensor:
    """PixelCNN samples (b * r, C, H, W) uint8 for f(z) `means` (b, C_y, H_y, W_y), each repeated
    r = `per_latent` times (latent-major), with uniforms `noise` (b * r, C, H, W)."""
    cond_map = model.condition(means).repeat_interleave(per_latent, dim=0)  # (b*r, S, H, W)
    return sampler(method)(model.pixelcnn, noise, cond_map=cond_map)


def _pixel_noise(n: int, model: Agave, seed: int) -> torch.Tensor:
    """All PixelCNN uniforms (n, C, H, W) up front from their own stream of `seed`."""
    cfg = model.config
    return torch.rand((n, cfg.channels, cfg.height, cfg.width), generator=_generator(seed, 1))


@torch.no_grad()
def _draw(model: Agave, z: torch.Tensor, per_latent: int, seed: int, method: str, batch_size: int,
          device: str) -> dict[str, np.ndarray]:
    cfg = model.config
    n = len(z)
    noise = _pixel_noise(n * per_latent, model, seed)  # (n*r, C, H, W)
    means, samples = [], []
    for begin in range(0, n, batch_size):
        f = model.decode(z[begin:begin + batch_size].to(device))  # (b, C_y, H_y, W_y)
        means.append(f.float().cpu())
        chunk = noise[begin * per_latent:(begin + len(f)) * per_latent]
        samples.append(_conditional_samples(model, f, chunk, per_latent, method))
    means = torch.cat(means)
    return {
        "aux_means": means.numpy(),  # (n, C_y, H_y, W_y) float32, x's unit scale
        "aux_images": from_unit(means, cfg.levels).to(torch.uint8).numpy(),  # the same on x's levels
        "images": torch.cat(samples).view(n, per_latent, cfg.channels, cfg.height, cfg.width).numpy(),
    }


@torch.no_grad()
def generate_agave(ckpt, n: int, seed: int, samples_per_latent: int = 1, method: str = "cached",
                   use_ema: bool = True, batch_size: int = 100, device: str = "cpu") -> dict[str, np.ndarray]:
    """Figure 5 from a checkpoint (path or loaded dict): n latents z ~ N(0, I), their f(z), and
    `samples_per_latent` PixelCNN samples conditioned on each.

    Returns {"latents": (n, d) float32, "aux_means": (n, C_y, H_y, W_y) float32 f(z) on x's unit
    scale, "aux_images": (n, C_y, H_y, W_y) uint8 f(z) rounded to x's levels (the left column),
    "images": (n, samples_per_latent, C, H, W) uint8}. All draws are made up front from `seed`
    (z from stream 0, the PixelCNN's uniforms from stream 1), so the result does not depend on
    `batch_size` (latents per pass) and the cached and naive samplers see the same draws.
    """
    model = agave_from_checkpoint(ckpt, use_ema=use_ema, device=device)
    z = torch.randn((n, model.config.latent_dim), generator=_generator(seed, 0))  # (n, d)
    out = _draw(model, z, samples_per_latent, seed, method, batch_size, device)
    out["latents"] = z.numpy()
    return out


@torch.no_grad()
def reconstruct_agave(ckpt, images: np.ndarray, seed: int, samples_per_image: int = 1, posterior_mean: bool = True,
                      method: str = "cached", use_ema: bool = True, batch_size: int = 100, device: str = "cpu"
                      ) -> dict[str, np.ndarray]:
    """Figures 3 and 7 from a checkpoint: for uint8 `images` (n, C, H, W), z = the posterior mean
    (or one draw from q(z|x) when `posterior_mean` is False, stream 0 of `seed`), f(z) and
    `samples_per_image` PixelCNN samples conditioned on it. Same keys as `generate_agave`, plus
    "targets" (the auxiliary images y, uint8 on y's levels, (n, C_y, H_y, W_y))."""
    model = agave_from_checkpoint(ckpt, use_ema=use_ema, device=device)
    x = torch.from_numpy(np.asarray(images)).long()
    encoded = [model.encode(x[b:b + batch_size].to(device)) for b in range(0, len(x), batch_size)]
    mean = torch.cat([m for m, _ in encoded]).float().cpu()  # (n, d)
    z = mean
    if not posterior_mean:  # one draw from q(z|x), eps from stream 0 (independent of batch_size)
        logvar = torch.cat([v for _, v in encoded]).float().cpu()
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=_generator(seed, 0))
    out = _draw(model, z, samples_per_image, seed, method, batch_size, device)
    out["latents"] = z.numpy()
    out["targets"] = model.aux_image(x).to(torch.uint8).numpy()
    return out
