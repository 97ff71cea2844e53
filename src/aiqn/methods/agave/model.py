"""AGAVE: auxiliary guided autoregressive variational autoencoder (Lucas & Verbeek, ECML-PKDD 2018,
section 3.2 and 4.1), the network only.

    x (B, C, H, W) --encoder--> q(z|x) = N(mu, diag sigma^2) --z--> decoder f(z) = logistic means
                                                                     |            (B, C_y, H_y, W_y)
                          auxiliary image y = aux(x) <-- eq. 10 -----+ (per-channel learned scales)
                                                                     |
                                    upsample to H x W, unmasked convolutions (the "feature stream")
                                                                     v
                                   Gated PixelCNN p(x_i | x_<i, f(z))  via GatedPixelCNN's cond_map

- Encoder and VAE decoder are the architecture of `aiqn.nets.vae.ConvVAE` (built by it): the
  encoder for x's shape, the decoder for y's shape, whose last convolution outputs only the C_y
  means; the logistic log-scales are one learned parameter per channel of y, shared by all pixels
  (paper section 4.1). The means live on the network's unit scale of x ([-1, 1], `to_unit`),
  whatever the auxiliary image: "the VAE decoder outputs the continuous means of the logistic
  distributions regardless of the quantization level" (section 4.5).
- The auxiliary image (`AuxSpec`, from the string `aux`): `full` (y = x), `quantized:<bits>` (2^bits
  colour levels), `lowres:<size>` (block means, rounded to x's levels, `size` rows, same aspect), `grey:<bits>`
  (luma 0.299 R + 0.587 G + 0.114 B, or the mean of the channels when C != 3, at 2^bits levels).
- Eq. 10: with x-level j occupying [j, j + 1) of the continuous range [0, L) (the paper: RGB in
  [0, 256)) and b levels in y, y-level k is the interval [k c, (k + 1) c), c = L / b, the outermost
  intervals open to -inf / +inf. `aux_log_prob` evaluates it with
  `aiqn.nets.vae.discretized_logistic_log_prob`: on the unit scale these intervals are exactly the
  b standard bins scaled by 1 / a, a = b (L - 1) / (L (b - 1)), so the logistic (mean, scale) of
  x's scale becomes (a mean, a scale) on y's standard grid (tested against the formula).
  Quantization assigns x-level j to the interval holding its centre j + 1/2 (the paper's floor(y/c)
  for integer c, and well defined when c is not an integer, e.g. 17 digit levels).
- The PixelCNN sees f(z) as in section 4.1: "standard non-masked convolutional layers [applied] to
  the VAE output ... each layer of the pixelCNN [takes] additional input using non-masked
  convolutions from the feature stream". Here the stream is `cond_layers` 3x3 convolutions (ReLU)
  of `cond_planes` planes on f(z) (nearest-neighbour upsampled to H x W when y is low resolution);
  f(z) and every stream layer are concatenated into one map (B, S, H, W), S = C_y + cond_layers *
  cond_planes, which enters every gated block through GatedPixelCNN's unmasked 1x1 `cond_map`
  convolutions, so each block may read any stream layer (a superset of the paper's layer i <- stream
  layer i). The conditioning never sees x, so the PixelCNN stays autoregressive (tested by gradients).

NOTE: the network only. The objective (eq. 7), the bounds in bits per dimension, training and
sampling are in `aiqn.methods.agave.objective`, `.bounds`, `.train` and `.sampling`. The PixelCNN is the Gated PixelCNN with a categorical
softmax, not the paper's PixelCNN++ (discretized logistic mixture, downsampling U-net): the
decoder's likelihood family differs from the paper's, the conditioning scheme is the same. The
VAE is the ConvVAE, not the paper's IAF-VAE architecture of Kingma et al. 2016 (no IAF, one
latent layer).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aiqn.nets.shape import ImageShape
from aiqn.nets.pixelcnn import GatedPixelCNN, PixelCNNConfig, to_unit
from aiqn.nets.vae import ConvVAE, VAEConfig, discretized_logistic_log_prob

AUX_KINDS = ("full", "quantized", "lowres", "grey")
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, the usual RGB -> grey weights


@dataclass(frozen=True)
class AuxSpec:
    """The auxiliary image y of an image x with `source_levels` levels: its kind, shape and levels."""

    kind: str
    channels: int
    height: int
    width: int
    levels: int  # b: levels of y
    source_levels: int  # L: levels of x

    @property
    def scale(self) -> float:
        """a = b (L - 1) / (L (b - 1)): unit scale of x -> the standard unit grid of y's b levels."""
        b, L = self.levels, self.source_levels
        return b * (L - 1) / (L * (b - 1))

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.channels, self.height, self.width


