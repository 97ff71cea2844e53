"""Command-line verbs of the AIQN paper's PixelCNN and PixelIQN (Ostrovski et al. 2018).

    train           train (or resume) a PixelCNN / PixelIQN, data-parallel under torchrun
    sample          samples of a checkpoint (EMA weights), cached or naive sampler
    figures         sample grid, IS / FID over training (Figure 4), loss curves
    class-grid      a class-conditional model's samples per class (Figures 7, 11)
    inpaint         completions of test images whose top rows are given (Figures 6, 12)
    density         PixelIQN's quantile density dQ/dtau = 1/p (section 3.2)
    sweep-*         hyperparameter sweeps with successive halving (docs/sweeps.md)

Scoring is the shared `evaluate` verb; `pixelcnn_bits_per_dim` below is its likelihood entry for
this method's checkpoints.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from aiqn.core.device import resolve_device
from aiqn.core.environment import environment
from aiqn.core.runinfo import read_runinfo, write_runinfo
from aiqn.core.verbs import Declare, run_arguments
from aiqn.methods.pixeliqn.kind import KIND
from aiqn.pipeline.verbs import extractor_arguments, extractor_for, likelihood_metrics

log = logging.getLogger("aiqn")


@likelihood_metrics(KIND)
def pixelcnn_bits_per_dim(ckpt: dict, args) -> list[dict]:
    """`evaluate`'s bits/dim entry of a categorical PixelCNN checkpoint on the test split (exact; given
    each image's class for a class-conditional model); [] for the quantile head (no likelihood)."""
    from aiqn.data import load_split
    from aiqn.nets import model_from_checkpoint
    from aiqn.core.intervals import mean_entry
    from aiqn.nets.likelihood import bits_per_dim_per_image

    if ckpt["config"].get("head") != "categorical":
        return []
    test_images, test_labels = load_split(args.test)
    device = resolve_device(args.device)
    model = model_from_checkpoint(ckpt, use_ema=True, device=device)
    given = ", given the class label" if model.config.num_classes else ""  # -log p(x | y) for PixelCNN*
    per_image = bits_per_dim_per_image(model, test_images, device=device, labels=test_labels)
    return [{"metric": "bits/dim", **mean_entry(per_image), "interval": "95% t interval over test images",
             "label": f"bits/dim ({args.dataset} test split{given}, {ckpt['config']['levels']} levels, EMA weights)"}]


def cmd_train(args) -> None:
    from aiqn.data import get_dataset, load_split
    from aiqn.core.distributed import init_from_env, is_main, shutdown
    from aiqn.nets import PixelCNNConfig
    from aiqn.core.publish import publish
    from aiqn.methods.pixeliqn.train import TrainConfig, train

    spec = get_dataset(args.dataset)
    model_cfg = json.loads(args.model_config)
    if args.class_conditional:  # the label as global conditioning, over the dataset's classes
        if spec.num_classes < 2:
            raise SystemExit(f"the model is class-conditional but {args.dataset} has no class labels "
                             f"(num_classes={spec.num_classes}); drop class_conditional or use a labelled dataset")
        model_cfg["num_classes"] = spec.num_classes
    model_config = PixelCNNConfig(channels=spec.channels, height=spec.height, width=spec.width, levels=spec.levels,
                                  **model_cfg)
    if model_config.num_classes and model_config.num_classes != spec.num_classes:
        raise SystemExit(f"num_classes={model_config.num_classes} but {args.dataset} has {spec.num_classes} classes")
    train_fields = json.loads(args.train_config)
    if args.selected:  # the configuration a sweep chose (optimizer, lr, schedule, kappa) over params
        from aiqn.methods.pixeliqn.sweep import train_overrides
        from aiqn.core.io import read_json

        chosen = read_json(args.selected)
        train_fields.update(train_overrides(chosen["config"], train_fields["steps"]))
        log.info("sweep choice %s from %s: %s", chosen["chosen"], args.selected, chosen["config"])
    train_config = TrainConfig(**train_fields)
    images, labels = load_split(args.data)
    # under torchrun (models.<name>.gpus > 1): one process per GPU, DistributedDataParallel
    info = init_from_env(resolve_device(args.device))
    try:
        if is_main(info):
            log.info("training %s on %s (%d images) on %s x %d", model_config.head, args.dataset, len(images),
                     info.device, info.world_size)
        checkpoints = train(model_config, train_config, images, args.state_dir, labels=labels, device=info.device,
                            progress=not args.no_progress, dist=info)
        if is_main(info):  # only rank 0 publishes
            publish(args.state_dir, args.out_dir, checkpoints)
    finally:
        shutdown(info)


