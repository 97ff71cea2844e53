"""Networks of CQF, coverage and quality driven training (Shmelkov, Lucas, Alahari, Schmid, Verbeek
2018, "Coverage and quality driven training of generative image models", section 3, Figure 2,
section 5.1 and appendix A).

Continuous scale and dequantization
-----------------------------------
Images are integers x in {0..L-1}^D (D = C*H*W, L = `levels`). The density models work on the
continuous, dequantized y in [-1, 1]^D, with one uniform draw u ~ U[0, 1)^D per pixel-channel
(Real NVP's treatment, as the paper follows Dinh et al. 2017 for bits/dim):

    y = (x + u) * 2 / L - 1        (`dequantize`; level k fills the bin [2k/L - 1, 2(k+1)/L - 1))
    x = floor((y + 1) * L / 2)     (`quantize`, clamped to 0..L-1; the inverse on every bin)

Every bin has volume (2/L)^D in y, so by Jensen's inequality, for any density p on y,

    -log P(x) = -log int_bin p(y) dy <= E_u[-log p(y)] - D log(2/L) = E_u[-log p(y)] + D log(L/2),

a proper bound on the discrete negative log-likelihood of x (`dequantization_offset` is the
constant D log(L/2)); bits/dim = nats / (D ln 2), in the units of the 0..L-1 data.

Model (Figure 2)
----------------
An invertible flow f (`aiqn.methods.cqf.flows.NVPFlow`, CQF only; the identity otherwise) maps y to
features h = f(y). The encoder q(z | h) = N(mean(h), diag exp(logvar(h))), the prior p(z) = N(0, I),
the decoder (the generator g, a GAN-style up-convolution network) gives the mean of a factorized
Gaussian p(h | z) = N(g(z), sigma^2 I) with one learned isotropic sigma (section 5.1: "a
factorizing Gaussian distribution ... with isotropic covariance matrix"). The coverage loss
(eq. 6) per image, with z = mean + exp(logvar / 2) * eps:

    nll = -log N(h; g(z), sigma^2 I) + KL(q(z|h) || N(0, I)) - log|det df/dy| + D log(L/2)

Sampling: x = quantize(f^{-1}(g(z) + sigma * n)) with z ~ N(0, I) and, optionally, n ~ N(0, I)
(`sample(z, noise)`; noise None gives the deterministic generator G(z) = f^{-1}(g(z)) of eq. 7).

Flow options (`flow_coupling`, `flow_output`; `aiqn.methods.cqf.flows`): affine couplings (the paper's)
let the flow change volume. Measured on 8x8 digits (500 steps, docs/cqf.md): within 25 steps the
flow shrank the data (log|det df/dy| ~ -74 nats per image), which acts like a decoder noise ~3x
sigma in pixel space; the encoder then used the latent little (KL 7 nats vs 31 for cq), g(z)
carried little of the image, and G(z) = f^{-1}(g(z)) left the pixel range (|y| up to 4.5 in the
couplings' checkerboard), which the gradient-penalised discriminator rated as real. (Holding the
flow fixed for 100 steps only delays it: the flow-plus-Gaussian decoder fits the digits better
with the latent unused.)
`flow_coupling="additive"` (volume-preserving) removes the shrinking (KL 36 nats);
`flow_output="tanh"` bounds G(z) to the pixel range (Real NVP's logit preprocessing).

Which parts exist depends on the variant (Table 1): `gan` has only the generator g (and the
discriminator); `vae` and `cq` add the encoder and sigma, with p(y | z) directly on pixels; `cqf`
adds the flow.

Architecture (appendix A, section 5.1: the generator of Miyato et al. 2018's standard CNN, ELU)
------------------------------------------------------------------------------------------
w_k = min(base_channels * 2^k, max_channels), n = `downsamplings` (None: down to 4x4).
Generator g: linear d -> w_n x h_n x w_n, ELU; n x [4x4 stride-2 transposed conv w_{k+1} -> w_k,
ELU]; 3x3 conv w_0 -> C; tanh (`generator_output`, as Miyato et al.'s generator ends). The tanh
matters: with an unbounded output the generator of the GAN escaped the data range (samples at
+-10 on digits), where a discriminator whose gradient norm the penalty pins to 1 near the data
extrapolates linearly and rates them as real; the same bound holds the means of the feature space
(the flow starts as the identity and learns a feature space that fits it).
Encoder (symmetric): 3x3 conv C -> w_0, ELU; n x [4x4 stride-2 conv w_k -> w_{k+1}, ELU]; linear
to 2d (mean, log-variance). Discriminator (Miyato et al.'s standard CNN, leaky ReLU 0.2, appendix
A): 3x3 conv C -> v_0; n x [4x4 stride-2 conv v_k -> v_k, 3x3 conv v_k -> v_{k+1}]; linear to one
logit; v_k = min(disc_base_channels * 2^k, disc_max_channels). At CIFAR scale (base 64, max 512,
n = 3) both match Miyato et al.'s 4x4x512 -> 256 -> 128 -> 64 -> 3 generator and 64..512
discriminator.

NOTE: not implemented: the paper's hierarchical latent variables (a single latent layer here),
batch normalisation in the generator (none anywhere: the EMA averages parameters only and
sampling must not depend on the batch), the residual / IAF refinements of Tables 2-4, and
multi-scale flows (Table 3). Losses are in `aiqn.methods.cqf.train`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn

from aiqn.nets.shape import ImageShape
from aiqn.methods.cqf.flows import COUPLINGS, NVPFlow
from aiqn.nets.vae import gaussian_kl, resolve_downsamplings

# variant -> (coverage loss, quality loss, flow); Table 1's rows.
VARIANTS: dict[str, tuple[bool, bool, bool]] = {
    "gan": (False, True, False),
    "vae": (True, False, False),
    "cq": (True, True, False),
    "cqf": (True, True, True),
}
LOG_2PI = math.log(2.0 * math.pi)


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {tuple(VARIANTS)}, got {variant!r}")
    return variant


@dataclass
class CQFConfig(ImageShape):
    """Architecture of the CQF generator, encoder, flow and discriminator; stored in checkpoints."""

    latent_dim: int = 32  # Miyato et al.'s generator: 128
    base_channels: int = 32  # w_0 (paper scale 64)
    max_channels: int = 256  # paper scale 512
    downsamplings: int | None = None  # None: log2(min(H, W)) - 2 (deepest map 4x4)
    flow_checkerboard_layers: int = 3  # appendix A: three NVP layers, a single scale ...
    flow_channel_layers: int = 0  # couplings after a squeeze, with channel masks
    flow_hidden: int = 32  # width of the coupling networks
    flow_blocks: int = 2  # ... each with two residual blocks
    disc_base_channels: int = 32  # v_0 (paper scale 64)
    disc_max_channels: int = 256  # paper scale 512
    init_log_sigma: float | None = None  # None: log(2 / levels), one bin of y
    generator_output: str = "tanh"  # g(z) squashed to (-1, 1) like Miyato et al.'s generator, or "none"
    # cqf only: "tanh" ends f^{-1} with Real NVP's squashing (flows.TanhBound), so that G(z) = f^{-1}(g(z))
    # stays in the pixel range; "none": f^{-1} unbounded (G(z) left the range on digits: docstring above)
    flow_output: str = "none"
    flow_coupling: str = "affine"  # "additive": s = 0, volume-preserving couplings (NICE)
    # added after checkpoints existed: out of the resume digest at their defaults (aiqn.core.io.digest_fields)
    LATER_FIELDS: ClassVar[tuple[str, ...]] = ("flow_output", "flow_coupling")

    def __post_init__(self):
        if self.levels < 2:
            raise ValueError(f"levels must be >= 2, got {self.levels}")
        self.downsamplings = resolve_downsamplings(self.height, self.width, self.downsamplings)
        if self.latent_dim < 1:
            raise ValueError("latent_dim must be >= 1")
        for name in ("generator_output", "flow_output"):
            if getattr(self, name) not in ("tanh", "none"):
                raise ValueError(f"{name} must be 'tanh' or 'none', got {getattr(self, name)!r}")
        if self.flow_coupling not in COUPLINGS:
            raise ValueError(f"flow_coupling must be one of {COUPLINGS}, got {self.flow_coupling!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def dims(self) -> int:
        """D = C * H * W."""
        return self.channels * self.height * self.width

    def widths(self) -> list[int]:
        """Generator / encoder widths w_0..w_n."""
        return [min(self.base_channels * 2**k, self.max_channels) for k in range(self.downsamplings + 1)]

    def disc_widths(self) -> list[int]:
        """Discriminator widths v_0..v_n."""
        return [min(self.disc_base_channels * 2**k, self.disc_max_channels) for k in range(self.downsamplings + 1)]


def dequantize(images: torch.Tensor, noise: torch.Tensor, levels: int) -> torch.Tensor:
    """Integer levels (B, C, H, W) plus u ~ U[0, 1) of the same shape -> y = (x + u) 2/L - 1 in [-1, 1)."""
    return (images.to(noise.dtype) + noise) * (2.0 / levels) - 1.0


def quantize(values: torch.Tensor, levels: int) -> torch.Tensor:
    """Continuous y -> the level whose bin holds it, floor((y + 1) L / 2) clamped to 0..L-1 (int64)."""
    return torch.floor((values + 1.0) * (levels / 2.0)).clamp(0, levels - 1).long()


def dequantization_offset(dims: int, levels: int) -> float:
    """D log(L / 2) nats: -log P(x) <= E_u[-log p(y)] + this (module docstring)."""
    return dims * math.log(levels / 2.0)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, sigma^2) elementwise, in nats."""
    return -0.5 * ((x - mean) * torch.exp(-log_sigma)).pow(2) - log_sigma - 0.5 * LOG_2PI


