"""Checkpoints: names, RNG states, the one atomic writer (every checkpoint carries its `kind`),
finding the newest resumable one, loading, and cutting the log back to a resumed step."""

from __future__ import annotations

import logging
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from aiqn.core.io import torch_save_atomic

log = logging.getLogger(__name__)

LEGACY_KIND = "pixelcnn"  # what a checkpoint without a `kind` holds (the PixelCNN's predate kinds)


def checkpoint_name(step: int) -> str:
    """`ckpt_0001000.pt` for step 1000."""
    return f"ckpt_{step:07d}.pt"


def checkpoint_kind(ckpt: dict) -> str:
    """The method that wrote a loaded checkpoint (`kind`; a missing kind reads as the PixelCNN's)."""
    return ckpt.get("kind", LEGACY_KIND)


def set_seed(seed: int) -> None:
    """Seed Python's `random`, NumPy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(generator: torch.Generator) -> dict:
    """Every RNG a training run draws from (torch, numpy, python, its data generator), for a checkpoint."""
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "data": generator.get_state(),
    }


def restore_rng(state: dict, generator: torch.Generator) -> None:
    """Put back the RNG states `rng_state` saved (exact resume)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    generator.set_state(state["data"])


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict:
    """Read a checkpoint file (a dict; see `save_checkpoint`), with a clear error when it is missing."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; it is written by the method's train rule.")
    return torch.load(path, map_location=map_location, weights_only=False)


def latest_checkpoint(run_dir: Path, digest: str) -> Path | None:
    """Newest `ckpt_*.pt` in `run_dir` written under the same configs (digest), else None.
    Checkpoints of other configs are renamed to `*.stale` so they are never mixed in."""
    found = None
    for path in sorted(Path(run_dir).glob("ckpt_*.pt")):
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if ckpt.get("digest") == digest:
            found = path
        else:
            log.warning("%s was written under other configs: moved aside to %s.stale", path, path.name)
            path.rename(path.with_suffix(".pt.stale"))
    return found


def save_checkpoint(path: Path, kind: str, step: int, model_config, train_config, digest: str,
                    generator: torch.Generator, **states) -> None:
    """Write everything an exact resume needs: kind, step, both configs, digest, the RNG states
    and `states` (state dicts, None for parts the run lacks, and any other record)."""
    torch_save_atomic({"kind": kind, "step": step, "config": asdict(model_config),
                       "train_config": asdict(train_config), "digest": digest, **states,
                       "rng": rng_state(generator), "torch_version": torch.__version__}, path)


def truncate_log(log_path: Path, step: int, header: str) -> None:
    """Drop log rows after `step` (written after the checkpoint a run resumes from)."""
    if not log_path.exists():
        log_path.write_text(header)
        return
    lines = log_path.read_text().splitlines()
    kept = [lines[0]] + [line for line in lines[1:] if int(line.split(",")[0]) <= step]
    log_path.write_text("\n".join(kept) + "\n")
