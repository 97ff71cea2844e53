"""The verbs every method shares: preparing and downloading data, the feature extractor and its
reference statistics, scoring samples (`evaluate`, `evaluate-real`), tables and provenance.

`evaluate` knows no method: a method that has a likelihood of the test split registers a function
for its checkpoint kind in `LIKELIHOOD_METRICS` (`@likelihood_metrics("kind")`), and `evaluate`
adds what it returns to the sample metrics.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from aiqn.core.device import resolve_device
from aiqn.core.environment import environment
from aiqn.core.runinfo import write_runinfo
from aiqn.core.verbs import Declare, wildcards

log = logging.getLogger("aiqn")

# checkpoint kind -> f(checkpoint dict, evaluate's args) -> metric entries (dicts with metric, value, label)
LIKELIHOOD_METRICS: dict[str, Callable[[dict, argparse.Namespace], list[dict]]] = {}


def likelihood_metrics(kind: str):
    """Register the decorated function as `evaluate`'s likelihood metrics of `kind` checkpoints."""
    def register(function):
        LIKELIHOOD_METRICS[kind] = function
        return function
    return register


def cmd_prepare(args) -> None:
    import aiqn.data  # noqa: F401  (registers datasets)
    from aiqn.data.prepare import prepare_dataset

    meta = prepare_dataset(args.dataset, args.raw_dir, args.out_dir, json.loads(args.options),
                           json.loads(args.validation) if args.validation else None)
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
    began = time.time()
    model, report = train_classifier(train_x, train_y, test_x, test_y, config)
    save_classifier(args.out, model, config, report)
    report = {**report, "dataset": args.dataset, "config": asdict(config), "checkpoint": file_record(args.out),
              "train_data": file_record(args.train), "test_data": file_record(args.test), "environment": environment()}
    write_json(args.report, report)
    write_runinfo(args.report, train_seconds=round(time.time() - began, 2))
    log.info("classifier test accuracy %.4f (%d test images)", report["test_accuracy"], report["n_test"])


def cmd_download(args) -> None:
    import aiqn.data  # noqa: F401  (registers the datasets' raw files)
    import aiqn.metrics.inception  # noqa: F401  (registers the Inception weights)
    from aiqn.data.download import ensure_raw_file
    from aiqn.data.registry import download_source

    path = ensure_raw_file(download_source(args.group, args.file), args.raw_dir)
    log.info("%s is in place and verified", path)


def extractor_for(args):
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

    extractor, name = extractor_for(args)
    meta = reference_statistics(extractor, args.data, args.n, args.seed, args.out, name, _levels(args.dataset),
                                args.split)
    log.info("reference statistics of %d images written to %s", meta["n"], args.out)


def comparison_from(args):
    """The `Comparison` (aiqn.metrics.scoring) an evaluation verb was given."""
    from aiqn.metrics.scoring import Comparison

    return Comparison(n=args.n_compare, seed=args.compare_seed, kid_subsets=args.kid_subsets,
                      kid_subset_size=args.kid_subset_size, percentile=args.memorisation_percentile,
                      bootstrap=args.bootstrap)


def _comparison_record(args, comparison) -> dict:
    """The provenance entry naming the files and settings behind the N-vs-N metrics."""
    from aiqn.core.io import file_record

    return {"features": file_record(args.features), "train_images": file_record(args.train),
            "test_images": file_record(args.test), "settings": asdict(comparison)}


