"""Command-line verbs of AGAVE (Lucas & Verbeek 2018; issue 8), declared by `add_verbs`.

    train-agave     train (or resume) an AGAVE at one lambda; with --init-from, continue a trained
                    one (the Figure 7 ablation: --train-config '{"use_aux": false, ...}')
    evaluate-agave  bits/dim on the test split of an AGAVE checkpoint (eq. 7 bound and, with K > 0,
                    the importance-sampled bound) or of a categorical PixelCNN checkpoint (exact),
                    as a metrics JSON with a complete provenance record
    agave-figures   Figure 4 (bits/dim split into KL and reconstruction against lambda), Figure 5
                    (f(z) beside PixelCNN samples conditioned on it) and Figure 7 (KL against step,
                    with and without the auxiliary term)

The table goes through the `table` verb (`--name agave_table1`); docs/agave.md.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from aiqn.core.runinfo import write_runinfo
from aiqn.core.verbs import Declare, pairs, run_arguments, wildcards

log = logging.getLogger("aiqn")


def cmd_train_agave(args) -> None:
    from aiqn.methods.agave.train import AgaveTrainConfig, train_agave
    from aiqn.core.publish import publish_final
    from aiqn.core.device import resolve_device
    from aiqn.data import get_dataset, load_split
    from aiqn.methods.agave.model import AgaveConfig
    from aiqn.core.checkpoint import load_checkpoint
    from aiqn.core.io import file_record

    spec = get_dataset(args.dataset)
    config = AgaveConfig(channels=spec.channels, height=spec.height, width=spec.width, levels=spec.levels,
                         **json.loads(args.architecture))
    train_config = AgaveTrainConfig(**json.loads(args.train_config))
    images, _ = load_split(args.data)
    device = resolve_device(args.device)
    init = None
    if args.init_from:
        init = load_checkpoint(args.init_from, map_location=device)
    log.info("training AGAVE (lambda %g, auxiliary term %s) on %s (%d images) on %s%s", train_config.kl_weight,
             "on" if train_config.use_aux else "off", args.dataset, len(images), device,
             f", from {args.init_from}" if args.init_from else "")
    began = time.time()
    checkpoints = train_agave(config, train_config, images, args.state_dir, device=device,
                              progress=not args.no_progress, init_from=init)
    init_record = ({**file_record(args.init_from), "step": init["step"], "digest": init["digest"]}
                   if init is not None else None)
    publish_final(args, checkpoints[train_config.steps], train_config.steps, config, train_config, began, device,
                  kl_weight=train_config.kl_weight, use_aux=train_config.use_aux, init_from=init_record)


IMAGES_INTERVAL = "95% t interval over test images"


def _interval(bound: dict) -> dict:
    """low / high of a bound's `bpd_interval` (over test images), where it has one."""
    if "bpd_interval" not in bound:
        return {}
    low, high = bound["bpd_interval"]
    return {"low": low, "high": high, "interval": IMAGES_INTERVAL}


def agave_metric_entries(result: dict, dataset: str) -> list[dict]:
    """The metrics list of an AGAVE checkpoint's evaluation (`evaluate_agave`'s dict): the eq. 7 bound,
    the importance-sampled bound (when computed) and the bound's KL term, each labelled with the bound,
    K, the dataset and the split."""
    elbo = result["elbo"]
    weights = "EMA weights" if result["weights"] == "ema" else "raw weights"
    z = f"{result['elbo_samples']} z per image"
    entries = [
        {"metric": "bits/dim", "value": elbo["bpd"], **_interval(elbo),
         "label": f"bits/dim, eq. 7 bound ({dataset} test split, {z}, {weights})"},
    ]
    if "importance" in result:
        k = result["importance"]["k"]
        entries.append({"metric": "bits/dim", "value": result["importance"]["bpd"], **_interval(result["importance"]),
                        "label": f"bits/dim, importance-sampled bound ({dataset} test split, K={k}, {weights})"})
    entries.append({"metric": "KL", "value": elbo["kl"],
                    "label": f"KL term of the eq. 7 bound (bits/dim, {dataset} test split, {weights})"})
    return entries


