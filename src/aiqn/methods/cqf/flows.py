"""A small Real NVP flow (Dinh et al. 2017): the invertible map f between pixels and the feature
space of the CQF model (Shmelkov et al. 2018, section 3, eq. 5-6; appendix A: "three NVP layers
with a single scale and two residual blocks").

Layers
------
`AffineCoupling` with a binary mask m (1 = passed through, 0 = transformed):

    y = m * x + (1 - m) * (x * exp(s(m * x)) + t(m * x)),     log|det dy/dx| = sum (1 - m) * s

s = scale * tanh(raw_s) (Real NVP's bounded log-scale, `scale` a learned per-channel factor).
`coupling` (`COUPLINGS`): "affine" as above (Real NVP, the paper's); "additive" s = 0 (NICE, Dinh
et al. 2015: volume-preserving, log-determinant 0); "volume" s minus its mean over the
transformed entries of each image (sum s = 0: rescales pixels against each other, keeps the
volume; GIN, Sorrenson et al. 2020). With log|det| = 0 the flow cannot shrink the data as a
whole, which on 8x8 digits is what it did first (docs/cqf.md, "Default size"). The
coupling network sees m * x and m itself (so it knows which half it was given): a 3x3 conv to
`hidden`, `blocks` residual blocks (ELU, 3x3 conv, ELU, 3x3 conv, plus the input), ELU and a 3x3
conv to (raw_s, t) that starts at zero, so every coupling, and the flow, starts as the identity.

Masks (shown for one channel of a 4x4 image; `parity` swaps 0 and 1):

    checkerboard parity 0   [[1 0 1 0],       channel parity 0: the first half of the channels
                             [0 1 0 1],       is passed through, the second half transformed
                             [1 0 1 0],       (after a `Squeeze`, which needs even H and W)
                             [0 1 0 1]]

`NVPFlow`: `checkerboard_layers` couplings with alternating checkerboard parity at full
resolution, then (when `channel_layers` > 0) a squeeze (B, C, H, W) -> (B, 4C, H/2, W/2), that many
couplings with alternating channel masks, and the inverse squeeze, so the output has the
image's shape (appendix A: "the VAE decoder always outputs a tensor of the same dimension as the
target image, which is then fed to the NVP layers"). One scale only: no factoring-out of
dimensions (Table 3's multi-scale flows are not implemented).

Bounded pixel side (`bounded=True`, `TanhBound`)
-----------------------------------------------
A fixed elementwise bijection in front of the couplings, Real NVP's logit preprocessing in tanh
form (Dinh et al. 2017, section 4.1, alpha = 0.05):

    v = atanh((1 - alpha) y) / atanh(1 - alpha),     y = tanh(atanh(1 - alpha) v) / (1 - alpha)

so f(y) = couplings(v) and f^{-1}(h) = tanh(...) / (1 - alpha) lies in (-1.053, 1.053) for ANY
feature h: the inverse flow cannot take the generator's output outside the pixel range. Without
it f^{-1} is an unbounded map (the couplings' exp(-s) amplifies), and on 8x8 digits the
generator's G(z) = f^{-1}(g(z)) reached pixels of +-4 in a checkerboard pattern, which the
discriminator (its gradient pinned to norm 1 by the penalty near the data) extrapolated
linearly and rated as real (docs/cqf.md). v is scaled so that [-1, 1] maps onto [-1, 1]: at the
start (couplings = identity) the features of the data fill the range of a tanh generator.
log|det dv/dy| = sum log((1 - alpha) / ((1 - ((1 - alpha) y)^2) atanh(1 - alpha))); the data
y in [-1, 1) gives |(1 - alpha) y| <= 0.95, always inside atanh's domain.

NOTE: the paper's reference NVP uses batch normalisation and weight normalisation; neither is
used here (batch statistics would make sampling depend on the batch and break the parameter-only
EMA; zero-initialised outputs give the stable start instead).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def checkerboard_mask(channels: int, height: int, width: int, parity: int) -> torch.Tensor:
    """(1, C, H, W) float mask: 1 where (row + column + parity) is even (module docstring)."""
    rows = torch.arange(height).view(height, 1)
    cols = torch.arange(width).view(1, width)
    board = ((rows + cols + parity) % 2 == 0).float()  # (H, W)
    return board.expand(channels, height, width).unsqueeze(0).contiguous()


def channel_mask(channels: int, height: int, width: int, parity: int) -> torch.Tensor:
    """(1, C, H, W) float mask: 1 on the first C/2 channels (parity 0) or on the last C/2 (parity 1)."""
    if channels % 2:
        raise ValueError(f"a channel mask needs an even number of channels, got {channels}")
    half = torch.zeros(channels)
    half[: channels // 2] = 1.0
    if parity:
        half = 1.0 - half
    return half.view(1, channels, 1, 1).expand(1, channels, height, width).contiguous()


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2): every 2x2 block becomes 4 channels (Real NVP's squeeze)."""
    B, C, H, W = x.shape
    x = x.view(B, C, H // 2, 2, W // 2, 2)  # (B, C, h, 2, w, 2)
    return x.permute(0, 1, 3, 5, 2, 4).reshape(B, 4 * C, H // 2, W // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `squeeze`: (B, 4C, h, w) -> (B, C, 2h, 2w)."""
    B, C4, h, w = x.shape
    x = x.view(B, C4 // 4, 2, 2, h, w)  # (B, C, 2, 2, h, w)
    return x.permute(0, 1, 4, 2, 5, 3).reshape(B, C4 // 4, 2 * h, 2 * w)


COUPLINGS = ("affine", "additive", "volume")


class ResidualBlock(nn.Module):
    """x + conv(elu(conv(elu(x)))), 3x3 convolutions at constant width."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.elu(self.conv1(F.elu(x))))


class AffineCoupling(nn.Module):
    """One masked affine coupling layer (module docstring); `mask` is (1, C, H, W)."""

    def __init__(self, mask: torch.Tensor, hidden: int, blocks: int, kind: str = "affine"):
        super().__init__()
        channels = mask.shape[1]
        if kind not in COUPLINGS:
            raise ValueError(f"coupling must be one of {COUPLINGS}, got {kind!r}")
        self.kind = kind  # module docstring
        self.register_buffer("mask", mask)
        self.inp = nn.Conv2d(2 * channels, hidden, 3, padding=1)
        self.blocks = nn.Sequential(*[ResidualBlock(hidden) for _ in range(blocks)])
        self.out = nn.Conv2d(hidden, 2 * channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.scale = nn.Parameter(torch.ones(1, channels, 1, 1))

    def _shift_log_scale(self, x_masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """s and t (each (B, C, H, W), zero where the mask is 1) from the passed-through half."""
        B = x_masked.shape[0]
        inp = torch.cat([x_masked, self.mask.expand(B, -1, -1, -1)], dim=1)  # (B, 2C, H, W)
        raw_s, t = self.out(F.elu(self.blocks(self.inp(inp)))).chunk(2, dim=1)  # (B, C, H, W) each
        free = 1.0 - self.mask
        if self.kind == "additive":
            return torch.zeros_like(t), free * t
        s = free * self.scale * torch.tanh(raw_s)
        if self.kind == "volume":  # minus its mean over the transformed entries: sum s = 0
            s = s - free * (s.flatten(1).sum(1) / free.sum()).view(-1, 1, 1, 1)
        return s, free * t

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, H, W) -> (y, log|det dy/dx| (B,))."""
        s, t = self._shift_log_scale(x * self.mask)
        y = x * torch.exp(s) + t  # s = t = 0 where the mask is 1: those entries pass unchanged
        return y, s.flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """y (B, C, H, W) -> x; the masked half of y equals that of x, so s and t are recomputed."""
        s, t = self._shift_log_scale(y * self.mask)
        return (y - t) * torch.exp(-s)


class TanhBound(nn.Module):
    """The fixed bijection y <-> v of `bounded` flows (module docstring); no parameters."""

    def __init__(self, alpha: float = 0.05):
        super().__init__()
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
        self.alpha = alpha
        self.c = 1.0 - alpha  # y -> c y in (-1, 1) for |y| < 1 / c
        self.k = float(torch.atanh(torch.tensor(self.c, dtype=torch.float64)))  # atanh(c): v = +-1 at y = +-1

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels y (|y| < 1 / (1 - alpha)) -> v and log|det dv/dy| (B,)."""
        cy = self.c * y
        logdet = (math.log(self.c / self.k) - torch.log1p(-cy * cy)).flatten(1).sum(1)
        return torch.atanh(cy) / self.k, logdet

    def inverse(self, v: torch.Tensor) -> torch.Tensor:
        """Any v -> y = tanh(atanh(1 - alpha) v) / (1 - alpha), inside (-1 / (1 - alpha), 1 / (1 - alpha))."""
        return torch.tanh(self.k * v) / self.c


class NVPFlow(nn.Module):
    """Single-scale Real NVP f: (B, C, H, W) -> (B, C, H, W) (module docstring)."""

    def __init__(self, channels: int, height: int, width: int, checkerboard_layers: int = 3,
                 channel_layers: int = 0, hidden: int = 32, blocks: int = 2, bounded: bool = False,
                 alpha: float = 0.05, coupling: str = "affine"):
        super().__init__()
        self.bound = TanhBound(alpha) if bounded else None  # pixels <-> v (module docstring)
        if checkerboard_layers < 0 or channel_layers < 0 or checkerboard_layers + channel_layers < 1:
            raise ValueError("the flow needs at least one coupling layer")
        if channel_layers and (height % 2 or width % 2):
            raise ValueError(f"channel couplings squeeze the image: height={height} and width={width} must be even")
        self.full = nn.ModuleList(
            AffineCoupling(checkerboard_mask(channels, height, width, k % 2), hidden, blocks, coupling)
            for k in range(checkerboard_layers))
        self.squeezed = nn.ModuleList(
            AffineCoupling(channel_mask(4 * channels, height // 2, width // 2, k % 2), hidden, blocks, coupling)
            for k in range(channel_layers))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels x -> features f(x) and log|det df/dx| (B,) in nats."""
        logdet = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        if self.bound is not None:
            x, logdet = self.bound(x)
        for layer in self.full:
            x, ld = layer(x)
            logdet = logdet + ld
        if len(self.squeezed):
            x = squeeze(x)  # (B, 4C, H/2, W/2)
            for layer in self.squeezed:
                x, ld = layer(x)
                logdet = logdet + ld
            x = unsqueeze(x)  # (B, C, H, W)
        return x, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Features y -> pixels f^{-1}(y)."""
        if len(self.squeezed):
            y = squeeze(y)
            for layer in reversed(self.squeezed):
                y = layer.inverse(y)
            y = unsqueeze(y)
        for layer in reversed(self.full):
            y = layer.inverse(y)
        return y if self.bound is None else self.bound.inverse(y)
