"""reports/metrics.json: every number of every generated table, for `dvc metrics show` and `diff`.

Layout (docs/experiments.md): {table: {dataset: {model: {metric: {value, low, high, std, seeds}}}}} for
Table 1 and each method's table (our rows, the mean over seeds where a row has several), and
{"claims": {claim: {dataset: {difference, difference_low, ..., verdict}}}}. A metric is keyed by its
short name (FID, IS, bits/dim, ...), never by its full label, which carries sample counts: changing
sampling.n_samples then changes the number under the same key instead of renaming it, so `dvc
metrics diff` lines the two runs up. Where one model has several labels of one metric (AGAVE's exact
likelihood and its bounds), each is keyed by its label up to the first " (".
"""

from __future__ import annotations

import math

import pandas as pd

from aiqn.core.io import read_csv
from aiqn.report.claims import claim_key
from aiqn.report.tables import OURS_SOURCE, over_seeds

ROW_NUMBERS = ("value", "low", "high", "std")  # what a table cell shows; absent (NaN) ones are left out
CLAIM_NUMBERS = ("ours_a", "ours_b", "difference", "difference_low", "difference_high", "kid_difference", "kid_low",
                 "kid_high", "memorised_a", "memorised_b", "half_width")
CLAIM_WORDS = ("verdict", "kid_verdict")


def _number(value) -> float | None:
    """A finite float rounded for the JSON (6 decimals), or None for a missing or NaN value."""
    if value is None or value is pd.NA:
        return None
    value = float(value)
    return None if math.isnan(value) else round(value, 6)


def metric_keys(rows: pd.DataFrame) -> list[str]:
    """The key of each row of one (dataset, model): its metric, or its label up to the first " (" where
    the metric has several labels there (the full label if even that repeats)."""
    repeated = rows.groupby("metric")["label"].transform("nunique") > 1
    keys = [str(label).split(" (")[0] if many else str(metric)
            for metric, label, many in zip(rows["metric"], rows["label"], repeated)]
    if len(set(keys)) < len(keys):
        keys = [str(label) if many else key for key, label, many in zip(keys, rows["label"], repeated)]
    return keys


def table_metrics(table: pd.DataFrame) -> dict:
    """{dataset: {model: {metric: {value, low, high, std, seeds}}}} of a long table's own rows (source
    "ours"; the paper's numbers stay in paper/*.csv), each row's numbers as the rendered table shows them."""
    summary: dict = {}
    ours = over_seeds(table[table["source"] == OURS_SOURCE])
    for (dataset, model), rows in ours.groupby(["dataset", "model"], sort=False):
        cells = summary.setdefault(str(dataset), {}).setdefault(str(model), {})
        for key, row in zip(metric_keys(rows), rows.itertuples()):
            numbers = {name: _number(getattr(row, name)) for name in ROW_NUMBERS}
            cell = {name: number for name, number in numbers.items() if number is not None}
            cell["seeds"] = int(row.seeds)
            cells[key] = cell
    return summary


def claims_metrics(claims: pd.DataFrame) -> dict:
    """{claim: {dataset: {...}}} ('<claim> (chosen on validation)' for the rows at the validation-chosen
    checkpoint): each verdict's numbers (both models' values, the difference and its interval,
    the KID version, the memorised fractions) and its words (verdict, kid_verdict)."""
    summary: dict = {}
    for row in claims.to_dict("records"):
        numbers = {name: _number(row.get(name)) for name in CLAIM_NUMBERS}
        cell = {name: number for name, number in numbers.items() if number is not None}
        cell.update({name: str(row[name]) for name in CLAIM_WORDS if isinstance(row.get(name), str)})
        checkpoint = row.get("checkpoint")  # absent from a claims.csv written before the column
        key = claim_key(str(row["claim"]), checkpoint if isinstance(checkpoint, str) else "final")
        summary.setdefault(key, {})[str(row["dataset"])] = cell
    return summary


def metrics_document(tables: dict[str, str], claims_csv: str | None = None) -> dict:
    """The whole reports/metrics.json from the long CSVs of the generated tables ({name: path}) and the claims
    table, in the given order."""
    document = {name: table_metrics(read_csv(path)) for name, path in tables.items()}
    if claims_csv is not None:
        document["claims"] = claims_metrics(read_csv(claims_csv, "the claims table"))
    return document
