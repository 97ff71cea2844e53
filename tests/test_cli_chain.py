"""`aiqn chain`: several verbs in one process (rules/score.smk runs a model's sample and evaluate
calls this way) give the same outputs as one process per verb, and a bad call anywhere in the
chain is refused before the first call runs."""

import json
import subprocess
import sys

import numpy as np
import pytest

from aiqn.cli import main

TINY = json.dumps({"head": "categorical", "blocks": 1, "filter_size": 3, "planes": 4, "output_planes": 8})


@pytest.fixture
def checkpoint(digits_dir, tmp_path):
    train_config = json.dumps({"steps": 3, "batch_size": 4, "checkpoint_steps": [3], "optimizer": "adam", "lr": 1e-3})
    main(["train", "--dataset", "digits", "--data", str(digits_dir / "train.npz"), "--model-config", TINY,
          "--train-config", train_config, "--state-dir", str(tmp_path / "state"), "--out-dir",
          str(tmp_path / "run"), "--device", "cpu", "--no-progress"])
    return tmp_path / "run" / "ckpt_0000003.pt"


def _sample(checkpoint, out, seed, shards):
    return ["sample", "--checkpoint", str(checkpoint), "--n", "6", "--batch-size", "3", "--seed", str(seed),
            "--shard-dir", str(shards), "--device", "cpu", "--out", str(out), "--no-progress"]


def _aiqn(*args):
    return subprocess.run([sys.executable, "-m", "aiqn", *args], capture_output=True, text=True, timeout=300)


def test_chained_calls_write_what_separate_processes_write(checkpoint, tmp_path):
    separate = [_aiqn(*_sample(checkpoint, tmp_path / f"alone_{seed}.npz", seed, tmp_path / f"s{seed}"))
                for seed in (1, 2)]
    assert all(result.returncode == 0 for result in separate), [r.stderr for r in separate]
    chained = _aiqn("chain", *_sample(checkpoint, tmp_path / "chained_1.npz", 1, tmp_path / "c1"), "::",
                    *_sample(checkpoint, tmp_path / "chained_2.npz", 2, tmp_path / "c2"))
    assert chained.returncode == 0, chained.stderr
    assert "call 2 of 2: sample" in chained.stderr
    for seed in (1, 2):
        with np.load(tmp_path / f"alone_{seed}.npz") as alone, np.load(tmp_path / f"chained_{seed}.npz") as chain:
            assert np.array_equal(alone["images"], chain["images"])
    with np.load(tmp_path / "chained_1.npz") as one, np.load(tmp_path / "chained_2.npz") as two:
        assert not np.array_equal(one["images"], two["images"])  # each call kept its own seed


def test_a_bad_call_later_in_the_chain_stops_it_before_anything_runs(checkpoint, tmp_path):
    result = _aiqn("chain", *_sample(checkpoint, tmp_path / "first.npz", 1, tmp_path / "s"), "::",
                   *_sample(checkpoint, tmp_path / "second.npz", 2, tmp_path / "t"), "--no-such-option")
    assert result.returncode == 2 and "unrecognized arguments: --no-such-option" in result.stderr
    assert not (tmp_path / "first.npz").exists() and not (tmp_path / "s").exists()


def test_a_chain_needs_a_verb_and_cannot_nest(tmp_path):
    assert "no verb given" in _aiqn("chain").stderr
    assert "cannot be another chain" in _aiqn("chain", "chain", "table", "--help").stderr
