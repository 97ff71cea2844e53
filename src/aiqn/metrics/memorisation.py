"""Does a model copy its training set? Nearest-neighbour distances from a model's samples to the
training images, against those from held-out (test) images to the same training images.

A held-out image is a fresh draw from the data distribution: its distance to the nearest training
image says how close an honest new image comes. The `percentile`-th percentile of those
distances is the threshold; the fraction of samples closer to some training image than that is
the memorisation fraction (about percentile/100 for a model that draws fresh images, 1 for one
that returns training images). Distances are Euclidean, in pixel space (images scaled to [0, 1])
or in the feature extractor's space.
"""

from __future__ import annotations

import numpy as np


def pixel_vectors(images: np.ndarray, levels: int) -> np.ndarray:
    """uint8 images (N, C, H, W) in 0..levels-1 -> (N, C*H*W) float32 rows in [0, 1]."""
    return images.reshape(len(images), -1).astype(np.float32) / (levels - 1)


def nearest_neighbours(queries: np.ndarray, bank: np.ndarray, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For each row of `queries` (n, d), the Euclidean distance to its nearest row of `bank` (m, d)
    and that row's index; computed in float64 in blocks of `batch` queries (memory only)."""
    bank = np.asarray(bank, dtype=np.float64)
    bank_sq = (bank ** 2).sum(1)
    distances, indices = [], []
    for start in range(0, len(queries), batch):
        q = np.asarray(queries[start:start + batch], dtype=np.float64)
        squared = (q ** 2).sum(1)[:, None] - 2.0 * q @ bank.T + bank_sq[None, :]  # (batch, m)
        nearest = squared.argmin(1)
        indices.append(nearest)
        distances.append(np.sqrt(np.clip(squared[np.arange(len(q)), nearest], 0.0, None)))
    return np.concatenate(distances), np.concatenate(indices)


def memorisation_fraction(sample_distances: np.ndarray, heldout_distances: np.ndarray,
                          percentile: float = 5.0) -> tuple[float, float]:
    """(fraction of samples whose nearest-training distance is below the threshold, threshold):
    the threshold is the `percentile`-th percentile of held-out images' nearest-training distances."""
    threshold = float(np.percentile(heldout_distances, percentile))
    return float(np.mean(sample_distances < threshold)), threshold