def cmd_sample(args) -> None:
    import torch

    from aiqn.nets.sampling import generate
    from aiqn.core.checkpoint import load_checkpoint
    from aiqn.nets import model_from_checkpoint
    from aiqn.core.io import file_record
    from aiqn.core.publish import write_samples

    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.checkpoint, map_location=device)
    model = model_from_checkpoint(ckpt, use_ema=True, device=device)
    class_labels = None
    if model.config.num_classes:  # the paper draws the label uniformly for evaluation
        generator = torch.Generator().manual_seed(args.seed)
        class_labels = torch.randint(model.config.num_classes, (args.n,), generator=generator)
    shard_key = {"checkpoint_sha256": file_record(args.checkpoint)["sha256"], "n": args.n}
    images = generate(model, args.n, args.batch_size, args.seed, class_labels=class_labels, method=args.method,
                      shard_dir=args.shard_dir, shard_key=shard_key, progress=not args.no_progress)
    write_samples(args.out, images, class_labels.numpy() if class_labels is not None else None, args.checkpoint,
                  ckpt["step"], device, n=args.n, seed=args.seed, batch_size=args.batch_size, weights="ema",
                  method=args.method)
    log.info("wrote %d samples to %s", args.n, args.out)


def cmd_figures(args) -> None:
    from aiqn.data import get_dataset
    from aiqn.report import plot_loss_curves, plot_sample_grids, plot_training_curves

    spec = get_dataset(args.dataset)
    samples = dict(pair.split("=", 1) for pair in args.samples)
    logs = dict(pair.split("=", 1) for pair in args.train_logs)
    plot_sample_grids(args.real, samples, spec.levels, args.grid_out, n=args.grid_n,
                      title=f"{args.dataset}: real test images and samples at the final checkpoint (EMA weights)")
    variants = dict(pair.split("=", 1) for pair in args.variants)  # variant -> base: one colour
    configs = {model: json.loads((Path(path).parent / "config.json").read_text())["model"]
               for model, path in logs.items()}  # config.json sits beside each train_log.csv
    conditional = {model for model, config in configs.items() if config.get("num_classes")}
    plot_training_curves(args.metrics, args.curves_out, args.dataset, base_of=variants, dotted=conditional)
    loss_names = {"categorical": "cross-entropy (nats per pixel-channel)",
                  "quantile": "Huber quantile loss per pixel-channel"}
    plot_loss_curves(logs, args.loss_out, {model: loss_names[config["head"]] for model, config in configs.items()})


def cmd_class_grid(args) -> None:
    from aiqn.report import plot_class_grid
    from aiqn.core.io import read_json

    from aiqn.core.publish import read_samples

    images, labels = read_samples(args.samples)
    meta = read_json(args.dataset_meta)
    names = meta.get("provenance", {}).get("classes")
    step = read_json(args.samples + ".json").get("step")
    plot_class_grid(images, labels, meta["levels"], args.out, per_class=args.per_class, class_names=names,
                    max_classes=args.max_classes,
                    title=f"{args.dataset}, {args.model} (step {step}, EMA weights)\nsamples per class label")
    log.info("wrote %s", args.out)


