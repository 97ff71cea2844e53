"""Checkpoints that travel through DVC remotes (issue 17): every loader reads with weights_only=True
and refuses a file whose pickle would run code, a checkpoint of the older format is refused with
the command that converts it and resumes exactly once converted, and identical trainings and
samplings write byte-identical files."""

from __future__ import annotations

import builtins
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from aiqn.cli import main
from aiqn.core.checkpoint import UnsafeCheckpoint, latest_checkpoint, load_checkpoint, restore_rng, upgrade_checkpoint
from aiqn.core.runinfo import TRAIN_TIMES, is_runinfo, read_runinfo
from aiqn.metrics.features import load_classifier
from aiqn.nets import model_from_checkpoint

TINY = json.dumps({"head": "categorical", "blocks": 1, "filter_size": 3, "planes": 4, "output_planes": 8})
TRAIN = json.dumps({"steps": 4, "batch_size": 4, "checkpoint_steps": [2, 4], "optimizer": "adam", "lr": 1e-3,
                    "seed": 3})


class _RunsCode:
    """Unpickling this calls builtins.open(marker, "w"): a stand-in for any code a tampered file runs."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def _train(digits_dir, root: Path) -> Path:
    main(["train", "--dataset", "digits", "--data", str(digits_dir / "train.npz"), "--model-config", TINY,
          "--train-config", TRAIN, "--state-dir", str(root / "state"), "--out-dir", str(root / "run"),
          "--device", "cpu", "--no-progress"])
    return root


def test_every_loader_refuses_a_checkpoint_whose_pickle_runs_code(tmp_path):
    marker = tmp_path / "code-ran"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    tampered = run_dir / "ckpt_0000004.pt"
    torch.save({"kind": "pixelcnn", "step": 4, "digest": "x", "payload": _RunsCode(marker)}, tampered)
    with pytest.raises(UnsafeCheckpoint, match=r"ckpt_0000004.pt holds more than tensors .*weights_only=True"):
        load_checkpoint(tampered)
    with pytest.raises(UnsafeCheckpoint):
        latest_checkpoint(run_dir, "x")  # the resume path
    with pytest.raises(UnsafeCheckpoint):
        load_classifier(tampered)  # the feature extractor's loader
    with pytest.raises(UnsafeCheckpoint):
        model_from_checkpoint(tampered)  # every verb's model loader (sample, evaluate, inpaint, ...)
    assert not marker.exists(), "a loader ran the checkpoint's code"
    torch.load(tampered, weights_only=False)  # the check is real: an unsafe load does run it
    assert marker.exists()


def test_an_older_checkpoint_is_refused_with_the_fix_and_resumes_exactly_once_converted(digits_dir, tmp_path):
    full = _train(digits_dir, tmp_path / "full")
    old = _train(digits_dir, tmp_path / "old")
    path = old / "state" / "ckpt_0000002.pt"
    ckpt = load_checkpoint(path)
    name, keys, pos, has_gauss, cached = ckpt["rng"]["numpy"]
    ckpt["rng"]["numpy"] = (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached)  # as written before
    torch.save(ckpt, path)
    with pytest.raises(UnsafeCheckpoint, match=rf"python -m aiqn upgrade-checkpoint {path}"):
        load_checkpoint(path)
    assert upgrade_checkpoint(path) and not upgrade_checkpoint(path)  # converted once, then left alone
    restore_rng(load_checkpoint(path)["rng"], torch.Generator())
    assert np.array_equal(np.random.get_state()[1], ckpt["rng"]["numpy"][1])
    for stale in (old / "state" / "ckpt_0000004.pt", old / "run" / "ckpt_0000004.pt"):
        stale.unlink()  # resume the rest of the run from the converted step-2 checkpoint
    main(["train", "--dataset", "digits", "--data", str(digits_dir / "train.npz"), "--model-config", TINY,
          "--train-config", TRAIN, "--state-dir", str(old / "state"), "--out-dir", str(old / "run"),
          "--device", "cpu", "--no-progress"])
    a, b = load_checkpoint(full / "run" / "ckpt_0000004.pt"), load_checkpoint(old / "run" / "ckpt_0000004.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def _digests(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` but the run facts (*.runinfo.*: host, wall seconds)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not is_runinfo(p)}


def test_identical_trainings_write_identical_bytes(digits_dir, tmp_path, monkeypatch):
    """Train and sample the same tiny model in two folders: every file is the same bytes (checkpoints:
    torch.save through a handle, no temporary name in the zip; samples: no write time in the .npz;
    train_log.csv and the JSON records: no wall seconds or host, which are in the run facts). Paths
    are relative to each folder, as Snakemake gives them relative to the repository."""
    for root in (tmp_path / "a", tmp_path / "b"):
        (root / "data").mkdir(parents=True)
        shutil.copy(digits_dir / "train.npz", root / "data" / "train.npz")
        monkeypatch.chdir(root)
        main(["train", "--dataset", "digits", "--data", "data/train.npz", "--model-config", TINY,
              "--train-config", TRAIN, "--state-dir", "state", "--out-dir", "run", "--device", "cpu",
              "--no-progress"])
        main(["sample", "--checkpoint", "run/ckpt_0000004.pt", "--n", "6", "--batch-size", "3",
              "--seed", "1", "--out", "samples.npz", "--device", "cpu", "--no-progress"])
    first, second = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert {"run/ckpt_0000004.pt", "state/ckpt_0000002.pt", "run/config.json", "run/train_log.csv",
            "samples.npz", "samples.npz.json"} <= set(first)
    differing = [name for name in first if first[name] != second.get(name)]
    assert set(first) == set(second) and not differing, f"files whose bytes differ: {differing}"
    # the run facts exist, apart: the log's wall seconds per step and the samples' host
    times = pd.read_csv(tmp_path / "a" / "run" / TRAIN_TIMES)
    assert list(times.columns) == ["step", "seconds"] and list(times.step) == [1, 2, 3, 4]
    assert "host" in read_runinfo(tmp_path / "a" / "samples.npz")
    assert "host" not in json.loads((tmp_path / "a" / "samples.npz.json").read_text())["environment"]


def test_a_resumed_training_writes_the_uninterrupted_ones_bytes(digits_dir, tmp_path, monkeypatch):
    """Resume from the step-2 checkpoint after a kill that left the log with rows past it and a row
    cut short: the log and the final checkpoint are the uninterrupted run's bytes (the log used to
    come back with other line ends: csv's \\r\\n rows were rewritten with \\n)."""
    roots = {}
    for name in ("whole", "killed"):
        root = roots[name] = tmp_path / name
        (root / "data").mkdir(parents=True)
        shutil.copy(digits_dir / "train.npz", root / "data" / "train.npz")
        monkeypatch.chdir(root)
        train = ["train", "--dataset", "digits", "--data", "data/train.npz", "--model-config", TINY,
                 "--train-config", TRAIN, "--state-dir", "state", "--out-dir", "run", "--device", "cpu",
                 "--no-progress"]
        main(train)
        if name == "killed":  # as if killed after step 4's log rows, before its checkpoint
            for stale in ("state/ckpt_0000004.pt", "run/ckpt_0000004.pt", "run/train_log.csv"):
                Path(stale).unlink()
            with open("state/train_log.csv", "ab") as log:
                log.write(b"5,0.1")  # a row cut short
            main(train)
    for name in ("run/ckpt_0000004.pt", "run/train_log.csv", "state/train_log.csv"):
        assert (roots["whole"] / name).read_bytes() == (roots["killed"] / name).read_bytes(), name
    assert b"\r" not in (roots["whole"] / "run/train_log.csv").read_bytes()