class Generator(nn.Module):
    """g: latents (B, d) -> (B, C, H, W) in the feature space (module docstring)."""

    def __init__(self, config: CQFConfig):
        super().__init__()
        widths, n = config.widths(), config.downsamplings
        self.bottom = (widths[-1], config.height // 2**n, config.width // 2**n)  # (w_n, h_n, w_n)
        self.fc = nn.Linear(config.latent_dim, math.prod(self.bottom))
        layers: list[nn.Module] = [nn.ELU()]
        for k in reversed(range(n)):
            layers += [nn.ConvTranspose2d(widths[k + 1], widths[k], 4, stride=2, padding=1), nn.ELU()]
        layers += [nn.Conv2d(widths[0], config.channels, 3, padding=1)]
        if config.generator_output == "tanh":
            layers += [nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(z.shape[0], *self.bottom))  # (B, C, H, W)


class Encoder(nn.Module):
    """q(z | h): features (B, C, H, W) -> posterior mean (B, d) and log-variance (B, d)."""

    def __init__(self, config: CQFConfig):
        super().__init__()
        widths, n = config.widths(), config.downsamplings
        layers: list[nn.Module] = [nn.Conv2d(config.channels, widths[0], 3, padding=1), nn.ELU()]
        for k in range(n):
            layers += [nn.Conv2d(widths[k], widths[k + 1], 4, stride=2, padding=1), nn.ELU()]
        self.net = nn.Sequential(*layers)
        flat = widths[-1] * (config.height // 2**n) * (config.width // 2**n)
        self.fc = nn.Linear(flat, 2 * config.latent_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.fc(self.net(h).flatten(1)).chunk(2, dim=1)  # (B, d) each
        return mean, logvar


class Discriminator(nn.Module):
    """D: continuous images (B, C, H, W) on the y scale -> logits (B,); D(x) = sigmoid(logit)."""

    def __init__(self, config: CQFConfig):
        super().__init__()
        v, n = config.disc_widths(), config.downsamplings
        act = lambda: nn.LeakyReLU(0.2)  # noqa: E731
        layers: list[nn.Module] = [nn.Conv2d(config.channels, v[0], 3, padding=1), act()]
        for k in range(n):
            layers += [nn.Conv2d(v[k], v[k], 4, stride=2, padding=1), act(),
                       nn.Conv2d(v[k], v[k + 1], 3, padding=1), act()]
        self.net = nn.Sequential(*layers)
        self.fc = nn.Linear(v[-1] * (config.height // 2**n) * (config.width // 2**n), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.net(x).flatten(1)).squeeze(1)  # (B,)


class CQFModel(nn.Module):
    """The generative model of one variant (module docstring): generator, and for the likelihood
    variants the encoder and log sigma, and for `cqf` the flow. The discriminator is separate."""

    def __init__(self, config: CQFConfig, variant: str):
        super().__init__()
        self.config = cfg = config
        self.variant = check_variant(variant)
        coverage, _, flow = VARIANTS[variant]
        self.generator = Generator(cfg)
        self.encoder = Encoder(cfg) if coverage else None
        init = math.log(2.0 / cfg.levels) if cfg.init_log_sigma is None else cfg.init_log_sigma
        self.log_sigma = nn.Parameter(torch.tensor(float(init))) if coverage else None
        self.flow = NVPFlow(cfg.channels, cfg.height, cfg.width, cfg.flow_checkerboard_layers,
                            cfg.flow_channel_layers, cfg.flow_hidden, cfg.flow_blocks,
                            bounded=cfg.flow_output == "tanh",
                            coupling=cfg.flow_coupling) if flow else None

    @property
    def has_likelihood(self) -> bool:
        return self.encoder is not None

    def to_features(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """y (B, C, H, W) -> h = f(y) and log|det df/dy| (B,) (the identity and 0 without a flow)."""
        if self.flow is None:
            return y, torch.zeros(y.shape[0], dtype=y.dtype, device=y.device)
        return self.flow(y)

    def from_features(self, h: torch.Tensor) -> torch.Tensor:
        """h -> y = f^{-1}(h) (the identity without a flow)."""
        return h if self.flow is None else self.flow.inverse(h)

    def sample(self, z: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Continuous samples y (B, C, H, W) = f^{-1}(g(z) + sigma * noise); noise None: f^{-1}(g(z))."""
        h = self.generator(z)
        if noise is not None:
            if self.log_sigma is None:
                raise ValueError(f"the {self.variant} variant has no decoder noise (no likelihood)")
            h = h + torch.exp(self.log_sigma) * noise.to(h)
        return self.from_features(h)

    def coverage(self, images: torch.Tensor, dequant_noise: torch.Tensor, eps: torch.Tensor
                 ) -> dict[str, torch.Tensor]:
        """Eq. 6 per image, (B,) tensors in nats: `nll` (the bound on -log P(x) of the integer
        `images`, a single-sample estimate), `reconstruction` (-log N(h; g(z), sigma^2 I)), `kl`,
        `logdet` (log|det df/dy|). dequant_noise: u (B, C, H, W) in [0, 1); eps: (B, d)."""
        if not self.has_likelihood:
            raise ValueError(f"the {self.variant} variant has no likelihood")
        cfg = self.config
        y = dequantize(images, dequant_noise, cfg.levels)
        h, logdet = self.to_features(y)
        mean, logvar = self.encoder(h)
        z = mean + torch.exp(0.5 * logvar) * eps.to(mean)  # (B, d)
        reconstruction = -gaussian_log_prob(h, self.generator(z), self.log_sigma).flatten(1).sum(1)
        kl = gaussian_kl(mean, logvar).sum(1)
        nll = reconstruction + kl - logdet + dequantization_offset(cfg.dims, cfg.levels)
        return {"nll": nll, "reconstruction": reconstruction, "kl": kl, "logdet": logdet}

    def importance_nll(self, images: torch.Tensor, dequant_noise: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The importance-weighted bound (Burda et al. 2016) on -log P(x), (B,) nats, with K = eps.shape[0]
        posterior samples eps (K, B, d): -log mean_k p(h|z_k) p(z_k) / q(z_k|h) - logdet + D log(L/2).
        It tightens towards -log p as K grows; its expectation with K = 1 is the ELBO of `coverage`."""
        cfg = self.config
        y = dequantize(images, dequant_noise, cfg.levels)
        h, logdet = self.to_features(y)
        mean, logvar = self.encoder(h)  # (B, d)
        K = eps.shape[0]
        eps = eps.to(mean)
        z = mean + torch.exp(0.5 * logvar) * eps  # (K, B, d)
        log_q = (-0.5 * eps.pow(2) - 0.5 * logvar - 0.5 * LOG_2PI).sum(-1)  # (K, B)
        log_prior = (-0.5 * z.pow(2) - 0.5 * LOG_2PI).sum(-1)  # (K, B)
        g = self.generator(z.flatten(0, 1))  # (K*B, C, H, W)
        log_rec = gaussian_log_prob(h.repeat(K, 1, 1, 1), g, self.log_sigma).flatten(1).sum(1).view(K, -1)
        log_w = log_rec + log_prior - log_q  # (K, B)
        log_p_h = torch.logsumexp(log_w, dim=0) - math.log(K)
        return -(log_p_h + logdet) + dequantization_offset(cfg.dims, cfg.levels)


def build_cqf(config: CQFConfig | dict, variant: str) -> tuple[CQFModel, Discriminator | None]:
    """The model and, for the variants with a quality loss, its discriminator (from a config or
    the dict stored in a checkpoint)."""
    if isinstance(config, dict):
        config = CQFConfig(**config)
    model = CQFModel(config, variant)
    quality = VARIANTS[variant][1]
    return model, (Discriminator(config) if quality else None)


def parameter_counts(model: CQFModel, discriminator: Discriminator | None = None) -> dict[str, int]:
    """Number of weights per part (the paper's "the flow adds about 1.4% to the generator")."""
    count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
    return {"generator": count(model.generator), "encoder": count(model.encoder),
            "flow": count(model.flow), "discriminator": count(discriminator)}