def cmd_evaluate(args) -> None:
    from aiqn.core.checkpoint import checkpoint_kind, load_checkpoint
    from aiqn.data import load_split
    from aiqn.metrics import load_statistics
    from aiqn.metrics.scoring import load_reference_sets, score_against_references
    from aiqn.report.provenance import evaluation_record
    from aiqn.core.io import file_record, read_json, write_json

    began = time.time()
    from aiqn.core.publish import read_samples

    images, _ = read_samples(args.samples)
    extractor, name = extractor_for(args)
    comparison = comparison_from(args)
    sets = load_reference_sets(args.features, comparison, extractor)
    train_images, _ = load_split(args.train)
    metrics = score_against_references(images, extractor, args.reference, args.splits, name, _levels(args.dataset),
                                       sets, train_images, comparison, bootstrap=args.final,
                                       validation_path=args.validation_reference)
    ckpt = load_checkpoint(args.checkpoint)
    hook = LIKELIHOOD_METRICS.get(checkpoint_kind(ckpt))  # a method's likelihood of the test split, if it has one
    if hook is not None:
        metrics += hook(ckpt, args)
    sample_meta = read_json(args.samples + ".json")
    samples = {**file_record(args.samples), "n": len(images), "seed": sample_meta["seed"],
               "method": sample_meta.get("method"), "device": sample_meta.get("device"),
               "meta": file_record(args.samples + ".json")}
    checkpoint = {"path": args.checkpoint, "step": ckpt["step"], "weights": sample_meta.get("weights", "ema"),
                  "config": ckpt["config"], "train_config": ckpt["train_config"]}
    record = {"dataset": args.dataset, "model": args.model, "step": ckpt["step"],
              "seed": ckpt["train_config"].get("seed"), "final": args.final,
              "n_samples": len(images), "extractor": args.extractor_name, "metrics": metrics,
              "provenance": evaluation_record(
                  checkpoint=checkpoint, samples=samples, reference_path=args.reference,
                  reference_meta=load_statistics(args.reference)[2], dataset_meta=args.dataset_meta,
                  rule=args.rule, wildcards=wildcards(args.wildcards), device=resolve_device(args.device),
                  comparison=_comparison_record(args, comparison))}
    if args.validation_reference:
        record["provenance"]["validation_reference"] = {**file_record(args.validation_reference),
                                                        "n": load_statistics(args.validation_reference)[2]["n"]}
    write_json(args.out, record)
    write_runinfo(args.out, seconds=round(time.time() - began, 2))
    log.info("%s", "; ".join(f"{m['label']} = {m['value']:.4f}" for m in metrics))


def cmd_evaluate_real(args) -> None:
    """The real-data floor: IS of the test split, and the N-vs-N metrics of real images (n test
    images against the training reference, n other training images against the test reference)."""
    from aiqn.data import load_split
    from aiqn.metrics import load_statistics
    from aiqn.metrics.scoring import comparison_metrics, is_entry, load_reference_sets
    from aiqn.report.provenance import evaluation_record
    from aiqn.core.io import file_record, write_json

    images, _ = load_split(args.test)
    extractor, name = extractor_for(args)
    comparison = comparison_from(args)
    sets = load_reference_sets(args.features, comparison, extractor)
    _, probs = extractor(images, _levels(args.dataset))
    metrics = [is_entry(probs, args.splits, name, "test")] + comparison_metrics(None, None, sets, comparison, name)
    record = {"dataset": args.dataset, "model": "real data (test split)", "step": None, "final": True,
              "n_samples": len(images), "extractor": args.extractor_name, "metrics": metrics,
              "provenance": evaluation_record(
                  checkpoint=None, samples={**file_record(args.test), "n": len(images), "seed": None,
                                            "method": "real test split"},
                  reference_path=args.reference, reference_meta=load_statistics(args.reference)[2],
                  dataset_meta=args.dataset_meta, rule="evaluate_real", wildcards=wildcards(args.wildcards),
                  device=resolve_device(args.device), comparison=_comparison_record(args, comparison))}
    write_json(args.out, record)
    log.info("%s", "; ".join(f"{m['label']} = {m['value']:.4f}" for m in metrics))


def cmd_reference_features(args) -> None:
    from aiqn.metrics.scoring import reference_features

    extractor, name = extractor_for(args)
    reference_features(extractor, args.train, args.test, args.out, name, _levels(args.dataset))
    log.info("features of every training and test image written to %s", args.out)


def cmd_memorisation_figure(args) -> None:
    from aiqn.core.publish import read_samples
    from aiqn.data import load_split
    from aiqn.metrics.memorisation import nearest_neighbours, pixel_vectors
    from aiqn.metrics.scoring import Comparison, load_reference_sets
    from aiqn.report import plot_memorisation

    levels = _levels(args.dataset)
    extractor, name = extractor_for(args)
    sets = load_reference_sets(args.features, Comparison(n=1), extractor)
    train, _ = load_split(args.train)
    train_pixels = pixel_vectors(train, levels)
    heldout = (sets.heldout_pixel, sets.heldout_feature)
    thresholds = tuple(float(np.percentile(d, args.percentile)) for d in heldout)
    distances, closest = {}, {}
    for model, path in (pair.split("=", 1) for pair in args.samples):
        images, _ = read_samples(path)
        pixel, nearest = nearest_neighbours(pixel_vectors(images, levels), train_pixels)
        features, _ = extractor(images, levels)
        distances[model] = (pixel, nearest_neighbours(features, sets.train_features)[0])
        order = np.argsort(pixel)[:args.closest]
        closest[model] = (images[order], train[nearest[order]])
    plot_memorisation(distances, heldout, thresholds, closest, levels, args.out,
                      f"{args.dataset}: samples' and test images' distances to the nearest of {len(train)} training "
                      f"images (threshold: {args.percentile:g}th percentile of the test images')", name)
    log.info("wrote %s", args.out)


