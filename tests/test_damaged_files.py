"""Damaged pipeline files (issue 31): every reader names the file, says what is wrong and gives the fix
(aiqn.core.damage); a resumed training moves a damaged newest checkpoint aside and ends with the
uninterrupted run's bytes; a damaged sampling shard is drawn again; a full disk keeps the previous file
and leaves no temporary file behind."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from aiqn.cli import main
from aiqn.core.checkpoint import latest_checkpoint, load_checkpoint
from aiqn.core.damage import DamagedFile, dvc_tracked, fix_for
from aiqn.core.io import (DiskFull, read_csv, read_json, save_npz_atomic, torch_save_atomic, write_json,
                          write_text_atomic)
from aiqn.core.publish import read_samples, write_samples
from aiqn.data import load_split
from aiqn.metrics import load_statistics
from aiqn.metrics.features import load_classifier
from aiqn.metrics.frechet import save_statistics
from aiqn.metrics.scoring import Comparison, _reference_sets
from aiqn.nets import PixelCNNConfig, build_model, sampling
from aiqn.nets.sampling import generate
from aiqn.report.tables import load_metric_records

TINY = json.dumps({"head": "categorical", "blocks": 1, "filter_size": 3, "planes": 4, "output_planes": 8})
TRAIN = json.dumps({"steps": 4, "batch_size": 4, "checkpoint_steps": [2, 4], "optimizer": "adam", "lr": 1e-3,
                    "seed": 3})
RNG = np.random.default_rng(0)


# Each kind of file: (what the message calls it, how the project writes a good one, how it reads one).
def _checkpoint(path):
    torch_save_atomic({"kind": "pixelcnn", "step": 1, "weights": torch.arange(5000.0)}, path)


def _split(path):
    save_npz_atomic(path, images=RNG.integers(0, 17, (20, 1, 8, 8), dtype=np.uint8),
                    labels=np.arange(20, dtype=np.int64))


def _samples(path):
    checkpoint = path.with_name("ckpt.pt")
    _checkpoint(checkpoint)
    write_samples(str(path), RNG.integers(0, 17, (20, 1, 8, 8), dtype=np.uint8), None, str(checkpoint), 1, "cpu")


def _statistics(path):
    save_statistics(path, np.zeros(4), np.eye(4), extractor="digits classifier")


def _features(path, meta=None):
    meta = meta or json.dumps({"extractor_checkpoint": {"sha256": "abc"}})
    save_npz_atomic(path, train=np.ones((4, 3)), test=np.ones((2, 3)), heldout_pixel=np.zeros(2),
                    heldout_feature=np.zeros(2), meta=np.array(meta))


def _read_features(path):
    return _reference_sets.__wrapped__(str(path), Comparison(n=1), "abc", "classifier.pt", True)


def _metrics(path):
    write_json(path, {"dataset": "digits", "model": "pixelcnn", "metrics": [{"metric": "fid", "value": 1.0}]})


READERS = {
    "checkpoint": ("a checkpoint", _checkpoint, load_checkpoint),
    "split": ("a prepared split", _split, load_split),
    "samples": ("samples", _samples, read_samples),
    "statistics": ("reference statistics", _statistics, load_statistics),
    "features": ("reference features", _features, _read_features),
    "metrics": ("a metrics record", _metrics, lambda path: load_metric_records([path])),
    "provenance": ("a JSON record", _metrics, read_json),
    "table": ("a table", lambda path: write_text_atomic(path, "step,loss\n1,0.5\n2,0.4\n"), read_csv),
    "classifier": ("classifier weights", _checkpoint, load_classifier),
}


def truncate(path, size=None):
    data = path.read_bytes()
    path.write_bytes(data[: size if size is not None else len(data) // 2])


def empty(path):
    path.write_bytes(b"")


def random_bytes(path):
    path.write_bytes(np.random.default_rng(1).bytes(3000))


def wrong_members(path):
    save_npz_atomic(path, pictures=np.zeros((2, 1, 8, 8), np.uint8), labels=np.zeros(2, np.int64))


def float_images(path):
    save_npz_atomic(path, images=np.zeros((20, 1, 8, 8), np.float32), labels=np.arange(20, dtype=np.int64))


def flat_images(path):
    save_npz_atomic(path, images=np.zeros((20, 64), np.uint8), labels=np.arange(20, dtype=np.int64))


def one_dim_sigma(path):
    save_npz_atomic(path, mu=np.zeros(4), sigma=np.zeros(4), meta=np.array("{}"))


def bad_json(path):
    path.write_text('{\n  "dataset": "digits",\n  "metrics": [\n')


def edited_images(path):  # a valid .npz, but not the bytes its record's sha256 names
    save_npz_atomic(path, images=np.ones((20, 1, 8, 8), np.uint8), labels=np.full(20, -1))


def flip_byte(path, at: int):
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def flipped_member_byte(path):  # inside a deflated member: zlib (or zip's CRC) catches it
    flip_byte(path, 60)


def without_heldout(path):
    save_npz_atomic(path, train=np.zeros((4, 3)), test=np.zeros((2, 3)), meta=np.array("{}"))


def bad_meta(path):
    _features(path, meta="{extractor")


def truncated_late(path):  # most of the file there, the zip's central directory cut off
    truncate(path, len(path.read_bytes()) - 30)


CASES = [
    ("checkpoint", truncate, r"truncated \(a zip archive without its end record"),
    ("checkpoint", empty, r"empty \(0 bytes\)"),
    ("checkpoint", random_bytes, r"not a zip archive"),
    ("checkpoint", truncated_late, r"truncated"),
    ("checkpoint", lambda path: flip_byte(path, 8000), r"a member is corrupted \(member 'archive/data/0' fails its CRC"),
    ("split", truncate, r"truncated"),
    ("split", empty, r"empty \(0 bytes\)"),
    ("split", wrong_members, r"it has no array 'images'"),
    ("split", float_images, r"array 'images' has dtype float32, not unsigned integer"),
    ("split", flat_images, r"array 'images' has shape \(20, 64\), not 4 dimensions"),
    ("samples", random_bytes, r"not a zip archive"),
    ("samples", edited_images, r"checksum mismatch: its sha256 is .*samples.npz.json records"),
    ("samples", flipped_member_byte, r"a member is corrupted \(Error -3 while decompressing"),
    ("features", without_heldout, r"it has no array 'heldout_pixel'"),
    ("features", bad_meta, r"bad JSON at line 1, column 2"),
    ("statistics", truncate, r"truncated"),
    ("statistics", one_dim_sigma, r"array 'sigma' has shape \(4,\), not 2 dimensions"),
    ("metrics", bad_json, r"bad JSON at line 4, column 1"),
    ("metrics", empty, r"empty \(0 bytes\)"),
    ("provenance", random_bytes, r"not text \(a byte that is not UTF-8|bad JSON"),
    ("table", empty, r"empty \(0 bytes\)"),
    ("table", random_bytes, r"not text \(a byte that is not UTF-8"),
    ("classifier", lambda path: None, r"it has no entry 'config'"),  # a checkpoint of another kind
]


@pytest.mark.parametrize("kind, damage, problem", CASES,
                         ids=[f"{kind}-{damage.__name__}-{i}" for i, (kind, damage, _) in enumerate(CASES)])
def test_a_damaged_file_is_named_with_what_is_wrong_and_the_fix(tmp_path, kind, damage, problem):
    what, write, read = READERS[kind]
    suffix = ".json" if kind in ("metrics", "provenance") else ".csv" if kind == "table" else ".pt" if kind in ("checkpoint", "classifier") else ".npz"
    path = tmp_path / f"{kind}{suffix}"
    if kind == "samples":
        path = tmp_path / "samples.npz"
    write(path)
    if kind != "classifier":  # that case: a good checkpoint, but not of a classifier
        read(path)
    damage(path)
    with pytest.raises(DamagedFile) as raised:
        read(path)
    message = str(raised.value)
    assert message.startswith(f"{path} ({what}) is damaged: "), message
    assert raised.value.path == str(path)
    assert re.search(problem, message), message
    assert f"Fix: delete it and rerun the rule that writes it: `rm {path} && snakemake --cores all {path}`" in message


def test_a_dvc_tracked_file_is_restored_with_dvc_checkout(tmp_path):
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages:\n  train:\n    cmd: x\n    deps:\n"
                                       "    - path: data/in.npz\n    outs:\n    - path: results/runs\n")
    out = tmp_path / "results" / "runs" / "seed-0" / "ckpt_0000004.pt"
    assert dvc_tracked(out) and not dvc_tracked(tmp_path / "data" / "in.npz")
    assert fix_for(out) == (f"restore the committed copy with `dvc checkout {out}` (or `dvc pull {out}` if the "
                            "cache lacks it too)")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "raw.dvc").write_text("outs:\n- path: raw\n")  # `dvc add data/raw`
    assert dvc_tracked(tmp_path / "data" / "raw" / "digits.csv")


def test_no_reader_lets_a_library_error_through(tmp_path):
    """The errors the issue names, one per reader family: none escapes as itself."""
    bare = (OSError, zipfile.BadZipFile, json.JSONDecodeError, KeyError, EOFError)
    for kind, (_, write, read) in READERS.items():
        for damage in (truncate, empty, random_bytes) if kind != "table" else (empty, random_bytes):
            # (a CSV cut at a line end is a valid, shorter table: nothing in its bytes says otherwise)
            path = tmp_path / f"{kind}-{damage.__name__}.{'json' if kind in ('metrics', 'provenance') else 'npz'}"
            write(path)
            damage(path)
            try:
                read(path)
            except DamagedFile:
                continue
            except bare as error:
                pytest.fail(f"{kind}, {damage.__name__}: {type(error).__name__}: {error}")
            pytest.fail(f"{kind}, {damage.__name__}: read without an error")


def _train_args() -> list[str]:
    return ["train", "--dataset", "digits", "--data", "data/train.npz", "--model-config", TINY, "--train-config",
            TRAIN, "--state-dir", "state", "--out-dir", "run", "--device", "cpu", "--no-progress"]


def test_a_resume_moves_a_damaged_newest_checkpoint_aside_and_ends_with_the_uninterrupted_bytes(
        digits_dir, tmp_path, monkeypatch, caplog):
    roots = {}
    for name in ("whole", "damaged"):
        root = roots[name] = tmp_path / name
        (root / "data").mkdir(parents=True)
        shutil.copy(digits_dir / "train.npz", root / "data" / "train.npz")
        monkeypatch.chdir(root)
        main(_train_args())
        if name == "damaged":  # a copy cut short: step 4's checkpoint holds 20,000 bytes (a file of its own)
            newest = Path("state/ckpt_0000004.pt")
            data = newest.read_bytes()
            for stale in (newest, Path("run/ckpt_0000004.pt"), Path("run/train_log.csv")):
                stale.unlink()
            newest.write_bytes(data[:20_000])
            with caplog.at_level("WARNING"):
                main(_train_args())
            assert Path("state/ckpt_0000004.pt.damaged").read_bytes() == data[:20_000]
            warned = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
            assert len(warned) == 1 and "state/ckpt_0000004.pt is damaged (truncated" in warned[0], warned
    for name in ("run/ckpt_0000004.pt", "run/ckpt_0000002.pt", "run/train_log.csv", "state/train_log.csv"):
        assert (roots["whole"] / name).read_bytes() == (roots["damaged"] / name).read_bytes(), name


def test_latest_checkpoint_skips_every_damaged_one(tmp_path):
    for step in (2, 4, 6):
        torch_save_atomic({"step": step, "digest": "d", "weights": torch.zeros(3000)}, tmp_path / f"ckpt_{step:07d}.pt")
    truncate(tmp_path / "ckpt_0000006.pt")
    empty(tmp_path / "ckpt_0000004.pt")
    assert latest_checkpoint(tmp_path, "d") == tmp_path / "ckpt_0000002.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_0000002.pt", "ckpt_0000004.pt.damaged",
                                                          "ckpt_0000006.pt.damaged"]


@pytest.mark.parametrize("damage", [truncate, empty, random_bytes, wrong_members])
def test_a_damaged_sampling_shard_is_drawn_again(tmp_path, damage, caplog):
    torch.manual_seed(0)
    model = build_model(PixelCNNConfig(height=4, width=4, blocks=1, planes=4, output_planes=8)).eval()
    key = {"ckpt": "x"}
    reference = generate(model, 6, batch_size=4, seed=5, shard_dir=tmp_path, shard_key=key, progress=False)
    damage(tmp_path / "shard_00001.npz")
    calls = []
    real = sampling.sampler("cached")

    def counting(model, noise, **kw):
        calls.append(len(noise))
        return real(model, noise, **kw)

    with caplog.at_level("WARNING"), pytest.MonkeyPatch.context() as patch:
        patch.setattr(sampling, "sampler", lambda method: counting)
        again = generate(model, 6, batch_size=4, seed=5, shard_dir=tmp_path, shard_key=key, progress=False)
    assert calls == [2], "only the damaged shard is drawn again"
    np.testing.assert_array_equal(again, reference)
    assert any("shard_00001.npz is damaged" in r.getMessage() for r in caplog.records)


class _FillsUp:
    """A file handle whose disk holds `room` more bytes: a write past it fails with ENOSPC."""

    def __init__(self, handle, room: int):
        self.handle, self.room = handle, room

    def write(self, data):
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


WRITERS = {
    "checkpoint": lambda path, n: torch_save_atomic({"weights": torch.zeros(n)}, path),
    "shard": lambda path, n: save_npz_atomic(path, images=np.arange(n, dtype=np.float32)),
    "json": lambda path, n: write_json(path, {"values": list(range(n))}),
}


@pytest.mark.parametrize("kind", list(WRITERS))
def test_a_write_that_fills_the_disk_keeps_the_previous_file(tmp_path, monkeypatch, kind):
    import aiqn.core.io as io

    path = tmp_path / f"out.{kind}"
    WRITERS[kind](path, 10)
    before = path.read_bytes()
    real_open = open
    monkeypatch.setattr(io, "open", lambda *a, **k: _FillsUp(real_open(*a, **k), room=2000), raising=False)
    with pytest.raises(DiskFull, match=rf"the disk is full while writing {path} .*the previous file is kept"):
        WRITERS[kind](path, 100_000)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name], "no temporary file is left"


def test_a_full_file_system_keeps_the_previous_checkpoint(tmp_path):
    """The same on a real 1 MB file system (tmpfs; needs root)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        path = disk / "ckpt_0000002.pt"
        torch_save_atomic({"weights": torch.zeros(1000)}, path)
        before = path.read_bytes()
        with pytest.raises(DiskFull, match="the disk is full while writing"):
            torch_save_atomic({"weights": torch.zeros(1_000_000)}, path)  # 4 MB onto 1 MB
        assert path.read_bytes() == before
        assert [p.name for p in disk.iterdir()] == [path.name]
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_fault_injections_damage_cuts_an_unfinished_trainings_newest_checkpoint(tmp_path):
    import random
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    try:
        from fault_injection import damage_newest
    finally:
        sys.path.pop(0)
    good = bytes(range(256)) * 40
    finished, cut_short = tmp_path / "state/train/digits/pixelcnn/seed-0", tmp_path / "state/train/digits/pixelcnn/seed-1"
    published = tmp_path / "results/runs/digits/pixelcnn/seed-0"
    for folder in (finished, cut_short, published):
        folder.mkdir(parents=True)
    for step in (50, 150):
        (finished / f"ckpt_{step:07d}.pt").write_bytes(good)
        os.link(finished / f"ckpt_{step:07d}.pt", published / f"ckpt_{step:07d}.pt")  # as `publish` links them
    (cut_short / "ckpt_0000050.pt").write_bytes(good)
    damaged = damage_newest(tmp_path, random.Random(0))
    assert damaged == "state/train/digits/pixelcnn/seed-1/ckpt_0000050.pt"  # the only unfinished training
    assert 0 < (tmp_path / damaged).stat().st_size < len(good)
    assert all(path.read_bytes() == good for path in (*finished.iterdir(), *published.iterdir()))
    shutil.rmtree(cut_short)
    shard = tmp_path / "state/samples/digits/pixelcnn/seed-0/1500/shard_00000.npz"
    shard.parent.mkdir(parents=True)
    shard.write_bytes(good)
    assert damage_newest(tmp_path, random.Random(0)) == str(shard.relative_to(tmp_path))  # no unfinished one
    assert damage_newest(tmp_path / "nothing-here", random.Random(0)) is None
