"""The VAE baseline and the AIQN-VAE (Ostrovski et al. 2018, appendix): autoregressive masking of the
latent AIQN (by gradients), the VAE loss against hand computations, the fixed posterior variance,
training on digits, exact resume, and generation."""

import csv
import math

import numpy as np
import pytest
import torch

from aiqn.data.registry import load_split
from aiqn.nets import to_unit
from aiqn.methods.aiqn_vae.made import AutoregressiveQuantileMLP
from aiqn.nets.vae import ConvVAE, VAEConfig, aiqn_vae_config, discretized_logistic_log_prob, gaussian_kl
from aiqn.methods.aiqn_vae.train import VAETrainConfig, generate_vae, quantile_loss, train_vae, vae_from_checkpoint


def small_config(**overrides) -> VAEConfig:
    base = dict(latent_dim=4, base_channels=8, max_channels=16, aiqn_hidden=32, aiqn_layers=2)
    return VAEConfig(**{**base, **overrides})


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


# --- AIQN over the latent space -------------------------------------------------------------------

@pytest.mark.parametrize("dim,hidden,layers", [(6, 96, 3), (3, 24, 1), (1, 8, 2)])
def test_aiqn_output_i_sees_only_earlier_latents_and_its_own_tau(dim, hidden, layers):
    torch.manual_seed(0)
    net = AutoregressiveQuantileMLP(dim, hidden=hidden, layers=layers).double()
    tau = torch.rand(2, dim, dtype=torch.double, requires_grad=True)
    z = torch.randn(2, dim, dtype=torch.double, requires_grad=True)
    q = net(tau, z)  # (2, d)
    for i in range(dim):
        gt, gz = torch.autograd.grad(q[0, i], [tau, z], retain_graph=True)
        assert torch.all(gz[0, i:] == 0), f"output {i} sees z at or after itself"
        assert torch.all(gt[0, :i] == 0) and torch.all(gt[0, i + 1:] == 0), f"output {i} sees another tau"
        assert gt[0, i] != 0, f"output {i} ignores its own tau"
        if i > 0:
            assert torch.any(gz[0, :i] != 0), f"output {i} sees no earlier latent"
        assert torch.all(gt[1] == 0) and torch.all(gz[1] == 0), "batch rows are mixed"


def test_aiqn_sampling_is_the_autoregressive_fixed_point():
    """z = sample(tau) satisfies z_i = Q_i(tau_i | z_<i) for every i, i.e. z = net(tau, z)."""
    torch.manual_seed(0)
    net = AutoregressiveQuantileMLP(5, hidden=64, layers=3).double()
    tau = torch.rand(7, 5, dtype=torch.double)
    z = net.sample(tau)
    assert torch.allclose(net(tau, z), z, rtol=0, atol=1e-12)


# --- VAE loss arithmetic --------------------------------------------------------------------------

def test_discretized_logistic_matches_hand_computation():
    levels, loc, scale = 5, 0.3, 0.5  # bins of half-width h = 0.25 around -1, -0.5, 0, 0.5, 1
    x = to_unit(torch.arange(levels), levels).double()
    lp = discretized_logistic_log_prob(x, torch.full_like(x, loc), torch.full_like(x, math.log(scale)), levels)
    expected = [
        sigmoid((-1 + 0.25 - loc) / scale),  # first bin: (-inf, -0.75]
        sigmoid((-0.5 + 0.25 - loc) / scale) - sigmoid((-0.5 - 0.25 - loc) / scale),
        sigmoid((0 + 0.25 - loc) / scale) - sigmoid((0 - 0.25 - loc) / scale),
        sigmoid((0.5 + 0.25 - loc) / scale) - sigmoid((0.5 - 0.25 - loc) / scale),
        1 - sigmoid((1 - 0.25 - loc) / scale),  # last bin: (0.75, inf)
    ]
    assert torch.allclose(lp.exp(), torch.tensor(expected, dtype=torch.double), rtol=1e-12, atol=0)
    assert abs(lp.exp().sum().item() - 1.0) < 1e-12
    # a very sharp, far-off logistic stays finite (no log(0)): the exact log-difference formula
    far = discretized_logistic_log_prob(x, torch.full_like(x, 40.0), torch.full_like(x, -7.0), levels)
    assert torch.all(torch.isfinite(far))


def test_gaussian_kl_closed_form():
    mean = torch.tensor([1.0, 0.0, -2.0], dtype=torch.double)
    logvar = torch.tensor([math.log(0.5), 0.0, math.log(0.1)], dtype=torch.double)
    expected = [0.5 * (1 + 0.5 - 1 - math.log(0.5)), 0.0, 0.5 * (4 + 0.1 - 1 - math.log(0.1))]
    assert torch.allclose(gaussian_kl(mean, logvar), torch.tensor(expected, dtype=torch.double), atol=1e-12)


