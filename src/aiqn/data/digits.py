"""scikit-learn's bundled 8x8 handwritten digits: the embedded default dataset.

1,797 grey images of 8x8 pixels with 17 intensity levels (0..16) and 10 classes, shipped inside
scikit-learn (`sklearn/datasets/data/digits.csv.gz`), so the pipeline runs with no network.
The split into train and test is a seeded, class-stratified permutation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import sklearn
from sklearn.datasets import load_digits

from aiqn.data.registry import DatasetSpec, Source, register, stratified_split
from aiqn.core.io import sha256_file

DIGITS_SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
BUNDLED_FILE = Path(sklearn.__file__).parent / "datasets" / "data" / "digits.csv.gz"


def prepare(raw_dir: Path, options: dict) -> tuple[dict, dict, dict]:
    """Split the bundled digits into train/test (stratified, seeded by `options["split_seed"]`)."""
    del raw_dir  # nothing to download: the data ships with scikit-learn
    found = sha256_file(BUNDLED_FILE)
    if found != DIGITS_SHA256:
        raise ValueError(
            f"{BUNDLED_FILE}: sha256 {found} differs from the expected {DIGITS_SHA256}; "
            "reinstall scikit-learn (pip install --force-reinstall scikit-learn)."
        )
    bunch = load_digits()
    images = bunch.images.astype(np.uint8)[:, None, :, :]  # (N, 1, 8, 8), values 0..16
    labels = bunch.target.astype(np.int64)
    train, test, split = stratified_split(images, labels, options)
    provenance = {
        "raw_files": [
            {"path": str(BUNDLED_FILE), "sha256": found, "locator": "sklearn:datasets/data/digits.csv.gz"},
        ],
        "source": f"scikit-learn {sklearn.__version__} bundled digits (load_digits)",
        "split": split,
    }
    return train, test, provenance


SPEC = register(DatasetSpec(
    name="digits", channels=1, height=8, width=8, levels=17, num_classes=10, prepare=prepare,
    sources=(Source(filename="digits.csv.gz", sha256=DIGITS_SHA256),),
    description="scikit-learn's bundled 8x8 digits (UCI optdigits test set), 17 grey levels"))
