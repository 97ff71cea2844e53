"""Table 1 analogue: our final-checkpoint metrics next to the paper's own numbers.

Our rows come from the evaluation stage's metric JSON files (one per dataset, model and
checkpoint step); the paper's rows come from `paper/aiqn_table1.csv`. Both are kept in one
long-form frame (one row per metric value) and rendered to CSV, Markdown and LaTeX, where the
paper's numbers sit in their own clearly marked section, never in our columns.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from aiqn.core.intervals import t_interval
from aiqn.core.io import read_json, write_csv_atomic, write_text_atomic

OURS_SOURCE = "ours"
OURS_HEADING = "Ours (this pipeline)"
PAPER_HEADING = "Paper (Ostrovski et al. 2018, Table 1; CIFAR-10/ImageNet32, Inception-v3)"
CAPTION = (
    "Table 1 analogue: sample quality of the final checkpoint of each model "
    "(FID and KID lower is better, IS higher is better, bits/dim lower is better); "
    "each column header is the metric label, which names the feature extractor, sample counts and split. "
    "Where a model has several training seeds (the 'seeds' column) each number is the mean over them and "
    "[low, high] a 95% Student-t interval over seeds (training and sampling noise; every seed's value is in the "
    "long CSV). With one seed, FID's [low, high] is a bootstrap 95% interval (shifted by its bias) over that "
    "seed's samples, and ± is a spread (IS over splits, KID over subsets). The 'vs train' and 'vs test' columns are N vs N, the real-data "
    "floor alike (n test images against the n training images of the reference, n other training images "
    "against the n test images). 'memorised' is the fraction of samples closer to a training image than "
    "the given percentile of test images are (the floor's value is that percentile by construction); "
    "a model that copies its training set scores near 1. A '(chosen on validation)' row is the same model at "
    "the checkpoint with the lowest 'FID vs val' (its samples against the validation split, carved from the "
    "training split and never trained on), chosen per seed (the step column then lists each seed's step); the "
    "claims compare the final rows."
)

RECORD_COLUMNS = [
    "dataset", "model", "step", "seed", "final", "metric", "value", "std", "low", "high", "label",
    "n_samples", "extractor", "source", "metrics_file",
]
METRIC_ORDER = ("FID", "FID vs train", "FID vs test", "KID vs train", "KID vs test", "IS", "bits/dim",
                "memorised (pixels)", "memorised (features)")
MISSING = "–"


@dataclass(frozen=True)
class TableText:
    """What a rendered table says about itself: file stem, title, caption, the paper's heading."""

    name: str = "table1"
    title: str = "Table 1 (analogue)"
    caption: str = CAPTION
    paper_heading: str = PAPER_HEADING


TABLE1 = TableText()


def _is_real_data(model: str) -> bool:
    return str(model).strip().lower().startswith("real data")


def row_order(models) -> list[str]:
    """The models' names (lower case) in order of first appearance, the real-data floor left out: the
    caller orders a table's rows by the order of the metric files it passes."""
    return list(dict.fromkeys(str(m).strip().lower() for m in models if not _is_real_data(m)))


def _model_rank(model: str, order: list[str]) -> int:
    """A model's place in `order` (others after them), the real-data floor last."""
    name = str(model).strip().lower()
    if _is_real_data(name):
        return len(order) + 1
    return order.index(name) if name in order else len(order)


def _metric_rank(metric: str) -> int:
    return METRIC_ORDER.index(metric) if metric in METRIC_ORDER else len(METRIC_ORDER)


def _float_or_nan(value) -> float:
    return float("nan") if value is None else float(value)


def _empty_records() -> pd.DataFrame:
    frame = pd.DataFrame({col: pd.Series(dtype=object) for col in RECORD_COLUMNS})
    frame["step"] = frame["step"].astype("Int64")
    frame["seed"] = frame["seed"].astype("Int64")
    frame["value"] = frame["value"].astype(float)
    for column in ("std", "low", "high"):
        frame[column] = frame[column].astype(float)
    return frame


