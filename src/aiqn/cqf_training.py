"""Objectives, training, sampling and bits/dim of CQF and its ablations (Shmelkov et al. 2018,
"Coverage and quality driven training of generative image models", eq. 6-7, section 5.1, Table 1,
appendix A). The networks are in `aiqn.models.cqf` (which also documents the continuous scale).

Objectives
----------
Coverage (eq. 6), `CQFModel.coverage`: -ELBO of the features h = f(y) minus log|det df/dy| plus the
dequantization constant, in nats per image, a bound on -log P(x) of the integer image.

Quality (eq. 7, Sønderby et al. 2017), `sonderby_generator_loss`: with D = sigmoid(l),
log(D / (1 - D)) = l, so L_Q = -E_z[l(G(z))], the discriminator's logit on generated images.

Discriminator (eq. 1 as a loss) plus the gradient penalty of Gulrajani et al. 2017 on the logit
at random interpolates x^ = a * real + (1 - a) * fake, a ~ U[0, 1] per image (`gradient_penalty`):

    L_D = E[softplus(-l(real))] + E[softplus(l(fake))] + gp_coefficient * E[(|grad l(x^)|_2 - 1)^2]

Generator objective per step (Table 1's rows, `aiqn.models.cqf.VARIANTS`):

    gan: w * L_Q        vae: L_C        cq, cqf: L_C + w * L_Q        (w = adversarial_weight)

with L_C in nats per image (batch mean) and L_Q per generated image (batch mean). The flow is
"trained only with the likelihood loss" (appendix A): the quality loss reaches the generator
through f^{-1} but does not update the flow's parameters (`flow_adversarial=True` lets it).
Appendix A: Adamax (lr 0.002, betas 0.9, 0.999) for every network, batch 64 on CIFAR-10, gradient
penalty coefficient 100, one discriminator update per generator update, adversarial weight 100.

The generated images G(z) that the discriminator and L_Q see are f^{-1}(g(z)) (eq. 7 writes a
deterministic generator G_theta(z)); `adversarial_noise=True` uses f^{-1}(g(z) + sigma n) instead,
samples of the full density model. Real images reach the discriminator dequantized (the continuous
y of the density model, `aiqn.models.cqf.dequantize`), in the same space as the generated ones.

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
gradient_penalty (unweighted), seconds; cells of terms a variant does not have are empty.

Sampling (`generate_cqf`) uses the EMA weights by default; bits/dim (`cqf_bits_per_dim`) too.

NOTE (measured on 8x8 digits, tiny networks, 600 steps): with one discriminator update per
generator update (the paper's setting at CIFAR scale) the GAN oscillated (discriminator loss
between 1 and 10, classifier FID 200-1000 from one checkpoint to the next); three updates
(`d_steps=3`) gave FID ~135. Short runs also need a short EMA (0.99): with 0.995 the averaged
CQF mixed flow weights from different phases and its bits/dim rose from 4.3 (raw) to 12.
The adversarial weight is per image whatever the dimension: scaling it by D / 3072 (~2 on digits)
or to 10 or 30 did not bring cqf near cq (500 steps: cqf FID 353 / 263 / 631 vs 505 at 100; cq
229 / 163 / 87 vs 67 at 100). What failed in cqf was the flow shrinking the data in the first
steps (`aiqn.models.cqf` docstring, docs/cqf.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from aiqn.models.cqf import VARIANTS, CQFConfig, CQFModel, Discriminator, build_cqf, check_variant, dequantize, quantize
from aiqn.objectives import nats_to_bits_per_dim
from aiqn.training import checkpoint_name, load_checkpoint, update_ema
from aiqn.run_log import BufferedLossLog, config_digest, resume_or_start, save_checkpoint
from aiqn.utils import set_seed

log = logging.getLogger(__name__)

LOG_COLUMNS = ("loss", "coverage", "bpd", "kl", "logdet", "adversarial", "d_loss", "gradient_penalty")
LOG_HEADER = "step," + ",".join(LOG_COLUMNS) + ",seconds\n"


# ----------------------------------------------------------------------------------------------
# Objectives
# ----------------------------------------------------------------------------------------------


def sonderby_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 7: -E[log D(G(z)) / (1 - D(G(z)))] = -mean of the discriminator logits (B,) on generated images."""
    return -fake_logits.mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-E[log D(real)] - E[log(1 - D(fake))] from logits (B,): softplus(-l_real) + softplus(l_fake)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def gradient_penalty(discriminator: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     alpha: torch.Tensor) -> torch.Tensor:
    """E[(|grad_x l(x^)|_2 - 1)^2] at x^ = alpha * real + (1 - alpha) * fake (Gulrajani et al. 2017),
    alpha (B,); real and fake are treated as constants. The result keeps the graph (double backward)."""
    a = alpha.to(real).view(-1, *([1] * (real.dim() - 1)))
    x = (a * real.detach() + (1.0 - a) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(x).sum(), x, create_graph=True)
    norm = grad.flatten(1).pow(2).sum(1).add(1e-12).sqrt()  # (B,); the epsilon keeps d norm finite at 0
    return (norm - 1.0).pow(2).mean()


