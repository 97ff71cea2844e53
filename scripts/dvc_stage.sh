#!/usr/bin/env bash
# The command of dvc.yaml's one stage: `snakemake --cores all` (extra arguments are passed on), so
# that `dvc repro` and `dvc exp run` run the Snakefile's DAG and Snakemake reruns only what changed.
# Refused in the temporary copy that `dvc exp run --temp` and queued experiments (`dvc exp run
# --queue` + `dvc queue start`) run in: that copy holds git's files only, without state/ (resumable
# training state), logs/ or .snakemake/ (Snakemake's record of params and code per output), so every
# job would retrain from scratch. Run experiments in the workspace (docs/experiments.md).
set -euo pipefail
case "$PWD" in
    */.dvc/tmp/exps/*)
        echo "dvc exp run --temp / --queue is not supported here: the temporary copy in $PWD has no state/," \
             "logs/ or .snakemake/, so Snakemake would retrain everything from scratch." \
             "Run the experiment in the workspace instead: dvc exp run -S <param>=<value>" \
             "(docs/experiments.md)." >&2
        exit 2
        ;;
esac
exec snakemake --cores all "$@"
