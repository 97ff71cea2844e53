"""Claims and verdicts: each headline claim of paper/claims.yaml tested on the generated tables.

A claim compares two rows (a, b) of one table on one metric and says a is better. For every dataset
in the table this module takes both rows' values and intervals, the difference d = a - b and a 95%
interval of d, and gives a verdict by one rule (VERDICT_RULE): the claim *holds* if the interval
lies wholly on the paper's side of 0, is *reversed* if it lies wholly on the other side, and is
*inconclusive* otherwise or when there is no interval.

Where a row's value comes from one training seed, its interval covers sampling noise only: the
bootstrap 95% interval of the FID (over the samples; its half-width / 1.96 is taken as the
standard error), the spread of KID over subsets and of IS over splits (taken as the standard
error: conservative). With per-seed values (one row per training seed, run.seeds) the interval is
a Student-t interval over seeds, paired by seed where both rows have the same seeds (Welch's
otherwise): it covers training and sampling noise.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from aiqn.report.tables import CHOSEN

Z95 = stats.norm.ppf(0.975)
VERDICT_RULE = ("holds: the 95% interval of a - b lies wholly on the claimed side of 0; reversed: wholly on the "
                "other side; inconclusive: it contains 0, or there is none")
KID_METRIC = "KID vs test"
MEMORISED = "memorised (pixels)"


@dataclass(frozen=True)
class Estimate:
    """One row's number: the mean over its seeds, a standard error (None: no interval) and the
    per-seed values; `noise` says what the interval covers."""

    value: float
    se: float | None
    per_seed: tuple[float, ...]
    noise: str
    seeds: tuple = ()


def load_claims(path) -> list[dict]:
    """The claims of a claims.yaml; the error names the file, the claim and the missing key."""
    with open(path) as handle:
        doc = yaml.safe_load(handle)
    if not isinstance(doc, dict) or not isinstance(doc.get("claims"), list):
        raise ValueError(f"{path}: expected a mapping with a 'claims' list")
    for i, claim in enumerate(doc["claims"]):
        for key in ("id", "paper", "where", "statement", "table", "metric", "better", "a", "b", "paper_values"):
            if key not in claim:
                raise ValueError(f"{path}: claims[{i}] ({claim.get('id', '?')}) has no {key!r}")
        if claim["better"] not in ("lower", "higher"):
            raise ValueError(f"{path}: claims[{i}] ({claim['id']}): better must be lower or higher")
    return doc["claims"]


def claims_on_models(claims: list[dict], table: str, models: list[str]) -> tuple[list[dict], list[str]]:
    """The claims a run can test when it trains only `models` (run.models and run.models_per_dataset):
    (the claims kept, the ids of the claims on `table` whose a or b pattern matches none of them). A run
    without the class-conditional models (profiles/long) leaves their claims out instead of failing
    (a misspelt pattern in paper/claims.yaml is caught by tests/test_claims.py, which matches every
    Table 1 claim against params.yaml's models)."""
    kept, left_out = [], []
    for claim in claims:
        sides = (claim["a"]["model"], claim["b"]["model"])
        if claim["table"] == table and not all(any(re.fullmatch(p, m) for m in models) for p in sides):
            left_out.append(claim["id"])
        else:
            kept.append(claim)
    return kept, left_out


def _rows(table: pd.DataFrame, side: dict, metric: str, dataset: str) -> pd.DataFrame:
    """The table's rows of one side of a claim on one dataset (one per seed; several labels are
    narrowed by `side['label']`, and then the first label in table order is kept)."""
    part = table[(table["source"] == "ours") & (table["dataset"] == dataset) & (table["metric"] == metric)]
    part = part[part["model"].astype(str).map(lambda m: re.fullmatch(side["model"], m) is not None)]
    if "label" in side:
        part = part[part["label"].astype(str).str.contains(side["label"], regex=False)]
    if len(part):
        part = part[(part["model"] == part["model"].iloc[0]) & (part["label"] == part["label"].iloc[0])]
    return part


def _bound_to(side: dict, first: dict, first_model: str) -> dict:
    """`side` with each {name} in its model pattern replaced by what the named group `name` of the
    `first` side's pattern matched in `first_model` (escaped): a claim can compare a row with the one it
    came from, e.g. a: 'AGAVE \\(lambda=(?P<lam>[0-9.]+)\\), no auxiliary loss', b: 'AGAVE \\(lambda={lam}\\)'."""
    model = side["model"]
    for name, value in re.fullmatch(first["model"], first_model).groupdict().items():
        model = model.replace("{" + name + "}", re.escape(value))
    return {**side, "model": model}


def _estimate(rows: pd.DataFrame) -> Estimate:
    if "seed" in rows:
        rows = rows.sort_values("seed", kind="stable")
    values = rows["value"].astype(float).to_numpy()
    per_seed = tuple(float(v) for v in values)
    seeds = tuple(rows["seed"].tolist()) if "seed" in rows else ()
    if len(values) >= 2:
        return Estimate(float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values))), per_seed,
                        f"{len(values)} seeds", seeds)
    row = rows.iloc[0]
    low, high, std = (float(row.get(k, float("nan"))) for k in ("low", "high", "std"))
    if not (math.isnan(low) or math.isnan(high)):
        over = "t interval over test images" if row.get("metric") == "bits/dim" else "bootstrap over samples"
        return Estimate(float(values[0]), (high - low) / (2 * Z95), per_seed, f"one seed; {over}")
    if not math.isnan(std):
        return Estimate(float(values[0]), std, per_seed, "one seed; spread over subsets/splits")
    return Estimate(float(values[0]), None, per_seed, "one seed; no interval")


