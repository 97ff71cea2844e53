"""Scoring samples: FID and Inception score against reference statistics of real data.

FID follows Ostrovski et al. 2018 (appendix): N model samples against N' training images. The
feature extractor is either the literature's Inception-v3 (`inception`, through torch-fidelity;
aiqn.metrics.inception) or, offline and on datasets Inception was not made for, a classifier
trained by the pipeline on the dataset's labels (`classifier`). Every metric carries a label
that names its extractor (with the weights' sha256 for Inception) and sample counts, so numbers
from different extractors are never mistaken for one another.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
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
from aiqn.core.io import file_record, save_npz_atomic, sha256_file
from aiqn.metrics.frechet import bootstrap_fid
from aiqn.metrics.kid import kernel_inception_distance
from aiqn.metrics.memorisation import memorisation_fraction, nearest_neighbours, pixel_vectors

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


def fid_label(extractor: str, n_samples: int, n_reference: int, what: str = "samples", split: str = "train") -> str:
    """e.g. 'FID (digits-classifier, 1000 samples vs 1000 train)'; `split`: the reference's (train or val)."""
    return f"FID ({extractor}, {n_samples} {what} vs {n_reference} {split})"


def is_label(extractor: str, n_samples: int, splits: int, what: str = "samples") -> str:
    """e.g. 'IS (digits-classifier, 1000 samples, 10 splits)'."""
    return f"IS ({extractor}, {n_samples} {what}, {splits} splits)"