def cmd_evaluate_agave(args) -> None:
    from aiqn.methods.agave.bounds import evaluate_agave
    from aiqn.core.device import resolve_device
    from aiqn.data import load_split
    from aiqn.core.intervals import mean_entry
    from aiqn.nets.likelihood import bits_per_dim_per_image
    from aiqn.report.provenance import dataset_record, git_state, not_applicable
    from aiqn.core.environment import environment
    from aiqn.core.checkpoint import load_checkpoint
    from aiqn.nets import model_from_checkpoint
    from aiqn.core.io import file_record, write_json

    device = resolve_device(args.device)
    images, labels = load_split(args.test)
    if args.n_test:
        images, labels = images[:args.n_test], labels[:args.n_test]
    ckpt = load_checkpoint(args.checkpoint, map_location=device)
    began = time.time()
    if ckpt.get("kind") == "agave":
        result = evaluate_agave(ckpt, images, k=args.k, seed=args.seed, elbo_samples=args.elbo_samples,
                                batch_size=args.batch_size, k_batch=args.k_batch, device=device)
        metrics = agave_metric_entries(result, args.dataset)
        evaluation = {"bounds": result, "k": args.k, "elbo_samples": args.elbo_samples, "seed": args.seed}
    elif ckpt["config"].get("head") == "categorical" and not ckpt["config"].get("num_classes"):
        model = model_from_checkpoint(ckpt, use_ema=True, device=device)
        entry = mean_entry(bits_per_dim_per_image(model, images, batch_size=args.batch_size, device=device))
        metrics = [{"metric": "bits/dim", **entry, "interval": IMAGES_INTERVAL,
                    "label": f"bits/dim, exact ({args.dataset} test split, EMA weights)"}]
        result = {"bpd": entry["value"], "bpd_interval": [entry["low"], entry["high"]]}
        evaluation = {"exact": result}
    else:
        raise SystemExit(f"{args.checkpoint} is neither an AGAVE nor an unconditional categorical PixelCNN checkpoint")
    seconds = round(time.time() - began, 2)
    test = {**file_record(args.test), "n": int(len(images))}
    record = {
        "dataset": args.dataset, "model": args.model, "step": ckpt["step"], "final": True,
        "seed": ckpt["train_config"].get("seed"),  # the training seed (run.seeds), as the evaluate verb writes it
        "n_samples": None, "extractor": None, "metrics": metrics,
        "evaluation": {**evaluation, "test": test},
        "provenance": {
            "checkpoint": {**file_record(args.checkpoint), "step": ckpt["step"], "weights": "ema",
                           **({"init": ckpt.get("init")} if ckpt.get("init") else {})},
            "samples": not_applicable(f"bits/dim of the {test['n']} test images: no samples are drawn"),
            "reference": not_applicable("bits/dim: no feature statistics"),
            "test_images": test,
            "dataset": dataset_record(args.dataset_meta),
            "config": {"model": ckpt["config"], "train": ckpt["train_config"]},
            "rule": {"name": args.rule, "wildcards": wildcards(args.wildcards)},
            "code": git_state(),
            "environment": environment(device),
        },
    }
    write_json(args.out, record)
    write_runinfo(args.out, seconds=seconds)
    log.info("%s: %s (%.1f s)", args.model, "; ".join(f"{m['label']} = {m['value']:.4f}" for m in metrics), seconds)


