"""Command-line verbs of CQF (Shmelkov et al. 2018, Table 1 ablation; issue 8), declared by
`add_verbs`.

    train-cqf    train (or resume) one variant, gan | vae | cq | cqf, on one dataset
    sample-cqf   N images x = quantize(f^{-1}(g(z))), z ~ N(0, I), from a CQF checkpoint (EMA weights)
    cqf-figures  the sample grid (real | gan | vae | cq | cqf) and the training curves

Scoring goes through the shared `evaluate` verb (same extractor, reference statistics, FID / IS
labels and provenance; `--rule evaluate_cqf`), which adds the bits/dim of a CQF checkpoint's
likelihood variants with `cqf_bits_per_dim` below (its `LIKELIHOOD_METRICS` entry); the table goes through the `table` verb
(`--name cqf_table1`). docs/cqf.md.
"""

from __future__ import annotations

import json
import logging
import time

from aiqn.core.device import resolve_device
from aiqn.core.verbs import Declare, grid_arguments, pairs, run_arguments, sample_arguments
from aiqn.pipeline.verbs import likelihood_metrics

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


@likelihood_metrics("cqf")
def cqf_bits_per_dim(ckpt: dict, args) -> list[dict]:
    """`evaluate`'s entry for CQF checkpoints (`cqf_bits_per_dim_metrics` with evaluate's arguments)."""
    return cqf_bits_per_dim_metrics(ckpt, args.dataset, args.test, args.importance_samples, args.bpd_seed,
                                    device=resolve_device(args.device), batch_size=args.batch_size)


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
    low, high = result["bpd_interval"]
    return [{"metric": "bits/dim", "value": result["bpd"], "low": low, "high": high,
             "interval": "95% t interval over test images", "label": label, "bound": bound_name(importance_samples),
             "importance_samples": importance_samples, "dequantization_seed": seed, "n_images": len(images),
             "nats_per_image": round(result["nll"], 6), **({"terms_nats_per_image": terms} if terms else {})}]


def cmd_train_cqf(args) -> None:
    from aiqn.core.publish import publish_final
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
                  runinfo={"cpu_seconds_this_invocation": round(time.process_time() - cpu, 2)})


def cmd_sample_cqf(args) -> None:
    from aiqn.core.checkpoint import load_checkpoint
    from aiqn.core.publish import write_samples
    from aiqn.methods.cqf.train import generate_cqf

    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.checkpoint, map_location=device)
    if ckpt.get("kind") != "cqf":
        raise SystemExit(f"{args.checkpoint} is not a CQF checkpoint (train it with `aiqn train-cqf`)")
    if args.decoder_noise and ckpt["variant"] == "gan":
        raise SystemExit(f"{args.checkpoint} is the gan variant: it has no decoder noise (drop --decoder-noise)")
    images = generate_cqf(ckpt, args.n, args.seed, use_ema=True, device=device, batch_size=args.batch_size,
                          decoder_noise=args.decoder_noise)
    write_samples(args.out, images, None, args.checkpoint, ckpt["step"], device, n=args.n, seed=args.seed,
                  batch_size=args.batch_size, weights="ema", variant=ckpt["variant"],
                  decoder_noise=args.decoder_noise, method=METHODS[args.decoder_noise])
    log.info("wrote %d samples of %s to %s", args.n, ckpt["variant"], args.out)


def cmd_cqf_figures(args) -> None:
    from aiqn.data import get_dataset
    from aiqn.core.publish import grid_record
    from aiqn.methods.cqf.figures import plot_cqf_curves
    from aiqn.report import plot_sample_grids

    spec = get_dataset(args.dataset)
    samples, logs = pairs(args.samples), pairs(args.train_logs)
    plot_sample_grids(args.real, samples, spec.levels, args.grid_out, n=args.grid_n,
                      title=f"{args.dataset}: real test images and the CQF Table 1 variants, G(z), EMA weights")
    if args.loss_out:
        plot_cqf_curves(logs, args.loss_out)
    grid_record(args.grid_out + ".json", args.dataset, args.real, args.grid_n, samples, logs)
    log.info("wrote %s%s", args.grid_out, f" and {args.loss_out}" if args.loss_out else "")


def add_verbs(verb: Declare) -> None:
    """Declare the CQF verbs."""
    p = verb("train-cqf", cmd_train_cqf, "train (or resume) one CQF Table 1 variant: gan, vae, cq or cqf")
    run_arguments(p, architecture="JSON: CQFConfig fields (latent_dim, widths, flow, ...)",
                  train_config="JSON: CQFTrainConfig fields but the variant (steps, batch_size, lr, d_steps, ...)")
    p.add_argument("--variant", choices=VARIANTS, required=True,
                   help="gan: quality loss only; vae: coverage only; cq: both; cqf: both and the NVP flow")

    p = verb("sample-cqf", cmd_sample_cqf, "N images from a CQF checkpoint (EMA weights)")
    sample_arguments(p)
    p.add_argument("--decoder-noise", action="store_true",
                   help="add the decoder's Gaussian noise in feature space (not for gan; default: G(z))")

    p = verb("cqf-figures", cmd_cqf_figures, "CQF sample grid (real | gan | vae | cq | cqf) and training curves")
    grid_arguments(p)
    p.add_argument("--loss-out", default=None, help="training curves (L_C in bits/dim, discriminator loss)")