def bits_per_dim_from_nats(nats_per_image: float | torch.Tensor, dims: int) -> float | torch.Tensor:
    """-log P(x) in nats per image -> bits per dimension of the 0..levels-1 data."""
    return nats_to_bits_per_dim(nats_per_image / dims)


@contextlib.contextmanager
def frozen(*modules: torch.nn.Module | None):
    """Parameters of `modules` excluded from the graph built inside (no gradients reach them)."""
    params = [p for m in modules if m is not None for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


@dataclass
class CQFTrainConfig:
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
        if self.d_steps < 1 or self.batch_size < 1 or self.steps < 1:
            raise ValueError("need steps, batch_size and d_steps >= 1")
        if self.adversarial_weight < 0 or self.gp_coefficient < 0:
            raise ValueError("adversarial_weight and gp_coefficient must be >= 0")
        steps = sorted(set(self.checkpoint_steps) | {self.steps})
        if steps[0] < 1 or steps[-1] > self.steps:
            raise ValueError(f"checkpoint_steps must lie in [1, steps={self.steps}]")
        self.checkpoint_steps = steps


def _adamax(params, tcfg: CQFTrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adamax(params, lr=tcfg.lr, betas=(tcfg.adamax_beta1, tcfg.adamax_beta2))


def train_cqf(
    model_config: CQFConfig,
    train_config: CQFTrainConfig,
    images: np.ndarray,
    run_dir: str | Path,
    device: str = "cpu",
    stop_after: int | None = None,
    progress: bool = True,
) -> dict[int, Path]:
    """Train one variant (`train_config.variant`) on uint8 `images` (N, C, H, W) in 0..levels-1.

    Checkpoints go to `run_dir` (with `config.json` and `train_log.csv`); the run resumes from the
    newest checkpoint written under the same configs. `stop_after` ends the run after that step
    (to simulate an interruption). Returns {step: path} of the checkpoints that exist for this config.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg, tcfg = model_config, train_config
    expected = (cfg.channels, cfg.height, cfg.width)
    if tuple(images.shape[1:]) != expected:
        raise ValueError(f"images have shape {tuple(images.shape[1:])}, the config expects {expected}")
    if int(np.max(images)) >= cfg.levels:
        raise ValueError(f"images hold levels up to {int(np.max(images))}, the config has levels={cfg.levels}")
    coverage_on, quality_on, _ = VARIANTS[tcfg.variant]
    digest = config_digest("cqf", cfg, tcfg)
    (run_dir / "config.json").write_text(
        json.dumps({"model": asdict(cfg), "train": asdict(tcfg), "digest": digest}, indent=2))

    set_seed(tcfg.seed)
    model, disc = build_cqf(cfg, tcfg.variant)
    ema, _ = build_cqf(cfg, tcfg.variant)
    model.to(device)
    ema.to(device)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt_g = _adamax(model.parameters(), tcfg)
    opt_d = None
    if disc is not None:
        disc.to(device)
        opt_d = _adamax(disc.parameters(), tcfg)
    generator = torch.Generator().manual_seed(tcfg.seed)

    start = 0
    log_path = run_dir / "train_log.csv"
    ckpt = resume_or_start(run_dir, digest, log_path, LOG_HEADER, generator, device)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt_g.load_state_dict(ckpt["optimizer"])
        if disc is not None:
            disc.load_state_dict(ckpt["discriminator"])
            opt_d.load_state_dict(ckpt["discriminator_optimizer"])
        start = ckpt["step"]

    data = torch.from_numpy(np.asarray(images))  # uint8 (N, C, H, W), stays on the CPU
    B, d, shape = tcfg.batch_size, cfg.latent_dim, (tcfg.batch_size, *expected)
    noise_on = tcfg.adversarial_noise

    def draw_real() -> torch.Tensor:
        index = torch.randint(len(data), (B,), generator=generator)  # (B,)
        u = torch.rand(shape, generator=generator)  # (B, C, H, W)
        return dequantize(data[index].to(device), u.to(device), cfg.levels)

    def draw_latents() -> tuple[torch.Tensor, torch.Tensor | None]:
        z = torch.randn((B, d), generator=generator).to(device)  # (B, d)
        n = torch.randn(shape, generator=generator).to(device) if noise_on else None  # (B, C, H, W)
        return z, n

    end = tcfg.steps if stop_after is None else min(stop_after, tcfg.steps)
    report_every = max(1, tcfg.steps // 20)
    present = [True, coverage_on, coverage_on, coverage_on, coverage_on, quality_on, quality_on, quality_on]
    losses = BufferedLossLog(log_path, present, with_lr=False, what="a CQF loss is not finite:")
    nan = torch.tensor(float("nan"), device=device)
    model.train()
    began = time.time()
    bar = tqdm(range(start, end), initial=start, total=tcfg.steps, desc=f"train {tcfg.variant}",
               disable=not progress, mininterval=2.0)
    try:
        for step in bar:
            d_loss = gp = nan
            fake = None
            if quality_on:
                for k in range(tcfg.d_steps):
                    real = draw_real()
                    z, n = draw_latents()
                    alpha = torch.rand((B,), generator=generator).to(device)
                    if k == tcfg.d_steps - 1:  # shared with the generator update: keep its graph
                        with frozen(None if tcfg.flow_adversarial else model.flow):
                            fake = model.sample(z, n)
                    else:
                        with torch.no_grad():
                            fake = model.sample(z, n)
                    d_loss = discriminator_loss(disc(real), disc(fake.detach()))
                    gp = gradient_penalty(disc, real, fake, alpha)
                    opt_d.zero_grad(set_to_none=True)
                    (d_loss + tcfg.gp_coefficient * gp).backward()
                    opt_d.step()

            loss = torch.zeros((), device=device)
            cov = {key: nan for key in ("nll", "kl", "logdet")}
            adversarial = nan
            if coverage_on:
                index = torch.randint(len(data), (B,), generator=generator)  # (B,)
                u = torch.rand(shape, generator=generator)  # (B, C, H, W)
                eps = torch.randn((B, d), generator=generator)  # (B, d)
                out = model.coverage(data[index].to(device), u.to(device), eps.to(device))
                cov = {key: out[key].mean() for key in cov}
                loss = loss + cov["nll"]
            if quality_on:
                with frozen(disc):  # the updated discriminator judges the last generated batch
                    adversarial = sonderby_generator_loss(disc(fake))
                loss = loss + tcfg.adversarial_weight * adversarial
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
            update_ema(ema, model, tcfg.ema_rate)

            done = step + 1
            row = torch.stack([loss, cov["nll"], bits_per_dim_from_nats(cov["nll"], cfg.dims), cov["kl"],
                               cov["logdet"], adversarial, d_loss, gp]).detach()
            losses.add(done, row, time.time() - began)
            report = done % 50 == 0 or done % report_every == 0
            if report or done in tcfg.checkpoint_steps or done == end:
                last = losses.flush()
            if report:
                bar.set_postfix({"loss": f"{last[0]:.2f}", "d": f"{last[6]:.3f}"})
                if done % report_every == 0:
                    rate = (done - start) / (time.time() - began)
                    log.info("%s step %d/%d  loss %.3f  bpd %.3f  adv %.3f  d %.3f  gp %.4f  %.1f steps/s",
                             tcfg.variant, done, tcfg.steps, last[0], last[2], last[5], last[6], last[7], rate)
            if done in tcfg.checkpoint_steps:
                _save_checkpoint(run_dir / checkpoint_name(done), done, cfg, tcfg, digest, model, ema, disc,
                                 opt_g, opt_d, generator)
    finally:
        losses.close()
        bar.close()
    return {s: run_dir / checkpoint_name(s) for s in tcfg.checkpoint_steps if (run_dir / checkpoint_name(s)).exists()}


def _save_checkpoint(path: Path, step: int, config: CQFConfig, train_config: CQFTrainConfig, digest: str,
                     model: CQFModel, ema: CQFModel, disc: Discriminator | None, opt_g: torch.optim.Optimizer,
                     opt_d: torch.optim.Optimizer | None, generator: torch.Generator) -> None:
    """Everything an exact resume needs (discriminator entries are None for the `vae` variant)."""
    save_checkpoint(path, "cqf", step, config, train_config, digest, generator,
                    variant=train_config.variant, model=model.state_dict(), ema=ema.state_dict(),
                    discriminator=disc.state_dict() if disc is not None else None,
                    optimizer=opt_g.state_dict(),
                    discriminator_optimizer=opt_d.state_dict() if opt_d is not None else None)


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
    for begin in range(0, N, batch_size):
        sl = slice(begin, begin + batch_size)
        x, u_b = data[sl].to(device), u[sl].to(device)
        if K == 1:
            out = model.coverage(x, u_b, eps[0, sl].to(device))
            for key in sums:
                sums[key] += float(out[key].double().sum())
        else:
            sums["nll"] += float(model.importance_nll(x, u_b, eps[:, sl].to(device)).double().sum())
    result = {key: value / N for key, value in sums.items()} if K == 1 else {"nll": sums["nll"] / N}
    result.update({"bpd": float(bits_per_dim_from_nats(result["nll"], c.dims)), "n": N, "importance_samples": K,
                   "seed": seed, "variant": model.variant})
    return result
