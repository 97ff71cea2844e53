"""Training and sampling of the VAE baseline and the AIQN-VAE (Ostrovski et al. 2018, appendix).

Objective per batch (one Adam optimizer over the VAE and, when `aiqn`, the AIQN):

    L = mean_x [ L_VAE(x) ] + mean_x E_tau [ sum_i rho^kappa_tau_i( e(x)_i - Q_i(tau_i | e(x)_<i) ) ]

L_VAE = reconstruction + kl_weight * KL in nats per image (`ConvVAE.loss`); e(x) are the encoder
means, detached by default (`detach_latents`), so the AIQN learns the distribution of the latent
codes without shaping them; rho^kappa is `aiqn.nets.objectives.huber_quantile_loss`, with one tau ~ U[0, 1]^d
per image, summed over the d latent dimensions (as the paper's loss sums over dimensions). The two
terms have disjoint parameters when the latents are detached, and Adam is invariant to a loss's
scale per parameter, so the sum trains both as separate optimizers would.

Trained by the one loop `aiqn.core.loop.fit`: Polyak averaging of the VAE and the AIQN,
used for sampling; checkpoints `ckpt_{step:07d}.pt` written atomically at `checkpoint_steps`,
holding configs, config digest, model and EMA weights of both networks, optimizer, RNG states;
`train_vae` resumes from the newest checkpoint with the same digest (others are moved aside as
`*.stale`), exactly (tested): every random draw (batch indices, reparameterisation noise eps,
tau) comes from one CPU generator seeded by `seed` and saved in the checkpoint, in the order
indices (B,), eps (B, d), tau (B, d). A CSV log `train_log.csv` (step, loss, reconstruction, kl,
quantile_loss, lr; wall seconds apart, in train_times.runinfo.csv; losses in nats per image, `loss` = the VAE objective).

Sampling (`generate_vae`): z from N(0, I) (the VAE baseline: its prior), or z = AIQN(tau) with
tau ~ U[0, 1]^d generated dimension by dimension (the AIQN-VAE); then the decoder's location
(the mean, median and mode of the logistic before discretisation; the paper's y = d(Q_tau) uses
the decoder mean) rounded to the nearest of the `levels` levels. No pixel noise is added, as for
the paper's VAE samples.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from aiqn.core.checkpoint import load_checkpoint
from aiqn.core.config import TrainBase, make_optimizer
from aiqn.core.loop import Run, Trainer, ema_copy, fit_trainer
from aiqn.methods.aiqn_vae.made import AutoregressiveQuantileMLP
from aiqn.nets.objectives import huber_quantile_loss
from aiqn.nets.vae import ConvVAE, VAEConfig

log = logging.getLogger(__name__)

KIND = "vae"
COLUMNS = ("loss", "reconstruction", "kl", "quantile_loss")


@dataclass
class VAETrainConfig(TrainBase):
    """How a VAE / AIQN-VAE is trained; stored in every checkpoint as `ckpt["train_config"]`."""

    steps: int = 3000
    batch_size: int = 64
    optimizer: str = "adam"  # the only one (the LynnHo VAE and the paper use Adam)
    lr: float = 1e-3
    adam_beta1: float = 0.9  # the LynnHo VAE uses 0.5
    ema_rate: float = 0.999
    kappa: float = 0.002  # Huber threshold of the AIQN's quantile loss (latent units)
    aiqn: bool = False  # train an AIQN on the encoder means (the AIQN-VAE)
    detach_latents: bool = True  # False: the quantile loss also back-propagates into the encoder
    checkpoint_steps: list[int] = field(default_factory=list)
    seed: int = 0
    grad_clip: float = 0.0  # 0: no clipping

    def __post_init__(self):
        if self.optimizer != "adam":
            raise ValueError(f"optimizer must be 'adam', got {self.optimizer!r}")
        for name in ("aiqn", "detach_latents"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        super().__post_init__()


def build_vae_aiqn(config: VAEConfig | dict, with_aiqn: bool) -> tuple[ConvVAE, AutoregressiveQuantileMLP | None]:
    """The VAE and (when `with_aiqn`) its AIQN, from a config or the dict stored in a checkpoint."""
    if isinstance(config, dict):
        config = VAEConfig(**config)
    vae = ConvVAE(config)
    aiqn = None
    if with_aiqn:
        aiqn = AutoregressiveQuantileMLP(config.latent_dim, config.aiqn_hidden, config.aiqn_layers,
                                         config.aiqn_tau_fraction)
    return vae, aiqn


def vae_from_checkpoint(path_or_ckpt, use_ema: bool = True, device: str = "cpu"
                        ) -> tuple[ConvVAE, AutoregressiveQuantileMLP | None]:
    """Rebuild (vae, aiqn or None) from a checkpoint alone, EMA weights by default, in eval mode."""
    ckpt = path_or_ckpt if isinstance(path_or_ckpt, dict) else load_checkpoint(path_or_ckpt)
    vae, aiqn = build_vae_aiqn(ckpt["config"], ckpt["aiqn"] is not None)
    vae.load_state_dict(ckpt["ema"] if use_ema else ckpt["model"])
    vae = vae.to(device).eval()
    if aiqn is not None:
        aiqn.load_state_dict(ckpt["aiqn_ema"] if use_ema else ckpt["aiqn"])
        aiqn = aiqn.to(device).eval()
    return vae, aiqn


def quantile_loss(aiqn: AutoregressiveQuantileMLP, latents: torch.Tensor, tau: torch.Tensor,
                  kappa: float) -> torch.Tensor:
    """Huber quantile loss of the AIQN on latent codes (B, d) at tau (B, d): summed over d, batch mean."""
    prediction = aiqn(tau, latents)  # (B, d): Q_i(tau_i | latents_<i)
    return huber_quantile_loss(latents, prediction, tau, kappa).sum(1).mean()


class VAETrainer(Trainer):
    """The VAE (and, with `aiqn`, its AIQN), their EMA copies, one Adam over both, one update per step.
    Draws per step, in this order: batch indices (B,), eps (B, d), tau (B, d) (AIQN-VAE only)."""

    columns = COLUMNS

    def __init__(self, config: VAEConfig, train_config: VAETrainConfig, images: np.ndarray,
                 generator: torch.Generator, device: str):
        self.config, self.train_config, self.generator, self.device = config, train_config, generator, device
        self.vae, self.aiqn = build_vae_aiqn(config, train_config.aiqn)
        ema_vae, ema_aiqn = build_vae_aiqn(config, train_config.aiqn)
        self.emas = [(self.vae, ema_vae)] + ([(self.aiqn, ema_aiqn)] if self.aiqn is not None else [])
        for net, ema in self.emas:
            ema_copy(net.to(device), ema.to(device))
        self.params = list(self.vae.parameters()) + (list(self.aiqn.parameters()) if self.aiqn is not None else [])
        self.optimizer = make_optimizer(self.params, "adam", train_config.lr, betas=(train_config.adam_beta1, 0.999))
        self.optimizers = [self.optimizer]
        self.states = {"model": self.vae, "ema": ema_vae, "aiqn": self.aiqn, "aiqn_ema": ema_aiqn,
                       "optimizer": self.optimizer}
        self.present = [True, True, True, self.aiqn is not None]
        self.desc = "train aiqn-vae" if self.aiqn is not None else "train vae"
        self.data = torch.from_numpy(np.asarray(images))  # uint8 (N, C, H, W), stays on the CPU
        self.nan = torch.tensor(float("nan"), device=device)

    def step(self) -> torch.Tensor:
        t, g, d = self.train_config, self.generator, self.config.latent_dim
        index = torch.randint(len(self.data), (t.batch_size,), generator=g)  # (B,)
        noise = torch.randn((t.batch_size, d), generator=g)  # (B, d)
        tau = torch.rand((t.batch_size, d), generator=g) if self.aiqn is not None else None  # (B, d)
        batch = self.data[index].to(self.device).long()  # (B, C, H, W)
        out = self.vae.loss(batch, noise=noise.to(self.device))
        loss, q_loss = out["total"], self.nan
        if self.aiqn is not None:
            latents = out["mean"].detach() if t.detach_latents else out["mean"]
            q_loss = quantile_loss(self.aiqn, latents, tau.to(self.device), t.kappa)
            loss = loss + q_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, t.grad_clip)
        self.optimizer.step()
        return torch.stack([out["total"], out["reconstruction"], out["kl"], q_loss]).detach()  # (4,)


def train_vae(vae_config: VAEConfig, train_config: VAETrainConfig, images: np.ndarray, run_dir: str | Path,
              **options) -> dict[int, Path]:
    """Train a VAE (and, when `train_config.aiqn`, its AIQN) on uint8 `images` (N, C, H, W), checkpointing
    into `run_dir` and resuming from the newest checkpoint written under the same configs. `options`:
    device, stop_after (end after that step, to simulate an interruption), progress (`fit_trainer`).
    Returns {step: checkpoint path} of the checkpoints that exist for this config."""
    return fit_trainer(VAETrainer, Run(KIND, vae_config, train_config, Path(run_dir)), images, **options)


def draw_latent_noise(n: int, dim: int, seed: int, use_aiqn: bool) -> torch.Tensor:
    """All sampling randomness up front, (n, d) on the CPU: tau ~ U[0, 1]^d (use_aiqn) or z ~ N(0, I).
    Drawn in one call from a generator seeded by `seed`, so it does not depend on any batch size."""
    generator = torch.Generator().manual_seed(seed)
    if use_aiqn:
        return torch.rand((n, dim), generator=generator)
    return torch.randn((n, dim), generator=generator)


@torch.no_grad()
def latents_from_noise(noise: torch.Tensor, aiqn: AutoregressiveQuantileMLP | None, use_aiqn: bool) -> torch.Tensor:
    """Latent codes (b, d) from `draw_latent_noise` rows: AIQN(tau) generated dimension by dimension
    (use_aiqn), else the N(0, I) draws themselves."""
    if not use_aiqn:
        return noise
    if aiqn is None:
        raise ValueError("this checkpoint has no AIQN (trained with aiqn=False); sample with use_aiqn=False")
    return aiqn.sample(noise)


@torch.no_grad()
def generate_vae(ckpt: str | Path | dict, n: int, seed: int, use_aiqn: bool, use_ema: bool = True,
                 device: str = "cpu", batch_size: int = 1000) -> np.ndarray:
    """n uint8 images (n, C, H, W) in 0..levels-1 from a VAE checkpoint (path or loaded dict).

    use_aiqn: latents from the AIQN (the AIQN-VAE), else from the N(0, I) prior (the VAE baseline).
    Each image is the decoder location at its latent rounded to the nearest level (no pixel noise).
    The same (checkpoint, n, seed, use_aiqn) gives the same images whatever `batch_size` (the
    number of latents decoded per pass): the noise is drawn up front (`draw_latent_noise`).
    """
    vae, aiqn = vae_from_checkpoint(ckpt, use_ema=use_ema, device=device)
    if use_aiqn and aiqn is None:
        raise ValueError("this checkpoint has no AIQN (trained with aiqn=False); sample with use_aiqn=False")
    c = vae.config
    noise = draw_latent_noise(n, c.latent_dim, seed, use_aiqn)  # (n, d)
    out = [np.zeros((0, c.channels, c.height, c.width), dtype=np.uint8)]
    for begin in range(0, n, batch_size):
        z = latents_from_noise(noise[begin:begin + batch_size].to(device), aiqn, use_aiqn)  # (b, d)
        out.append(vae.decode_images(z).cpu().numpy())  # (b, C, H, W) uint8
    return np.concatenate(out)
