"""Figures: sample grids, the Figure 4 analogue (IS/FID over training) and training-loss curves.

Everything draws on `matplotlib.figure.Figure` objects with the Agg canvas directly (no pyplot,
no global backend switch, no seaborn), so it is safe in headless workers and tests.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from aiqn.core.io import read_csv
from aiqn.report.tables import _is_real_data, _model_rank, load_metric_records, row_order, wrap_label

DPI = 150
REAL_LABEL = "real data (test split)"
_SEPARATOR = 1.0  # white separators / empty cells


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_png: str) -> None:
    path = Path(out_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")


def image_grid(images: np.ndarray, levels: int, nrow: int) -> np.ndarray:
    """Tile N x C x H x W integer images (values 0..levels-1) into a float grid in [0, 1].

    `nrow` is the number of images per grid row (torchvision's convention). Images are separated
    by 1-pixel white lines (no outer border); unused cells are white. The result is
    (R*H + R-1) x (K*W + K-1) for C=1 and the same x 3 for C=3, with K = min(nrow, N) columns
    and R = ceil(N / K) rows.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected N x C x H x W images with C in (1, 3), got shape {images.shape}")
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    n, c, h, w = images.shape
    if n == 0:
        raise ValueError("no images to tile")
    if images.min() < 0 or images.max() > levels - 1:
        raise ValueError(
            f"image values span {images.min()}..{images.max()}, outside 0..{levels - 1}"
        )
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    grid = np.full((c, rows * h + rows - 1, cols * w + cols - 1), _SEPARATOR, dtype=np.float64)
    scaled = images.astype(np.float64) / (levels - 1)
    for i in range(n):
        r, k = divmod(i, cols)
        y, x = r * (h + 1), k * (w + 1)
        grid[:, y:y + h, x:x + w] = scaled[i]
    return grid[0] if c == 1 else np.transpose(grid, (1, 2, 0))


def _show_grid(ax, grid: np.ndarray) -> None:
    """Draw an `image_grid` result: grey for one channel, RGB for three."""
    if grid.ndim == 2:
        ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(grid, interpolation="nearest")


def _load_images(path: str) -> np.ndarray:
    from aiqn.core.io import read_npz

    return read_npz(path, "images", {"images": (4, "u")})["images"]


def plot_sample_grids(real_npz: str, sample_npzs: dict[str, str], levels: int, out_png: str,
                      n: int = 64, title: str = "") -> None:
    """Save one panel per column, "real (test)" then each model: a grid of its first `n` images."""
    panels = [("real (test)", real_npz)] + list(sample_npzs.items())
    grids = []
    for name, path in panels:
        images = _load_images(path)[:n]
        per_row = max(1, math.ceil(math.sqrt(len(images))))
        grids.append((name, len(images), image_grid(images, levels, per_row)))
    # ~2 screen pixels per image pixel, within 3.2..6 inches per panel
    side = min(6.0, max(3.2, 2.0 * max(g.shape[1] for _, _, g in grids) / DPI))
    fig = _new_figure(side * len(grids), side + (0.7 if title else 0.4))
    axes = fig.subplots(1, len(grids), squeeze=False)[0]
    for ax, (name, count, grid) in zip(axes, grids):
        _show_grid(ax, grid)
        ax.set_title(f"{name}\n(first {count} images)", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=12)
    _save(fig, out_png)


def _wrap(label: str, width: int = 38) -> str:
    return "\n".join(wrap_label(label, width))


def plot_training_curves(metric_paths: list[str], out_png: str, dataset: str,
                         base_of: dict[str, str] | None = None, dotted: set[str] | frozenset = frozenset()) -> Figure:
    """Save the Figure 4 analogue: IS and FID (and bits/dim if present) against training step.

    `base_of` maps a variant to its base model, which it shares a colour with; models in `dotted`
    (the class-conditional ones, as in the paper's Figure 4) are drawn with dotted lines."""
    base_of = base_of or {}
    records = load_metric_records(metric_paths)
    records = records[records["dataset"] == dataset]
    if records.empty:
        raise ValueError(f"no metric records for dataset {dataset!r} in {len(metric_paths)} files")
    is_real = records["model"].map(_is_real_data)
    real, ours = records[is_real], records[~is_real & records["step"].notna()]
    metrics = ["IS", "FID"] + (["bits/dim"] if (ours["metric"] == "bits/dim").any() else [])

    order = row_order(base_of.get(m, m) for m in ours["model"])  # the caller's order of the metric files
    models = sorted(pd.unique(ours["model"]), key=lambda m: (_model_rank(base_of.get(m, m), order), str(m)))
    bases = list(dict.fromkeys(base_of.get(m, m) for m in models))  # in order of first appearance
    colours = {m: f"C{bases.index(base_of.get(m, m)) % 10}" for m in models}
    markers = "osD^vP*X"

    fig = _new_figure(4.8 * len(metrics), 4.2)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        sub = ours[ours["metric"] == metric]
        for i, model in enumerate(models):
            line = sub[sub["model"] == model].sort_values("step")
            if line.empty:
                continue
            style = ":" if model in dotted else "-"
            name = f"{model} (class-conditional)" if model in dotted else str(model)
            n_seeds = line["seed"].nunique()
            if n_seeds > 1:  # every seed thin, their mean bold
                for _, one in line.groupby("seed"):
                    ax.plot(one["step"].astype(float), one["value"].astype(float), color=colours[model],
                            linestyle=style, linewidth=0.8, alpha=0.35)
                name += f", mean of {n_seeds} seeds"
            mean = line.groupby("step")["value"].mean()
            steps, values = mean.index.to_numpy(dtype=float), mean.to_numpy(dtype=float)
            ax.plot(steps, values, marker=markers[i % len(markers)], color=colours[model], linestyle=style, label=name)
            std = line["std"].to_numpy(dtype=float)
            if n_seeds <= 1 and np.isfinite(std).any():
                ax.errorbar(steps, values, yerr=np.nan_to_num(std), fmt="none",
                            ecolor=colours[model], capsize=3, alpha=0.7)
        floor = real[real["metric"] == metric]
        if not floor.empty:
            ax.axhline(float(floor["value"].iloc[0]), color="0.3", linestyle="--", linewidth=1.2,
                       label=REAL_LABEL)
        labels = list(pd.unique(sub["label"])) or list(pd.unique(floor["label"])) or [metric]
        ax.set_ylabel("\n".join(_wrap(label) for label in labels), fontsize=9)
        ax.set_xlabel("training step")
        ax.set_title(metric)
        values = sub["value"].to_numpy(dtype=float)
        if metric == "FID" and values.size and values.min() > 0 and values.max() / values.min() > 20:
            ax.set_yscale("log")  # early checkpoints are orders of magnitude worse than late ones
            ax.set_title("FID (log scale)")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"{dataset}: sample quality during training (Figure 4 analogue)", fontsize=12)
    _save(fig, out_png)
    return fig


