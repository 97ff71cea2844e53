"""Command-line verbs of the AIQN-VAE (appendix, Figure 9), declared by `add_verbs`.

    train-vae    train (or resume) the VAE baseline or the AIQN-VAE on one dataset
    sample-vae   N images from a VAE checkpoint: latents from the N(0, I) prior or from the AIQN
    vae-figures  sample grids (real | VAE | AIQN-VAE | AIQN-VAE decoder with the prior) and losses

Scoring goes through the shared `evaluate` verb (same extractor, reference statistics, labels
and provenance; `--rule evaluate_vae`), the table through the `table` verb (`--name aiqn_vae`).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

from aiqn.core.verbs import Declare, grid_arguments, pairs, run_arguments, sample_arguments

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
    from aiqn.core.checkpoint import load_checkpoint
    from aiqn.core.device import resolve_device
    from aiqn.core.publish import write_samples
    from aiqn.methods.aiqn_vae.train import generate_vae

    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.checkpoint, map_location=device)
    if ckpt.get("kind") != "vae":
        raise SystemExit(f"{args.checkpoint} is not a VAE checkpoint (train it with `aiqn train-vae`)")
    if args.latents == "aiqn" and ckpt["aiqn"] is None:
        raise SystemExit(f"{args.checkpoint} has no AIQN (a plain VAE); sample it with --latents prior")
    images = generate_vae(ckpt, args.n, args.seed, use_aiqn=args.latents == "aiqn", device=device,
                          batch_size=args.batch_size)
    write_samples(args.out, images, None, args.checkpoint, ckpt["step"], device, n=args.n, seed=args.seed,
                  batch_size=args.batch_size, weights="ema", latents=args.latents, method=LATENTS[args.latents])
    log.info("wrote %d samples (%s) to %s", args.n, LATENTS[args.latents], args.out)


def cmd_vae_figures(args) -> None:
    from aiqn.data import get_dataset
    from aiqn.report import plot_loss_curves, plot_sample_grids
    from aiqn.core.io import read_csv, read_json
    from aiqn.core.publish import grid_record

    spec = get_dataset(args.dataset)
    samples, logs = pairs(args.samples), pairs(args.train_logs)
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
                frame = read_csv(path, "a training log")[["step", "quantile_loss"]].rename(columns={"quantile_loss": "loss"})
                frame.to_csv(quantile, index=False)
                curves[f"{name}: AIQN"] = str(quantile)
                ylabels[f"{name}: AIQN"] = (f"Huber quantile loss (kappa {train['train']['kappa']:g}),\n"
                                            f"summed over the {train['model']['latent_dim']} latents")
        plot_loss_curves(curves, args.loss_out, ylabels)
    grid_record(args.grid_out + ".json", args.dataset, args.real, args.grid_n, samples, logs)
    log.info("wrote %s and %s", args.grid_out, args.loss_out)


def add_verbs(verb: Declare) -> None:
    """Declare the AIQN-VAE's verbs."""
    p = verb("train-vae", cmd_train_vae, "train (or resume) the VAE baseline or the AIQN-VAE (appendix)")
    run_arguments(p, architecture="JSON: VAEConfig fields (latent_dim, widths, AIQN size)",
                  train_config="JSON: VAETrainConfig fields (steps, batch_size, lr, ...)")
    p.add_argument("--variant", choices=VARIANTS, required=True,
                   help="vae: learned posterior variance, KL weight 1; aiqn-vae: + an AIQN over the latents")
    p.add_argument("--aiqn-vae-config", default="{}",
                   help='JSON for --variant aiqn-vae: {"posterior_variance": 0.1, "kl_weight": 0.5} (the paper\'s)')

    p = verb("sample-vae", cmd_sample_vae, "decode N latents of a VAE checkpoint (EMA weights) into images")
    sample_arguments(p)
    p.add_argument("--latents", choices=sorted(LATENTS), required=True,
                   help="prior: z ~ N(0, I); aiqn: z = AIQN(tau), tau ~ U[0, 1]^d (AIQN-VAE checkpoints)")

    p = verb("vae-figures", cmd_vae_figures, "AIQN-VAE sample grids (Figure 9 analogue) and loss curves")
    grid_arguments(p)
    p.add_argument("--loss-out", required=True)
