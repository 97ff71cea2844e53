"""The original (ungated) PixelCNN, `gated: false`: it trains through the same loop, resumes from
its checkpoints, scores bits/dim and samples with the naive sampler (causality: test_causality.py)."""

import numpy as np
import pytest
import torch

from aiqn.data import load_split
from aiqn.nets.draws import draw_noise, inverse_cdf
from aiqn.nets.likelihood import bits_per_dim
from aiqn.nets import PixelCNNConfig, PlainPixelCNN, build_model, to_unit
from aiqn.nets.sampling import sampler
from aiqn.methods.pixeliqn.train import TrainConfig, train
from aiqn.nets import model_from_checkpoint

PLAIN = dict(gated=False, blocks=2, filter_size=3, first_filter_size=5, planes=16, output_planes=32)


@pytest.fixture(scope="module")
def trained(digits_dir, tmp_path_factory):
    images, _ = load_split(digits_dir / "train.npz")
    run = tmp_path_factory.mktemp("plain")
    checkpoints = train(PixelCNNConfig(**PLAIN), TrainConfig(steps=150, batch_size=32, lr=3e-3, optimizer="adam",
                                                              checkpoint_steps=[150], seed=0, ema_rate=0.9),
                        images, run, progress=False)
    return model_from_checkpoint(checkpoints[150]), images


def test_the_checkpoint_rebuilds_the_plain_model_and_it_learns(trained):
    model, images = trained
    assert isinstance(model, PlainPixelCNN)
    untrained = build_model(PixelCNNConfig(**PLAIN))
    assert bits_per_dim(model, images[:200]) < bits_per_dim(untrained, images[:200]) - 1.0


def test_bits_per_dim_is_the_mean_categorical_nll_in_bits(trained):
    model, images = trained
    batch = torch.from_numpy(images[:50]).long()
    with torch.no_grad():
        log_probs = torch.log_softmax(model(to_unit(batch, model.config.levels)).double(), dim=2)  # (B, C, L, H, W)
    picked = log_probs.gather(2, batch[:, :, None]).squeeze(2)  # (B, C, H, W)
    expected = float(-picked.mean() / np.log(2.0))
    assert bits_per_dim(model, images[:50], batch_size=17) == pytest.approx(expected, rel=1e-6)


def test_naive_samples_are_the_inverse_cdf_of_their_own_teacher_forced_logits(trained):
    """Causal model + naive sampler: re-reading a finished sample gives, at every pixel, the
    distribution it was drawn from, so inverting the same uniforms reproduces the sample."""
    model, _ = trained
    noise = draw_noise(4, model, torch.Generator().manual_seed(0))
    samples = sampler("naive")(model, noise).long()  # (4, 1, 8, 8)
    with torch.no_grad():
        probs = torch.softmax(model(to_unit(samples, model.config.levels)).float(), dim=2)  # (4, 1, L, 8, 8)
    L = model.config.levels
    flat_probs = probs.permute(0, 1, 3, 4, 2).reshape(-1, L)
    assert torch.equal(inverse_cdf(flat_probs, noise.reshape(-1)), samples.reshape(-1))


def test_the_cached_sampler_refuses_it_with_the_way_out(trained):
    model, _ = trained
    with pytest.raises(ValueError, match="naive"):
        sampler("cached")(model, draw_noise(2, model, torch.Generator().manual_seed(0)))


def test_each_images_bits_per_dim_and_their_t_interval(trained):
    """bits/dim per test image against the closed form image by image, and the entry's interval
    against scipy's t interval of those values."""
    import scipy.stats

    from aiqn.core.intervals import mean_entry
    from aiqn.nets.likelihood import bits_per_dim_per_image

    model, images = trained
    per_image = bits_per_dim_per_image(model, images[:40], batch_size=7)
    assert per_image.shape == (40,)
    singles = [bits_per_dim(model, images[i:i + 1]) for i in (0, 13, 39)]
    assert per_image[[0, 13, 39]] == pytest.approx(singles, rel=1e-6)
    entry = mean_entry(per_image)
    low, high = scipy.stats.t.interval(0.95, 39, loc=per_image.mean(), scale=scipy.stats.sem(per_image))
    assert (entry["value"], entry["low"], entry["high"]) == pytest.approx((bits_per_dim(model, images[:40]), low, high),
                                                                          abs=2e-6)
