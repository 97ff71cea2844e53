"""Inpainting: given pixels stay exactly as given, completions differ, both samplers agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aiqn.methods.pixeliqn.inpainting import inpaint, masked_input, top_rows_mask
from aiqn.nets import PixelCNNConfig, build_model
from aiqn.report import plot_inpainting


def _model(head: str, channels: int) -> torch.nn.Module:
    torch.manual_seed(0)
    config = PixelCNNConfig(channels=channels, height=6, width=6, levels=17 if channels == 1 else 256, head=head,
                            blocks=2, filter_size=3, planes=12, output_planes=16)
    model = build_model(config).eval()
    with torch.no_grad():  # an untrained quantile head barely depends on tau: make it matter
        for name, parameter in model.named_parameters():
            if "tau_" in name:
                parameter.mul_(30.0)
    return model


@pytest.mark.parametrize("head", ["categorical", "quantile"])
@pytest.mark.parametrize("channels", [1, 3])
def test_known_pixels_stay_and_completions_differ(head, channels):
    model = _model(head, channels)
    levels = model.config.levels
    images = np.random.default_rng(0).integers(0, levels, size=(3, channels, 6, 6), dtype=np.uint8)
    mask = top_rows_mask((channels, 6, 6), 0.5)
    assert mask[:, :3].all() and not mask[:, 3:].any()
    completions = inpaint(model, images, mask, completions=4, seed=1)
    assert completions.shape == (3, 4, channels, 6, 6) and completions.dtype == np.uint8
    given = np.broadcast_to(images[:, None], completions.shape)
    assert np.array_equal(completions[:, :, :, :3], given[:, :, :, :3])  # exactly as given
    for m in range(3):  # the K completions of one image are not all the same
        assert len({completions[m, k, :, 3:].tobytes() for k in range(4)}) > 1
    naive = inpaint(model, images, mask, completions=4, seed=1, method="naive")
    assert np.array_equal(completions, naive)
    assert np.array_equal(inpaint(model, images, mask, completions=4, seed=1), completions)  # seeded


def test_the_figure_shows_input_completions_and_original(tmp_path):
    model = _model("quantile", 1)
    images = np.random.default_rng(1).integers(0, 17, size=(2, 1, 6, 6), dtype=np.uint8)
    mask = top_rows_mask((1, 6, 6), 0.5)
    shown = masked_input(images, mask, 17)
    assert (shown[:, :, 3:] == 8).all() and np.array_equal(shown[:, :, :3], images[:, :, :3])
    completions = inpaint(model, images, mask, completions=3, seed=0)
    plot_inpainting({"pixeliqn": (shown, completions, images)}, 17, str(tmp_path / "inpaint.png"), title="t")
    assert (tmp_path / "inpaint.png").read_bytes()[:4] == b"\x89PNG"


def test_a_mask_must_leave_something_to_draw():
    with pytest.raises(ValueError, match="known_rows"):
        top_rows_mask((1, 8, 8), 1.0)
