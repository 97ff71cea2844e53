"""What ran a stage: Python, package versions, host and device (part of every provenance record)."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("torch", "numpy", "scipy", "scikit-learn", "pandas", "snakemake", "dvc", "aiqn")


def environment(device: str = "cpu") -> dict:
    """Python, package versions, host and device of this process."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "packages": versions, "host": platform.node(),
            "platform": platform.platform(), "device": device}
