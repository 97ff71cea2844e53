"""The paper's datasets (cifar10, imagenet32, celeba64): registry entries, archive readers and prepare.

The real archives are never downloaded: every test builds a small archive in the real format
(CIFAR's python tar.gz of pickled batches, ImageNet32's tar of PNGs, CelebA's zip of JPEGs and its
partition file) and points the dataset's Source at it by monkeypatching its checksum. urlopen is
monkeypatched wherever a download could be attempted."""

import email.message
import hashlib
import io
import json
import pickle
import tarfile
import urllib.error
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import aiqn.data  # noqa: F401  (registers datasets)
from aiqn.data import celeba64, cifar10, download, get_dataset, imagenet32, load_split
from aiqn.data.download import ChecksumMismatch, RawFileMissing
from aiqn.data.prepare import prepare_dataset
from aiqn.data.registry import downloads
from aiqn.core.io import read_json, sha256_file

CLASS_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _offline(url, timeout=None):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


class FakeResponse(io.BytesIO):
    """What urlopen returns: a readable body with headers (Content-Type)."""

    def __init__(self, body: bytes, content_type: str = "application/octet-stream"):
        super().__init__(body)
        self.headers = email.message.Message()
        self.headers["Content-Type"] = content_type


# ------------------------------------------------------------------------------------------ cifar10


