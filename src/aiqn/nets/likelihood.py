"""Exact likelihood of a categorical PixelCNN: bits/dim of images, optionally given their class."""

from __future__ import annotations

import numpy as np
import torch

from aiqn.nets.objectives import categorical_nll, nats_to_bits_per_dim
from aiqn.nets.pixelcnn import GatedPixelCNN, to_unit


@torch.no_grad()
def bits_per_dim_per_image(model: GatedPixelCNN, images: np.ndarray, batch_size: int = 500, device: str = "cpu",
                           labels: np.ndarray | None = None) -> np.ndarray:
    """Negative log-likelihood of each uint8 image (N, C, H, W) under a categorical PixelCNN, in bits
    per dimension (N,); for a class-conditional model, -log p(x | y) given each image's class `labels` (N,)."""
    if model.config.head != "categorical":
        raise ValueError("bits/dim needs the categorical head")
    if model.config.num_classes and labels is None:
        raise ValueError("a class-conditional model's bits/dim needs the images' class labels")
    per_image = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start : start + batch_size]).long().to(device)
        classes = None
        if model.config.num_classes:
            classes = torch.from_numpy(np.asarray(labels[start : start + batch_size])).long().to(device)
        nll = categorical_nll(model(to_unit(batch, model.config.levels), class_labels=classes), batch)  # (B, C, H, W)
        per_image.append(nll.double().flatten(1).mean(1).cpu().numpy())  # (B,) nats per dimension
    return nats_to_bits_per_dim(np.concatenate(per_image))


def bits_per_dim(model: GatedPixelCNN, images: np.ndarray, batch_size: int = 500, device: str = "cpu",
                 labels: np.ndarray | None = None) -> float:
    """Mean negative log-likelihood of uint8 `images` under a categorical PixelCNN, in bits/dim;
    for a class-conditional model, -log p(x | y) given each image's class `labels` (N,)."""
    return float(bits_per_dim_per_image(model, images, batch_size, device, labels).mean())