def cmd_table(args) -> None:
    from aiqn.report import build_table1, write_table1
    from aiqn.report.provenance import table_provenance
    from aiqn.report.tables import TABLE1, TableText
    from aiqn.core.io import write_json

    text = TableText(name=args.name, title=args.title or TABLE1.title, caption=args.caption or TABLE1.caption,
                     paper_heading=args.paper_heading or TABLE1.paper_heading)
    table = build_table1(args.metrics, args.paper)
    cells = table_provenance(table, text.name, rule=args.name, paper_csv=args.paper)  # fails on a gap
    paths = write_table1(table, args.out_dir, text)
    write_json(args.provenance, cells)
    log.info("wrote %s, %s (%d cells)", ", ".join(paths.values()), args.provenance, len(cells))


def cmd_claims(args) -> None:
    """The claims table (aiqn.report.claims) and one provenance record per claim and dataset, holding
    the records of the table cells it reads."""
    from aiqn.core.io import file_record, read_csv, write_csv_atomic, write_json, write_text_atomic
    from aiqn.report.claims import (KID_METRIC, MEMORISED, claim_key, claims_on_models, evaluate_claims,
                                    load_claims, render_markdown)
    from aiqn.report.provenance import find_cell, git_state, load_table_records

    tables = dict(pair.split("=", 1) for pair in args.tables)
    claims = load_claims(args.claims)
    skipped = [c["id"] for c in claims if c["table"] not in tables]
    if skipped:
        log.info("claims on tables this run does not make, left out: %s", ", ".join(skipped))
    if args.models:
        claims, untrained = claims_on_models(claims, "table1", args.models)
        if untrained:
            log.info("claims on models this run does not train, left out: %s", ", ".join(untrained))
    frame = evaluate_claims([c for c in claims if c["table"] in tables],
                            {name: read_csv(path) for name, path in tables.items()})
    records = {name: load_table_records(args.provenance_dir, name) for name in tables}
    claims_by_id = {c["id"]: c for c in claims}
    cells, code = [], git_state()
    for row in frame.itertuples():
        table = claims_by_id[row.claim]["table"]
        inner = [find_cell(records[table], model, metric, row.dataset)
                 for model, label in ((row.model_a, row.label_a), (row.model_b, row.label_b))
                 for metric in (label, KID_METRIC, MEMORISED)
                 if metric == label or any(r["model"] == model and r["metric"] == metric
                                               and r["dataset"] == row.dataset for r in records[table])]
        cells.append({"table": "claims", "dataset": row.dataset, "model": claim_key(row.claim, row.checkpoint),
                      "metric": "a - b",
                      "label": f"{row.metric}: {row.model_a} - {row.model_b}", "value": float(row.difference),
                      "source": "ours", "verdict": row.verdict,
                      "record": {"claims_file": file_record(args.claims), "table_rule": "claims", "code": code,
                                 "tables": {name: file_record(path) for name, path in tables.items()},
                                 "cells": inner}})
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(frame, out / "claims.csv", index=False)
    write_text_atomic(out / "claims.md", render_markdown(frame))
    write_json(args.provenance, cells)
    log.info("%s", "; ".join(f"{r.claim} on {r.dataset} ({r.checkpoint}): {r.verdict}" for r in frame.itertuples()))


def cmd_budget_curve(args) -> None:
    """Every Table 1 claim at every checkpoint step of one dataset: a CSV and a figure."""
    from aiqn.report.claims import budget_curve, load_claims, plot_budget_curve
    from aiqn.core.io import write_csv_atomic
    from aiqn.report.tables import load_metric_records

    records = load_metric_records(args.metrics)
    frame = budget_curve(load_claims(args.claims), records[records["dataset"] == args.dataset])
    if frame.empty:
        raise ValueError(f"no Table 1 claim of {args.claims} has both its models on {args.dataset}")
    write_csv_atomic(frame, args.csv, index=False)
    plot_budget_curve(frame, args.dataset, args.figure)
    last = frame[frame["step"] == frame["step"].max()]
    log.info("%s at step %d: %s", args.dataset, frame["step"].max(),
             "; ".join(f"{r.claim} ({r.checkpoint}) {r.verdict}" for r in last.itertuples()))


