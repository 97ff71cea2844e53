"""Autoregressive causality of the whole Gated PixelCNN, proved with autograd.

For every output pixel-channel i (raster order, then R -> G -> B), the gradient of the output
with respect to the input image is exactly zero at i and at every later pixel-channel, and
non-zero somewhere before i. For PixelIQN the output must not depend on tau at any later
pixel-channel, and must depend on its own tau_i.
"""

import itertools

import pytest
import torch

from aiqn.nets import PixelCNNConfig, build_model

H = W = 5


def raster_index(channels: int) -> torch.Tensor:
    """(C, H, W) tensor holding each pixel-channel's position in generation order."""
    pixel = torch.arange(H * W).view(H, W)
    return pixel[None] * channels + torch.arange(channels)[:, None, None]


def make_model(channels, head, blocks, filter_size, conditioned):
    torch.manual_seed(0)
    config = PixelCNNConfig(
        channels=channels, height=H, width=W, levels=7, head=head, blocks=blocks, filter_size=filter_size,
        planes=8 * channels + (1 if channels == 3 else 0), output_planes=16 * channels,  # 25 = 9+8+8 planes
        num_classes=4 if conditioned else 0, cond_channels=2 if conditioned else 0,
    )
    return build_model(config).double()


def outputs_and_inputs(model, conditioned):
    C = model.config.channels
    torch.manual_seed(1)
    x = torch.randn(1, C, H, W, dtype=torch.double, requires_grad=True)
    tau = torch.rand(1, C, H, W, dtype=torch.double, requires_grad=True)
    cond = dict(cond_map=torch.randn(1, 2, H, W, dtype=torch.double), class_labels=torch.tensor([2])) if conditioned else {}
    out = model(x, tau if model.config.head == "quantile" else None, **cond)
    if model.config.head == "categorical":
        out = out.sum(dim=2)  # (1, C, H, W): any logit depending on an input shows up in the sum
    return out, x, tau


@pytest.mark.parametrize(
    "channels,head,blocks,filter_size,conditioned",
    [
        (1, "categorical", 1, 3, False),
        (1, "categorical", 3, 3, True),
        (1, "quantile", 2, 5, False),
        (1, "quantile", 3, 3, True),
        (3, "categorical", 1, 3, False),
        (3, "categorical", 2, 5, True),
        (3, "quantile", 2, 3, False),
        (3, "quantile", 3, 3, True),
    ],
)
def test_output_depends_only_on_earlier_pixel_channels(channels, head, blocks, filter_size, conditioned):
    model = make_model(channels, head, blocks, filter_size, conditioned)
    out, x, tau = outputs_and_inputs(model, conditioned)
    order = raster_index(channels)
    for r, c, ch in itertools.product(range(H), range(W), range(channels)):
        me = int(order[ch, r, c])
        grads = torch.autograd.grad(out[0, ch, r, c], [x, tau], retain_graph=True, allow_unused=True)
        gx = grads[0][0]
        assert torch.all(gx[order >= me] == 0), f"output {(r, c, ch)} sees the image at or after itself"
        if me > 0:
            assert torch.any(gx[order < me] != 0), f"output {(r, c, ch)} sees no earlier pixel-channel"
        if head == "quantile":
            gt = grads[1][0]
            assert torch.all(gt[order > me] == 0), f"output {(r, c, ch)} sees tau after itself"


@pytest.mark.parametrize("channels", [1, 3])
def test_quantile_output_depends_on_its_own_tau(channels):
    torch.manual_seed(0)
    config = PixelCNNConfig(channels=channels, height=H, width=W, levels=7, head="quantile", blocks=2,
                            filter_size=3, planes=12 * channels, output_planes=24 * channels)
    model = build_model(config).double()
    out, x, tau = outputs_and_inputs(model, conditioned=False)
    for r, c, ch in itertools.product(range(H), range(W), range(channels)):
        (gt,) = torch.autograd.grad(out[0, ch, r, c], [tau], retain_graph=True)
        assert gt[0, ch, r, c] != 0, f"output {(r, c, ch)} ignores its own tau"


def test_receptive_field_reaches_far_corner_with_no_blind_spot():
    """The last pixel sees the first row's right edge: the blind spot of the original PixelCNN
    (pixels up and to the right) is gone."""
    model = make_model(1, "categorical", blocks=4, filter_size=3, conditioned=False)
    out, x, _ = outputs_and_inputs(model, conditioned=False)
    (gx,) = torch.autograd.grad(out[0, 0, 2, 0], [x])
    assert gx[0, 0, 1, 4] != 0 and gx[0, 0, 0, 4] != 0


def test_even_filter_size_is_rejected():
    with pytest.raises(ValueError, match="filter_size"):
        PixelCNNConfig(filter_size=4)


def make_plain_model(channels, blocks, filter_size, first_filter_size):
    torch.manual_seed(0)
    config = PixelCNNConfig(channels=channels, height=H, width=W, levels=7, gated=False, blocks=blocks,
                            filter_size=filter_size, first_filter_size=first_filter_size,
                            planes=8 * channels + (1 if channels == 3 else 0), output_planes=16 * channels)
    return build_model(config).double()


@pytest.mark.parametrize(
    "channels,blocks,filter_size,first_filter_size",
    [(1, 1, 3, 3), (1, 3, 3, 5), (3, 1, 3, 3), (3, 2, 3, 7)],
)
def test_plain_pixelcnn_is_causal(channels, blocks, filter_size, first_filter_size):
    """The original PixelCNN (gated=False): the same causality proof as the gated model."""
    model = make_plain_model(channels, blocks, filter_size, first_filter_size)
    out, x, _ = outputs_and_inputs(model, conditioned=False)
    order = raster_index(channels)
    for r, c, ch in itertools.product(range(H), range(W), range(channels)):
        me = int(order[ch, r, c])
        (gx,) = torch.autograd.grad(out[0, ch, r, c], [x], retain_graph=True)
        gx = gx[0]
        assert torch.all(gx[order >= me] == 0), f"output {(r, c, ch)} sees the image at or after itself"
        if me > 0:
            assert torch.any(gx[order < me] != 0), f"output {(r, c, ch)} sees no earlier pixel-channel"


def test_plain_pixelcnn_has_the_blind_spot():
    """Masked k x k convolutions alone never see the pixels up and to the right beyond the
    diagonal (van den Oord et al. 2016b, figure 1): a path that moves one column right must also
    move one row up, so however deep the stack, the pixel at (2, 0) sees (1, 1) and (0, 2) but
    never (1, 2), (0, 3) or (0, 4), which come before it in raster order. The Gated PixelCNN sees
    them (test_receptive_field_reaches_far_corner_with_no_blind_spot)."""
    model = make_plain_model(1, blocks=4, filter_size=3, first_filter_size=3)
    out, x, _ = outputs_and_inputs(model, conditioned=False)
    (gx,) = torch.autograd.grad(out[0, 0, 2, 0], [x])
    assert gx[0, 0, 1, 1] != 0 and gx[0, 0, 0, 2] != 0
    assert gx[0, 0, 1, 2] == 0 and gx[0, 0, 0, 3] == 0 and gx[0, 0, 0, 4] == 0


def test_plain_pixelcnn_rejects_conditioning_and_the_quantile_head():
    with pytest.raises(ValueError, match="plain PixelCNN"):
        PixelCNNConfig(gated=False, head="quantile")
    with pytest.raises(ValueError, match="plain PixelCNN"):
        PixelCNNConfig(gated=False, num_classes=10)