def plot_loss_curves(log_csvs: dict[str, str], out_png: str, ylabels: dict[str, str] | None = None) -> None:
    """Save training loss against step, one subplot per model: raw loss and a moving average.
    `ylabels` names each model's loss (they differ in kind and scale)."""
    if not log_csvs:
        raise ValueError("no training logs given")
    fig = _new_figure(4.8 * len(log_csvs), 3.8)
    axes = fig.subplots(1, len(log_csvs), squeeze=False)[0]
    for ax, (model, path) in zip(axes, log_csvs.items()):
        log = read_csv(path, "a training log")
        missing = {"step", "loss"} - set(log.columns)
        if missing:
            raise ValueError(f"{path}: training log lacks columns {sorted(missing)}")
        log = log.sort_values("step")
        if log.empty:
            raise ValueError(f"{path}: training log is empty")
        window = max(1, min(100, len(log) // 20))
        smooth = log["loss"].rolling(window, min_periods=1).mean()
        ax.plot(log["step"], log["loss"], color="C0", alpha=0.25, linewidth=0.8, label="raw")
        ax.plot(log["step"], smooth, color="C0", linewidth=1.8,
                label=f"moving average ({window} log rows)")
        ax.set_title(str(model))
        ax.set_xlabel("training step")
        ax.set_ylabel((ylabels or {}).get(model, "training loss"))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("Training loss", fontsize=12)
    _save(fig, out_png)


def plot_inpainting(panels: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], levels: int, out_png: str,
                    title: str = "") -> None:
    """The Figure 6 / 12 analogue, one panel per model: a row per test image with the masked
    input, its K completions and the original. `panels`: model -> (masked (M, C, H, W),
    completions (M, K, C, H, W), originals (M, C, H, W)), all integer levels."""
    fig = _new_figure(0.1, 0.1)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    width = 0.0
    for ax, (name, (masked, completions, originals)) in zip(axes, panels.items()):
        m, k = completions.shape[:2]
        rows = np.concatenate([masked[:, None], completions, originals[:, None]], axis=1)  # (M, K+2, C, H, W)
        grid = image_grid(rows.reshape(m * (k + 2), *rows.shape[2:]), levels, k + 2)
        _show_grid(ax, grid)
        ax.set_title(f"{name}\ninput | {k} completions | original", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        width = max(width, grid.shape[1])
    side = min(7.0, max(3.5, 2.5 * width / DPI))
    fig.set_size_inches(side * len(panels), side * (len(rows) / (k + 2)) + (0.8 if title else 0.5))
    if title:
        fig.suptitle(title, fontsize=12)
    _save(fig, out_png)


def class_rows(images: np.ndarray, labels: np.ndarray, per_class: int, max_classes: int
               ) -> tuple[list[int], np.ndarray]:
    """The first `max_classes` classes that occur in `labels` (N,) and, for each, the first
    `per_class` images (N, C, H, W) drawn with it: (classes, rows (R, per_class, C, H, W)); a
    class with fewer images is padded with black ones."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    classes = [int(c) for c in np.unique(labels) if c >= 0][:max_classes]
    if not classes:
        raise ValueError("no class labels >= 0: these samples are not from a class-conditional model")
    rows = np.zeros((len(classes), per_class, *images.shape[1:]), dtype=images.dtype)
    for r, c in enumerate(classes):
        chosen = images[labels == c][:per_class]  # (<= per_class, C, H, W)
        rows[r, : len(chosen)] = chosen
    return classes, rows


def plot_class_grid(images: np.ndarray, labels: np.ndarray, levels: int, out_png: str, per_class: int = 10,
                    class_names: list[str] | None = None, max_classes: int = 10, title: str = "") -> None:
    """The Figure 7 / 11 analogue: one row per class (the first `max_classes` classes that occur),
    the first `per_class` samples drawn with that label. images (N, C, H, W) integer levels,
    labels (N,) the class each sample was generated with."""
    classes, rows = class_rows(images, labels, per_class, max_classes)
    grid = image_grid(rows.reshape(-1, *rows.shape[2:]), levels, per_class)  # (R*H + R-1, K*W + K-1[, 3])
    names = [class_names[c] if class_names and c < len(class_names) else str(c) for c in classes]
    height, width = images.shape[2], images.shape[3]
    scale = max(2.0, 160.0 / max(per_class * (width + 1), 1))  # ~2 screen pixels per image pixel or more
    fig = _new_figure(max(3.5, scale * grid.shape[1] / DPI + 1.4), max(2.5, scale * grid.shape[0] / DPI + 0.8))
    ax = fig.subplots()
    _show_grid(ax, grid)
    ax.set_yticks([r * (height + 1) + height / 2 - 0.5 for r in range(len(classes))], names, fontsize=8)
    ax.set_xticks([])
    ax.set_ylabel("class label")
    if title:
        ax.set_title(title, fontsize=10)
    _save(fig, out_png)


def plot_memorisation(distances: dict[str, tuple[np.ndarray, np.ndarray]], heldout: tuple[np.ndarray, np.ndarray],
                      thresholds: tuple[float, float], closest: dict[str, tuple[np.ndarray, np.ndarray]], levels: int,
                      out_png: str, title: str, feature_name: str) -> None:
    """Nearest-training distances of each model's samples against the test images' (pixel space,
    feature space), the memorisation threshold on each, and under them each model's closest
    samples (top row) above their nearest training images (bottom row).

    `distances`: model -> (pixel, feature) distances of its samples; `heldout`: the test images'
    (pixel, feature); `closest`: model -> (samples, their nearest training images), uint8."""
    models = list(distances)
    fig = _new_figure(11, 3.6 + 1.25 * len(models))
    top, bottom = fig.subfigures(2, 1, height_ratios=[3.6, 1.25 * len(models)])
    axes = top.subplots(1, 2)
    colours = [f"C{i}" for i in range(len(models))]
    for k, (ax, space) in enumerate(zip(axes, ("pixels (L2, [0, 1] scale)", f"features ({feature_name})"))):
        values = [heldout[k]] + [distances[m][k] for m in models]
        bins = np.histogram_bin_edges(np.concatenate(values), bins=40)
        ax.hist(heldout[k], bins=bins, density=True, color="0.75", label="test images (held out)")
        for model, colour in zip(models, colours):
            fraction = float(np.mean(distances[model][k] < thresholds[k]))
            ax.hist(distances[model][k], bins=bins, density=True, histtype="step", linewidth=1.5, color=colour,
                    label=f"{model} (memorised {fraction:.2f})")
        ax.axvline(thresholds[k], color="k", linestyle="--", linewidth=1, label="threshold")
        ax.set_xlabel(f"distance to the nearest training image, {space}")
        ax.set_ylabel("density")
        ax.legend(fontsize=6, loc="upper right", framealpha=0.6)
    top.suptitle(title, fontsize=10)
    rows = bottom.subplots(len(models), 1, squeeze=False)[:, 0]
    for ax, model in zip(rows, models):
        samples, nearest = closest[model]
        pairs = np.concatenate([samples, nearest])  # (2k, C, H, W): samples, then their neighbours
        _show_grid(ax, image_grid(pairs, levels, nrow=len(samples)))
        ax.axis("off")
        ax.set_title(f"{model}: closest samples (top) and their nearest training images (bottom)", fontsize=8)
    _save(fig, out_png)
