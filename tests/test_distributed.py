"""Data-parallel training: two CPU processes (torchrun, gloo) equal one process.

The test starts `torchrun --standalone --nproc-per-node 2` on this very file (its `__main__`
block is the worker), as the `train` verb is meant to be started; --standalone picks a free port
itself, so no port is guessed here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aiqn.core.runinfo import TRAIN_TIMES
from aiqn.core.distributed import DistInfo, barrier, init_from_env, is_main, shard_slice, shutdown
from aiqn.nets import PixelCNNConfig
from aiqn.methods.pixeliqn.train import BatchSampler, TrainConfig, train
from aiqn.core.checkpoint import load_checkpoint

TINY = dict(channels=1, height=8, width=8, levels=17, blocks=2, filter_size=3, planes=8, output_planes=16)
HEADS = ("categorical", "quantile")
STEPS, STOP, GLOBAL_BATCH = 10, 5, 8


def _images() -> np.ndarray:
    """Random uint8 levels (64, 1, 8, 8): the same array in every process."""
    return np.random.default_rng(0).integers(0, TINY["levels"], size=(64, 1, 8, 8), dtype=np.uint8)


def _train_config() -> TrainConfig:
    return TrainConfig(steps=STEPS, batch_size=GLOBAL_BATCH, optimizer="adam", lr=3e-3, ema_rate=0.9,
                       checkpoint_steps=[STOP, STEPS], seed=7)


def _row_sums(x: torch.Tensor | None) -> list[float] | None:
    """(b, C, H, W) -> b per-image sums: a fingerprint of which images / taus a shard holds."""
    return None if x is None else x.double().sum(dim=(1, 2, 3)).tolist()


def _worker(out: Path) -> None:
    """One torchrun process: per head, an uninterrupted run and one stopped at STOP and resumed.
    Records in `rank{r}.json` which checkpoint files this rank saved and, per step of the
    uninterrupted runs, fingerprints of the images and taus it trained on."""
    import aiqn.core.checkpoint as checkpoints
    import aiqn.methods.pixeliqn.train as training

    torch.set_num_threads(1)
    info = init_from_env("cpu")
    saved: list[str] = []
    seen: dict[str, list] = {head: [] for head in HEADS}
    save, step = checkpoints.torch_save_atomic, training.train_step
    recording = [""]  # the head whose batches are being recorded ("" : none)

    def recording_save(obj, path):
        saved.append(Path(path).name)
        save(obj, path)

    def recording_step(train_model, optimizer, batch, config):
        if recording[0]:
            seen[recording[0]].append([_row_sums(batch.images), _row_sums(batch.tau)])
        return step(train_model, optimizer, batch, config)

    checkpoints.torch_save_atomic, training.train_step = recording_save, recording_step
    try:
        for head in HEADS:
            config = PixelCNNConfig(head=head, **TINY)
            recording[0] = head
            train(config, _train_config(), _images(), out / head / "full", progress=False, dist=info)
            recording[0] = ""
            train(config, _train_config(), _images(), out / head / "resumed", stop_after=STOP, progress=False,
                  dist=info)
            train(config, _train_config(), _images(), out / head / "resumed", progress=False, dist=info)
        record = {"world_size": info.world_size, "saved": saved, "seen": seen}
        (out / f"rank{info.rank}.json").write_text(json.dumps(record))
        barrier(info)
    finally:
        shutdown(info)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> Path:
    """The worker's output folder after `torchrun --standalone --nproc-per-node 2`."""
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               __file__, str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def _log(run_dir: Path) -> np.ndarray:
    return np.loadtxt(run_dir / "train_log.csv", delimiter=",", skiprows=1, usecols=(0, 1))  # (steps, 2)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("variant", ["full", "resumed"])
