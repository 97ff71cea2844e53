"""`train_log.csv`: one row per step, buffered as device tensors and written in groups; the wall
seconds of each step go to the run-facts file `train_times.runinfo.csv` beside it (`aiqn.core.runinfo`),
so the log's bytes depend only on the run's inputs."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

import torch

from aiqn.core.distributed import DistInfo, all_reduce_mean


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite: the configuration diverged (checked whenever the
    buffered losses are written, so at the latest before the next checkpoint is saved)."""


TIMES_HEADER = "step,seconds\n"


def log_header(columns: Sequence[str], with_lr: bool) -> str:
    """`step,<columns>[,lr]` and a newline."""
    return ",".join(["step", *columns, *(["lr"] if with_lr else [])]) + "\n"


class LossLog:
    """Rows `step, <one cell per loss>[, lr]` of train_log.csv, buffered as device tensors, and rows
    `step, seconds` of `times` (train_times.runinfo.csv).

    `flush` reads the buffered losses in one transfer (one device sync instead of one per step),
    averages them over ranks in one all-reduce (every rank must flush at the same steps), and
    writes them (when `path` is given: the main process only). A loss whose `present` flag is False
    is written as an empty cell and not checked; a non-finite one raises NonFiniteLoss (the message
    begins with `what`) after its rows are written. `seconds` is the wall time when a step was
    queued (on a GPU it may finish later; the flushes keep the two within 50 steps).
    """

    def __init__(self, path: Path | None, present: Sequence[bool], with_lr: bool, dist: DistInfo | None = None,
                 what: str = "the training loss is", times: Path | None = None):
        self.present, self.with_lr, self.dist, self.what = list(present), with_lr, dist, what
        self.file = open(path, "a", newline="") if path is not None else None
        self.writer = csv.writer(self.file, lineterminator="\n") if self.file is not None else None  # csv: \r\n
        self.times = open(times, "a", newline="") if path is not None and times is not None else None
        self.pending: list[tuple[int, torch.Tensor, float | None, float]] = []

    def add(self, step: int, losses: torch.Tensor, seconds: float, lr: float | None = None) -> None:
        """Buffer one step's losses, a (len(present),) tensor."""
        self.pending.append((step, losses, lr, seconds))

    def flush(self) -> list[float] | None:
        """Write the buffered rows; returns the last row's losses (None when nothing was buffered)."""
        if not self.pending:
            return None
        values = all_reduce_mean(torch.stack([row[1] for row in self.pending]), self.dist).tolist()  # (K, n)
        if self.writer is not None:
            for (step, _, lr, seconds), row in zip(self.pending, values):
                cells = [f"{v:.6f}" if keep else "" for v, keep in zip(row, self.present)]
                self.writer.writerow([step, *cells, *([f"{lr:.3g}"] if self.with_lr else [])])
                if self.times is not None:
                    self.times.write(f"{step},{seconds:.2f}\n")
            self.file.flush()
            if self.times is not None:
                self.times.flush()
        bad = next(((row[0], v) for row, v in zip(self.pending, values)
                    if not all(math.isfinite(x) for x, keep in zip(v, self.present) if keep)), None)
        self.pending = []
        if bad is not None:
            shown = bad[1][0] if len(self.present) == 1 else bad[1]
            raise NonFiniteLoss(f"{self.what} {shown} at step {bad[0]}: the run diverged")
        return values[-1]

    def close(self) -> None:
        """Close the file (rows not flushed are dropped)."""
        for handle in (self.file, self.times):
            if handle is not None:
                handle.close()
