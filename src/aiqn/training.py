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
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from aiqn.models import GatedPixelCNN, PixelCNNConfig, build_model, to_unit
from aiqn.objectives import categorical_nll, huber_quantile_loss, nats_to_bits_per_dim
from aiqn.utils import set_seed, torch_save_atomic

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "rmsprop", "sgd")


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

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
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
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=config.lr)
    return torch.optim.SGD(params, lr=config.lr, momentum=0.9)


@torch.no_grad()
def update_ema(target: torch.nn.Module, source: torch.nn.Module, rate: float) -> None:
    """target <- rate * target + (1 - rate) * source, parameter by parameter."""
    for t, s in zip(target.parameters(), source.parameters()):
        t.lerp_(s, 1.0 - rate)


def model_loss(
    model: GatedPixelCNN,
    images: torch.Tensor,
    generator: torch.Generator,
    kappa: float,
    class_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scalar training loss of a batch of integer images (B, C, H, W).

    Categorical head: mean cross-entropy per pixel-channel (nats). Quantile head: mean Huber
    quantile loss per pixel-channel at tau ~ U[0, 1] (one tau per pixel-channel, drawn from
    `generator`), with targets in the network's [-1, 1] scale.
    """
    cfg = model.config
    x = to_unit(images, cfg.levels)
    if cfg.head == "categorical":
        logits = model(x, class_labels=class_labels)
        return categorical_nll(logits, images).mean()
    tau = torch.rand(images.shape, generator=generator).to(images.device)
    prediction = model(x, tau, class_labels=class_labels)
    return huber_quantile_loss(x, prediction, tau, kappa).mean()


def _config_digest(model_config: PixelCNNConfig, train_config: TrainConfig) -> str:
    payload = json.dumps({"model": asdict(model_config), "train": asdict(train_config)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _rng_state(generator: torch.Generator) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "data": generator.get_state(),
    }


def _restore_rng(state: dict, generator: torch.Generator) -> None:
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
) -> dict[int, Path]:
    """Train a model on uint8 `images` (N, C, H, W), checkpointing into `run_dir`.

    Resumes from the newest matching checkpoint in `run_dir`. `stop_after` ends the run early
    after that step (to simulate an interruption in tests). Returns {step: checkpoint path} of
    the checkpoints that exist for this config.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    digest = _config_digest(model_config, train_config)
    (run_dir / "config.json").write_text(
        json.dumps({"model": asdict(model_config), "train": asdict(train_config), "digest": digest}, indent=2)
    )

    set_seed(train_config.seed)
    model = build_model(model_config).to(device)
    ema = build_model(model_config).to(device)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    optimizer = make_optimizer(model, train_config)
    data_generator = torch.Generator().manual_seed(train_config.seed)
    data = torch.from_numpy(images).long()
    targets = torch.from_numpy(labels).long() if labels is not None and model_config.num_classes else None

    start = 0
    resume_from = latest_checkpoint(run_dir, digest)
    log_path = run_dir / "train_log.csv"
    if resume_from is not None:
        ckpt = load_checkpoint(resume_from, map_location=device)
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        _restore_rng(ckpt["rng"], data_generator)
        start = ckpt["step"]
        log.info("resuming from %s (step %d)", resume_from, start)
        _truncate_log(log_path, start)
    else:
        log_path.write_text("step,loss,lr,seconds\n")

    end = train_config.steps if stop_after is None else min(stop_after, train_config.steps)
    report_every = max(1, train_config.steps // 20)
    model.train()
    began = time.time()
    bar = tqdm(range(start, end), initial=start, total=train_config.steps, desc=f"train {model_config.head}",
               disable=not progress, mininterval=2.0)
    with open(log_path, "a", newline="") as log_file:
        writer = csv.writer(log_file)
        for step in bar:
            lr = train_config.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            index = torch.randint(len(data), (train_config.batch_size,), generator=data_generator)
            batch = data[index].to(device)
            batch_labels = targets[index].to(device) if targets is not None else None
            loss = model_loss(model, batch, data_generator, train_config.kappa, batch_labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if train_config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip)
            optimizer.step()
            update_ema(ema, model, train_config.ema_rate)

            done = step + 1
            writer.writerow([done, f"{loss.item():.6f}", f"{lr:.3g}", f"{time.time() - began:.2f}"])
            if done % 50 == 0 or done % report_every == 0:
                name = "bits/dim" if model_config.head == "categorical" else "quantile loss"
                shown = nats_to_bits_per_dim(loss.item()) if model_config.head == "categorical" else loss.item()
                bar.set_postfix({name: f"{shown:.4f}"})
                if done % report_every == 0:  # progress in the rule's log file, where no bar is shown
                    rate = (done - start) / (time.time() - began)
                    log.info("step %d/%d  %s %.4f  lr %.3g  %.1f steps/s  ETA %.0f s", done, train_config.steps,
                             name, shown, lr, rate, (train_config.steps - done) / rate)
            if done in train_config.checkpoint_steps:
                log_file.flush()
                torch_save_atomic(
                    {
                        "step": done,
                        "config": asdict(model_config),
                        "train_config": asdict(train_config),
                        "digest": digest,
                        "model": model.state_dict(),
                        "ema": ema.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "schedule": {"lr_at_step": lr, "boundaries": train_config.lr_boundaries,
                                     "values": train_config.lr_values, "base_lr": train_config.lr},
                        "rng": _rng_state(data_generator),
                        "torch_version": torch.__version__,
                    },
                    run_dir / checkpoint_name(done),
                )
    bar.close()
    return {s: run_dir / checkpoint_name(s) for s in train_config.checkpoint_steps
            if (run_dir / checkpoint_name(s)).exists()}


def _truncate_log(log_path: Path, step: int) -> None:
    """Drop log rows after `step` (written after the checkpoint a run resumes from)."""
    if not log_path.exists():
        log_path.write_text("step,loss,lr,seconds\n")
        return
    lines = log_path.read_text().splitlines()
    kept = [lines[0]] + [line for line in lines[1:] if int(line.split(",")[0]) <= step]
    log_path.write_text("\n".join(kept) + "\n")