def _cifar_batch(rng: np.random.Generator, n: int, label: bytes) -> dict:
    return {b"batch_label": label, b"labels": rng.integers(0, 10, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [b"img_%d.png" % i for i in range(n)]}


def _cifar_archive(path: Path, n: int = 4, seed: int = 0, skip: str | None = None) -> tuple[list[dict], dict]:
    """A cifar-10-python.tar.gz in the real layout (protocol-2 pickles of byte-keyed dicts)."""
    rng = np.random.default_rng(seed)
    batches = [_cifar_batch(rng, n, b"training batch %d of 5" % i) for i in range(1, 6)]
    test = _cifar_batch(rng, n, b"testing batch 1 of 1")
    meta = {b"label_names": CLASS_NAMES, b"num_cases_per_batch": n, b"num_vis": 3072}
    members = {f"cifar-10-batches-py/data_batch_{i}": b for i, b in enumerate(batches, start=1)}
    members.update({"cifar-10-batches-py/batches.meta": meta, "cifar-10-batches-py/test_batch": test})
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            if name == skip:
                continue
            data = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.addfile(tarfile.TarInfo("cifar-10-batches-py/readme.html"), io.BytesIO(b""))
    return batches, test


def test_cifar10_is_registered_with_the_official_archive_and_its_md5():
    spec = get_dataset("cifar10")
    assert spec.shape == (3, 32, 32) and spec.levels == 256 and spec.num_classes == 10
    assert spec.downloads == spec.sources == downloads("cifar10") == (cifar10.ARCHIVE,)
    assert cifar10.ARCHIVE.filename == "cifar-10-python.tar.gz"
    assert cifar10.ARCHIVE.url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert cifar10.ARCHIVE.md5 == "c58f30108f718f92721af3b95e74349a"


def test_read_cifar_archive_gives_rgb_planes_in_nchw_and_the_labels_in_batch_order(tmp_path):
    batches, test = _cifar_archive(tmp_path / "cifar.tar.gz")
    train, test_split, names = cifar10.read_cifar_archive(tmp_path / "cifar.tar.gz")
    assert names == [n.decode() for n in CLASS_NAMES]
    assert train["images"].dtype == np.uint8 and train["images"].shape == (20, 3, 32, 32)
    assert test_split["images"].shape == (4, 3, 32, 32) and train["labels"].dtype == np.int64
    np.testing.assert_array_equal(train["labels"], sum((b[b"labels"] for b in batches), []))
    np.testing.assert_array_equal(test_split["labels"], test[b"labels"])
    row = batches[2][b"data"][1]  # batch 3, image 1 -> train image 2 * 4 + 1
    image = train["images"][9]
    np.testing.assert_array_equal(image[0], row[:1024].reshape(32, 32))  # red plane first, row-major
    np.testing.assert_array_equal(image[1], row[1024:2048].reshape(32, 32))
    np.testing.assert_array_equal(image[2], row[2048:].reshape(32, 32))
    assert image[2, 3, 5] == row[2 * 1024 + 3 * 32 + 5]  # (channel, y, x)
    np.testing.assert_array_equal(test_split["images"].reshape(4, -1), test[b"data"])


def test_cifar10_prepare_writes_the_official_split_and_records_the_archive(tmp_path, monkeypatch):
    monkeypatch.setattr(download.urllib.request, "urlopen", _offline)
    raw = tmp_path / "data/raw/cifar10"
    raw.mkdir(parents=True)
    batches, _ = _cifar_archive(raw / "cifar-10-python.tar.gz")
    monkeypatch.setattr(cifar10, "ARCHIVE", replace(cifar10.ARCHIVE, md5=_md5(raw / "cifar-10-python.tar.gz")))
    meta = prepare_dataset("cifar10", raw, tmp_path / "processed", {})
    train_x, train_y = load_split(tmp_path / "processed/train.npz")
    test_x, _ = load_split(tmp_path / "processed/test.npz")
    assert train_x.shape == (20, 3, 32, 32) and test_x.shape == (4, 3, 32, 32)
    np.testing.assert_array_equal(train_x[0].reshape(-1), batches[0][b"data"][0])
    assert train_y.tolist()[:4] == batches[0][b"labels"]
    on_disk = read_json(tmp_path / "processed/meta.json")
    assert on_disk == json.loads(json.dumps(meta))
    [record] = on_disk["provenance"]["raw_files"]
    assert record["sha256"] == _sha256(raw / "cifar-10-python.tar.gz") == sha256_file(record["path"])
    assert record["md5"] == cifar10.ARCHIVE.md5 and record["url"] == cifar10.ARCHIVE.url
    assert on_disk["provenance"]["split"]["kind"] == "official" and on_disk["provenance"]["classes"][0] == "airplane"
    assert on_disk["shape"] == [3, 32, 32] and on_disk["num_classes"] == 10


def test_a_wrong_file_at_the_cifar10_path_is_refused_with_the_path_and_the_expected_md5(tmp_path, monkeypatch):
    monkeypatch.setattr(download.urllib.request, "urlopen", _offline)
    raw = tmp_path / "data/raw/cifar10"
    raw.mkdir(parents=True)
    (raw / "cifar-10-python.tar.gz").write_bytes(b"not the archive")
    with pytest.raises(ChecksumMismatch) as error:
        cifar10.prepare(raw, {})
    message = str(error.value)
    assert str((raw / "cifar-10-python.tar.gz").resolve()) in message
    assert "c58f30108f718f92721af3b95e74349a" in message


def test_offline_cifar10_says_where_to_put_the_archive_by_hand_and_its_md5(tmp_path, monkeypatch):
    monkeypatch.setattr(download.urllib.request, "urlopen", _offline)
    raw = tmp_path / "data/raw/cifar10"
    with pytest.raises(RawFileMissing) as error:
        prepare_dataset("cifar10", raw, tmp_path / "processed", {})
    message = str(error.value)
    assert len(message.splitlines()) == 1
    assert f"put the file at {(raw / 'cifar-10-python.tar.gz').resolve()} by hand" in message
    assert "data/raw/cifar10/cifar-10-python.tar.gz" in message
    assert "md5 c58f30108f718f92721af3b95e74349a" in message and cifar10.ARCHIVE.url in message
    assert not (tmp_path / "processed").exists()


def test_a_cifar_archive_without_the_test_batch_names_the_archive_and_the_member(tmp_path):
    _cifar_archive(tmp_path / "cifar.tar.gz", skip="cifar-10-batches-py/test_batch")
    with pytest.raises(FileNotFoundError, match=r"cifar\.tar\.gz has no member cifar-10-batches-py/test_batch"):
        cifar10.read_cifar_archive(tmp_path / "cifar.tar.gz")


def _py2_pickle(data: bytes, labels: list[int]) -> bytes:
    """{"data": uint8 array (2, 3), "labels": [...]} as Python 2's cPickle writes it (protocol 2: byte
    strings as SHORT_BINSTRING, numpy.core names), which is how the real batches were written."""
    def string(value: bytes) -> bytes:
        return b"U" + bytes([len(value)]) + value

    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + string(b"b") + b"\x87R"
             b"(K\x01K\x02K\x03\x86cnumpy\ndtype\n" + string(b"u1") + b"K\x00K\x01\x87R"
             b"(K\x03" + string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89" + string(data) + b"tb")
    items = b"".join(b"K" + bytes([label]) for label in labels)
    return b"\x80\x02}(" + string(b"data") + array + string(b"labels") + b"](" + items + b"eu."


def test_a_python2_pickled_batch_with_numpy_core_names_is_read():
    batch = cifar10._unpickle(_py2_pickle(bytes(range(6)), [7, 3]), "data_batch_1", "cifar.tar.gz")
    assert sorted(batch) == [b"data", b"labels"] and batch[b"labels"] == [7, 3]
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_a_cifar_batch_pickling_anything_but_arrays_is_refused(tmp_path):
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name in (*cifar10.TRAIN_BATCHES, cifar10.TEST_BATCH, cifar10.META):
            data = pickle.dumps({b"data": Path("/etc/passwd")}, protocol=2)  # a class the unpickler must refuse
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match=r"data_batch_1 is not a CIFAR-10 batch pickle \(refusing to unpickle"):
        cifar10.read_cifar_archive(path)


