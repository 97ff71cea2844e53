"""What software ran a stage: Python, package versions and device (part of every provenance record).

The host and the platform differ between machines that run the same inputs, so they are kept out of
the hashed outputs, in the run-facts sidecars of `aiqn.core.runinfo`."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("torch", "numpy", "scipy", "scikit-learn", "pandas", "snakemake", "dvc", "aiqn")


def environment(device: str = "cpu") -> dict:
    """Python, package versions and device of this process."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "packages": versions, "device": device}
