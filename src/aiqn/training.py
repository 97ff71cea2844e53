"""One training loop for every model (PixelCNN and PixelIQN).

- Optimizers: Adam, RMSProp, SGD; learning rate constant or piecewise constant (the paper's
  PixelCNN schedule on CIFAR-10: 1e-4 for 120K steps, 3e-5 for 60K, 1e-5 after).
- Polyak averaging (EMA of the weights, Ostrovski et al. 2018 appendix), used for sampling only.
- Checkpoints `ckpt_{step:07d}.pt` at the configured steps, written atomically, holding model,
  EMA, optimizer, schedule, step, configs and RNG states, so that a resumed run continues
  exactly as an uninterrupted one (tested).
- A CSV log (`train_log.csv`: step, loss, lr, seconds) in the run folder; a tqdm progress bar.

Resuming: `train` looks in its `run_dir` for the newest checkpoint whose configs match and
continues from it; a checkpoint written under other configs is set aside, never resumed.

Using the hardware (all opt-in through `TrainConfig`, all stored in the config digest):
- `precision="bf16"`: the forward pass runs under `torch.autocast(dtype=bfloat16)`; the network's
  output is cast back to float32 and the loss is computed in float32.
- `compile=True`: the training step calls `torch.compile(model)`; the EMA and the saved weights
  are those of the plain module (a compiled module's state_dict keys carry `_orig_mod.`).
- `channels_last=True`: weights and input batches in `torch.channels_last` memory format.
- Several processes (torchrun, `dist=aiqn.distributed.init_from_env(...)`): DistributedDataParallel;
  every rank draws the same global batch and tau and trains on its shard, so the run equals the
  single-process one up to float rounding (see `aiqn.distributed`). Rank 0 alone writes files.

Data feeding (`BatchSampler`): the images are already decoded uint8 arrays (CIFAR-10 150 MB,
ImageNet32 3.9 GB), so there is nothing for DataLoader workers to parallelise; a DataLoader would
only add worker processes and a host-to-device copy of every batch. Instead, on CUDA the whole
uint8 array (and the labels) is copied to the GPU once and each batch is gathered there with one
indexing kernel; on the CPU the array stays where it is. Batch indices and tau are always drawn
from the CPU generator `data_generator`, so a seed gives the same batches and taus on any device
and any number of processes, and resuming stays exact. Losses are kept on the device and written
to the log in groups (`LossLog`), so the GPU is not synchronised at every step.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import inspect
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from aiqn.distributed import DistInfo, all_reduce_mean, barrier, broadcast_object, is_main, shard_slice
from aiqn.models import GatedPixelCNN, PixelCNNConfig, build_model, to_unit
from aiqn.objectives import categorical_nll, huber_quantile_loss, nats_to_bits_per_dim
from aiqn.utils import digest_fields, set_seed, torch_save_atomic

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamax", "rmsprop", "sgd")
PRECISIONS = ("fp32", "bf16")
DDP_PARAMETERS = inspect.signature(DistributedDataParallel).parameters
LOG_HEADER = "step,loss,lr,seconds\n"


@dataclass
class TrainConfig:
    """How one model is trained; stored in every checkpoint as `ckpt["train_config"]`."""

    steps: int = 3000
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    # piecewise constant: lr_values[i] applies from lr_boundaries[i-1] (or 0) up to lr_boundaries[i]
    lr_boundaries: list[int] = field(default_factory=list)
    lr_values: list[float] = field(default_factory=list)
    ema_rate: float = 0.999
    kappa: float = 0.002  # Huber threshold of the quantile loss (quantile head only)
    checkpoint_steps: list[int] = field(default_factory=list)
    seed: int = 0
    grad_clip: float = 0.0  # 0: no clipping
    precision: str = "fp32"  # "bf16": forward pass under bfloat16 autocast, loss in float32
    compile: bool = False  # torch.compile the model for the training step
    channels_last: bool = False  # weights and batches in torch.channels_last memory format

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("compile", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.lr_values and len(self.lr_values) != len(self.lr_boundaries) + 1:
            raise ValueError("lr_values needs exactly one more entry than lr_boundaries")
        if sorted(self.lr_boundaries) != list(self.lr_boundaries):
            raise ValueError("lr_boundaries must be increasing")
        steps = sorted(set(self.checkpoint_steps) | {self.steps})
        if steps[0] < 1 or steps[-1] > self.steps:
            raise ValueError(f"checkpoint_steps must lie in [1, steps={self.steps}]")
        self.checkpoint_steps = steps

    def lr_at(self, step: int) -> float:
        """Learning rate used for the update that produces step `step + 1`."""
        if not self.lr_values:
            return self.lr
        for boundary, value in zip(self.lr_boundaries, self.lr_values):
            if step < boundary:
                return value
        return self.lr_values[-1]


def checkpoint_name(step: int) -> str:
    """`ckpt_0001000.pt` for step 1000."""
    return f"ckpt_{step:07d}.pt"


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimizer over the model's parameters (lr is set per step)."""
    params = model.parameters()
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr)
    if config.optimizer == "adamax":  # AGAVE's and CQF's optimizer (Lucas & Verbeek 2018)
        return torch.optim.Adamax(params, lr=config.lr)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=config.lr)
    return torch.optim.SGD(params, lr=config.lr, momentum=0.9)


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
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def autocast(precision: str, device_type: str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on `device_type` for precision "bf16"; a no-op context for "fp32"."""
    if precision == "bf16":
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return contextlib.nullcontext()


def model_loss(
    model: torch.nn.Module,
    images: torch.Tensor,
    generator: torch.Generator | None,
    kappa: float,
    class_labels: torch.Tensor | None = None,
    tau: torch.Tensor | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """Scalar training loss of a batch of integer images (B, C, H, W).

    Categorical head: mean cross-entropy per pixel-channel (nats). Quantile head: mean Huber
    quantile loss per pixel-channel at tau ~ U[0, 1] (one tau per pixel-channel: `tau` (B, C, H, W)
    when given, else drawn from `generator`), with targets in the network's [-1, 1] scale.
    `model` may be wrapped (DDP, torch.compile). With precision "bf16" the forward pass runs
    under autocast and its output is cast to float32 before the loss.
    """
    cfg = unwrap_model(model).config
    x = to_unit(images, cfg.levels)
    if cfg.head == "categorical":
        with autocast(precision, x.device.type):
            logits = model(x, class_labels=class_labels)
        return categorical_nll(logits.float(), images).mean()
    if tau is None:
        tau = torch.rand(images.shape, generator=generator).to(images.device)
    with autocast(precision, x.device.type):
        prediction = model(x, tau, class_labels=class_labels)
    return huber_quantile_loss(x, prediction.float(), tau, kappa).mean()


@dataclass
class Batch:
    """One (shard of a) training batch, on the training device."""

    images: torch.Tensor  # (b, C, H, W) int64 levels
    labels: torch.Tensor | None  # (b,) int64, class-conditional models only
    tau: torch.Tensor | None  # (b, C, H, W) float32 in [0, 1], quantile head only


class BatchSampler:
    """Draws training batches: indices and tau from the CPU `generator`, images gathered on the device.

    On CUDA the uint8 images (and labels) are copied to the GPU once; on the CPU they stay in host
    memory. Each `draw` takes the global batch's indices (B,) and, for the quantile head, its tau
    (B, C, H, W) from the generator in that order (the draws of a single process), then keeps the
    rows `shard` of this rank.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None,
        batch_size: int,
        generator: torch.Generator,
        device: str | torch.device,
        draw_tau: bool,
        shard: slice | None = None,
        channels_last: bool = False,
    ):
        self.device = torch.device(device)
        on_device = self.device.type == "cuda"
        data = torch.from_numpy(np.asarray(images))  # uint8 (N, C, H, W)
        self.data = data.to(self.device) if on_device else data
        self.labels = None
        if labels is not None:
            targets = torch.from_numpy(np.asarray(labels)).long()  # (N,)
            self.labels = targets.to(self.device) if on_device else targets
        self.batch_size, self.generator, self.draw_tau = batch_size, generator, draw_tau
        self.shard = shard if shard is not None else slice(None)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def draw(self) -> Batch:
        """The next batch (this rank's shard of it)."""
        index = torch.randint(len(self.data), (self.batch_size,), generator=self.generator)  # (B,)
        tau = None
        if self.draw_tau:
            tau = torch.rand((self.batch_size, *self.data.shape[1:]), generator=self.generator)  # (B, C, H, W)
            tau = tau[self.shard].to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        index = index[self.shard].to(self.data.device, non_blocking=True)  # (b,)
        images = self.data[index].to(self.device).long().contiguous(memory_format=self.memory_format)
        labels = self.labels[index].to(self.device) if self.labels is not None else None
        return Batch(images, labels, tau)


