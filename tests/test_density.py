"""The density PixelIQN implies at a sample, 1 / (dQ_i/dtau_i) (`aiqn.methods.pixeliqn.density`).

- closed forms: `quantile_function_density` on Gaussian, exponential and logistic quantile
  functions equals their analytic densities; a GatedPixelCNN hand-set to the quantile function
  Q(tau) = a + b tanh(w (2 tau - 1) + m) gives the analytic density of that distribution (per
  unit and per level);
- exactness on random networks: the per-pixel-channel dQ_i/dtau_i equals the diagonal of the
  brute-force Jacobian d out / d tau of the full network at fixed x (1 and 3 channels, with and
  without conditioning, float64, to 1e-10), and differs from the column sums a single backward
  pass of out.sum() would give;
- sampling: `sample_with_density` reproduces `generate`'s samples and draws, and its quantiles
  round back to the sampled levels; the figure is written.
"""

import math

import numpy as np
import pytest
import torch

from aiqn.methods.pixeliqn.density import DensitySamples, density_map_figure, implied_density, pipeline_class_labels, pixel_log_density, quantile_density, quantile_function_density, quantiles_and_density, sample_with_density
from aiqn.nets.draws import draw_noise, noise_generator
from aiqn.nets import PixelCNNConfig, build_model, to_unit
from aiqn.nets.sampling import generate

TAU = torch.tensor([0.01, 0.1, 0.3, 0.5, 0.77, 0.9, 0.999], dtype=torch.float64)

# ------------------------------------------------------------------------------ closed forms


def test_gaussian_quantile_function_gives_the_normal_density():
    mu, sigma = 0.3, 1.7
    density = quantile_function_density(lambda t: mu + sigma * math.sqrt(2.0) * torch.erfinv(2.0 * t - 1.0), TAU)
    x = mu + sigma * math.sqrt(2.0) * torch.erfinv(2.0 * TAU - 1.0)
    expected = torch.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2.0 * math.pi))
    torch.testing.assert_close(density, expected, rtol=1e-10, atol=0.0)


def test_exponential_quantile_function_gives_the_exponential_density():
    rate = 2.5
    density = quantile_function_density(lambda t: -torch.log1p(-t) / rate, TAU)
    x = -torch.log1p(-TAU) / rate
    torch.testing.assert_close(density, rate * torch.exp(-rate * x), rtol=1e-10, atol=0.0)


def test_logistic_quantile_function_gives_the_logistic_density():
    mu, s = -0.4, 0.6
    density = quantile_function_density(lambda t: mu + s * torch.log(t / (1.0 - t)), TAU)
    z = torch.exp(-(mu + s * torch.log(TAU / (1.0 - TAU)) - mu) / s)
    torch.testing.assert_close(density, z / (s * (1.0 + z) ** 2), rtol=1e-10, atol=0.0)


# Hand-set network: out = k + e * relu(d + c * relu(b + a * gate)), gate = tanh(w * (2 tau - 1) + m) * sigmoid(40),
# and sigmoid(40) == 1 in float64, so Q(tau) = ALPHA + BETA * tanh(w (2 tau - 1) + m).
A, B_, C_, D, E, K, W_TAU, M = 1.0, 2.0, 1.0, 0.0, 0.4, -0.7, 1.5, 0.2
ALPHA, BETA = K + E * (D + C_ * B_), E * C_ * A


def hand_set_model(height=2, width=3, levels=9):
    config = PixelCNNConfig(channels=1, height=height, width=width, levels=levels, head="quantile", blocks=1,
                            filter_size=3, planes=1, output_planes=1)
    model = build_model(config).double().eval()
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        block = model.blocks[0]
        block.h_conv.bias.copy_(torch.tensor([M, 40.0], dtype=torch.float64))  # [tanh half | sigmoid half]
        block.tau_h.weight.copy_(torch.tensor([W_TAU, 0.0], dtype=torch.float64).view(2, 1, 1, 1))
        block.skip.weight.fill_(A), block.skip.bias.fill_(B_)
        model.output_conv.weight.fill_(C_), model.output_conv.bias.fill_(D)
        model.head.proj.weight.fill_(E), model.head.proj.bias.fill_(K)
    return model