def cmd_inpaint(args) -> None:
    import torch

    from aiqn.data import load_split
    from aiqn.methods.pixeliqn.inpainting import inpaint, masked_input, top_rows_mask
    from aiqn.report import plot_inpainting
    from aiqn.core.checkpoint import load_checkpoint
    from aiqn.nets import model_from_checkpoint
    from aiqn.core.io import file_record, save_npz_atomic, write_json

    device = resolve_device(args.device)
    test_images, test_labels = load_split(args.test)
    index = np.sort(np.random.default_rng(args.seed).choice(len(test_images), size=args.n_images, replace=False))
    originals = test_images[index]
    panels, record = {}, {"test": file_record(args.test), "index": index.tolist(), "seed": args.seed,
                          "known_rows": args.known_rows, "completions": args.completions, "models": {}}
    for pair in args.checkpoints:
        name, path = pair.split("=", 1)
        ckpt = load_checkpoint(path, map_location=device)
        model = model_from_checkpoint(ckpt, use_ema=True, device=device)
        mask = top_rows_mask(originals.shape[1:], args.known_rows)
        labels = torch.from_numpy(test_labels[index]) if model.config.num_classes else None  # the true classes
        completions = inpaint(model, originals, mask, args.completions, args.seed, args.method, labels)
        if not np.array_equal(completions[:, :, mask.numpy()], np.repeat(originals[:, None], args.completions, 1)[
                :, :, mask.numpy()]):
            raise RuntimeError(f"{name}: a known pixel changed during inpainting")
        panels[name] = (masked_input(originals, mask, model.config.levels), completions, originals)
        record["models"][name] = {"checkpoint": file_record(path), "step": ckpt["step"], "weights": "ema"}
        levels = model.config.levels
    save_npz_atomic(args.out_npz, originals=originals, **{f"{n}_completions": c for n, (_, c, _) in panels.items()})
    plot_inpainting(panels, levels, args.out_png,
                    title=f"{args.dataset}: inpainting, top {args.known_rows:.0%} of the rows given (EMA weights)")
    write_json(args.out_npz + ".json", record)


def cmd_density(args) -> None:
    from aiqn.methods.pixeliqn.density import density_map_figure, sample_with_density
    from aiqn.core.checkpoint import load_checkpoint
    from aiqn.nets import model_from_checkpoint
    from aiqn.core.io import file_record, save_npz_atomic, write_json

    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.checkpoint, map_location=device)
    if ckpt["config"]["head"] != "quantile":
        raise SystemExit(f"{args.checkpoint} is a {ckpt['config']['head']} model; the quantile density needs PixelIQN")
    model = model_from_checkpoint(ckpt, use_ema=True, device=device)
    # the same seed and batch size as `aiqn sample` give the same images
    result = sample_with_density(model, args.n, args.seed, batch_size=args.batch_size, method=args.method,
                                 progress=False)
    save_npz_atomic(args.out_npz, **result.arrays())
    density_map_figure(result.images[: args.figure_n], result.density[: args.figure_n], args.out_png,
                       title=f"PixelIQN's implied log-density per pixel (step {ckpt['step']}, EMA weights)",
                       levels=model.config.levels)
    summary = {**result.summary(), "n": args.n, "seed": args.seed, "batch_size": args.batch_size,
               "method": args.method, "step": ckpt["step"], "checkpoint": file_record(args.checkpoint),
               "samples": file_record(args.out_npz)}
    write_json(args.out_npz + ".json", summary)
    log.info("density of %d samples: %s", args.n, {k: v for k, v in summary.items() if isinstance(v, float)})


def cmd_sweep_configs(args) -> None:
    from aiqn.methods.pixeliqn.sweep import draw_configs
    from aiqn.methods.pixeliqn.sweep_trial import write_configs

    rows = draw_configs(json.loads(args.space), args.n, args.seed, args.model)
    write_configs(args.out, rows)
    log.info("%d configurations of %s drawn (seed %d) -> %s", len(rows), args.model, args.seed, args.out)


def cmd_sweep_trial(args) -> None:
    from aiqn.data import get_dataset, load_split
    from aiqn.metrics.scoring import score_images
    from aiqn.nets import PixelCNNConfig
    from aiqn.methods.pixeliqn.sweep_trial import config_row, run_trial
    from aiqn.core.io import file_record, write_json

    spec = get_dataset(args.dataset)
    model_config = PixelCNNConfig(channels=spec.channels, height=spec.height, width=spec.width, levels=spec.levels,
                                  **json.loads(args.model_config))
    images, labels = load_split(args.data)
    extractor, name = extractor_for(args)
    row = config_row(args.configs, args.trial)
    budgets = [int(b) for b in args.budgets.split(",")]
    began = time.time()
    record = run_trial(
        row=row, model_config=model_config, base_train=json.loads(args.base_train), sweep_steps=args.steps,
        budgets=budgets, rung=args.rung, images=images, labels=labels, state_dir=args.state_dir,
        device=resolve_device(args.device), n_samples=args.n_samples, sample_batch=args.sample_batch,
        sample_seed=args.sample_seed, metric=args.metric,
        score=lambda samples: score_images(samples, extractor, args.reference, args.splits, name, spec.levels))
    record.update(dataset=args.dataset, model=args.model, attempt=args.attempt, configs=file_record(args.configs),
                  data=file_record(args.data), environment=environment(resolve_device(args.device)))
    write_json(args.out, record)
    write_runinfo(args.out, seconds=round(time.time() - began, 2))
    log.info("trial %s rung %d: %s %s (%s)", args.trial, args.rung, args.metric, record["value"], record["status"])