def freeze_unused_parameters(model: GatedPixelCNN) -> list[str]:
    """Set requires_grad=False on the parameters the training loss never reaches, and return their names.

    Some parameters get no gradient from any batch: the last block's residual and vertical-stack
    conditioning (its h and v outputs are not used), and the location-conditioning convolutions
    (`model_loss` passes no conditioning map). A single process leaves their grad None and the
    optimizer skips them; DDP would instead wait for their gradients forever. They are found by
    one probe forward/backward pass at batch 1 (no random draws); freezing them changes no value.
    """
    cfg = model.config
    device = next(model.parameters()).device
    images = torch.zeros((1, cfg.channels, cfg.height, cfg.width), dtype=torch.long, device=device)  # (1, C, H, W)
    tau = torch.full(images.shape, 0.5, device=device) if cfg.head == "quantile" else None
    labels = torch.zeros(1, dtype=torch.long, device=device) if cfg.num_classes else None
    model.zero_grad(set_to_none=True)
    model_loss(model, images, None, kappa=1.0, class_labels=labels, tau=tau).backward()
    unused = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    for name, p in model.named_parameters():
        p.grad = None
        if name in unused:
            p.requires_grad_(False)
    return unused


def wrap_for_training(model: torch.nn.Module, config: TrainConfig, dist: DistInfo | None = None) -> torch.nn.Module:
    """The module the training step calls: `model` itself, in DDP when several processes train,
    compiled when `config.compile`. Parameters stay those of `model` (shared, not copied)."""
    wrapped = model
    if dist is not None and dist.distributed:
        frozen = freeze_unused_parameters(model)
        log.debug("parameters without gradient, left out of DDP: %s", frozen)
        device = torch.device(dist.device)
        # the buffers are the fixed masks, identical on every rank: no need to sync them at every forward
        no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in DDP_PARAMETERS
                   else {"broadcast_buffers": False})
        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                          **no_sync)
    if config.compile:
        wrapped = torch.compile(wrapped)
    return wrapped