def tanh_cdf(x: torch.Tensor) -> torch.Tensor:
    """CDF of ALPHA + BETA tanh(W (2 U - 1) + M), U ~ U[0, 1]: the inverse of the hand-set quantile function."""
    return (torch.atanh((x - ALPHA) / BETA) - M + W_TAU) / (2.0 * W_TAU)


def tanh_pdf(x: torch.Tensor) -> torch.Tensor:
    """Its density, the derivative of `tanh_cdf`."""
    return 1.0 / (2.0 * W_TAU * BETA * (1.0 - ((x - ALPHA) / BETA) ** 2))


def test_hand_set_network_implies_the_analytic_density():
    model = hand_set_model()
    tau = torch.cat([TAU[:6], TAU[1:7]]).view(2, 1, 2, 3)  # (B, C, H, W) float64
    images = torch.randint(0, 9, (2, 1, 2, 3), generator=torch.Generator().manual_seed(0))
    quantiles, dq = quantiles_and_density(model, images, tau)
    expected_q = ALPHA + BETA * torch.tanh(W_TAU * (2.0 * tau - 1.0) + M)
    torch.testing.assert_close(quantiles, expected_q, rtol=0.0, atol=1e-14)
    torch.testing.assert_close(model(to_unit(images, 9).double(), tau), expected_q, rtol=0.0, atol=1e-14)
    torch.testing.assert_close(tanh_cdf(quantiles), tau, rtol=0.0, atol=1e-12)  # Q is F's inverse
    torch.testing.assert_close(1.0 / dq, tanh_pdf(quantiles), rtol=1e-10, atol=0.0)
    torch.testing.assert_close(quantile_density(model, images, tau), dq, rtol=0.0, atol=0.0)

    # per level: the derivative of the CDF as a function of the level l, u = 2 l / (L - 1) - 1
    levels = ((quantiles + 1.0) * 4.0).detach().requires_grad_(True)  # (B, C, H, W), levels 0..8 as reals
    (per_level,) = torch.autograd.grad(tanh_cdf(levels * (2.0 / 8.0) - 1.0).sum(), levels)
    torch.testing.assert_close(implied_density(dq, 9), per_level, rtol=1e-10, atol=0.0)


# -------------------------------------------------------------------------- random networks

H = W = 4


def random_model(channels, filter_size=3, conditioned=False, seed=0):
    torch.manual_seed(seed)
    config = PixelCNNConfig(channels=channels, height=H, width=W, levels=7, head="quantile", blocks=2,
                            filter_size=filter_size, planes=4 * channels, output_planes=8 * channels,
                            num_classes=3 if conditioned else 0, cond_channels=2 if conditioned else 0)
    model = build_model(config).double().eval()
    with torch.no_grad():  # larger tau weights than the default init, so every path carries weight
        for block in model.blocks:
            block.tau_v.weight.mul_(4.0)
            block.tau_h.weight.mul_(4.0)
    return model


def inputs(model, batch=2, conditioned=False):
    C = model.config.channels
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, model.config.levels, (batch, C, H, W), generator=gen)
    tau = torch.rand(batch, C, H, W, generator=gen, dtype=torch.float64)
    cond = {}
    if conditioned:
        cond = {"class_labels": torch.arange(batch) % 3,
                "cond_map": torch.randn(batch, 2, H, W, generator=gen, dtype=torch.float64)}
    return images, tau, cond


@pytest.mark.parametrize("channels,filter_size,conditioned", [(1, 3, False), (1, 5, True), (3, 3, False),
                                                              (3, 3, True)])
