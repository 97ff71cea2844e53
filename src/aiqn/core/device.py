"""Where a run computes: the device named in params.yaml, and bfloat16 autocast. torch is imported
on first use: the verbs modules import this one, and the Snakefile imports some of them at parse time."""

from __future__ import annotations

import contextlib

PRECISIONS = ("fp32", "bf16")


def resolve_device(name: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"device {name!r} requested in params.yaml but no CUDA device is visible; use 'auto' or 'cpu'")
    return name


def autocast(precision: str, device_type: str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on `device_type` for precision "bf16"; a no-op context for "fp32"."""
    import torch

    if precision == "bf16":
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return contextlib.nullcontext()
