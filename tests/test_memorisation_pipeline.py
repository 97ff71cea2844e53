"""The memorisation check and the N-vs-N floor through the verbs the rules call (prepare,
train-classifier, reference-stats, reference-features, evaluate-real) on the real digits, and the
scoring function `evaluate` calls on two stand-in "models": one that returns training images and
one that returns held-out images."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from aiqn.data import load_split
from aiqn.metrics.scoring import Comparison, load_extractor, load_reference_sets, score_against_references


def aiqn(cwd, *args):
    result = subprocess.run([sys.executable, "-m", "aiqn", "--threads", "1", *args], cwd=cwd, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    root = tmp_path_factory.mktemp("memorisation")
    data = root / "data"
    aiqn(root, "prepare", "--dataset", "digits", "--raw-dir", str(root / "raw"), "--out-dir", str(data),
         "--options", json.dumps({"test_fraction": 0.2, "split_seed": 0}))
    train, test = str(data / "train.npz"), str(data / "test.npz")
    aiqn(root, "train-classifier", "--dataset", "digits", "--train", train, "--test", test, "--config",
         json.dumps({"steps": 200, "hidden": 32}), "--out", str(root / "clf.pt"), "--report", str(root / "clf.json"))
    extractor = ["--extractor", str(root / "clf.pt"), "--extractor-name", "clf", "--extractor-kind", "classifier"]
    aiqn(root, "reference-stats", *extractor, "--dataset", "digits", "--data", train, "--n", "500",
         "--out", str(root / "ref.npz"))
    aiqn(root, "reference-features", *extractor, "--dataset", "digits", "--train", train, "--test", test,
         "--out", str(root / "features.npz"))
    comparison = ["--features", str(root / "features.npz"), "--train", train, "--n-compare", "300",
                  "--kid-subsets", "20", "--kid-subset-size", "100", "--bootstrap", "20"]
    aiqn(root, "evaluate-real", *extractor, *comparison, "--dataset", "digits", "--test", test, "--reference",
         str(root / "ref.npz"), "--dataset-meta", str(data / "meta.json"), "--out", str(root / "real.json"))
    floor = {m["metric"]: m for m in json.loads((root / "real.json").read_text())["metrics"]}

    settings = Comparison(n=300, kid_subsets=20, kid_subset_size=100, bootstrap=20)
    clf = load_extractor("classifier", root / "clf.pt")
    sets = load_reference_sets(root / "features.npz", settings, clf)
    train_images, _ = load_split(train)
    test_images, _ = load_split(test)
    score = lambda images: {m["metric"]: m for m in score_against_references(  # noqa: E731
        images, clf, root / "ref.npz", 5, "clf", 17, sets, train_images, settings)}
    return floor, score(train_images[sets.train_b]), score(test_images), sets


def test_a_model_that_copies_training_images_is_flagged_and_held_out_images_are_not(scored):
    _, copier, heldout, _ = scored
    for space in ("memorised (pixels)", "memorised (features)"):
        assert copier[space]["value"] == 1.0
        assert heldout[space]["value"] < 0.1  # the 5th percentile of their own distances, by construction
    # FID against the training images rewards copying; against held-out images it does not
    assert copier["FID vs train"]["value"] < heldout["FID vs train"]["value"]


def test_the_floor_is_n_vs_n_with_the_models_labels(scored):
    floor, copier, _, sets = scored
    assert len(sets.test) == len(sets.train_a) == len(sets.train_b) == 300
    assert not set(sets.train_a) & set(sets.train_b)
    for metric in ("FID vs train", "FID vs test", "KID vs train", "KID vs test"):
        assert floor[metric]["label"] == copier[metric]["label"]
        assert "300 vs 300" in floor[metric]["label"]
    assert "FID" not in floor  # the floor has no row in the 1000-vs-1000 column it could not match
    # real images against real images: KID near 0 (unbiased, so within a few spreads of it)
    assert abs(floor["KID vs test"]["value"]) < 3 * floor["KID vs test"]["std"] + 1.0


def test_the_main_fid_carries_a_bootstrap_interval(scored):
    _, copier, heldout, _ = scored
    for row in (copier, heldout):
        fid = row["FID"]
        assert 0 <= fid["low"] < fid["high"]  # held-out images' FID is near 0: the low end is clipped there
        assert "bootstrap 95%" in fid["interval"]


def test_too_large_n_compare_names_the_key(scored, tmp_path):
    _, _, _, sets = scored
    clf_path = sets.path.replace("features.npz", "clf.pt")
    with pytest.raises(ValueError, match="evaluation.n_compare"):
        load_reference_sets(sets.path, Comparison(n=361), load_extractor("classifier", clf_path))
