"""AGAVE (Lucas & Verbeek 2018): the objective of eq. 7, bounds on -log p(x) in bits per dimension,
training, and sampling. The network is `aiqn.methods.agave.model.Agave`.

Objective (eq. 7, negated, nats per image, batch mean), one reparameterised z = mu + sigma * eps:

    loss = reconstruction + [use_aux] * auxiliary + lambda * kl
    reconstruction = -sum_i log p(x_i | x_<i, f(z))       (the PixelCNN, categorical softmax)
    auxiliary      = -sum_j log p(y_j | z)                 (eq. 10 over y's levels)
    kl             = KL(q(z|x) || N(0, I))                 (closed form)

`use_aux=False` is eq. 6 (with lambda as the KL weight): the ablation of section 4.4 / Figure 7,
continuing a trained AGAVE without the auxiliary term (`train_agave(..., init_from=checkpoint)`)
while the log records the KL (and the auxiliary term, computed but not optimised) per step.

Bounds on -log p(x), p(x) = int p(z) p(x | f(z)) dz (the PixelCNN alone defines p(x | z); y is not
part of the model of x), divided by D ln 2, D = C*H*W, to bits per dimension:

- `elbo_bits_per_dim`: eq. 7 with lambda = 1 and without the auxiliary term, the negative ELBO
  E_q[-log p(x|z)] + KL (the paper's Figures 4 and 8), with `samples` draws of z per image and the
  KL in closed form;
- `importance_bits_per_dim`: Burda et al.'s bound with K samples (the paper's Table 1: K = 150),
  -log (1/K sum_k p(x|z_k) p(z_k) / q(z_k|x)), by logsumexp; images in batches, the K samples of
  each batch in chunks of `k_batch`, so memory is (batch_size * k_batch) PixelCNN passes at a time.
  It is a tighter bound in expectation (decreasing in K towards -log p(x)); with K = 1 its
  expectation equals the ELBO (tested).

Training follows `aiqn.methods.aiqn_vae.train`: Adamax (lr 0.002, the paper's, no decay) by default, EMA
weights used for sampling and evaluation, checkpoints `ckpt_{step:07d}.pt` written atomically at
`checkpoint_steps` holding configs, digest, model, EMA, optimizer and RNG states; `train_agave`
resumes from the newest checkpoint of the same digest exactly (tested bitwise on the CPU). Every
random draw comes from one CPU generator seeded by `seed` and saved in the checkpoint: per step the
batch indices (B,), then eps (B, d). Log `train_log.csv`: step, loss, reconstruction, auxiliary,
kl, lr, seconds, the four losses in nats per image (divide by C*H*W*ln 2 for bits per dimension;
`auxiliary` is over y's C_y*H_y*W_y dimensions).

Sampling (`generate_agave`, Figure 5): z ~ N(0, I) -> f(z) (saved: the left column of Figure 5) ->
`samples_per_latent` PixelCNN samples conditioned on it, with the cached (default) or the naive
sampler of `aiqn.nets.sampling` and its `cond_map` argument. `reconstruct_agave` does the same from
q(z|x) of given images (Figures 3 and 7: ground truth, f(z), PixelCNN samples).

NOTE: not implemented: the paper's separate pretraining of the VAE and the PixelCNN before joint
training (section 4.1, "to speed up training"; here the joint objective is trained from scratch),
latent interpolations (Figure 6), the PixelCNN++ decoder and the IAF-VAE (see `aiqn.methods.agave.model`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from aiqn.core.checkpoint import load_checkpoint
from aiqn.core.config import TrainBase, make_optimizer
from aiqn.core.loop import Run, Trainer, check_shape, ema_copy, fit
from aiqn.methods.agave.model import Agave, AgaveConfig
from aiqn.nets.pixelcnn import from_unit, to_unit
from aiqn.nets.vae import gaussian_kl
from aiqn.nets.objectives import categorical_nll
from aiqn.nets.sampling import sampler

log = logging.getLogger(__name__)

KIND = "agave"
OPTIMIZERS = ("adamax", "adam")
COLUMNS = ("loss", "reconstruction", "auxiliary", "kl")
LOG_2 = math.log(2.0)


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


# ------------------------------------------------------------------------------------ objective

def decoder_terms(model: Agave, images: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
                  noise: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image terms (B,) in nats at z = mean + exp(logvar / 2) * noise, all (B, d), for integer
    images (B, C, H, W): reconstruction -log p(x | f(z)), auxiliary -log p(y | z), and
    log_weight = log p(z) - log q(z | x) (the importance weight's prior/posterior part)."""
    z = mean + torch.exp(0.5 * logvar) * noise  # (B, d)
    means = model.decode(z)  # (B, C_y, H_y, W_y)
    x_unit = to_unit(images, model.config.levels).to(means.dtype)
    logits = model.pixel_logits(x_unit, model.condition(means))  # (B, C, L, H, W)
    reconstruction = categorical_nll(logits, images).flatten(1).sum(1)  # (B,)
    auxiliary = -model.aux_log_prob(model.aux_image(images), means).flatten(1).sum(1)  # (B,)
    # log N(z; 0, I) - log N(z; mean, sigma^2) = -1/2 sum (z^2 - noise^2 - logvar)
    log_weight = -0.5 * (z.pow(2) - noise.pow(2) - logvar).sum(1)  # (B,)
    return {"reconstruction": reconstruction, "auxiliary": auxiliary, "log_weight": log_weight}


