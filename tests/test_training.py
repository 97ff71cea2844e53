"""The training loop: overfitting one batch, determinism, exact resume, schedules, EMA."""


import numpy as np
import pytest
import torch

from aiqn.data import load_split
from aiqn.nets import PixelCNNConfig, build_model
from aiqn.methods.pixeliqn.train import BatchSampler, TrainConfig, freeze_unused_parameters, model_loss, train
from aiqn.core.checkpoint import load_checkpoint
from aiqn.core.loop import update_ema

SMALL = dict(blocks=2, filter_size=3, planes=16, output_planes=32)


@pytest.fixture(scope="module")
def digits_train(digits_dir):
    images, labels = load_split(digits_dir / "train.npz")
    return images, labels


@pytest.mark.parametrize("head,threshold", [("categorical", 0.35), ("quantile", 0.07)])
def test_overfit_one_batch(digits_train, head, threshold):
    """Both heads drive the loss on one fixed batch of 8 real digits far down."""
    images = torch.from_numpy(digits_train[0][:8]).long()
    torch.manual_seed(0)
    model = build_model(PixelCNNConfig(head=head, **SMALL))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    first = None
    for _ in range(300):
        loss = model_loss(model, images, generator, kappa=0.002)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < threshold < first, (first, loss.item())


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("head", ["categorical", "quantile"])
def test_same_seed_gives_identical_weights(digits_train, tmp_path, head):
    config = PixelCNNConfig(head=head, **SMALL)
    tc = TrainConfig(steps=20, batch_size=8, checkpoint_steps=[20], seed=3)
    a = train(config, tc, digits_train[0], tmp_path / "a", progress=False)
    b = train(config, tc, digits_train[0], tmp_path / "b", progress=False)
    ca, cb = load_checkpoint(a[20]), load_checkpoint(b[20])
    assert _states_equal(ca["model"], cb["model"]) and _states_equal(ca["ema"], cb["ema"])
    other = train(config, TrainConfig(steps=20, batch_size=8, checkpoint_steps=[20], seed=4),
                  digits_train[0], tmp_path / "c", progress=False)
    assert not _states_equal(ca["model"], load_checkpoint(other[20])["model"])


@pytest.mark.parametrize("head,optimizer", [("categorical", "rmsprop"), ("quantile", "adam"), ("categorical", "sgd")])
def test_resume_continues_exactly(digits_train, tmp_path, head, optimizer):
    """Interrupted at step 15 and resumed from the step-10 checkpoint, the run ends with the
    same weights, EMA, optimizer state and log as an uninterrupted one."""
    config = PixelCNNConfig(head=head, **SMALL)
    tc = TrainConfig(steps=30, batch_size=8, optimizer=optimizer, lr=1e-3, lr_boundaries=[12], lr_values=[1e-3, 3e-4],
                     checkpoint_steps=[10, 20, 30], ema_rate=0.9, seed=1)
    full = train(config, tc, digits_train[0], tmp_path / "full", progress=False)
    partial = train(config, tc, digits_train[0], tmp_path / "resumed", stop_after=15, progress=False)
    assert sorted(partial) == [10]
    resumed = train(config, tc, digits_train[0], tmp_path / "resumed", progress=False)
    a, b = load_checkpoint(full[30]), load_checkpoint(resumed[30])
    assert _states_equal(a["model"], b["model"])
    assert _states_equal(a["ema"], b["ema"])
    assert str(a["optimizer"]) == str(b["optimizer"])
    log_full = np.loadtxt(tmp_path / "full" / "train_log.csv", delimiter=",", skiprows=1, usecols=(0, 1))
    log_resumed = np.loadtxt(tmp_path / "resumed" / "train_log.csv", delimiter=",", skiprows=1, usecols=(0, 1))
    np.testing.assert_array_equal(log_full, log_resumed)


def test_checkpoints_of_other_configs_are_never_resumed(digits_train, tmp_path):
    config = PixelCNNConfig(head="categorical", **SMALL)
    train(config, TrainConfig(steps=10, batch_size=8, checkpoint_steps=[5, 10], seed=0), digits_train[0], tmp_path,
          progress=False)
    changed = TrainConfig(steps=10, batch_size=8, checkpoint_steps=[5, 10], seed=0, lr=5e-4)
    fresh = train(config, changed, digits_train[0], tmp_path / "fresh", progress=False)
    reused = train(config, changed, digits_train[0], tmp_path, progress=False)
    assert _states_equal(load_checkpoint(fresh[10])["model"], load_checkpoint(reused[10])["model"])
    assert list(tmp_path.glob("*.stale"))


