"""Class-conditional models (the paper's PixelCNN* and PixelIQN*) through the CLI: `train
--class-conditional` takes the dataset's number of classes, `sample` draws labels uniformly and
the class each image was generated with is kept; a dataset without labels is refused."""

import json

import numpy as np
import pytest

from aiqn.cli import main

TINY = json.dumps({"head": "quantile", "blocks": 1, "filter_size": 3, "planes": 4, "output_planes": 8})


def _train(digits_dir, tmp_path, *extra):
    train_config = json.dumps({"steps": 3, "batch_size": 4, "checkpoint_steps": [3], "optimizer": "adam",
                               "lr": 1e-3})
    main(["train", "--dataset", "digits", "--data", str(digits_dir / "train.npz"), "--model-config", TINY,
          "--train-config", train_config, "--state-dir", str(tmp_path / "state"), "--out-dir",
          str(tmp_path / "run"), "--device", "cpu", "--no-progress", *extra])
    return tmp_path / "run"


def test_class_conditional_training_and_uniform_labels(digits_dir, tmp_path):
    run = _train(digits_dir, tmp_path, "--class-conditional")
    assert json.loads((run / "config.json").read_text())["model"]["num_classes"] == 10  # digits' classes
    out = tmp_path / "samples.npz"
    main(["sample", "--checkpoint", str(run / "ckpt_0000003.pt"), "--n", "200", "--batch-size", "100",
          "--seed", "1", "--shard-dir", str(tmp_path / "shards"), "--device", "cpu", "--out", str(out),
          "--no-progress"])
    with np.load(out) as arrays:
        labels = arrays["labels"]
    assert labels.shape == (200,) and set(labels.tolist()) == set(range(10))  # every class drawn
    counts = np.bincount(labels, minlength=10)
    assert counts.min() >= 8 and counts.max() <= 35  # uniform: about 20 each


def test_unconditional_training_keeps_no_classes(digits_dir, tmp_path):
    run = _train(digits_dir, tmp_path)
    assert json.loads((run / "config.json").read_text())["model"]["num_classes"] == 0


def test_dataset_without_labels_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="imagenet32 has no class labels"):
        main(["train", "--dataset", "imagenet32", "--data", str(tmp_path / "absent.npz"), "--model-config", TINY,
              "--train-config", "{}", "--class-conditional", "--state-dir", str(tmp_path / "s"),
              "--out-dir", str(tmp_path / "o"), "--device", "cpu"])


def _dry_run_commands(repo, *args):
    from repo_copy import snakemake

    result = snakemake(repo, *args, "--dry-run", "--printshellcmds", "--forceall", timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_a_variant_trains_its_base_as_a_profile_overlays_it_with_the_base_sweep_choice(tmp_path):
    from repo_copy import copy_repo

    repo = copy_repo(tmp_path)
    out = _dry_run_commands(repo, "--profile", "profiles/ci")
    command = next(line for line in out.splitlines() if "--out-dir results/runs/digits/pixeliqn_cond/seed-0 " in line)
    base = next(line for line in out.splitlines() if "--out-dir results/runs/digits/pixeliqn/seed-0 " in line)
    config = lambda line: line.split("--model-config ")[1].split(" --train-config")[0]  # noqa: E731
    assert config(command) == config(base) and '"planes":16' in config(command)  # profiles/ci's overlay
    assert "--class-conditional" in command and "--class-conditional" not in base
    assert "--selected results/sweeps/digits/pixeliqn/selected.json" in command  # the base model's sweep
    assert "reports/figures/photos32_pixeliqn_cond_classes.png" in out  # the per-class grid, both datasets
    assert "--variants pixelcnn_cond=pixelcnn pixeliqn_cond=pixeliqn" in out  # dotted curves in the base colour


def test_variant_of_an_unknown_model_names_the_key(tmp_path):
    import yaml
    from repo_copy import copy_repo, snakemake

    repo = copy_repo(tmp_path)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["models"]["pixeliqn_cond"]["variant_of"] = "pixeliqn_typo"
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    result = snakemake(repo, "--cores", "1", "--dry-run", timeout=120)
    assert result.returncode != 0
    assert "models.pixeliqn_cond.variant_of is 'pixeliqn_typo'" in result.stdout + result.stderr


def test_conditional_bits_per_dim_is_the_nll_given_each_images_label():
    import math

    import torch

    from aiqn.nets.likelihood import bits_per_dim
    from aiqn.nets import GatedPixelCNN, PixelCNNConfig, to_unit

    torch.manual_seed(0)
    model = GatedPixelCNN(PixelCNNConfig(blocks=1, planes=4, output_planes=8, num_classes=3)).eval()
    images = np.random.default_rng(0).integers(0, 17, (5, 1, 8, 8), dtype=np.uint8)
    labels = np.array([0, 1, 2, 1, 0])
    with torch.no_grad():  # by hand: -log softmax at each true level, with each image's own label
        x = torch.from_numpy(images).long()
        logits = model(to_unit(x, 17), class_labels=torch.from_numpy(labels))  # (B, C, L, H, W)
        logp = torch.log_softmax(logits.double(), dim=2).gather(2, x.unsqueeze(2))  # (B, C, 1, H, W)
    expected = float(-logp.mean()) / math.log(2.0)
    assert bits_per_dim(model, images, batch_size=2, labels=labels) == pytest.approx(expected, rel=1e-5)
    assert bits_per_dim(model, images, batch_size=2, labels=(labels + 1) % 3) != pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="class labels"):
        bits_per_dim(model, images)
