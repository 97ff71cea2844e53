# Reproduction pipeline for "Autoregressive Quantile Networks for Generative Modeling"
# (Ostrovski, Dabney, Munos, ICML 2018). `snakemake --cores all` regenerates every table and
# figure from raw data; the DAG lives here only (dvc.yaml wraps its targets).
from snakemake.utils import min_version, validate

from aiqn.core.forkserver import start_server as start_fork_server

min_version("9.0")


include: "rules/helpers/params_file.smk"


check_params_file("params.yaml")


configfile: "params.yaml"


validate(config, "schemas/params.schema.yaml")


report: "report/workflow.rst"


# One fork server per run imports torch and the package once; every `python -m aiqn` job is then a
# fork of it, not a fresh interpreter (src/aiqn/core/forkserver.py; AIQN_NO_FORK_SERVER=1 turns it off).
onstart:
    start_fork_server(local=workflow.local_exec)


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/sweep.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/score.smk"
include: "rules/report.smk"
include: "rules/vae.smk"
include: "rules/agave.smk"
include: "rules/cqf.smk"
include: "rules/summary.smk"


rule all:
    default_target: True
    input:
        all_reports(),
        RUNTIME_REPORT,
