"""celeba64: CelebA (Liu et al. 2015), aligned and cropped faces, centre-cropped and resized to 64x64.

Raw files, fetched into data/raw/celeba64/ by `ensure_raw_file` (sha256 checked; the md5 is the
one torchvision and the CelebA page list, kept for reference):

    img_align_celeba.zip      1,443,490,838 bytes: img_align_celeba/000001.jpg .. 202599.jpg,
                              JPEGs of 178 wide x 218 high
    list_eval_partition.txt   lines "000001.jpg 0": 0 train, 1 validation, 2 test

Both live on Google Drive (the links of the CelebA page,
https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html). Drive answers a large file with an HTML
confirmation page instead of the file, which `ensure_raw_file` turns into a one-line message
saying where to put the file by hand (download it in a browser, or with `gdown`, from the same
link) and which sha256 it must have.

Split: train = partition 0 (162,770 images), test = partition 2 (19,962); the validation
partition (1, 19,867 images) is not used. Images are taken in file-name order. Unlabelled for
this pipeline: num_classes = 1, every label 0 (the 40 attributes are not read).

Preprocessing (options, with defaults): a centred square crop of side `crop` (148), with its
top-left corner at ((width - crop) // 2, (height - crop) // 2), i.e. the box (15, 35, 163, 183)
of a 178x218 image, then a resize to 64x64 with Pillow's `Image.resize(..., Image.Resampling.BOX)`
(each output pixel the area-weighted mean of the input pixels it covers: no aliasing, no
ringing), rounded to uint8. The central 148x148 crop is the common CelebA-64 recipe (Real NVP,
and many VAE papers since); the resampling filter differs between papers (bilinear, bicubic,
antialiased), so the arrays are close to, not bit-identical with, other CelebA-64s.
Option `max_images` (int, default null = all) keeps the first N images of each split, for smoke
runs; it is recorded in the provenance. Images are uint8, N x 3 x 64 x 64, 256 levels.

Reading: the zip is opened in place and each image is read in memory by its exact name
`img_align_celeba/{file}` from the partition file (nothing is extracted to disk, so no member can
be written anywhere), then decoded with Pillow, whose version is recorded in the provenance.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import PIL
from PIL import Image
from tqdm.auto import tqdm

from aiqn.data.download import raw_file_record
from aiqn.data.imagenet32 import max_images_option
from aiqn.data.registry import DatasetSpec, Source, register

IMAGES = Source(
    filename="img_align_celeba.zip",
    url="https://drive.google.com/uc?export=download&id=0B7EVK8r0v71pZjFTYXZWM3FlRnM",
    sha256="46fb89443c578308acf364d7d379fe1b9efb793042c0af734b6112e4fd3a8c74",
    md5="00d2c5bc6d35e252742224ab0c1e8fcb",
)
PARTITION = Source(
    filename="list_eval_partition.txt",
    url="https://drive.google.com/uc?export=download&id=0B7EVK8r0v71pY0NSMzRuSXJEVkk",
    sha256="fc955bcb3ef8fbdf7d5640d9a8693a8431b5f2ee291a5c1449a1549e7e073fe7",
    md5="d32c9cbf5e040fd4025c592c306e6668",
)
FOLDER = "img_align_celeba"
SIZE, CROP = 64, 148
TRAIN_PARTITION, TEST_PARTITION = 0, 2


def read_partition(path: str | Path) -> dict[str, int]:
    """{"000001.jpg": 0, ...} from list_eval_partition.txt (0 train, 1 validation, 2 test)."""
    partition = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise ValueError(f"{path}, line {number}: expected '<file>.jpg <0|1|2>', got {line!r}")
        partition[fields[0]] = int(fields[1])
    return partition


def crop_and_resize(image: Image.Image, crop: int, size: int) -> np.ndarray:
    """Centred crop x crop square of an RGB image, resized to size x size with BOX: uint8 3 x size x size."""
    width, height = image.size
    left, top = (width - crop) // 2, (height - crop) // 2
    square = image.crop((left, top, left + crop, top + crop))
    return np.asarray(square.resize((size, size), Image.Resampling.BOX), dtype=np.uint8).transpose(2, 0, 1)


def _decode(data: bytes, name: str, archive: str | Path, crop: int, size: int) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            if crop > min(image.size):
                raise ValueError(f"{archive}: member {name} is {image.size[0]}x{image.size[1]}, smaller than the "
                                 f"{crop}x{crop} crop (params.yaml datasets.celeba64.crop)")
            return crop_and_resize(image.convert("RGB"), crop, size)
    except (OSError, Image.DecompressionBombError) as error:
        raise ValueError(f"{archive}: member {name} is not a readable image ({error})") from None


def read_celeba(zip_path: str | Path, partition_path: str | Path, crop: int, size: int,
                max_images: int | None = None) -> tuple[dict, dict]:
    """(train, test) from the CelebA zip and partition file: partitions 0 and 2, in file-name order
    (the first `max_images` of each when given), centre-cropped and resized; labels all 0.
    Raises FileNotFoundError naming the zip and the member when an image is missing."""
    partition = read_partition(partition_path)
    selected = [sorted(name for name, part in partition.items() if part == wanted)[:max_images]
                for wanted in (TRAIN_PARTITION, TEST_PARTITION)]
    splits = []
    with zipfile.ZipFile(zip_path) as archive:
        present = set(archive.namelist())
        for names in selected:  # every member checked before any decoding
            missing = [f"{FOLDER}/{name}" for name in names if f"{FOLDER}/{name}" not in present]
            if missing:
                raise FileNotFoundError(
                    f"{zip_path} has no member {missing[0]} ({len(missing)} images of {partition_path} missing); "
                    f"it is not CelebA's img_align_celeba.zip: delete it and put the right file in its place."
                )
        progress = tqdm(total=sum(map(len, selected)), desc=f"decoding {Path(zip_path).name}", unit="img",
                        mininterval=2)
        with progress:
            for names in selected:
                images = np.empty((len(names), 3, size, size), dtype=np.uint8)
                for index, name in enumerate(names):
                    member = f"{FOLDER}/{name}"
                    images[index] = _decode(archive.read(member), member, zip_path, crop, size)
                    progress.update()
                splits.append({"images": images, "labels": np.zeros(len(names), dtype=np.int64)})
    return splits[0], splits[1]


def prepare(raw_dir: Path, options: dict) -> tuple[dict, dict, dict]:
    """Verify (or download) the zip and the partition file, then build train (partition 0) and
    test (partition 2) at 64x64."""
    crop = options.get("crop", CROP)
    if isinstance(crop, bool) or not isinstance(crop, int) or crop < SIZE:
        raise ValueError(f"celeba64: crop must be an integer >= {SIZE}, got {crop!r} "
                         "(params.yaml datasets.celeba64.crop)")
    max_images = max_images_option(options, "celeba64")
    raw = [raw_file_record(source, raw_dir) for source in (IMAGES, PARTITION)]
    paths = [Path(record["path"]) for record in raw]
    train, test = read_celeba(paths[0], paths[1], crop, SIZE, max_images)
    provenance = {
        "raw_files": raw,
        "source": (f"CelebA aligned & cropped (Liu et al. 2015), JPEGs decoded with Pillow {PIL.__version__}; "
                   f"centred {crop}x{crop} crop, BOX resize to {SIZE}x{SIZE}; unlabelled (all labels 0)"),
        "split": {"kind": "official", "train": f"partition {TRAIN_PARTITION}", "test": f"partition {TEST_PARTITION}",
                  "unused": "partition 1 (validation)",
                  "n_train": int(len(train["labels"])), "n_test": int(len(test["labels"]))},
        "preprocessing": {"crop": crop, "size": SIZE, "resample": "PIL.Image.Resampling.BOX"},
        "max_images": max_images,
    }
    return train, test, provenance


SPEC = register(DatasetSpec(
    name="celeba64", channels=3, height=SIZE, width=SIZE, levels=256, num_classes=1, prepare=prepare,
    sources=(IMAGES, PARTITION), downloads=(IMAGES, PARTITION),
    description="CelebA aligned & cropped, centred 148x148 crop resized to 64x64 (BOX); unlabelled; "
                "train = partition 0, test = partition 2",
    options=("crop", "max_images")))