# --------------------------------------------------------------------------------------- imagenet32


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _png_tar(path: Path, folder: str, names: list[str], seed: int = 0) -> dict[str, np.ndarray]:
    """A tarball of 32x32 RGB PNGs under `folder/`, written in the given (unsorted) order, plus
    a folder entry and a non-PNG member; returns {name: H x W x 3 pixels}."""
    rng = np.random.default_rng(seed)
    pixels = {name: rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for name in names}
    with tarfile.open(path, "w") as tar:
        directory = tarfile.TarInfo(folder)
        directory.type = tarfile.DIRTYPE
        tar.addfile(directory)
        for name in names:
            data = _png(pixels[name])
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(f"{folder}/README.txt")
        tar.addfile(info, io.BytesIO(b""))
    return pixels


def test_imagenet32_is_registered_with_both_tarballs_and_the_tfds_sha256s():
    spec = get_dataset("imagenet32")
    assert spec.shape == (3, 32, 32) and spec.levels == 256 and spec.num_classes == 1
    assert spec.downloads == spec.sources == (imagenet32.TRAIN, imagenet32.VALID)
    assert [s.filename for s in spec.downloads] == ["train_32x32.tar", "valid_32x32.tar"]
    assert imagenet32.TRAIN.sha256 == "244a323d48f8d72f65ad8b54658c01fed68d2d7bdc77ccb43da58c11e94224e5"
    assert imagenet32.VALID.sha256 == "862e559462b24cf736212a19f6b0d47b55c2dc8ebdaa95ccecfe71260124c8f7"


def test_read_png_tar_orders_images_by_name_with_exact_pixels_and_max_images_keeps_the_first(tmp_path):
    names = ["n0003.png", "n0001.png", "n0004.png", "n0002.png"]
    pixels = _png_tar(tmp_path / "train_32x32.tar", "train_32x32", names)
    images = imagenet32.read_png_tar(tmp_path / "train_32x32.tar", "train_32x32")
    assert images.dtype == np.uint8 and images.shape == (4, 3, 32, 32)
    for image, name in zip(images, sorted(names)):
        np.testing.assert_array_equal(image, pixels[name].transpose(2, 0, 1))
    first = imagenet32.read_png_tar(tmp_path / "train_32x32.tar", "train_32x32", max_images=2)
    np.testing.assert_array_equal(first, images[:2])