def difference(a: Estimate, b: Estimate) -> tuple[float, float | None, float | None]:
    """a - b and its 95% interval: a t interval over seeds, paired by seed when both have the same
    seeds (at least 2), Welch's when both have at least 2 others, else a normal interval from the two
    standard errors; None without one."""
    d = a.value - b.value
    if len(a.per_seed) >= 2 and len(a.per_seed) == len(b.per_seed) and a.seeds == b.seeds:
        diffs = np.subtract(a.per_seed, b.per_seed)
        half = stats.t.ppf(0.975, len(diffs) - 1) * diffs.std(ddof=1) / math.sqrt(len(diffs))
        return d, d - half, d + half
    if len(a.per_seed) >= 2 and len(b.per_seed) >= 2:
        va, vb = a.se ** 2, b.se ** 2
        dof = (va + vb) ** 2 / (va ** 2 / (len(a.per_seed) - 1) + vb ** 2 / (len(b.per_seed) - 1)) if va + vb else 1
        half = stats.t.ppf(0.975, dof) * math.sqrt(va + vb)
        return d, d - half, d + half
    if a.se is None or b.se is None:
        return d, None, None
    half = Z95 * math.hypot(a.se, b.se)
    return d, d - half, d + half


def verdict(low: float | None, high: float | None, better: str) -> str:
    """VERDICT_RULE on the interval of a - b, for a claim that a is `better` (lower or higher)."""
    if low is None or high is None:
        return "inconclusive"
    good, bad = (high < 0, low > 0) if better == "lower" else (low > 0, high < 0)
    return "holds" if good else "reversed" if bad else "inconclusive"


