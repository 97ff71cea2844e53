"""The Gated PixelCNN's training path (`forward`, (B, H, W, C) maps and GEMMs) against the paper's
per-term convolutions (`forward_reference`) and the pinned pre-issue-15 step of the benchmark."""

from __future__ import annotations

import importlib.util
import itertools
import platform
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aiqn.core.allocator import keep_freed_memory
from aiqn.core.config import make_optimizer
from aiqn.methods.pixeliqn.train import BatchSampler, TrainConfig, train_step
from aiqn.nets import PixelCNNConfig, build_model
from aiqn.nets.objectives import categorical_nll

ROOT = Path(__file__).resolve().parents[1]


def pinned_step():
    spec = importlib.util.spec_from_file_location("pinned_step", ROOT / "benchmarks" / "pinned_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CASES = list(itertools.product(["categorical", "quantile"], [0, 4], [1, 3], [0, 2], [3, 5]))


@pytest.mark.parametrize("head,num_classes,channels,cond_channels,filter_size", CASES)
def test_training_path_equals_reference_in_float64(head, num_classes, channels, cond_channels, filter_size):
    """Outputs and every parameter's gradient agree to 1e-12 for every head and conditioning mode."""
    torch.manual_seed(0)
    config = PixelCNNConfig(channels=channels, height=5, width=6, levels=9, head=head, blocks=3,
                            filter_size=filter_size, planes=12, output_planes=18, num_classes=num_classes,
                            cond_channels=cond_channels)
    model = build_model(config).double()
    x = torch.rand(3, channels, 5, 6, dtype=torch.float64) * 2 - 1
    args = (x, torch.rand_like(x) if head == "quantile" else None,
            torch.randn(3, cond_channels, 5, 6, dtype=torch.float64) if cond_channels else None,
            torch.randint(0, num_classes, (3,)) if num_classes else None)
    reference, fast = model.forward_reference(*args), model(*args)
    assert fast.shape == reference.shape
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-12)
    params = list(model.parameters())
    grads_ref = torch.autograd.grad(reference.square().sum(), params, allow_unused=True)
    grads_fast = torch.autograd.grad(fast.square().sum(), params, allow_unused=True)
    for (name, _), g_ref, g_fast in zip(model.named_parameters(), grads_ref, grads_fast):
        # the training path skips the last block's unused outputs: no gradient there instead of zeros
        g_ref = torch.zeros_like(params[0]) if g_ref is None else g_ref
        g_fast = torch.zeros_like(g_ref) if g_fast is None else g_fast
        torch.testing.assert_close(g_fast, g_ref, rtol=0, atol=1e-12, msg=name)


def test_categorical_nll_matches_log_softmax_for_any_memory_layout():
    logits = torch.randn(2, 3, 5, 4, 4)  # (B, C, L, H, W), contiguous
    images = torch.randint(0, 5, (2, 3, 4, 4))
    direct = -F.log_softmax(logits, dim=2).gather(2, images[:, :, None]).squeeze(2)  # (B, C, H, W)
    torch.testing.assert_close(categorical_nll(logits, images), direct)
    channels_last_memory = logits.permute(0, 3, 4, 1, 2).contiguous().permute(0, 3, 4, 1, 2)  # as forward returns
    torch.testing.assert_close(categorical_nll(channels_last_memory, images), direct)


@pytest.mark.parametrize("head", ["categorical", "quantile"])
def test_training_step_follows_the_pinned_baseline_step(head):
    """Ten steps of today's train_step (GEMM path, fused/foreach optimizers) and of the benchmark's
    pinned pre-issue-15 step from the same weights and batches: losses and weights agree to float
    rounding, so the speed-up benchmark compares the same work."""
    pinned = pinned_step()
    config = PixelCNNConfig(channels=1, height=8, width=8, levels=17, head=head, blocks=3, planes=16, output_planes=32)
    name = "rmsprop" if head == "categorical" else "adam"
    images = np.random.default_rng(0).integers(0, 17, size=(64, 1, 8, 8), dtype=np.uint8)
    torch.manual_seed(0)
    new_model, old_model = build_model(config), build_model(config)
    old_model.load_state_dict(new_model.state_dict())
    new_opt, old_opt = make_optimizer(new_model.parameters(), name, 1e-3), pinned.optimizer(old_model.parameters(), name, 1e-3)
    new_batches, old_batches = (BatchSampler(images, None, 16, torch.Generator().manual_seed(1), "cpu", draw_tau=head == "quantile")
                                for _ in range(2))
    train_config = TrainConfig(steps=1, batch_size=16, optimizer=name, lr=1e-3, kappa=0.002)
    for _ in range(10):
        new_loss = train_step(new_model, new_opt, new_batches.draw(), train_config)
        batch = old_batches.draw()
        old_loss = pinned.loss(old_model, batch.images, batch.tau, 0.002)
        old_opt.zero_grad(set_to_none=True)
        old_loss.backward()
        old_opt.step()
        torch.testing.assert_close(new_loss, old_loss.detach(), rtol=1e-4, atol=1e-5)
    for (key, new), old in zip(new_model.state_dict().items(), old_model.state_dict().values()):
        torch.testing.assert_close(new, old, rtol=1e-3, atol=1e-4, msg=key)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_is_accepted_by_glibc():
    assert keep_freed_memory() is True
