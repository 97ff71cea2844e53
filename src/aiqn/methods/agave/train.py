"""Training an AGAVE (Lucas & Verbeek 2018), run by the one loop `aiqn.core.loop.fit`.

Adamax (lr 0.002, the paper's, no decay) by default, EMA weights used for sampling and evaluation,
checkpoints `ckpt_{step:07d}.pt` at `checkpoint_steps` (configs, digest, model, EMA, optimizer, RNG
states); `train_agave` resumes from the newest checkpoint of the same digest exactly (tested bitwise
on the CPU). Every random draw comes from the CPU generator `fit` seeds with `seed`: per step the
batch indices (B,), then eps (B, d). Log `train_log.csv`: step, loss, reconstruction, auxiliary, kl,
lr (wall seconds apart, in train_times.runinfo.csv), the four losses in nats per image (divide by C*H*W*ln 2 for bits per dimension;
`auxiliary` is over y's C_y*H_y*W_y dimensions). The objective is `aiqn.methods.agave.objective`,
the bounds `.bounds`, the samples `.sampling`.

NOTE: not implemented: the paper's separate pretraining of the VAE and the PixelCNN before joint
training (section 4.1, "to speed up training"; here the joint objective is trained from scratch),
latent interpolations (Figure 6), the PixelCNN++ decoder and the IAF-VAE (see `aiqn.methods.agave.model`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from aiqn.core.checkpoint import load_checkpoint
from aiqn.core.config import TrainBase, make_optimizer
from aiqn.core.loop import Run, Trainer, ema_copy, fit_trainer
from aiqn.methods.agave.model import Agave, AgaveConfig
from aiqn.methods.agave.objective import agave_objective, agave_terms

log = logging.getLogger(__name__)

KIND = "agave"
OPTIMIZERS = ("adamax", "adam")
COLUMNS = ("loss", "reconstruction", "auxiliary", "kl")


@dataclass
class AgaveTrainConfig(TrainBase):
    """How an AGAVE is trained; stored in every checkpoint as `ckpt["train_config"]`.

    The auxiliary image is part of the model (`AgaveConfig.aux`: it sets the decoder's output
    shape); whether its term enters the loss is `use_aux` here."""

    steps: int = 1000
    batch_size: int = 64
    optimizer: str = "adamax"  # the paper's; "adam" for comparison
    lr: float = 0.002  # the paper's, constant
    kl_weight: float = 2.0  # lambda of eq. 7 (paper: 1..12; 12 for Table 1, 8 for Figures 5, 8)
    use_aux: bool = True  # False: eq. 6 (the Figure 7 ablation)
    ema_rate: float = 0.999
    checkpoint_steps: list[int] = field(default_factory=list)
    seed: int = 0
    grad_clip: float = 0.0  # 0: no clipping

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not isinstance(self.use_aux, bool):
            raise ValueError(f"use_aux must be true or false, got {self.use_aux!r}")
        if self.kl_weight < 0:
            raise ValueError(f"kl_weight (lambda) must be >= 0, got {self.kl_weight}")
        super().__post_init__()


def build_agave(config: AgaveConfig | dict) -> Agave:
    """An AGAVE from its config (or the dict stored in a checkpoint)."""
    return Agave(AgaveConfig(**config) if isinstance(config, dict) else config)


def agave_from_checkpoint(path_or_ckpt, use_ema: bool = True, device: str = "cpu") -> Agave:
    """Rebuild an AGAVE from a checkpoint alone, EMA weights by default, in eval mode."""
    ckpt = path_or_ckpt if isinstance(path_or_ckpt, dict) else load_checkpoint(path_or_ckpt)
    if ckpt.get("kind") != "agave":
        raise ValueError("not an AGAVE checkpoint (written by aiqn.methods.agave.train.train_agave)")
    model = build_agave(ckpt["config"])
    model.load_state_dict(ckpt["ema"] if use_ema else ckpt["model"])
    return model.to(device).eval()


class AgaveTrainer(Trainer):
    """An AGAVE, its EMA copy and optimizer; per step eq. 7 on one batch. Draws per step, in this
    order: batch indices (B,), eps (B, d). `init` (a loaded AGAVE checkpoint) starts a fresh run from
    its weights instead of a fresh initialisation."""

    columns, desc = COLUMNS, "train agave"

    def __init__(self, config: AgaveConfig, train_config: AgaveTrainConfig, images: np.ndarray,
                 generator: torch.Generator, device: str, init: dict | None):
        self.config, self.train_config, self.generator, self.device = config, train_config, generator, device
        self.model, self.ema = build_agave(config).to(device), build_agave(config).to(device)
        ema_copy(self.model, self.ema)
        self.optimizer = make_optimizer(self.model.parameters(), train_config.optimizer, train_config.lr)
        self.states = {"model": self.model, "ema": self.ema, "optimizer": self.optimizer}
        self.emas, self.optimizers = [(self.model, self.ema)], [self.optimizer]
        self.init = init
        self.data = torch.from_numpy(np.asarray(images))  # uint8 (N, C, H, W), stays on the CPU

    def begin(self, ckpt: dict | None) -> None:
        """A fresh run with `init`: its weights, EMA and (same optimizer) optimizer state."""
        if ckpt is not None or self.init is None:
            return
        self.model.load_state_dict(self.init["model"])
        self.ema.load_state_dict(self.init["ema"])
        if self.init["train_config"]["optimizer"] == self.train_config.optimizer:
            self.optimizer.load_state_dict(self.init["optimizer"])
        log.info("initialised from a checkpoint at step %d (digest %s)", self.init["step"], self.init["digest"][:12])

    def step(self) -> torch.Tensor:
        t = self.train_config
        index = torch.randint(len(self.data), (t.batch_size,), generator=self.generator)  # (B,)
        noise = torch.randn((t.batch_size, self.config.latent_dim), generator=self.generator)  # (B, d)
        terms = agave_terms(self.model, self.data[index].to(self.device).long(), noise.to(self.device))
        loss = agave_objective(terms, t.kl_weight, t.use_aux)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.optimizer.step()
        return torch.stack([loss, terms["reconstruction"].mean(), terms["auxiliary"].mean(),
                            terms["kl"].mean()]).detach()  # (4,)


def train_agave(model_config: AgaveConfig, train_config: AgaveTrainConfig, images: np.ndarray, run_dir: str | Path,
                init_from: str | Path | dict | None = None, device: str = "cpu", **options) -> dict[int, Path]:
    """Train an AGAVE on uint8 `images` (N, C, H, W), checkpointing into `run_dir` (`fit_trainer`;
    `options`: stop_after, progress).

    Resumes from the newest checkpoint in `run_dir` written under the same configs (and the same
    `init_from`). `init_from`: an AGAVE checkpoint (path or loaded dict) of the same model config to
    start from instead of a fresh initialisation: its weights, EMA weights and, when it used the same
    optimizer, the optimizer state are loaded (its RNG state is not: draws come from this run's
    seed), and steps count from 0 (the ablation of Figure 7: continue with `use_aux=False`). The
    checkpoint's identity (digest, step), not its path, enters this run's digest. `stop_after` ends
    the run after that step (to simulate an interruption). Returns {step: checkpoint path} of the
    checkpoints that exist for this config.
    """
    run_dir = Path(run_dir)
    init_ckpt, init = None, None
    if init_from is not None:
        if not isinstance(init_from, dict) and Path(init_from).resolve().parent == run_dir.resolve():
            raise ValueError(f"init_from {init_from} lies in run_dir {run_dir}: continue into another folder")
        init_ckpt = init_from if isinstance(init_from, dict) else load_checkpoint(init_from, map_location=device)
        if init_ckpt.get("kind") != KIND:
            raise ValueError(f"init_from {init_from} is not an AGAVE checkpoint")
        if init_ckpt["config"] != asdict(model_config):
            raise ValueError(f"init_from was trained with another model config: {init_ckpt['config']}")
        init = {"digest": init_ckpt["digest"], "step": init_ckpt["step"]}
    return fit_trainer(AgaveTrainer, Run(KIND, model_config, train_config, run_dir, extra={"init": init}), images,
                       device=device, init=init_ckpt, **options)
