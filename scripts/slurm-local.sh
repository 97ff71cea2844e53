#!/usr/bin/env bash
# A throw-away single-node SLURM cluster on this machine, to try profiles/slurm by hand
# (docs/cluster.md). Root only; installs slurmctld, slurmd, slurm-client and munge with apt and
# the Snakemake executor plugin with pip when they are missing. The same code starts the cluster
# of tests/test_slurm.py (tests/slurm_cluster.py).
#   bash scripts/slurm-local.sh start     # munged, slurmctld, slurmd; links /etc/slurm/slurm.conf
#   bash scripts/slurm-local.sh status
#   AIQN_SLURM_PARTITION=debug snakemake --profile profiles/ci --profile profiles/slurm \
#       --slurm-status-command squeue --slurm-no-account --config device=cpu
#   bash scripts/slurm-local.sh stop      # cancels its jobs, stops its daemons by PID, removes the link
set -euo pipefail
cd "$(dirname "$0")/.."
exec python tests/slurm_cluster.py "${1:-status}"