def parse_aux(spec: str, channels: int, height: int, width: int, levels: int) -> AuxSpec:
    """`full | quantized:<bits> | lowres:<size> | grey:<bits>` for images (channels, height, width)
    with `levels` levels -> AuxSpec, with a clear error for a malformed or impossible spec."""
    kind, _, arg = spec.partition(":")
    if kind not in AUX_KINDS:
        raise ValueError(f"aux must be one of full, quantized:<bits>, lowres:<size>, grey:<bits>; got {spec!r}")
    if kind == "full":
        if arg:
            raise ValueError(f"aux 'full' takes no argument, got {spec!r}")
        return AuxSpec(kind, channels, height, width, levels, levels)
    try:
        value = int(arg)
    except ValueError:
        raise ValueError(f"aux {spec!r}: {kind} needs an integer, e.g. {kind}:{4 if kind == 'lowres' else 3}") from None
    if kind == "lowres":
        factor = height // value if value >= 1 else 0
        if value < 1 or height % value or width % factor:
            raise ValueError(f"aux {spec!r}: the size must divide the image size {height}x{width}")
        return AuxSpec(kind, channels, value, width // factor, levels, levels)  # height `size`, same aspect
    b = 2**value
    if value < 1 or b > levels:
        raise ValueError(f"aux {spec!r}: 2^bits = {b} levels must lie in [2, {levels}] (the images have {levels})")
    return AuxSpec(kind, 1 if kind == "grey" else channels, height, width, b, levels)


def aux_image(images: torch.Tensor, spec: AuxSpec) -> torch.Tensor:
    """The auxiliary image y (B, C_y, H_y, W_y) int64 in 0..b-1 of integer images x (B, C, H, W)."""
    images = images.long()
    L, b = spec.source_levels, spec.levels
    if spec.kind == "full":
        return images
    if spec.kind == "quantized":  # the interval [k c, (k+1) c) that holds the level's centre j + 1/2
        return (2 * images + 1) * b // (2 * L)
    if spec.kind == "lowres":  # mean over each block, rounded half up
        factor = images.shape[-2] // spec.height
        mean = F.avg_pool2d(images.double(), factor)  # (B, C, H_y, W_y)
        return torch.floor(mean + 0.5).long().clamp(0, L - 1)
    # grey: luma (or channel mean) on the continuous level scale, then b levels
    if images.shape[1] == 3:
        weights = torch.tensor(LUMA, dtype=torch.float64, device=images.device).view(1, 3, 1, 1)
        grey = (images.double() * weights).sum(1, keepdim=True)  # (B, 1, H, W) in [0, L-1]
    else:
        grey = images.double().mean(1, keepdim=True)
    return torch.floor((grey + 0.5) * b / L).long().clamp(0, b - 1)


def aux_log_prob(y: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, spec: AuxSpec) -> torch.Tensor:
    """Eq. 10, elementwise log p(y | mean, scale) in nats, (B, C_y, H_y, W_y).

    y: integer levels 0..b-1; mean: logistic means on x's unit scale, same shape; log_scale:
    broadcastable (the per-channel scales (1, C_y, 1, 1)), also on x's unit scale."""
    a = spec.scale
    y_unit = y.to(mean.dtype) * (2.0 / (spec.levels - 1)) - 1.0  # to_unit in mean's precision
    return discretized_logistic_log_prob(y_unit, a * mean, log_scale + math.log(a), spec.levels)


def aux_to_levels(y: torch.Tensor, spec: AuxSpec) -> torch.Tensor:
    """y's levels (0..b-1) shown on x's level scale (the centre of each interval, rounded): uint8."""
    L, b = spec.source_levels, spec.levels
    centre = (y.double() + 0.5) * L / b - 0.5
    return torch.floor(centre + 0.5).clamp(0, L - 1).to(torch.uint8)


@dataclass
class AgaveConfig(ImageShape):
    """Everything needed to rebuild an AGAVE; stored in every checkpoint as `ckpt["config"]`."""

    aux: str = "full"  # full | quantized:<bits> | lowres:<size> | grey:<bits>
    latent_dim: int = 16
    # VAE encoder and decoder (aiqn.nets.vae.ConvVAE's architecture)
    base_channels: int = 32
    max_channels: int = 256
    downsamplings: int | None = None  # encoder; None: log2(min(H, W)) - 2; the decoder drops the stages y lacks
    stage_convs: int = 1
    # the feature stream on f(z)
    aux_log_scale_init: float = -1.0  # initial per-channel log-scale (unit scale; -1: s = 0.37, a few levels)
    cond_layers: int = 1
    cond_planes: int = 16
    # the Gated PixelCNN decoder
    blocks: int = 4
    filter_size: int = 3
    planes: int = 32
    output_planes: int = 64

    def __post_init__(self):
        self.aux_spec()  # validates the spec against the image shape
        self.encoder_config()
        self.decoder_config()
        if self.cond_layers < 0 or (self.cond_layers and self.cond_planes < 1):
            raise ValueError("need cond_layers >= 0 and cond_planes >= 1")

    def to_dict(self) -> dict:
        return asdict(self)

    def aux_spec(self) -> AuxSpec:
        return parse_aux(self.aux, self.channels, self.height, self.width, self.levels)

    def _vae(self, channels: int, height: int, width: int, levels: int, downsamplings: int | None) -> VAEConfig:
        return VAEConfig(channels=channels, height=height, width=width, levels=levels, latent_dim=self.latent_dim,
                         base_channels=self.base_channels, max_channels=self.max_channels,
                         downsamplings=downsamplings, stage_convs=self.stage_convs)

    def encoder_config(self) -> VAEConfig:
        """The ConvVAE config whose encoder reads x."""
        return self._vae(self.channels, self.height, self.width, self.levels, self.downsamplings)

    def decoder_config(self) -> VAEConfig:
        """The ConvVAE config whose decoder writes y: the encoder's stages less those y's size lacks."""
        y = self.aux_spec()
        encoder = self.encoder_config()
        missing = int(round(math.log2(self.height / y.height)))
        return self._vae(y.channels, y.height, y.width, y.levels, max(0, encoder.downsamplings - missing))

    def cond_channels(self) -> int:
        """S: planes of the conditioning map fed to the PixelCNN (f(z) and every stream layer)."""
        return self.aux_spec().channels + self.cond_layers * self.cond_planes

    def pixelcnn_config(self) -> PixelCNNConfig:
        return PixelCNNConfig(channels=self.channels, height=self.height, width=self.width, levels=self.levels,
                              head="categorical", blocks=self.blocks, filter_size=self.filter_size,
                              planes=self.planes, output_planes=self.output_planes,
                              cond_channels=self.cond_channels())


class Agave(nn.Module):
    """Encoder, VAE decoder f(z) with per-channel logistic scales, feature stream and Gated PixelCNN
    (module docstring). Images enter as integer levels (B, C, H, W) unless said otherwise."""

    def __init__(self, config: AgaveConfig):
        super().__init__()
        self.config = cfg = config
        self.aux = cfg.aux_spec()
        x_vae, y_vae = ConvVAE(cfg.encoder_config()), ConvVAE(cfg.decoder_config())
        self.encoder, self.to_latent = x_vae.encoder, x_vae.to_latent  # q(z|x): mean and log-variance
        self.from_latent, self.decoder = y_vae.from_latent, y_vae.decoder
        self.bottom = y_vae.bottom  # (c_n, h_n, w_n) of the decoder's first map
        last = self.decoder[-1]  # the ConvVAE's 3x3 conv to (location, log-scale): keep the means only
        self.decoder[-1] = nn.Conv2d(last.in_channels, self.aux.channels, 3, padding=1)
        self.aux_log_scale = nn.Parameter(torch.full((self.aux.channels,), cfg.aux_log_scale_init))  # per channel of y
        stream: list[nn.Module] = []
        for i in range(cfg.cond_layers):
            stream.append(nn.Conv2d(self.aux.channels if i == 0 else cfg.cond_planes, cfg.cond_planes, 3, padding=1))
        self.stream = nn.ModuleList(stream)
        self.pixelcnn = GatedPixelCNN(cfg.pixelcnn_config())

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer images (B, C, H, W) -> posterior mean (B, d) and log-variance (B, d)."""
        h = self.encoder(to_unit(images, self.config.levels).to(self.to_latent.weight.dtype))  # (B, c_n, h_n, w_n)
        mean, logvar = self.to_latent(h.flatten(1)).chunk(2, dim=1)  # (B, d) each
        return mean, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, d) -> f(z): the logistic means (B, C_y, H_y, W_y) on x's unit scale."""
        h = self.from_latent(z).view(z.shape[0], *self.bottom)  # (B, c_n, h_n, w_n)
        return self.decoder(h)

    def log_scale(self) -> torch.Tensor:
        """The per-channel logistic log-scales, (1, C_y, 1, 1)."""
        return self.aux_log_scale.view(1, -1, 1, 1)

    def aux_image(self, images: torch.Tensor) -> torch.Tensor:
        """The auxiliary image y (B, C_y, H_y, W_y) of integer images, int64 levels."""
        return aux_image(images, self.aux)

    def aux_log_prob(self, y: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
        """Eq. 10 per element of y, (B, C_y, H_y, W_y) nats, given f(z) = `means`."""
        return aux_log_prob(y, means, self.log_scale(), self.aux)

    def condition(self, means: torch.Tensor) -> torch.Tensor:
        """f(z) (B, C_y, H_y, W_y) -> the PixelCNN's conditioning map (B, S, H, W)."""
        cfg = self.config
        if means.shape[-2:] != (cfg.height, cfg.width):
            means = F.interpolate(means, size=(cfg.height, cfg.width), mode="nearest")  # (B, C_y, H, W)
        maps, h = [means], means
        for conv in self.stream:
            h = F.relu(conv(h))  # (B, cond_planes, H, W)
            maps.append(h)
        return torch.cat(maps, dim=1)  # (B, S, H, W)

    def pixel_logits(self, x_unit: torch.Tensor, cond_map: torch.Tensor) -> torch.Tensor:
        """PixelCNN logits (B, C, L, H, W) of x on the unit scale (B, C, H, W) given `condition(f(z))`."""
        return self.pixelcnn(x_unit, cond_map=cond_map)
