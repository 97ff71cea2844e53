"""`python -m aiqn VERB`: the commands every Snakemake rule calls (and a user can type).

Each verb parses its arguments, then calls one pure function of the package. Configs arrive as
JSON strings (Snakemake passes the exact slice of params.yaml a stage reads, so changing a
sampling parameter does not retrain).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from aiqn.core.environment import environment

log = logging.getLogger("aiqn")


def resolve_device(name: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"device {name!r} requested in params.yaml but no CUDA device is visible; use 'auto' or 'cpu'")
    return name


# ---------------------------------------------------------------------------------------- verbs


def cmd_prepare(args) -> None:
    import aiqn.data  # noqa: F401  (registers datasets)
    from aiqn.data.prepare import prepare_dataset

    meta = prepare_dataset(args.dataset, args.raw_dir, args.out_dir, json.loads(args.options))
    for split, info in meta["splits"].items():
        log.info("%s/%s: %d images -> %s (sha256 %s)", args.dataset, split, info["n"], info["path"], info["sha256"])


def cmd_train_classifier(args) -> None:
    from aiqn.data import get_dataset, load_split
    from aiqn.metrics import ClassifierConfig, save_classifier, train_classifier
    from aiqn.core.io import file_record, write_json

    spec = get_dataset(args.dataset)
    train_x, train_y = load_split(args.train)
    test_x, test_y = load_split(args.test)
    config = ClassifierConfig(channels=spec.channels, height=spec.height, width=spec.width, levels=spec.levels,
                              num_classes=spec.num_classes, **json.loads(args.config))
    model, report = train_classifier(train_x, train_y, test_x, test_y, config)
    save_classifier(args.out, model, config, report)
    report = {**report, "dataset": args.dataset, "config": asdict(config), "checkpoint": file_record(args.out),
              "train_data": file_record(args.train), "test_data": file_record(args.test), "environment": environment()}
    write_json(args.report, report)
    log.info("classifier test accuracy %.4f (%d test images)", report["test_accuracy"], report["n_test"])


def cmd_download(args) -> None:
    import aiqn.data  # noqa: F401  (registers the datasets' raw files)
    import aiqn.metrics.inception  # noqa: F401  (registers the Inception weights)
    from aiqn.data.download import ensure_raw_file
    from aiqn.data.registry import download_source

    path = ensure_raw_file(download_source(args.group, args.file), args.raw_dir)
    log.info("%s is in place and verified", path)


def _extractor(args):
    """The feature extractor an evaluation verb was given, and the name its labels carry."""
    from aiqn.metrics.scoring import extractor_label, load_extractor

    extractor = load_extractor(args.extractor_kind, args.extractor, device=resolve_device(args.device),
                               batch_size=args.batch_size)
    return extractor, extractor_label(args.extractor_name, args.extractor_kind, args.extractor, extractor.sha256)


def _levels(dataset: str) -> int:
    from aiqn.data import get_dataset

    return get_dataset(dataset).levels


def cmd_reference_stats(args) -> None:
    from aiqn.metrics.scoring import reference_statistics

    extractor, name = _extractor(args)
    meta = reference_statistics(extractor, args.data, args.n, args.seed, args.out, name, _levels(args.dataset))
    log.info("reference statistics of %d images written to %s", meta["n"], args.out)


def cmd_train(args) -> None:
    from aiqn.data import get_dataset, load_split
    from aiqn.core.distributed import init_from_env, is_main, shutdown
    from aiqn.nets import PixelCNNConfig
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


def publish(state_dir: str, out_dir: str, checkpoints: dict) -> None:
    """Hard-link (or copy) finished checkpoints and the log from the resumable state folder into
    the rule's declared output folder. The state folder is never a declared output, so Snakemake's
    clean-up of a failed job cannot delete what a resumed run needs."""
    import shutil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources = list(checkpoints.values()) + [Path(state_dir) / "train_log.csv", Path(state_dir) / "config.json"]
    for source in sources:
        target = out / source.name
        if target.exists():
            target.unlink()
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)


def publish_final(args, final: Path, step: int, model_config, train_config, began: float, device: str,
                  **extra) -> None:
    """Publish the final checkpoint of a run (`publish`) and write `train.json` beside it: the
    checkpoint, log and data hashes, both configs (dataclasses), seed, time, device and
    environment, plus `extra` fields. Used by the verbs that train the sibling models (VAE,
    AGAVE, CQF); `args` has dataset, data, state_dir and out_dir."""
    from aiqn.core.environment import environment
    from aiqn.core.io import file_record, write_json

    publish(args.state_dir, args.out_dir, {step: final})
    out = Path(args.out_dir)
    write_json(out / "train.json", {
        "dataset": args.dataset, **extra, "step": step, "checkpoint": file_record(out / final.name),
        "train_log": file_record(out / "train_log.csv"), "data": file_record(args.data),
        "config": {"model": asdict(model_config), "train": asdict(train_config)}, "seed": train_config.seed,
        "seconds_this_invocation": round(time.time() - began, 2), "device": device, "environment": environment(device)})
    log.info("step %d checkpoint -> %s (%.1f s)", step, out / final.name, time.time() - began)


def cmd_sample(args) -> None:
    from aiqn.nets.sampling import generate
    from aiqn.core.checkpoint import load_checkpoint
    from aiqn.nets import model_from_checkpoint
    from aiqn.core.io import file_record, save_npz_atomic, write_json

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
    labels = class_labels.numpy() if class_labels is not None else np.full(args.n, -1)
    save_npz_atomic(args.out, images=images, labels=labels)
    write_json(args.out + ".json", {"n": args.n, "seed": args.seed, "batch_size": args.batch_size, "weights": "ema",
                                    "method": args.method, "step": ckpt["step"],
                                    "checkpoint": file_record(args.checkpoint), "samples": file_record(args.out),
                                    "device": device, "environment": environment(device)})
    log.info("wrote %d samples to %s", args.n, args.out)


def cmd_evaluate(args) -> None:
    from aiqn.data import load_split
    from aiqn.nets.likelihood import bits_per_dim
    from aiqn.metrics.scoring import score_images
    from aiqn.metrics import load_statistics
    from aiqn.report.provenance import evaluation_record
    from aiqn.core.checkpoint import load_checkpoint
    from aiqn.nets import model_from_checkpoint
    from aiqn.core.io import file_record, read_json, write_json

    with np.load(args.samples) as arrays:
        images = arrays["images"]
    extractor, name = _extractor(args)
    metrics = score_images(images, extractor, args.reference, args.splits, name, _levels(args.dataset))
    ckpt = load_checkpoint(args.checkpoint)
    if ckpt.get("kind") == "cqf":  # CQF: the bound of eq. 6 on the test split (none for its gan variant)
        from aiqn.methods.cqf.verbs import cqf_bits_per_dim_metrics

        metrics += cqf_bits_per_dim_metrics(ckpt, args.dataset, args.test, args.importance_samples, args.bpd_seed,
                                            device=resolve_device(args.device), batch_size=args.batch_size)
    elif ckpt["config"].get("head") == "categorical":  # VAE checkpoints have no head
        test_images, test_labels = load_split(args.test)
        device = resolve_device(args.device)
        model = model_from_checkpoint(ckpt, use_ema=True, device=device)
        given = ", given the class label" if model.config.num_classes else ""  # -log p(x | y) for PixelCNN*
        metrics.append({"metric": "bits/dim",
                        "value": bits_per_dim(model, test_images, device=device, labels=test_labels),
                        "label": f"bits/dim ({args.dataset} test split{given}, {ckpt['config']['levels']} levels, "
                                 "EMA weights)"})
    sample_meta = read_json(args.samples + ".json")
    samples = {**file_record(args.samples), "n": len(images), "seed": sample_meta["seed"],
               "method": sample_meta.get("method"), "device": sample_meta.get("device"),
               "host": sample_meta.get("environment", {}).get("host"), "meta": file_record(args.samples + ".json")}
    checkpoint = {"path": args.checkpoint, "step": ckpt["step"], "weights": sample_meta.get("weights", "ema"),
                  "config": ckpt["config"], "train_config": ckpt["train_config"]}
    record = {"dataset": args.dataset, "model": args.model, "step": ckpt["step"], "final": args.final,
              "n_samples": len(images), "extractor": args.extractor_name, "metrics": metrics,
              "provenance": evaluation_record(
                  checkpoint=checkpoint, samples=samples, reference_path=args.reference,
                  reference_meta=load_statistics(args.reference)[2], dataset_meta=args.dataset_meta,
                  rule=args.rule, wildcards=_wildcards(args.wildcards), device=resolve_device(args.device))}
    write_json(args.out, record)
    log.info("%s", "; ".join(f"{m['label']} = {m['value']:.4f}" for m in metrics))


def cmd_evaluate_real(args) -> None:
    from aiqn.data import load_split
    from aiqn.metrics.scoring import score_images
    from aiqn.metrics import load_statistics
    from aiqn.report.provenance import evaluation_record
    from aiqn.core.io import file_record, write_json

    images, _ = load_split(args.test)
    extractor, name = _extractor(args)
    metrics = score_images(images, extractor, args.reference, args.splits, name, _levels(args.dataset), what="test")
    record = {"dataset": args.dataset, "model": "real data (test split)", "step": None, "final": True,
              "n_samples": len(images), "extractor": args.extractor_name, "metrics": metrics,
              "provenance": evaluation_record(
                  checkpoint=None, samples={**file_record(args.test), "n": len(images), "seed": None,
                                            "method": "real test split"},
                  reference_path=args.reference, reference_meta=load_statistics(args.reference)[2],
                  dataset_meta=args.dataset_meta, rule="evaluate_real", wildcards=_wildcards(args.wildcards),
                  device=resolve_device(args.device))}
    write_json(args.out, record)
    log.info("%s", "; ".join(f"{m['label']} = {m['value']:.4f}" for m in metrics))


def cmd_table(args) -> None:
    from aiqn.report import build_table1, metrics_summary, write_table1
    from aiqn.report.provenance import table_provenance
    from aiqn.report.tables import TABLE1, TableText
    from aiqn.core.io import write_json

    text = TableText(name=args.name, title=args.title or TABLE1.title, caption=args.caption or TABLE1.caption,
                     paper_heading=args.paper_heading or TABLE1.paper_heading)
    table = build_table1(args.metrics, args.paper)
    cells = table_provenance(table, text.name, rule=args.name, paper_csv=args.paper)  # fails on a gap
    paths = write_table1(table, args.out_dir, text)
    if args.summary:
        write_json(args.summary, metrics_summary(table))
    write_json(args.provenance, cells)
    log.info("wrote %s, %s (%d cells)%s", ", ".join(paths.values()), args.provenance, len(cells),
             f" and {args.summary}" if args.summary else "")


def cmd_provenance(args) -> None:
    from aiqn.report.provenance import explain, find_cell, load_table_records

    cell = find_cell(load_table_records(args.dir, args.table), args.row, args.metric, args.dataset)
    print(json.dumps(cell, indent=2, sort_keys=True) if args.json else explain(cell))


def cmd_audit(args) -> None:
    from aiqn.report.provenance import audit

    checked, problems = audit(args.dir, args.root)
    for problem in problems:
        print(f"MISMATCH {problem}")
    print(f"audit: {checked} files checked, {len(problems)} mismatches")
    if problems:
        raise SystemExit(1)


def _wildcards(text: str) -> dict:
    """'dataset=digits,model=pixeliqn' -> {'dataset': 'digits', 'model': 'pixeliqn'}."""
    return dict(pair.split("=", 1) for pair in text.split(",") if pair)


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

    with np.load(args.samples) as arrays:
        images, labels = arrays["images"], arrays["labels"]
    meta = read_json(args.dataset_meta)
    names = meta.get("provenance", {}).get("classes")
    step = read_json(args.samples + ".json").get("step")
    plot_class_grid(images, labels, meta["levels"], args.out, per_class=args.per_class, class_names=names,
                    max_classes=args.max_classes,
                    title=f"{args.dataset}, {args.model} (step {step}, EMA weights)\nsamples per class label")
    log.info("wrote %s", args.out)


def cmd_inpaint(args) -> None:
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
    extractor, name = _extractor(args)
    row = config_row(args.configs, args.trial)
    budgets = [int(b) for b in args.budgets.split(",")]
    record = run_trial(
        row=row, model_config=model_config, base_train=json.loads(args.base_train), sweep_steps=args.steps,
        budgets=budgets, rung=args.rung, images=images, labels=labels, state_dir=args.state_dir,
        device=resolve_device(args.device), n_samples=args.n_samples, sample_batch=args.sample_batch,
        sample_seed=args.sample_seed, metric=args.metric,
        score=lambda samples: score_images(samples, extractor, args.reference, args.splits, name, spec.levels))
    record.update(dataset=args.dataset, model=args.model, attempt=args.attempt, configs=file_record(args.configs),
                  data=file_record(args.data), environment=environment(resolve_device(args.device)))
    write_json(args.out, record)
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
    log.info("chosen %s (%s %.4g) among %d configurations", chosen["chosen"], args.metric, chosen["value"],
             chosen["n_trials"])


def cmd_sweep_report(args) -> None:
    from aiqn.report.sweeps import plot_sweep, sweep_table, write_sweep_table
    from aiqn.core.io import read_json

    title = f"{args.dataset} / {args.model}: hyperparameter sweep"
    frame = sweep_table(args.results, args.selected)
    write_sweep_table(frame, args.csv, args.md, title, read_json(args.selected))
    plot_sweep(frame, args.figure, title)


# ------------------------------------------------------------------------------------ argparse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiqn", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("-v", "--verbose", action="store_true")
    verbs = parser.add_subparsers(dest="verb", required=True)

    def verb(name, func, help_text):
        sub = verbs.add_parser(name, help=help_text)
        sub.set_defaults(func=func)
        return sub

    p = verb("prepare", cmd_prepare, "prepare a registered dataset into train/test .npz")
    p.add_argument("--dataset", required=True)
    p.add_argument("--raw-dir", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--options", default="{}", help="JSON: the dataset's section of params.yaml")

    p = verb("train-classifier", cmd_train_classifier, "train the domain classifier used as feature extractor")
    p.add_argument("--dataset", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--config", default="{}")
    p.add_argument("--out", required=True)
    p.add_argument("--report", required=True)

    p = verb("download", cmd_download, "fetch (or verify a hand-placed) raw file into data/raw/GROUP/")
    p.add_argument("--group", required=True, help="a dataset name, or inception")
    p.add_argument("--file", required=True, help="the raw file's name")
    p.add_argument("--raw-dir", required=True)

    def extractor_args(p):
        p.add_argument("--extractor", required=True, help="classifier checkpoint or Inception weights file")
        p.add_argument("--extractor-name", required=True)
        p.add_argument("--extractor-kind", choices=["classifier", "inception"], default="classifier")
        p.add_argument("--batch-size", type=int, default=500, help="images per feature-extraction batch")
        p.add_argument("--device", default="cpu")

    p = verb("reference-stats", cmd_reference_stats, "feature statistics of N real training images")
    extractor_args(p)
    p.add_argument("--dataset", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)

    p = verb("train", cmd_train, "train (or resume) a PixelCNN / PixelIQN")
    p.add_argument("--dataset", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--model-config", required=True, help="JSON: head and architecture")
    p.add_argument("--train-config", required=True, help="JSON: optimizer, schedule, steps, ...")
    p.add_argument("--state-dir", required=True, help="resumable working folder (not a rule output)")
    p.add_argument("--selected", default=None, help="a sweep's selected.json: its configuration overrides")
    p.add_argument("--class-conditional", action="store_true",
                   help="condition on the class label (num_classes = the dataset's)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")

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

    p = verb("evaluate", cmd_evaluate, "FID / IS (and bits/dim) of one checkpoint's samples")
    extractor_args(p)
    for name in ("dataset", "model", "samples", "checkpoint", "reference", "test", "dataset-meta", "out"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--wildcards", default="", help="the rule's wildcards, name=value,...")
    p.add_argument("--splits", type=int, default=10)
    p.add_argument("--final", action="store_true", help="this is the run's last checkpoint (Table 1)")
    p.add_argument("--rule", default="evaluate_checkpoint", help="the calling rule, for the provenance record")
    p.add_argument("--importance-samples", type=int, default=1,
                   help="CQF checkpoints: bits/dim with K posterior samples (1: the ELBO, >1: importance-weighted)")
    p.add_argument("--bpd-seed", type=int, default=0, help="CQF checkpoints: seed of the dequantization and eps draws")

    p = verb("evaluate-real", cmd_evaluate_real, "FID / IS of the real test split: the floor")
    extractor_args(p)
    for name in ("dataset", "test", "reference", "dataset-meta", "out"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--wildcards", default="", help="the rule's wildcards, name=value,...")
    p.add_argument("--splits", type=int, default=10)

    p = verb("table", cmd_table, "a results table (csv, md, tex) from metric files and the paper's numbers")
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--paper", required=True, help="CSV of the paper's numbers (a header alone when it has none)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--name", default="table1", help="file stem of the table and of its provenance records")
    p.add_argument("--title", default=None, help="heading of the Markdown and LaTeX (default: Table 1's)")
    p.add_argument("--caption", default=None, help="caption (default: Table 1's)")
    p.add_argument("--paper-heading", default=None, help="heading of the paper's section (default: Table 1's)")
    p.add_argument("--summary", default=None, help="JSON of our final numbers (DVC metrics)")
    p.add_argument("--provenance", required=True, help="JSON: one provenance record per table cell")

    p = verb("provenance", cmd_provenance, "print the chain of files, configs and code behind one table cell")
    p.add_argument("table", help="table name, e.g. table1")
    p.add_argument("--row", required=True, help="model row, e.g. pixeliqn or 'real data (test split)'")
    p.add_argument("--metric", required=True, help="metric name (FID, IS, bits/dim) or its full label")
    p.add_argument("--dataset", default=None, help="needed when the row exists for several datasets")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.add_argument("--dir", default="reports/provenance")

    p = verb("audit", cmd_audit, "re-hash every file named by every provenance record")
    p.add_argument("--dir", default="reports/provenance")
    p.add_argument("--root", default=".", help="repository root that relative paths start from")

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
    extractor_args(p)
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

    p = verb("sweep-report", cmd_sweep_report, "table and figure of every trial of a sweep")
    for name in ("dataset", "model", "selected", "csv", "md", "figure"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--results", nargs="+", required=True)

    from aiqn.methods.aiqn_vae.verbs import add_vae_verbs# the AIQN-VAE's verbs (appendix, Figure 9)

    add_vae_verbs(verb)
    from aiqn.methods.agave.verbs import add_agave_verbs# AGAVE (Lucas & Verbeek 2018)
    from aiqn.methods.cqf.verbs import add_cqf_verbs# CQF (Shmelkov et al. 2018)

    add_agave_verbs(verb)
    add_cqf_verbs(verb)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run one verb."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        args.func(args)
    except Exception as error:
        if not isinstance(error, _user_errors()):
            raise
        print(f"aiqn {args.verb}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def _user_errors() -> tuple[type[Exception], ...]:
    """Bad or missing input, or an optional extra that is not installed: reported in one line,
    without a traceback. Imported only when an error occurs: aiqn.data loads every dataset module
    and scikit-learn (about 1.5 s), which verbs that read no data should not pay for."""
    from aiqn.data.download import ChecksumMismatch
    from aiqn.metrics.inception import InceptionUnavailable
    from aiqn.report.provenance import ProvenanceError

    return ProvenanceError, FileNotFoundError, ChecksumMismatch, InceptionUnavailable


if __name__ == "__main__":
    main()
