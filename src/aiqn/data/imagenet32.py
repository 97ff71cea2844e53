"""imagenet32: the downsampled ImageNet 32x32 of van den Oord et al. 2016 (PixelRNN), unlabelled.

This is the ImageNet 32x32 that PixelRNN/PixelCNN and the AIQN paper report likelihoods and
samples on: the ILSVRC 2012 train and validation images (TFDS lists 1,281,149 and 49,999),
resized to 32x32 RGB and stored as one PNG per image in two tarballs:

    train_32x32.tar   4,113,018,880 bytes   PNGs under train_32x32/   -> train
    valid_32x32.tar     161,474,560 bytes   PNGs under valid_32x32/   -> test

They used to be served at http://image-net.org/small/; that address no longer serves them
(image-net.org now needs a login), so `ensure_raw_file` will, in practice, stop with a one-line
message saying where to put each file by hand and its sha256. Get them from the ImageNet download
page after logging in (https://image-net.org/download-images.php; the *old*, unlabelled PNG
tarballs, not the labelled `Imagenet32_*.zip`), or from a mirror of the original tarballs (those
TensorFlow Datasets' `downsampled_imagenet/32x32` points to, or Academic Torrents), and put them,
unrenamed, in data/raw/imagenet32/. The sha256 check makes any copy as good as the original.

No labels: this version has none, so num_classes = 1 and every label is 0 (class-conditional
ImageNet32 needs the labelled version of Chrabaszcz et al. 2017, `Imagenet32_train.zip`: other
files, another resize and pickled arrays; not supported yet).

Reading: each tarball is opened in place (uncompressed, random access); its member list is read,
the regular files under `{folder}/` ending in .png are sorted by name, and each is read in memory
and decoded with Pillow into a preallocated uint8 array (nothing is extracted to disk, so no
member can be written anywhere). Sorting by name makes the arrays independent of the order of
the tarball. Option `max_images` (int, default null = all) keeps the first N images of each split
in that order, for smoke runs; it is recorded in the provenance. Images are uint8, N x 3 x 32 x
32, 256 levels (the full train split is 1.28M x 3072 bytes, about 3.9 GB in memory).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import PIL
from PIL import Image
from tqdm.auto import tqdm

from aiqn.data.download import raw_file_record
from aiqn.data.registry import DatasetSpec, Source, register

# sizes and sha256 from TensorFlow Datasets' url_checksums/downsampled_imagenet.txt
TRAIN = Source(
    filename="train_32x32.tar",
    url="http://image-net.org/small/train_32x32.tar",
    sha256="244a323d48f8d72f65ad8b54658c01fed68d2d7bdc77ccb43da58c11e94224e5",
)
VALID = Source(
    filename="valid_32x32.tar",
    url="http://image-net.org/small/valid_32x32.tar",
    sha256="862e559462b24cf736212a19f6b0d47b55c2dc8ebdaa95ccecfe71260124c8f7",
)
SIZE = 32


def max_images_option(options: dict, dataset: str) -> int | None:
    """`options["max_images"]`: None (all images) or a positive int; anything else is refused."""
    value = options.get("max_images")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{dataset}: max_images must be a positive integer or null, got {value!r} "
                         f"(params.yaml datasets.{dataset}.max_images)")
    return value


def _member_name(name: str) -> str:
    return name[2:] if name.startswith("./") else name


def decode_image(data: bytes, size: tuple[int, int], name: str, archive: str | Path) -> np.ndarray:
    """Decode an image file's bytes with Pillow to uint8 3 x H x W (RGB); `size` is the (width,
    height) it must have. Errors name the member and the archive."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.size != size:
                raise ValueError(f"{archive}: member {name} is {image.size[0]}x{image.size[1]}, "
                                 f"expected {size[0]}x{size[1]}")
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)  # (H, W, 3)
    except (OSError, Image.DecompressionBombError) as error:
        raise ValueError(f"{archive}: member {name} is not a readable image ({error})") from None
    return pixels.transpose(2, 0, 1)


def read_png_tar(path: str | Path, folder: str, max_images: int | None = None) -> np.ndarray:
    """The PNGs under `folder/` in a tarball, sorted by member name (the first `max_images` of
    them when given), decoded to uint8 N x 3 x 32 x 32. Raises FileNotFoundError naming the
    archive and the folder when it holds no PNG there."""
    with tarfile.open(path, "r:*") as tar:
        members = {}
        for member in tar:
            name = _member_name(member.name)
            if member.isfile() and name.startswith(f"{folder}/") and name.lower().endswith(".png"):
                members[name] = member
        if not members:
            seen = ", ".join(sorted(_member_name(m.name) for m in tar.getmembers())[:3]) or "nothing"
            raise FileNotFoundError(
                f"{path} has no member {folder}/*.png (it holds {seen}); it is not the downsampled ImageNet "
                f"32x32 tarball: delete it and put the right file in its place."
            )
        names = sorted(members)[:max_images]
        images = np.empty((len(names), 3, SIZE, SIZE), dtype=np.uint8)
        for index, name in enumerate(tqdm(names, desc=f"decoding {Path(path).name}", unit="img", mininterval=2)):
            images[index] = decode_image(tar.extractfile(members[name]).read(), (SIZE, SIZE), name, path)
    return images


def prepare(raw_dir: Path, options: dict) -> tuple[dict, dict, dict]:
    """Verify the two tarballs (or say where to put them) and decode train (train_32x32) and test
    (valid_32x32); every label is 0."""
    max_images = max_images_option(options, "imagenet32")
    raw = [raw_file_record(source, raw_dir) for source in (TRAIN, VALID)]  # both checked before any decoding
    paths = [Path(record["path"]) for record in raw]
    splits = []
    for path, folder in zip(paths, ("train_32x32", "valid_32x32")):
        images = read_png_tar(path, folder, max_images)
        splits.append({"images": images, "labels": np.zeros(len(images), dtype=np.int64)})
    train, test = splits
    provenance = {
        "raw_files": raw,
        "source": (f"downsampled ImageNet 32x32 (van den Oord et al. 2016), PNGs decoded with Pillow "
                   f"{PIL.__version__}; unlabelled (all labels 0)"),
        "split": {"kind": "official", "train": "train_32x32.tar (train_32x32/*.png, sorted by name)",
                  "test": "valid_32x32.tar (valid_32x32/*.png, sorted by name)",
                  "n_train": int(len(train["labels"])), "n_test": int(len(test["labels"]))},
        "max_images": max_images,
    }
    return train, test, provenance


SPEC = register(DatasetSpec(
    name="imagenet32", channels=3, height=SIZE, width=SIZE, levels=256, num_classes=1, prepare=prepare,
    sources=(TRAIN, VALID), downloads=(TRAIN, VALID),
    description="downsampled ImageNet 32x32 (van den Oord et al. 2016), unlabelled; train_32x32 / valid_32x32",
    options=("max_images",)))