def agave_terms(model: Agave, images: torch.Tensor, noise: torch.Tensor) -> dict[str, torch.Tensor]:
    """The terms of eq. 7 per image (B,), nats: reconstruction, auxiliary, kl (closed form), and
    log_weight (see `decoder_terms`), for integer images (B, C, H, W) and eps `noise` (B, d)."""
    mean, logvar = model.encode(images)
    out = decoder_terms(model, images, mean, logvar, noise.to(mean))
    out["kl"] = gaussian_kl(mean, logvar).sum(1)  # (B,)
    return out


def agave_objective(terms: dict[str, torch.Tensor], kl_weight: float, use_aux: bool = True) -> torch.Tensor:
    """Negated eq. 7, batch mean in nats per image: reconstruction + [use_aux] auxiliary + lambda KL."""
    loss = terms["reconstruction"] + kl_weight * terms["kl"]
    if use_aux:
        loss = loss + terms["auxiliary"]
    return loss.mean()


# ------------------------------------------------------------------------------ bits per dimension

def _batches(images: np.ndarray, batch_size: int, device: str):
    for index, start in enumerate(range(0, len(images), batch_size)):
        yield index, torch.from_numpy(np.asarray(images[start:start + batch_size])).long().to(device)


def _generator(seed: int, index: int) -> torch.Generator:
    """One CPU generator per evaluation batch (results do not depend on which batches ran before)."""
    state = np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


@torch.no_grad()
def elbo_bits_per_dim(model: Agave, images: np.ndarray, seed: int = 0, samples: int = 1, batch_size: int = 500,
                      device: str = "cpu") -> dict[str, float]:
    """The negative ELBO of uint8 `images` (N, C, H, W) in bits per dimension, and its parts.

    Returns `bpd` = reconstruction + kl (a bound on -log p(x), eq. 7 with lambda = 1 and no auxiliary
    term), `reconstruction` and `kl`, all per x-dimension D = C*H*W; `auxiliary` per y-dimension, and
    `vae_bpd` = (auxiliary + kl) per y-dimension (the VAE decoder's own bound on -log p(y), Figure 4).
    The reconstruction averages `samples` draws of z per image (batch b draws from `_generator(seed, b)`).
    """
    model = model.to(device).eval()
    cfg, aux = model.config, model.aux
    x_dims, y_dims = cfg.channels * cfg.height * cfg.width, math.prod(aux.shape)
    sums = {"reconstruction": 0.0, "auxiliary": 0.0, "kl": 0.0}
    for index, batch in _batches(images, batch_size, device):
        generator = _generator(seed, index)
        mean, logvar = model.encode(batch)
        for _ in range(samples):
            noise = torch.randn(mean.shape, generator=generator).to(mean)
            out = decoder_terms(model, batch, mean, logvar, noise)
            sums["reconstruction"] += float(out["reconstruction"].double().sum()) / samples
            sums["auxiliary"] += float(out["auxiliary"].double().sum()) / samples
        sums["kl"] += float(gaussian_kl(mean, logvar).double().sum())
    n = len(images)
    rec, aux_term, kl = (sums[k] / (n * LOG_2) for k in ("reconstruction", "auxiliary", "kl"))
    return {"bpd": (rec + kl) / x_dims, "reconstruction": rec / x_dims, "kl": kl / x_dims,
            "auxiliary": aux_term / y_dims, "vae_bpd": (aux_term + kl) / y_dims}


