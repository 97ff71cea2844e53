"""Bounds on -log p(x) of an AGAVE in bits per dimension, p(x) = int p(z) p(x | f(z)) dz (the PixelCNN
alone defines p(x | z); y is not part of the model of x), divided by D ln 2, D = C*H*W:

- `elbo_bits_per_dim`: eq. 7 with lambda = 1 and without the auxiliary term, the negative ELBO
  E_q[-log p(x|z)] + KL (the paper's Figures 4 and 8), with `samples` draws of z per image and the
  KL in closed form;
- `importance_bits_per_dim`: Burda et al.'s bound with K samples (the paper's Table 1: K = 150),
  -log (1/K sum_k p(x|z_k) p(z_k) / q(z_k|x)), by logsumexp; images in batches, the K samples of
  each batch in chunks of `k_batch`, so memory is (batch_size * k_batch) PixelCNN passes at a time.
  It is a tighter bound in expectation (decreasing in K towards -log p(x)); with K = 1 its
  expectation equals the ELBO (tested).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from aiqn.core.intervals import t_interval
from aiqn.methods.agave.model import Agave
from aiqn.methods.agave.objective import decoder_terms
from aiqn.methods.agave.train import agave_from_checkpoint
from aiqn.nets.vae import gaussian_kl

LOG_2 = math.log(2.0)


def _batches(images: np.ndarray, batch_size: int, device: str):
    for index, start in enumerate(range(0, len(images), batch_size)):
        yield index, torch.from_numpy(np.asarray(images[start:start + batch_size])).long().to(device)


def _generator(seed: int, index: int) -> torch.Generator:
    """One CPU generator per evaluation batch (results do not depend on which batches ran before)."""
    state = np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


@torch.no_grad()
def elbo_bits_per_dim(model: Agave, images: np.ndarray, seed: int = 0, samples: int = 1, batch_size: int = 500,
                      device: str = "cpu") -> dict[str, float]:
    """The negative ELBO of uint8 `images` (N, C, H, W) in bits per dimension, and its parts.

    Returns `bpd` = reconstruction + kl (a bound on -log p(x), eq. 7 with lambda = 1 and no auxiliary
    term), `reconstruction` and `kl`, all per x-dimension D = C*H*W; `auxiliary` per y-dimension, and
    `vae_bpd` = (auxiliary + kl) per y-dimension (the VAE decoder's own bound on -log p(y), Figure 4).
    The reconstruction averages `samples` draws of z per image (batch b draws from `_generator(seed, b)`).
    """
    model = model.to(device).eval()
    cfg, aux = model.config, model.aux
    x_dims, y_dims = cfg.channels * cfg.height * cfg.width, math.prod(aux.shape)
    sums = {"reconstruction": 0.0, "auxiliary": 0.0, "kl": 0.0}
    bound_per_image = []  # (B,) per batch: reconstruction + kl, nats per image
    for index, batch in _batches(images, batch_size, device):
        generator = _generator(seed, index)
        mean, logvar = model.encode(batch)
        reconstruction = torch.zeros(len(batch), dtype=torch.float64)
        for _ in range(samples):
            noise = torch.randn(mean.shape, generator=generator).to(mean)
            out = decoder_terms(model, batch, mean, logvar, noise)
            reconstruction += out["reconstruction"].double().cpu() / samples
            sums["auxiliary"] += float(out["auxiliary"].double().sum()) / samples
        kl_per_image = gaussian_kl(mean, logvar).double().flatten(1).sum(1).cpu()  # (B,)
        sums["reconstruction"] += float(reconstruction.sum())
        sums["kl"] += float(kl_per_image.sum())
        bound_per_image.append((reconstruction + kl_per_image).numpy())
    n = len(images)
    rec, aux_term, kl = (sums[k] / (n * LOG_2) for k in ("reconstruction", "auxiliary", "kl"))
    _, low, high = t_interval(np.concatenate(bound_per_image) / (LOG_2 * x_dims))
    return {"bpd": (rec + kl) / x_dims, "bpd_interval": [round(low, 6), round(high, 6)], "reconstruction": rec / x_dims,
            "kl": kl / x_dims, "auxiliary": aux_term / y_dims, "vae_bpd": (aux_term + kl) / y_dims}


@torch.no_grad()
def importance_log_likelihood(model: Agave, images: torch.Tensor, k: int, generator: torch.Generator,
                              k_batch: int = 50) -> torch.Tensor:
    """log (1/K sum_k p(x|z_k) p(z_k) / q(z_k|x)) per image (B,) in nats (float64), z_k ~ q(z|x),
    for integer images (B, C, H, W). All eps (B, K, d) are drawn from `generator` first, then run
    through the decoders `k_batch` samples at a time (so `k_batch` changes memory, not the draws)."""
    mean, logvar = model.encode(images)  # (B, d) each
    B, d = mean.shape
    noise_all = torch.randn((B, k, d), generator=generator)  # (B, K, d) on the CPU
    log_weights = []
    for begin in range(0, k, k_batch):
        kc = min(k_batch, k - begin)
        noise = noise_all[:, begin:begin + kc].reshape(B * kc, d).to(mean)  # (B*kc, d), image-major
        rep = lambda t: t.repeat_interleave(kc, dim=0)  # noqa: E731  (B*kc, ...)
        out = decoder_terms(model, rep(images), rep(mean), rep(logvar), noise)
        log_weights.append((out["log_weight"] - out["reconstruction"]).double().view(B, kc))
    return torch.logsumexp(torch.cat(log_weights, dim=1), dim=1) - math.log(k)  # (B,)


@torch.no_grad()
def importance_bits_per_dim(model: Agave, images: np.ndarray, k: int = 150, seed: int = 0, batch_size: int = 100,
                            k_batch: int = 50, device: str = "cpu") -> float:
    """The importance-sampled bound on -log p(x) with K = `k` samples (paper: 150), bits per dimension,
    averaged over uint8 `images` (N, C, H, W). Batch b draws from `_generator(seed, b)`."""
    return float(importance_bits_per_image(model, images, k, seed, batch_size, k_batch, device).mean())


@torch.no_grad()
def importance_bits_per_image(model: Agave, images: np.ndarray, k: int = 150, seed: int = 0, batch_size: int = 100,
                              k_batch: int = 50, device: str = "cpu") -> np.ndarray:
    """importance_bits_per_dim of each image (N,), bits per dimension."""
    model = model.to(device).eval()
    cfg = model.config
    per_image = [-importance_log_likelihood(model, batch, k, _generator(seed, index), k_batch).cpu().numpy()
                 for index, batch in _batches(images, batch_size, device)]  # (B,) nats per image
    return np.concatenate(per_image) / (cfg.channels * cfg.height * cfg.width * LOG_2)


def evaluate_agave(ckpt, images: np.ndarray, k: int = 150, seed: int = 0, elbo_samples: int = 1,
                   use_ema: bool = True, batch_size: int = 100, k_batch: int = 50, device: str = "cpu") -> dict:
    """Both bounds of a checkpoint (path or loaded dict) on uint8 `images`, as a JSON-ready dict:
    {"elbo": elbo_bits_per_dim(...), "importance": {"bpd", "k"}, "n_images", "seed", "weights"};
    `k=0` skips the importance-sampled bound."""
    model = agave_from_checkpoint(ckpt, use_ema=use_ema, device=device)
    out = {"elbo": elbo_bits_per_dim(model, images, seed, elbo_samples, batch_size, device),
           "elbo_samples": elbo_samples, "n_images": int(len(images)), "seed": seed,
           "weights": "ema" if use_ema else "raw"}
    if k > 0:
        bpd, low, high = t_interval(importance_bits_per_image(model, images, k, seed, batch_size, k_batch, device))
        out["importance"] = {"bpd": bpd, "bpd_interval": [round(low, 6), round(high, 6)], "k": k}
    return out
