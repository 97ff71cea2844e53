"""CQF (Shmelkov et al. 2018): the NVP flow, the losses against hand-computed values, the
dequantized bits/dim against closed forms, training of every variant, exact resume, sampling."""

import csv
import math

import numpy as np
import pytest
import torch

from aiqn.methods.cqf.train import CQFTrainConfig, bits_per_dim_from_nats, cqf_bits_per_dim, cqf_from_checkpoint, discriminator_loss, frozen, generate_cqf, gradient_penalty, sonderby_generator_loss, train_cqf
from aiqn.data import load_split
from aiqn.methods.cqf.model import VARIANTS, CQFConfig, build_cqf, dequantization_offset, dequantize, parameter_counts, quantize
from aiqn.methods.cqf.flows import NVPFlow, squeeze, unsqueeze

TINY = dict(latent_dim=4, base_channels=8, max_channels=16, flow_hidden=8, flow_blocks=1, disc_base_channels=8,
            disc_max_channels=16)


def _randomize(module: torch.nn.Module, seed: int, std: float = 0.3) -> None:
    """Non-trivial weights (the flow starts as the identity); test-only, in place under no_grad."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * std)


@pytest.fixture(scope="module")
def digits(digits_dir):
    train, _ = load_split(digits_dir / "train.npz")
    test, _ = load_split(digits_dir / "test.npz")
    return train, test


# ---------------------------------------------------------------------------------------------- flow


def test_squeeze_roundtrip():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    s = squeeze(x)
    assert s.shape == (2, 12, 2, 3)
    assert torch.equal(s[0, :4, 0, 0], x[0, 0, :2, :2].flatten())  # one 2x2 block -> 4 channels
    assert torch.equal(unsqueeze(s), x)


@pytest.mark.parametrize("channels,checkerboard,channel_layers,coupling", [
    (1, 3, 0, "affine"), (2, 2, 2, "affine"), (1, 1, 1, "affine"), (1, 3, 0, "additive"), (2, 2, 2, "volume")])
def test_flow_inverse_and_logdet_against_the_jacobian(channels, checkerboard, channel_layers, coupling):
    torch.manual_seed(0)
    H = W = 4
    flow = NVPFlow(channels, H, W, checkerboard, channel_layers, hidden=6, blocks=2, coupling=coupling).double()
    x = torch.randn(3, channels, H, W, dtype=torch.float64)
    y0, logdet0 = flow(x)
    assert torch.equal(y0, x) and torch.equal(logdet0, torch.zeros(3, dtype=torch.float64))  # starts as identity
    _randomize(flow, seed=1)
    y, logdet = flow(x)
    assert not torch.allclose(y, x)
    torch.testing.assert_close(flow.inverse(y), x, rtol=0, atol=1e-10)
    for b in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v.view(1, channels, H, W))[0].flatten(), x[b].flatten())
        sign, brute = torch.linalg.slogdet(jac)  # (D, D)
        assert sign > 0
        torch.testing.assert_close(logdet[b], brute, rtol=0, atol=1e-9)
    if coupling != "affine":  # volume-preserving: the flow cannot contract the data as a whole
        assert torch.all(logdet.abs() < 1e-12)
    else:
        assert torch.all(logdet.abs() > 1e-3)


@pytest.mark.parametrize("checkerboard,channel_layers", [(3, 0), (1, 1)])
def test_bounded_flow_inverse_and_logdet_against_the_jacobian(checkerboard, channel_layers):
    """flow_output='tanh': the squashing TanhBound in front of the couplings; its log-determinant counts."""
    torch.manual_seed(0)
    H = W = 4
    flow = NVPFlow(1, H, W, checkerboard, channel_layers, hidden=6, blocks=1, bounded=True).double()
    x = torch.rand(3, 1, H, W, dtype=torch.float64) * 2 - 1  # the dequantized pixel range [-1, 1)
    x[0, 0, 0, :2] = torch.tensor([-1.0, 0.999])  # the edges of the range
    v0, logdet0 = flow(x)  # couplings = identity: only the squashing
    assert torch.all(v0.abs() <= 1.0 + 1e-12) and torch.all(logdet0 != 0)
    _randomize(flow, seed=3)
    y, logdet = flow(x)
    torch.testing.assert_close(flow.inverse(y), x, rtol=0, atol=1e-10)
    for b in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v.view(1, 1, H, W))[0].flatten(), x[b].flatten())
        sign, brute = torch.linalg.slogdet(jac)
        assert sign > 0
        torch.testing.assert_close(logdet[b], brute, rtol=0, atol=1e-9)


def test_bounded_flow_keeps_generated_images_in_the_pixel_range():
    """G(z) = f^{-1}(g(z)) must stay near [-1, 1] whatever the features: unbounded, the couplings'
    exp(-s) took the digits generator's output to +-4, which the discriminator rated as real."""
    features = torch.linspace(-6, 6, 64).view(1, 1, 8, 8)
    model, _ = build_cqf(CQFConfig(**TINY, flow_output="tanh"), "cqf")
    _randomize(model.flow, seed=4, std=0.5)
    assert model.from_features(features).abs().max() <= 1.0 / 0.95 + 1e-6
    assert model.sample(torch.randn(16, 4) * 10).abs().max() <= 1.0 / 0.95 + 1e-6
    unbounded, _ = build_cqf(CQFConfig(**TINY), "cqf")
    assert unbounded.from_features(features).abs().max() > 2  # the identity flow passes +-6 through


