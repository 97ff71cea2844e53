"""Building blocks of the Gated PixelCNN (van den Oord et al. 2016b, "Conditional Image
Generation with PixelCNN Decoders", section 2): causal convolutions of the vertical and
horizontal stacks, colour-channel masks, and the gated layer block with its conditioning inputs.

Raster order over pixels, and R -> G -> B within a pixel. Every feature map with F planes is
split into C contiguous groups (`group_ids`); group g at a pixel may see image channels < g of
that pixel (mask type "A", the first layer) or <= g (type "B", every later layer).

The two stacks remove the PixelCNN blind spot:

    vertical stack, filter k (here k=3),     horizontal stack, filter k:
    sees every row above the pixel           sees the pixels left of it
    (after the one-row down shift)           in its own row, and itself
                                             (centre tap colour-masked)
        [[1 1 1],                                [[1 1 x]]   x = type A / B mask
         [1 1 1],
         [0 0 0]]  <- the shift removes
                      the pixel's own row

NOTE: masks are applied as `weight * mask` at every call; weights are never changed in place,
so optimizers and EMA see the true parameters.

Two implementations compute the same block (tested equal to float rounding):
- `GatedBlock.forward`: the reference, on (B, C, H, W) maps with one convolution per term, as
  the paper writes it; `GatedPixelCNN.forward_reference` and the density code use it.
- `GatedBlock.forward_rows`: the training path, on (B, H, W, C) maps. Each stack is one matrix
  product over its taps gathered side by side (im2col by slicing), and the horizontal stack's
  product also takes the shifted vertical features and tau, so v->h, h and tau_h are one GEMM.
  On small images this runs ~1.3-1.5x faster on a CPU than per-term convolutions
  (benchmarks/training_speed.py, docs/benchmarks.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def group_ids(num_planes: int, colour_channels: int) -> torch.Tensor:
    """Colour group (0..C-1) of each of `num_planes` feature planes, as contiguous blocks of
    near-equal size (128 planes over 3 colours: 43, 43, 42)."""
    return torch.arange(num_planes) * colour_channels // num_planes


def colour_mask(out_groups: torch.Tensor, in_groups: torch.Tensor, include_self: bool) -> torch.Tensor:
    """(out, in) 0/1 matrix: output plane o may read input plane i iff group(i) < group(o)
    (type A, `include_self=False`) or group(i) <= group(o) (type B)."""
    out_g, in_g = out_groups[:, None], in_groups[None, :]
    allowed = in_g <= out_g if include_self else in_g < out_g
    return allowed.float()


class MaskedConv2d(nn.Conv2d):
    """A convolution whose weight is multiplied by a fixed 0/1 mask at every call."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, mask: torch.Tensor, **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, **kwargs)
        self.register_buffer("mask", mask.expand_as(self.weight).clone())
        self.mask_is_trivial = bool(self.mask.all())  # all ones (a 1-colour type B mask): skip the product

    def masked_weight(self) -> torch.Tensor:
        return self.weight if self.mask_is_trivial else self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.masked_weight(), self.bias, self.stride, self.padding, self.dilation)


def tap_matrix(conv: nn.Conv2d) -> torch.Tensor:
    """A convolution's (masked) weight (out, in, kh, kw) as an (out, kh*kw*in) matrix whose columns
    follow (row tap, column tap, input plane): the order of taps gathered side by side from
    (B, H, W, in) maps, so that `conv(x)` equals `gathered @ tap_matrix(conv).t()`."""
    weight = conv.masked_weight() if isinstance(conv, MaskedConv2d) else conv.weight
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)


def gather_taps(x: torch.Tensor, rows: int, cols: int) -> list[torch.Tensor]:
    """Views (B, H, W, C) of a padded map (B, H+rows-1, W+cols-1, C), one per tap, row taps
    outer: concatenated on the last axis they are the im2col of a rows x cols kernel."""
    H, W = x.shape[1] - rows + 1, x.shape[2] - cols + 1
    return [x[:, i:i + H, j:j + W, :] for i in range(rows) for j in range(cols)]


def colour_masked_1x1(in_groups: torch.Tensor, out_groups: torch.Tensor, include_self: bool = True) -> MaskedConv2d:
    """A 1x1 convolution that keeps colour order (type B by default)."""
    mask = colour_mask(out_groups, in_groups, include_self)[:, :, None, None]
    return MaskedConv2d(len(in_groups), len(out_groups), 1, mask)


