"""Scoring samples: FID and Inception score against reference statistics of real data.

FID follows Ostrovski et al. 2018 (appendix): N model samples against N' training images. The
feature extractor is either the literature's Inception-v3 (`inception`, through torch-fidelity;
aiqn.metrics.inception) or, offline and on datasets Inception was not made for, a classifier
trained by the pipeline on the dataset's labels (`classifier`). Every metric carries a label
that names its extractor (with the weights' sha256 for Inception) and sample counts, so numbers
from different extractors are never mistaken for one another.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aiqn.metrics import (
    extract,
    frechet_distance,
    gaussian_statistics,
    inception_score,
    load_classifier,
    load_statistics,
    save_statistics,
)
from aiqn.core.io import file_record, sha256_file

EXTRACTORS = ("classifier", "inception")


class ClassifierExtractor:
    """Callable: uint8 images -> (features, class probabilities) of a pipeline-trained classifier."""

    def __init__(self, path: str | Path, batch_size: int = 500):
        self.path = Path(path)
        self.model, self.config, _ = load_classifier(path)
        self.sha256 = sha256_file(path)
        self.batch_size = batch_size

    def __call__(self, images: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
        if levels != self.config.levels:
            raise ValueError(f"{self.path} was trained on {self.config.levels} levels, the images have {levels}")
        return extract(self.model, images, self.config.levels, batch_size=self.batch_size)


def load_extractor(kind: str, path: str | Path, device: str = "cpu", batch_size: int = 500):
    """The feature extractor of FID / IS: `classifier` (a checkpoint the pipeline trained) or
    `inception` (torch-fidelity's Inception-v3 with the weights file at `path`)."""
    if kind == "classifier":
        return ClassifierExtractor(path, batch_size)
    if kind == "inception":
        from aiqn.metrics.inception import InceptionExtractor

        return InceptionExtractor(path, device=device, batch_size=batch_size)
    raise ValueError(f"unknown extractor {kind!r}; expected one of {EXTRACTORS}")


def extractor_label(name: str, kind: str, path: str | Path, sha256: str | None = None) -> str:
    """The extractor as metric labels name it: its name, plus the weights' sha256 (first 12
    hex digits) for Inception, whose weights come from outside the pipeline. `sha256`: the
    weights' digest when the caller has it (an extractor's `.sha256`), else `path` is hashed."""
    if kind != "inception":
        return name
    return f"{name} sha256:{(sha256 or sha256_file(path))[:12]}"


def fid_label(extractor: str, n_samples: int, n_reference: int, what: str = "samples") -> str:
    """e.g. 'FID (digits-classifier, 1000 samples vs 1000 train)'."""
    return f"FID ({extractor}, {n_samples} {what} vs {n_reference} train)"


def is_label(extractor: str, n_samples: int, splits: int, what: str = "samples") -> str:
    """e.g. 'IS (digits-classifier, 1000 samples, 10 splits)'."""
    return f"IS ({extractor}, {n_samples} {what}, {splits} splits)"


def reference_statistics(
    extractor, data_path: str | Path, n: int, seed: int, out_path: str | Path, name: str, levels: int
) -> dict:
    """Features of `n` training images (a seeded subset) -> mean and covariance saved to `out_path`.
    `extractor` comes from `load_extractor`; `name` is the label it gets in metric labels."""
    from aiqn.data import load_split

    images, _ = load_split(data_path)
    if n > len(images):
        raise ValueError(f"{data_path} has {len(images)} images, fewer than n_reference={n}; lower it in params.yaml")
    index = np.sort(np.random.default_rng(seed).choice(len(images), size=n, replace=False))
    features, _ = extractor(images[index], levels)
    mu, sigma = gaussian_statistics(features)
    meta = {"n": n, "seed": seed, "extractor": name, "data": file_record(data_path),
            "extractor_checkpoint": {"path": str(extractor.path), "sha256": extractor.sha256}}
    save_statistics(out_path, mu, sigma, **meta)
    return meta


def score_images(
    images: np.ndarray, extractor, reference_path: str | Path, splits: int, name: str, levels: int,
    what: str = "samples",
) -> list[dict]:
    """FID against the reference statistics and IS of uint8 `images` (N, C, H, W); `extractor`
    comes from `load_extractor` and must be the one the reference statistics were made with."""
    features, probs = extractor(images, levels)
    mu, sigma = gaussian_statistics(features)
    mu_ref, sigma_ref, ref_meta = load_statistics(reference_path)
    if ref_meta.get("extractor_checkpoint", {}).get("sha256") not in (None, extractor.sha256):
        raise ValueError(f"{reference_path} was computed with another extractor than {extractor.path}; "
                         "rerun the reference_stats rule")
    n, n_ref = len(images), int(ref_meta["n"])
    is_mean, is_std = inception_score(probs, splits=splits)
    return [
        {"metric": "FID", "value": frechet_distance(mu, sigma, mu_ref, sigma_ref),
         "label": fid_label(name, n, n_ref, what)},
        {"metric": "IS", "value": is_mean, "std": is_std, "label": is_label(name, n, splits, what)},
    ]
