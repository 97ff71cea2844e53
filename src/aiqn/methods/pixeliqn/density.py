"""The density PixelIQN implies at its own samples (Ostrovski et al. 2018, section 3.2).

PixelIQN's output at pixel-channel i (raster order, then R -> G -> B) is a quantile,
Q_i(tau_i | x_<i), of x_i in the network's [-1, 1] unit scale. Differentiating the identity
F_i(Q_i(tau)) = tau (F_i the conditional CDF) gives the quantile density (sparsity) function

    dQ_i / dtau_i = 1 / p_i(Q_i(tau_i) | x_<i),

so the density the model implies at a value it produced is the reciprocal of that derivative.
`quantile_function_density` is this identity for any elementwise quantile function;
`quantile_density` evaluates dQ_i/dtau_i for every pixel-channel of a batch, for the network.

What is held fixed. The network's output at i reads the image x_<i, and also the sample points
tau_j of earlier pixel-channels j < i: tau enters every block through 1x1 convolutions in both
stacks, the vertical stack feeds the rows below, and the horizontal stack carries each pixel's
features to the pixels right of it and to the later colours of the same pixel. The wanted
derivative is the DIAGONAL of the Jacobian d out / d tau at fixed x, i.e. d out_i / d tau_i with
x and every other tau_j held fixed: the density of x_i given x_<i and tau_<i, which is exactly the
one-dimensional quantile function the sampler used at step i. (A single backward pass of
out.sum() gives column sums of the Jacobian, sum_i d out_i / d tau_j, which is not it: the test
suite shows the two differ.)

Method: an exact position-local recomputation, for all positions at once.
1. A no-grad forward of the model itself at (x, tau) records every block's inputs (v, h) and its
   v->h term v_to_h(shift_down(v_conv(v))): the context.
2. A second pass recomputes only the horizontal stack, the output stage and the head, with tau as
   a leaf requiring grad, where every input that comes from ANOTHER pixel is taken from the
   detached context: the k//2 left taps of each horizontal convolution read the context h, the
   v->h term is the context term, and only the centre tap (the pixel's own features, colour-
   masked), the tau / conditioning 1x1 convolutions, the gate, the skip, residual and output
   1x1 convolutions and the head stay on the graph. Those are all pointwise in the pixel, so the
   recomputed out at pixel p is a function of tau at pixel p alone, with the same values as the
   full network (it repeats the same operations on the same numbers).
3. Why its derivative is the diagonal: in the full network, a path from tau at pixel p=(r, c) to
   out at p either enters the vertical stack (tau_v), which reaches the horizontal stack only
   through shift_down, i.e. at rows > r, so never returns to p; or enters the horizontal stack at
   p, from where it can leave only to columns > c of row r (the horizontal convolution looks
   left) and never comes back. So every path from tau_p to out_p stays inside pixel p's
   horizontal-stack features, which is exactly the graph step 2 keeps: d out_p / d tau_p of the
   recomputation equals the full network's, for the whole C x C block of the pixel (lower
   triangular: colour g reads tau of colours <= g of its pixel). Because the recomputation has
   no cross-pixel (and no cross-image) paths, one backward pass of out[:, g].sum() returns, at
   (b, g, p), exactly d out[b, g, p] / d tau[b, g, p]: C backward passes (1 or 3) give the
   diagonal for the whole batch. No edit of the model is needed, and the test suite checks the
   result against torch.autograd.functional.jacobian of the full network to 1e-10 (float64).

Rounding. During sampling PixelIQN's output is rounded to the nearest of the L levels before it
conditions later pixel-channels (`aiqn.nets.draws.choose_level`). The density here is evaluated with
the finished, rounded uint8 sample as the context x and with the tau that produced each value;
since out_i reads neither x_i nor anything after it, the network's output at i is exactly the
unrounded value the sampler computed at step i (up to float summation order), and
`DensitySamples.matches_sample` records that it rounds back to the sampled level.

Units. dQ/dtau is in the unit scale, so 1 / (dQ/dtau) is a density per unit. The unit scale maps
levels 0..L-1 linearly onto [-1, 1] (`to_unit`): u = 2 l / (L - 1) - 1, du/dl = 2 / (L - 1), so
the density per intensity level is p_level = p_unit * 2 / (L - 1) = (2 / (L - 1)) / (dQ/dtau)
(`implied_density`); integrated over one level's width it approximates that level's probability.
The network is not constrained to be monotone in tau: where dQ/dtau <= 0 there is no valid
density, `implied_density` returns the raw reciprocal (<= 0 or inf) and the log-density maps mark
those positions as NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from aiqn.nets.draws import draw_noise, noise_generator
from aiqn.nets import GatedPixelCNN, from_unit, to_unit
from aiqn.nets.layers import gate
from aiqn.nets.sampling import generate

# ----------------------------------------------------------------------------- closed form


def quantile_function_density(quantile_fn: Callable[[torch.Tensor], torch.Tensor], tau: torch.Tensor) -> torch.Tensor:
    """Density 1 / Q'(tau) implied at Q(tau) by an elementwise quantile function Q.

    quantile_fn: maps tau (any shape) to Q(tau) of the same shape, elementwise and differentiable;
    tau: values in (0, 1). Returns p(Q(tau)) = 1 / (dQ/dtau), same shape as tau, in the units of
    Q (density per unit of Q). Since Q is elementwise, one backward pass of Q.sum() is its
    derivative at every element.
    """
    with torch.enable_grad():
        leaf = tau.detach().clone().requires_grad_(True)
        (slope,) = torch.autograd.grad(quantile_fn(leaf).sum(), leaf)
    return 1.0 / slope


def implied_density(dq_dtau: torch.Tensor, levels: int) -> torch.Tensor:
    """Density per intensity level from dQ/dtau in the unit scale: (2 / (L - 1)) / (dQ/dtau).

    The unit scale maps levels 0..L-1 to [-1, 1], so a density per unit is multiplied by
    du/dl = 2 / (L - 1). Same shape as `dq_dtau`; entries where dQ/dtau <= 0 are returned as the
    raw reciprocal (non-positive or inf): the network is not monotone there.
    """
    return (2.0 / (levels - 1)) / dq_dtau


def pixel_log_density(density: torch.Tensor | np.ndarray) -> np.ndarray:
    """Log-density per pixel in nats: the SUM over colour channels of log p (the log of the joint
    density of the pixel's channels given the context, since the channels are generated in
    order and each density is conditional on the earlier ones).

    density: (..., C, H, W) densities (per level, say). Returns (..., H, W) float64, NaN where
    any channel's density is not positive and finite.
    """
    density = np.asarray(density.detach().cpu() if isinstance(density, torch.Tensor) else density, dtype=np.float64)
    valid = np.isfinite(density) & (density > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(np.where(valid, density, 1.0)).sum(axis=-3)  # (..., H, W)
    return np.where(valid.all(axis=-3), logs, np.nan)


# ------------------------------------------------------------------------------- network


def _unit_images(model: GatedPixelCNN, images: torch.Tensor) -> torch.Tensor:
    """Integer levels (uint8 / int64) -> the unit scale; floats are taken as already in [-1, 1]."""
    cfg = model.config
    if images.is_floating_point():
        if images.numel() and images.abs().max() > 1.0 + 1e-6:
            raise ValueError("floating-point images must be in the unit scale [-1, 1]; pass integer levels "
                             "(uint8 / int64) otherwise")
        return images
    return to_unit(images.long(), cfg.levels)


def _masked(conv: torch.nn.Conv2d) -> torch.Tensor:
    """A (masked) convolution's effective weight."""
    return conv.weight * conv.mask if hasattr(conv, "mask") else conv.weight


