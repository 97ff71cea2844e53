"""Evaluation: FID and Inception score of samples against reference statistics of real data,
and bits/dim of the categorical PixelCNN on the test split.

FID follows Ostrovski et al. 2018 (appendix): N model samples against N' training images. With
no Inception-v3 weights on this machine, digits use a classifier trained by the pipeline as the
feature extractor; every metric carries a label that names its extractor and sample counts, so
numbers from different extractors are never mistaken for one another.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from aiqn.metrics import (
    extract,
    frechet_distance,
    gaussian_statistics,
    inception_score,
    load_classifier,
    load_statistics,
    save_statistics,
)
from aiqn.models import GatedPixelCNN, to_unit
from aiqn.objectives import categorical_nll, nats_to_bits_per_dim
from aiqn.utils import file_record


def fid_label(extractor: str, n_samples: int, n_reference: int, what: str = "samples") -> str:
    """e.g. 'FID (digits-classifier, 1000 samples vs 1000 train)'."""
    return f"FID ({extractor}, {n_samples} {what} vs {n_reference} train)"


def is_label(extractor: str, n_samples: int, splits: int, what: str = "samples") -> str:
    """e.g. 'IS (digits-classifier, 1000 samples, 10 splits)'."""
    return f"IS ({extractor}, {n_samples} {what}, {splits} splits)"


def reference_statistics(
    extractor_path: str | Path, data_path: str | Path, n: int, seed: int, out_path: str | Path, extractor: str
) -> dict:
    """Features of `n` training images (a seeded subset) -> mean and covariance saved to `out_path`."""
    from aiqn.data import load_split

    images, _ = load_split(data_path)
    if n > len(images):
        raise ValueError(f"{data_path} has {len(images)} images, fewer than n_reference={n}; lower it in params.yaml")
    index = np.sort(np.random.default_rng(seed).choice(len(images), size=n, replace=False))
    model, config, _ = load_classifier(extractor_path)
    features, _ = extract(model, images[index], config.levels)
    mu, sigma = gaussian_statistics(features)
    meta = {"n": n, "seed": seed, "extractor": extractor, "data": file_record(data_path),
            "extractor_checkpoint": file_record(extractor_path)}
    save_statistics(out_path, mu, sigma, **meta)
    return meta


def score_images(
    images: np.ndarray, extractor_path: str | Path, reference_path: str | Path, splits: int, extractor: str,
    what: str = "samples",
) -> list[dict]:
    """FID against the reference statistics and IS of uint8 `images` (N, C, H, W)."""
    model, config, _ = load_classifier(extractor_path)
    features, probs = extract(model, images, config.levels)
    mu, sigma = gaussian_statistics(features)
    mu_ref, sigma_ref, ref_meta = load_statistics(reference_path)
    n, n_ref = len(images), int(ref_meta["n"])
    is_mean, is_std = inception_score(probs, splits=splits)
    return [
        {"metric": "FID", "value": frechet_distance(mu, sigma, mu_ref, sigma_ref),
         "label": fid_label(extractor, n, n_ref, what)},
        {"metric": "IS", "value": is_mean, "std": is_std, "label": is_label(extractor, n, splits, what)},
    ]


@torch.no_grad()
def bits_per_dim(model: GatedPixelCNN, images: np.ndarray, batch_size: int = 500, device: str = "cpu") -> float:
    """Mean negative log-likelihood of uint8 `images` under a categorical PixelCNN, in bits/dim."""
    if model.config.head != "categorical":
        raise ValueError("bits/dim needs the categorical head")
    total, count = 0.0, 0
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start : start + batch_size]).long().to(device)
        nll = categorical_nll(model(to_unit(batch, model.config.levels)), batch)
        total += float(nll.double().sum())
        count += nll.numel()
    return float(nats_to_bits_per_dim(total / count))