def test_flow_is_invertible_in_float32_at_model_scale():
    torch.manual_seed(0)
    flow = NVPFlow(3, 8, 8, 3, 0, hidden=16, blocks=2)
    _randomize(flow, seed=2, std=0.1)
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    torch.testing.assert_close(flow.inverse(flow(x)[0]), x, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------- losses


class _Linear(torch.nn.Module):
    """l(x) = w . x + b: grad_x l = w everywhere, so the penalty is (|w| - 1)^2."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1) + 0.5


class _HalfSquare(torch.nn.Module):
    """l(x) = |x|^2 / 2: grad_x l = x, so the penalty at x^ is (|x^| - 1)^2."""

    def forward(self, x):
        return 0.5 * x.flatten(1).pow(2).sum(1)


def test_gradient_penalty_of_a_linear_discriminator():
    w = torch.tensor([[[[3.0, 0.0], [0.0, 4.0]]]])  # (1, 1, 2, 2), |w| = 5
    real, fake = torch.randn(6, 1, 2, 2), torch.randn(6, 1, 2, 2)
    gp = gradient_penalty(_Linear(w), real, fake, torch.rand(6))
    torch.testing.assert_close(gp, torch.tensor(16.0))  # (5 - 1)^2
    gp.backward()  # differentiable in the discriminator's parameters (double backward)


def test_gradient_penalty_interpolates_real_and_fake():
    real = torch.tensor([[[[2.0, 0.0]]], [[[0.0, 0.0]]]])  # (2, 1, 1, 2)
    fake = torch.tensor([[[[0.0, 0.0]]], [[[0.0, 3.0]]]])
    alpha = torch.tensor([0.25, 0.5])  # x^ = (0.5, 0) and (0, 1.5): norms 0.5 and 1.5
    gp = gradient_penalty(_HalfSquare(), real, fake, alpha)
    torch.testing.assert_close(gp, torch.tensor((0.5**2 + 0.5**2) / 2))


def test_sonderby_and_discriminator_losses_by_hand():
    d = torch.tensor([0.5, 0.8, 0.1])  # D(G(z)) probabilities
    logits = torch.log(d / (1 - d))
    expected = -(math.log(0.5 / 0.5) + math.log(0.8 / 0.2) + math.log(0.1 / 0.9)) / 3  # eq. 7
    torch.testing.assert_close(sonderby_generator_loss(logits), torch.tensor(expected))
    d_real = torch.tensor([0.9, 0.6])
    expected_d = -(math.log(0.9) + math.log(0.6)) / 2 - (math.log(0.5) + math.log(0.2) + math.log(0.9)) / 3
    torch.testing.assert_close(discriminator_loss(torch.logit(d_real), logits), torch.tensor(expected_d))


# ---------------------------------------------------------------------------------------------- bits/dim


def test_dequantize_and_quantize_are_inverse():
    levels = 17
    x = torch.arange(levels).repeat(40).view(-1, 1, 1, 1)
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) * 0.999
    y = dequantize(x, u, levels)
    assert y.min() >= -1.0 and y.max() < 1.0
    assert torch.equal(quantize(y, levels), x)
    assert torch.equal(quantize(torch.tensor([-5.0, 5.0]), levels), torch.tensor([0, levels - 1]))


def test_uniform_density_gives_log2_levels_bits():
    """p(y) = 2^-D on [-1, 1]^D spreads the mass evenly over the L^D images: exactly log2(L) bits/dim."""
    for levels, dims in ((17, 64), (256, 3072), (2, 5)):
        nll = dims * math.log(2.0) + dequantization_offset(dims, levels)  # -log p(y) + D log(L/2)
        assert bits_per_dim_from_nats(nll, dims) == pytest.approx(math.log2(levels), rel=1e-12)


@pytest.mark.parametrize("mu,sigma", [(0.1, 0.3), (-0.7, 0.05), (0.0, 2.0)])
def test_dequantized_bound_against_the_exact_discrete_probability(mu, sigma):
    """One dimension, a Gaussian density on y: E_u[-log p(y)] + log(L/2) >= -log P(k) = -log int_bin p,
    tight when p is nearly flat over a bin (the direction and size of the change of variables)."""
    levels = 17
    normal = torch.distributions.Normal(torch.tensor(mu, dtype=torch.float64), torch.tensor(sigma, dtype=torch.float64))
    k = torch.arange(levels, dtype=torch.float64)
    lo, hi = k * 2 / levels - 1, (k + 1) * 2 / levels - 1
    exact = -torch.log(normal.cdf(hi) - normal.cdf(lo))
    keep = exact < 25.0  # bins whose mass the CDF difference resolves in float64
    assert keep.sum() >= 3
    u = (torch.arange(2000, dtype=torch.float64) + 0.5) / 2000  # midpoint rule over the bin
    y = dequantize(k.view(-1, 1), u.view(1, -1), levels)  # (L, 2000)
    log_p = normal.log_prob(y)  # (L, 2000)
    bound = -log_p.mean(1) + dequantization_offset(1, levels)
    bound, exact = bound[keep], exact[keep]
    assert torch.all(bound >= exact - 1e-9)
    # Hoeffding's lemma: Jensen's gap log E[p] - E[log p] is at most (range of log p on the bin)^2 / 8
    spread = (log_p.max(1).values - log_p.min(1).values)[keep]
    assert torch.all(bound - exact <= spread**2 / 8 + 1e-6)


def _known_density_model(log_sigma: float):
    """A CQF model whose flow is the identity (fresh), whose posterior is N(0, I) and decoder mean 0:
    p(y) = N(y; 0, sigma^2 I) exactly, in closed form."""
    model, _ = build_cqf(CQFConfig(**TINY), "cqf")
    with torch.no_grad():
        for p in list(model.encoder.fc.parameters()) + list(model.generator.parameters()):
            p.zero_()
        model.log_sigma.fill_(log_sigma)
    return model.eval()


def test_bits_per_dim_closed_form_with_identity_flow_and_fixed_gaussian(digits):
    _, test = digits
    images = test[:50]
    log_sigma = math.log(0.4)
    model = _known_density_model(log_sigma)
    levels, dims = 17, 64
    u = torch.rand((50, 1, 8, 8), generator=torch.Generator().manual_seed(3))
    y = dequantize(torch.from_numpy(images), u, levels).double()
    closed = (0.5 * (y / 0.4).pow(2) + log_sigma + 0.5 * math.log(2 * math.pi)).flatten(1).sum(1) \
        + dims * math.log(levels / 2)  # (50,) nats
    out = model.coverage(torch.from_numpy(images), u, torch.randn(50, 4))
    torch.testing.assert_close(out["logdet"], torch.zeros(50))
    torch.testing.assert_close(out["kl"], torch.zeros(50))
    torch.testing.assert_close(out["nll"].double(), closed, rtol=1e-5, atol=1e-4)
    # the evaluation function draws u the same way (seeded, up front) and converts to bits/dim
    result = cqf_bits_per_dim(model, images, seed=3)
    assert result["bpd"] == pytest.approx(float(closed.mean()) / (dims * math.log(2)), rel=1e-5)
    per_image = (closed / (dims * math.log(2))).numpy()  # each image's bound, bits/dim: the interval's data
    import scipy.stats
    ci = scipy.stats.t.interval(0.95, 49, loc=per_image.mean(), scale=scipy.stats.sem(per_image))
    assert result["bpd_interval"] == pytest.approx(list(ci), rel=1e-4)
    # with q = p(z) and a decoder that ignores z every importance weight is 1: same bound for any K
    iw = cqf_bits_per_dim(model, images, seed=3, importance_samples=4)["bpd"]
    assert iw == pytest.approx(result["bpd"], rel=1e-5)
    assert cqf_bits_per_dim(model, images, seed=3, batch_size=7)["bpd"] == pytest.approx(result["bpd"], rel=1e-6)


def test_importance_bound_is_tighter_than_the_elbo(digits):
    _, test = digits
    model, _ = build_cqf(CQFConfig(**TINY), "cq")
    _randomize(model.encoder, seed=4, std=0.05)
    elbo = cqf_bits_per_dim(model, test[:100], seed=0)["bpd"]
    iw = cqf_bits_per_dim(model, test[:100], seed=0, importance_samples=16)["bpd"]
    assert iw <= elbo + 1e-6


# ---------------------------------------------------------------------------------------------- models


def test_variants_have_the_right_parts():
    for variant, (coverage, quality, flow) in VARIANTS.items():
        model, disc = build_cqf(CQFConfig(**TINY), variant)
        counts = parameter_counts(model, disc)
        assert (counts["encoder"] > 0) == coverage and (counts["discriminator"] > 0) == quality
        assert (counts["flow"] > 0) == flow
    with pytest.raises(ValueError):
        build_cqf(CQFConfig(**TINY), "wgan")


def test_paper_scale_shapes_and_flow_share():
    cfg = CQFConfig(channels=3, height=32, width=32, levels=256, latent_dim=128, base_channels=64, max_channels=512,
                    flow_hidden=32, flow_blocks=2, disc_base_channels=64, disc_max_channels=512)
    model, disc = build_cqf(cfg, "cqf")
    counts = parameter_counts(model, disc)
    assert counts["flow"] / counts["generator"] < 0.05  # "a small invertible model" (paper: ~1.4%)
    z = torch.randn(2, 128)
    assert model.sample(z).shape == (2, 3, 32, 32)
    assert disc(model.sample(z)).shape == (2,)


def test_frozen_flow_gets_no_gradient_from_the_quality_loss():
    model, disc = build_cqf(CQFConfig(**TINY), "cqf")
    _randomize(model.flow, seed=5, std=0.1)
    with frozen(disc, model.flow):
        loss = sonderby_generator_loss(disc(model.sample(torch.randn(5, 4))))
    loss.backward()
    assert all(p.grad is None for p in model.flow.parameters())
    assert all(p.grad is None for p in disc.parameters())
    assert model.generator.fc.weight.grad is not None and model.generator.fc.weight.grad.abs().sum() > 0
    assert all(p.requires_grad for p in list(model.flow.parameters()) + list(disc.parameters()))


# ---------------------------------------------------------------------------------------------- training


def _read_log(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_variant_trains_with_finite_losses(variant, digits, tmp_path):
    train, test = digits
    cfg = CQFConfig(**TINY)
    tcfg = CQFTrainConfig(variant=variant, steps=4, batch_size=16)
    checkpoints = train_cqf(cfg, tcfg, train, tmp_path, progress=False)
    rows = _read_log(tmp_path / "train_log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    coverage, quality, _ = VARIANTS[variant]
    for row in rows:
        assert math.isfinite(float(row["loss"]))
        for key in ("coverage", "bpd", "kl", "logdet"):
            assert (row[key] != "") == coverage and (not coverage or math.isfinite(float(row[key])))
        for key in ("adversarial", "d_loss", "gradient_penalty"):
            assert (row[key] != "") == quality and (not quality or math.isfinite(float(row[key])))
    samples = generate_cqf(checkpoints[4], 10, seed=0)
    assert samples.shape == (10, 1, 8, 8) and samples.dtype == np.uint8 and samples.max() < 17
    if coverage:
        assert math.isfinite(cqf_bits_per_dim(checkpoints[4], test[:20])["bpd"])
    else:
        with pytest.raises(ValueError):
            cqf_bits_per_dim(checkpoints[4], test[:20])


def test_vae_variant_learns(digits, tmp_path):
    train, test = digits
    cfg = CQFConfig(**TINY)
    before = cqf_bits_per_dim(build_cqf(cfg, "vae")[0], test[:100])["bpd"]
    checkpoints = train_cqf(cfg, CQFTrainConfig(variant="vae", steps=60, batch_size=32, ema_rate=0.9), train,
                            tmp_path, progress=False)
    after = cqf_bits_per_dim(checkpoints[60], test[:100])["bpd"]
    assert after < before - 1.0, (before, after)


@pytest.mark.parametrize("variant,d_steps,noise", [("cqf", 2, True), ("gan", 1, False)])
def test_resume_is_exact(variant, d_steps, noise, digits, tmp_path):
    train, _ = digits
    cfg = CQFConfig(**TINY)
    tcfg = CQFTrainConfig(variant=variant, steps=6, batch_size=8, d_steps=d_steps, adversarial_noise=noise,
                          checkpoint_steps=[3])
    straight = train_cqf(cfg, tcfg, train, tmp_path / "straight", progress=False)
    train_cqf(cfg, tcfg, train, tmp_path / "resumed", stop_after=4, progress=False)  # dies after step 4
    resumed = train_cqf(cfg, tcfg, train, tmp_path / "resumed", progress=False)  # restarts from step 3
    a, b = torch.load(straight[6], weights_only=False), torch.load(resumed[6], weights_only=False)
    for key in ("model", "ema", "discriminator"):
        if a[key] is None:
            continue
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    assert torch.equal(a["rng"]["data"], b["rng"]["data"])
    assert (tmp_path / "straight" / "train_log.csv").read_text().splitlines()[1:][-1].split(",")[:-1] == \
        (tmp_path / "resumed" / "train_log.csv").read_text().splitlines()[1:][-1].split(",")[:-1]
    assert len(_read_log(tmp_path / "resumed" / "train_log.csv")) == 6


def test_generate_is_deterministic_and_batch_independent(tmp_path, digits):
    train, _ = digits
    ckpt = train_cqf(CQFConfig(**TINY), CQFTrainConfig(variant="cqf", steps=2, batch_size=8), train, tmp_path,
                     progress=False)[2]
    a = generate_cqf(ckpt, 25, seed=7)
    assert np.array_equal(a, generate_cqf(ckpt, 25, seed=7, batch_size=4))
    assert not np.array_equal(a, generate_cqf(ckpt, 25, seed=8))
    noisy = generate_cqf(ckpt, 25, seed=7, decoder_noise=True)
    assert noisy.dtype == np.uint8 and noisy.shape == a.shape
    model = cqf_from_checkpoint(ckpt)
    assert model.variant == "cqf" and not model.training


def test_config_validation():
    with pytest.raises(ValueError):
        CQFTrainConfig(variant="gan", adversarial_noise=True)
    with pytest.raises(ValueError):
        CQFTrainConfig(variant="bigan")
    with pytest.raises(ValueError):
        CQFTrainConfig(steps=5, checkpoint_steps=[6])
    with pytest.raises(ValueError):
        CQFConfig(height=6, width=6, downsamplings=2)
    with pytest.raises(ValueError):
        CQFConfig(generator_output="sigmoid")
    with pytest.raises(ValueError):
        CQFConfig(flow_output="sigmoid")
    with pytest.raises(ValueError):
        CQFConfig(flow_coupling="spline")


def test_the_verbs_variant_list_is_the_models():
    """`aiqn.methods.cqf.verbs.VARIANTS` (light: the rules import it at parse time) names the model's variants in order."""
    from aiqn.methods.cqf.verbs import VARIANTS as NAMES

    assert NAMES == tuple(VARIANTS)
