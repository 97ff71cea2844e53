"""Training and sampling of the VAE baseline and the AIQN-VAE (Ostrovski et al. 2018, appendix).

Objective per batch (one Adam optimizer over the VAE and, when `aiqn`, the AIQN):

    L = mean_x [ L_VAE(x) ] + mean_x E_tau [ sum_i rho^kappa_tau_i( e(x)_i - Q_i(tau_i | e(x)_<i) ) ]

L_VAE = reconstruction + kl_weight * KL in nats per image (`ConvVAE.loss`); e(x) are the encoder
means, detached by default (`detach_latents`), so the AIQN learns the distribution of the latent
codes without shaping them; rho^kappa is `aiqn.objectives.huber_quantile_loss`, with one tau ~ U[0, 1]^d
per image, summed over the d latent dimensions (as the paper's loss sums over dimensions). The two
terms have disjoint parameters when the latents are detached, and Adam is invariant to a loss's
scale per parameter, so the sum trains both as separate optimizers would.

Conventions shared with `aiqn.training`: Polyak averaging (`update_ema`) of the VAE and the AIQN,
used for sampling; checkpoints `ckpt_{step:07d}.pt` written atomically at `checkpoint_steps`,
holding configs, config digest, model and EMA weights of both networks, optimizer, RNG states;
`train_vae` resumes from the newest checkpoint with the same digest (others are moved aside as
`*.stale`), exactly (tested): every random draw (batch indices, reparameterisation noise eps,
tau) comes from one CPU generator seeded by `seed` and saved in the checkpoint, in the order
indices (B,), eps (B, d), tau (B, d). A CSV log `train_log.csv` (step, loss, reconstruction, kl,
quantile_loss, lr, seconds; losses in nats per image, `loss` = the VAE objective).

Sampling (`generate_vae`): z from N(0, I) (the VAE baseline: its prior), or z = AIQN(tau) with
tau ~ U[0, 1]^d generated dimension by dimension (the AIQN-VAE); then the decoder's location
(the mean, median and mode of the logistic before discretisation; the paper's y = d(Q_tau) uses
the decoder mean) rounded to the nearest of the `levels` levels. No pixel noise is added, as for
the paper's VAE samples.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from aiqn.models.made import AutoregressiveQuantileMLP
from aiqn.models.vae import ConvVAE, VAEConfig
from aiqn.objectives import huber_quantile_loss
from aiqn.training import checkpoint_name, load_checkpoint, update_ema
from aiqn.run_log import BufferedLossLog, config_digest, resume_or_start, save_checkpoint
from aiqn.utils import set_seed

log = logging.getLogger(__name__)

LOG_HEADER = "step,loss,reconstruction,kl,quantile_loss,lr,seconds\n"


@dataclass
class VAETrainConfig:
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
        steps = sorted(set(self.checkpoint_steps) | {self.steps})
        if steps[0] < 1 or steps[-1] > self.steps:
            raise ValueError(f"checkpoint_steps must lie in [1, steps={self.steps}]")
        self.checkpoint_steps = steps


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


def train_vae(
    vae_config: VAEConfig,
    train_config: VAETrainConfig,
    images: np.ndarray,
    run_dir: str | Path,
    device: str = "cpu",
    stop_after: int | None = None,
    progress: bool = True,
) -> dict[int, Path]:
    """Train a VAE (and, when `train_config.aiqn`, its AIQN) on uint8 `images` (N, C, H, W).

    Checkpoints go to `run_dir`; the run resumes from the newest checkpoint written under the same
    configs. `stop_after` ends the run after that step (to simulate an interruption). Returns
    {step: checkpoint path} of the checkpoints that exist for this config.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg, tcfg = vae_config, train_config
    expected = (cfg.channels, cfg.height, cfg.width)
    if tuple(images.shape[1:]) != expected:
        raise ValueError(f"images have shape {tuple(images.shape[1:])}, the config expects {expected}")
    digest = config_digest("vae", cfg, tcfg)
    (run_dir / "config.json").write_text(
        json.dumps({"model": asdict(cfg), "train": asdict(tcfg), "digest": digest}, indent=2))

    set_seed(tcfg.seed)
    vae, aiqn = build_vae_aiqn(cfg, tcfg.aiqn)
    ema_vae, ema_aiqn = build_vae_aiqn(cfg, tcfg.aiqn)
    pairs = [(vae, ema_vae)] + ([(aiqn, ema_aiqn)] if aiqn is not None else [])
    for net, ema in pairs:
        net.to(device)
        ema.to(device)
        ema.load_state_dict(net.state_dict())
        ema.requires_grad_(False)
    params = list(vae.parameters()) + (list(aiqn.parameters()) if aiqn is not None else [])
    optimizer = torch.optim.Adam(params, lr=tcfg.lr, betas=(tcfg.adam_beta1, 0.999))
    generator = torch.Generator().manual_seed(tcfg.seed)

    start = 0
    log_path = run_dir / "train_log.csv"
    ckpt = resume_or_start(run_dir, digest, log_path, LOG_HEADER, generator, device)
    if ckpt is not None:
        vae.load_state_dict(ckpt["model"])
        ema_vae.load_state_dict(ckpt["ema"])
        if aiqn is not None:
            aiqn.load_state_dict(ckpt["aiqn"])
            ema_aiqn.load_state_dict(ckpt["aiqn_ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start = ckpt["step"]

    data = torch.from_numpy(np.asarray(images))  # uint8 (N, C, H, W), stays on the CPU
    end = tcfg.steps if stop_after is None else min(stop_after, tcfg.steps)
    report_every = max(1, tcfg.steps // 20)
    d = cfg.latent_dim
    vae.train()
    began = time.time()
    desc = "train aiqn-vae" if aiqn is not None else "train vae"
    bar = tqdm(range(start, end), initial=start, total=tcfg.steps, desc=desc,
               disable=not progress, mininterval=2.0)
    losses = BufferedLossLog(log_path, [True, True, True, aiqn is not None], with_lr=True)
    nan = torch.tensor(float("nan"), device=device)
    try:
        for step in bar:
            index = torch.randint(len(data), (tcfg.batch_size,), generator=generator)  # (B,)
            noise = torch.randn((tcfg.batch_size, d), generator=generator)  # (B, d)
            tau = torch.rand((tcfg.batch_size, d), generator=generator) if aiqn is not None else None  # (B, d)
            batch = data[index].to(device).long()  # (B, C, H, W)
            out = vae.loss(batch, noise=noise.to(device))
            loss = out["total"]
            q_loss = nan
            if aiqn is not None:
                latents = out["mean"].detach() if tcfg.detach_latents else out["mean"]
                q_loss = quantile_loss(aiqn, latents, tau.to(device), tcfg.kappa)
                loss = loss + q_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tcfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, tcfg.grad_clip)
            optimizer.step()
            for net, ema in pairs:
                update_ema(ema, net, tcfg.ema_rate)

            done = step + 1
            row = torch.stack([out["total"], out["reconstruction"], out["kl"], q_loss]).detach()  # (4,)
            losses.add(done, row, time.time() - began, tcfg.lr)
            report = done % 50 == 0 or done % report_every == 0
            if report or done in tcfg.checkpoint_steps or done == end:
                last = losses.flush()
            if report:
                bar.set_postfix({"loss": f"{last[0]:.2f}", "q": f"{last[3]:.3f}"})
                if done % report_every == 0:
                    rate = (done - start) / (time.time() - began)
                    log.info("step %d/%d  loss %.3f (rec %.3f kl %.3f) quantile %.4f  %.1f steps/s  ETA %.0f s",
                             done, tcfg.steps, *last, rate, (tcfg.steps - done) / rate)
            if done in tcfg.checkpoint_steps:
                _save_checkpoint(run_dir / checkpoint_name(done), done, cfg, tcfg, digest, vae, ema_vae,
                                 aiqn, ema_aiqn, optimizer, generator)
    finally:
        losses.close()
        bar.close()
    return {s: run_dir / checkpoint_name(s) for s in tcfg.checkpoint_steps if (run_dir / checkpoint_name(s)).exists()}


def _save_checkpoint(path: Path, step: int, vae_config: VAEConfig, train_config: VAETrainConfig, digest: str,
                     vae: ConvVAE, ema_vae: ConvVAE, aiqn: AutoregressiveQuantileMLP | None,
                     ema_aiqn: AutoregressiveQuantileMLP | None, optimizer: torch.optim.Optimizer,
                     generator: torch.Generator) -> None:
    """Write everything an exact resume needs (AIQN entries are None for a plain VAE)."""
    save_checkpoint(path, "vae", step, vae_config, train_config, digest, generator,
                    model=vae.state_dict(), ema=ema_vae.state_dict(),
                    aiqn=aiqn.state_dict() if aiqn is not None else None,
                    aiqn_ema=ema_aiqn.state_dict() if ema_aiqn is not None else None,
                    optimizer=optimizer.state_dict())


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
