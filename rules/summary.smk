# What DVC and the HTML report read once the tables exist:
#   metrics         reports/metrics.json: every number of Table 1, the methods' tables and the claims
#                   (`dvc metrics show` / `diff`; aiqn.report.summary)
#   plot_data       reports/plots/{loss,fid}/*.csv: every training loss and every checkpoint's FID
#                   (`dvc plots show`, dvc.yaml's plots; aiqn.report.dvc_plots)
#   runtime_report  reports/runtime/rules.{csv,md,png}: wall time, CPU time and peak memory per rule, summed
#                   over its jobs, from every job's benchmark file (logs/benchmarks/<rule>/...tsv); it runs
#                   last, and is a run fact, not a result: neither DVC nor git versions it.


include: "helpers/summary.smk"


rule metrics:
    input:
        tables=list(claim_tables().values()),
        claims="reports/tables/claims.csv",
    output:
        "reports/metrics.json",
    log:
        "logs/report/metrics.log",
    benchmark:
        "logs/benchmarks/metrics.tsv"
    conda:
        "../envs/aiqn.yaml"
    params:
        tables=" ".join(f"{name}={path}" for name, path in claim_tables().items()),
    shell:
        "python -m aiqn metrics --tables {params.tables} --claims {input.claims} --out {output} > {log} 2>&1"


rule plot_data:
    input:
        train_logs=list(training_logs().values()),
        metrics=[f for dataset in config["run"]["datasets"] for f in metric_files(dataset)],
    output:
        directory("reports/plots"),
    log:
        "logs/report/plot_data.log",
    benchmark:
        "logs/benchmarks/plot_data.tsv"
    conda:
        "../envs/aiqn.yaml"
    params:
        train_logs=" ".join(f"{key}={path}" for key, path in training_logs().items()),
    shell:
        "python -m aiqn plot-data --train-logs {params.train_logs} --metrics {input.metrics} --out-dir {output}"
        " > {log} 2>&1"


rule runtime_report:
    input:
        all_reports(),
    output:
        csv=report(RUNTIME_REPORT[0], caption="../report/runtime.rst", category="Runtime"),
        md=RUNTIME_REPORT[1],
        figure=report(RUNTIME_REPORT[2], caption="../report/runtime.rst", category="Runtime"),
    log:
        "logs/report/runtime_report.log",
    conda:
        "../envs/aiqn.yaml"
    params:
        job_log=FORK_SERVER_JOB_LOG,
        log_patterns=lambda w: as_json({r.name: str(r.log[0]) for r in workflow.rules if r.log}),
    shell:
        "python -m aiqn runtime-report --benchmarks logs/benchmarks --csv {output.csv} --md {output.md}"
        " --figure {output.figure} --job-log {params.job_log} --log-patterns {params.log_patterns:q} > {log} 2>&1"
