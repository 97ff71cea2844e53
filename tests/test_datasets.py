"""Datasets: the photos32 colour crops and the photos8 natural-image tiles (registry entry, crops,
labels, split, checksums, provenance) and the generic raw-file helpers of aiqn.data.download (checksums, offline message,
safe tar extraction). No test touches the network: downloads go through a monkeypatched urlopen
or a file:// URL."""

import email.message
import importlib.util
import hashlib
import io
import os
import tarfile
import urllib.error
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import sklearn
from PIL import Image

import aiqn.data  # noqa: F401  (registers datasets)
from aiqn.data import download, get_dataset, load_split, photos8, photos32, registered_names
from aiqn.data.bundled import BundledFileMissing
from aiqn.data.download import ChecksumMismatch, RawFileMissing, UnsafeArchive, ensure_raw_file, safe_extract
from aiqn.data.prepare import carve_validation, prepare_dataset
from aiqn.data.registry import Source
from aiqn.report.provenance import resolve
from aiqn.core.io import read_json, sha256_file

OPTIONS = {"test_fraction": 0.2, "split_seed": 0}


@pytest.fixture(scope="module")
def photos_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("photos32")
    prepare_dataset("photos32", out / "raw", out, dict(OPTIONS))
    return out


# ------------------------------------------------------------------------------------- photos32


def test_photos32_is_registered_with_both_photos_and_their_checksums():
    assert {"digits", "photos32"} <= set(registered_names())
    spec = get_dataset("photos32")
    assert spec.shape == (3, 32, 32) and spec.levels == 256 and spec.num_classes == 4
    assert [s.filename for s in spec.sources] == ["china.jpg", "flower.jpg"]
    images = Path(sklearn.__file__).parent / "datasets" / "images"
    for source in spec.sources:
        assert sha256_file(images / source.filename) == source.sha256


def test_photos32_splits_are_uint8_nchw_stratified_and_cover_every_tile(photos_dir):
    train_x, train_y = load_split(photos_dir / "train.npz")
    test_x, test_y = load_split(photos_dir / "test.npz")
    assert train_x.dtype == np.uint8 and train_x.shape == (416, 3, 32, 32) and test_x.shape == (104, 3, 32, 32)
    assert train_x.max() > 200 and train_x.min() < 50  # the full 8-bit range is used
    # 13 x 20 tiles per photo; 7 tile rows have their centre in the top half, 6 in the bottom
    counts = np.bincount(np.concatenate([train_y, test_y]), minlength=4)
    assert counts.tolist() == [140, 120, 140, 120]
    np.testing.assert_array_equal(np.bincount(test_y, minlength=4), [28, 24, 28, 24])  # stratified
    together = {x.tobytes() for x in np.concatenate([train_x, test_x])}
    assert len(together) == 520  # no crop twice, no crop in both splits


