"""AGAVE figures (Lucas & Verbeek 2018): the lambda sweep (Figure 4), f(z) beside PixelCNN samples
conditioned on it (Figure 5), and the KL per step when the auxiliary term is dropped (Figure 7).

Same drawing conventions as `aiqn.report.figures` (Agg canvas, no pyplot); docs/agave.md.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from aiqn.core.io import read_csv
from aiqn.report.figures import _new_figure, _save, _show_grid, image_grid

LOG_2 = math.log(2.0)


def _elbo_parts(metrics: dict) -> dict:
    """The eq. 7 bound's parts of one evaluate-agave metrics JSON (bits/dim)."""
    try:
        return metrics["evaluation"]["bounds"]["elbo"]
    except KeyError:
        raise ValueError(f"{metrics.get('model')}: not an AGAVE metrics file (no evaluation.bounds.elbo)") from None


def plot_lambda_sweep(metrics: dict[float, dict], out_png: str, dataset: str) -> None:
    """Figure 4 analogue from {lambda: metrics JSON}: (a) bits/dim of the PixelCNN decoder (eq. 7
    bound, reconstruction + KL, per x-dimension) and of the VAE decoder (auxiliary + KL, per
    y-dimension); (b) the parts: KL, PixelCNN reconstruction, VAE (auxiliary) reconstruction."""
    if not metrics:
        raise ValueError("no lambdas to plot")
    lams = sorted(metrics)
    parts = [_elbo_parts(metrics[lam]) for lam in lams]
    series = {key: [p[key] for p in parts] for key in ("bpd", "reconstruction", "kl", "auxiliary", "vae_bpd")}
    fig = _new_figure(10.0, 4.0)
    left, right = fig.subplots(1, 2)
    left.plot(lams, series["bpd"], "o-", label="PixelCNN decoder: reconstruction + KL")
    left.plot(lams, series["vae_bpd"], "s--", label="VAE decoder: auxiliary reconstruction + KL")
    left.set_ylabel("bits/dim (eq. 7 bound, test split)")
    left.set_title("(a) bits/dim against lambda", fontsize=10)
    right.plot(lams, series["reconstruction"], "o-", label="PixelCNN reconstruction")
    right.plot(lams, series["auxiliary"], "s--", label="VAE (auxiliary) reconstruction")
    right.plot(lams, series["kl"], "^-", label="KL(q(z|x) || p(z))")
    right.set_yscale("symlog", linthresh=1e-2)
    right.set_ylabel("bits/dim (log scale below 0.01: linear)")
    right.set_title("(b) KL and reconstruction terms", fontsize=10)
    for ax in (left, right):
        ax.set_xlabel("lambda (KL weight in training)")
        ax.set_xticks(lams)
        ax.set_xticklabels([f"{lam:g}" for lam in lams])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{dataset}: AGAVE, effect of lambda (Figure 4 analogue; one model per lambda, EMA weights)",
                 fontsize=11)
    _save(fig, out_png)


def _on_x_grid(aux: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """f(z) images (n, C_y, H_y, W_y) shown at x's shape (C, H, W): nearest upsampling, grey repeated."""
    c, h, w = shape
    if aux.shape[-2:] != (h, w):
        aux = aux.repeat(h // aux.shape[-2], axis=-2).repeat(w // aux.shape[-1], axis=-1)
    if aux.shape[1] != c:
        aux = np.repeat(aux, c, axis=1)
    return aux


def plot_conditional_samples(aux_images: np.ndarray, samples: np.ndarray, levels: int, out_png: str,
                             title: str = "") -> None:
    """Figure 5 analogue: one row per latent, f(z) (uint8 on x's levels, (n, C_y, H_y, W_y)) in the
    left column, then the r PixelCNN samples conditioned on it (samples (n, r, C, H, W))."""
    n, r = samples.shape[:2]
    shape = samples.shape[2:]
    aux = _on_x_grid(np.asarray(aux_images), shape)  # (n, C, H, W)
    rows = np.concatenate([aux[:, None], samples], axis=1).reshape(n * (r + 1), *shape)
    grid = image_grid(rows, levels, r + 1)
    cell = max(0.45, 1.2 * shape[1] / 32)  # inches per image
    fig = _new_figure(cell * (r + 1) + 0.6, cell * n + (0.8 if title else 0.4))
    ax = fig.subplots()
    _show_grid(ax, grid)
    step = shape[2] + 1
    ax.set_xticks([shape[2] / 2 - 0.5 + i * step for i in range(r + 1)])
    ax.set_xticklabels(["f(z)"] + [f"PS {i + 1}" for i in range(r)], fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    _save(fig, out_png)


def _smooth(values: pd.Series, window: int) -> pd.Series:
    return values.rolling(window, min_periods=1).mean()


def plot_kl_ablation(phase1_log: str, phase2_log: str, out_png: str, dataset: str, kl_weight: float,
                     dims: int, continuation_kl_weight: float | None = None) -> None:
    """Figure 7 analogue: the training KL per step (bits/dim: nats per image / (D ln 2)) while the model
    trains with the auxiliary term (eq. 7), then after the switch to eq. 6 (no auxiliary term), with
    the per-step values and a running mean; right: the PixelCNN reconstruction and the auxiliary term
    (still computed in phase 2, no longer optimised), nats per image."""
    one, two = read_csv(phase1_log, "a training log"), read_csv(phase2_log, "a training log")
    switch = int(one["step"].iloc[-1]) if len(one) else 0
    two = two.assign(step=two["step"] + switch)
    window = max(1, (len(one) + len(two)) // 40)
    fig = _new_figure(10.0, 4.0)
    left, right = fig.subplots(1, 2)
    after = kl_weight if continuation_kl_weight is None else continuation_kl_weight
    for frame, name, colour in ((one, f"with the auxiliary term (eq. 7, lambda={kl_weight:g})", "C0"),
                                (two, f"auxiliary term dropped (eq. 6, KL weight {after:g})", "C3")):
        kl = frame["kl"] / (dims * LOG_2)
        left.plot(frame["step"], kl, color=colour, alpha=0.25, linewidth=0.8)
        left.plot(frame["step"], _smooth(kl, window), color=colour, label=name)
        right.plot(frame["step"], _smooth(frame["reconstruction"], window), color=colour,
                   label=f"PixelCNN reconstruction, {name.split(' (')[0]}")
        right.plot(frame["step"], _smooth(frame["auxiliary"], window), color=colour, linestyle="--",
                   label=f"auxiliary term, {name.split(' (')[0]}")
    for ax in (left, right):
        ax.axvline(switch, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    left.set_ylabel("KL(q(z|x) || p(z)), bits/dim (training batches)")
    left.set_ylim(bottom=0)
    left.set_title("(a) KL against step", fontsize=10)
    right.set_ylabel("nats per image (running mean)")
    right.set_title("(b) reconstruction terms", fontsize=10)
    fig.suptitle(f"{dataset}: AGAVE (lambda={kl_weight:g}) continued without the auxiliary loss "
                 f"from step {switch} (Figure 7 analogue)", fontsize=11)
    _save(fig, out_png)
