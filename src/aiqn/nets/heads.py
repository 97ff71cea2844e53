"""Output heads on the Gated PixelCNN's output stage.

- `CategoricalHead` (PixelCNN, van den Oord et al. 2016b): one softmax over the dataset's
  intensity levels per pixel-channel; logits (B, C, L, H, W).
- `QuantileHead` (PixelIQN, Ostrovski et al. 2018, section 4): one value per pixel-channel,
  the quantile function Q(tau_i | x_<i) in the network's [-1, 1] intensity scale; (B, C, H, W).

Both are colour-masked 1x1 convolutions (type B), so the output for colour c reads only the
feature group of colours <= c. Losses live in `aiqn.nets.objectives`, not here.
"""

from __future__ import annotations

import torch
from torch import nn

from aiqn.nets.layers import colour_masked_1x1, group_ids


class CategoricalHead(nn.Module):
    """Logits over `levels` values for each of `channels` colours at every pixel."""

    def __init__(self, in_planes: int, channels: int, levels: int):
        super().__init__()
        self.channels, self.levels = channels, levels
        self.proj = colour_masked_1x1(group_ids(in_planes, channels), group_ids(channels * levels, channels))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        B, _, H, W = features.shape
        logits = self.proj(features)  # (B, C*L, H, W), colour-major
        return logits.view(B, self.channels, self.levels, H, W)  # (B, C, L, H, W)


class QuantileHead(nn.Module):
    """One quantile value per pixel-channel."""

    def __init__(self, in_planes: int, channels: int):
        super().__init__()
        self.proj = colour_masked_1x1(group_ids(in_planes, channels), group_ids(channels, channels))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(features)  # (B, C, H, W)