def cmd_sweep_rung(args) -> None:
    from aiqn.methods.pixeliqn.sweep_trial import rung_decision
    from aiqn.core.io import read_json, write_json

    decision = rung_decision([read_json(p) for p in args.results], args.metric, args.keep, args.rung, args.budget)
    write_json(args.out, decision)
    log.info("rung %d: promoted %s", args.rung, ", ".join(decision["promoted"]) or "none")


def cmd_sweep_select(args) -> None:
    from aiqn.methods.pixeliqn.sweep_trial import selection
    from aiqn.core.io import file_record, read_json, write_json

    chosen = selection([read_json(p) for p in args.decisions], [read_json(p) for p in args.results], args.metric)
    chosen.update(eta=args.eta, mode="exhaustive" if len(chosen["budgets"]) == 1 else "successive halving",
                  results=[file_record(p) for p in args.results])
    write_json(args.out, chosen)
    write_runinfo(args.out, compute_seconds=round(sum(read_runinfo(p).get("seconds", 0.0) for p in args.results), 2))
    log.info("chosen %s (%s %.4g) among %d configurations", chosen["chosen"], args.metric, chosen["value"],
             chosen["n_trials"])


def cmd_sweep_report(args) -> None:
    from aiqn.report.sweeps import plot_sweep, sweep_table, write_sweep_table
    from aiqn.core.io import read_json

    title = f"{args.dataset} / {args.model}: hyperparameter sweep"
    frame = sweep_table(args.results, args.selected)
    write_sweep_table(frame, args.csv, args.md, title, read_json(args.selected))
    plot_sweep(frame, args.figure, title)


def cmd_sweep_shared(args) -> None:
    from aiqn.methods.pixeliqn.sweep import shared_dimensions
    from aiqn.report.sweeps import shared_draws_table, sweep_table, write_shared_draws

    spaces = json.loads(args.spaces)
    selected = {Path(path).parent.name: path for path in args.selected}  # results/sweeps/<dataset>/<model>/selected.json
    results = {model: [] for model in selected}
    for path in args.results:  # results/sweeps/<dataset>/<model>/rung<r>/<trial>.json
        results[Path(path).parts[-3]].append(path)
    tables = {model: sweep_table(results[model], path) for model, path in selected.items()}
    shared, differ = shared_dimensions({model: spaces[model] for model in selected})
    frame = shared_draws_table(tables, spaces, shared)
    write_shared_draws(frame, shared, args.csv, args.md, args.dataset, differ)
    log.info("%s: %d trials of %s side by side; shared draws: %s", args.dataset, len(frame), ", ".join(selected),
             ", ".join(shared))


