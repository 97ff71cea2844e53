"""The verbs that summarise a finished run for DVC and the HTML report: `metrics` (reports/metrics.json,
every number of every table), `plot-data` (the CSVs behind `dvc plots show`) and `runtime-report`
(wall time, CPU time and peak memory per rule, from Snakemake's benchmark files)."""

from __future__ import annotations

import logging

from aiqn.core.verbs import Declare, pairs

log = logging.getLogger("aiqn")


def cmd_metrics(args) -> None:
    from aiqn.core.io import write_json
    from aiqn.report.summary import metrics_document

    document = metrics_document(pairs(args.tables), args.claims)
    write_json(args.out, document)
    log.info("wrote %s (%s)", args.out, ", ".join(document))


def cmd_plot_data(args) -> None:
    from aiqn.report.dvc_plots import write_fid_series, write_loss_series

    written = write_loss_series(pairs(args.train_logs), args.out_dir)
    written += write_fid_series(args.metrics, args.out_dir)
    log.info("wrote %d plot files under %s", len(written), args.out_dir)


def cmd_runtime_report(args) -> None:
    from aiqn.report.runtime import write_runtime_report

    import json

    table = write_runtime_report(args.benchmarks, args.csv, args.md, args.figure, job_log=args.job_log,
                                 log_patterns=json.loads(args.log_patterns) if args.log_patterns else None)
    log.info("wrote %s, %s, %s (%d rules)", args.csv, args.md, args.figure, len(table))


def add_verbs(verb: Declare) -> None:
    """Declare the summary verbs."""
    p = verb("metrics", cmd_metrics, "reports/metrics.json: every number of every generated table (DVC metrics)")
    p.add_argument("--tables", nargs="+", required=True, help="name=reports/tables/<name>.csv ...")
    p.add_argument("--claims", default=None, help="reports/tables/claims.csv")
    p.add_argument("--out", required=True)

    p = verb("plot-data", cmd_plot_data, "the CSVs behind `dvc plots show`: training losses and FID over training")
    p.add_argument("--train-logs", nargs="+", required=True, help="<dataset>/<run>/<series>=train_log.csv ...")
    p.add_argument("--metrics", nargs="+", required=True, help="metrics JSON files of every kept checkpoint")
    p.add_argument("--out-dir", required=True)

    p = verb("runtime-report", cmd_runtime_report, "wall time, CPU time and peak memory per rule (benchmark files)")
    p.add_argument("--benchmarks", required=True, help="logs/benchmarks")
    p.add_argument("--job-log", default=None, help="the fork server's job log (logs/forkserver.tsv): exact CPU and memory")
    p.add_argument("--log-patterns", default=None, help='JSON {"rule": "its log: pattern", ...}: names the jobs of --job-log')
    for name in ("csv", "md", "figure"):
        p.add_argument(f"--{name}", required=True)