@pytest.mark.parametrize("variance,kl_weight", [(None, 1.0), (0.1, 0.5)])
def test_vae_loss_against_hand_computation(variance, kl_weight):
    torch.manual_seed(0)
    cfg = small_config(fixed_posterior_variance=variance, kl_weight=kl_weight)
    vae = ConvVAE(cfg).double()
    images = torch.randint(0, cfg.levels, (3, 1, 8, 8))
    noise = torch.randn(3, cfg.latent_dim, dtype=torch.double)
    out = vae.loss(images, noise=noise)

    mean, logvar = vae.encode(images)
    z = mean + torch.exp(0.5 * logvar) * noise
    loc, log_scale = vae.decode(z)
    h, xs = 1.0 / (cfg.levels - 1), to_unit(images, cfg.levels).double()
    rec = torch.zeros(3, dtype=torch.double)
    for idx in np.ndindex(*images.shape):
        lo = -math.inf if images[idx] == 0 else (xs[idx].item() - h - loc[idx].item()) / math.exp(log_scale[idx].item())
        hi = math.inf if images[idx] == cfg.levels - 1 else (xs[idx].item() + h - loc[idx].item()) / math.exp(
            log_scale[idx].item())
        rec[idx[0]] -= math.log((1.0 if hi == math.inf else sigmoid(hi)) - (0.0 if lo == -math.inf else sigmoid(lo)))
    kl = (0.5 * (mean**2 + logvar.exp() - 1 - logvar)).sum(1)
    assert torch.allclose(out["reconstruction"], rec.mean(), rtol=1e-9)
    assert torch.allclose(out["kl"], kl.mean(), rtol=1e-9)
    assert torch.allclose(out["total"], (rec + kl_weight * kl).mean(), rtol=1e-9)
    assert torch.allclose(out["nelbo"], (rec + kl).mean(), rtol=1e-9)
    assert torch.allclose(out["total_per_dim"], out["total"] / 64)


def test_fixed_posterior_variance_is_respected():
    torch.manual_seed(0)
    cfg = aiqn_vae_config(small_config())
    assert cfg.fixed_posterior_variance == 0.1 and cfg.kl_weight == 0.5
    vae = ConvVAE(cfg).double()
    assert vae.to_latent.out_features == cfg.latent_dim  # the encoder outputs means only
    images = torch.randint(0, cfg.levels, (5, 1, 8, 8))
    mean, logvar = vae.encode(images)
    assert torch.all(logvar == math.log(0.1))
    # the KL per dimension is 1/2 (mu^2 + 0.1 - 1 - log 0.1), whatever the encoder outputs
    out = vae.loss(images, noise=torch.zeros(5, cfg.latent_dim, dtype=torch.double))
    expected = (0.5 * (mean**2 + 0.1 - 1 - math.log(0.1))).sum(1).mean()
    assert torch.allclose(out["kl"], expected)
    # the reparameterised latent is mean + sqrt(0.1) * eps: eps shifts the reconstruction as that z does
    eps = torch.randn(5, cfg.latent_dim, dtype=torch.double)
    loc, log_scale = vae.decode(mean + math.sqrt(0.1) * eps)
    rec = -discretized_logistic_log_prob(to_unit(images, cfg.levels).double(), loc, log_scale, cfg.levels)
    assert torch.allclose(vae.loss(images, noise=eps)["reconstruction"], rec.flatten(1).sum(1).mean())


@pytest.mark.parametrize("shape,downsamplings", [((1, 8, 8), 1), ((3, 64, 64), 4), ((3, 32, 16), 2)])
def test_architecture_follows_the_image_shape(shape, downsamplings):
    cfg = VAEConfig(channels=shape[0], height=shape[1], width=shape[2], levels=256, latent_dim=6,
                    base_channels=4, max_channels=8, stage_convs=0)
    assert cfg.downsamplings == downsamplings
    vae = ConvVAE(cfg)
    x = torch.randint(0, 256, (2, *shape))
    mean, logvar = vae.encode(x)
    loc, log_scale = vae.decode(mean)
    assert mean.shape == logvar.shape == (2, 6)
    assert loc.shape == log_scale.shape == (2, *shape)
    with pytest.raises(ValueError, match="divisible"):
        VAEConfig(height=12, width=12, downsamplings=3)


# --- training, resume, generation -----------------------------------------------------------------