def train_step(
    train_model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, config: TrainConfig
) -> torch.Tensor:
    """One update on `batch`: loss, backward (DDP averages gradients over ranks), optional
    gradient clipping, optimizer step. Returns the loss, detached, on the device (no sync)."""
    loss = model_loss(train_model, batch.images, None, config.kappa, batch.labels, tau=batch.tau,
                      precision=config.precision)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(unwrap_model(train_model).parameters(), config.grad_clip)
    optimizer.step()
    return loss.detach()


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite: the configuration diverged (checked whenever the
    buffered losses are written, so at the latest before the next checkpoint is saved)."""


class LossLog:
    """Rows of `train_log.csv` (step, loss, lr, seconds), buffered as device tensors.

    `flush` reads the buffered losses in one transfer (one GPU sync instead of one per step),
    averages them over ranks in one all-reduce, and writes them (main process only). Every rank
    must flush at the same steps. `seconds` is the wall time when a step was queued (on a GPU it
    may finish later; the flushes keep the two within 50 steps).
    """

    def __init__(self, path: Path | None, dist: DistInfo | None):
        self.dist = dist
        self.file = open(path, "a", newline="") if path is not None else None
        self.writer = csv.writer(self.file) if self.file is not None else None
        self.pending: list[tuple[int, torch.Tensor, float, float]] = []

    def add(self, step: int, loss: torch.Tensor, lr: float, seconds: float) -> None:
        """Buffer the row of `step` (`loss` a 0-dim tensor)."""
        self.pending.append((step, loss, lr, seconds))

    def flush(self) -> float | None:
        """Write the buffered rows; returns the last loss (None when nothing was buffered)."""
        if not self.pending:
            return None
        losses = all_reduce_mean(torch.stack([row[1] for row in self.pending]).float(), self.dist).tolist()  # (K,)
        if self.writer is not None:
            for (step, _, lr, seconds), loss in zip(self.pending, losses):
                self.writer.writerow([step, f"{loss:.6f}", f"{lr:.3g}", f"{seconds:.2f}"])
            self.file.flush()
        bad = next(((row[0], loss) for row, loss in zip(self.pending, losses) if not math.isfinite(loss)), None)
        self.pending = []
        if bad is not None:
            raise NonFiniteLoss(f"the training loss is {bad[1]} at step {bad[0]}: the run diverged")
        return losses[-1]

    def close(self) -> None:
        """Close the file (buffered rows not flushed are dropped)."""
        if self.file is not None:
            self.file.close()


def _config_digest(model_config: PixelCNNConfig, train_config: TrainConfig) -> str:
    payload = json.dumps({"model": digest_fields(model_config), "train": asdict(train_config)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


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


def latest_checkpoint(run_dir: Path, digest: str) -> Path | None:
    """Newest `ckpt_*.pt` in `run_dir` written under the same configs (digest), else None.
    Checkpoints of other configs are renamed to `*.stale` so they are never mixed in."""
    found = None
    for path in sorted(run_dir.glob("ckpt_*.pt")):
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if ckpt.get("digest") == digest:
            found = path
        else:
            log.warning("%s was written under other configs: moved aside to %s.stale", path, path.name)
            path.rename(path.with_suffix(".pt.stale"))
    return found


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict:
    """Read a checkpoint file (a dict; see `train`), with a clear error when it is missing."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; it is written by the `train` rule.")
    return torch.load(path, map_location=map_location, weights_only=False)