def vertical_conv(in_channels: int, out_channels: int, filter_size: int) -> nn.Conv2d:
    """Vertical-stack convolution: a (k//2+1) x k kernel; pad with `pad_vertical`."""
    return nn.Conv2d(in_channels, out_channels, (filter_size // 2 + 1, filter_size))


def pad_vertical(x: torch.Tensor, filter_size: int) -> torch.Tensor:
    """Pad so that output (r, c) of `vertical_conv` covers rows r-k//2..r, cols c-k//2..c+k//2."""
    half = filter_size // 2
    return F.pad(x, (half, half, half, 0))


def horizontal_conv(in_groups: torch.Tensor, out_groups: torch.Tensor, filter_size: int, include_self: bool) -> MaskedConv2d:
    """Horizontal-stack convolution: a 1 x (k//2+1) kernel ending at the pixel itself, whose
    centre tap is colour-masked (type A in the first layer, type B after)."""
    width = filter_size // 2 + 1
    mask = torch.ones(len(out_groups), len(in_groups), 1, width)
    mask[:, :, 0, -1] = colour_mask(out_groups, in_groups, include_self)
    return MaskedConv2d(len(in_groups), len(out_groups), (1, width), mask)


def pad_horizontal(x: torch.Tensor, filter_size: int) -> torch.Tensor:
    """Pad so that output (r, c) of `horizontal_conv` covers cols c-k//2..c of row r."""
    return F.pad(x, (filter_size // 2, 0, 0, 0))


def shift_down(x: torch.Tensor) -> torch.Tensor:
    """Move every row one down (zeros enter at the top): row r then holds rows < r only."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


def gate(x: torch.Tensor) -> torch.Tensor:
    """tanh(first half) * sigmoid(second half) over the channel axis."""
    value, gate_logits = x.chunk(2, dim=1)
    return torch.tanh(value) * torch.sigmoid(gate_logits)


class GatedBlock(nn.Module):
    """One layer block of the Gated PixelCNN.

    v' = gate(Wv * v + cond_v)
    h' = h + res(gate(Wh * h + v2h(shift_down(Wv * v)) + cond_h))       (no residual in layer 0)
    skip = skip_conv(gate(...)) -> summed into the output stage

    Conditioning terms are added before the gate, in both stacks:
      - `tau`  (B, C, H, W) in [-1, 1], one per pixel-channel (PixelIQN), through a 1x1
        convolution that is colour-masked (type B) in the horizontal stack;
      - `cond_map` (B, S, H, W): location-dependent conditioning (1x1, unmasked);
      - `class_onehot` (B, K): global conditioning through a learned projection.
    """

    def __init__(
        self,
        in_planes: int,
        planes: int,
        skip_planes: int,
        filter_size: int,
        colour_channels: int,
        first: bool,
        tau_channels: int = 0,
        cond_channels: int = 0,
        num_classes: int = 0,
    ):
        super().__init__()
        C = colour_channels
        self.filter_size = filter_size
        self.first = first
        in_groups = group_ids(in_planes, C)
        hidden_groups = group_ids(planes, C)
        gate_groups = torch.cat([hidden_groups, hidden_groups])  # [tanh half | sigmoid half]
        skip_groups = group_ids(skip_planes, C)

        self.v_conv = vertical_conv(in_planes, 2 * planes, filter_size)
        self.v_to_h = nn.Conv2d(2 * planes, 2 * planes, 1)  # rows above only: no colour mask
        self.h_conv = horizontal_conv(in_groups, gate_groups, filter_size, include_self=not first)
        self.skip = colour_masked_1x1(hidden_groups, skip_groups)
        self.residual = None if first else colour_masked_1x1(hidden_groups, hidden_groups)

        self.tau_v = self.tau_h = None
        if tau_channels:
            self.tau_v = nn.Conv2d(tau_channels, 2 * planes, 1, bias=False)
            self.tau_h = colour_masked_1x1(group_ids(tau_channels, C), gate_groups)
        self.cond_v = self.cond_h = None
        if cond_channels:
            self.cond_v = nn.Conv2d(cond_channels, 2 * planes, 1, bias=False)
            self.cond_h = nn.Conv2d(cond_channels, 2 * planes, 1, bias=False)
        self.class_v = self.class_h = None
        if num_classes:
            self.class_v = nn.Linear(num_classes, 2 * planes, bias=False)
            self.class_h = nn.Linear(num_classes, 2 * planes, bias=False)

    def _conditioning(self, stack: str, tau, cond_map, class_onehot) -> torch.Tensor | float:
        total: torch.Tensor | float = 0.0
        if tau is not None and self.tau_v is not None:
            total = total + getattr(self, f"tau_{stack}")(tau)
        if cond_map is not None and self.cond_v is not None:
            total = total + getattr(self, f"cond_{stack}")(cond_map)
        if class_onehot is not None and self.class_v is not None:
            total = total + getattr(self, f"class_{stack}")(class_onehot)[:, :, None, None]
        return total

    def forward_rows(self, v, h, tau=None, cond_map=None, class_onehot=None, need_v: bool = True,
                     need_h: bool = True):
        """The training path of `forward` on (B, H, W, planes) maps (tau, cond_map (B, H, W, *)).

        Returns (v', h', gated): v' and h' (B, H, W, P), or None where `need_v` / `need_h` is
        False (the last block's are never read); gated (B*H*W, P) is the horizontal gate's output,
        which the model sends through all blocks' skip convolutions in one product.
        """
        B, H, W, cin = v.shape
        rows, P2, half = B * H * W, self.v_conv.out_channels, self.filter_size // 2
        # vertical stack: rows r-half..r of the padded map, then one GEMM
        v_taps = gather_taps(F.pad(v, (0, 0, half, half, half, 0)), half + 1, self.filter_size)
        v_pre = torch.addmm(self.v_conv.bias, torch.cat(v_taps, dim=-1).view(rows, -1),
                            tap_matrix(self.v_conv).t())  # (rows, 2P), before conditioning
        # horizontal stack: its own taps, the vertical features shifted one row down and tau in one GEMM
        parts = gather_taps(F.pad(h, (0, 0, half, 0)), 1, half + 1)
        weights = [tap_matrix(self.h_conv)]
        parts.append(F.pad(v_pre.view(B, H, W, P2), (0, 0, 0, 0, 1, 0))[:, :-1])  # shift_down
        weights.append(tap_matrix(self.v_to_h))
        bias = self.h_conv.bias + self.v_to_h.bias
        v_in = v_pre
        if tau is not None and self.tau_v is not None:
            parts.append(tau)
            weights.append(tap_matrix(self.tau_h))
            bias = bias + self.tau_h.bias
            if need_v:
                v_in = torch.addmm(v_in, tau.reshape(rows, -1), tap_matrix(self.tau_v).t())
        if cond_map is not None and self.cond_v is not None:
            parts.append(cond_map)
            weights.append(tap_matrix(self.cond_h))
            if need_v:
                v_in = torch.addmm(v_in, cond_map.reshape(rows, -1), tap_matrix(self.cond_v).t())
        h_pre = torch.addmm(bias, torch.cat(parts, dim=-1).view(rows, -1), torch.cat(weights, dim=1).t())
        if class_onehot is not None and self.class_v is not None:  # one term per image, broadcast over pixels
            h_pre = (h_pre.view(B, H * W, P2) + self.class_h(class_onehot)[:, None]).view(rows, P2)
            if need_v:
                v_in = (v_in.view(B, H * W, P2) + self.class_v(class_onehot)[:, None]).view(rows, P2)
        gated = gate(h_pre)  # (rows, P)
        v_out = gate(v_in).view(B, H, W, -1) if need_v else None
        h_out = None
        if need_h:
            h_out = gated if self.residual is None else torch.addmm(
                self.residual.bias, gated, tap_matrix(self.residual).t()) + h.reshape(rows, -1)
            h_out = h_out.view(B, H, W, -1)
        return v_out, h_out, gated

    def forward(self, v, h, tau=None, cond_map=None, class_onehot=None):
        """(v, h) -> (v', h', skip); all maps (B, planes, H, W) except skip (B, skip_planes, H, W)."""
        v_pre = self.v_conv(pad_vertical(v, self.filter_size))
        h_pre = self.h_conv(pad_horizontal(h, self.filter_size)) + self.v_to_h(shift_down(v_pre))
        v_out = gate(v_pre + self._conditioning("v", tau, cond_map, class_onehot))
        h_gated = gate(h_pre + self._conditioning("h", tau, cond_map, class_onehot))
        skip = self.skip(h_gated)
        h_out = h_gated if self.residual is None else h + self.residual(h_gated)
        return v_out, h_out, skip
