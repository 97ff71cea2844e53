"""The 95% Student-t interval of a mean, for numbers with noise: a mean over training seeds (the
tables), over test images (bits/dim). Torch-free: the table verbs import it."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def t_interval(values) -> tuple[float, float, float]:
    """Mean of `values` (1-D) and its two-sided 95% Student-t interval (n - 1 degrees of freedom);
    the interval is NaN for fewer than two values."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


def mean_entry(values) -> dict:
    """A metrics entry's value, low and high (rounded to 6 places) of per-item values, e.g. each
    test image's bits/dim: the mean over items and its 95% t interval."""
    mean, low, high = t_interval(values)
    return {"value": mean, "low": round(low, 6), "high": round(high, 6)}