def test_density_is_the_diagonal_of_the_brute_force_jacobian(channels, filter_size, conditioned):
    model = random_model(channels, filter_size, conditioned)
    images, tau, cond = inputs(model, conditioned=conditioned)
    x = to_unit(images, model.config.levels).double()
    quantiles, dq = quantiles_and_density(model, images, tau, **cond)

    def network(t):
        return model(x, t, cond.get("cond_map"), cond.get("class_labels"))

    with torch.no_grad():
        torch.testing.assert_close(quantiles, network(tau), rtol=0.0, atol=1e-12)  # the same values
    jacobian = torch.autograd.functional.jacobian(network, tau)  # (B, C, H, W, B, C, H, W)
    n = tau.numel()
    diagonal = jacobian.reshape(n, n).diagonal().reshape(tau.shape)  # (B, C, H, W)
    torch.testing.assert_close(dq, diagonal, rtol=0.0, atol=1e-10)
    assert (diagonal != 0).double().mean() > 0.8  # outputs depend on their own tau (a dead ReLU may flatten one)

    # the naive single backward pass gives column sums, not the diagonal: the test above is not vacuous
    column_sums = jacobian.reshape(n, n).sum(dim=0).reshape(tau.shape)
    assert (column_sums - diagonal).abs().max() > 1e-3


def test_unit_scale_images_are_accepted_and_categorical_models_rejected():
    model = random_model(1)
    images, tau, _ = inputs(model)
    unit = to_unit(images, model.config.levels).double()
    torch.testing.assert_close(quantile_density(model, unit, tau), quantile_density(model, images, tau),
                               rtol=0.0, atol=0.0)
    with pytest.raises(ValueError, match="unit scale"):
        quantile_density(model, images.double(), tau)
    categorical = build_model(PixelCNNConfig(channels=1, height=H, width=W, blocks=1, planes=4, output_planes=4))
    with pytest.raises(ValueError, match="quantile-head"):
        quantile_density(categorical, images, tau.float())


def test_pixel_log_density_sums_channels_and_marks_invalid():
    density = np.array([[[[0.5, 2.0]], [[4.0, -1.0]], [[1.0, 3.0]]]])  # (1, 3, 1, 2)
    logs = pixel_log_density(density)
    assert logs.shape == (1, 1, 2)
    assert logs[0, 0, 0] == pytest.approx(math.log(2.0)) and np.isnan(logs[0, 0, 1])


# -------------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("channels,conditioned", [(1, False), (3, True)])
def test_sample_with_density_reproduces_the_pipeline_draws(tmp_path, channels, conditioned):
    model = random_model(channels, conditioned=conditioned)  # sampled as the pipeline does: classes, no map
    n, batch_size, seed = 5, 2, 7
    result = sample_with_density(model, n, seed, batch_size=batch_size)
    assert isinstance(result, DensitySamples)
    labels = pipeline_class_labels(model, n, seed)
    expected = generate(model, n, batch_size, seed, class_labels=labels, progress=False)
    np.testing.assert_array_equal(result.images, expected)
    np.testing.assert_array_equal(result.labels, labels.numpy() if conditioned else np.full(n, -1))
    taus = [draw_noise(min(batch_size, n - s), model, noise_generator(seed, b))
            for b, s in enumerate(range(0, n, batch_size))]
    np.testing.assert_array_equal(result.tau, torch.cat(taus).numpy())
    assert result.matches_sample.all()  # the quantiles round back to the sampled levels

    # batch 1 alone, through the public function
    dq = quantile_density(model, torch.from_numpy(expected[2:4]), taus[1],
                          class_labels=None if labels is None else labels[2:4])
    np.testing.assert_allclose(result.dq_dtau[2:4], dq.numpy(), rtol=1e-6)
    np.testing.assert_allclose(result.density, implied_density(torch.from_numpy(result.dq_dtau).double(),
                                                               model.config.levels).numpy(), rtol=1e-6)
    assert result.log_density.shape == (n, H, W)
    summary = result.summary()
    assert summary["n"] == n and summary["fraction_matches_sample"] == 1.0

    arrays = result.arrays()
    np.savez(tmp_path / "d.npz", **arrays)
    with np.load(tmp_path / "d.npz") as loaded:
        assert set(loaded.files) == set(arrays)

    png = tmp_path / "figs" / "density.png"
    density_map_figure(result.images, result.density, png, title="test", levels=model.config.levels)
    density_map_figure(result.images[0], result.density[0], tmp_path / "one.png")
    for path in (png, tmp_path / "one.png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