def _left_taps(conv: torch.nn.Conv2d, h: torch.Tensor) -> torch.Tensor:
    """The horizontal convolution's taps on the k//2 pixels left of each position, plus its bias.

    conv weight: (2P, in, 1, k//2 + 1), the last tap being the pixel itself. h: (B, in, H, W).
    Output (r, c) sums taps t = 0..k//2-1 on columns c - k//2 + t; returns (B, 2P, H, W).
    """
    weight = _masked(conv)
    half = weight.shape[-1] - 1
    padded = F.pad(h, (half, 0, 0, 0))[..., :-1]  # (B, in, H, W + half - 1): columns c-half..c-1 per output
    return F.conv2d(padded, weight[..., :half], conv.bias)


def _centre_tap(conv: torch.nn.Conv2d, h: torch.Tensor) -> torch.Tensor:
    """The horizontal convolution's colour-masked tap on the pixel itself (no bias): (B, 2P, H, W)."""
    return F.conv2d(h, _masked(conv)[..., -1:])


@torch.no_grad()
def _context(model: GatedPixelCNN, x: torch.Tensor, tau: torch.Tensor, cond_map,
             class_labels) -> tuple[list, list, torch.Tensor]:
    """One forward of the model itself at (x, tau), recording each block's call arguments
    (v, h, tau in [-1, 1], cond_map, class_onehot), its v->h term (B, 2P, H, W), and the output."""
    calls, v2h = [], []
    hooks = []
    for block in model.blocks:
        hooks.append(block.register_forward_pre_hook(lambda _m, args: calls.append(args)))
        hooks.append(block.v_to_h.register_forward_hook(lambda _m, _i, out: v2h.append(out)))
    try:
        out = model.forward_reference(x, tau, cond_map, class_labels)
    finally:
        for hook in hooks:
            hook.remove()
    if len(calls) != len(model.blocks) or len(v2h) != len(model.blocks):
        raise RuntimeError("could not record every block's context (unexpected forward structure)")
    return calls, v2h, out


