"""photos8: 8x8 RGB tiles of nine natural photographs at 256 levels, the offline natural-image testbed.

Digits has 17 grey levels, most pixels exactly 0: there the quantile function a PixelIQN must learn
is a staircase, and 1,221 training images let a PixelCNN memorise within a run. photos8 is the
regime of the AIQN paper's claim at the digits' image size: 256 levels, three channels, continuous
natural-image statistics, and ~31,000 training tiles (46,063 in all), with no network.

Photos (the class of a tile is its photo):

    0 astronaut.png  1 chelsea.png  2 coffee.png  3 hubble_deep_field.jpg  4 motorcycle_left.png
    5 rocket.jpg     6 ihc.png      (scikit-image 0.26.0's package data, skimage/data/)
    7 china.jpg      8 flower.jpg   (scikit-learn's sample images, sklearn/datasets/images/)

scikit-image's other RGB files are left out: motorcycle_right.png is the other view of a stereo
pair (its tiles would nearly repeat motorcycle_left's), retina.jpg is mostly black border,
color.png and logo.png are synthetic.

Tiles: the non-overlapping 8x8 grid of each photo, centred (photos32.crop_grid at stride 8),
numbered round-robin over the photos (tile 0 of each photo in class order, then tile 1 of each,
...; a photo that runs out drops out), so that the first images of a split, which the sample grid
shows, come from every photo. The split is the registry's seeded random one, stratified by photo
(`test_fraction`, `split_seed`), not by region: a split that held out the bottom of every photo
would score a distribution shift (docs/adding-a-dataset.md).

Every file is verified by sha256 before it is decoded (Pillow; its version is in the provenance).
scikit-image is not imported, only found; it needs Python 3.11+.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

from aiqn.data.bundled import locator, package_dir, verified_bundled_file
from aiqn.data.photos32 import crop_grid
from aiqn.data.registry import DatasetSpec, Source, register, stratified_split

TILE = 8
SKIMAGE_HINT = "pip install scikit-image==0.26.0 (Python 3.11+; it carries the photos as package data)"
# (package, folder inside it, Source): class order
PHOTOS = (
    ("skimage", "data", Source("astronaut.png", sha256="88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5")),
    ("skimage", "data", Source("chelsea.png", sha256="596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb")),
    ("skimage", "data", Source("coffee.png", sha256="cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7")),
    ("skimage", "data", Source("hubble_deep_field.jpg",
                               sha256="3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4")),
    ("skimage", "data", Source("motorcycle_left.png",
                               sha256="db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179")),
    ("skimage", "data", Source("rocket.jpg", sha256="c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c")),
    ("skimage", "data", Source("ihc.png", sha256="f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef")),
    ("sklearn", "datasets/images",
     Source("china.jpg", sha256="8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29")),
    ("sklearn", "datasets/images",
     Source("flower.jpg", sha256="a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638")),
)
HINTS = {"skimage": f"reinstall scikit-image: {SKIMAGE_HINT.replace('pip install', 'pip install --force-reinstall')}",
         "sklearn": "reinstall scikit-learn (pip install --force-reinstall scikit-learn)"}
CLASS_NAMES = tuple(Path(source.filename).stem for _, _, source in PHOTOS)


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def photo_path(package: str, folder: str, source: Source) -> Path:
    """Where this machine's copy of a photo lies (the package found, not imported)."""
    return package_dir(package, "photos8", SKIMAGE_HINT if package == "skimage" else HINTS[package]) / folder / source.filename


def round_robin(labels: np.ndarray) -> np.ndarray:
    """The order that takes tile 0 of every class in class order, then tile 1 of each, ...:
    `labels` are grouped by class (N,); returns a permutation of 0..N-1."""
    rank = np.concatenate([np.arange(count) for count in np.bincount(labels)])
    return np.lexsort((labels, rank))


def prepare(raw_dir: Path, options: dict) -> tuple[dict, dict, dict]:
    """Verify the nine photos, cut their 8x8 tiles, label them by photo and split train/test
    (stratified by photo, seeded)."""
    del raw_dir  # nothing to download: the photos ship with scikit-image and scikit-learn
    tiles, labels, raw_files, grids = [], [], [], {}
    for index, (package, folder, source) in enumerate(PHOTOS):
        path = photo_path(package, folder, source)
        digest = verified_bundled_file(path, source.sha256, HINTS[package])
        with Image.open(path) as image:
            photo = np.asarray(image.convert("RGB"), dtype=np.uint8)  # (H, W, 3)
        crops, corners = crop_grid(photo, TILE, TILE)  # (n, 3, 8, 8), row-major
        tiles.append(crops)
        labels.append(np.full(len(crops), index, dtype=np.int64))
        raw_files.append({"path": str(path), "sha256": digest,
                          "locator": locator(package, path.parents[len(Path(folder).parts)], path)})
        grids[CLASS_NAMES[index]] = {"photo_shape": list(photo.shape), "tiles": int(len(crops)),
                                     "first_corner": corners[0].tolist()}
    labels = np.concatenate(labels)
    order = round_robin(labels)
    images = np.ascontiguousarray(np.concatenate(tiles)[order])  # (46063, 3, 8, 8) uint8
    labels = labels[order]
    train, test, split = stratified_split(images, labels, options)
    provenance = {
        "raw_files": raw_files,
        "source": (f"scikit-image {_version('scikit-image')} and scikit-learn {_version('scikit-learn')} bundled "
                   f"photos, decoded with Pillow {PIL.__version__}; non-overlapping {TILE}x{TILE} tiles, "
                   "round-robin over the photos"),
        "split": split,
        "tiles": {"size": TILE, "n": int(len(labels)), "per_photo": grids},
        "classes": list(CLASS_NAMES),
    }
    return train, test, provenance


SPEC = register(DatasetSpec(
    name="photos8", channels=3, height=TILE, width=TILE, levels=256, num_classes=len(PHOTOS), prepare=prepare,
    sources=tuple(source for _, _, source in PHOTOS),
    description="8x8 RGB tiles of nine natural photos bundled with scikit-image and scikit-learn; 256 levels; "
                "class = photo"))
