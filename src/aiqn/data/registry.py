"""The dataset registry: the one place a new dataset plugs in.

A `DatasetSpec` says what the pipeline needs to know about a dataset (image shape, number of
intensity levels, number of classes) and how to turn raw files into the two arrays every later
stage reads: `data/processed/{name}/{train,test}.npz` with `images` (uint8, N x C x H x W,
values in 0..levels-1) and `labels` (int64, N). `prepare` also returns provenance: the sha256
of every raw file it read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Source:
    """A raw file a dataset is built from: where it comes from and the checksum it must have."""

    filename: str
    url: str | None = None
    sha256: str | None = None
    md5: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """What the pipeline knows about one dataset.

    `prepare(raw_dir, options) -> (train, test, provenance)` returns two dicts with `images`
    (uint8, N x C x H x W) and `labels` (int64, N), and a dict describing what was read.
    """

    name: str
    channels: int
    height: int
    width: int
    levels: int
    num_classes: int
    prepare: Callable[[Path, dict], tuple[dict, dict, dict]]
    sources: tuple[Source, ...] = field(default_factory=tuple)
    description: str = ""
    # raw files the pipeline fetches into data/raw/{name}/ (the `download` rule), each with its
    # URL (or none: placed by hand) and checksum; empty for datasets that ship with a package
    downloads: tuple[Source, ...] = field(default_factory=tuple)
    # the keys its `datasets.<name>` entry in params.yaml may hold (checked when the Snakefile is
    # parsed, so a misspelt option is refused instead of silently taking the default)
    options: tuple[str, ...] = ("test_fraction", "split_seed")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return (self.channels, self.height, self.width)


_REGISTRY: dict[str, DatasetSpec] = {}
_DOWNLOADS: dict[str, tuple[Source, ...]] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add a dataset to the registry (called at import time by each dataset module)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"dataset {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    if spec.downloads:
        register_downloads(spec.name, spec.downloads)
    return spec


def register_downloads(group: str, sources: tuple[Source, ...]) -> None:
    """Declare raw files that live in `data/raw/{group}/` (a dataset's archives, or another
    input such as the Inception weights); the `download` rule fetches and verifies them."""
    if group in _DOWNLOADS:
        raise ValueError(f"download group {group!r} is registered twice")
    _DOWNLOADS[group] = tuple(sources)


def downloads(group: str) -> tuple[Source, ...]:
    """The raw files of a download group (empty for a dataset that needs none)."""
    return _DOWNLOADS.get(group, ())


def download_source(group: str, filename: str) -> Source:
    """The Source named `filename` in a download group; the error lists what exists."""
    for source in _DOWNLOADS.get(group, ()):
        if source.filename == filename:
            return source
    known = ", ".join(f"{g}/{s.filename}" for g, items in sorted(_DOWNLOADS.items()) for s in items) or "none"
    raise KeyError(f"no raw file {group}/{filename} is registered; known raw files: {known}")


def get_dataset(name: str) -> DatasetSpec:
    """Look a dataset up by name; the error lists the names that exist."""
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise KeyError(
            f"unknown dataset {name!r}; registered datasets: {known}. "
            "A new dataset is added as a module in src/aiqn/data/ that calls register()."
        )
    return _REGISTRY[name]


def stratified_split(images: np.ndarray, labels: np.ndarray, options: dict) -> tuple[dict, dict, dict]:
    """Seeded, class-stratified train/test split (`options`: test_fraction, split_seed).
    Returns (train, test, split info for provenance); each split keeps `index` into the input."""
    from sklearn.model_selection import train_test_split

    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=options["test_fraction"],
                                           random_state=options["split_seed"], stratify=labels)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    info = {"test_fraction": options["test_fraction"], "split_seed": options["split_seed"]}
    return ({"images": images[train_idx], "labels": labels[train_idx], "index": train_idx},
            {"images": images[test_idx], "labels": labels[test_idx], "index": test_idx}, info)


def registered_names() -> list[str]:
    """Names of all registered datasets."""
    return sorted(_REGISTRY)


def check_split(split: dict, spec: DatasetSpec, where: str) -> None:
    """Raise if a prepared split does not match its spec (dtype, shape, level range, labels)."""
    images, labels = split["images"], split["labels"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != spec.shape:
        raise ValueError(
            f"{where}: images must be uint8 of shape (N, {', '.join(map(str, spec.shape))}), "
            f"got {images.dtype} {images.shape}"
        )
    if images.max() >= spec.levels:
        raise ValueError(f"{where}: pixel value {images.max()} >= levels={spec.levels}")
    if labels.shape != (images.shape[0],) or labels.min() < 0 or labels.max() >= spec.num_classes:
        raise ValueError(f"{where}: labels must be N ints in [0, {spec.num_classes})")


def load_split(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a prepared split: `(images uint8 N x C x H x W, labels int64 N)`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist; it is written by the `prepare_data` rule "
            f"(run `snakemake --cores all {path}`)."
        )
    from aiqn.core.io import read_npz

    arrays = read_npz(path, "a prepared split", {"images": (4, "u"), "labels": (1, "iu")})
    if len(arrays["labels"]) != len(arrays["images"]):
        from aiqn.core.damage import DamagedFile

        raise DamagedFile(path, "a prepared split", f"{len(arrays['images'])} images but {len(arrays['labels'])} labels")
    return arrays["images"], arrays["labels"].astype(np.int64)
