"""Convolutional VAE for uint8 images with `levels` intensity levels, the base of the AIQN-VAE
(Ostrovski et al. 2018, appendix "AIQN-VAE"; the paper modified the LynnHo/VAE-Tensorflow VAE).

Model
-----
Encoder q(z | x) = N(mu(x), diag(sigma^2(x))), prior p(z) = N(0, I), z in R^d (d = 32 in the paper).
Decoder p(x | z): every pixel-channel independently a discretized logistic on the unit scale
(PixelCNN++, Salimans et al. 2017): the image x in {0..L-1} is mapped to [-1, 1] by `to_unit`, the
level k occupies the bin [x_k - h, x_k + h] with h = 1 / (L - 1), the outermost bins extend to -inf
and +inf, and with location mu and scale s = exp(log_s) (both per pixel-channel, from the decoder)

    P(x_k) = sigma((x_k + h - mu) / s) - sigma((x_k - h - mu) / s)     (sigma: logistic sigmoid),

a proper probability mass over the L levels, so the reconstruction term is a true negative
log-likelihood in nats (comparable across models, convertible to bits/dim). For a and b = a - 2h/s,
log(sigma(a) - sigma(b)) = -softplus(-a) - softplus(b) + log(-expm1(b - a)) is evaluated exactly
without the usual cut-off. log_s is clamped below at -7 (as in PixelCNN++).

Loss per image (nats), with one reparameterised sample z = mu + sigma * eps:

    reconstruction = -sum_pixels log p(x | z)
    kl             = KL(q(z|x) || N(0, I)) = 1/2 sum_i (mu_i^2 + sigma_i^2 - 1 - log sigma_i^2)
    total          = reconstruction + kl_weight * kl              (the training objective)
    nelbo          = reconstruction + kl                          (the negative ELBO, a bound)

Fixed posterior variance (AIQN-VAE)
-----------------------------------
The paper: "For the AIQN-VAE, but not the VAE, we lowered latent dimension variance to 0.1 and the
KL-term weight to 0.5." We read "latent dimension variance" as the variance of the encoder's
posterior q(z|x) in each latent dimension, fixed at 0.1 instead of learned
(`fixed_posterior_variance=0.1`; the encoder then outputs only the mean). Reasons: (1) it is the
noise the decoder sees around e(x), which "lowering" makes the latent code more precise; (2) the paper
adds that "in this setting the VAE prior alone will produce poor samples": with sigma^2 = 0.1 and
KL weight 0.5 the KL term reduces to a constant plus an L2 penalty (kl_weight / 2) |mu|^2 on the
means, so nothing pulls the aggregate posterior (a mixture of narrow Gaussians around the means)
towards N(0, I); sampling from N(0, I) then lands off the data manifold and a learned latent
distribution (the AIQN) is needed. Had the prior variance been lowered instead, the KL term would
still match the aggregate posterior to the (narrower) prior and prior samples would stay as good
as in any VAE. The prior stays N(0, I) in both models; `kl_weight` is the beta factor.

Architecture (configurable by image shape)
------------------------------------------
Encoder: 3x3 conv (C -> w_0), then per stage k = 0..n-1: `stage_convs` 3x3 convs at width w_k and a
4x4 stride-2 conv to w_{k+1}; flatten; linear to 2d (mean, log-variance) or d (mean only).
w_k = min(base_channels * 2^k, max_channels). n = `downsamplings` (None: log2(min(H, W)) - 2, so the
deepest map is 4 x 4: 64x64 -> 4 stages, 8x8 -> 1). The decoder mirrors it with 4x4 stride-2
transposed convs and ends in a 3x3 conv to 2C maps (location, log-scale). Activations: leaky ReLU
(0.2) in the encoder, ReLU in the decoder (as the LynnHo VAE). No batch normalisation: the EMA
(`aiqn.methods.pixeliqn.train.update_ema`) averages parameters only, and batch statistics would make sampling
depend on the batch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aiqn.nets.shape import ImageShape
from aiqn.nets.pixelcnn import from_unit, to_unit

MIN_LOG_SCALE = -7.0


def resolve_downsamplings(height: int, width: int, downsamplings: int | None) -> int:
    """The stride-2 stages of a conv encoder: None gives log2(min(H, W)) - 2 (deepest map 4x4);
    H and W must be divisible by 2^downsamplings."""
    if downsamplings is None:
        downsamplings = max(0, int(math.log2(min(height, width))) - 2)
    factor = 2 ** downsamplings
    if height % factor or width % factor:
        raise ValueError(f"height={height} and width={width} must be divisible by 2^downsamplings={factor}")
    return downsamplings


@dataclass
class VAEConfig(ImageShape):
    """Everything needed to rebuild a ConvVAE (and its AIQN); stored in checkpoints as `ckpt["config"]`."""

    latent_dim: int = 32
    base_channels: int = 32  # w_0; the paper-scale (LynnHo) VAE uses 64
    max_channels: int = 256  # cap of the doubling widths; paper scale 512
    downsamplings: int | None = None  # None: log2(min(H, W)) - 2 (deepest map 4x4)
    stage_convs: int = 1  # extra 3x3 convs per resolution in encoder and decoder
    fixed_posterior_variance: float | None = None  # AIQN-VAE: 0.1; None: learned (plain VAE)
    kl_weight: float = 1.0  # AIQN-VAE: 0.5
    aiqn_hidden: int = 512  # AIQN over the latent space: width ...
    aiqn_layers: int = 3  # ... and number of fully connected ReLU layers
    aiqn_tau_fraction: float = 0.5  # share of each AIQN hidden layer given to per-dimension tau units

    def __post_init__(self):
        if self.levels < 2:
            raise ValueError(f"levels must be >= 2, got {self.levels}")
        self.downsamplings = resolve_downsamplings(self.height, self.width, self.downsamplings)
        if self.fixed_posterior_variance is not None and self.fixed_posterior_variance <= 0:
            raise ValueError(f"fixed_posterior_variance must be > 0 or None, got {self.fixed_posterior_variance}")
        if self.kl_weight < 0 or self.latent_dim < 1:
            raise ValueError("need kl_weight >= 0 and latent_dim >= 1")

    def to_dict(self) -> dict:
        return asdict(self)

    def widths(self) -> list[int]:
        """Channel widths w_0..w_n of the encoder stages (the decoder mirrors them)."""
        return [min(self.base_channels * 2**k, self.max_channels) for k in range(self.downsamplings + 1)]


def aiqn_vae_config(config: VAEConfig, posterior_variance: float = 0.1, kl_weight: float = 0.5) -> VAEConfig:
    """The AIQN-VAE variant of a VAE config (paper appendix): posterior variance fixed at 0.1, KL weight 0.5."""
    return VAEConfig(**{**asdict(config), "fixed_posterior_variance": posterior_variance, "kl_weight": kl_weight})


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) elementwise, in nats: 1/2 (mean^2 + var - 1 - logvar)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)


def discretized_logistic_log_prob(x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor,
                                  levels: int) -> torch.Tensor:
    """log P(x) of a discretized logistic over `levels` bins of [-1, 1] (module docstring), elementwise.

    x: values on the unit scale (exactly the level centres, `to_unit` of integer levels); loc,
    log_scale: same shape. The first and last bins extend to -inf / +inf. Returns nats, same shape.
    """
    half = 1.0 / (levels - 1)
    log_scale = log_scale.clamp(min=MIN_LOG_SCALE)
    inv_s = torch.exp(-log_scale)
    upper = inv_s * (x - loc + half)  # a
    lower = inv_s * (x - loc - half)  # b = a - 2h/s
    log_cdf_upper = -F.softplus(-upper)  # log sigma(a)
    log_sf_lower = -F.softplus(lower)  # log (1 - sigma(b))
    log_bin = log_cdf_upper - F.softplus(lower) + torch.log(-torch.expm1(-2.0 * half * inv_s))
    eps = 0.5 * half  # x sits exactly on a level centre; compare with a margin
    return torch.where(x < -1.0 + eps, log_cdf_upper, torch.where(x > 1.0 - eps, log_sf_lower, log_bin))


class ConvVAE(nn.Module):
    """Convolutional VAE (module docstring). Images enter as uint8/int levels (B, C, H, W)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = cfg = config
        widths = cfg.widths()
        n = cfg.downsamplings
        self.bottom = (widths[-1], cfg.height // 2**n, cfg.width // 2**n)  # (c_n, h_n, w_n)
        act_e = lambda: nn.LeakyReLU(0.2)  # noqa: E731
        enc: list[nn.Module] = [nn.Conv2d(cfg.channels, widths[0], 3, padding=1), act_e()]
        for k in range(n):
            for _ in range(cfg.stage_convs):
                enc += [nn.Conv2d(widths[k], widths[k], 3, padding=1), act_e()]
            enc += [nn.Conv2d(widths[k], widths[k + 1], 4, stride=2, padding=1), act_e()]
        for _ in range(cfg.stage_convs if n == 0 else 0):
            enc += [nn.Conv2d(widths[0], widths[0], 3, padding=1), act_e()]
        self.encoder = nn.Sequential(*enc)
        flat = math.prod(self.bottom)
        learned_var = cfg.fixed_posterior_variance is None
        self.to_latent = nn.Linear(flat, cfg.latent_dim * (2 if learned_var else 1))

        self.from_latent = nn.Linear(cfg.latent_dim, flat)
        dec: list[nn.Module] = [nn.ReLU()]
        for _ in range(cfg.stage_convs if n == 0 else 0):
            dec += [nn.Conv2d(widths[0], widths[0], 3, padding=1), nn.ReLU()]
        for k in reversed(range(n)):
            dec += [nn.ConvTranspose2d(widths[k + 1], widths[k], 4, stride=2, padding=1), nn.ReLU()]
            for _ in range(cfg.stage_convs):
                dec += [nn.Conv2d(widths[k], widths[k], 3, padding=1), nn.ReLU()]
        dec += [nn.Conv2d(widths[0], 2 * cfg.channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer images (B, C, H, W) -> posterior mean (B, d) and log-variance (B, d).

        With `fixed_posterior_variance` v the log-variance is the constant log v (no parameters)."""
        cfg = self.config
        h = self.encoder(to_unit(images, cfg.levels).to(self.to_latent.weight.dtype))  # (B, c_n, h_n, w_n)
        out = self.to_latent(h.flatten(1))  # (B, 2d) or (B, d)
        if cfg.fixed_posterior_variance is None:
            mean, logvar = out.chunk(2, dim=1)  # (B, d) each
            return mean, logvar
        return out, torch.full_like(out, math.log(cfg.fixed_posterior_variance))

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents (B, d) -> discretized-logistic location and log-scale, each (B, C, H, W), unit scale."""
        B, C = z.shape[0], self.config.channels
        h = self.from_latent(z).view(B, *self.bottom)  # (B, c_n, h_n, w_n)
        out = self.decoder(h)  # (B, 2C, H, W)
        loc, log_scale = out[:, :C], out[:, C:]
        return loc, log_scale.clamp(min=MIN_LOG_SCALE)

    def decode_images(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, d) -> uint8 images (B, C, H, W): the decoder location rounded to the nearest level."""
        loc, _ = self.decode(z)
        return from_unit(loc, self.config.levels).to(torch.uint8)

    def loss(self, images: torch.Tensor, noise: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Losses of integer images (B, C, H, W), batch means, in nats per image and per dimension.

        noise: eps (B, d) of the reparameterisation z = mean + exp(logvar / 2) * eps; None draws it from
        `generator` (CPU; None: torch's global generator). Returns total, reconstruction, kl, nelbo
        (per image), the same four as `*_per_dim` (divided by C*H*W), and `mean` (B, d), the encoder
        means (with graph; detach them to train an AIQN on them).
        """
        cfg = self.config
        mean, logvar = self.encode(images)
        if noise is None:
            noise = torch.randn(mean.shape, generator=generator)
        noise = noise.to(mean)
        z = mean + torch.exp(0.5 * logvar) * noise  # (B, d)
        loc, log_scale = self.decode(z)
        x = to_unit(images, cfg.levels).to(loc.dtype)
        reconstruction = -discretized_logistic_log_prob(x, loc, log_scale, cfg.levels).flatten(1).sum(1)  # (B,)
        kl = gaussian_kl(mean, logvar).sum(1)  # (B,)
        dims = cfg.channels * cfg.height * cfg.width
        out = {
            "total": (reconstruction + cfg.kl_weight * kl).mean(),
            "reconstruction": reconstruction.mean(),
            "kl": kl.mean(),
            "nelbo": (reconstruction + kl).mean(),
        }
        out.update({f"{key}_per_dim": value / dims for key, value in list(out.items())})
        out["mean"] = mean
        return out

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n uint8 images (n, C, H, W) decoded from z ~ N(0, I) (drawn on the CPU from `generator`)."""
        device = next(self.parameters()).device
        z = torch.randn((n, self.config.latent_dim), generator=generator).to(device)  # (n, d)
        with torch.no_grad():
            return self.decode_images(z)
