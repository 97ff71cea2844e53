"""Objectives, training, sampling and bits/dim of CQF and its ablations (Shmelkov et al. 2018,
"Coverage and quality driven training of generative image models", eq. 6-7, section 5.1, Table 1,
appendix A). The networks are in `aiqn.methods.cqf.model` (which also documents the continuous scale).

Objectives
----------
Coverage (eq. 6), `CQFModel.coverage`: -ELBO of the features h = f(y) minus log|det df/dy| plus the
dequantization constant, in nats per image, a bound on -log P(x) of the integer image.

Quality (eq. 7, Sønderby et al. 2017), `sonderby_generator_loss`: with D = sigmoid(l),
log(D / (1 - D)) = l, so L_Q = -E_z[l(G(z))], the discriminator's logit on generated images.

Discriminator (eq. 1 as a loss) plus the gradient penalty of Gulrajani et al. 2017 on the logit
at random interpolates x^ = a * real + (1 - a) * fake, a ~ U[0, 1] per image (`gradient_penalty`):

    L_D = E[softplus(-l(real))] + E[softplus(l(fake))] + gp_coefficient * E[(|grad l(x^)|_2 - 1)^2]

Generator objective per step (Table 1's rows, `aiqn.methods.cqf.model.VARIANTS`):

    gan: w * L_Q        vae: L_C        cq, cqf: L_C + w * L_Q        (w = adversarial_weight)

with L_C in nats per image (batch mean) and L_Q per generated image (batch mean). The flow is
"trained only with the likelihood loss" (appendix A): the quality loss reaches the generator
through f^{-1} but does not update the flow's parameters (`flow_adversarial=True` lets it).
Appendix A: Adamax (lr 0.002, betas 0.9, 0.999) for every network, batch 64 on CIFAR-10, gradient
penalty coefficient 100, one discriminator update per generator update, adversarial weight 100.

The generated images G(z) that the discriminator and L_Q see are f^{-1}(g(z)) (eq. 7 writes a
deterministic generator G_theta(z)); `adversarial_noise=True` uses f^{-1}(g(z) + sigma n) instead,
samples of the full density model. Real images reach the discriminator dequantized (the continuous
y of the density model, `aiqn.methods.cqf.model.dequantize`), in the same space as the generated ones.

Step order and randomness
-------------------------
Each step makes `d_steps` discriminator updates (variants with L_Q), then one update of the
generative model. Every discriminator update draws a real batch and a generated batch; the last
generated batch keeps its graph and is the one L_Q judges, with the discriminator just updated
(as in the usual DCGAN loop: one generator pass per step instead of two). Every random draw comes
from one CPU generator seeded by `seed` and saved in each checkpoint, in this order per step: for
each discriminator update batch indices (B,), dequantization u (B, C, H, W), z (B, d),
[n (B, C, H, W) when adversarial_noise], a (B,); then, with L_C, indices (B,), u (B, C, H, W),
eps (B, d). Checkpoints `ckpt_{step:07d}.pt` (atomic) hold configs, digest, model, EMA model,
discriminator, both optimizers and the RNG states;
`train_cqf` resumes exactly from the newest checkpoint with the same digest (tested bitwise on
the CPU). `train_log.csv`: step, loss (the generator objective), coverage (L_C, nats/image), bpd
(L_C in bits/dim), kl, logdet, adversarial (L_Q, unweighted), d_loss (without the penalty),
gradient_penalty (unweighted) (wall seconds apart, in train_times.runinfo.csv); cells of terms a variant does not have are empty.

Sampling (`generate_cqf`) uses the EMA weights by default; bits/dim (`cqf_bits_per_dim`) too.

NOTE (measured on 8x8 digits, tiny networks, 600 steps): with one discriminator update per
generator update (the paper's setting at CIFAR scale) the GAN oscillated (discriminator loss
between 1 and 10, classifier FID 200-1000 from one checkpoint to the next); three updates
(`d_steps=3`) gave FID ~135. Short runs also need a short EMA (0.99): with 0.995 the averaged
CQF mixed flow weights from different phases and its bits/dim rose from 4.3 (raw) to 12.
The adversarial weight is per image whatever the dimension: scaling it by D / 3072 (~2 on digits)
or to 10 or 30 did not bring cqf near cq (500 steps: cqf FID 353 / 263 / 631 vs 505 at 100; cq
229 / 163 / 87 vs 67 at 100). What failed in cqf was the flow shrinking the data in the first
steps (`aiqn.methods.cqf.model` docstring, docs/cqf.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from aiqn.core.checkpoint import load_checkpoint
from aiqn.core.intervals import t_interval
from aiqn.core.config import TrainBase, make_optimizer
from aiqn.core.loop import Run, Trainer, ema_copy, fit_trainer
from aiqn.methods.cqf.model import VARIANTS, CQFConfig, CQFModel, build_cqf, check_variant, dequantize, quantize
from aiqn.methods.cqf.objective import (bits_per_dim_from_nats, discriminator_loss, frozen, gradient_penalty,
                                        sonderby_generator_loss)

log = logging.getLogger(__name__)

LOG_COLUMNS = ("loss", "coverage", "bpd", "kl", "logdet", "adversarial", "d_loss", "gradient_penalty")
KIND = "cqf"


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


@dataclass
class CQFTrainConfig(TrainBase):
    """How a CQF variant is trained; stored in every checkpoint as `ckpt["train_config"]`."""

    variant: str = "cqf"  # gan | vae | cq | cqf (Table 1)
    steps: int = 2000
    batch_size: int = 64  # appendix A: 64 on CIFAR-10, 32 at higher resolutions
    lr: float = 0.002  # Adamax, every network (appendix A)
    adamax_beta1: float = 0.9
    adamax_beta2: float = 0.999
    adversarial_weight: float = 100.0  # weight of L_Q (appendix A: 100; 10..100 work)
    gp_coefficient: float = 100.0
    d_steps: int = 1  # discriminator updates per generator update (paper: 1; tiny digits runs: 3)
    adversarial_noise: bool = False  # L_Q on f^{-1}(g(z) + sigma n) instead of f^{-1}(g(z))
    flow_adversarial: bool = False  # let L_Q update the flow (the paper trains it with L_C only)
    ema_rate: float = 0.999
    checkpoint_steps: list[int] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self):
        check_variant(self.variant)
        for name in ("adversarial_noise", "flow_adversarial"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.adversarial_noise and self.variant == "gan":
            raise ValueError("adversarial_noise needs a decoder noise level: not with variant 'gan'")
        if self.d_steps < 1:
            raise ValueError(f"d_steps must be >= 1, got {self.d_steps}")
        if self.adversarial_weight < 0 or self.gp_coefficient < 0:
            raise ValueError("adversarial_weight and gp_coefficient must be >= 0")
        super().__post_init__()


class CQFTrainer(Trainer):
    """One CQF variant: the generative model, its EMA copy and Adamax; the discriminator and its Adamax
    when the variant has the quality loss. Per step: `d_steps` discriminator updates (each draws a real
    batch: indices (B,), dequantisation u (B, C, H, W); latents z (B, d) [, decoder noise (B, C, H, W)];
    alpha (B,)), then one generator update (coverage: indices, u, eps (B, d); quality: the last
    discriminator step's generated batch)."""

    columns, with_lr, what = LOG_COLUMNS, False, "a CQF loss is not finite:"

    def __init__(self, config: CQFConfig, train_config: CQFTrainConfig, images: np.ndarray,
                 generator: torch.Generator, device: str):
        self.config, self.train_config, self.generator, self.device = config, train_config, generator, device
        t = train_config
        self.coverage_on, self.quality_on, _ = VARIANTS[t.variant]
        self.model, self.disc = build_cqf(config, t.variant)
        self.ema, _ = build_cqf(config, t.variant)
        ema_copy(self.model.to(device), self.ema.to(device))
        betas = (t.adamax_beta1, t.adamax_beta2)
        self.opt_g = make_optimizer(self.model.parameters(), "adamax", t.lr, betas)
        self.opt_d = None
        if self.disc is not None:
            self.disc.to(device)
            self.opt_d = make_optimizer(self.disc.parameters(), "adamax", t.lr, betas)
        self.states = {"model": self.model, "ema": self.ema, "discriminator": self.disc, "optimizer": self.opt_g,
                       "discriminator_optimizer": self.opt_d}
        self.emas = [(self.model, self.ema)]
        self.optimizers = [self.opt_g] + ([self.opt_d] if self.opt_d is not None else [])
        on = self.coverage_on
        self.present = [True, on, on, on, on, self.quality_on, self.quality_on, self.quality_on]
        self.desc = f"train {t.variant}"
        self.data = torch.from_numpy(np.asarray(images))  # uint8 (N, C, H, W), stays on the CPU
        self.shape = (t.batch_size, config.channels, config.height, config.width)
        self.nan = torch.tensor(float("nan"), device=device)

    def record(self, step: int) -> dict:
        return {"variant": self.train_config.variant}

    def _real(self) -> torch.Tensor:
        index = torch.randint(len(self.data), (self.shape[0],), generator=self.generator)  # (B,)
        u = torch.rand(self.shape, generator=self.generator)  # (B, C, H, W)
        return dequantize(self.data[index].to(self.device), u.to(self.device), self.config.levels)

    def _latents(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        g = self.generator
        z = torch.randn((self.shape[0], self.config.latent_dim), generator=g).to(self.device)  # (B, d)
        n = torch.randn(self.shape, generator=g).to(self.device) if self.train_config.adversarial_noise else None
        return z, n

    def step(self) -> torch.Tensor:
        t, g, B, device, nan = self.train_config, self.generator, self.shape[0], self.device, self.nan
        model, disc = self.model, self.disc
        d_loss = gp = nan
        fake = None
        if self.quality_on:
            for k in range(t.d_steps):
                real = self._real()
                z, n = self._latents()
                alpha = torch.rand((B,), generator=g).to(device)
                if k == t.d_steps - 1:  # shared with the generator update: keep its graph
                    with frozen(None if t.flow_adversarial else model.flow):
                        fake = model.sample(z, n)
                else:
                    with torch.no_grad():
                        fake = model.sample(z, n)
                d_loss = discriminator_loss(disc(real), disc(fake.detach()))
                gp = gradient_penalty(disc, real, fake, alpha)
                self.opt_d.zero_grad(set_to_none=True)
                (d_loss + t.gp_coefficient * gp).backward()
                self.opt_d.step()

        loss = torch.zeros((), device=device)
        cov = {key: nan for key in ("nll", "kl", "logdet")}
        adversarial = nan
        if self.coverage_on:
            index = torch.randint(len(self.data), (B,), generator=g)  # (B,)
            u = torch.rand(self.shape, generator=g)  # (B, C, H, W)
            eps = torch.randn((B, self.config.latent_dim), generator=g)  # (B, d)
            out = model.coverage(self.data[index].to(device), u.to(device), eps.to(device))
            cov = {key: out[key].mean() for key in cov}
            loss = loss + cov["nll"]
        if self.quality_on:
            with frozen(disc):  # the updated discriminator judges the last generated batch
                adversarial = sonderby_generator_loss(disc(fake))
            loss = loss + t.adversarial_weight * adversarial
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        return torch.stack([loss, cov["nll"], bits_per_dim_from_nats(cov["nll"], self.config.dims), cov["kl"],
                            cov["logdet"], adversarial, d_loss, gp]).detach()  # (8,)

    def shown(self, last: list[float]) -> dict[str, float]:
        names = ("loss", "bpd", "adversarial", "d_loss", "gradient_penalty")
        return {name: last[self.columns.index(name)] for name in names}


def train_cqf(model_config: CQFConfig, train_config: CQFTrainConfig, images: np.ndarray, run_dir: str | Path,
              **options) -> dict[int, Path]:
    """Train one variant (`train_config.variant`) on uint8 `images` (N, C, H, W) in 0..levels-1, checkpointing
    into `run_dir` (with `config.json` and `train_log.csv`) and resuming from the newest checkpoint written
    under the same configs. `options`: device, stop_after, progress (`fit_trainer`). Returns {step: path}
    of the checkpoints that exist for this config."""
    if int(np.max(images)) >= model_config.levels:
        raise ValueError(f"images hold levels up to {int(np.max(images))}, the config has levels={model_config.levels}")
    return fit_trainer(CQFTrainer, Run(KIND, model_config, train_config, Path(run_dir)), images, **options)


# ----------------------------------------------------------------------------------------------
# Sampling and evaluation
# ----------------------------------------------------------------------------------------------


def cqf_from_checkpoint(path_or_ckpt, use_ema: bool = True, device: str = "cpu") -> CQFModel:
    """Rebuild the generative model from a checkpoint alone (EMA weights by default), in eval mode."""
    ckpt = path_or_ckpt if isinstance(path_or_ckpt, dict) else load_checkpoint(path_or_ckpt)
    if ckpt.get("kind") != "cqf":
        raise ValueError("not a CQF checkpoint (written by `train_cqf`)")
    model, _ = build_cqf(ckpt["config"], ckpt["variant"])
    model.load_state_dict(ckpt["ema"] if use_ema else ckpt["model"])
    return model.to(device).eval()


def _model(model_or_ckpt, use_ema: bool, device: str) -> CQFModel:
    if isinstance(model_or_ckpt, CQFModel):
        return model_or_ckpt.to(device).eval()
    return cqf_from_checkpoint(model_or_ckpt, use_ema=use_ema, device=device)


@torch.no_grad()
def generate_cqf(ckpt, n: int, seed: int, use_ema: bool = True, device: str = "cpu", batch_size: int = 1000,
                 decoder_noise: bool = False) -> np.ndarray:
    """n uint8 images (n, C, H, W) in 0..levels-1: quantize(f^{-1}(g(z) [+ sigma n])), z ~ N(0, I).

    `ckpt`: a checkpoint path, a loaded checkpoint dict or a CQFModel. decoder_noise: add the
    decoder's Gaussian noise in feature space (samples of the full density model; not for `gan`);
    without it the samples are the generator G(z) that the quality loss trains. All draws are made
    up front from a generator seeded by `seed` (z (n, d), then n (n, C, H, W)), so the images do not
    depend on `batch_size`.
    """
    model = _model(ckpt, use_ema, device)
    c = model.config
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn((n, c.latent_dim), generator=generator)  # (n, d)
    noise = torch.randn((n, c.channels, c.height, c.width), generator=generator) if decoder_noise else None
    out = [np.zeros((0, c.channels, c.height, c.width), dtype=np.uint8)]
    for begin in range(0, n, batch_size):
        part = None if noise is None else noise[begin:begin + batch_size].to(device)
        y = model.sample(z[begin:begin + batch_size].to(device), part)  # (b, C, H, W) continuous
        out.append(quantize(y, c.levels).to(torch.uint8).cpu().numpy())
    return np.concatenate(out)


@torch.no_grad()
def cqf_bits_per_dim(ckpt, images: np.ndarray, seed: int = 0, importance_samples: int = 1, use_ema: bool = True,
                     device: str = "cpu", batch_size: int = 500) -> dict:
    """Bits/dim of uint8 `images` (N, C, H, W) (held-out data) under a likelihood variant (vae, cq, cqf).

    The bound of eq. 6 including the flow's log-determinant and the dequantization (one uniform
    draw u per image): importance_samples K = 1 gives the ELBO (analytic KL), K > 1 the
    importance-weighted bound (tighter). Draws come up front from a generator seeded by `seed`
    (u (N, C, H, W), then eps (K, N, d)), so the result does not depend on `batch_size`.
    Returns bpd and the nats-per-image means of nll (and, for K = 1, reconstruction, kl, logdet).
    """
    model = _model(ckpt, use_ema, device)
    if not model.has_likelihood:
        raise ValueError(f"the {model.variant} variant has no likelihood: bits/dim is undefined")
    c = model.config
    expected = (c.channels, c.height, c.width)
    if tuple(images.shape[1:]) != expected:
        raise ValueError(f"images have shape {tuple(images.shape[1:])}, the model expects {expected}")
    N, K = len(images), importance_samples
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand((N, c.channels, c.height, c.width), generator=generator)
    eps = torch.randn((K, N, c.latent_dim), generator=generator)
    data = torch.from_numpy(np.asarray(images))
    sums = {"nll": 0.0, "reconstruction": 0.0, "kl": 0.0, "logdet": 0.0}
    nll_per_image = []  # (B,) nats per batch
    for begin in range(0, N, batch_size):
        sl = slice(begin, begin + batch_size)
        x, u_b = data[sl].to(device), u[sl].to(device)
        if K == 1:
            out = model.coverage(x, u_b, eps[0, sl].to(device))
            for key in sums:
                sums[key] += float(out[key].double().sum())
            nll_per_image.append(out["nll"].double().cpu().numpy())
        else:
            nll = model.importance_nll(x, u_b, eps[:, sl].to(device)).double()
            sums["nll"] += float(nll.sum())
            nll_per_image.append(nll.cpu().numpy())
    result = {key: value / N for key, value in sums.items()} if K == 1 else {"nll": sums["nll"] / N}
    _, low, high = t_interval(bits_per_dim_from_nats(np.concatenate(nll_per_image), c.dims))
    result.update({"bpd": float(bits_per_dim_from_nats(result["nll"], c.dims)),
                   "bpd_interval": [round(float(low), 6), round(float(high), 6)], "n": N, "importance_samples": K,
                   "seed": seed, "variant": model.variant})
    return result
