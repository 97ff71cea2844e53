"""Where a run's time and memory went: Snakemake's `benchmark:` files of every job, per rule.

Every rule that runs a command writes logs/benchmarks/<rule>[/<wildcards>...].tsv (one row: wall
seconds `s`, `cpu_time`, peak resident memory `max_rss` in MB, ...). `rule_runtimes` sums them per
rule; `write_runtime_report` writes the table (CSV, Markdown) and the figure of the HTML report.

A job the run's fork server ran (aiqn.core.forkserver) is a child of the server, outside the
process tree Snakemake samples, so its benchmark file's CPU and memory are the client's only. The
server logs the child's exact CPU time and peak RSS (wait4) in logs/forkserver.tsv with the job's
log file; `forked_records` names each job's rule by matching that file against the rules' `log:`
patterns, and those numbers replace the sampled ones of the rule (column `cpu_from`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from aiqn.core.io import read_csv, write_csv_atomic, write_text_atomic

COLUMNS = ["rule", "jobs", "wall_s", "cpu_s", "peak_rss_mb", "mean_rss_mb", "wall_share", "cpu_from"]
SAMPLED, EXACT = "sampled", "wait4"


def benchmark_records(root: str | Path) -> pd.DataFrame:
    """One row per benchmark file under `root`: its rule (the first path part, without .tsv), its path and
    the numbers Snakemake wrote (NA, for a job too short to sample, becomes NaN)."""
    root = Path(root)
    rows = []
    for path in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        relative = path.relative_to(root)
        frame = pd.read_csv(path, sep="\t")
        if frame.empty or "s" not in frame:
            raise ValueError(f"{path}: not a Snakemake benchmark file (no 's' column); delete it and rerun its job")
        record = frame.iloc[-1]  # a `repeat(...)` benchmark has a row per repetition; the last is the latest
        rows.append({"rule": relative.parts[0].removesuffix(".tsv"), "job": str(relative.with_suffix("")),
                     "wall_s": pd.to_numeric(record.get("s"), errors="coerce"),
                     "cpu_s": pd.to_numeric(record.get("cpu_time"), errors="coerce"),
                     "max_rss_mb": pd.to_numeric(record.get("max_rss"), errors="coerce")})
    return pd.DataFrame(rows, columns=["rule", "job", "wall_s", "cpu_s", "max_rss_mb"])


def _pattern_regex(pattern: str) -> re.Pattern:
    """A rule's `log:` pattern ('logs/train/{dataset}/{model}/seed-{seed}.log') as a regex of its files."""
    parts = re.split(r"\{[^{}]*\}", pattern)
    return re.compile("[^/]+".join(re.escape(part) for part in parts) + r"\Z")


def forked_records(job_log: str | Path, log_patterns: dict[str, str]) -> pd.DataFrame:
    """One row per job the fork server ran, the latest per log file (a rerun replaces a job's row): its rule
    (the rule of `log_patterns`, rule -> `log:` pattern, that its log file matches; rows matching none are
    left out), CPU seconds (user + system) and peak RSS in MB, both exact (wait4)."""
    columns = ["rule", "log", "cpu_s", "max_rss_mb"]
    job_log = Path(job_log)
    if not job_log.is_file() or not log_patterns:
        return pd.DataFrame(columns=columns)
    rows = read_csv(job_log, "the fork server's job log", sep="\t").drop_duplicates("log", keep="last")
    regexes = [(rule, _pattern_regex(pattern)) for rule, pattern in sorted(log_patterns.items())]
    named = []
    for row in rows.itertuples():
        rule = next((rule for rule, regex in regexes if regex.match(str(row.log))), None)
        if rule is not None:
            named.append({"rule": rule, "log": row.log, "cpu_s": row.user_s + row.system_s,
                          "max_rss_mb": row.max_rss_mb})
    return pd.DataFrame(named, columns=columns)