def _local_quantiles(model: GatedPixelCNN, calls: list, v2h: list, tau_leaf: torch.Tensor) -> torch.Tensor:
    """The horizontal stack, output stage and head recomputed position-locally (see the module
    docstring): cross-pixel inputs come from the detached context. Returns (B, C, H, W), on the
    graph of `tau_leaf` (B, C, H, W) in [0, 1] only through each pixel's own tau."""
    tau_unit = 2.0 * tau_leaf - 1.0  # as GatedPixelCNN.forward: tau rescaled to [-1, 1]
    h_local = calls[0][1]  # block 0's h input is the image itself (fixed)
    skips: torch.Tensor | float = 0.0
    for block, args, link in zip(model.blocks, calls, v2h):
        h_context, cond_map, class_onehot = args[1], args[3], args[4]  # args: (v, h, tau, cond_map, class_onehot)
        h_pre = _left_taps(block.h_conv, h_context) + _centre_tap(block.h_conv, h_local) + link
        gated = gate(h_pre + block._conditioning("h", tau_unit, cond_map, class_onehot))  # (B, P, H, W)
        skips = skips + block.skip(gated)
        h_local = gated if block.residual is None else h_local + block.residual(gated)
    return model.head(F.relu(model.output_conv(F.relu(skips))))  # as GatedPixelCNN.forward


