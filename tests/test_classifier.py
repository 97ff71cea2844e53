"""Tests for the digits domain classifier used as FID/IS feature extractor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import aiqn.data
from aiqn.data.prepare import prepare_dataset
from aiqn.metrics import (
    ClassifierConfig,
    DomainClassifier,
    extract,
    extractor_name,
    load_classifier,
    save_classifier,
    train_classifier,
)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    prepare_dataset("digits", "unused", out, {"test_fraction": 0.2, "split_seed": 0})
    return aiqn.data.load_split(out / "train.npz") + aiqn.data.load_split(out / "test.npz")


def _config(**overrides) -> ClassifierConfig:
    return ClassifierConfig(channels=1, height=8, width=8, levels=17, num_classes=10, **overrides)


@pytest.fixture(scope="module")
def trained(digits):
    x_train, y_train, x_test, y_test = digits
    return train_classifier(x_train, y_train, x_test, y_test, _config(steps=300))


def test_training_reaches_accuracy(trained):
    model, report = trained
    assert not model.training
    assert report["test_accuracy"] >= 0.9
    assert report["steps"] == 300
    assert report["n_train"] == 1437 and report["n_test"] == 360
    assert 0.0 <= report["train_accuracy"] <= 1.0


def test_extract_shapes_and_probabilities(trained, digits):
    model, _ = trained
    x_test = digits[2]
    feats, probs = extract(model, x_test, levels=17, batch_size=100)
    assert feats.shape == (360, 64) and feats.dtype == np.float64
    assert probs.shape == (360, 10) and probs.dtype == np.float64
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    assert (feats >= 0).all()  # ReLU feature layer
    # Batch size does not change the result.
    feats2, probs2 = extract(model, x_test, levels=17, batch_size=500)
    np.testing.assert_allclose(feats, feats2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs, probs2, rtol=1e-5, atol=1e-8)


def test_save_load_round_trip(trained, digits, tmp_path):
    model, report = trained
    config = _config(steps=300)
    path = tmp_path / "cls" / "classifier.pt"
    save_classifier(path, model, config, report)
    loaded, config2, report2 = load_classifier(path)
    assert config2 == config and report2 == report and not loaded.training
    x = digits[2][:50]
    f1, p1 = extract(model, x, levels=17)
    f2, p2 = extract(loaded, x, levels=17)
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(p1, p2)


def test_same_seed_identical_weights(digits):
    x_train, y_train, x_test, y_test = digits
    cfg = _config(steps=15, seed=3)
    before = torch.get_num_threads()
    m1, _ = train_classifier(x_train, y_train, x_test, y_test, cfg)
    assert torch.get_num_threads() == before  # thread setting is restored
    m2, _ = train_classifier(x_train, y_train, x_test, y_test, cfg)
    m3, _ = train_classifier(x_train, y_train, x_test, y_test, _config(steps=15, seed=4))
    s1, s2, s3 = m1.state_dict(), m2.state_dict(), m3.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 16), (3, 9, 11)])
def test_classifier_any_shape(shape):
    model = DomainClassifier(channels=shape[0], num_classes=4, hidden=32).eval()
    images = np.random.default_rng(0).integers(0, 256, size=(5, *shape), dtype=np.uint8)
    feats, probs = extract(model, images, levels=256)
    assert feats.shape == (5, 32) and probs.shape == (5, 4)


def test_extractor_name():
    assert extractor_name("digits") == "digits-classifier"
