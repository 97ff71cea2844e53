"""The data behind `dvc plots show` (dvc.yaml's plots): one CSV per curve family, long form.

reports/plots/loss/<dataset>_<run>.csv    step, loss, series (seed-<s>): every model's training loss, a file per
                                          model (Table 1's) or method run (vae-<variant>, agave-<run>, cqf-<variant>),
                                          since losses of different models are in different units
reports/plots/fid/<dataset>.csv           step, FID, series (<model> seed-<s>): every kept checkpoint's FID
                                          (Figure 4 analogue), all of a dataset's models in one file

The `series` column is what the project's DVC template (.dvc/plots/series.json) colours by; each
revision (`dvc plots diff`, `dvc exp show`) gets its own dash.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from aiqn.core.io import read_csv, write_csv_atomic

from aiqn.report.tables import load_metric_records


def _write(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(frame, path, index=False, lineterminator="\n")


def write_loss_series(train_logs: dict[str, str], out_dir: str | Path) -> list[Path]:
    """`train_logs`: "<dataset>/<run>/<series>" -> train_log.csv (columns step, loss, ...). Writes one file per
    (dataset, run) with its series stacked; returns the paths."""
    groups: dict[tuple[str, str], list[pd.DataFrame]] = {}
    for key, path in train_logs.items():
        parts = key.split("/")
        if len(parts) != 3:
            raise ValueError(f"--train-logs {key}={path}: the key must be <dataset>/<run>/<series>")
        log = read_csv(path, "a training log")
        if not {"step", "loss"} <= set(log.columns):
            raise ValueError(f"{path}: a training log needs 'step' and 'loss' columns (it has {list(log.columns)})")
        groups.setdefault((parts[0], parts[1]), []).append(log[["step", "loss"]].assign(series=parts[2]))
    written = []
    for (dataset, run), frames in groups.items():
        path = Path(out_dir) / "loss" / f"{dataset}_{run}.csv"
        _write(pd.concat(frames, ignore_index=True), path)
        written.append(path)
    return written


def write_fid_series(metric_files: list[str], out_dir: str | Path, metric: str = "FID") -> list[Path]:
    """Every checkpoint's `metric` from the metric files (those with a step: models, not the real-data floor),
    one file per dataset, ordered by model, seed and step; returns the paths."""
    records = load_metric_records(metric_files)
    records = records[(records["metric"] == metric) & records["step"].notna()]
    written = []
    for dataset, rows in records.groupby("dataset", sort=False):
        rows = rows.sort_values(["model", "seed", "step"], kind="stable")
        series = rows["model"].astype(str) + " seed-" + rows["seed"].astype("Int64").astype(str)
        frame = pd.DataFrame({"step": rows["step"].astype(int), metric: rows["value"], "series": series})
        path = Path(out_dir) / "fid" / f"{dataset}.csv"
        _write(frame, path)
        written.append(path)
    return written
