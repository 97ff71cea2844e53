"""Gated PixelCNN (van den Oord et al. 2016b) with a categorical head (PixelCNN) or a quantile
head (PixelIQN, Ostrovski et al. 2018, section 4 and appendix).

The network sees images in [-1, 1] (`to_unit`). PixelIQN's sample point tau in [0, 1]^(C*H*W)
is rescaled to [-1, 1] and enters every block like location-dependent conditioning (a 1x1
convolution added before the gate), exactly as the paper's appendix describes.

NOTE: the model is only the network; losses are in `aiqn.nets.objectives`, samplers in
`aiqn.nets.sampling`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from aiqn.nets.shape import ImageShape
from aiqn.nets.heads import CategoricalHead, QuantileHead
from aiqn.nets.layers import GatedBlock, colour_masked_1x1, group_ids, tap_matrix

HEADS = ("categorical", "quantile")


@dataclass
class PixelCNNConfig(ImageShape):
    """Everything needed to rebuild a model; stored in every checkpoint as `ckpt["config"]`."""

    head: str = "categorical"  # "categorical" (PixelCNN) or "quantile" (PixelIQN)
    blocks: int = 4
    filter_size: int = 3
    planes: int = 32
    output_planes: int = 128
    num_classes: int = 0  # > 0: class-conditional (one-hot into every block)
    cond_channels: int = 0  # > 0: location-dependent conditioning map (B, S, H, W)
    gated: bool = True  # False: the original PixelCNN (aiqn.nets.plain_pixelcnn), categorical, unconditional
    first_filter_size: int = 7  # the plain PixelCNN's type-A input convolution (the paper's 7x7)
    # added after checkpoints existed: out of the resume digest at their defaults (aiqn.core.io.digest_fields)
    LATER_FIELDS: ClassVar[tuple[str, ...]] = ("gated", "first_filter_size")

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.filter_size < 3 or self.filter_size % 2 == 0:
            raise ValueError(f"filter_size must be odd and >= 3 (the paper uses 5), got {self.filter_size}")
        if not self.gated:
            if self.head != "categorical" or self.num_classes or self.cond_channels:
                raise ValueError("the plain PixelCNN (gated=False) has the categorical head and no conditioning; "
                                 f"got head={self.head!r}, num_classes={self.num_classes}, "
                                 f"cond_channels={self.cond_channels}")
            if self.first_filter_size < 3 or self.first_filter_size % 2 == 0:
                raise ValueError(f"first_filter_size must be odd and >= 3 (the paper uses 7), got {self.first_filter_size}")
        for name in ("planes", "output_planes"):  # each colour needs at least one feature plane
            if getattr(self, name) < self.channels:
                raise ValueError(f"{name}={getattr(self, name)} must be >= channels={self.channels}")

    def to_dict(self) -> dict:
        return asdict(self)


def to_unit(images: torch.Tensor, levels: int) -> torch.Tensor:
    """Integer levels 0..L-1 -> floats in [-1, 1]."""
    return images.float() * (2.0 / (levels - 1)) - 1.0


def from_unit(values: torch.Tensor, levels: int) -> torch.Tensor:
    """Floats in [-1, 1] -> nearest integer level in 0..L-1 (clamped), as int64."""
    return torch.round((values + 1.0) * ((levels - 1) / 2.0)).clamp(0, levels - 1).long()


class GatedPixelCNN(nn.Module):
    """Gated PixelCNN backbone plus head.

    forward(x, tau=None, cond_map=None, class_labels=None):
      x: (B, C, H, W) in [-1, 1]; tau: (B, C, H, W) in [0, 1] (quantile head only);
      cond_map: (B, S, H, W); class_labels: (B,) int64.
      returns logits (B, C, L, H, W) for the categorical head, values (B, C, H, W) for the
      quantile head.
    """

    def __init__(self, config: PixelCNNConfig):
        super().__init__()
        self.config = config
        C, P = config.channels, config.planes
        tau_channels = C if config.head == "quantile" else 0
        self.blocks = nn.ModuleList(
            GatedBlock(
                in_planes=C if i == 0 else P,
                planes=P,
                skip_planes=config.output_planes,
                filter_size=config.filter_size,
                colour_channels=C,
                first=i == 0,
                tau_channels=tau_channels,
                cond_channels=config.cond_channels,
                num_classes=config.num_classes,
            )
            for i in range(config.blocks)
        )
        out_groups = group_ids(config.output_planes, C)
        self.output_conv = colour_masked_1x1(out_groups, out_groups)
        if config.head == "categorical":
            self.head = CategoricalHead(config.output_planes, C, config.levels)
        else:
            self.head = QuantileHead(config.output_planes, C)

    def _inputs(self, x, tau, class_labels):
        """tau rescaled to [-1, 1] and the one-hot classes, checked against the config."""
        cfg = self.config
        if cfg.head == "quantile":
            if tau is None:
                raise ValueError("the quantile head needs tau (B, C, H, W) in [0, 1]")
            tau = 2.0 * tau - 1.0  # paper appendix: rescale tau linearly to [-1, 1]
        class_onehot = None
        if cfg.num_classes:
            if class_labels is None:
                raise ValueError("a class-conditional model needs class_labels")
            class_onehot = F.one_hot(class_labels, cfg.num_classes).to(x.dtype)
        return tau, class_onehot

    def forward(self, x, tau=None, cond_map=None, class_labels=None):
        """The network on (B, H, W, C) maps and matrix products (`GatedBlock.forward_rows`);
        equal to `forward_reference` up to float rounding. Outputs are views in the documented
        (B, C, L, H, W) / (B, C, H, W) shapes over (B, H, W, C, L) / (B, H, W, C) memory."""
        cfg = self.config
        tau, class_onehot = self._inputs(x, tau, class_labels)
        B, C, H, W = x.shape
        rows = lambda t: None if t is None else t.permute(0, 2, 3, 1)  # (B, *, H, W) -> (B, H, W, *)
        tau, cond_map = rows(tau), rows(cond_map)
        v = h = x.permute(0, 2, 3, 1).contiguous()  # (B, H, W, C)
        gated = []
        for i, block in enumerate(self.blocks):
            last = i == len(self.blocks) - 1  # its v and h outputs feed nothing
            v, h, g = block.forward_rows(v, h, tau, cond_map, class_onehot, need_v=not last, need_h=not last)
            gated.append(g)
        # every block's skip convolution at once: [g_1 .. g_n] (B*H*W, n*P) @ [S_1 .. S_n]^T
        skip_matrix = torch.cat([tap_matrix(block.skip) for block in self.blocks], dim=1)  # (out, n*P)
        skip_bias = torch.stack([block.skip.bias for block in self.blocks]).sum(0)
        skips = torch.addmm(skip_bias, torch.cat(gated, dim=1), skip_matrix.t())
        features = F.relu(F.linear(F.relu(skips), tap_matrix(self.output_conv), self.output_conv.bias))
        out = F.linear(features, tap_matrix(self.head.proj), self.head.proj.bias)  # (B*H*W, C*L) or (B*H*W, C)
        if cfg.head == "categorical":
            return out.view(B, H, W, C, cfg.levels).permute(0, 3, 4, 1, 2)  # (B, C, L, H, W)
        return out.view(B, H, W, C).permute(0, 3, 1, 2)  # (B, C, H, W)

    def forward_reference(self, x, tau=None, cond_map=None, class_labels=None):
        """The network as the paper writes it: one convolution per term on (B, C, H, W) maps
        (`GatedBlock.forward`). The test oracle for `forward`, and the path whose per-block
        calls `aiqn.methods.pixeliqn.density` records."""
        tau, class_onehot = self._inputs(x, tau, class_labels)
        v = h = x
        skips = 0.0
        for block in self.blocks:
            v, h, skip = block(v, h, tau, cond_map, class_onehot)
            skips = skips + skip
        features = F.relu(self.output_conv(F.relu(skips)))
        return self.head(features)