def load_metric_records(paths: list[str]) -> pd.DataFrame:
    """Read metric JSON files into a long frame, one row per metric entry (source = "ours")."""
    rows = []
    for path in paths:
        path = str(path)
        doc = read_json(path, "a metrics record")
        if not isinstance(doc, dict) or not isinstance(doc.get("metrics"), list):
            raise ValueError(f"{path}: metrics file has no 'metrics' list")
        for key in ("dataset", "model"):
            if key not in doc:
                raise ValueError(f"{path}: metrics file has no {key!r} field")
        for i, entry in enumerate(doc["metrics"]):
            if not isinstance(entry, dict) or "metric" not in entry or "value" not in entry:
                raise ValueError(f"{path}: metrics[{i}] needs 'metric' and 'value' fields")
            rows.append({
                "dataset": doc["dataset"],
                "model": doc["model"],
                "step": doc.get("step"),
                "seed": doc.get("seed"),  # the training seed (run.seeds); none for the real-data floor
                "final": bool(doc.get("final", False)),
                "metric": entry["metric"],
                "value": _float_or_nan(entry["value"]),
                "std": _float_or_nan(entry.get("std")),
                "low": _float_or_nan(entry.get("low")),
                "high": _float_or_nan(entry.get("high")),
                "label": entry.get("label", entry["metric"]),
                "n_samples": doc.get("n_samples"),
                "extractor": doc.get("extractor"),
                "source": OURS_SOURCE,
                "metrics_file": path,
            })
    if not rows:
        return _empty_records()
    frame = pd.DataFrame(rows, columns=RECORD_COLUMNS)
    for column in ("step", "seed"):
        frame[column] = _integers(frame[column])
    return frame


def _integers(values) -> pd.arrays.IntegerArray:
    """A nullable integer column (None and NaN become <NA>)."""
    return pd.array([None if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA else int(v)
                     for v in values], dtype="Int64")


def _sort_ours(frame: pd.DataFrame) -> pd.DataFrame:
    """By dataset, then model in the order the metric files named them (the real-data floor last), then metric."""
    order = row_order(frame["model"])
    keyed = frame.assign(
        _model_rank=frame["model"].map(lambda model: _model_rank(model, order)),
        _metric_rank=frame["metric"].map(_metric_rank),
    )
    keyed = keyed.sort_values(
        ["dataset", "_model_rank", "model", "_metric_rank", "label", "seed"], kind="stable"
    )
    return keyed.drop(columns=["_model_rank", "_metric_rank"]).reset_index(drop=True)


CHOSEN = " (chosen on validation)"  # the suffix of a model's row at the checkpoint its 'FID vs val' chose


