#!/usr/bin/env bash
# Restore a run from the DVC remote in a fresh clone instead of recomputing it:
#   bash scripts/restore.sh                      # the default run
#   bash scripts/restore.sh --profile profiles/ci  # a run made with a profile: pass the same options
# 1. dvc pull: data, checkpoints, samples, metrics, tables, figures and provenance records.
# 2. dvc status: the code, rules and params here must be the ones the pulled results were made
#    with (dvc.lock); otherwise stop, since marking the results up to date would be a lie.
# 3. snakemake --touch: DVC's checkout gives files new, arbitrary modification times, which
#    would make Snakemake rerun jobs; --touch stamps them in DAG order without running anything.
# 4. the runtime report (reports/runtime/, a run fact DVC does not version): no job ran here, and the
#    report says so; it is the only job allowed to run, so anything else out of date stops this.
# 5. aiqn audit: every file named by every provenance record has the recorded sha256.
set -euo pipefail
cd "$(dirname "$0")/.."
dvc pull
status=$(dvc status --quiet 2>&1) || { echo "dvc status: this checkout differs from what dvc.lock recorded:"; dvc status; exit 1; }
if [ "$#" -eq 0 ]; then set -- --cores all; fi
snakemake "$@" --touch --quiet
snakemake "$@" --allowed-rules runtime_report all --quiet
snakemake "$@" --dry-run --quiet | tail -n 1
python -m aiqn audit