def test_imagenet32_prepare_reads_train_and_valid_with_zero_labels_and_records_max_images(tmp_path, monkeypatch):
    monkeypatch.setattr(download.urllib.request, "urlopen", _offline)
    raw = tmp_path / "raw"
    raw.mkdir()
    train_pixels = _png_tar(raw / "train_32x32.tar", "train_32x32", ["b.png", "c.png", "a.png"], seed=1)
    valid_pixels = _png_tar(raw / "valid_32x32.tar", "valid_32x32", ["y.png", "x.png"], seed=2)
    for name in ("TRAIN", "VALID"):
        source = getattr(imagenet32, name)
        monkeypatch.setattr(imagenet32, name, replace(source, sha256=_sha256(raw / source.filename)))
    meta = prepare_dataset("imagenet32", raw, tmp_path / "out", {"max_images": 2})
    train_x, train_y = load_split(tmp_path / "out/train.npz")
    test_x, test_y = load_split(tmp_path / "out/test.npz")
    np.testing.assert_array_equal(train_x, np.stack([train_pixels[n].transpose(2, 0, 1) for n in ("a.png", "b.png")]))
    np.testing.assert_array_equal(test_x, np.stack([valid_pixels[n].transpose(2, 0, 1) for n in ("x.png", "y.png")]))
    assert train_y.tolist() == [0, 0] and test_y.tolist() == [0, 0]
    assert meta["provenance"]["max_images"] == 2
    assert [r["sha256"] for r in meta["provenance"]["raw_files"]] == [imagenet32.TRAIN.sha256, imagenet32.VALID.sha256]
    with pytest.raises(ValueError, match="max_images must be a positive integer or null"):
        imagenet32.prepare(raw, {"max_images": 0})


def test_offline_imagenet32_says_where_to_put_the_train_tarball_and_its_sha256(tmp_path, monkeypatch):
    monkeypatch.setattr(download.urllib.request, "urlopen", _offline)
    raw = tmp_path / "data/raw/imagenet32"
    with pytest.raises(RawFileMissing) as error:
        imagenet32.prepare(raw, {})
    message = str(error.value)
    assert f"put the file at {(raw / 'train_32x32.tar').resolve()} by hand" in message
    assert f"sha256 {imagenet32.TRAIN.sha256}" in message


def test_a_png_tar_without_the_expected_folder_names_the_archive_and_the_folder(tmp_path):
    _png_tar(tmp_path / "wrong.tar", "something_else", ["a.png"])
    with pytest.raises(FileNotFoundError, match=r"wrong\.tar has no member train_32x32/\*\.png"):
        imagenet32.read_png_tar(tmp_path / "wrong.tar", "train_32x32")


# ----------------------------------------------------------------------------------------- celeba64


def _jpeg(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def _celeba(raw: Path, partitions: list[int], skip: str | None = None) -> dict[str, bytes]:
    """img_align_celeba.zip (178x218 JPEGs, written in reverse order) and list_eval_partition.txt."""
    rng = np.random.default_rng(0)
    names = [f"{i:06d}.jpg" for i in range(1, len(partitions) + 1)]
    jpegs = {name: _jpeg(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)) for name in names}
    raw.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(raw / "img_align_celeba.zip", "w") as archive:
        archive.writestr("img_align_celeba/", b"")
        for name in reversed(names):
            if name != skip:
                archive.writestr(f"img_align_celeba/{name}", jpegs[name])
    (raw / "list_eval_partition.txt").write_text("".join(f"{n} {p}\r\n" for n, p in zip(names, partitions)))
    return jpegs