def test_photos32_crops_are_the_photo_pixels_in_rgb_and_labels_follow_photo_and_half():
    photo = np.asarray(Image.open(photos32.IMAGES_DIR / "flower.jpg").convert("RGB"))
    crops, corners = photos32.crop_grid(photo, 32, 32)
    assert crops.shape == (260, 3, 32, 32) and corners[0].tolist() == [5, 0] and corners[-1].tolist() == [389, 608]
    np.testing.assert_array_equal(crops[21], photo[37:69, 32:64].transpose(2, 0, 1))  # row 1, column 1
    train, test, _ = photos32.prepare(Path("unused"), dict(OPTIONS))
    every = {x.tobytes(): int(y) for split in (train, test) for x, y in zip(split["images"], split["labels"])}
    assert every[crops[0].tobytes()] == 2  # flower, top half
    assert every[crops[-1].tobytes()] == 3  # flower, bottom half
    china = np.asarray(Image.open(photos32.IMAGES_DIR / "china.jpg").convert("RGB"))
    assert every[np.ascontiguousarray(china[5:37, :32].transpose(2, 0, 1)).tobytes()] == 0
    assert photos32.CLASS_NAMES[3] == "flower, bottom half"
    china_crops, _ = photos32.crop_grid(china, 32, 32)
    for split in (train, test):  # crop 2k is china's k-th tile, crop 2k+1 flower's
        for image, index in zip(split["images"], split["index"]):
            np.testing.assert_array_equal(image, (china_crops if index % 2 == 0 else crops)[index // 2])
    assert set(test["labels"][:36] // 2) == {0, 1}  # the sample-grid figure shows both photos


def test_photos32_is_deterministic_and_the_split_follows_its_seed(tmp_path, photos_dir):
    again = prepare_dataset("photos32", tmp_path / "raw", tmp_path / "a", dict(OPTIONS))
    first = read_json(photos_dir / "meta.json")
    assert again["splits"]["train"]["sha256"] == first["splits"]["train"]["sha256"]
    other = prepare_dataset("photos32", tmp_path / "raw", tmp_path / "b", {**OPTIONS, "split_seed": 1})
    assert other["splits"]["train"]["sha256"] != first["splits"]["train"]["sha256"]


def test_photos32_stride_option_gives_overlapping_crops_and_is_checked():
    train, test, provenance = photos32.prepare(Path("unused"), {**OPTIONS, "stride": 16})
    assert len(train["labels"]) + len(test["labels"]) == 2 * 25 * 39
    assert provenance["crops"] == {"size": 32, "stride": 16, "n": 1950}
    with pytest.raises(ValueError, match="stride must lie in 1..32"):
        photos32.prepare(Path("unused"), {**OPTIONS, "stride": 40})


def test_photos32_provenance_names_both_photos_with_a_locator_that_resolves(photos_dir):
    meta = read_json(photos_dir / "meta.json")
    raw = meta["provenance"]["raw_files"]
    assert [r["locator"] for r in raw] == ["sklearn:datasets/images/china.jpg", "sklearn:datasets/images/flower.jpg"]
    for record, source in zip(raw, photos32.PHOTOS):
        assert record["sha256"] == source.sha256
        assert resolve(record, Path("/nowhere")) == Path(record["path"])  # the audit finds the package's copy
    assert meta["shape"] == [3, 32, 32] and meta["levels"] == 256 and meta["num_classes"] == 4
    assert meta["provenance"]["split"] == OPTIONS and "Pillow" in meta["provenance"]["source"]


def test_photos32_wrong_checksum_names_the_file_and_the_fix(monkeypatch, tmp_path):
    wrong = (replace(photos32.PHOTOS[0], sha256="0" * 64), photos32.PHOTOS[1])
    monkeypatch.setattr(photos32, "PHOTOS", wrong)
    with pytest.raises(ValueError, match=r"china\.jpg: sha256 8378025a.* differs from the expected 0{64}.*reinstall"):
        photos32.prepare(tmp_path, dict(OPTIONS))


# -------------------------------------------------------------------------------------- photos8

needs_skimage = pytest.mark.skipif(importlib.util.find_spec("skimage") is None,
                                   reason="photos8's photos ship with scikit-image 0.26.0 (Python 3.11+), not installed")


@pytest.fixture(scope="module")
def photos8_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("photos8")
    prepare_dataset("photos8", out / "raw", out, dict(OPTIONS), {"fraction": 0.15, "seed": 0})
    return out


@needs_skimage
def test_photos8_is_registered_with_nine_photos_whose_checksums_match_the_installed_files():
    spec = get_dataset("photos8")
    assert spec.shape == (3, 8, 8) and spec.levels == 256 and spec.num_classes == 9
    assert photos8.CLASS_NAMES == ("astronaut", "chelsea", "coffee", "hubble_deep_field", "motorcycle_left", "rocket",
                                   "ihc", "china", "flower")
    for package, folder, source in photos8.PHOTOS:
        assert sha256_file(photos8.photo_path(package, folder, source)) == source.sha256


@needs_skimage
def test_photos8_tiles_every_photo_splits_at_random_stratified_by_photo(photos8_dir):
    splits = {name: load_split(photos8_dir / f"{name}.npz") for name in ("train", "val", "test")}
    assert {name: len(x) for name, (x, _) in splits.items()} == {"train": 31322, "val": 5528, "test": 9213}
    labels = np.concatenate([y for _, y in splits.values()])
    # the 8x8 grid of each photo: 64x64, 37x56, 50x75, 109x125, 62x92, 53x80, 64x64, 53x80, 53x80 tiles
    assert np.bincount(labels).tolist() == [4096, 2072, 3750, 13625, 5704, 4240, 4096, 4240, 4240]
    for x, y in splits.values():  # stratified: every split holds each photo in proportion
        assert x.dtype == np.uint8 and x.shape[1:] == (3, 8, 8)
        np.testing.assert_allclose(np.bincount(y, minlength=9) / len(y), np.bincount(labels) / len(labels), atol=2e-3)
    test_x, test_y = splits["test"]
    assert set(test_y[:64]) == set(range(9))  # round-robin order: the sample grid shows every photo
    assert test_x.max() == 255 and test_x.min() == 0 and len(np.unique(test_x)) == 256  # 256 levels in use
    # random over tiles, not by region: held-out tiles come from the top and the bottom of a photo
    index = read_json(photos8_dir / "meta.json")["provenance"]["tiles"]
    assert index["n"] == 46063 and index["per_photo"]["astronaut"]["tiles"] == 4096


@needs_skimage
def test_photos8_tiles_are_the_photo_pixels():
    package, folder, source = photos8.PHOTOS[1]  # chelsea.png, 300 x 451: grid centred, 2 rows and 1 col left over
    photo = np.asarray(Image.open(photos8.photo_path(package, folder, source)).convert("RGB"))
    train, test, _ = photos8.prepare(Path("unused"), dict(OPTIONS))
    everything = {x.tobytes(): y for x, y in zip(np.concatenate([train["images"], test["images"]]),
                                                 np.concatenate([train["labels"], test["labels"]]))}
    assert len(everything) > 45000  # a few flat tiles repeat (black sky of the Hubble field)
    top, left = (300 - 37 * 8) // 2, (451 - 56 * 8) // 2
    tile = np.ascontiguousarray(photo[top + 8 : top + 16, left + 24 : left + 32].transpose(2, 0, 1))
    assert everything[tile.tobytes()] == 1


@needs_skimage
def test_photos8_provenance_records_every_photo_with_a_locator_that_resolves(photos8_dir):
    meta = read_json(photos8_dir / "meta.json")
    raw = meta["provenance"]["raw_files"]
    assert [r["locator"] for r in raw][:2] == ["skimage:data/astronaut.png", "skimage:data/chelsea.png"]
    assert raw[-1]["locator"] == "sklearn:datasets/images/flower.jpg"
    for record, (_, _, source) in zip(raw, photos8.PHOTOS):
        assert record["sha256"] == source.sha256 and resolve(record, Path("/nowhere")) == Path(record["path"])
    assert "scikit-image 0.26.0" in meta["provenance"]["source"] and meta["provenance"]["classes"][3] == "hubble_deep_field"


@needs_skimage
def test_photos8_a_changed_photo_stops_it_naming_the_file_and_the_fix(monkeypatch, tmp_path):
    package, folder, source = photos8.PHOTOS[5]
    changed = (*photos8.PHOTOS[:5], (package, folder, replace(source, sha256="1" * 64)), *photos8.PHOTOS[6:])
    monkeypatch.setattr(photos8, "PHOTOS", changed)
    with pytest.raises(ChecksumMismatch, match=r"data/rocket\.jpg: sha256 c2dd0de7.* differs from the expected 1{64}; "
                                               r"reinstall scikit-image: pip install --force-reinstall scikit-image==0\.26\.0"):
        photos8.prepare(tmp_path, dict(OPTIONS))


def test_photos8_without_scikit_image_says_what_to_install(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "skimage" else real(name, *a))
    with pytest.raises(BundledFileMissing, match=r"dataset photos8 reads files bundled with skimage, which is not "
                                                 r"installed; install it: pip install scikit-image==0\.26\.0"):
        photos8.prepare(tmp_path, dict(OPTIONS))


@needs_skimage
def test_photos8_a_missing_photo_is_named(monkeypatch, tmp_path):
    package, folder, source = photos8.PHOTOS[0]
    gone = ((package, folder, replace(source, filename="astronaut-gone.png")), *photos8.PHOTOS[1:])
    monkeypatch.setattr(photos8, "PHOTOS", gone)
    with pytest.raises(BundledFileMissing, match=r"astronaut-gone\.png is missing; reinstall"):
        photos8.prepare(tmp_path, dict(OPTIONS))


# --------------------------------------------------------------------------------- ensure_raw_file


def _source(tmp_path: Path, payload: bytes, **changes) -> Source:
    return replace(Source(filename="data.bin", url="https://example.invalid/data.bin",
                          sha256=hashlib.sha256(payload).hexdigest()), **changes)


def _no_network(*args, **kwargs):
    raise AssertionError("the network must not be used")


def test_a_local_file_with_the_right_checksum_is_used_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setattr(download.urllib.request, "urlopen", _no_network)
    payload = b"raw bytes"
    (tmp_path / "data.bin").write_bytes(payload)
    assert ensure_raw_file(_source(tmp_path, payload), tmp_path) == tmp_path / "data.bin"
    by_md5 = _source(tmp_path, payload, sha256=None, md5=hashlib.md5(payload).hexdigest())
    assert ensure_raw_file(by_md5, tmp_path) == tmp_path / "data.bin"


def test_a_local_file_with_a_wrong_checksum_is_refused_and_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(download.urllib.request, "urlopen", _no_network)
    (tmp_path / "data.bin").write_bytes(b"something else")
    source = _source(tmp_path, b"raw bytes")
    with pytest.raises(ChecksumMismatch) as error:
        ensure_raw_file(source, tmp_path)
    message = str(error.value)
    assert str((tmp_path / "data.bin").resolve()) in message and source.sha256 in message
    assert "delete it" in message and source.url in message
    assert (tmp_path / "data.bin").read_bytes() == b"something else"


def test_offline_error_says_url_full_path_and_checksum_on_one_line(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(download.urllib.request, "urlopen", offline)
    raw_dir = tmp_path / "raw" / "mydata"
    source = _source(tmp_path, b"raw bytes")
    with pytest.raises(RawFileMissing) as error:
        ensure_raw_file(source, raw_dir)
    message = str(error.value)
    assert len(message.splitlines()) == 1
    assert source.url in message
    assert str((raw_dir / "data.bin").resolve()) in message
    assert f"sha256 {source.sha256}" in message
    assert isinstance(error.value, FileNotFoundError)  # `aiqn prepare` prints it as one line
    assert not any(raw_dir.iterdir())  # no partial file left behind


class FakeResponse(io.BytesIO):
    """What urlopen returns: a readable body with headers (Content-Type)."""

    def __init__(self, body: bytes, content_type: str = "application/octet-stream"):
        super().__init__(body)
        self.headers = email.message.Message()
        self.headers["Content-Type"] = content_type


def test_a_download_is_checked_then_renamed_into_place(tmp_path, monkeypatch):
    payload = b"x" * 3_000_000
    seen = {}

    def serve(url, timeout=None):
        seen.update(url=url, timeout=timeout)
        return FakeResponse(payload)

    monkeypatch.setattr(download.urllib.request, "urlopen", serve)
    path = ensure_raw_file(_source(tmp_path, payload), tmp_path / "raw")
    assert path.read_bytes() == payload and seen["timeout"] > 0
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["data.bin"]


def test_a_download_with_the_wrong_content_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda url, timeout=None: FakeResponse(b"error page"))
    with pytest.raises(ChecksumMismatch, match="served a file with sha256"):
        ensure_raw_file(_source(tmp_path, b"raw bytes"), tmp_path / "raw")
    assert list((tmp_path / "raw").iterdir()) == []


def test_an_html_page_instead_of_the_file_says_to_place_it_by_hand(tmp_path, monkeypatch):
    page = FakeResponse(b"<html>sign in to download</html>", content_type="text/html; charset=utf-8")
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda url, timeout=None: page)
    with pytest.raises(RawFileMissing, match=r"HTML page.*put the file at .*data\.bin by hand \(sha256 [0-9a-f]{64}\)"):
        ensure_raw_file(_source(tmp_path, b"raw bytes"), tmp_path / "raw")
    assert list((tmp_path / "raw").iterdir()) == []


def test_a_sha256_prefix_in_the_torch_hub_style_is_checked(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "weights.pth").write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    assert ensure_raw_file(Source("weights.pth", sha256=digest[:8]), raw) == raw / "weights.pth"
    with pytest.raises(ChecksumMismatch, match="a sha256 starting with 00000000"):
        ensure_raw_file(Source("weights.pth", sha256="00000000"), raw)


def test_a_file_url_is_copied_offline(tmp_path):
    original = tmp_path / "elsewhere" / "data.bin"
    original.parent.mkdir()
    original.write_bytes(b"raw bytes")
    path = ensure_raw_file(_source(tmp_path, b"raw bytes", url=original.as_uri()), tmp_path / "raw")
    assert path.read_bytes() == b"raw bytes"


def test_a_source_without_url_or_checksum(tmp_path):
    with pytest.raises(RawFileMissing, match="has no download URL; put the file at .*data.bin by hand"):
        ensure_raw_file(_source(tmp_path, b"raw bytes", url=None), tmp_path)
    with pytest.raises(ValueError, match="neither sha256 nor md5"):
        ensure_raw_file(_source(tmp_path, b"raw bytes", sha256=None), tmp_path)


# ------------------------------------------------------------------------------------ safe_extract


def _tarball(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"payload") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def test_safe_extract_extracts_a_well_formed_tarball(tmp_path):
    tar = _tarball(tmp_path / "ok.tar.gz", [_file("data/a.txt", b"a"), _file("data/sub/b.txt", b"b"),
                                            _link("data/c.txt", "a.txt")])
    names = safe_extract(tar, tmp_path / "out")
    assert names == ["data/a.txt", "data/sub/b.txt", "data/c.txt"]
    assert (tmp_path / "out/data/sub/b.txt").read_bytes() == b"b"
    assert (tmp_path / "out/data/c.txt").read_bytes() == b"a"


@pytest.mark.parametrize(
    "member,reason",
    [
        (_file("../evil"), "outside"),
        (_file("data/../../evil"), "outside"),
        (_file("/tmp/evil"), "absolute path"),
        (_link("data/escape", "../../evil"), "outside"),
        (_link("data/escape", "/etc/passwd"), "absolute path"),
        (_link("data/hard", "../evil", kind=tarfile.LNKTYPE), "outside"),
    ],
)
def test_safe_extract_refuses_members_escaping_dest_and_extracts_nothing(tmp_path, member, reason):
    tar = _tarball(tmp_path / "evil.tar.gz", [_file("data/fine.txt"), member])
    out = tmp_path / "a" / "out"
    with pytest.raises(UnsafeArchive, match=reason):
        safe_extract(tar, out)
    assert list(out.iterdir()) == []  # checked before anything is written
    assert not (tmp_path / "a" / "evil").exists() and not (tmp_path / "evil").exists()


def test_safe_extract_refuses_device_files(tmp_path):
    info = tarfile.TarInfo("data/dev")
    info.type = tarfile.CHRTYPE
    tar = _tarball(tmp_path / "dev.tar", [(info, None)])
    with pytest.raises(UnsafeArchive, match="device"):
        safe_extract(tar, tmp_path / "out")
    assert os.listdir(tmp_path / "out") == []


def test_the_validation_split_is_carved_from_train_stratified_disjoint_and_seeded(tmp_path):
    """prepare_dataset with params' validation: val.npz holds `fraction` of the dataset's own train split,
    every class in proportion, no image of it left in train.npz; the test split is untouched."""
    plain = prepare_dataset("digits", "unused", tmp_path / "plain", {"test_fraction": 0.2, "split_seed": 0})
    meta = prepare_dataset("digits", "unused", tmp_path / "val", {"test_fraction": 0.2, "split_seed": 0},
                           {"fraction": 0.15, "seed": 0})
    full, _ = load_split(tmp_path / "plain" / "train.npz")
    train, train_labels = load_split(tmp_path / "val" / "train.npz")
    val, val_labels = load_split(tmp_path / "val" / "val.npz")
    assert set(plain["splits"]) == {"train", "test"} and set(meta["splits"]) == {"train", "val", "test"}
    assert (len(train), len(val)) == (len(full) - round(0.15 * len(full)), round(0.15 * len(full)))
    rows = lambda images: {image.tobytes() for image in images}  # noqa: E731
    assert rows(train) | rows(val) == rows(full) and not rows(train) & rows(val)
    share = np.bincount(val_labels, minlength=10) / np.bincount(train_labels, minlength=10)
    assert np.all(np.abs(share - 0.15 / 0.85) < 0.03)  # stratified: each class in proportion
    assert meta["splits"]["test"]["sha256"] == plain["splits"]["test"]["sha256"]
    assert meta["validation"]["fraction"] == 0.15
    again = prepare_dataset("digits", "unused", tmp_path / "again", {"test_fraction": 0.2, "split_seed": 0},
                            {"fraction": 0.15, "seed": 0})
    other = prepare_dataset("digits", "unused", tmp_path / "other", {"test_fraction": 0.2, "split_seed": 0},
                            {"fraction": 0.15, "seed": 1})
    assert again["splits"]["val"]["sha256"] == meta["splits"]["val"]["sha256"] != other["splits"]["val"]["sha256"]


def test_a_validation_fraction_that_cannot_be_stratified_is_refused_naming_the_key():
    train = {"images": np.zeros((12, 1, 8, 8), np.uint8), "labels": np.repeat(np.arange(6), 2)}
    with pytest.raises(ValueError, match=r"validation.fraction=0.1 cannot carve .* 12 training images"):
        carve_validation(train, 0.1, 0)  # 1 validation image for 6 classes