def add_verbs(verb: Declare) -> None:
    """Declare the PixelCNN / PixelIQN verbs."""
    p = verb("train", cmd_train, "train (or resume) a PixelCNN / PixelIQN")
    run_arguments(p, train_config="JSON: optimizer, schedule, steps, ...")
    p.add_argument("--model-config", required=True, help="JSON: head and architecture")
    p.add_argument("--selected", default=None, help="a sweep's selected.json: its configuration overrides")
    p.add_argument("--class-conditional", action="store_true",
                   help="condition on the class label (num_classes = the dataset's)")

    p = verb("sample", cmd_sample, "draw samples from a checkpoint (EMA weights)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", choices=["cached", "naive"], default="cached",
                   help="cached (fast, default) or naive (reference); same samples")
    p.add_argument("--shard-dir", default=None, help="resumable per-batch shards (reused when they match)")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")

    p = verb("figures", cmd_figures, "sample grid, IS/FID over training, loss curves")
    p.add_argument("--dataset", required=True)
    p.add_argument("--real", required=True)
    p.add_argument("--samples", nargs="+", required=True, help="MODEL=PATH of the final samples")
    p.add_argument("--train-logs", nargs="+", required=True, help="MODEL=PATH of train_log.csv")
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--grid-n", type=int, default=64)
    p.add_argument("--grid-out", required=True)
    p.add_argument("--curves-out", required=True)
    p.add_argument("--loss-out", required=True)
    p.add_argument("--variants", nargs="*", default=[], help="VARIANT=BASE: a variant is drawn in its base's colour")

    p = verb("class-grid", cmd_class_grid, "a class-conditional model's samples, one row per class (Figures 7, 11)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--samples", required=True, help="samples .npz with the labels they were drawn with")
    p.add_argument("--dataset-meta", required=True, help="the prepared dataset's meta.json (levels, class names)")
    p.add_argument("--per-class", type=int, default=10)
    p.add_argument("--max-classes", type=int, default=10)
    p.add_argument("--out", required=True)

    p = verb("inpaint", cmd_inpaint, "complete test images whose top rows are given (Figures 6 and 12)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--checkpoints", nargs="+", required=True, help="MODEL=CHECKPOINT of each model shown")
    p.add_argument("--n-images", type=int, default=8)
    p.add_argument("--completions", type=int, default=5)
    p.add_argument("--known-rows", type=float, default=0.5, help="fraction of rows given, from the top")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", choices=["cached", "naive"], default="cached")
    p.add_argument("--device", default="auto")
    p.add_argument("--out-npz", required=True)
    p.add_argument("--out-png", required=True)

    p = verb("density", cmd_density, "samples with PixelIQN's quantile density dQ/dtau = 1/p (section 3.2)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--method", choices=["cached", "naive"], default="cached")
    p.add_argument("--figure-n", type=int, default=8, help="samples shown in the figure")
    p.add_argument("--device", default="auto")
    p.add_argument("--out-npz", required=True)
    p.add_argument("--out-png", required=True)

    p = verb("sweep-configs", cmd_sweep_configs, "draw N configurations from a model's search space")
    p.add_argument("--model", required=True)
    p.add_argument("--space", required=True, help="JSON: the model's section of sweep.spaces")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)

    p = verb("sweep-trial", cmd_sweep_trial, "train one drawn configuration to a rung's budget and score it")
    extractor_arguments(p)
    for name in ("dataset", "model", "trial", "configs", "data", "model-config", "base-train", "reference",
                 "state-dir", "out"):
        p.add_argument(f"--{name}", required=True)
    for name in ("rung", "steps", "n-samples"):
        p.add_argument(f"--{name}", type=int, required=True)
    p.add_argument("--budgets", required=True, help="steps at the end of each rung, comma-separated")
    p.add_argument("--attempt", type=int, default=1)
    p.add_argument("--sample-batch", type=int, default=500)
    p.add_argument("--sample-seed", type=int, default=1)
    p.add_argument("--metric", default="FID", choices=["FID", "IS"])
    p.add_argument("--splits", type=int, default=10)

    p = verb("sweep-rung", cmd_sweep_rung, "rank a rung's trials and promote the best 1/eta")
    p.add_argument("--results", nargs="+", required=True)
    p.add_argument("--metric", default="FID")
    p.add_argument("--keep", type=int, required=True)
    p.add_argument("--rung", type=int, required=True)
    p.add_argument("--budget", type=int, required=True)
    p.add_argument("--out", required=True)

    p = verb("sweep-select", cmd_sweep_select, "the chosen configuration of a sweep")
    p.add_argument("--decisions", nargs="+", required=True)
    p.add_argument("--results", nargs="+", required=True)
    p.add_argument("--metric", default="FID")
    p.add_argument("--eta", type=int, default=1)
    p.add_argument("--out", required=True)

    p = verb("sweep-shared", cmd_sweep_shared, "the sweeps of one dataset side by side, trial by trial")
    p.add_argument("--dataset", required=True)
    p.add_argument("--spaces", required=True, help="JSON: sweep.spaces")
    p.add_argument("--selected", nargs="+", required=True, help="each model's results/sweeps/<dataset>/<model>/selected.json")
    p.add_argument("--results", nargs="+", required=True, help="every trial result of those models")
    for name in ("csv", "md"):
        p.add_argument(f"--{name}", required=True)

    p = verb("sweep-report", cmd_sweep_report, "table and figure of every trial of a sweep")
    for name in ("dataset", "model", "selected", "csv", "md", "figure"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--results", nargs="+", required=True)