def test_checkpoint_holds_everything_needed(digits_train, tmp_path):
    config = PixelCNNConfig(head="quantile", **SMALL)
    paths = train(config, TrainConfig(steps=4, batch_size=4, checkpoint_steps=[2]), digits_train[0], tmp_path,
                  progress=False)
    assert sorted(paths) == [2, 4]  # the last step is always kept
    ckpt = load_checkpoint(paths[4])
    for key in ("model", "ema", "optimizer", "schedule", "step", "config", "train_config", "rng"):
        assert key in ckpt
    assert ckpt["step"] == 4 and ckpt["config"]["head"] == "quantile"
    assert not list(tmp_path.glob(".*.tmp")), "atomic writes leave no temporary files"


def test_checkpoints_from_before_kinds_still_load_and_resume(digits_train, tmp_path):
    """A PixelCNN checkpoint written before checkpoints carried a `kind` (today's with the key removed)
    reads as the PixelCNN's, rebuilds its model, gets the PixelCNN's bits/dim from `evaluate`'s
    entry, and is resumed by a run of the same configs (the PixelCNN's digest hashes no kind)."""
    from aiqn.core.checkpoint import checkpoint_kind
    from aiqn.core.io import torch_save_atomic
    from aiqn.methods.pixeliqn.verbs import pixelcnn_bits_per_dim
    from aiqn.nets import model_from_checkpoint
    from aiqn.pipeline.verbs import LIKELIHOOD_METRICS

    config = PixelCNNConfig(head="categorical", **SMALL)
    tc = TrainConfig(steps=6, batch_size=4, checkpoint_steps=[3], seed=2)
    full = train(config, tc, digits_train[0], tmp_path / "full", progress=False)
    partial = train(config, tc, digits_train[0], tmp_path / "old", stop_after=3, progress=False)
    old = load_checkpoint(partial[3])
    assert old.pop("kind") == "pixelcnn"
    torch_save_atomic(old, partial[3])  # as written before kinds
    legacy = load_checkpoint(partial[3])
    assert "kind" not in legacy and checkpoint_kind(legacy) == "pixelcnn"
    assert LIKELIHOOD_METRICS["pixelcnn"] is pixelcnn_bits_per_dim
    assert isinstance(model_from_checkpoint(legacy), torch.nn.Module)
    resumed = train(config, tc, digits_train[0], tmp_path / "old", progress=False)
    assert not list((tmp_path / "old").glob("*.stale")), "the old checkpoint was resumed, not set aside"
    assert _states_equal(load_checkpoint(full[6])["model"], load_checkpoint(resumed[6])["model"])


def test_piecewise_schedule():
    tc = TrainConfig(steps=300, lr=1.0, lr_boundaries=[120, 180], lr_values=[1e-4, 3e-5, 1e-5])
    assert [tc.lr_at(s) for s in (0, 119, 120, 179, 180, 299)] == [1e-4, 1e-4, 3e-5, 3e-5, 1e-5, 1e-5]
    assert TrainConfig(steps=10, lr=2e-4).lr_at(7) == 2e-4
    with pytest.raises(ValueError, match="one more"):
        TrainConfig(steps=10, lr_boundaries=[5], lr_values=[1e-3])


def test_update_ema_hand_computed():
    target, source = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        target.weight.fill_(1.0)
        source.weight.fill_(3.0)
    update_ema(target, source, rate=0.75)
    assert target.weight.item() == pytest.approx(0.75 * 1.0 + 0.25 * 3.0)


def test_new_train_config_fields_are_validated():
    tc = TrainConfig(steps=10)
    assert (tc.precision, tc.compile, tc.channels_last) == ("fp32", False, False)
    TrainConfig(steps=10, precision="bf16", compile=True, channels_last=True)
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(steps=10, precision="fp16")
    with pytest.raises(ValueError, match="compile"):
        TrainConfig(steps=10, compile="yes")
    with pytest.raises(ValueError, match="channels_last"):
        TrainConfig(steps=10, channels_last=1)


def _losses(run_dir) -> np.ndarray:
    return np.loadtxt(run_dir / "train_log.csv", delimiter=",", skiprows=1, usecols=1)  # (steps,)