def cmd_agave_figures(args) -> None:
    from aiqn.methods.agave.sampling import generate_agave
    from aiqn.core.device import resolve_device
    from aiqn.data import get_dataset
    from aiqn.methods.agave.figures import plot_conditional_samples, plot_kl_ablation, plot_lambda_sweep
    from aiqn.core.environment import environment
    from aiqn.core.checkpoint import load_checkpoint
    from aiqn.core.io import file_record, read_json, save_npz_atomic, write_json

    spec = get_dataset(args.dataset)
    device = resolve_device(args.device)
    # Figure 4: one metrics file per lambda
    metrics = {float(lam): read_json(path) for lam, path in pairs(args.metrics).items()}
    plot_lambda_sweep(metrics, args.lambda_out, args.dataset)
    # Figure 5: f(z) of z ~ N(0, I) beside PixelCNN samples conditioned on it
    ckpt = load_checkpoint(args.checkpoint, map_location=device)
    draws = generate_agave(ckpt, args.n_latents, args.seed, samples_per_latent=args.per_latent, method=args.method,
                           device=device)
    save_npz_atomic(args.samples_out, **draws)
    lam = ckpt["train_config"]["kl_weight"]
    plot_conditional_samples(draws["aux_images"], draws["images"], spec.levels, args.samples_figure,
                             title=f"{args.dataset}: AGAVE (lambda={lam:g})\nf(z) of z ~ N(0, I) | "
                                   f"{args.per_latent} PixelCNN samples given f(z)")
    write_json(args.samples_figure + ".json", {
        "dataset": args.dataset, "checkpoint": {**file_record(args.checkpoint), "step": ckpt["step"]},
        "kl_weight": lam, "n_latents": args.n_latents, "per_latent": args.per_latent, "seed": args.seed,
        "method": args.method, "weights": "ema", "samples": file_record(args.samples_out),
        "lambda_figure": {str(k): v["provenance"]["checkpoint"]["path"] for k, v in metrics.items()},
        "device": device, "environment": environment(device)})
    # Figure 7: KL per step, with the auxiliary term, then without it
    phases = [read_json(Path(path).parent / "config.json")["train"] for path in (args.phase1_log, args.phase2_log)]
    plot_kl_ablation(args.phase1_log, args.phase2_log, args.ablation_out, args.dataset,
                     kl_weight=phases[0]["kl_weight"], continuation_kl_weight=phases[1]["kl_weight"],
                     dims=spec.channels * spec.height * spec.width)
    log.info("wrote %s, %s, %s", args.lambda_out, args.samples_figure, args.ablation_out)


def add_verbs(verb: Declare) -> None:
    """Declare the AGAVE verbs."""
    p = verb("train-agave", cmd_train_agave, "train (or resume) an AGAVE (Lucas & Verbeek 2018) at one lambda")
    run_arguments(p, architecture="JSON: AgaveConfig fields (aux, latent_dim, widths, PixelCNN)",
                  train_config="JSON: AgaveTrainConfig fields (steps, batch_size, optimizer, lr, kl_weight, use_aux, ...)")
    p.add_argument("--init-from", default=None,
                   help="an AGAVE checkpoint of the same architecture to continue (Figure 7 ablation)")

    p = verb("evaluate-agave", cmd_evaluate_agave,
             "bits/dim on the test split: AGAVE bounds (eq. 7, importance-sampled) or a PixelCNN's exact value")
    p.add_argument("--dataset", required=True)
    p.add_argument("--model", required=True, help="the row name in the table")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--test", required=True, help="test.npz")
    p.add_argument("--dataset-meta", required=True, help="the prepared dataset's meta.json")
    p.add_argument("--k", type=int, default=0, help="samples of the importance-sampled bound (paper: 150); 0: skip")
    p.add_argument("--elbo-samples", type=int, default=1, help="z draws per image of the eq. 7 bound")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-test", type=int, default=0, help="first N test images only (0: all)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--k-batch", type=int, default=50, help="importance samples per pass (memory, not the draws)")
    p.add_argument("--rule", default="evaluate_agave", help="the calling rule, for the provenance record")
    p.add_argument("--wildcards", default="", help="the rule's wildcards, name=value,...")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")

    p = verb("agave-figures", cmd_agave_figures, "AGAVE Figures 4 (lambda), 5 (samples given f(z)), 7 (ablation)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--metrics", nargs="+", required=True, help="LAMBDA=PATH of each lambda's metrics JSON")
    p.add_argument("--checkpoint", required=True, help="the AGAVE checkpoint of Figure 5")
    p.add_argument("--n-latents", type=int, default=8)
    p.add_argument("--per-latent", type=int, default=6)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--method", choices=["cached", "naive"], default="cached")
    p.add_argument("--device", default="auto")
    p.add_argument("--samples-out", required=True, help="npz of Figure 5's draws (latents, f(z), samples)")
    p.add_argument("--phase1-log", required=True, help="train_log.csv of the model trained with the auxiliary term")
    p.add_argument("--phase2-log", required=True, help="train_log.csv of its continuation without it")
    p.add_argument("--lambda-out", required=True)
    p.add_argument("--samples-figure", required=True)
    p.add_argument("--ablation-out", required=True)
