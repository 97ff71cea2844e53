"""The paper-scale profile (profiles/paper) builds the DAG the paper needs: both datasets, the
small and large models with their per-dataset schedules, Inception evaluation on 10,000
samples, GPU resources, torchrun for the multi-GPU models and DVC tracking of raw downloads.
A dry run only: the data, the GPUs and the Inception weights are not on this machine."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from repo_copy import copy_repo, snakemake


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("paper"))
    result = snakemake(repo, "--profile", "profiles/paper", "-n", "-p", "--resources", "gpu=8", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _train_commands(text: str) -> dict[str, str]:
    commands = {}
    for line in text.splitlines():
        match = re.search(r"train --dataset (\S+) .* --out-dir results/runs/\S+/(\S+)/seed-0 ", line)
        if match:
            commands[f"{match.group(1)}/{match.group(2)}"] = line
    return commands


def _train_config(command: str) -> dict:
    return json.loads(re.search(r"--train-config '([^']+)'", command).group(1))


def _model_config(command: str) -> dict:
    return json.loads(re.search(r"--model-config '([^']+)'", command).group(1))


def test_every_table1_model_is_trained_on_its_dataset(dry_run):
    assert set(_train_commands(dry_run)) == {
        "cifar10/pixelcnn", "cifar10/pixeliqn", "cifar10/pixelcnn_cond", "cifar10/pixeliqn_cond",
        "imagenet32/pixelcnn_large", "imagenet32/pixeliqn_large", "imagenet32/pixelcnn", "imagenet32/pixeliqn",
    }


def test_the_papers_hyperparameters_reach_the_training_jobs(dry_run):
    commands = _train_commands(dry_run)
    small = _model_config(commands["cifar10/pixeliqn"])
    assert (small["blocks"], small["filter_size"], small["planes"], small["output_planes"]) == (15, 5, 128, 1024)
    large = _model_config(commands["imagenet32/pixelcnn_large"])
    assert (large["blocks"], large["planes"]) == (20, 256)

    cnn_cifar = _train_config(commands["cifar10/pixelcnn"])
    assert cnn_cifar["optimizer"] == "rmsprop" and cnn_cifar["steps"] == 300_000 and cnn_cifar["batch_size"] == 32
    assert cnn_cifar["lr_boundaries"] == [120_000, 180_000] and cnn_cifar["lr_values"] == [1e-4, 3e-5, 1e-5]
    conditional = commands["cifar10/pixeliqn_cond"]  # the paper-scale pixeliqn with the class label
    assert _model_config(conditional) == small and "--class-conditional" in conditional
    assert _train_config(conditional) == _train_config(commands["cifar10/pixeliqn"])
    cnn_imagenet = _train_config(commands["imagenet32/pixelcnn"])  # dataset_overrides: constant 1e-4, 400K
    assert cnn_imagenet["lr_values"] == [] and cnn_imagenet["lr"] == 1e-4 and cnn_imagenet["steps"] == 400_000
    iqn = _train_config(commands["cifar10/pixeliqn"])
    assert (iqn["optimizer"], iqn["lr"], iqn["kappa"], iqn["ema_rate"]) == ("adam", 1e-4, 0.002, 0.9999)
    assert _train_config(commands["imagenet32/pixeliqn_large"])["batch_size"] == 128


def test_multi_gpu_models_run_under_torchrun_and_declare_their_gpus(dry_run):
    commands = _train_commands(dry_run)
    assert "torchrun --standalone --nproc_per_node 8 -m aiqn" in commands["imagenet32/pixelcnn_large"]
    assert "torchrun" not in commands["cifar10/pixelcnn"]
    assert re.search(r"rule train_imagenet32_pixeliqn_large:(?:\n .*)*\n\s+resources: .*gpu=8", dry_run)
    assert re.search(r"rule score_cifar10_pixeliqn:(?:\n .*)*\n\s+resources: .*gpu=1", dry_run)


def test_evaluation_uses_inception_on_10000_samples_and_tracks_raw_data(dry_run):
    assert "reference-stats --dataset cifar10 --extractor data/raw/inception/weights-inception-2015-12-05-6726825d.pth" \
        in dry_run
    assert "results/reference/cifar10/inception-v3_10000.npz" in dry_run
    assert "sample --checkpoint results/runs/cifar10/pixeliqn/seed-0/ckpt_0300000.pt --n 10000" in dry_run
    assert "download --group inception --file weights-inception-2015-12-05-6726825d.pth" in dry_run
    for group in ("cifar10", "imagenet32", "inception"):
        assert f"dvc add --quiet data/raw/{group}" in dry_run


def test_a_bad_dataset_override_names_the_model_and_dataset(tmp_path):
    repo = copy_repo(tmp_path)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["models"]["pixeliqn"]["dataset_overrides"] = {"digits": {"train": {"optimizer": "adagrad"}}}
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    result = snakemake(repo, "-n", "--cores", "1")
    assert result.returncode != 0
    assert "models.pixeliqn with dataset_overrides.digits: train.optimizer: 'adagrad'" in result.stdout + result.stderr


def test_the_papers_search_has_500_trials_per_model_and_feeds_the_cifar_training(tmp_path):
    repo = copy_repo(tmp_path)
    result = snakemake(repo, "--profile", "profiles/paper", "-n", "-p", "--configfile", "profiles/paper/params.yaml",
                       "profiles/paper/sweep.yaml", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = result.stdout + result.stderr
    assert re.search(r"^sweep_trial\s+1000$", text, re.MULTILINE)
    assert "--steps 100000 --budgets 100000 --n-samples 2500" in text
    assert "--selected results/sweeps/cifar10/pixeliqn/selected.json" in text
    assert "--selected results/sweeps/imagenet32" not in text  # the search is on CIFAR-10 only


def test_verified_raw_files_are_recorded_with_dvc_add(tmp_path):
    """track_raw: once a group's files are in place (here: a prepared cifar10 stand-in), `dvc add`
    writes data/raw/<group>.dvc for git; the files themselves stay out of git (.gitignore)."""
    import subprocess

    repo = copy_repo(tmp_path)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)  # the copy has .dvc/config: a DVC repo
    raw = repo / "data/raw/cifar10/cifar-10-python.tar.gz"
    raw.parent.mkdir(parents=True)
    raw.write_bytes(b"stand-in archive")
    processed = repo / "data/processed/cifar10"
    processed.mkdir(parents=True)
    for name in ("train.npz", "test.npz", "meta.json"):
        (processed / name).write_text("{}")
    result = snakemake(repo, "--cores", "1", "data/raw/cifar10.dvc", "--configfile", "profiles/paper/params.yaml",
                       timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = yaml.safe_load((repo / "data/raw/cifar10.dvc").read_text())
    assert record["outs"][0]["path"] == "cifar10" and record["outs"][0]["nfiles"] == 1
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "data/raw"], cwd=repo,
                            capture_output=True, text=True, check=True).stdout
    assert "data/raw/cifar10.dvc" in status and "cifar-10-python.tar.gz" not in status