@pytest.mark.parametrize("head", ["categorical", "quantile"])
def test_bf16_autocast_trains_with_a_float32_loss(digits_train, tmp_path, head):
    config = PixelCNNConfig(head=head, **SMALL)
    images = torch.from_numpy(digits_train[0][:8]).long()
    torch.manual_seed(0)
    model = build_model(config)
    tau = torch.rand(images.shape)
    fp32 = model_loss(model, images, None, 0.002, tau=tau)
    bf16 = model_loss(model, images, None, 0.002, tau=tau, precision="bf16")
    assert bf16.dtype == torch.float32 and bf16.item() != fp32.item()  # autocast was on, the loss is float32
    assert bf16.item() == pytest.approx(fp32.item(), rel=0.05)
    tc = TrainConfig(steps=5, batch_size=8, precision="bf16", seed=2)
    train(config, tc, digits_train[0], tmp_path, progress=False)
    assert np.all(np.isfinite(_losses(tmp_path))) and len(_losses(tmp_path)) == 5


@pytest.mark.parametrize("head", ["categorical", "quantile"])
def test_channels_last_trains_like_the_default_layout(digits_train, tmp_path, head):
    config = PixelCNNConfig(head=head, **SMALL)
    runs = {}
    for channels_last in (False, True):
        tc = TrainConfig(steps=6, batch_size=8, seed=2, channels_last=channels_last)
        runs[channels_last] = train(config, tc, digits_train[0], tmp_path / str(channels_last), progress=False)[6]
    np.testing.assert_allclose(_losses(tmp_path / "True"), _losses(tmp_path / "False"), atol=1e-5)
    a, b = load_checkpoint(runs[False]), load_checkpoint(runs[True])
    for name in a["model"]:
        torch.testing.assert_close(b["model"][name], a["model"][name], atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(not torch._dynamo.is_dynamo_supported(), reason="torch.compile is not supported on this Python")
def test_compiled_training_saves_the_plain_module(digits_train, tmp_path, monkeypatch):
    """compile=True trains like eager and saves keys without `_orig_mod.`. The test compiles with
    the aot_eager backend: Inductor needs a C++ compiler and half a minute per tiny model on CPU."""
    import functools

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    for head in ("categorical", "quantile"):
        config = PixelCNNConfig(head=head, **SMALL)
        paths = {flag: train(config, TrainConfig(steps=3, batch_size=8, compile=flag), digits_train[0],
                             tmp_path / f"{head}{flag}", progress=False)[3] for flag in (False, True)}
        eager, compiled = load_checkpoint(paths[False]), load_checkpoint(paths[True])
        assert compiled["model"].keys() == eager["model"].keys() == compiled["ema"].keys()
        for name in eager["model"]:
            torch.testing.assert_close(compiled["model"][name], eager["model"][name], atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(_losses(tmp_path / f"{head}True"), _losses(tmp_path / f"{head}False"), atol=1e-5)


def test_batch_sampler_draws_index_then_tau_from_the_generator():
    """The draws (and so the batches of a seed) are those of the loop before BatchSampler existed."""
    images = np.random.default_rng(0).integers(0, 17, size=(50, 1, 8, 8), dtype=np.uint8)
    sampler = BatchSampler(images, None, 6, torch.Generator().manual_seed(4), "cpu", draw_tau=True)
    reference = torch.Generator().manual_seed(4)
    for _ in range(3):
        batch = sampler.draw()
        index = torch.randint(50, (6,), generator=reference)
        assert torch.equal(batch.images, torch.from_numpy(images).long()[index])
        assert torch.equal(batch.tau, torch.rand((6, 1, 8, 8), generator=reference))
    half = BatchSampler(images, None, 6, torch.Generator().manual_seed(4), "cpu", draw_tau=True, shard=slice(3, 6))
    assert half.draw().images.shape == (3, 1, 8, 8)


@pytest.mark.parametrize("head", ["categorical", "quantile"])
def test_freeze_unused_parameters_finds_the_parameters_without_gradient(digits_train, head):
    """The parameters DDP must leave out are exactly those a training step leaves without a gradient."""
    torch.manual_seed(0)
    model = build_model(PixelCNNConfig(head=head, **SMALL))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frozen = freeze_unused_parameters(model)
    assert "blocks.1.residual.weight" in frozen and all(p.grad is None for p in model.parameters())
    assert _states_equal(before, model.state_dict())
    fresh = build_model(PixelCNNConfig(head=head, **SMALL))
    images = torch.from_numpy(digits_train[0][:4]).long()
    model_loss(fresh, images, torch.Generator().manual_seed(0), 0.002).backward()
    assert frozen == [name for name, p in fresh.named_parameters() if p.grad is None]