def cmd_provenance(args) -> None:
    from aiqn.report.provenance import explain, find_cell, load_table_records

    cell = find_cell(load_table_records(args.dir, args.table), args.row, args.metric, args.dataset, args.seed)
    print(json.dumps(cell, indent=2, sort_keys=True) if args.json else explain(cell))


def cmd_upgrade_checkpoint(args) -> None:
    from aiqn.core.checkpoint import upgrade_checkpoint

    for path in args.paths:
        print(f"{path}: {'converted' if upgrade_checkpoint(path) else 'already loads with weights_only=True'}")


def cmd_audit(args) -> None:
    from aiqn.report.provenance import audit

    checked, problems = audit(args.dir, args.root)
    for problem in problems:
        print(f"MISMATCH {problem}")
    print(f"audit: {checked} files checked, {len(problems)} mismatches")
    if problems:
        raise SystemExit(1)


def extractor_arguments(p) -> None:
    """Arguments of a verb that extracts features: the extractor, its name and kind, batch size, device."""
    p.add_argument("--extractor", required=True, help="classifier checkpoint or Inception weights file")
    p.add_argument("--extractor-name", required=True)
    p.add_argument("--extractor-kind", choices=["classifier", "inception"], default="classifier")
    p.add_argument("--batch-size", type=int, default=500, help="images per feature-extraction batch")
    p.add_argument("--device", default="cpu")


