"""Provenance: the chain of files, configs, code and machine behind every number in a table.

The evaluation stage writes a `provenance` block into each metrics JSON (`evaluation_record`);
the table stage joins those blocks to the table's cells (`table_provenance`), refuses a cell
whose record is incomplete, and writes `reports/provenance/<table>.json`. `audit` re-hashes
every file any record names; `explain` prints the chain behind one cell.

Every file is named as {"path", "sha256"}; a file outside the repository that ships inside a
Python package also carries a "locator" ("package:relative/path") so that an audit on another
machine finds the package's copy.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from typing import Any, Iterator

from aiqn.core.environment import environment
from aiqn.core.io import file_record, read_json, sha256_file
from aiqn.core.runinfo import read_runinfo

# What a complete record of one of our model cells holds; real-data and paper cells state what
# does not apply to them (e.g. "checkpoint": {"not_applicable": "real data"}).
REQUIRED = ("metrics_file", "checkpoint", "samples", "reference", "dataset", "config", "rule", "code",
            "environment")


class ProvenanceError(Exception):
    """A provenance record is missing, incomplete or does not match the files it names."""


def git_state(repo: str | Path = ".") -> dict:
    """Commit of the working tree and whether tracked files differ from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (subprocess.CalledProcessError, FileNotFoundError):
        return {"commit": None, "dirty": None, "note": "not a git checkout"}
    return {"commit": commit, "dirty": dirty}


def not_applicable(reason: str) -> dict:
    """The value of a record field that does not apply to a cell (e.g. real data has no checkpoint)."""
    return {"not_applicable": reason}


def dataset_record(meta_path: str | Path) -> dict:
    """The dataset part of a record: prepared arrays and raw files, from prepare's meta.json."""
    meta = read_json(meta_path)
    return {"name": meta["dataset"], "meta": file_record(meta_path),
            "prepared": {split: {"path": info["path"], "sha256": info["sha256"]} for split, info in meta["splits"].items()},
            "raw": meta["provenance"]["raw_files"], "source": meta["provenance"].get("source")}


def evaluation_record(*, checkpoint: dict | None, samples: dict, reference_path: str, reference_meta: dict,
                      dataset_meta: str, rule: str, wildcards: dict, device: str, comparison: dict | None = None) -> dict:
    """The provenance block an evaluation writes into its metrics JSON (all but the metrics
    file's own hash, which only exists once the file is written). `comparison`: the files and
    settings of the N-vs-N metrics and the memorisation check, where the evaluation has them."""
    record: dict[str, Any] = {
        "checkpoint": not_applicable("real data") if checkpoint is None else {
            **file_record(checkpoint["path"]), "step": checkpoint["step"], "weights": checkpoint["weights"]},
        "samples": samples,
        "reference": {**file_record(reference_path), "n": reference_meta["n"], "seed": reference_meta["seed"],
                      "extractor": reference_meta["extractor"],
                      "extractor_weights": reference_meta["extractor_checkpoint"],
                      "reference_images": reference_meta["data"]},
        "dataset": dataset_record(dataset_meta),
        "config": not_applicable("real data") if checkpoint is None else {
            "model": checkpoint["config"], "train": checkpoint["train_config"]},
        "rule": {"name": rule, "wildcards": wildcards},
        "code": git_state(),
        "environment": environment(device),
    }
    if comparison is not None:
        record["comparison"] = comparison
    return record


def missing_fields(record: dict) -> list[str]:
    """Required fields that are absent or empty (a `not_applicable` entry counts as present)."""
    return [key for key in REQUIRED if record.get(key) in (None, {}, "")]


MEAN = "mean"  # the `seed` of a cell that is the mean over a row's training seeds


def _seed(value) -> int | None:
    """A long table's seed cell as JSON: an int, or None (the floor, the paper's rows)."""
    import pandas as pd

    return None if pd.isna(value) else int(value)