def _fmt(value, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


CHECKPOINTS = (("final", ""), ("chosen on validation", CHOSEN))  # (checkpoint column, model-name suffix)


def claim_key(claim: str, checkpoint: str) -> str:
    """How a claim row is named in reports/metrics.json and the provenance: the claim's id at its final
    checkpoint, '<id> (chosen on validation)' at the validation-chosen one."""
    return claim if checkpoint == "final" else f"{claim} ({checkpoint})"


def _at_checkpoint(side: dict, suffix: str) -> dict:
    """A claim side's pattern for the rows '<model><suffix>' (Table 1's validation-chosen rows)."""
    return {**side, "model": f"(?:{side['model']}){re.escape(suffix)}"} if suffix else side


def evaluate_claims(claims: list[dict], tables: dict[str, pd.DataFrame], strict: bool = True) -> pd.DataFrame:
    """One row per (claim, dataset, checkpoint): the paper's values, ours, a - b with its interval and
    verdict, the KID version where the claim asks for it, and the memorisation fraction of both models.
    `checkpoint` is 'final', or 'chosen on validation' where the table has both models' rows at the
    checkpoint each seed's FID vs val chose (Table 1). `strict`: refuse a claim that no dataset tests."""
    out = []
    for claim in claims:
        if claim["table"] not in tables:
            raise ValueError(f"claim {claim['id']}: table {claim['table']!r} was not given; tables: {sorted(tables)}")
        table = tables[claim["table"]]
        datasets = pd.unique(table[table["source"] == "ours"]["dataset"])
        tested = 0
        for dataset, (checkpoint, suffix) in ((d, c) for d in datasets for c in CHECKPOINTS):
            side_a = _at_checkpoint(claim["a"], suffix)
            rows_a = _rows(table, side_a, claim["metric"], dataset)
            side_b = _at_checkpoint(claim["b"], suffix)
            side_b = _bound_to(side_b, side_a, str(rows_a["model"].iloc[0])) if len(rows_a) else side_b
            rows_b = _rows(table, side_b, claim["metric"], dataset)
            if not len(rows_a) or not len(rows_b):  # the dataset runs only some models (run.models_per_dataset)
                continue
            tested += 1
            a, b = _estimate(rows_a), _estimate(rows_b)
            d, low, high = difference(a, b)
            row = {"claim": claim["id"], "paper": claim["paper"], "where": claim["where"],
                   "statement": claim["statement"], "dataset": dataset, "checkpoint": checkpoint,
                   "metric": claim["metric"],
                   "better": claim["better"], "model_a": rows_a["model"].iloc[0], "model_b": rows_b["model"].iloc[0],
                   "label_a": rows_a["label"].iloc[0], "label_b": rows_b["label"].iloc[0]}
            paper = claim["paper_values"] or {}
            row.update(paper_dataset=paper.get("dataset"), paper_a=paper.get("a"), paper_b=paper.get("b"),
                       ours_a=a.value, ours_b=b.value, ours_a_per_seed=list(a.per_seed),
                       ours_b_per_seed=list(b.per_seed), difference=d, difference_low=low, difference_high=high,
                       half_width=None if low is None else (high - low) / 2,
                       noise=a.noise if a.noise == b.noise else f"{a.noise} / {b.noise}",
                       verdict=verdict(low, high, claim["better"]))
            if claim.get("kid"):
                kid_a = _rows(table, side_a, KID_METRIC, dataset)
                kid_b = _rows(table, side_b, KID_METRIC, dataset)
                if len(kid_a) and len(kid_b):
                    kd, klow, khigh = difference(_estimate(kid_a), _estimate(kid_b))
                    row.update(kid_difference=kd, kid_low=klow, kid_high=khigh, kid_verdict=verdict(klow, khigh, "lower"))
            for side, rows in (("a", rows_a), ("b", rows_b)):
                mem = _rows(table, {"model": re.escape(str(rows["model"].iloc[0]))}, MEMORISED, dataset)
                row[f"memorised_{side}"] = float(mem["value"].mean()) if len(mem) else None
            out.append(row)
        if not tested and strict:
            models = sorted(set(map(str, table[table["source"] == "ours"]["model"])))
            raise ValueError(f"claim {claim['id']}: no dataset of {claim['table']} has {claim['metric']} rows matching "
                             f"both {claim['a']} and {claim['b']}; its rows: {', '.join(models)}")
    return pd.DataFrame(out)


def render_markdown(frame: pd.DataFrame) -> str:
    """The claims table as Markdown: the verdict rule in the caption, one row per claim and dataset."""
    lines = ["# Claims and verdicts", "",
             f"Verdict rule: {VERDICT_RULE}. a - b is ours (the first model minus the second) on the claim's metric; "
             "'noise' says what the interval covers: with several training seeds, a Student-t interval over seeds "
             "(paired by seed), which covers training and sampling noise; with one seed, sampling noise only (a "
             "bootstrap of the FID over samples; the spread over splits or subsets for IS and KID; for bits/dim a t "
             "interval over test images, each row's alone: conservative, as both rows score the same images). 'KID' is the "
             "same comparison on KID x1000 vs the held-out test images. 'memorised': fraction of each model's samples "
             "closer to a training image than 95% of test images (pixels). 'checkpoint': each model's final checkpoint, "
             "or (Table 1) each seed's checkpoint with the lowest FID vs the validation split. 'resolves': the interval's "
             "half-width, the smallest difference these seeds could tell from 0; how a - b moves with "
             "the training budget: reports/figures/<dataset>_budget.png. Explanations: docs/verdicts.md.", ""]
    header = ["claim", "paper (where)", "dataset", "checkpoint", "metric", "a vs b", "paper a / b", "ours a / b", "a - b [95%]",
              "resolves", "noise", "verdict", "KID a - b [95%]", "memorised a / b"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in frame.itertuples():
        kid = "–"
        if isinstance(getattr(r, "kid_difference", None), float) and not math.isnan(r.kid_difference):
            kid = f"{_fmt(r.kid_difference)} [{_fmt(r.kid_low)}, {_fmt(r.kid_high)}] {r.kid_verdict}"
        cells = [r.claim, f"{r.paper} ({r.where})", r.dataset, r.checkpoint, r.metric, f"{r.model_a} vs {r.model_b} ({r.better})",
                 f"{_fmt(r.paper_a)} / {_fmt(r.paper_b)}", f"{_fmt(r.ours_a)} / {_fmt(r.ours_b)}",
                 f"{_fmt(r.difference)} [{_fmt(r.difference_low)}, {_fmt(r.difference_high)}]",
                 "–" if pd.isna(r.half_width) else f"±{_fmt(r.half_width)}", r.noise,
                 f"**{r.verdict}**", kid, f"{_fmt(r.memorised_a)} / {_fmt(r.memorised_b)}"]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def budget_curve(claims: list[dict], records: pd.DataFrame, table: str = "table1") -> pd.DataFrame:
    """Every claim on `table` at every checkpoint step: `records` are the long metric records of every
    checkpoint (aiqn.report.tables.load_metric_records), and each step's records are judged as if they
    were the final ones (evaluate_claims: a - b, its 95% interval over seeds, the verdict). One row per
    (claim, dataset, step); a claim whose models lack a step is left out there."""
    ours = records[records["step"].notna()].assign(source="ours")
    frames = []
    for step in sorted(ours["step"].unique()):
        frame = evaluate_claims([c for c in claims if c["table"] == table], {table: ours[ours["step"] == step]},
                                strict=False)
        if len(frame):
            frames.append(frame.assign(step=int(step)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def plot_budget_curve(frame: pd.DataFrame, dataset: str, out_path) -> None:
    """One panel per claim: a - b with its 95% interval against the training step, 0 marked and the
    claimed side shaded, each point coloured by its verdict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"holds": "tab:green", "reversed": "tab:red", "inconclusive": "tab:gray"}
    claims = list(dict.fromkeys(frame["claim"]))
    cols = min(3, max(1, len(claims)))
    rows = math.ceil(len(claims) / cols) if claims else 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax, claim in zip(axes.flat, claims):
        part = frame[frame["claim"] == claim].sort_values("step")
        low = part["difference_low"].astype(float).to_numpy()
        high = part["difference_high"].astype(float).to_numpy()
        d = part["difference"].astype(float).to_numpy()
        ax.plot(part["step"], d, color="black", lw=1, alpha=0.6)
        for step, value, lo, hi, word in zip(part["step"], d, low, high, part["verdict"]):
            ax.errorbar([step], [value], yerr=[[value - lo], [hi - value]] if not math.isnan(lo) else None,
                        fmt="o", color=colours[word], capsize=3)
        ax.axhline(0, color="black", lw=0.8)
        better = part["better"].iloc[0]
        top = ax.get_ylim()
        ax.axhspan(top[0] if better == "lower" else 0, 0 if better == "lower" else top[1], color="tab:green", alpha=0.07)
        ax.set_ylim(top)
        ax.set_title(f"{claim}\n{part['model_a'].iloc[0]} - {part['model_b'].iloc[0]} ({part['metric'].iloc[0]})",
                     fontsize=9)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(claims):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=w) for w, c in colours.items()]
    fig.legend(handles=handles, loc="upper right", fontsize=8, ncols=3, title="verdict at that step")
    fig.suptitle(f"{dataset}: each Table 1 claim's a - b (95% interval over seeds)\nagainst the training budget; "
                 "shaded: the side the paper claims", fontsize=10, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
