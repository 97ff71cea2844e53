#!/usr/bin/env bash
# Install the project into the current Python environment (3.10+), CPU-only.
# torch is pinned and installed FIRST: an unpinned torch (or torchvision) would pull several GB
# of CUDA wheels; 2.13.0 resolves to the CPU build. torchvision is never needed.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[test,slurm]"   # slurm: the executor plugin (profiles/slurm)
python -c "import torch, snakemake, dvc; print(f'torch {torch.__version__}, snakemake and dvc ready')"
