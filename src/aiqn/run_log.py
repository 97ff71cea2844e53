"""Shared bookkeeping of the sibling models' trainers (VAE / AIQN-VAE, AGAVE, CQF): the config
digest that decides whether a checkpoint may be resumed, resuming and saving checkpoints, and the
buffered train_log.csv writer."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch

from aiqn.training import NonFiniteLoss, latest_checkpoint, load_checkpoint, restore_rng, rng_state, truncate_log
from aiqn.utils import digest_fields, torch_save_atomic

log = logging.getLogger(__name__)


def config_digest(kind: str, model_config, train_config, **extra) -> str:
    """sha256 of the checkpoint kind, both config dataclasses and `extra` (JSON, keys sorted)."""
    payload = json.dumps({"kind": kind, "model": digest_fields(model_config), "train": asdict(train_config),
                          **extra}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def resume_or_start(run_dir: Path, digest: str, log_path: Path, header: str, generator: torch.Generator,
                    device: str) -> dict | None:
    """The newest checkpoint in `run_dir` written under `digest`, loaded, with `generator`'s state
    restored and `log_path` cut back to its step; None, and a fresh log with `header`, when there is
    none. The caller loads its own networks and optimizers from the returned checkpoint."""
    resume_from = latest_checkpoint(run_dir, digest)
    if resume_from is None:
        log_path.write_text(header)
        return None
    ckpt = load_checkpoint(resume_from, map_location=device)
    restore_rng(ckpt["rng"], generator)
    log.info("resuming from %s (step %d)", resume_from, ckpt["step"])
    truncate_log(log_path, ckpt["step"], header)
    return ckpt


def save_checkpoint(path: Path, kind: str, step: int, model_config, train_config, digest: str,
                    generator: torch.Generator, **states) -> None:
    """Write everything an exact resume needs: kind, step, both configs, digest, the RNG states
    and `states` (state dicts, None for parts the run lacks, and any other record)."""
    torch_save_atomic({"kind": kind, "step": step, "config": asdict(model_config),
                       "train_config": asdict(train_config), "digest": digest, **states,
                       "rng": rng_state(generator), "torch_version": torch.__version__}, path)


class BufferedLossLog:
    """Rows of train_log.csv buffered as device tensors and written in groups, one device sync per
    flush. Each row is `step, <one cell per loss>, [lr,] seconds`; a loss whose `present` flag is
    False is written as an empty cell and not checked. A non-finite loss raises NonFiniteLoss
    (the message begins with `what`) after its rows are written."""

    def __init__(self, path: Path, present: Sequence[bool], with_lr: bool, what: str = "the training loss is"):
        self.present = list(present)
        self.with_lr = with_lr
        self.what = what
        self.file = open(path, "a", newline="")
        self.writer = csv.writer(self.file)
        self.pending: list[tuple[int, torch.Tensor, float | None, float]] = []

    def add(self, step: int, losses: torch.Tensor, seconds: float, lr: float | None = None) -> None:
        """Buffer one step's losses, a (len(present),) tensor."""
        self.pending.append((step, losses, lr, seconds))

    def flush(self) -> list[float] | None:
        """Write the buffered rows; returns the last row's losses (None when nothing was buffered)."""
        if not self.pending:
            return None
        values = torch.stack([row[1] for row in self.pending]).cpu().tolist()  # (K, losses)
        for (step, _, lr, seconds), row in zip(self.pending, values):
            cells = [f"{v:.6f}" if keep else "" for v, keep in zip(row, self.present)]
            self.writer.writerow([step, *cells, *([f"{lr:.3g}"] if self.with_lr else []), f"{seconds:.2f}"])
        self.file.flush()
        bad = next(((row[0], v) for row, v in zip(self.pending, values)
                    if not all(math.isfinite(x) for x, keep in zip(v, self.present) if keep)), None)
        self.pending = []
        if bad is not None:
            raise NonFiniteLoss(f"{self.what} {bad[1]} at step {bad[0]}: the run diverged")
        return values[-1]

    def close(self) -> None:
        """Close the file (rows not flushed are dropped)."""
        self.file.close()