def table_provenance(table, table_name: str, rule: str, paper_csv: str) -> list[dict]:
    """One record per cell of `table` (the long form written by the table stage), and one per mean
    over seeds that the rendered table shows.

    Our cells take the provenance block of their metrics file plus that file's own hash; the
    paper's cells name the paper's data file; a row with several training seeds gets a cell with
    seed "mean" whose record holds its per-seed cells. Raises ProvenanceError on any incomplete
    record, so the rule that writes the table fails.
    """
    from aiqn.report.tables import over_seeds

    cells, problems = [], []
    paper_record = file_record(paper_csv)
    code = git_state()
    for row in table.itertuples():
        cell = {"table": table_name, "dataset": row.dataset, "model": row.model, "metric": row.metric,
                "label": row.label, "value": float(row.value), "source": row.source,
                "seed": _seed(getattr(row, "seed", None))}
        if str(row.source).startswith("paper"):
            cell["record"] = {"paper_data": paper_record, "citation": row.source, "table_rule": rule, "code": code}
        else:
            metrics = read_json(row.metrics_file)
            record = dict(metrics.get("provenance") or {})
            record["metrics_file"] = file_record(row.metrics_file)
            lacking = missing_fields(record)
            if lacking:
                problems.append(f"{row.metrics_file}: {row.model} / {row.label} lacks {', '.join(lacking)}")
            cell["record"] = {**record, "table_rule": rule}
        cells.append(cell)
    if problems:
        raise ProvenanceError("incomplete provenance: " + "; ".join(problems))
    for row in over_seeds(table).itertuples():
        if row.seeds < 2:
            continue
        inner = [c for c in cells if (c["dataset"], c["model"], c["label"], c["source"])
                 == (row.dataset, row.model, row.label, row.source)]
        cells.append({"table": table_name, "dataset": row.dataset, "model": row.model, "metric": row.metric,
                      "label": row.label, "value": float(row.value), "low": float(row.low), "high": float(row.high),
                      "source": row.source, "seed": MEAN,
                      "record": {"over_seeds": [c["seed"] for c in inner],
                                 "interval": "mean and 95% Student-t interval over seeds",
                                 "table_rule": rule, "code": code, "cells": inner}})
    return cells


# --------------------------------------------------------------------------- reading and audit


def load_table_records(provenance_dir: str | Path, table: str) -> list[dict]:
    """The records of one table; the error lists the tables that exist."""
    path = Path(provenance_dir) / f"{table}.json"
    if not path.exists():
        known = sorted(p.stem for p in Path(provenance_dir).glob("*.json"))
        raise ProvenanceError(f"no provenance for table {table!r} ({path} missing); tables: {', '.join(known) or 'none'}")
    try:
        return read_json(path)
    except json.JSONDecodeError as error:
        raise ProvenanceError(f"{path}: not valid JSON ({error})") from None


def find_cell(records: list[dict], model: str, metric: str, dataset: str | None = None,
              seed: int | str | None = None) -> dict:
    """The record of one cell; `metric` matches the metric name (FID) or the full label; `seed`: one
    training seed's cell, or "mean" (the default where a row has several seeds: the number the
    rendered table shows)."""
    def matches(r):
        return (r["model"] == model and metric in (r["metric"], r["label"])
                and (dataset is None or r["dataset"] == dataset))

    found = [r for r in records if matches(r)]
    if seed is not None:
        wanted = MEAN if str(seed) == MEAN else int(seed)
        seeds = sorted({str(r.get("seed")) for r in found})
        found = [r for r in found if r.get("seed") == wanted]
        if not found:
            raise ProvenanceError(f"no cell for row {model!r}, metric {metric!r} with seed {seed}; its seeds: "
                                  f"{', '.join(seeds) or 'none'}")
    elif any(r.get("seed") == MEAN for r in found):
        found = [r for r in found if r.get("seed") == MEAN]
    if len(found) == 1:
        return found[0]
    if not found:
        rows = sorted({r["model"] for r in records if dataset is None or r["dataset"] == dataset})
        metrics = sorted({r["metric"] for r in records})
        raise ProvenanceError(f"no cell for row {model!r}, metric {metric!r}"
                              f"{'' if dataset is None else f', dataset {dataset!r}'}; "
                              f"rows: {', '.join(rows)}; metrics: {', '.join(metrics)}")
    datasets = sorted({r["dataset"] for r in found})
    raise ProvenanceError(f"row {model!r}, metric {metric!r} is ambiguous: give --dataset (one of {', '.join(datasets)})")


def named_files(obj: Any, trail: str = "") -> Iterator[tuple[str, dict]]:
    """Every {"path", "sha256"} entry inside a record, with where it sits in the record."""
    if isinstance(obj, dict):
        if "path" in obj and "sha256" in obj:
            yield trail, obj
        for key, value in obj.items():
            yield from named_files(value, f"{trail}.{key}" if trail else key)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from named_files(value, f"{trail}[{i}]")


def resolve(entry: dict, root: Path) -> Path:
    """Where a named file is on this machine: its locator inside an installed package, else its
    path (relative paths are relative to the repository root)."""
    locator = entry.get("locator")
    if locator:
        package, _, relative = locator.partition(":")
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            return Path(list(spec.submodule_search_locations)[0]) / relative
    path = Path(entry["path"])
    return path if path.is_absolute() else root / path