def test_two_processes_equal_one(two_process_run, tmp_path, head, variant):
    """Final weights, EMA and logged losses of 2 x 4 images per step equal 1 x 8, also after a resume."""
    single = train(PixelCNNConfig(head=head, **TINY), _train_config(), _images(), tmp_path, progress=False)
    run_dir = two_process_run / head / variant
    a, b = load_checkpoint(single[STEPS]), load_checkpoint(run_dir / f"ckpt_{STEPS:07d}.pt")
    assert a["digest"] == b["digest"]
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()  # no DDP `module.` prefix
        for name in a[key]:
            torch.testing.assert_close(b[key][name], a[key][name], atol=1e-5, rtol=1e-4, msg=f"{key}.{name}")
    assert not torch.equal(a["model"]["head.proj.weight"], load_checkpoint(single[STOP])["model"]["head.proj.weight"])
    log_single, log_ddp = _log(tmp_path), _log(run_dir)
    np.testing.assert_array_equal(log_ddp[:, 0], np.arange(1, STEPS + 1))
    np.testing.assert_allclose(log_ddp[:, 1], log_single[:, 1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("head", HEADS)
def test_ranks_train_on_the_halves_of_the_single_process_batch(two_process_run, head):
    """Rank r's images and taus at every step are rows [4r, 4r + 4) of the one-process batch."""
    ranks = [json.loads((two_process_run / f"rank{r}.json").read_text())["seen"][head] for r in (0, 1)]
    batches = BatchSampler(_images(), None, GLOBAL_BATCH, torch.Generator().manual_seed(_train_config().seed), "cpu",
                           draw_tau=head == "quantile")
    assert len(ranks[0]) == len(ranks[1]) == STEPS
    for step in range(STEPS):
        batch = batches.draw()
        for r, rows in enumerate((slice(0, 4), slice(4, 8))):
            images, tau = ranks[r][step]
            assert images == _row_sums(batch.images[rows])
            if head == "quantile":
                np.testing.assert_allclose(tau, _row_sums(batch.tau[rows]), rtol=1e-12)
            else:
                assert tau is None and batch.tau is None


def test_only_rank_zero_writes(two_process_run):
    ranks = {r: json.loads((two_process_run / f"rank{r}.json").read_text()) for r in (0, 1)}
    assert all(record["world_size"] == 2 for record in ranks.values())
    assert ranks[1]["saved"] == []
    ckpts = [f"ckpt_{STOP:07d}.pt", f"ckpt_{STEPS:07d}.pt"]
    # per head: full (5, 10), interrupted (5), resumed (10)
    assert ranks[0]["saved"] == (ckpts + ckpts) * len(HEADS)
    for head in HEADS:
        for variant in ("full", "resumed"):
            files = sorted(p.name for p in (two_process_run / head / variant).iterdir())
            assert files == sorted(ckpts + ["config.json", "train_log.csv", TRAIN_TIMES]), files  # no temporary files


def test_shard_slice():
    assert [shard_slice(8, r, 2) for r in (0, 1)] == [slice(0, 4), slice(4, 8)]
    assert shard_slice(6, 0, 1) == slice(0, 6)
    with pytest.raises(ValueError, match="not divisible"):
        shard_slice(10, 0, 4)
    with pytest.raises(ValueError, match="rank"):
        shard_slice(8, 2, 2)


def test_indivisible_batch_is_refused_before_training(tmp_path):
    info = DistInfo(rank=0, world_size=3, local_rank=0, device="cpu")  # no group needed: train fails first
    with pytest.raises(ValueError, match="not divisible"):
        train(PixelCNNConfig(**TINY), _train_config(), _images(), tmp_path, progress=False, dist=info)


def test_single_process_without_torchrun(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = init_from_env("cpu")
    assert info == DistInfo(0, 1, 0, "cpu") and is_main(info) and is_main(None) and not info.distributed
    barrier(info)  # no-ops
    shutdown(info)


if __name__ == "__main__":  # the torchrun worker of `two_process_run`
    _worker(Path(sys.argv[1]))