def rule_runtimes(records: pd.DataFrame, forked: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per rule: jobs, summed wall and CPU seconds, the largest and the mean peak RSS of its jobs, its share
    of the summed wall time, and where its CPU and memory come from (`cpu_from`: Snakemake's samples, or the
    fork server's exact figures where `forked`, from `forked_records`, has the rule's jobs); the slowest
    rule first."""
    if records.empty:
        return pd.DataFrame(columns=COLUMNS)
    grouped = records.groupby("rule")
    table = pd.DataFrame({
        "jobs": grouped.size(),
        "wall_s": grouped["wall_s"].sum(min_count=1),
        "cpu_s": grouped["cpu_s"].sum(min_count=1),
        "peak_rss_mb": grouped["max_rss_mb"].max(),
        "mean_rss_mb": grouped["max_rss_mb"].mean(),
    })
    table["cpu_from"] = SAMPLED
    if forked is not None and not forked.empty:
        exact = forked.groupby("rule").agg(cpu_s=("cpu_s", "sum"), peak_rss_mb=("max_rss_mb", "max"),
                                           mean_rss_mb=("max_rss_mb", "mean"))
        exact = exact[exact.index.isin(table.index)]
        table.loc[exact.index, ["cpu_s", "peak_rss_mb", "mean_rss_mb"]] = exact[["cpu_s", "peak_rss_mb", "mean_rss_mb"]]
        table.loc[exact.index, "cpu_from"] = EXACT
    table = table.reset_index()
    table["wall_share"] = table["wall_s"] / table["wall_s"].sum()
    return table.sort_values(["wall_s", "rule"], ascending=[False, True], kind="stable")[COLUMNS].reset_index(drop=True)


NO_JOBS = ("No benchmark files: no job ran in this checkout (its outputs were restored by DVC, or touched), so "
           "there is no time to report; a job that runs here writes logs/benchmarks/<rule>/...tsv.")


def _markdown(table: pd.DataFrame, records: pd.DataFrame) -> str:
    heading = "# Where the run's time and memory went\n\n"
    if records.empty:
        return f"{heading}{NO_JOBS}\n"
    total_wall, total_cpu = records["wall_s"].sum(), table["cpu_s"].sum()
    exact = int((table["cpu_from"] == EXACT).sum())
    shown = table.assign(wall_share=(100 * table["wall_share"]).round(1)).rename(columns={
        "wall_s": "wall (s)", "cpu_s": "CPU (s)", "peak_rss_mb": "peak RSS (MB)", "mean_rss_mb": "mean peak RSS (MB)",
        "wall_share": "wall (%)", "cpu_from": "CPU from"})
    return (f"{heading}{len(records)} jobs of {len(table)} rule(s): {total_wall:.0f} s of wall time summed over jobs "
            f"({total_cpu:.0f} s CPU). Jobs run in parallel, so the run itself took less than the sum. Peak RSS is "
            "the largest resident memory of one job of the rule. From Snakemake's benchmark files, "
            "logs/benchmarks/<rule>/...tsv (the job that ran last for each output, in this checkout). The wall time "
            "is exact; CPU time and peak RSS are sampled by Snakemake (each second for a job's first 30 s, then every "
            "30 s), so they undercount: what a job does after its last sample is missed (docs/benchmarks.md, "
            "\"Where the default run's time goes\"). "
            f"For the {exact} rule(s) whose `CPU from` says {EXACT}, the jobs ran in the run's fork server and CPU time "
            "and peak RSS are exact instead (the server's wait4, logs/forkserver.tsv).\n\n"
            f"{shown.to_markdown(index=False, floatfmt='.1f')}\n")


def plot_runtimes(table: pd.DataFrame, out_png: str) -> None:
    """Two panels, a bar per rule (the slowest on top): wall and CPU seconds summed over its jobs, and the peak
    resident memory of its largest job."""
    from aiqn.report.figures import _new_figure, _save

    rows = table.iloc[::-1]
    if rows.empty:
        fig = _new_figure(8, 1.5)
        fig.text(0.5, 0.5, NO_JOBS, ha="center", va="center", wrap=True, fontsize=9)
        _save(fig, out_png)
        return
    fig = _new_figure(11, max(2.5, 0.28 * len(rows) + 1.2))
    time_ax, memory_ax = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 2]})
    positions = range(len(rows))
    time_ax.barh([p + 0.2 for p in positions], rows["wall_s"], height=0.4, label="wall", color="tab:blue")
    time_ax.barh([p - 0.2 for p in positions], rows["cpu_s"], height=0.4, label="CPU (sampled: a lower bound, or exact: fork server)",
                 color="tab:orange")
    time_ax.set_yticks(list(positions), [f"{rule} ({jobs})" for rule, jobs in zip(rows["rule"], rows["jobs"])],
                       fontsize=8)
    time_ax.set_xlabel("seconds, summed over the rule's jobs (jobs in brackets)")
    time_ax.legend(loc="lower right", fontsize=8)
    memory_ax.barh(list(positions), rows["peak_rss_mb"], height=0.6, color="tab:green")
    memory_ax.set_xlabel("peak resident memory of one job (MB)")
    fig.suptitle("Where the run's time and memory went, per rule (Snakemake benchmark files)", fontsize=10)
    _save(fig, out_png)


def write_runtime_report(benchmark_dir: str, csv_path: str, md_path: str, png_path: str,
                         job_log: str | None = None, log_patterns: dict[str, str] | None = None) -> pd.DataFrame:
    """The per-rule table as CSV and Markdown, and its figure, from every benchmark file under `benchmark_dir` (none,
    as in a checkout DVC restored: an empty table that says so), with the fork server's exact figures from
    `job_log` (logs/forkserver.tsv) for the rules of `log_patterns` (rule -> its `log:` pattern)."""
    records = benchmark_records(benchmark_dir)
    table = rule_runtimes(records, forked_records(job_log, log_patterns or {}) if job_log else None)
    Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(table, csv_path, index=False, float_format="%.3f")
    write_text_atomic(md_path, _markdown(table, records))
    plot_runtimes(table, png_path)
    return table