def quantiles_and_density(
    model: GatedPixelCNN,
    images: torch.Tensor,
    tau: torch.Tensor,
    class_labels: torch.Tensor | None = None,
    cond_map: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's quantiles Q_i(tau_i | x_<i, tau_<i) and their derivatives dQ_i/dtau_i.

    images: (B, C, H, W) integer levels 0..L-1 (uint8 / int64), or floats already in [-1, 1];
    tau: (B, C, H, W) in [0, 1], the sample points (`aiqn.nets.draws.draw_noise`); class_labels (B,)
    and cond_map (B, S, H, W) as for the model. Returns (quantiles, dq_dtau), both (B, C, H, W)
    in the model's dtype on its device, in the unit scale. The derivative is the exact diagonal
    of d out / d tau at fixed images (module docstring): C backward passes for the whole batch.
    """
    cfg = model.config
    if cfg.head != "quantile":
        raise ValueError(f"the implied density needs a quantile-head model (PixelIQN), got head={cfg.head!r}")
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    x = _unit_images(model, images.to(device)).to(dtype)
    tau = tau.to(device=device, dtype=dtype)
    if class_labels is not None:
        class_labels = class_labels.to(device)
    if cond_map is not None:
        cond_map = cond_map.to(device=device, dtype=dtype)
    calls, v2h, full_out = _context(model, x, tau, cond_map, class_labels)
    dq_dtau = torch.empty_like(full_out)  # (B, C, H, W)
    with torch.enable_grad():
        tau_leaf = tau.detach().clone().requires_grad_(True)
        out = _local_quantiles(model, calls, v2h, tau_leaf)  # (B, C, H, W)
        for g in range(cfg.channels):
            # out[b, g, p] depends on tau[b, :, p] only: the gradient of the sum at (b, g, p) is its own slope
            (grad,) = torch.autograd.grad(out[:, g].sum(), tau_leaf, retain_graph=g < cfg.channels - 1)
            dq_dtau[:, g] = grad[:, g]
    return out.detach(), dq_dtau


def quantile_density(
    model: GatedPixelCNN,
    images: torch.Tensor,
    tau: torch.Tensor,
    class_labels: torch.Tensor | None = None,
    cond_map: torch.Tensor | None = None,
) -> torch.Tensor:
    """dQ_i/dtau_i per pixel-channel, (B, C, H, W), in the unit scale (see `quantiles_and_density`).

    The implied density per unit is its reciprocal; per level, `implied_density(dq, L)`.
    """
    return quantiles_and_density(model, images, tau, class_labels, cond_map)[1]


# ------------------------------------------------------------------------------ sampling


@dataclass
class DensitySamples:
    """Samples with the density the model implies at each pixel-channel (numpy, on the CPU).

    images (N, C, H, W) uint8 levels; labels (N,) int64 (-1: unconditional); tau (N, C, H, W)
    the draws; quantiles (N, C, H, W) the network's Q_i(tau_i) in the unit scale; dq_dtau (N, C,
    H, W) unit scale; density (N, C, H, W) per intensity level; log_density (N, H, W) nats per
    pixel, summed over channels (NaN where some channel is non-monotone); matches_sample (N, C, H,
    W) whether the quantile rounds to the sampled level.
    """

    images: np.ndarray
    labels: np.ndarray
    tau: np.ndarray
    quantiles: np.ndarray
    dq_dtau: np.ndarray
    density: np.ndarray
    log_density: np.ndarray
    matches_sample: np.ndarray
    levels: int

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array by name, for `aiqn.core.io.save_npz_atomic(path, **samples.arrays())`."""
        return {"images": self.images, "labels": self.labels, "tau": self.tau, "quantiles": self.quantiles,
                "dq_dtau": self.dq_dtau, "density": self.density, "log_density": self.log_density,
                "matches_sample": self.matches_sample, "levels": np.array(self.levels)}

    def summary(self) -> dict[str, float | int]:
        """Scalars for a JSON sidecar: the mean log-density per pixel-channel (nats and bits, per
        level, over positions with a valid density), the fraction of pixel-channels where
        dQ/dtau <= 0 (non-monotone), and the fraction whose quantile rounds to the sample."""
        valid = np.isfinite(self.density) & (self.density > 0)
        logs = np.log(self.density[valid].astype(np.float64))
        mean = float(logs.mean()) if logs.size else float("nan")
        return {"n": int(len(self.images)), "levels": int(self.levels),
                "mean_log_density_nats": mean, "mean_log2_density_bits": mean / float(np.log(2.0)),
                "fraction_non_monotone": float((self.dq_dtau <= 0).mean()),
                "fraction_matches_sample": float(self.matches_sample.mean())}


def pipeline_class_labels(model: GatedPixelCNN, n: int, seed: int) -> torch.Tensor | None:
    """Class labels as `aiqn sample` draws them (uniform, from a generator seeded with `seed`),
    or None for an unconditional model."""
    if not model.config.num_classes:
        return None
    return torch.randint(model.config.num_classes, (n,), generator=torch.Generator().manual_seed(seed))