def read_log(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_training_on_digits_lowers_the_losses(digits_dir, tmp_path):
    images, _ = load_split(digits_dir / "train.npz")
    cfg = aiqn_vae_config(small_config(latent_dim=8, base_channels=16, max_channels=32, aiqn_hidden=64))
    tcfg = VAETrainConfig(steps=200, batch_size=32, lr=2e-3, aiqn=True, seed=1, kappa=0.01)
    ckpts = train_vae(cfg, tcfg, images, tmp_path / "run", progress=False)
    assert list(ckpts) == [200]
    rows = read_log(tmp_path / "run" / "train_log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 201))
    first = np.mean([float(r["loss"]) for r in rows[:20]])
    last = np.mean([float(r["loss"]) for r in rows[-20:]])
    assert last < 0.8 * first, (first, last)
    # the latent codes move while the VAE learns, so the logged quantile loss need not fall; compare the
    # trained AIQN with a fresh one on the final encoder means instead
    vae, aiqn = vae_from_checkpoint(ckpts[200], use_ema=False)
    torch.manual_seed(0)
    fresh = AutoregressiveQuantileMLP(cfg.latent_dim, cfg.aiqn_hidden, cfg.aiqn_layers)
    with torch.no_grad():
        latents = vae.encode(torch.from_numpy(images[:500]).long())[0]  # (500, d)
        tau = torch.rand(latents.shape, generator=torch.Generator().manual_seed(0))
        trained_loss, fresh_loss = (quantile_loss(net, latents, tau, tcfg.kappa).item() for net in (aiqn, fresh))
    assert trained_loss < 0.8 * fresh_loss, (trained_loss, fresh_loss)


@pytest.mark.parametrize("aiqn", [True, False])
def test_resume_is_exact(digits_dir, tmp_path, aiqn):
    images, _ = load_split(digits_dir / "train.npz")
    cfg = aiqn_vae_config(small_config()) if aiqn else small_config()
    tcfg = VAETrainConfig(steps=6, batch_size=8, aiqn=aiqn, checkpoint_steps=[3], seed=3)
    straight = train_vae(cfg, tcfg, images, tmp_path / "a", progress=False)
    first = train_vae(cfg, tcfg, images, tmp_path / "b", stop_after=4, progress=False)  # dies after step 4
    assert list(first) == [3]
    resumed = train_vae(cfg, tcfg, images, tmp_path / "b", progress=False)  # resumes from step 3
    assert list(straight) == list(resumed) == [3, 6]
    a, b = (torch.load(run[6], weights_only=False) for run in (straight, resumed))
    for key in ("model", "ema", "aiqn", "aiqn_ema"):
        if a[key] is None:
            assert b[key] is None and not aiqn
            continue
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs after resume"
    assert torch.equal(a["rng"]["data"], b["rng"]["data"])
    assert read_log(tmp_path / "a" / "train_log.csv") != [] and [r["loss"] for r in read_log(
        tmp_path / "a" / "train_log.csv")] == [r["loss"] for r in read_log(tmp_path / "b" / "train_log.csv")]


def test_generate_shapes_levels_and_aiqn_versus_prior(digits_dir, tmp_path):
    images, _ = load_split(digits_dir / "train.npz")
    cfg = aiqn_vae_config(small_config())
    tcfg = VAETrainConfig(steps=80, batch_size=16, lr=3e-3, ema_rate=0.5, aiqn=True)  # decodes more than a blur
    aiqn_ckpt = train_vae(cfg, tcfg, images, tmp_path / "aiqn", progress=False)[80]
    from_aiqn = generate_vae(aiqn_ckpt, 10, seed=0, use_aiqn=True, batch_size=4)
    from_prior = generate_vae(aiqn_ckpt, 10, seed=0, use_aiqn=False)
    for samples in (from_aiqn, from_prior):
        assert samples.shape == (10, 1, 8, 8) and samples.dtype == np.uint8
        assert samples.max() < cfg.levels
    assert not np.array_equal(from_aiqn, from_prior)
    assert np.array_equal(from_aiqn, generate_vae(aiqn_ckpt, 10, seed=0, use_aiqn=True, batch_size=3))
    assert not np.array_equal(from_aiqn, generate_vae(aiqn_ckpt, 10, seed=1, use_aiqn=True))

    plain_ckpt = train_vae(small_config(), VAETrainConfig(steps=2, batch_size=4), images, tmp_path / "vae",
                           progress=False)[2]
    vae, aiqn = vae_from_checkpoint(plain_ckpt)
    assert aiqn is None and vae.config.fixed_posterior_variance is None
    assert generate_vae(plain_ckpt, 3, seed=0, use_aiqn=False).shape == (3, 1, 8, 8)
    with pytest.raises(ValueError, match="no AIQN"):
        generate_vae(plain_ckpt, 3, seed=0, use_aiqn=True)
