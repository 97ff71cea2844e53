"""`fit`: the one training loop. A method contributes a `Trainer` (its networks, optimizers and
one update) and its configs; `fit` owns everything else:

- `run_dir/config.json` and the resume digest (a checkpoint resumes only under the same configs);
- seeding (`set_seed(seed)` before the method builds its networks, and the CPU `generator` every
  random draw of the method's step comes from);
- resuming from the newest matching checkpoint (states, RNGs, the log cut back to its step);
- the learning rate of every step (`train_config.lr_at`), Polyak averaging (EMA) after every step;
- `train_log.csv` and its wall times (`train_times.runinfo.csv`), buffered (`LossLog`), a tqdm bar and a progress line in the rule's log;
- atomic checkpoints at `checkpoint_steps` with the method's `kind`;
- data-parallel runs (`dist`): the resume point is rank 0's, only rank 0 writes, every rank
  flushes the log at the same steps (it all-reduces) and waits at each checkpoint.

A resumed run continues exactly as an uninterrupted one (tested per method).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from aiqn.core.checkpoint import (checkpoint_name, latest_checkpoint, load_checkpoint, restore_rng, save_checkpoint,
                                  set_seed, truncate_log)
from aiqn.core.config import TrainBase, config_digest
from aiqn.core.distributed import DistInfo, barrier, broadcast_object, is_main
from aiqn.core.loss_log import TIMES_HEADER, LossLog, log_header
from aiqn.core.runinfo import TRAIN_TIMES

log = logging.getLogger(__name__)


@torch.no_grad()
def update_ema(target: torch.nn.Module, source: torch.nn.Module, rate: float) -> None:
    """target <- rate * target + (1 - rate) * source, parameter by parameter (one fused
    multi-tensor kernel on CUDA instead of one launch per parameter; the same lerp on the CPU)."""
    targets, sources = list(target.parameters()), list(source.parameters())
    if len(targets) != len(sources):
        raise ValueError(f"EMA and model differ: {len(targets)} vs {len(sources)} parameters")
    torch._foreach_lerp_(targets, sources, 1.0 - rate)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DistributedDataParallel and/or torch.compile wrappers."""
    from torch.nn.parallel import DistributedDataParallel

    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def check_shape(images, config) -> None:
    """Refuse training images (N, C, H, W) whose shape differs from the config's channels, height, width."""
    expected = (config.channels, config.height, config.width)
    if tuple(images.shape[1:]) != expected:
        raise ValueError(f"images have shape {tuple(images.shape[1:])}, the config expects {expected}")


def ema_copy(net: torch.nn.Module, ema: torch.nn.Module) -> torch.nn.Module:
    """`ema` (a second build of `net`'s architecture) set to `net`'s weights and frozen."""
    ema.load_state_dict(net.state_dict())
    ema.requires_grad_(False)
    return ema


class Trainer:
    """What a method hands `fit`, built after `fit` seeded the RNGs.

    Subclasses set `columns` (the loss cells of train_log.csv), `states` (checkpoint key -> module
    or optimizer, None for a part the run lacks), `emas` ((trained, EMA copy) pairs) and
    `optimizers`, and implement `step`. `begin` runs once the states are loaded (or not, on a fresh
    start): the place for wrapping a model (DDP, compile) or initialising from another run.
    """

    columns: Sequence[str] = ("loss",)
    present: Sequence[bool] | None = None  # False: a column this run does not compute (an empty cell)
    with_lr: bool = True  # an lr column in the log
    desc: str = "train"
    what: str = "the training loss is"  # how the error of a non-finite loss begins
    states: dict[str, Any]
    emas: Sequence[tuple[torch.nn.Module, torch.nn.Module]]
    optimizers: Sequence[torch.optim.Optimizer]

    def begin(self, ckpt: dict | None) -> None:
        """Called after resuming from `ckpt` (None: a fresh start)."""

    def step(self) -> torch.Tensor:
        """One update; returns this step's losses, (len(columns),), detached, on the device."""
        raise NotImplementedError

    def record(self, step: int) -> dict:
        """Entries of the checkpoint at `step` besides the states (the variant, a schedule, ...)."""
        return {}

    def shown(self, last: list[float]) -> dict[str, float]:
        """The values the progress bar and log line show, from the last logged row."""
        return {name: value for name, value, keep in zip(self.columns, last, self.flags()) if keep}

    def flags(self) -> list[bool]:
        """Which loss columns this run computes."""
        return list(self.present) if self.present is not None else [True] * len(self.columns)


@dataclass
class Run:
    """One training run: the method's checkpoint `kind`, its configs, where it writes, and `extra`
    records that enter the digest and config.json (e.g. the checkpoint a run starts from)."""

    kind: str
    model_config: Any
    train_config: TrainBase
    run_dir: Path
    extra: dict = field(default_factory=dict)
    digest_kind: bool = True  # False: the digest hashes no kind (the PixelCNN's, which predates kinds)

    @property
    def digest(self) -> str:
        """The digest a checkpoint must carry to be resumed by this run."""
        return config_digest(self.kind if self.digest_kind else None, self.model_config, self.train_config,
                             **self.extra)


