"""Shared bookkeeping of the sibling models' trainers (VAE / AIQN-VAE, AGAVE, CQF): the config
digest that decides whether a checkpoint may be resumed, and the buffered train_log.csv writer."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch

from aiqn.training import NonFiniteLoss


def config_digest(kind: str, model_config, train_config, **extra) -> str:
    """sha256 of the checkpoint kind, both config dataclasses and `extra` (JSON, keys sorted)."""
    payload = json.dumps({"kind": kind, "model": asdict(model_config), "train": asdict(train_config), **extra},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


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
