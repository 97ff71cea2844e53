"""Where a pipeline run's time went: job time per stage from a Snakemake log, and the fixed cost
each job pays before it does any work (interpreter, imports), times the number of jobs.

    python benchmarks/pipeline_cost.py .snakemake/log/<run>.snakemake.log            # after a run
    python benchmarks/pipeline_cost.py LOG --startup-repeats 5 --json cost.json

Job times come from the log's timestamps (one-second resolution) between a job's start block and
its "Finished jobid" line. Start-up is measured here, each figure the median of
`--startup-repeats` fresh processes: `python -c pass`, importing the CLI's parser (what every
`python -m aiqn VERB` job loads), and that plus torch (what a training, sampling or evaluation job
loads). A job's fixed cost is its verb's start-up; the sum over jobs is the fixed part of the run.
Run it with nothing else on the machine: start-up times are as noisy as the machine.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

STAGES = (  # first match wins
    ("training", re.compile(r"^(train_|sweep_trial)")),
    ("sampling and scoring", re.compile(r"^score_")),  # rules/score.smk: sample + evaluate in one process
    ("sampling", re.compile(r"^(sample|class_grid|inpainting|density)")),
    ("evaluation", re.compile(r"^(evaluate|reference_stats)")),
    ("tables and figures", re.compile(r"(table|figures|aiqn_vae$|sweep_report|sweep_rung|sweep_select|sweep_configs)")),
)
TORCH_FREE = re.compile(r"(table|figures|aiqn_vae$|sweep_report|sweep_rung|sweep_select|sweep_configs|^all$)")
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")


def stage_of(rule: str) -> str:
    for stage, pattern in STAGES:
        if pattern.search(rule):
            return stage
    return "other"


def job_times(text: str) -> list[dict]:
    """[{jobid, rule, seconds}] of every finished job in a Snakemake log's text."""
    now, starts, jobs = None, {}, []
    rule = None
    for line in text.splitlines():
        stamp = STAMP.match(line.strip())
        if stamp:
            now = datetime.strptime(stamp.group(1), "%a %b %d %H:%M:%S %Y")
            continue
        started = re.match(r"^(?:local)?rule (\w+):", line)
        if started:
            rule = started.group(1)
            continue
        jobid = re.match(r"^\s+jobid: (\d+)", line)
        if jobid and rule is not None:
            starts[int(jobid.group(1))] = (rule, now)
            rule = None
            continue
        finished = re.match(r"^Finished jobid: (\d+)", line)
        if finished and int(finished.group(1)) in starts:
            name, began = starts.pop(int(finished.group(1)))
            jobs.append({"jobid": int(finished.group(1)), "rule": name, "seconds": (now - began).total_seconds()})
    return jobs


def startup_seconds(code: str, repeats: int) -> float:
    """Median wall time of `python -c code` in fresh processes."""
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path, help="a .snakemake/log/*.snakemake.log of a finished run")
    parser.add_argument("--startup-repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--torch-everywhere", action="store_true",
                        help="the log is of code whose CLI imported torch for every verb (before 97731b2)")
    args = parser.parse_args()

    text = args.log.read_text()
    elapsed = re.search(r"Elapsed time: (\d+):(\d+):(\d+)", text)
    wall = None if not elapsed else int(elapsed[1]) * 3600 + int(elapsed[2]) * 60 + int(elapsed[3])
    jobs = job_times(text)
    bare = startup_seconds("pass", args.startup_repeats)
    cli = startup_seconds("import aiqn.cli; aiqn.cli.build_parser()", args.startup_repeats)
    with_torch = startup_seconds("import aiqn.cli, torch; aiqn.cli.build_parser()", args.startup_repeats)

    per_stage = collections.defaultdict(lambda: {"jobs": 0, "seconds": 0.0, "fixed": 0.0})
    for job in jobs:
        row = per_stage[stage_of(job["rule"])]
        row["jobs"] += 1
        row["seconds"] += job["seconds"]
        row["fixed"] += 0.0 if job["rule"] == "all" else (
            cli if TORCH_FREE.search(job["rule"]) and not args.torch_everywhere else with_torch)
    total_jobs = sum(r["jobs"] for r in per_stage.values())
    total_seconds = sum(r["seconds"] for r in per_stage.values())
    total_fixed = sum(r["fixed"] for r in per_stage.values())
    print(f"log: {args.log}; wall {wall} s; {total_jobs} jobs; job-seconds {total_seconds:.0f} (jobs run 2 at a time "
          "on 2 cores, so job-seconds exceed the wall time)")
    print(f"start-up per process: python {bare:.2f} s; + aiqn CLI {cli:.2f} s; + torch {with_torch:.2f} s")
    print(f"{'stage':<20}{'jobs':>6}{'job-seconds':>13}{'fixed s':>9}{'fixed %':>9}")
    for stage in [s for s, _ in STAGES] + ["other"]:
        if stage in per_stage:
            r = per_stage[stage]
            print(f"{stage:<20}{r['jobs']:>6}{r['seconds']:>13.0f}{r['fixed']:>9.0f}{100 * r['fixed'] / max(r['seconds'], 1):>8.0f}%")
    print(f"{'total':<20}{total_jobs:>6}{total_seconds:>13.0f}{total_fixed:>9.0f}{100 * total_fixed / total_seconds:>8.0f}%")
    if args.json:
        args.json.write_text(json.dumps({"log": str(args.log), "wall_s": wall, "startup_s": {
            "python": bare, "cli": cli, "cli_and_torch": with_torch}, "stages": dict(per_stage), "jobs": jobs},
            indent=2))


if __name__ == "__main__":
    main()