def add_verbs(verb: Declare) -> None:
    """Declare the shared verbs."""
    p = verb("prepare", cmd_prepare, "prepare a registered dataset into train/val/test .npz")
    p.add_argument("--dataset", required=True)
    p.add_argument("--raw-dir", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--options", default="{}", help="JSON: the dataset's section of params.yaml")
    p.add_argument("--validation", default=None,
                   help='JSON {"fraction", "seed"} (params: validation): carve val.npz from the train split')

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

    def extractor_arguments(p):
        p.add_argument("--extractor", required=True, help="classifier checkpoint or Inception weights file")
        p.add_argument("--extractor-name", required=True)
        p.add_argument("--extractor-kind", choices=["classifier", "inception"], default="classifier")
        p.add_argument("--batch-size", type=int, default=500, help="images per feature-extraction batch")
        p.add_argument("--device", default="cpu")

    p = verb("reference-stats", cmd_reference_stats, "feature statistics of N real training (or validation) images")
    extractor_arguments(p)
    p.add_argument("--dataset", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--n", type=int, required=True, help="images (a seeded subset); 0: every image of --data")
    p.add_argument("--split", choices=["train", "val"], default="train", help="the split --data holds, as labels name it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)

    def comparison_arguments(p):
        p.add_argument("--features", required=True, help="the reference_features file (every train and test image)")
        p.add_argument("--train", required=True, help="the prepared training split (memorisation in pixel space)")
        p.add_argument("--n-compare", type=int, required=True, help="images a side of every N-vs-N comparison")
        p.add_argument("--compare-seed", type=int, default=0, help="seed of the carving, KID's subsets, the bootstrap")
        p.add_argument("--kid-subsets", type=int, default=100)
        p.add_argument("--kid-subset-size", type=int, default=100)
        p.add_argument("--memorisation-percentile", type=float, default=5.0)
        p.add_argument("--bootstrap", type=int, default=200,
                       help="resamples of the FID's bootstrap interval, final checkpoints only (0: none)")

    p = verb("reference-features", cmd_reference_features,
             "features of every train and test image, and the test images' nearest-training distances")
    extractor_arguments(p)
    for name in ("dataset", "train", "test", "out"):
        p.add_argument(f"--{name}", required=True)

    p = verb("evaluate", cmd_evaluate, "FID / IS (and bits/dim) of one checkpoint's samples")
    extractor_arguments(p)
    comparison_arguments(p)
    for name in ("dataset", "model", "samples", "checkpoint", "reference", "test", "dataset-meta", "out"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--wildcards", default="", help="the rule's wildcards, name=value,...")
    p.add_argument("--splits", type=int, default=10)
    p.add_argument("--final", action="store_true", help="this is the run's last checkpoint (Table 1)")
    p.add_argument("--validation-reference", default=None,
                   help="the validation split's statistics (validation_stats): adds 'FID vs val', which Table 1's "
                        "'chosen on validation' rows pick a checkpoint by")
    p.add_argument("--rule", default="evaluate", help="the calling rule, for the provenance record")
    p.add_argument("--importance-samples", type=int, default=1,
                   help="likelihood bounds (CQF): K posterior samples (1: the ELBO, >1: importance-weighted)")
    p.add_argument("--bpd-seed", type=int, default=0, help="likelihood bounds (CQF): seed of their random draws")

    p = verb("evaluate-real", cmd_evaluate_real, "IS and the N-vs-N metrics of real images: the floor")
    extractor_arguments(p)
    comparison_arguments(p)
    for name in ("dataset", "test", "reference", "dataset-meta", "out"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--wildcards", default="", help="the rule's wildcards, name=value,...")
    p.add_argument("--splits", type=int, default=10)

    p = verb("memorisation-figure", cmd_memorisation_figure,
             "nearest-training distances of every model's samples against the test images'")
    extractor_arguments(p)
    for name in ("dataset", "features", "train", "out"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--samples", nargs="+", required=True, help="model=samples.npz ...")
    p.add_argument("--percentile", type=float, default=5.0)
    p.add_argument("--closest", type=int, default=8, help="closest samples shown per model")

    p = verb("table", cmd_table, "a results table (csv, md, tex) from metric files and the paper's numbers")
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--paper", required=True, help="CSV of the paper's numbers (a header alone when it has none)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--name", default="table1", help="file stem of the table and of its provenance records")
    p.add_argument("--title", default=None, help="heading of the Markdown and LaTeX (default: Table 1's)")
    p.add_argument("--caption", default=None, help="caption (default: Table 1's)")
    p.add_argument("--paper-heading", default=None, help="heading of the paper's section (default: Table 1's)")
    p.add_argument("--provenance", required=True, help="JSON: one provenance record per table cell")

    p = verb("claims", cmd_claims, "the papers' claims tested on the generated tables: a verdict per claim and dataset")
    p.add_argument("--claims", required=True, help="paper/claims.yaml")
    p.add_argument("--tables", nargs="+", required=True, help="name=reports/tables/<name>.csv ...")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--provenance", required=True, help="JSON: one record per claim and dataset")
    p.add_argument("--provenance-dir", default="reports/provenance", help="where the tables' records are")
    p.add_argument("--models", nargs="*", default=None,
                   help="the Table 1 models this run trains: a claim on others is left out, with a log line")

    p = verb("budget-curve", cmd_budget_curve, "every Table 1 claim's a - b at every checkpoint step of a dataset")
    p.add_argument("--claims", required=True, help="paper/claims.yaml")
    p.add_argument("--dataset", required=True)
    p.add_argument("--metrics", nargs="+", required=True, help="the metrics JSON of every checkpoint and seed")
    p.add_argument("--csv", required=True)
    p.add_argument("--figure", required=True)

    p = verb("provenance", cmd_provenance, "print the chain of files, configs and code behind one table cell")
    p.add_argument("table", help="table name, e.g. table1")
    p.add_argument("--row", required=True, help="model row, e.g. pixeliqn or 'real data (test split)'")
    p.add_argument("--metric", required=True, help="metric name (FID, IS, bits/dim) or its full label")
    p.add_argument("--dataset", default=None, help="needed when the row exists for several datasets")
    p.add_argument("--seed", default=None, help="one training seed's cell; default: the mean over seeds where "
                                               "a row has several (the rendered table's number)")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.add_argument("--dir", default="reports/provenance")

    p = verb("upgrade-checkpoint", cmd_upgrade_checkpoint,
             "rewrite checkpoints of the older format so they load with weights_only=True (trusted files only)")
    p.add_argument("paths", nargs="+", help="ckpt_*.pt files you wrote yourself (they are unpickled in full)")

    p = verb("audit", cmd_audit, "re-hash every file named by every provenance record")
    p.add_argument("--dir", default="reports/provenance")
    p.add_argument("--root", default=".", help="repository root that relative paths start from")
