"""What every method's training config shares: the fields `fit` reads (validated once), the
resume digest, and the one optimizer factory."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Iterable

import torch

OPTIMIZERS = ("adam", "adamax", "rmsprop", "sgd")


@dataclass
class TrainBase:
    """The fields `aiqn.core.loop.fit` reads. A method's train config subclasses it, adds its own
    fields and may redeclare these with other defaults; `__post_init__` (call it from a subclass's
    own) sorts `checkpoint_steps`, adds `steps` and checks that they lie in [1, steps]."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    ema_rate: float = 0.999
    checkpoint_steps: list[int] = field(default_factory=list)
    seed: int = 0
    ema_warmup: bool = True  # the EMA's rate is min(ema_rate, (1 + n) / (10 + n)) after n updates

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps} and {self.batch_size}")
        steps = sorted(set(self.checkpoint_steps) | {self.steps})
        if steps[0] < 1 or steps[-1] > self.steps:
            raise ValueError(f"checkpoint_steps must lie in [1, steps={self.steps}]")
        self.checkpoint_steps = steps

    def ema_rate_at(self, step: int) -> float:
        """The EMA's rate in the update after `step` optimizer steps: with `ema_warmup`,
        min(ema_rate, (1 + step) / (10 + step)) (TensorFlow's ExponentialMovingAverage with
        num_updates), so that a short run's average is not dominated by the initial weights
        (0.995^400 = 13.5% of them after 400 plain updates, 0.0% with the warm-up)."""
        if not self.ema_warmup:
            return self.ema_rate
        return min(self.ema_rate, (1.0 + step) / (10.0 + step))

    def lr_at(self, step: int) -> float:
        """Learning rate of the update that produces step `step + 1` (constant unless overridden)."""
        return self.lr


def make_optimizer(params: Iterable[torch.nn.Parameter], name: str, lr: float,
                   betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    """The optimizer `name` (one of OPTIMIZERS) over `params`; `betas` for Adam and Adamax, SGD with
    momentum 0.9. The learning rate is set again per step by `fit` (schedules).

    Each runs its multi-tensor form: one fused kernel over all parameters for Adam and SGD, the
    `foreach` kernels for RMSProp and Adamax, on the CPU as on CUDA. A model has tens of small
    tensors, and the per-parameter loop cost more than the update itself (Adam on the digits
    PixelCNN: 6.4 ms per step as a loop, 0.9 ms fused; docs/benchmarks.md). They compute the same
    update up to float rounding.
    """
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    if name == "adamax":  # AGAVE's and CQF's optimizer
        return torch.optim.Adamax(params, lr=lr, betas=betas, foreach=True)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, foreach=True)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, fused=True)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def digest_fields(config) -> dict:
    """A config dataclass as the dict its resume digest hashes: every field except those named in
    its `LATER_FIELDS` (fields added after checkpoints existed) while they hold their default, so
    that runs started before a field existed still resume."""
    later = getattr(config, "LATER_FIELDS", ())
    defaults = {f.name: f.default for f in fields(config)}
    return {key: value for key, value in asdict(config).items() if key not in later or value != defaults[key]}


def config_digest(kind: str | None, model_config, train_config, **extra) -> str:
    """sha256 of the checkpoint kind, both config dataclasses and `extra` (JSON, keys sorted): a
    checkpoint is resumed only under the same digest. `kind=None` hashes no kind (the PixelCNN's
    digest predates kinds; its runs keep resuming)."""
    payload = {"model": digest_fields(model_config), "train": asdict(train_config), **extra}
    if kind is not None:
        payload["kind"] = kind
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
