"""Inception Score (Salimans et al. 2016, "Improved Techniques for Training GANs").

IS = exp(E_x KL(p(y|x) || p(y))), computed per consecutive split of the samples and
reported as mean and std over splits. Here p(y|x) comes from a domain classifier
(see `aiqn.metrics.features`) since no Inception weights are available; the AIQN paper
(Ostrovski, Dabney & Munos, ICML 2018) reports IS for PixelIQN vs Gated PixelCNN.
"""

from __future__ import annotations

import numpy as np
from scipy.special import xlogy


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Mean and std over `splits` consecutive chunks of exp(mean KL(p(y|x) || p(y))), float64."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be 2-D (N, K); got shape {probs.shape}")
    if splits < 1:
        raise ValueError(f"splits must be >= 1; got {splits}")
    n = probs.shape[0]
    if n < splits:
        raise ValueError(f"need at least as many samples as splits; got N={n} < splits={splits}")
    if np.any(probs < 0):
        raise ValueError("probs must be non-negative")
    scores = []
    for chunk in np.array_split(probs, splits, axis=0):  # each (n_i, K), consecutive rows
        marginal = chunk.mean(axis=0, keepdims=True)  # (1, K) = p(y)
        # KL per row: sum_k p log p - p log q; xlogy makes 0 * log 0 = 0. q > 0 wherever p > 0.
        safe_marginal = np.where(marginal > 0, marginal, 1.0)
        kl = (xlogy(chunk, chunk) - xlogy(chunk, safe_marginal)).sum(axis=1)  # (n_i,)
        scores.append(np.exp(kl.mean()))
    scores = np.asarray(scores, dtype=np.float64)
    return float(scores.mean()), float(scores.std())
