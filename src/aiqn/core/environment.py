"""What ran a stage: Python, package versions, device and the CPU's kernel set (part of every
provenance record).

The host and the platform differ between machines that run the same inputs, so they are kept out of
the hashed outputs, in the run-facts sidecars of `aiqn.core.runinfo`. The CPU capability torch
dispatches its float kernels to (AVX2, AVX512, ...) stays in: it changes a training's floats
(docs/benchmarks.md, "Same code, another CPU")."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

PACKAGES = ("torch", "numpy", "scipy", "scikit-learn", "pandas", "snakemake", "dvc", "aiqn")


def environment(device: str = "cpu") -> dict:
    """Python, package versions, device and torch's CPU capability of this process (None where the
    process never imported torch: the verbs that only read tables)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    torch = sys.modules.get("torch")
    capability = torch.backends.cpu.get_cpu_capability() if torch is not None else None
    return {"python": platform.python_version(), "packages": versions, "device": device,
            "cpu_capability": capability}