def _by_hand(jpeg: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    square = image.crop((15, 35, 15 + 148, 35 + 148))  # centred 148x148 of 178x218
    return np.asarray(square.resize((64, 64), Image.Resampling.BOX)).transpose(2, 0, 1)


def test_celeba64_is_registered_with_both_files_and_their_checksums():
    spec = get_dataset("celeba64")
    assert spec.shape == (3, 64, 64) and spec.levels == 256 and spec.num_classes == 1
    assert spec.downloads == spec.sources == (celeba64.IMAGES, celeba64.PARTITION)
    assert celeba64.IMAGES.sha256 == "46fb89443c578308acf364d7d379fe1b9efb793042c0af734b6112e4fd3a8c74"
    assert celeba64.IMAGES.md5 == "00d2c5bc6d35e252742224ab0c1e8fcb"
    assert celeba64.PARTITION.sha256 == "fc955bcb3ef8fbdf7d5640d9a8693a8431b5f2ee291a5c1449a1549e7e073fe7"


def test_read_celeba_follows_the_partition_file_and_crops_then_box_resizes(tmp_path):
    jpegs = _celeba(tmp_path, [0, 1, 2, 0, 2, 0])
    train, test = celeba64.read_celeba(tmp_path / "img_align_celeba.zip", tmp_path / "list_eval_partition.txt",
                                       crop=148, size=64)
    assert train["images"].dtype == np.uint8 and train["images"].shape == (3, 3, 64, 64)
    assert test["images"].shape == (2, 3, 64, 64) and train["labels"].tolist() == [0, 0, 0]
    for split, names in ((train, ["000001", "000004", "000006"]), (test, ["000003", "000005"])):
        for image, name in zip(split["images"], names):
            np.testing.assert_array_equal(image, _by_hand(jpegs[f"{name}.jpg"]))
    first, first_test = celeba64.read_celeba(tmp_path / "img_align_celeba.zip",
                                             tmp_path / "list_eval_partition.txt", crop=148, size=64, max_images=1)
    np.testing.assert_array_equal(first["images"], train["images"][:1])
    np.testing.assert_array_equal(first_test["images"], test["images"][:1])


def test_celeba64_prepare_records_both_files_and_the_preprocessing(tmp_path, monkeypatch):
    monkeypatch.setattr(download.urllib.request, "urlopen", _offline)
    raw = tmp_path / "raw"
    _celeba(raw, [0, 2, 0])
    for name in ("IMAGES", "PARTITION"):
        source = getattr(celeba64, name)
        monkeypatch.setattr(celeba64, name, replace(source, sha256=_sha256(raw / source.filename)))
    meta = prepare_dataset("celeba64", raw, tmp_path / "out", {"crop": 148})
    assert meta["splits"]["train"]["n"] == 2 and meta["splits"]["test"]["n"] == 1
    provenance = meta["provenance"]
    assert [r["md5"] for r in provenance["raw_files"]] == [celeba64.IMAGES.md5, celeba64.PARTITION.md5]
    assert provenance["raw_files"][0]["sha256"] == _sha256(raw / "img_align_celeba.zip")
    assert provenance["preprocessing"]["crop"] == 148 and provenance["max_images"] is None
    with pytest.raises(ValueError, match="crop must be an integer >= 64"):
        celeba64.prepare(raw, {"crop": 32})


def test_google_drive_confirmation_page_for_celeba_says_to_place_the_zip_by_hand(tmp_path, monkeypatch):
    page = FakeResponse(b"<html>Google Drive can't scan this file for viruses</html>", "text/html; charset=utf-8")
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda url, timeout=None: page)
    raw = tmp_path / "data/raw/celeba64"
    with pytest.raises(RawFileMissing, match=r"HTML page.*img_align_celeba\.zip by hand \(sha256 46fb8944"):
        celeba64.prepare(raw, {})


def test_a_celeba_zip_missing_an_image_of_the_partition_file_names_the_zip_and_the_member(tmp_path):
    _celeba(tmp_path, [0, 2, 0], skip="000002.jpg")
    with pytest.raises(FileNotFoundError, match=r"img_align_celeba\.zip has no member img_align_celeba/000002\.jpg"):
        celeba64.read_celeba(tmp_path / "img_align_celeba.zip", tmp_path / "list_eval_partition.txt", 148, 64)
