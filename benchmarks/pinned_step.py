"""The PixelCNN / PixelIQN training step as it was before issue 15 (main at 2eedeb4), pinned here
so that benchmarks/training_speed.py can time it beside today's step in the same run.

It reads the parameters of a model built by today's `aiqn.nets.build_model` (their names and
shapes did not change) but computes with the old code: one convolution per term on (B, C, H, W)
maps with the masks multiplied in at every call, the old `categorical_nll` (a permuted copy of the
logits), and the per-parameter (single-tensor) optimizers. The process running it keeps glibc's
default allocator (the benchmark runs it in its own subprocess). Do not edit it to follow the
package: it is the baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _conv(conv, x):
    weight = conv.weight * conv.mask if hasattr(conv, "mask") else conv.weight
    return F.conv2d(x, weight, conv.bias)


def _gate(x):
    value, gate_logits = x.chunk(2, dim=1)
    return torch.tanh(value) * torch.sigmoid(gate_logits)


def _conditioning(block, stack, tau, class_onehot):
    total = 0.0
    if tau is not None and block.tau_v is not None:
        total = total + _conv(getattr(block, f"tau_{stack}"), tau)
    if class_onehot is not None and block.class_v is not None:
        total = total + getattr(block, f"class_{stack}")(class_onehot)[:, :, None, None]
    return total


def _block(block, v, h, tau, class_onehot):
    k, half = block.filter_size, block.filter_size // 2
    v_pre = _conv(block.v_conv, F.pad(v, (half, half, half, 0)))
    shifted = F.pad(v_pre, (0, 0, 1, 0))[:, :, :-1, :]
    h_pre = _conv(block.h_conv, F.pad(h, (half, 0, 0, 0))) + _conv(block.v_to_h, shifted)
    v_out = _gate(v_pre + _conditioning(block, "v", tau, class_onehot))
    h_gated = _gate(h_pre + _conditioning(block, "h", tau, class_onehot))
    skip = _conv(block.skip, h_gated)
    h_out = h_gated if block.residual is None else h + _conv(block.residual, h_gated)
    return v_out, h_out, skip


def forward(model, x, tau=None, class_labels=None):
    """The old GatedPixelCNN.forward: logits (B, C, L, H, W) or quantiles (B, C, H, W)."""
    cfg = model.config
    if cfg.head == "quantile":
        tau = 2.0 * tau - 1.0
    class_onehot = F.one_hot(class_labels, cfg.num_classes).to(x.dtype) if cfg.num_classes else None
    v = h = x
    skips = 0.0
    for block in model.blocks:
        v, h, skip = _block(block, v, h, tau, class_onehot)
        skips = skips + skip
    features = F.relu(_conv(model.output_conv, F.relu(skips)))
    out = _conv(model.head.proj, features)
    if cfg.head == "categorical":
        B, _, H, W = out.shape
        return out.view(B, cfg.channels, cfg.levels, H, W)
    return out


def loss(model, images, tau, kappa, class_labels=None):
    """The old model_loss in fp32."""
    cfg = model.config
    x = images.float() * (2.0 / (cfg.levels - 1)) - 1.0
    if cfg.head == "categorical":
        logits = forward(model, x, class_labels=class_labels)
        B, C, L, H, W = logits.shape
        flat = logits.permute(0, 1, 3, 4, 2).reshape(-1, L)
        return F.cross_entropy(flat, images.reshape(-1).long(), reduction="none").mean()
    u = x - forward(model, x, tau, class_labels)
    weight = torch.abs(tau - (u <= 0).to(u.dtype))
    abs_u = torch.abs(u)
    if kappa <= 0:
        return (weight * abs_u).mean()
    return torch.where(abs_u <= kappa, weight * u.pow(2) / (2.0 * kappa), weight * (abs_u - 0.5 * kappa)).mean()


def optimizer(params, name, lr):
    """The old make_optimizer: torch's per-parameter loops on the CPU."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, foreach=False)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, foreach=False)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, foreach=False)
