"""The cached sampler against the naive reference: per layer (teacher-forced over a full image,
as fast-pixel-cnn's test_components) and end to end (same draws -> same uint8 samples, as its
test_end_to_end), on 1- and 3-channel models, both heads, with and without conditioning.
Also: sharded generation resumes after an interruption without redrawing finished shards."""

import numpy as np
import pytest
import torch

from aiqn.nets import sampling
from aiqn.nets.cached_sampling import CachedSampler, sample_cached
from aiqn.nets.draws import draw_noise, noise_generator
from aiqn.nets import PixelCNNConfig, build_model, to_unit
from aiqn.nets.sampling import generate, sample_naive

H, W, LEVELS = 6, 5, 17
CASES = [
    (1, "categorical", 3, False),
    (1, "quantile", 5, True),
    (3, "categorical", 3, True),
    (3, "quantile", 3, False),
    (3, "quantile", 5, True),
    (1, "categorical", 5, True),
]


def make(channels, head, filter_size, conditioned, dtype, batch=4):
    torch.manual_seed(0)
    config = PixelCNNConfig(channels=channels, height=H, width=W, levels=LEVELS, head=head, blocks=3,
                            filter_size=filter_size, planes=8 * channels, output_planes=16 * channels,
                            num_classes=4 if conditioned else 0, cond_channels=2 if conditioned else 0)
    model = build_model(config).to(dtype).eval()
    noise = torch.rand(batch, channels, H, W, generator=torch.Generator().manual_seed(1))
    conditioning = {}
    if conditioned:
        conditioning = {"class_labels": torch.arange(batch) % 4,
                        "cond_map": torch.randn(batch, 2, H, W, generator=torch.Generator().manual_seed(2))}
    return model, noise, conditioning


def full_network_layers(model, images, noise, conditioning, dtype):
    """Every block's (v, h, running skip sum) and the head output of one full forward pass (the
    reference path, whose blocks are module calls; `forward` equals it: test_network_paths)."""
    captured = []
    hooks = [block.register_forward_hook(lambda _m, _i, out: captured.append(out)) for block in model.blocks]
    cond = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in conditioning.items()}
    tau = noise.to(dtype) if model.config.head == "quantile" else None
    with torch.no_grad():
        out = model.forward_reference(to_unit(images, LEVELS).to(dtype), tau, **cond)
    for hook in hooks:
        hook.remove()
    skips = torch.cumsum(torch.stack([skip for _, _, skip in captured]), dim=0)
    return [v for v, _, _ in captured], [h for _, h, _ in captured], list(skips), out.reshape(len(images), -1, H, W)


@pytest.mark.parametrize("channels,head,filter_size,conditioned", CASES)
def test_every_layer_matches_the_full_network(channels, head, filter_size, conditioned):
    dtype = torch.float64
    model, noise, conditioning = make(channels, head, filter_size, conditioned, dtype)
    images = torch.randint(0, LEVELS, (len(noise), channels, H, W), generator=torch.Generator().manual_seed(3))
    v_full, h_full, skip_full, out_full = full_network_layers(model, images, noise, conditioning, dtype)
    cached = CachedSampler(model).teacher_forced(images, noise, **conditioning)
    for i in range(len(model.blocks)):
        torch.testing.assert_close(cached["v"][i], v_full[i], rtol=0, atol=1e-12, msg=f"vertical stack, block {i}")
        torch.testing.assert_close(cached["h"][i], h_full[i], rtol=0, atol=1e-12, msg=f"horizontal stack, block {i}")
        torch.testing.assert_close(cached["skip"][i], skip_full[i], rtol=0, atol=1e-12, msg=f"skip sum, block {i}")
    torch.testing.assert_close(cached["out"], out_full, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("channels,head,filter_size,conditioned", CASES)
def test_same_draws_give_the_same_samples(channels, head, filter_size, conditioned, dtype):
    model, noise, conditioning = make(channels, head, filter_size, conditioned, dtype, batch=6)
    naive = sample_naive(model, noise, **conditioning)
    cached = sample_cached(model, noise, **conditioning)
    assert cached.dtype == torch.uint8
    assert torch.equal(naive, cached)
    assert len(torch.unique(cached)) > 1


@pytest.mark.parametrize("channels,head", [(1, "categorical"), (3, "quantile")])
def test_inpainting_matches_and_keeps_known_pixels(channels, head):
    model, noise, _ = make(channels, head, 3, False, torch.float64)
    known = torch.randint(0, LEVELS, noise.shape, generator=torch.Generator().manual_seed(4))
    mask = torch.zeros(noise.shape, dtype=torch.bool)
    mask[:, :, : H // 2] = True  # top half given
    naive = sample_naive(model, noise, known=known, known_mask=mask)
    cached = sample_cached(model, noise, known=known, known_mask=mask)
    assert torch.equal(naive, cached)
    assert torch.equal(cached[mask].long(), known[mask])


def test_progressive_steps_agree_with_the_naive_sampler():
    """Both generators yield the same partial image after every pixel-channel."""
    model, noise, conditioning = make(3, "categorical", 3, True, torch.float64)
    naive_steps = sampling.sample_progressive(model, noise, **conditioning)
    cached_steps = CachedSampler(model).sample_progressive(noise, **conditioning)
    count = 0
    for (pos_a, img_a), (pos_b, img_b) in zip(naive_steps, cached_steps):
        assert pos_a == pos_b and torch.equal(img_a, img_b), pos_a
        count += 1
    assert count == 3 * H * W


def test_interrupted_sharded_generation_resumes(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = build_model(PixelCNNConfig(height=H, width=W, blocks=2, planes=8, output_planes=16)).eval()
    reference = generate(model, 10, batch_size=4, seed=5, progress=False)
    assert reference.shape == (10, 1, H, W)

    calls = []
    real = sampling.sampler("cached")

    def interrupted(model, noise, **kw):
        calls.append(len(noise))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the job dies while drawing the second shard
        return real(model, noise, **kw)

    monkeypatch.setattr(sampling, "sampler", lambda method: interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate(model, 10, batch_size=4, seed=5, shard_dir=tmp_path, shard_key={"ckpt": "x"}, progress=False)
    assert sorted(p.name for p in tmp_path.glob("shard_*.npz")) == ["shard_00000.npz"]

    calls.clear()
    monkeypatch.setattr(sampling, "sampler", lambda method: lambda model, noise, **kw: (calls.append(len(noise)), real(model, noise, **kw))[1])
    resumed = generate(model, 10, batch_size=4, seed=5, shard_dir=tmp_path, shard_key={"ckpt": "x"}, progress=False)
    assert calls == [4, 2], "only the two missing shards are drawn"
    np.testing.assert_array_equal(resumed, reference)

    calls.clear()  # a different checkpoint never reuses these shards
    generate(model, 10, batch_size=4, seed=5, shard_dir=tmp_path, shard_key={"ckpt": "y"}, progress=False)
    assert calls == [4, 4, 2]


def test_generate_naive_and_cached_agree():
    torch.manual_seed(0)
    model = build_model(PixelCNNConfig(head="quantile", height=H, width=W, blocks=2, planes=8, output_planes=16)).eval()
    a = generate(model, 6, batch_size=4, seed=2, method="naive", progress=False)
    b = generate(model, 6, batch_size=4, seed=2, method="cached", progress=False)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="unknown sampling method"):
        generate(model, 2, batch_size=2, seed=0, method="fast", progress=False)
    assert draw_noise(2, model, noise_generator(2, 0)).shape == (2, 1, H, W)
