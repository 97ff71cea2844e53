"""Checkpoints: names, RNG states, the one atomic writer (every checkpoint carries its `kind`),
finding the newest resumable one, loading, and cutting the log back to a resumed step.

Checkpoints travel through shared DVC remotes, so they are only ever read with
`torch.load(weights_only=True)`: tensors, numbers, strings, lists, tuples and dicts, never code. What
they hold is kept to those types (NumPy's RNG state is stored as a tensor). A checkpoint written
before that (NumPy arrays pickled in) is refused with the command that converts it once."""

from __future__ import annotations

import logging
import pickle
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from aiqn.core.damage import DamagedFile, failed_member, reading
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
        "numpy": _numpy_state_as_tensor(np.random.get_state()),
        "python": random.getstate(),
        "data": generator.get_state(),
    }


def _numpy_state_as_tensor(state: tuple) -> tuple:
    """NumPy's legacy RNG state with its key array (624 uint32) as an int64 tensor: loadable with weights_only."""
    name, keys, pos, has_gauss, cached = state
    return (name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached))


def restore_rng(state: dict, generator: torch.Generator) -> None:
    """Put back the RNG states `rng_state` saved (exact resume)."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    generator.set_state(state["data"])


# Classes a checkpoint may name besides torch's default allowlist: torch's version string (a str subclass
# that checkpoints before 2026-12-03 stored as it is; today's store a plain str).
SAFE_GLOBALS = [torch.torch_version.TorchVersion]


class UnsafeCheckpoint(ValueError):
    """A checkpoint that `torch.load(weights_only=True)` refuses: it pickles something besides data."""


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict:
    """Read a checkpoint file (a dict; see `save_checkpoint`) with weights_only=True, so a tampered file
    cannot run code; a clear error when it is missing or holds more than data."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; it is written by the method's train rule.")
    refused = None  # weights_only's refusal of a pickle that names code: UnsafeCheckpoint, not damage
    with reading(path, "a checkpoint"), torch.serialization.safe_globals(SAFE_GLOBALS):
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as exc:
            if "Unsupported global" not in str(exc):  # bytes that are no pickle at all: a damaged file
                raise
            refused = exc
    if refused is not None:
        lines = [line.strip() for line in str(refused).splitlines() if "Unsupported global" in line]
        reason = (lines or str(refused).strip().splitlines())[0].split(" was not an allowed global")[0]
        raise UnsafeCheckpoint(
            f"{path} holds more than tensors and plain data, so it is not loaded (weights_only=True: {reason}). "
            "A checkpoint written by this pipeline before 2026-12-03 pickles NumPy's RNG state; if you made it "
            f"yourself and trust it, convert it once with: python -m aiqn upgrade-checkpoint {path}. A file "
            "pulled from elsewhere may be tampered with: delete it and let its train rule write it again."
        ) from refused
    bad = failed_member(path)  # torch.load reads tensor bytes without checking the zip's CRCs
    if bad:
        raise DamagedFile(path, "a checkpoint", f"a member is corrupted ({bad})")
    if not isinstance(ckpt, dict):
        raise DamagedFile(path, "a checkpoint", f"it holds a {type(ckpt).__name__}, not a checkpoint's dict")
    return ckpt


def upgrade_checkpoint(path: str | Path) -> bool:
    """Rewrite a checkpoint of this pipeline's older format (NumPy RNG state pickled as arrays) so that it
    loads with weights_only=True. It unpickles the file fully, so only run it on a file you trust.
    Returns False when the file already loads safely (it is left as it is)."""
    path = Path(path)
    try:
        load_checkpoint(path)
        return False
    except UnsafeCheckpoint:
        pass
    ckpt = torch.load(path, map_location="cpu", weights_only=False)  # the caller vouched for this file
    if "rng" in ckpt and not torch.is_tensor(ckpt["rng"]["numpy"][1]):
        ckpt["rng"] = {**ckpt["rng"], "numpy": _numpy_state_as_tensor(ckpt["rng"]["numpy"])}
    ckpt["torch_version"] = str(ckpt.get("torch_version", ""))
    torch_save_atomic(ckpt, path)
    load_checkpoint(path)  # raises if anything else still needs code
    return True


def latest_checkpoint(run_dir: Path, digest: str) -> Path | None:
    """Newest `ckpt_*.pt` in `run_dir` written under the same configs (digest), else None.
    Checkpoints of other configs are renamed to `*.stale` so they are never mixed in; a damaged one
    (truncated, not a zip, ...) is renamed to `*.damaged`, named in a warning, and the run resumes from
    the newest checkpoint before it that loads."""
    found = None
    for path in sorted(Path(run_dir).glob("ckpt_*.pt")):
        try:
            ckpt = load_checkpoint(path)
        except DamagedFile as damaged:
            log.warning("%s is damaged (%s): moved aside to %s.damaged; resuming from the newest checkpoint "
                        "before it that loads", path, damaged.problem, path.name)
            path.rename(path.with_suffix(".pt.damaged"))
            continue
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
                       "rng": rng_state(generator), "torch_version": str(torch.__version__)}, path)


def truncate_log(log_path: Path, step: int, header: str) -> None:
    """Drop log rows after `step` (written after the checkpoint a run resumes from). The rows kept
    keep their bytes, line ends included, so a resumed log is the uninterrupted one's bytes."""
    if not log_path.exists():
        log_path.write_text(header)
        return
    lines = log_path.read_bytes().splitlines(keepends=True)
    kept = lines[:1] + [line for line in lines[1:]  # a row cut short by a kill has no line end
                        if line.endswith(b"\n") and int(line.split(b",")[0]) <= step]
    log_path.write_bytes(b"".join(kept))