def audit(provenance_dir: str | Path = "reports/provenance", root: str | Path = ".") -> tuple[int, list[str]]:
    """Re-hash every file named by every record. Returns (files checked, mismatch messages)."""
    root = Path(root)
    tables = sorted(Path(provenance_dir).glob("*.json"))
    if not tables:
        raise ProvenanceError(f"no provenance records in {provenance_dir}; run the pipeline first (snakemake --cores all)")
    checked: dict[Path, str] = {}
    problems = []
    for table_path in tables:
        for cell in load_table_records(provenance_dir, table_path.stem):
            for trail, entry in named_files(cell["record"]):
                where = f"{table_path.stem}: {cell['model']} / {cell['label']}: {trail}"
                path = resolve(entry, root)
                if path not in checked:
                    checked[path] = sha256_file(path) if path.is_file() else "missing"
                if checked[path] == "missing":
                    problems.append(f"{where}: {path} is missing")
                elif checked[path] != entry["sha256"]:
                    problems.append(f"{where}: {path} changed (sha256 {checked[path][:12]}..., "
                                    f"recorded {entry['sha256'][:12]}...)")
    return len(checked), sorted(set(problems))


def explain(cell: dict) -> str:
    """The chain behind one cell, for a person to read."""
    rec = cell["record"]
    seed = cell.get("seed")
    lines = [f"{cell['table']}: {cell['dataset']} / {cell['model']} / {cell['label']} = {cell['value']:.6g}"
             f"  ({cell['source']}{f', training seed {seed}' if isinstance(seed, int) else ''})"]

    def file_line(name: str, entry: dict, extra: str = "") -> None:
        lines.append(f"  {name:<14} {entry['path']}  sha256 {entry['sha256'][:16]}...{extra}")

    if "over_seeds" in rec:  # a mean over training seeds: each seed's cell
        lines[0] += f"  [{cell['low']:.6g}, {cell['high']:.6g}], mean over seeds {rec['over_seeds']}"
        for inner in rec["cells"]:
            lines.append("  " + explain(inner).replace("\n", "\n  "))
        return "\n".join(lines)
    if "claims_file" in rec:  # a claim's difference: the claims file, the tables, then each cell it reads
        file_line("claims", rec["claims_file"])
        for name, entry in rec["tables"].items():
            file_line(f"table {name}", entry)
        for inner in rec["cells"]:
            lines.append("  " + explain(inner).replace("\n", "\n  "))
        return "\n".join(lines)
    if "paper_data" in rec:
        file_line("paper data", rec["paper_data"])
        lines.append(f"  {'citation':<14} {rec['citation']}")
        return "\n".join(lines)
    file_line("metrics", rec["metrics_file"])
    samples = rec["samples"]
    if "not_applicable" in samples:  # bits/dim cells (AGAVE): no samples
        lines.append(f"  {'samples':<14} not applicable: {samples['not_applicable']}")
    else:
        file_line("samples", samples, f"  (n={samples.get('n')}, seed={samples.get('seed')}, "
                                      f"method={samples.get('method', '-')})")
    ckpt = rec["checkpoint"]
    if "not_applicable" in ckpt:
        lines.append(f"  {'checkpoint':<14} not applicable: {ckpt['not_applicable']}")
    else:
        file_line("checkpoint", ckpt, f"  (step {ckpt['step']}, {ckpt['weights']} weights)")
    ref = rec["reference"]
    if "not_applicable" in ref:  # bits/dim cells (AGAVE): no feature statistics
        lines.append(f"  {'reference':<14} not applicable: {ref['not_applicable']}")
    else:
        file_line("reference", ref, f"  (n={ref['n']}, seed={ref['seed']}, extractor {ref['extractor']})")
        file_line("extractor", ref["extractor_weights"])
    data = rec["dataset"]
    for split, entry in data["prepared"].items():
        file_line(f"data/{split}", entry)
    for entry in data["raw"]:
        file_line("raw download", entry)
    cfg = rec["config"]
    if "not_applicable" not in cfg:
        model, train = cfg["model"], cfg["train"]
        if "head" in model:  # PixelCNN / PixelIQN
            lines.append(f"  {'model config':<14} head={model['head']} blocks={model['blocks']} "
                         f"filter={model['filter_size']} planes={model['planes']} output_planes={model['output_planes']}")
        else:  # other models (the AIQN-VAE): every field
            lines.append(f"  {'model config':<14} " + " ".join(f"{k}={v}" for k, v in model.items()))
        optimizer = train.get("optimizer", "adamax" if "adamax_beta1" in train else "-")  # CQF: Adamax
        lines.append(f"  {'train config':<14} {optimizer} lr={train['lr']} steps={train['steps']} "
                     f"batch={train['batch_size']} ema={train['ema_rate']} seed={train['seed']}")
    rule = rec["rule"]
    lines.append(f"  {'rule':<14} {rule['name']} {rule['wildcards']} -> table rule {rec.get('table_rule')}")
    code = rec["code"]
    lines.append(f"  {'code':<14} git {code.get('commit')}{' (dirty tree)' if code.get('dirty') else ''}")
    env = rec["environment"]
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)
    host = env.get("host") or read_runinfo(rec["metrics_file"]["path"]).get("host", "not recorded")  # host: run facts
    lines.append(f"  {'environment':<14} Python {env['python']}, {packages}; host {host}, device {env['device']}")
    return "\n".join(lines)