def model_from_checkpoint(path_or_ckpt, use_ema: bool = True, device: str = "cpu") -> GatedPixelCNN:
    """Rebuild a model from a checkpoint alone (config inside), loading EMA weights by default."""
    ckpt = path_or_ckpt if isinstance(path_or_ckpt, dict) else load_checkpoint(path_or_ckpt)
    model = build_model(ckpt["config"])
    model.load_state_dict(ckpt["ema"] if use_ema else ckpt["model"])
    return model.to(device).eval()


def train(
    model_config: PixelCNNConfig,
    train_config: TrainConfig,
    images: np.ndarray,
    run_dir: str | Path,
    labels: np.ndarray | None = None,
    device: str = "cpu",
    stop_after: int | None = None,
    progress: bool = True,
    dist: DistInfo | None = None,
) -> dict[int, Path]:
    """Train a model on uint8 `images` (N, C, H, W), checkpointing into `run_dir`.

    Resumes from the newest matching checkpoint in `run_dir`. `stop_after` ends the run early
    after that step (to simulate an interruption in tests). Returns {step: checkpoint path} of
    the checkpoints that exist for this config.

    `dist` (from `aiqn.distributed.init_from_env`) trains data-parallel over its processes: each
    takes its equal shard of every global batch of `train_config.batch_size` images, on
    `dist.device` (which then replaces `device`); only rank 0 writes config.json, the log and
    the checkpoints. Every rank must call `train` with the same arguments. None: one process.
    """
    run_dir = Path(run_dir)
    main = is_main(dist)
    rank, world_size = (dist.rank, dist.world_size) if dist is not None else (0, 1)
    if dist is not None and dist.distributed:
        device = dist.device
    shard = shard_slice(train_config.batch_size, rank, world_size)
    run_dir.mkdir(parents=True, exist_ok=True)
    digest = _config_digest(model_config, train_config)
    if main:
        (run_dir / "config.json").write_text(
            json.dumps({"model": asdict(model_config), "train": asdict(train_config), "digest": digest}, indent=2)
        )

    set_seed(train_config.seed)
    model = build_model(model_config).to(device)
    ema = build_model(model_config).to(device)
    if train_config.channels_last:  # 4-d weights and masks; parameters stay the same objects
        model.to(memory_format=torch.channels_last)
        ema.to(memory_format=torch.channels_last)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    optimizer = make_optimizer(model, train_config)
    data_generator = torch.Generator().manual_seed(train_config.seed)

    start = 0
    resume_from = broadcast_object(latest_checkpoint(run_dir, digest) if main else None, dist)
    log_path = run_dir / "train_log.csv"
    if resume_from is not None:
        ckpt = load_checkpoint(resume_from, map_location=device)
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        restore_rng(ckpt["rng"], data_generator)
        start = ckpt["step"]
        if main:
            log.info("resuming from %s (step %d)", resume_from, start)
            truncate_log(log_path, start)
    elif main:
        log_path.write_text(LOG_HEADER)

    train_model = wrap_for_training(model, train_config, dist)
    labels = labels if model_config.num_classes else None
    batches = BatchSampler(images, labels, train_config.batch_size, data_generator, device,
                           draw_tau=model_config.head == "quantile", shard=shard,
                           channels_last=train_config.channels_last)
    end = train_config.steps if stop_after is None else min(stop_after, train_config.steps)
    report_every = max(1, train_config.steps // 20)
    name = "bits/dim" if model_config.head == "categorical" else "quantile loss"
    train_model.train()
    began = time.time()
    bar = tqdm(range(start, end), initial=start, total=train_config.steps, desc=f"train {model_config.head}",
               disable=not progress or not main, mininterval=2.0)
    losses = LossLog(log_path if main else None, dist)
    try:
        for step in bar:
            lr = train_config.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = train_step(train_model, optimizer, batches.draw(), train_config)
            update_ema(ema, model, train_config.ema_rate)

            done = step + 1
            losses.add(done, loss, lr, time.time() - began)
            report = done % 50 == 0 or done % report_every == 0
            if report or done in train_config.checkpoint_steps or done == end:
                last = losses.flush()  # the same steps on every rank: it all-reduces
            if report:
                shown = nats_to_bits_per_dim(last) if model_config.head == "categorical" else last
                bar.set_postfix({name: f"{shown:.4f}"})
                if done % report_every == 0 and main:  # progress in the rule's log file, where no bar is shown
                    rate = (done - start) / (time.time() - began)
                    log.info("step %d/%d  %s %.4f  lr %.3g  %.1f steps/s  ETA %.0f s", done, train_config.steps,
                             name, shown, lr, rate, (train_config.steps - done) / rate)
            if done in train_config.checkpoint_steps:
                if main:
                    _save_checkpoint(run_dir / checkpoint_name(done), done, model_config, train_config, digest,
                                     model, ema, optimizer, lr, data_generator)
                barrier(dist)
    finally:
        losses.close()
        bar.close()
    barrier(dist)  # every rank returns once rank 0's files are complete
    return {s: run_dir / checkpoint_name(s) for s in train_config.checkpoint_steps
            if (run_dir / checkpoint_name(s)).exists()}


def _save_checkpoint(
    path: Path,
    step: int,
    model_config: PixelCNNConfig,
    train_config: TrainConfig,
    digest: str,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    lr: float,
    data_generator: torch.Generator,
) -> None:
    """Write everything an exact resume needs; `model` is the plain module (no DDP / compile prefix)."""
    torch_save_atomic(
        {
            "step": step,
            "config": asdict(model_config),
            "train_config": asdict(train_config),
            "digest": digest,
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": {"lr_at_step": lr, "boundaries": train_config.lr_boundaries,
                         "values": train_config.lr_values, "base_lr": train_config.lr},
            "rng": rng_state(data_generator),
            "torch_version": torch.__version__,
        },
        path,
    )


def truncate_log(log_path: Path, step: int, header: str = LOG_HEADER) -> None:
    """Drop log rows after `step` (written after the checkpoint a run resumes from)."""
    if not log_path.exists():
        log_path.write_text(header)
        return
    lines = log_path.read_text().splitlines()
    kept = [lines[0]] + [line for line in lines[1:] if int(line.split(",")[0]) <= step]
    log_path.write_text("\n".join(kept) + "\n")
