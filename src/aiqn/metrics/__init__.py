"""Sample-quality metrics: FID (Heusel et al. 2017), Inception Score (Salimans et al. 2016)
and the domain-classifier feature extractor that replaces Inception-v3 here."""

from aiqn.metrics.features import (
    ClassifierConfig,
    DomainClassifier,
    build_classifier,
    extract,
    extractor_name,
    load_classifier,
    save_classifier,
    to_unit,
    train_classifier,
)
from aiqn.metrics.frechet import frechet_distance, gaussian_statistics, load_statistics, save_statistics
from aiqn.metrics.inception_score import inception_score

__all__ = [
    "ClassifierConfig",
    "DomainClassifier",
    "build_classifier",
    "extract",
    "extractor_name",
    "frechet_distance",
    "gaussian_statistics",
    "inception_score",
    "load_classifier",
    "load_statistics",
    "save_classifier",
    "save_statistics",
    "to_unit",
    "train_classifier",
]
