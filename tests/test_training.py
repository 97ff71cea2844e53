"""The training loop: overfitting one batch, determinism, exact resume, schedules, EMA."""


import numpy as np
import pytest
import torch

from aiqn.data import load_split
from aiqn.models import PixelCNNConfig, build_model
from aiqn.training import TrainConfig, load_checkpoint, model_loss, train, update_ema

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