def reference_statistics(
    extractor, data_path: str | Path, n: int, seed: int, out_path: str | Path, name: str, levels: int,
    split: str = "train",
) -> dict:
    """Features of `n` images of a split (a seeded subset; n = 0: every image) -> mean and covariance saved
    to `out_path`. `extractor` comes from `load_extractor`; `name` is the label it gets in metric labels,
    `split` ("train" or "val") the one FID labels name."""
    from aiqn.data import load_split

    images, _ = load_split(data_path)
    if n > len(images):
        raise ValueError(f"{data_path} has {len(images)} images, fewer than n_reference={n}; lower it in params.yaml")
    n = n or len(images)
    index = np.sort(np.random.default_rng(seed).choice(len(images), size=n, replace=False))
    features, _ = extractor(images[index], levels)
    mu, sigma = gaussian_statistics(features)
    meta = {"n": n, "seed": seed, "extractor": name, "split": split, "data": file_record(data_path),
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
    return _score_features(features, probs, reference_path, splits, name, len(images), what, extractor)


def _score_features(features, probs, reference_path, splits, name, n, what, extractor) -> list[dict]:
    mu, sigma = gaussian_statistics(features)
    mu_ref, sigma_ref, ref_meta = load_statistics(reference_path)
    if ref_meta.get("extractor_checkpoint", {}).get("sha256") not in (None, extractor.sha256):
        raise ValueError(f"{reference_path} was computed with another extractor than {extractor.path}; "
                         "rerun the reference_stats rule")
    n_ref = int(ref_meta["n"])
    return [{"metric": "FID", "value": frechet_distance(mu, sigma, mu_ref, sigma_ref),
             "label": fid_label(name, n, n_ref, what, ref_meta.get("split", "train"))}, is_entry(probs, splits, name, what)]


def validation_fid_entry(features: np.ndarray, validation_path: str | Path, name: str) -> dict:
    """'FID vs val' of sample features against the validation split's statistics (reference_statistics of
    val.npz): what Table 1's 'chosen on validation' rows pick a checkpoint by. Every checkpoint of a model
    is scored on the same number of samples, so the N-dependent bias does not change the choice."""
    mu, sigma = gaussian_statistics(features)
    mu_val, sigma_val, meta = load_statistics(validation_path)
    return {"metric": "FID vs val", "value": frechet_distance(mu, sigma, mu_val, sigma_val),
            "label": fid_label(name, len(features), int(meta["n"]), "samples", "val")}


def is_entry(probs: np.ndarray, splits: int, name: str, what: str = "samples") -> dict:
    """The IS metric entry of class probabilities (N, K), with its spread over splits."""
    is_mean, is_std = inception_score(probs, splits=splits)
    return {"metric": "IS", "value": is_mean, "std": is_std, "label": is_label(name, len(probs), splits, what)}

@dataclass(frozen=True)
class Comparison:
    """How the N-vs-N comparisons are carved and scored (params.yaml `evaluation`): `n` images a
    side (n_compare), the seed of the carving, KID's subsets, the memorisation percentile and the
    number of bootstrap resamples of the main FID (0: none)."""

    n: int
    seed: int = 0
    kid_subsets: int = 100
    kid_subset_size: int = 100
    percentile: float = 5.0
    bootstrap: int = 200
    scale_kid_features: bool = True  # see ReferenceSets.kid_scale


def reference_features(extractor, train_path: str | Path, test_path: str | Path, out_path: str | Path, name: str,
                       levels: int) -> dict:
    """Features of every training and test image, and each test image's nearest-training distance in
    pixel and feature space (the held-out side of the memorisation check), saved to `out_path`."""
    from aiqn.data import load_split

    train, _ = load_split(train_path)
    test, _ = load_split(test_path)
    train_features, _ = extractor(train, levels)
    test_features, _ = extractor(test, levels)
    pixel_distances, _ = nearest_neighbours(pixel_vectors(test, levels), pixel_vectors(train, levels))
    feature_distances, _ = nearest_neighbours(test_features, train_features)
    meta = {"extractor": name, "train": file_record(train_path), "test": file_record(test_path),
            "extractor_checkpoint": {"path": str(extractor.path), "sha256": extractor.sha256}}
    save_npz_atomic(out_path, train=np.asarray(train_features, np.float32), test=np.asarray(test_features, np.float32),
                    heldout_pixel=pixel_distances, heldout_feature=feature_distances,
                    meta=np.array(json.dumps(meta, sort_keys=True)))
    return meta


@dataclass(frozen=True)
class ReferenceSets:
    """What `reference_features` wrote, and the carving of `Comparison`: `train_a` and `train_b`
    (n disjoint training images each) and `test` (n test images), as row indices. `kid_scale`
    multiplies features before KID's kernel (x.y / d + 1)^3: 1 for Inception (the literature's
    KID), and for the pipeline's classifier, whose feature scale is arbitrary (mean |x|^2 / d of
    about 10^2 on digits, where the cubic term swamps the kernel and the estimate's spread is ~40%
    of its value), the factor that gives the training features mean |x|^2 / d = 1."""

    path: str
    train_features: np.ndarray
    test_features: np.ndarray
    heldout_pixel: np.ndarray
    heldout_feature: np.ndarray
    train_a: np.ndarray
    train_b: np.ndarray
    test: np.ndarray
    kid_scale: float = 1.0


def load_reference_sets(path: str | Path, comparison: Comparison, extractor) -> ReferenceSets:
    """Read a `reference_features` file and carve it; the error names `evaluation.n_compare` when
    the splits are too small for n a side. Cached per process: `aiqn chain` scores every
    checkpoint of a model against the same file."""
    return _reference_sets(str(path), comparison, extractor.sha256, str(extractor.path),
                           isinstance(extractor, ClassifierExtractor))


@functools.lru_cache(maxsize=4)
def _reference_sets(path: str, comparison: Comparison, sha256: str, extractor_path: str,
                    classifier: bool) -> ReferenceSets:
    from aiqn.core.damage import reading
    from aiqn.core.io import read_npz

    what = "reference features"
    arrays = read_npz(path, what, {"train": (2, "f"), "test": (2, "f"), "heldout_pixel": (1, "f"),
                                   "heldout_feature": (1, "f"), "meta": (0, "U")})
    with reading(path, what):
        meta = json.loads(str(arrays.pop("meta")))
        extractor_sha256 = meta["extractor_checkpoint"]["sha256"]
    if extractor_sha256 != sha256:
        raise ValueError(f"{path} was computed with another extractor than {extractor_path}; "
                         "rerun the reference_features rule")
    n, n_train, n_test = comparison.n, len(arrays["train"]), len(arrays["test"])
    if n > n_test or 2 * n > n_train:
        raise ValueError(f"evaluation.n_compare = {n} needs {n} test and {2 * n} training images; {path} has "
                         f"{n_test} and {n_train}: lower evaluation.n_compare in params.yaml")
    rng = np.random.default_rng(comparison.seed)
    train_order = rng.permutation(n_train)
    train = arrays["train"].astype(np.float64)
    scale = 1.0
    if comparison.scale_kid_features and classifier:
        scale = float(1.0 / np.sqrt(np.mean((train ** 2).sum(1)) / train.shape[1]))
    return ReferenceSets(str(path), arrays["train"], arrays["test"], arrays["heldout_pixel"], arrays["heldout_feature"],
                         np.sort(train_order[:n]), np.sort(train_order[n:2 * n]),
                         np.sort(rng.choice(n_test, n, replace=False)), scale)


def _fid(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(*gaussian_statistics(a), *gaussian_statistics(b))


def comparison_metrics(features: np.ndarray | None, distances: tuple[np.ndarray, np.ndarray] | None,
                       sets: ReferenceSets, comparison: Comparison, name: str) -> list[dict]:
    """The N-vs-N metrics of one row. A model's row: `features` of its samples (the first n are
    compared) and `distances` (pixel, feature) from every sample to its nearest training image.
    The real-data floor: `features` None (n test images against `train_a`, n training images
    `train_b` against the n test images) and `distances` None (the test images' own)."""
    n, c = comparison.n, comparison
    if features is None:
        vs_train, vs_test = sets.test_features[sets.test], sets.train_features[sets.train_b]
        pixel, feature = sets.heldout_pixel, sets.heldout_feature
    else:
        if len(features) < n:
            raise ValueError(f"{len(features)} samples, fewer than evaluation.n_compare = {n}: lower it, or raise "
                             "sampling.n_samples")
        vs_train = vs_test = features[:n]
        pixel, feature = distances
    train_a, test = sets.train_features[sets.train_a], sets.test_features[sets.test]
    s = sets.kid_scale
    kid_train = kernel_inception_distance(s * vs_train, s * train_a, c.kid_subsets, c.kid_subset_size, c.seed)
    kid_test = kernel_inception_distance(s * vs_test, s * test, c.kid_subsets, c.kid_subset_size, c.seed)
    kid = f"{c.kid_subsets} subsets of {c.kid_subset_size}" + ("" if s == 1.0 else ", unit-scaled features")
    held = f"< p{c.percentile:g} of {len(sets.heldout_pixel)} test"
    pixel_fraction, pixel_threshold = memorisation_fraction(pixel, sets.heldout_pixel, c.percentile)
    feature_fraction, feature_threshold = memorisation_fraction(feature, sets.heldout_feature, c.percentile)
    images = f"vs {len(sets.train_features)} train"  # no query count: the floor (test images) shares the column
    return [
        {"metric": "FID vs train", "value": _fid(vs_train, train_a), "label": f"FID vs train ({name}, {n} vs {n})"},
        {"metric": "FID vs test", "value": _fid(vs_test, test), "label": f"FID vs test ({name}, {n} vs {n})"},
        {"metric": "KID vs train", "value": 1e3 * kid_train[0], "std": 1e3 * kid_train[1],
         "label": f"KID x1000 vs train ({name}, {n} vs {n}, {kid})"},
        {"metric": "KID vs test", "value": 1e3 * kid_test[0], "std": 1e3 * kid_test[1],
         "label": f"KID x1000 vs test ({name}, {n} vs {n}, {kid})"},
        {"metric": "memorised (pixels)", "value": pixel_fraction, "threshold": pixel_threshold,
         "label": f"memorised, pixels ({images}, {held})"},
        {"metric": "memorised (features)", "value": feature_fraction, "threshold": feature_threshold,
         "label": f"memorised, features ({name}, {images}, {held})"},
    ]


def score_against_references(images: np.ndarray, extractor, reference_path: str | Path, splits: int, name: str,
                             levels: int, sets: ReferenceSets, train_images: np.ndarray,
                             comparison: Comparison, bootstrap: bool = True,
                             validation_path: str | Path | None = None) -> list[dict]:
    """A model's samples: `score_images` (FID, with its bootstrap interval when `bootstrap`, IS), FID vs
    the validation statistics (`validation_path`, where given), then the N-vs-N metrics and the
    memorisation check against `train_images` (uint8)."""
    features, probs = extractor(images, levels)
    metrics = _score_features(features, probs, reference_path, splits, name, len(images), "samples", extractor)
    if validation_path is not None:
        metrics.append(validation_fid_entry(features, validation_path, name))
    if bootstrap and comparison.bootstrap:
        mu_ref, sigma_ref, _ = load_statistics(reference_path)
        low, high = bootstrap_fid(features, mu_ref, sigma_ref, comparison.bootstrap, comparison.seed)
        metrics[0].update(low=low, high=high, interval=f"bootstrap 95% over {comparison.bootstrap} resamples "
                                                        "of the samples (one training seed)")
    pixel, _ = nearest_neighbours(pixel_vectors(images, levels), pixel_vectors(train_images, levels))
    feature, _ = nearest_neighbours(features, sets.train_features)
    return metrics + comparison_metrics(features, (pixel, feature), sets, comparison, name)
