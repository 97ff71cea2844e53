"""Command-line verbs of the AIQN-VAE (appendix, Figure 9), registered by `aiqn.cli.build_parser`.

    train-vae    train (or resume) the VAE baseline or the AIQN-VAE on one dataset
    sample-vae   N images from a VAE checkpoint: latents from the N(0, I) prior or from the AIQN
    vae-figures  sample grids (real | VAE | AIQN-VAE | AIQN-VAE decoder with the prior) and losses

Scoring goes through the PixelCNN's `evaluate` verb (same extractor, reference statistics, labels
and provenance; `--rule evaluate_vae`), the table through the `table` verb (`--name aiqn_vae`).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("aiqn")

VARIANTS = ("vae", "aiqn-vae")
# Where a sample's latent code comes from: the N(0, I) prior, or tau ~ U[0, 1]^d through the AIQN.
LATENTS = {"prior": "N(0, I) prior -> decoder", "aiqn": "tau ~ U[0,1]^d -> AIQN -> decoder"}


def cmd_train_vae(args) -> None:
    from aiqn.core.publish import publish_final
    from aiqn.core.device import resolve_device
    from aiqn.data import get_dataset, load_split
    from aiqn.nets.vae import VAEConfig, aiqn_vae_config
    from aiqn.methods.aiqn_vae.train import VAETrainConfig, train_vae

    spec = get_dataset(args.dataset)
    config = VAEConfig(channels=spec.channels, height=spec.height, width=spec.width, levels=spec.levels,
                       **json.loads(args.architecture))
    aiqn = args.variant == "aiqn-vae"
    if aiqn:  # the paper's AIQN-VAE: fixed posterior variance, lower KL weight
        config = aiqn_vae_config(config, **json.loads(args.aiqn_vae_config))
    elif json.loads(args.aiqn_vae_config):
        raise SystemExit("--aiqn-vae-config applies to --variant aiqn-vae only (the VAE learns its variance)")
    train_config = VAETrainConfig(**{**json.loads(args.train_config), "aiqn": aiqn})
    images, _ = load_split(args.data)
    device = resolve_device(args.device)
    log.info("training %s on %s (%d images) on %s", args.variant, args.dataset, len(images), device)
    began = time.time()
    checkpoints = train_vae(config, train_config, images, args.state_dir, device=device,
                            progress=not args.no_progress)
    publish_final(args, checkpoints[train_config.steps], train_config.steps, config, train_config, began, device,
                  variant=args.variant)


def cmd_sample_vae(args) -> None:
    from aiqn.core.device import resolve_device
    from aiqn.core.environment import environment
    from aiqn.core.checkpoint import load_checkpoint
    from aiqn.core.io import file_record, save_npz_atomic, write_json
    from aiqn.methods.aiqn_vae.train import generate_vae

    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.checkpoint, map_location=device)
    if ckpt.get("kind") != "vae":
        raise SystemExit(f"{args.checkpoint} is not a VAE checkpoint (train it with `aiqn train-vae`)")
    if args.latents == "aiqn" and ckpt["aiqn"] is None:
        raise SystemExit(f"{args.checkpoint} has no AIQN (a plain VAE); sample it with --latents prior")
    images = generate_vae(ckpt, args.n, args.seed, use_aiqn=args.latents == "aiqn", device=device,
                          batch_size=args.batch_size)
    save_npz_atomic(args.out, images=images, labels=np.full(args.n, -1))
    write_json(args.out + ".json", {"n": args.n, "seed": args.seed, "batch_size": args.batch_size, "weights": "ema",
                                    "latents": args.latents, "method": LATENTS[args.latents], "step": ckpt["step"],
                                    "checkpoint": file_record(args.checkpoint), "samples": file_record(args.out),
                                    "device": device, "environment": environment(device)})
    log.info("wrote %d samples (%s) to %s", args.n, LATENTS[args.latents], args.out)


def _pairs(items: list[str]) -> dict[str, str]:
    """['NAME=PATH', ...] -> {NAME: PATH} in the given order (names may contain spaces, not '=')."""
    return dict(item.split("=", 1) for item in items)


def cmd_vae_figures(args) -> None:
    import pandas as pd

    from aiqn.data import get_dataset
    from aiqn.report import plot_loss_curves, plot_sample_grids
    from aiqn.core.io import file_record, read_json, write_json

    spec = get_dataset(args.dataset)
    samples, logs = _pairs(args.samples), _pairs(args.train_logs)
    plot_sample_grids(args.real, samples, spec.levels, args.grid_out, n=args.grid_n,
                      title=f"{args.dataset}: real test images, VAE and AIQN-VAE samples (EMA weights)")
    curves, ylabels = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in logs.items():
            train = read_json(Path(path).parent / "config.json")  # written beside each train_log.csv
            kl_weight = train["model"]["kl_weight"]
            curves[f"{name}: VAE loss"] = path
            ylabels[f"{name}: VAE loss"] = f"reconstruction + {kl_weight:g} x KL\n(nats per image)"
            if train["train"]["aiqn"]:  # the AIQN's own loss, as a log with a `loss` column
                quantile = Path(tmp) / f"{len(curves)}.csv"
                frame = pd.read_csv(path)[["step", "quantile_loss"]].rename(columns={"quantile_loss": "loss"})
                frame.to_csv(quantile, index=False)
                curves[f"{name}: AIQN"] = str(quantile)
                ylabels[f"{name}: AIQN"] = (f"Huber quantile loss (kappa {train['train']['kappa']:g}),\n"
                                            f"summed over the {train['model']['latent_dim']} latents")
        plot_loss_curves(curves, args.loss_out, ylabels)
    write_json(args.grid_out + ".json", {"dataset": args.dataset, "real": file_record(args.real), "grid_n": args.grid_n,
                                         "panels": [{"name": name, **file_record(path), "meta": read_json(path + ".json")}
                                                    for name, path in samples.items()],  # left to right
                                         "train_logs": {name: file_record(path) for name, path in logs.items()}})
    log.info("wrote %s and %s", args.grid_out, args.loss_out)


def add_vae_verbs(verb) -> None:
    """Register the VAE verbs with `verb(name, func, help) -> argparse parser` of aiqn.cli."""
    p = verb("train-vae", cmd_train_vae, "train (or resume) the VAE baseline or the AIQN-VAE (appendix)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--data", required=True, help="train.npz of the dataset")
    p.add_argument("--variant", choices=VARIANTS, required=True,
                   help="vae: learned posterior variance, KL weight 1; aiqn-vae: + an AIQN over the latents")
    p.add_argument("--architecture", default="{}", help="JSON: VAEConfig fields (latent_dim, widths, AIQN size)")
    p.add_argument("--train-config", required=True, help="JSON: VAETrainConfig fields (steps, batch_size, lr, ...)")
    p.add_argument("--aiqn-vae-config", default="{}",
                   help='JSON for --variant aiqn-vae: {"posterior_variance": 0.1, "kl_weight": 0.5} (the paper\'s)')
    p.add_argument("--state-dir", required=True, help="resumable working folder (not a rule output)")
    p.add_argument("--out-dir", required=True, help="the final checkpoint, train_log.csv, config.json, train.json")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")

    p = verb("sample-vae", cmd_sample_vae, "decode N latents of a VAE checkpoint (EMA weights) into images")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--latents", choices=sorted(LATENTS), required=True,
                   help="prior: z ~ N(0, I); aiqn: z = AIQN(tau), tau ~ U[0, 1]^d (AIQN-VAE checkpoints)")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=1000, help="latents decoded per pass (same images for any)")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")

    p = verb("vae-figures", cmd_vae_figures, "AIQN-VAE sample grids (Figure 9 analogue) and loss curves")
    p.add_argument("--dataset", required=True)
    p.add_argument("--real", required=True, help="test.npz (the real panel)")
    p.add_argument("--samples", nargs="+", required=True, help="NAME=PATH of each sample panel, in order")
    p.add_argument("--train-logs", nargs="+", required=True, help="NAME=PATH of each train_log.csv")
    p.add_argument("--grid-n", type=int, default=64)
    p.add_argument("--grid-out", required=True)
    p.add_argument("--loss-out", required=True)