def chosen_on_validation(records: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, model, seed) scored at several checkpoints with an 'FID vs val': every record of
    the checkpoint with the lowest one, as the row '<model> (chosen on validation)' (its step is the
    chosen one). Nothing for a model with one checkpoint, where the choice is the final row itself."""
    keys = ["dataset", "model", "seed"]
    val = records[records["metric"] == "FID vs val"]
    val = val[val.groupby(keys, dropna=False)["step"].transform("nunique") > 1]
    if val.empty:
        return records.iloc[0:0]
    best = val.loc[val.groupby(keys, dropna=False)["value"].idxmin(), keys + ["step"]]
    chosen = records.merge(best, on=keys + ["step"], how="inner")
    return chosen.assign(model=chosen["model"] + CHOSEN, final=True)[RECORD_COLUMNS]


def build_table1(metric_paths: list[str], paper_csv: str) -> pd.DataFrame:
    """Our final-checkpoint records, then each model's records at the checkpoint chosen on validation
    (`chosen_on_validation`), followed by the paper's rows. Ours are sorted by dataset, then by model in
    the order of first appearance in `metric_paths` (the rule's order; the real-data floor last), then by
    metric (FID, IS, bits/dim, others)."""
    records = load_metric_records(metric_paths)
    ours = pd.concat([records[records["final"].astype(bool)], chosen_on_validation(records)], ignore_index=True)
    dup = ours.duplicated(["dataset", "model", "label", "seed"], keep=False)
    if dup.any():
        clash = ours.loc[dup, ["dataset", "model", "label", "seed", "metrics_file"]]
        raise ValueError(
            "several final records for the same dataset/model/metric label/seed:\n"
            + clash.to_string(index=False)
        )
    ours = _sort_ours(ours)

    paper = pd.read_csv(paper_csv, dtype={"dataset": str, "model": str, "metric": str,
                                          "label": str, "source": str})
    missing = {"dataset", "model", "metric", "value", "label", "source"} - set(paper.columns)
    if missing:
        raise ValueError(f"{paper_csv}: missing columns {sorted(missing)}")
    bad = ~paper["source"].astype(str).str.startswith("paper")
    if bad.any():
        raise ValueError(f"{paper_csv}: every row's source must start with 'paper'")
    paper = paper.assign(
        step=pd.array([pd.NA] * len(paper), dtype="Int64"),
        seed=pd.array([pd.NA] * len(paper), dtype="Int64"),
        final=True,
        std=float("nan"),
        low=float("nan"),
        high=float("nan"),
        n_samples=None,
        extractor=None,
        metrics_file=str(paper_csv),
    )[RECORD_COLUMNS]
    paper["value"] = paper["value"].astype(float)

    parts = [part for part in (ours, paper) if len(part)]
    if not parts:
        return _empty_records()
    table = pd.concat(parts, ignore_index=True)
    table["step"] = table["step"].astype("Int64")
    table["seed"] = table["seed"].astype("Int64")
    return table


def over_seeds(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, model, metric label) of the long table: where a row has several training
    seeds, the mean, a 95% t interval over seeds (low, high), the seeds' standard deviation (std) and
    `seeds` = their count; a row with one seed (or none: the floor, the paper) is kept as it is, with
    its own interval or spread. Rows keep the long table's order."""
    keys = ["source", "dataset", "model", "metric", "label"]
    rows = []
    for _, group in table.groupby(keys, sort=False, dropna=False):
        first = group.iloc[0].to_dict()
        seeds = group["seed"].dropna()
        first["seeds"] = len(seeds)
        if len(group) > 1:
            mean, low, high = t_interval(group["value"])
            first.update(value=mean, low=low, high=high, std=float(group["value"].std(ddof=1)), seed=pd.NA,
                         metrics_file=";".join(group["metrics_file"].astype(str)))
            if "step" in group and group["step"].nunique() > 1:  # a checkpoint chosen per seed: each seed's step, in seed order
                first.update(step=pd.NA, steps="/".join(str(s) for s in group["step"]))
        rows.append(first)
    frame = pd.DataFrame(rows, columns=list(dict.fromkeys([*table.columns, "std", "low", "high", "seeds", "steps"])))
    frame["seed"] = frame["seed"].astype("Int64")
    return frame


def wrap_label(label: str, width: int = 38) -> list[str]:
    """Split a metric label into lines of at most ~`width` characters, breaking at ", " or " (."""
    pieces = re.split(r"(?<=,) | (?=\()", str(label))
    lines = [pieces[0]]
    for piece in pieces[1:]:
        if len(lines[-1]) + 1 + len(piece) <= width:
            lines[-1] += " " + piece
        else:
            lines.append(piece)
    return lines


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _format_value(value: float, std: float, low: float = float("nan"), high: float = float("nan")) -> str:
    """'5.81', '5.81 ± 0.12' (a spread: IS's over splits, KID's over subsets) or '5.81 [5.20, 6.45]'
    (a 95% interval: a bootstrap, or over seeds)."""
    if not _present(value):
        return MISSING
    text = f"{value:.2f}"
    if _present(low) and _present(high):
        text += f" [{low:.2f}, {high:.2f}]"
    elif _present(std):
        text += f" ± {std:.2f}"
    return text


def _sections(table: pd.DataFrame, text: TableText = TABLE1):
    """Yield (heading, dataset, wide frame) blocks: ours first (the mean over seeds), then the paper's."""
    table = over_seeds(table)
    is_ours = table["source"] == OURS_SOURCE
    for heading, part in ((OURS_HEADING, table[is_ours]), (text.paper_heading, table[~is_ours])):
        blocks = []
        for dataset in pd.unique(part["dataset"]):
            blocks.append((dataset, _pivot(part[part["dataset"] == dataset], ours=heading == OURS_HEADING)))
        yield heading, blocks


def _pivot(part: pd.DataFrame, ours: bool) -> pd.DataFrame:
    """One row per model (in table order), one column per metric label (FID, IS, bits/dim)."""
    labels = (
        part[["metric", "label"]].drop_duplicates()
        .assign(_rank=lambda f: f["metric"].map(_metric_rank))
        .sort_values(["_rank", "label"], kind="stable")["label"].tolist()
    )
    rows = []
    for model in pd.unique(part["model"]):
        sub = part[part["model"] == model]
        row = {"model": model}
        if ours:
            steps = [int(s) for s in sub["step"].dropna().unique()] or list(sub["steps"].dropna().unique()[:1])
            row["step"] = ", ".join(str(s) for s in steps) if steps else MISSING
            row["seeds"] = str(int(sub["seeds"].max())) if sub["seeds"].max() > 0 else MISSING
        for label in labels:
            hit = sub[sub["label"] == label]
            row[label] = (
                _format_value(hit["value"].iloc[0], hit["std"].iloc[0], hit["low"].iloc[0], hit["high"].iloc[0])
                if len(hit) else MISSING
            )
        rows.append(row)
    columns = ["model"] + (["step", "seeds"] if ours else []) + labels
    return pd.DataFrame(rows, columns=columns)


def _md_escape(text) -> str:
    return str(text).replace("|", "\\|")


def _render_markdown(table: pd.DataFrame, text: TableText = TABLE1) -> str:
    lines = [f"# {text.title}", "", text.caption, ""]
    for heading, blocks in _sections(table, text):
        lines += [f"## {heading}", ""]
        if not blocks:
            lines += ["_no records_", ""]
        for dataset, wide in blocks:
            wide = wide.rename(columns=_md_escape).map(_md_escape)  # '|' would split a cell
            lines += [f"### {dataset}", "", wide.to_markdown(index=False, disable_numparse=True), ""]
    return "\n".join(lines)


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "±": r"$\pm$", "–": "--",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters (&, %, $, #, _, braces, ~, ^, backslash) and ±, –."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def _latex_header(label: str) -> str:
    """A header cell; long labels become a stacked nested tabular (no extra packages needed)."""
    lines = wrap_label(label, width=24)
    if len(lines) == 1:
        return latex_escape(label)
    body = r" \\ ".join(latex_escape(line) for line in lines)
    return r"\begin{tabular}[b]{@{}c@{}}" + body + r"\end{tabular}"


def _render_latex(table: pd.DataFrame, text: TableText = TABLE1) -> str:
    lines = [
        f"% {text.title}, written by aiqn.report.tables.write_table1 (plain tabular, no packages).",
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{latex_escape(text.caption)}}}",
        rf"\label{{tab:{text.name}}}",
    ]
    for heading, blocks in _sections(table, text):
        if not blocks:
            lines += [rf"\par\medskip\textbf{{{latex_escape(heading)}}}: no records.\par"]
        for dataset, wide in blocks:
            ncol = wide.shape[1]
            lines += [
                r"\par\medskip",
                r"\begin{tabular}{l" + "r" * (ncol - 1) + "}",
                r"\hline",
                rf"\multicolumn{{{ncol}}}{{l}}{{\textbf{{{latex_escape(heading)}}} -- "
                rf"{latex_escape(dataset)}}} \\",
                r"\hline",
                " & ".join(_latex_header(c) for c in wide.columns) + r" \\",
                r"\hline",
            ]
            for _, row in wide.iterrows():
                lines.append(" & ".join(latex_escape(v) for v in row.tolist()) + r" \\")
            lines += [r"\hline", r"\end{tabular}"]
    lines += [r"\end{table}", ""]
    return "\n".join(lines)


def write_table1(table: pd.DataFrame, out_dir, text: TableText = TABLE1) -> dict[str, str]:
    """Write {name}.csv (long form), {name}.md and {name}.tex under `out_dir` (name: text.name,
    table1 by default); return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: str(out / f"{text.name}.{kind}") for kind in ("csv", "md", "tex")}
    contents = {
        "md": _render_markdown(table, text),
        "tex": _render_latex(table, text),
    }
    write_csv_atomic(table, paths["csv"], index=False)
    for key, text in contents.items():
        write_text_atomic(paths[key], text)
    return paths
