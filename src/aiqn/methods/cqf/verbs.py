"""Command-line verbs of CQF (Shmelkov et al. 2018, Table 1 ablation; issue 8), registered by
`aiqn.cli.build_parser`.

    train-cqf    train (or resume) one variant, gan | vae | cq | cqf, on one dataset
    sample-cqf   N images x = quantize(f^{-1}(g(z))), z ~ N(0, I), from a CQF checkpoint (EMA weights)
    cqf-figures  the sample grid (real | gan | vae | cq | cqf) and the training curves

Scoring goes through the PixelCNN's `evaluate` verb (same extractor, reference statistics, FID / IS
labels and provenance; `--rule evaluate_cqf`), which adds the bits/dim of a CQF checkpoint's
likelihood variants with `cqf_bits_per_dim_metrics` below; the table goes through the `table` verb
(`--name cqf_table1`). docs/cqf.md.
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np

log = logging.getLogger("aiqn")

VARIANTS = ("gan", "vae", "cq", "cqf")  # aiqn.methods.cqf.model.VARIANTS, Table 1's rows in the paper's order
# How the images of `sample-cqf` are made (the evaluation samples of the table and the grid).
METHODS = {False: "x = quantize(f^-1(g(z))), z ~ N(0, I) (the generator G(z) of eq. 7)",
           True: "x = quantize(f^-1(g(z) + sigma n)), z, n ~ N(0, I) (the full density model)"}


def bound_name(importance_samples: int) -> str:
    """How a bits/dim label names its bound."""
    if importance_samples < 1:
        raise ValueError(f"importance_samples must be >= 1, got {importance_samples}")
    return "ELBO" if importance_samples == 1 else f"importance-weighted bound, K={importance_samples}"


def bits_per_dim_label(dataset: str, n_images: int, levels: int, importance_samples: int) -> str:
    """e.g. 'bits/dim (digits test split, 360 images, ELBO, 17 levels dequantized, EMA weights)'."""
    return (f"bits/dim ({dataset} test split, {n_images} images, {bound_name(importance_samples)}, "
            f"{levels} levels dequantized, EMA weights)")


def cqf_bits_per_dim_metrics(ckpt: dict, dataset: str, test_path: str, importance_samples: int = 1, seed: int = 0,
                             device: str = "cpu", batch_size: int = 500) -> list[dict]:
    """The `evaluate` verb's bits/dim entry for a CQF checkpoint: the bound of eq. 6 (with the flow's
    log-determinant and the dequantization constant) on the test split, EMA weights; [] for the
    `gan` variant, which has no likelihood."""
    from aiqn.methods.cqf.train import cqf_bits_per_dim
    from aiqn.data import load_split
    from aiqn.methods.cqf.model import VARIANTS as PARTS

    if not PARTS[ckpt["variant"]][0]:
        return []
    images, _ = load_split(test_path)
    result = cqf_bits_per_dim(ckpt, images, seed=seed, importance_samples=importance_samples, use_ema=True,
                              device=device, batch_size=batch_size)
    label = bits_per_dim_label(dataset, len(images), ckpt["config"]["levels"], importance_samples)
    terms = {key: round(result[key], 6) for key in ("reconstruction", "kl", "logdet") if key in result}
    return [{"metric": "bits/dim", "value": result["bpd"], "label": label, "bound": bound_name(importance_samples),
             "importance_samples": importance_samples, "dequantization_seed": seed, "n_images": len(images),
             "nats_per_image": round(result["nll"], 6), **({"terms_nats_per_image": terms} if terms else {})}]


def cmd_train_cqf(args) -> None:
    from aiqn.core.publish import publish_final
    from aiqn.core.device import resolve_device
    from aiqn.methods.cqf.train import CQFTrainConfig, train_cqf
    from aiqn.data import get_dataset, load_split
    from aiqn.methods.cqf.model import CQFConfig, build_cqf, parameter_counts

    spec = get_dataset(args.dataset)
    config = CQFConfig(channels=spec.channels, height=spec.height, width=spec.width, levels=spec.levels,
                       **json.loads(args.architecture))
    train_config = CQFTrainConfig(**{**json.loads(args.train_config), "variant": args.variant})
    images, _ = load_split(args.data)
    device = resolve_device(args.device)
    log.info("training CQF variant %s on %s (%d images) on %s", args.variant, args.dataset, len(images), device)
    began, cpu = time.time(), time.process_time()
    checkpoints = train_cqf(config, train_config, images, args.state_dir, device=device,
                            progress=not args.no_progress)
    publish_final(args, checkpoints[train_config.steps], train_config.steps, config, train_config, began, device,
                  variant=args.variant, parameters=parameter_counts(*build_cqf(config, args.variant)),
                  cpu_seconds_this_invocation=round(time.process_time() - cpu, 2))


def cmd_sample_cqf(args) -> None:
    from aiqn.core.device import resolve_device
    from aiqn.methods.cqf.train import generate_cqf
    from aiqn.core.environment import environment
    from aiqn.core.checkpoint import load_checkpoint
    from aiqn.core.io import file_record, save_npz_atomic, write_json

    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.checkpoint, map_location=device)
    if ckpt.get("kind") != "cqf":
        raise SystemExit(f"{args.checkpoint} is not a CQF checkpoint (train it with `aiqn train-cqf`)")
    if args.decoder_noise and ckpt["variant"] == "gan":
        raise SystemExit(f"{args.checkpoint} is the gan variant: it has no decoder noise (drop --decoder-noise)")
    images = generate_cqf(ckpt, args.n, args.seed, use_ema=True, device=device, batch_size=args.batch_size,
                          decoder_noise=args.decoder_noise)
    save_npz_atomic(args.out, images=images, labels=np.full(args.n, -1))
    write_json(args.out + ".json", {"n": args.n, "seed": args.seed, "batch_size": args.batch_size, "weights": "ema",
                                    "variant": ckpt["variant"], "decoder_noise": args.decoder_noise,
                                    "method": METHODS[args.decoder_noise], "step": ckpt["step"],
                                    "checkpoint": file_record(args.checkpoint), "samples": file_record(args.out),
                                    "device": device, "environment": environment(device)})
    log.info("wrote %d samples of %s to %s", args.n, ckpt["variant"], args.out)


def _pairs(items: list[str]) -> dict[str, str]:
    """['NAME=PATH', ...] -> {NAME: PATH} in the given order."""
    return dict(item.split("=", 1) for item in items)


# (train_log.csv column, y label) of the panels of the training-curves figure
CURVES = (
    ("bpd", "coverage loss L_C (eq. 6) of a training batch,\nbits/dim (vae, cq, cqf)"),
    ("adversarial", "quality loss L_Q (eq. 7, unweighted):\n-mean discriminator logit on G(z)"),
    ("d_loss", "discriminator loss (penalty not included;\nln 4 = 1.39 at chance)"),
)


def plot_cqf_curves(logs: dict[str, str], out_png: str) -> None:
    """One panel per loss term, one line (moving average of the logged steps) per variant that has it."""
    import pandas as pd

    from aiqn.report.figures import _new_figure, _save

    frames = {name: pd.read_csv(path).sort_values("step") for name, path in logs.items()}
    fig = _new_figure(4.8 * len(CURVES), 3.8)
    axes = fig.subplots(1, len(CURVES), squeeze=False)[0]
    for ax, (column, ylabel) in zip(axes, CURVES):
        for i, (name, frame) in enumerate(frames.items()):
            if column not in frame or frame[column].isna().all():
                continue
            window = max(1, min(50, len(frame) // 20))
            ax.plot(frame["step"], frame[column], color=f"C{i}", alpha=0.2, linewidth=0.6)
            ax.plot(frame["step"], frame[column].rolling(window, min_periods=1).mean(), color=f"C{i}",
                    linewidth=1.6, label=f"{name} (moving average of {window})")
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel, fontsize=9)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    coverage = [f["bpd"].dropna() for f in frames.values() if "bpd" in f and f["bpd"].notna().any()]
    if coverage and max(c.max() for c in coverage) > 4 * min(c.min() for c in coverage) > 0:
        axes[0].set_yscale("log")  # the first steps are far higher than the last
    fig.suptitle("CQF: training curves of the Table 1 variants", fontsize=12)
    _save(fig, out_png)


def cmd_cqf_figures(args) -> None:
    from aiqn.data import get_dataset
    from aiqn.report import plot_sample_grids
    from aiqn.core.io import file_record, read_json, write_json

    spec = get_dataset(args.dataset)
    samples, logs = _pairs(args.samples), _pairs(args.train_logs)
    plot_sample_grids(args.real, samples, spec.levels, args.grid_out, n=args.grid_n,
                      title=f"{args.dataset}: real test images and the CQF Table 1 variants, G(z), EMA weights")
    if args.loss_out:
        plot_cqf_curves(logs, args.loss_out)
    write_json(args.grid_out + ".json", {"dataset": args.dataset, "real": file_record(args.real), "grid_n": args.grid_n,
                                         "panels": [{"name": name, **file_record(path), "meta": read_json(path + ".json")}
                                                    for name, path in samples.items()],  # left to right
                                         "train_logs": {name: file_record(path) for name, path in logs.items()}})
    log.info("wrote %s%s", args.grid_out, f" and {args.loss_out}" if args.loss_out else "")


def add_cqf_verbs(verb) -> None:
    """Register the CQF verbs with `verb(name, func, help) -> argparse parser` of aiqn.cli."""
    p = verb("train-cqf", cmd_train_cqf, "train (or resume) one CQF Table 1 variant: gan, vae, cq or cqf")
    p.add_argument("--dataset", required=True)
    p.add_argument("--data", required=True, help="train.npz of the dataset")
    p.add_argument("--variant", choices=VARIANTS, required=True,
                   help="gan: quality loss only; vae: coverage only; cq: both; cqf: both and the NVP flow")
    p.add_argument("--architecture", default="{}", help="JSON: CQFConfig fields (latent_dim, widths, flow, ...)")
    p.add_argument("--train-config", required=True,
                   help="JSON: CQFTrainConfig fields but the variant (steps, batch_size, lr, d_steps, ...)")
    p.add_argument("--state-dir", required=True, help="resumable working folder (not a rule output)")
    p.add_argument("--out-dir", required=True, help="the final checkpoint, train_log.csv, config.json, train.json")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")

    p = verb("sample-cqf", cmd_sample_cqf, "N images from a CQF checkpoint (EMA weights)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=1000, help="latents decoded per pass (same images for any)")
    p.add_argument("--decoder-noise", action="store_true",
                   help="add the decoder's Gaussian noise in feature space (not for gan; default: G(z))")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")

    p = verb("cqf-figures", cmd_cqf_figures, "CQF sample grid (real | gan | vae | cq | cqf) and training curves")
    p.add_argument("--dataset", required=True)
    p.add_argument("--real", required=True, help="test.npz (the real panel)")
    p.add_argument("--samples", nargs="+", required=True, help="NAME=PATH of each sample panel, in order")
    p.add_argument("--train-logs", nargs="+", required=True, help="NAME=PATH of each train_log.csv")
    p.add_argument("--grid-n", type=int, default=64)
    p.add_argument("--grid-out", required=True)
    p.add_argument("--loss-out", default=None, help="training curves (L_C in bits/dim, discriminator loss)")