@torch.no_grad()
def importance_log_likelihood(model: Agave, images: torch.Tensor, k: int, generator: torch.Generator,
                              k_batch: int = 50) -> torch.Tensor:
    """log (1/K sum_k p(x|z_k) p(z_k) / q(z_k|x)) per image (B,) in nats (float64), z_k ~ q(z|x),
    for integer images (B, C, H, W). All eps (B, K, d) are drawn from `generator` first, then run
    through the decoders `k_batch` samples at a time (so `k_batch` changes memory, not the draws)."""
    mean, logvar = model.encode(images)  # (B, d) each
    B, d = mean.shape
    noise_all = torch.randn((B, k, d), generator=generator)  # (B, K, d) on the CPU
    log_weights = []
    for begin in range(0, k, k_batch):
        kc = min(k_batch, k - begin)
        noise = noise_all[:, begin:begin + kc].reshape(B * kc, d).to(mean)  # (B*kc, d), image-major
        rep = lambda t: t.repeat_interleave(kc, dim=0)  # noqa: E731  (B*kc, ...)
        out = decoder_terms(model, rep(images), rep(mean), rep(logvar), noise)
        log_weights.append((out["log_weight"] - out["reconstruction"]).double().view(B, kc))
    return torch.logsumexp(torch.cat(log_weights, dim=1), dim=1) - math.log(k)  # (B,)


@torch.no_grad()
def importance_bits_per_dim(model: Agave, images: np.ndarray, k: int = 150, seed: int = 0, batch_size: int = 100,
                            k_batch: int = 50, device: str = "cpu") -> float:
    """The importance-sampled bound on -log p(x) with K = `k` samples (paper: 150), bits per dimension,
    averaged over uint8 `images` (N, C, H, W). Batch b draws from `_generator(seed, b)`."""
    model = model.to(device).eval()
    cfg = model.config
    total = 0.0
    for index, batch in _batches(images, batch_size, device):
        total -= float(importance_log_likelihood(model, batch, k, _generator(seed, index), k_batch).sum())
    return total / (len(images) * cfg.channels * cfg.height * cfg.width * LOG_2)


def evaluate_agave(ckpt, images: np.ndarray, k: int = 150, seed: int = 0, elbo_samples: int = 1,
                   use_ema: bool = True, batch_size: int = 100, k_batch: int = 50, device: str = "cpu") -> dict:
    """Both bounds of a checkpoint (path or loaded dict) on uint8 `images`, as a JSON-ready dict:
    {"elbo": elbo_bits_per_dim(...), "importance": {"bpd", "k"}, "n_images", "seed", "weights"};
    `k=0` skips the importance-sampled bound."""
    model = agave_from_checkpoint(ckpt, use_ema=use_ema, device=device)
    began = time.time()
    out = {"elbo": elbo_bits_per_dim(model, images, seed, elbo_samples, batch_size, device),
           "elbo_samples": elbo_samples, "n_images": int(len(images)), "seed": seed,
           "weights": "ema" if use_ema else "raw"}
    if k > 0:
        out["importance"] = {"bpd": importance_bits_per_dim(model, images, k, seed, batch_size, k_batch, device),
                             "k": k}
    out["seconds"] = round(time.time() - began, 2)
    return out


# ------------------------------------------------------------------------------------- training

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