def sample_with_density(
    model: GatedPixelCNN,
    n: int,
    seed: int,
    batch_size: int = 64,
    class_labels: torch.Tensor | None = None,
    method: str = "cached",
    progress: bool = False,
) -> DensitySamples:
    """Draw `n` samples with `aiqn.nets.sampling.generate` and evaluate the implied density at each.

    Same draws as the pipeline: batch b uses `noise_generator(seed, b)`, so with the same `seed`
    and `batch_size` the images equal those of `aiqn sample` (and, for a class-conditional model
    without `class_labels`, the labels are drawn as `aiqn sample` draws them). The tau of each
    batch is regenerated from the same generator; the density is evaluated at the rounded
    sample with those tau (module docstring), one batch at a time.
    """
    cfg = model.config
    if cfg.head != "quantile":
        raise ValueError(f"sample_with_density needs a quantile-head model (PixelIQN), got head={cfg.head!r}")
    if class_labels is None:
        class_labels = pipeline_class_labels(model, n, seed)
    images = generate(model, n, batch_size, seed, class_labels=class_labels, method=method, progress=progress)
    taus, quantiles, slopes = [], [], []
    for batch_index, start in enumerate(range(0, n, batch_size)):  # the batch layout of `generate`
        size = min(batch_size, n - start)
        tau = draw_noise(size, model, noise_generator(seed, batch_index))  # (size, C, H, W) float32
        labels = None if class_labels is None else class_labels[start : start + size]
        q, dq = quantiles_and_density(model, torch.from_numpy(images[start : start + size]), tau, labels)
        taus.append(tau.numpy())
        quantiles.append(q.cpu().numpy())
        slopes.append(dq.cpu().numpy())
    quantiles_all, dq_all = np.concatenate(quantiles), np.concatenate(slopes)
    with np.errstate(divide="ignore"):
        density = (2.0 / (cfg.levels - 1)) / dq_all  # as implied_density, in numpy
    matches = from_unit(torch.from_numpy(quantiles_all), cfg.levels).numpy() == images
    return DensitySamples(
        images=images,
        labels=class_labels.cpu().numpy().astype(np.int64) if class_labels is not None else np.full(n, -1),
        tau=np.concatenate(taus),
        quantiles=quantiles_all.astype(np.float32),
        dq_dtau=dq_all.astype(np.float32),
        density=density.astype(np.float32),
        log_density=pixel_log_density(density).astype(np.float32),
        matches_sample=matches,
        levels=cfg.levels,
    )


# -------------------------------------------------------------------------------- figure


def density_map_figure(
    image: np.ndarray | torch.Tensor,
    density: np.ndarray | torch.Tensor,
    path: str | Path,
    title: str = "",
    levels: int | None = None,
) -> None:
    """Save a PNG: each sample next to its log-density map (nats per pixel, SUM over channels of
    log p per level; grey where some channel has no valid density).

    image: (C, H, W) or (N, C, H, W) integer levels with C in (1, 3); density: same shape, per
    level (e.g. `DensitySamples.density`); `levels` scales the image for display (default: its
    maximum + 1). Samples in the top row, their log-density maps below, on one colour scale.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    import matplotlib

    image = np.asarray(image.cpu() if isinstance(image, torch.Tensor) else image)
    density = np.asarray(density.detach().cpu() if isinstance(density, torch.Tensor) else density)
    if image.ndim == 3:
        image, density = image[None], density[None]
    if image.ndim != 4 or image.shape[1] not in (1, 3) or density.shape != image.shape:
        raise ValueError(f"expected (N, C, H, W) images with C in (1, 3) and densities of the same shape, got "
                         f"{image.shape} and {density.shape}")
    levels = int(image.max()) + 1 if levels is None else levels
    logs = pixel_log_density(density)  # (N, H, W)
    finite = logs[np.isfinite(logs)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.6")

    n = len(image)
    # two rows: the samples, and under each its log-density map; one colour bar for all maps
    fig = Figure(figsize=(1.6 * n + 1.2, 3.6 + (0.4 if title else 0.0)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        shown = image[i].astype(np.float64) / max(levels - 1, 1)
        if shown.shape[0] == 1:
            axes[0, i].imshow(shown[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            axes[0, i].imshow(np.clip(np.transpose(shown, (1, 2, 0)), 0.0, 1.0), interpolation="nearest")
        mapped = axes[1, i].imshow(np.ma.masked_invalid(logs[i]), cmap=cmap, vmin=low, vmax=high,
                                   interpolation="nearest")
        axes[0, i].set_title("sample" if n == 1 else f"sample {i}", fontsize=9)
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[1, 0].set_ylabel("log-density", fontsize=9)
    fig.colorbar(mapped, ax=axes[1, :].tolist(), shrink=0.9,
                 label="log p per level\n(nats, sum over channels)")
    if title:
        fig.suptitle(title, fontsize=11)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, format="png")
