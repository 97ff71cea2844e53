"""The original PixelCNN (van den Oord et al. 2016a, "Pixel Recurrent Neural Networks", section
3.5 and figure 5): one stack of masked k x k convolutions with ReLU residual blocks, no gates and
no vertical/horizontal split. It is the "PixelCNN [21]" row of AGAVE's Table 1 (Lucas & Verbeek
2018), next to the Gated PixelCNN of `aiqn.nets.pixelcnn`.

    x -> masked conv, type A, first_filter_size (7 in the paper)       2P planes
      -> blocks x [ReLU, 1x1 (2P -> P), ReLU, masked k x k type B (P -> P), ReLU, 1x1 (P -> 2P)] + residual
      -> ReLU, 1x1 (2P -> output_planes), ReLU, 1x1 (output_planes -> output_planes), ReLU
      -> head (softmax over the levels)

Every 1x1 convolution is colour-masked (type B), so colour c reads only colours <= c of its
own pixel. A k x k spatial mask lets a pixel see the rows above it and the pixels left of it in
its row; stacking such masks leaves the "blind spot" above and right of the pixel that the
Gated PixelCNN's two stacks remove (tests/test_causality.py proves both properties with autograd).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aiqn.nets.heads import CategoricalHead
from aiqn.nets.layers import MaskedConv2d, colour_mask, colour_masked_1x1, group_ids


def spatial_mask(out_groups: torch.Tensor, in_groups: torch.Tensor, filter_size: int, include_self: bool) -> torch.Tensor:
    """(out, in, k, k) 0/1 mask of a masked k x k convolution (van den Oord et al. 2016a, fig. 2):
    every tap in the rows above the centre, the taps left of the centre in its row, and at the
    centre the colour mask (type A `include_self=False`, type B True); nothing right of or below it."""
    k, centre = filter_size, filter_size // 2
    mask = torch.zeros(len(out_groups), len(in_groups), k, k)
    mask[:, :, :centre, :] = 1.0
    mask[:, :, centre, :centre] = 1.0
    mask[:, :, centre, centre] = colour_mask(out_groups, in_groups, include_self)
    return mask


def masked_conv(in_groups: torch.Tensor, out_groups: torch.Tensor, filter_size: int, include_self: bool) -> MaskedConv2d:
    """A 'same'-padded masked k x k convolution between colour-grouped feature maps."""
    mask = spatial_mask(out_groups, in_groups, filter_size, include_self)
    return MaskedConv2d(len(in_groups), len(out_groups), filter_size, mask, padding=filter_size // 2)


class ResidualBlock(nn.Module):
    """2P -> 2P: ReLU, 1x1 down to P, ReLU, masked k x k (type B), ReLU, 1x1 up to 2P, plus the input."""

    def __init__(self, planes: int, filter_size: int, colour_channels: int):
        super().__init__()
        wide, narrow = group_ids(2 * planes, colour_channels), group_ids(planes, colour_channels)
        self.reduce = colour_masked_1x1(wide, narrow)
        self.spatial = masked_conv(narrow, narrow, filter_size, include_self=True)
        self.expand = colour_masked_1x1(narrow, wide)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.reduce(F.relu(x))
        y = self.spatial(F.relu(y))
        return x + self.expand(F.relu(y))


class PlainPixelCNN(nn.Module):
    """The 2016a PixelCNN with a categorical head.

    forward(x, tau=None, cond_map=None, class_labels=None): x (B, C, H, W) in [-1, 1] ->
    logits (B, C, L, H, W). The conditioning arguments exist for the shared call signature
    (`aiqn.methods.pixeliqn.train.model_loss`, `aiqn.metrics.scoring`) and must be None: this baseline is unconditional.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        C, P = config.channels, config.planes
        wide = group_ids(2 * P, C)
        self.input_conv = masked_conv(group_ids(C, C), wide, config.first_filter_size, include_self=False)
        self.blocks = nn.ModuleList(ResidualBlock(P, config.filter_size, C) for _ in range(config.blocks))
        out_groups = group_ids(config.output_planes, C)
        self.output_convs = nn.ModuleList([colour_masked_1x1(wide, out_groups), colour_masked_1x1(out_groups, out_groups)])
        self.head = CategoricalHead(config.output_planes, C, config.levels)

    def forward(self, x, tau=None, cond_map=None, class_labels=None):
        if tau is not None or cond_map is not None or class_labels is not None:
            raise ValueError("the plain PixelCNN is unconditional: tau, cond_map and class_labels must be None")
        features = self.input_conv(x)  # (B, 2P, H, W)
        for block in self.blocks:
            features = block(features)
        for conv in self.output_convs:
            features = conv(F.relu(features))
        return self.head(F.relu(features))  # (B, C, L, H, W)
