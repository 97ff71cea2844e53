"""photos32: 32x32 RGB crops of scikit-learn's two bundled photos, the offline colour dataset.

scikit-learn ships two 427x640 JPEG photos (`sklearn/datasets/images/china.jpg`, a temple, and
`flower.jpg`, a flower; `sklearn.datasets.load_sample_images()`), so this dataset, like digits,
needs no network. It exercises the 3-channel, 256-level path of both models.

Crops: a grid of 32x32 crops per photo with a fixed `stride` (option, default 32: the
non-overlapping tiles), centred on the photo (the rows left over are split evenly above and
below). At stride 32 that is 13 x 20 = 260 crops per photo, 520 in all, numbered row-major
with the two photos interleaved (crop 2k is china's k-th, 2k+1 flower's). A stride below 32 gives more crops that overlap, so a train crop and a test crop can
share pixels.

Labels (4 classes): `2 * photo + half`, where photo is 0 for china.jpg and 1 for flower.jpg,
and half is 0 when the crop's centre lies in the top half of its photo (centre row < 427 / 2),
1 otherwise:

    0 china, top half     (sky, roof of the temple)
    1 china, bottom half  (temple, trees)
    2 flower, top half
    3 flower, bottom half

The train/test split is a seeded, class-stratified permutation (`test_fraction`,
`split_seed`), as for digits. Images are uint8, N x 3 x 32 x 32, 256 levels.

Decoding: the JPEG bytes are verified by sha256; the decoded pixels come from Pillow's JPEG
decoder (its version is recorded in the provenance), so another libjpeg build could, in
principle, give slightly different arrays from the same verified files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL
import sklearn
from PIL import Image

from aiqn.data.registry import DatasetSpec, Source, register, stratified_split
from aiqn.data.bundled import verified_bundled_file

IMAGES_DIR = Path(sklearn.__file__).parent / "datasets" / "images"
PHOTOS = (
    Source(filename="china.jpg", sha256="8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29"),
    Source(filename="flower.jpg", sha256="a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638"),
)
CROP = 32
CLASS_NAMES = ("china, top half", "china, bottom half", "flower, top half", "flower, bottom half")


def verified_photo(source: Source) -> tuple[Path, str]:
    """Path of a bundled photo and its sha256, after checking it against the Source."""
    path = IMAGES_DIR / source.filename
    hint = ("photos32 is cut from scikit-learn's bundled sample images: "
            "reinstall scikit-learn (pip install --force-reinstall scikit-learn).")
    return path, verified_bundled_file(path, source.sha256, hint)


def crop_grid(photo: np.ndarray, size: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """All size x size crops of an H x W x C photo at `stride`, centred; returns
    (crops N x C x size x size, top-left corners N x 2 as (row, col)), row-major."""
    height, width = photo.shape[:2]
    rows, cols = (height - size) // stride + 1, (width - size) // stride + 1
    top = (height - ((rows - 1) * stride + size)) // 2
    left = (width - ((cols - 1) * stride + size)) // 2
    corners = np.array([(top + r * stride, left + c * stride) for r in range(rows) for c in range(cols)])
    crops = np.stack([photo[y : y + size, x : x + size] for y, x in corners])  # (N, size, size, C)
    return crops.transpose(0, 3, 1, 2), corners


def prepare(raw_dir: Path, options: dict) -> tuple[dict, dict, dict]:
    """Cut the crops, label them (photo x half) and split train/test (stratified, seeded)."""
    del raw_dir  # nothing to download: the photos ship with scikit-learn
    stride = int(options.get("stride", CROP))
    if not 1 <= stride <= CROP:
        raise ValueError(f"photos32: stride must lie in 1..{CROP}, got {stride} (params.yaml datasets.photos32.stride)")
    images, labels, raw_files = [], [], []
    for photo_index, source in enumerate(PHOTOS):
        path, digest = verified_photo(source)
        with Image.open(path) as image:
            photo = np.asarray(image.convert("RGB"), dtype=np.uint8)  # (427, 640, 3)
        crops, corners = crop_grid(photo, CROP, stride)
        bottom = (corners[:, 0] + CROP / 2) >= photo.shape[0] / 2
        images.append(crops)
        labels.append(2 * photo_index + bottom.astype(np.int64))
        raw_files.append({"path": str(path), "sha256": digest,
                          "locator": f"sklearn:datasets/images/{source.filename}"})
    # interleave the photos (china tile 0, flower tile 0, china tile 1, ...), so that the first
    # images of a split, which the sample-grid figure shows, come from both photos
    images = np.ascontiguousarray(np.stack(images, axis=1).reshape(-1, 3, CROP, CROP))  # (N, 3, 32, 32) uint8
    labels = np.stack(labels, axis=1).reshape(-1).astype(np.int64)
    train, test, split = stratified_split(images, labels, options)
    provenance = {
        "raw_files": raw_files,
        "source": (f"scikit-learn {sklearn.__version__} bundled sample images (china.jpg, flower.jpg), "
                   f"decoded with Pillow {PIL.__version__}; {CROP}x{CROP} crops at stride {stride}"),
        "split": split,
        "crops": {"size": CROP, "stride": stride, "n": int(len(labels))},
        "classes": list(CLASS_NAMES),
    }
    return train, test, provenance


SPEC = register(DatasetSpec(
    name="photos32", channels=3, height=CROP, width=CROP, levels=256, num_classes=len(CLASS_NAMES), prepare=prepare,
    sources=PHOTOS, description="32x32 RGB crops of scikit-learn's bundled china.jpg and flower.jpg; "
                                "4 classes: photo x top/bottom half",
    options=("test_fraction", "split_seed", "stride")))
