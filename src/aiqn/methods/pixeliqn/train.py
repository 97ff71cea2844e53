"""The PixelCNN / PixelIQN train step (the AIQN paper), run by the one loop `aiqn.core.loop.fit`.

- Optimizers: Adam, RMSProp, SGD; learning rate constant or piecewise constant (the paper's
  PixelCNN schedule on CIFAR-10: 1e-4 for 120K steps, 3e-5 for 60K, 1e-5 after).
- Polyak averaging (EMA of the weights, Ostrovski et al. 2018 appendix), used for sampling only.
- Checkpoints `ckpt_{step:07d}.pt` at the configured steps, written atomically, holding model,
  EMA, optimizer, schedule, step, configs and RNG states, so that a resumed run continues
  exactly as an uninterrupted one (tested).
- A CSV log (`train_log.csv`: step, loss, lr; the wall seconds in `train_times.runinfo.csv`) in the run folder; a tqdm progress bar.

Resuming, EMA, logging and checkpoints are `fit`'s; this module holds the config, the loss, the
batch draws and the DDP / compile wrapping of the step.

Using the hardware (all opt-in through `TrainConfig`, all stored in the config digest):
- `precision="bf16"`: the forward pass runs under `torch.autocast(dtype=bfloat16)`; the network's
  output is cast back to float32 and the loss is computed in float32.
- `compile=True`: the training step calls `torch.compile(model)`; the EMA and the saved weights
  are those of the plain module (a compiled module's state_dict keys carry `_orig_mod.`).
- `channels_last=True`: weights and input batches in `torch.channels_last` memory format.
- Several processes (torchrun, `dist=aiqn.core.distributed.init_from_env(...)`): DistributedDataParallel;
  every rank draws the same global batch and tau and trains on its shard, so the run equals the
  single-process one up to float rounding (see `aiqn.core.distributed`). Rank 0 alone writes files.

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

import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from aiqn.core.config import OPTIMIZERS, TrainBase, make_optimizer
from aiqn.core.device import PRECISIONS, autocast
from aiqn.core.distributed import DistInfo, shard_slice
from aiqn.core.loop import Run, Trainer, ema_copy, fit, unwrap_model
from aiqn.methods.pixeliqn.kind import KIND
from aiqn.nets import GatedPixelCNN, PixelCNNConfig, build_model, to_unit
from aiqn.nets.objectives import categorical_nll, huber_quantile_loss, nats_to_bits_per_dim

log = logging.getLogger(__name__)

DDP_PARAMETERS = inspect.signature(DistributedDataParallel).parameters


@dataclass
class TrainConfig(TrainBase):
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
        super().__post_init__()

    def lr_at(self, step: int) -> float:
        """Learning rate used for the update that produces step `step + 1`."""
        if not self.lr_values:
            return self.lr
        for boundary, value in zip(self.lr_boundaries, self.lr_values):
            if step < boundary:
                return value
        return self.lr_values[-1]


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


class PixelCNNTrainer(Trainer):
    """A Gated (or plain) PixelCNN / PixelIQN, its EMA copy and optimizer, and one update per step."""

    def __init__(self, model_config: PixelCNNConfig, train_config: TrainConfig, images: np.ndarray,
                 labels: np.ndarray | None, generator: torch.Generator, device: str, dist: DistInfo | None):
        self.config, self.train_config, self.dist, self.device = model_config, train_config, dist, device
        self.model = build_model(model_config).to(device)
        self.ema = build_model(model_config).to(device)
        if train_config.channels_last:  # 4-d weights and masks; parameters stay the same objects
            self.model.to(memory_format=torch.channels_last)
            self.ema.to(memory_format=torch.channels_last)
        ema_copy(self.model, self.ema)
        self.optimizer = make_optimizer(self.model.parameters(), train_config.optimizer, train_config.lr)
        self.states = {"model": self.model, "ema": self.ema, "optimizer": self.optimizer}
        self.emas, self.optimizers = [(self.model, self.ema)], [self.optimizer]
        self.columns, self.desc = ("loss",), f"train {model_config.head}"
        rank, world_size = (dist.rank, dist.world_size) if dist is not None else (0, 1)
        self.batches = BatchSampler(images, labels if model_config.num_classes else None, train_config.batch_size,
                                    generator, device, draw_tau=model_config.head == "quantile",
                                    shard=shard_slice(train_config.batch_size, rank, world_size),
                                    channels_last=train_config.channels_last)

    def begin(self, ckpt: dict | None) -> None:
        """Wrap the (loaded) model for the step: DDP over ranks, torch.compile."""
        self.train_model = wrap_for_training(self.model, self.train_config, self.dist)

    def step(self) -> torch.Tensor:
        return train_step(self.train_model, self.optimizer, self.batches.draw(), self.train_config).view(1)

    def record(self, step: int) -> dict:
        t = self.train_config
        return {"schedule": {"lr_at_step": t.lr_at(step - 1), "boundaries": t.lr_boundaries, "values": t.lr_values,
                             "base_lr": t.lr}}

    def shown(self, last: list[float]) -> dict[str, float]:
        if self.config.head == "categorical":
            return {"bits/dim": nats_to_bits_per_dim(last[0])}
        return {"quantile loss": last[0]}


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
    """Train a model on uint8 `images` (N, C, H, W), checkpointing into `run_dir` (`fit`).

    Resumes from the newest matching checkpoint in `run_dir`. `stop_after` ends the run early
    after that step (to simulate an interruption in tests). Returns {step: checkpoint path} of
    the checkpoints that exist for this config.

    `dist` (from `aiqn.core.distributed.init_from_env`) trains data-parallel over its processes: each
    takes its equal shard of every global batch of `train_config.batch_size` images, on
    `dist.device` (which then replaces `device`); only rank 0 writes config.json, the log and
    the checkpoints. Every rank must call `train` with the same arguments. None: one process.
    """
    if dist is not None and dist.distributed:
        device = dist.device
    run = Run(KIND, model_config, train_config, Path(run_dir), digest_kind=False)
    return fit(run, lambda generator: PixelCNNTrainer(model_config, train_config, images, labels, generator,
                                                       device, dist),
               device=device, dist=dist, stop_after=stop_after, progress=progress)