def fit(run: Run, build: Callable[[torch.Generator], Trainer], device: str = "cpu", dist: DistInfo | None = None,
        stop_after: int | None = None, progress: bool = True) -> dict[int, Path]:
    """Train `build(generator)` as `run` says, checkpointing into `run.run_dir`.

    `build` is called after `set_seed(seed)` with the CPU generator (seeded by `seed`, saved in every
    checkpoint) that all of the step's draws must come from. Resumes from the newest checkpoint in
    the run folder written under the same digest. `stop_after` ends the run after that step (an
    interruption, in tests). Returns {step: checkpoint path} of the checkpoints that exist.
    """
    tcfg = run.train_config
    run_dir = Path(run.run_dir)
    main = is_main(dist)
    run_dir.mkdir(parents=True, exist_ok=True)
    digest = run.digest
    if main:
        (run_dir / "config.json").write_text(json.dumps(
            {"model": asdict(run.model_config), "train": asdict(tcfg), **run.extra, "digest": digest}, indent=2))

    set_seed(tcfg.seed)
    generator = torch.Generator().manual_seed(tcfg.seed)
    trainer = build(generator)
    header = log_header(trainer.columns, trainer.with_lr)
    log_path, times_path = run_dir / "train_log.csv", run_dir / TRAIN_TIMES
    start, ckpt = 0, None
    resume_from = broadcast_object(latest_checkpoint(run_dir, digest) if main else None, dist)
    if resume_from is not None:
        ckpt = load_checkpoint(resume_from, map_location=device)
        for key, part in trainer.states.items():
            if part is not None:
                part.load_state_dict(ckpt[key])
        restore_rng(ckpt["rng"], generator)
        start = ckpt["step"]
        if main:
            log.info("resuming from %s (step %d)", resume_from, start)
            truncate_log(log_path, start, header)
            truncate_log(times_path, start, TIMES_HEADER)
    elif main:
        log_path.write_text(header)
        times_path.write_text(TIMES_HEADER)
    trainer.begin(ckpt)

    end = tcfg.steps if stop_after is None else min(stop_after, tcfg.steps)
    report_every = max(1, tcfg.steps // 20)
    for net, _ in trainer.emas:
        net.train()
    began = time.time()
    bar = tqdm(range(start, end), initial=start, total=tcfg.steps, desc=trainer.desc,
               disable=not progress or not main, mininterval=2.0)
    losses = LossLog(log_path if main else None, trainer.flags(), trainer.with_lr, dist, trainer.what, times_path)
    try:
        for step in bar:
            lr = tcfg.lr_at(step)
            for optimizer in trainer.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = lr
            row = trainer.step()
            for net, ema in trainer.emas:
                update_ema(ema, net, tcfg.ema_rate_at(step))

            done = step + 1
            losses.add(done, row, time.time() - began, lr if trainer.with_lr else None)
            report = done % 50 == 0 or done % report_every == 0
            if report or done in tcfg.checkpoint_steps or done == end:
                last = losses.flush()  # the same steps on every rank: it all-reduces
            if report:
                shown = trainer.shown(last)
                bar.set_postfix({name: f"{value:.4f}" for name, value in shown.items()})
                if done % report_every == 0 and main:  # progress in the rule's log file, where no bar is shown
                    rate = (done - start) / (time.time() - began)
                    log.info("%s step %d/%d  %s  lr %.3g  %.1f steps/s  ETA %.0f s", trainer.desc, done, tcfg.steps,
                             "  ".join(f"{name} {value:.4f}" for name, value in shown.items()), lr, rate,
                             (tcfg.steps - done) / rate)
            if done in tcfg.checkpoint_steps:
                if main:
                    states = {key: part.state_dict() if part is not None else None
                              for key, part in trainer.states.items()}
                    save_checkpoint(run_dir / checkpoint_name(done), run.kind, done, run.model_config, tcfg, digest,
                                    generator, **run.extra, **trainer.record(done), **states)
                barrier(dist)
    finally:
        losses.close()
        bar.close()
    barrier(dist)  # every rank returns once rank 0's files are complete
    return {s: run_dir / checkpoint_name(s) for s in tcfg.checkpoint_steps if (run_dir / checkpoint_name(s)).exists()}


def fit_trainer(trainer: Callable[..., Trainer], run: Run, images, device: str = "cpu", stop_after: int | None = None,
                progress: bool = True, **options) -> dict[int, Path]:
    """`fit` of a single-process method whose Trainer is built as
    `trainer(model_config, train_config, images, generator, device, **options)`, after checking that
    uint8 `images` (N, C, H, W) have the model config's shape."""
    check_shape(images, run.model_config)
    return fit(run, lambda generator: trainer(run.model_config, run.train_config, images, generator, device, **options),
               device=device, stop_after=stop_after, progress=progress)