def train_agave(
    model_config: AgaveConfig,
    train_config: AgaveTrainConfig,
    images: np.ndarray,
    run_dir: str | Path,
    device: str = "cpu",
    stop_after: int | None = None,
    progress: bool = True,
    init_from: str | Path | dict | None = None,
) -> dict[int, Path]:
    """Train an AGAVE on uint8 `images` (N, C, H, W), checkpointing into `run_dir` (`fit`).

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
    check_shape(images, model_config)
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
    return fit(Run(KIND, model_config, train_config, run_dir, extra={"init": init}),
               lambda generator: AgaveTrainer(model_config, train_config, images, generator, device, init_ckpt),
               device=device, stop_after=stop_after, progress=progress)


# ------------------------------------------------------------------------------------- sampling

@torch.no_grad()
def _conditional_samples(model: Agave, means: torch.Tensor, noise: torch.Tensor, per_latent: int, method: str
                         ) -> torch.Tensor:
    """PixelCNN samples (b * r, C, H, W) uint8 for f(z) `means` (b, C_y, H_y, W_y), each repeated
    r = `per_latent` times (latent-major), with uniforms `noise` (b * r, C, H, W)."""
    cond_map = model.condition(means).repeat_interleave(per_latent, dim=0)  # (b*r, S, H, W)
    return sampler(method)(model.pixelcnn, noise, cond_map=cond_map)


def _pixel_noise(n: int, model: Agave, seed: int) -> torch.Tensor:
    """All PixelCNN uniforms (n, C, H, W) up front from their own stream of `seed`."""
    cfg = model.config
    return torch.rand((n, cfg.channels, cfg.height, cfg.width), generator=_generator(seed, 1))


@torch.no_grad()
def _draw(model: Agave, z: torch.Tensor, per_latent: int, seed: int, method: str, batch_size: int,
          device: str) -> dict[str, np.ndarray]:
    cfg = model.config
    n = len(z)
    noise = _pixel_noise(n * per_latent, model, seed)  # (n*r, C, H, W)
    means, samples = [], []
    for begin in range(0, n, batch_size):
        f = model.decode(z[begin:begin + batch_size].to(device))  # (b, C_y, H_y, W_y)
        means.append(f.float().cpu())
        chunk = noise[begin * per_latent:(begin + len(f)) * per_latent]
        samples.append(_conditional_samples(model, f, chunk, per_latent, method))
    means = torch.cat(means)
    return {
        "aux_means": means.numpy(),  # (n, C_y, H_y, W_y) float32, x's unit scale
        "aux_images": from_unit(means, cfg.levels).to(torch.uint8).numpy(),  # the same on x's levels
        "images": torch.cat(samples).view(n, per_latent, cfg.channels, cfg.height, cfg.width).numpy(),
    }


@torch.no_grad()
def generate_agave(ckpt, n: int, seed: int, samples_per_latent: int = 1, method: str = "cached",
                   use_ema: bool = True, batch_size: int = 100, device: str = "cpu") -> dict[str, np.ndarray]:
    """Figure 5 from a checkpoint (path or loaded dict): n latents z ~ N(0, I), their f(z), and
    `samples_per_latent` PixelCNN samples conditioned on each.

    Returns {"latents": (n, d) float32, "aux_means": (n, C_y, H_y, W_y) float32 f(z) on x's unit
    scale, "aux_images": (n, C_y, H_y, W_y) uint8 f(z) rounded to x's levels (the left column),
    "images": (n, samples_per_latent, C, H, W) uint8}. All draws are made up front from `seed`
    (z from stream 0, the PixelCNN's uniforms from stream 1), so the result does not depend on
    `batch_size` (latents per pass) and the cached and naive samplers see the same draws.
    """
    model = agave_from_checkpoint(ckpt, use_ema=use_ema, device=device)
    z = torch.randn((n, model.config.latent_dim), generator=_generator(seed, 0))  # (n, d)
    out = _draw(model, z, samples_per_latent, seed, method, batch_size, device)
    out["latents"] = z.numpy()
    return out


@torch.no_grad()
def reconstruct_agave(ckpt, images: np.ndarray, seed: int, samples_per_image: int = 1, posterior_mean: bool = True,
                      method: str = "cached", use_ema: bool = True, batch_size: int = 100, device: str = "cpu"
                      ) -> dict[str, np.ndarray]:
    """Figures 3 and 7 from a checkpoint: for uint8 `images` (n, C, H, W), z = the posterior mean
    (or one draw from q(z|x) when `posterior_mean` is False, stream 0 of `seed`), f(z) and
    `samples_per_image` PixelCNN samples conditioned on it. Same keys as `generate_agave`, plus
    "targets" (the auxiliary images y, uint8 on y's levels, (n, C_y, H_y, W_y))."""
    model = agave_from_checkpoint(ckpt, use_ema=use_ema, device=device)
    x = torch.from_numpy(np.asarray(images)).long()
    encoded = [model.encode(x[b:b + batch_size].to(device)) for b in range(0, len(x), batch_size)]
    mean = torch.cat([m for m, _ in encoded]).float().cpu()  # (n, d)
    z = mean
    if not posterior_mean:  # one draw from q(z|x), eps from stream 0 (independent of batch_size)
        logvar = torch.cat([v for _, v in encoded]).float().cpu()
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=_generator(seed, 0))
    out = _draw(model, z, samples_per_image, seed, method, batch_size, device)
    out["latents"] = z.numpy()
    out["targets"] = model.aux_image(x).to(torch.uint8).numpy()
    return out
