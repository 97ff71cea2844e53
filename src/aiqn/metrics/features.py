"""Domain feature extractor standing in for Inception-v3 when scoring samples.

FID (Heusel et al. 2017) and Inception Score (Salimans et al. 2016), as reported in
"Autoregressive Quantile Networks for Generative Modeling" (Ostrovski, Dabney & Munos,
ICML 2018), need a pretrained classifier. No Inception weights are available here, so we
train a small CNN on the dataset's own training split: its penultimate ReLU layer gives
the FID features and its softmax gives p(y|x) for IS. Scores are therefore comparable
between models scored with the same extractor, not with published Inception numbers.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from aiqn.nets.pixelcnn import to_unit as models_to_unit
from aiqn.core.checkpoint import set_seed
from aiqn.core.io import torch_save_atomic


def extractor_name(dataset: str) -> str:
    """Name of the feature extractor used for `dataset` (recorded next to scores)."""
    return f"{dataset}-classifier"


@dataclass
class ClassifierConfig:
    """Shape of the data and training hyper-parameters of the domain classifier."""

    channels: int
    height: int
    width: int
    levels: int
    num_classes: int
    hidden: int = 64  # feature dimension used for FID
    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    shift: int = 1  # max random translation (pixels) for augmentation; 0 disables it


def to_unit(images, levels: int) -> torch.Tensor:
    """Map integer images in 0..levels-1 (array or tensor) to float32 in [-1, 1]."""
    x = images if torch.is_tensor(images) else torch.as_tensor(np.asarray(images))
    return models_to_unit(x, levels)


class DomainClassifier(nn.Module):
    """conv3x3(32) -> maxpool2 -> conv3x3(64) -> adaptive avg pool 4x4 -> Linear(hidden)+ReLU -> Linear(K)."""

    def __init__(self, channels: int, num_classes: int, hidden: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 32, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(64 * 4 * 4, hidden)
        self.head = nn.Linear(hidden, num_classes)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (features (N, hidden), logits (N, K)) for inputs in [-1, 1] of shape (N, C, H, W)."""
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (N, 32, H, W) -> (N, 32, H//2, W//2)
        h = F.relu(self.conv2(h))
        h = self.pool(h).flatten(1)  # (N, 64, 4, 4) -> (N, 1024)
        feats = F.relu(self.fc(h))  # (N, hidden)
        return feats, self.head(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, K)."""
        return self.features_and_logits(x)[1]


def build_classifier(config: ClassifierConfig) -> DomainClassifier:
    """Fresh (untrained) classifier for `config`."""
    return DomainClassifier(config.channels, config.num_classes, config.hidden)


def _random_shift(x: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by an independent integer offset in [-shift, shift]^2, padding with -1."""
    if shift <= 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift), value=-1.0)  # (N, C, H+2s, W+2s)
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
    rows = dy[:, None] + torch.arange(h)  # (N, H)
    cols = dx[:, None] + torch.arange(w)  # (N, W)
    idx_n = torch.arange(n)[:, None, None, None]
    idx_c = torch.arange(c)[None, :, None, None]
    return padded[idx_n, idx_c, rows[:, None, :, None], cols[:, None, None, :]]  # (N, C, H, W)


@torch.no_grad()
def _accuracy(model: DomainClassifier, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    model.eval()
    correct = 0
    for start in range(0, x.shape[0], batch_size):
        logits = model(x[start : start + batch_size])
        correct += int((logits.argmax(dim=1) == y[start : start + batch_size]).sum())
    return correct / max(1, x.shape[0])


def train_classifier(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    config: ClassifierConfig,
    *,
    num_threads: int | None = 1,
) -> tuple[DomainClassifier, dict]:
    """Train with Adam (cosine-decayed lr, 1-pixel shift augmentation); return (eval model, report).

    `num_threads` sets torch's intra-op threads for the duration (restored afterwards; None
    keeps the caller's setting). One thread is the default: these tiny convs gain nothing from
    more, on a CPU shared with other busy processes 2 threads ran ~10x slower, and a fixed
    count keeps the weights bit-identical across machines (thread count changes round-off).
    """
    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _train(train_images, train_labels, test_images, test_labels, config)
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    config: ClassifierConfig,
) -> tuple[DomainClassifier, dict]:
    expected = (config.channels, config.height, config.width)
    if tuple(train_images.shape[1:]) != expected or tuple(test_images.shape[1:]) != expected:
        raise ValueError(
            f"image shape mismatch: config expects {expected}, got train {train_images.shape[1:]} "
            f"and test {test_images.shape[1:]}"
        )
    set_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = build_classifier(config)
    x_train = to_unit(train_images, config.levels)  # (N, C, H, W) in [-1, 1]
    y_train = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    x_test = to_unit(test_images, config.levels)
    y_test = torch.as_tensor(np.asarray(test_labels), dtype=torch.long)
    n = x_train.shape[0]
    batch_size = min(config.batch_size, n)

    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, config.steps))
    order = torch.randperm(n, generator=generator)
    cursor = 0
    model.train()
    progress = tqdm(range(config.steps), desc="classifier", disable=not sys.stderr.isatty())
    for _ in progress:
        if cursor + batch_size > n:  # new epoch: reshuffle
            order = torch.randperm(n, generator=generator)
            cursor = 0
        idx = order[cursor : cursor + batch_size]
        cursor += batch_size
        xb = _random_shift(x_train[idx], config.shift, generator)
        loss = F.cross_entropy(model(xb), y_train[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        progress.set_postfix(loss=f"{loss.item():.3f}", refresh=False)

    model.eval()
    report = {
        "test_accuracy": _accuracy(model, x_test, y_test),
        "train_accuracy": _accuracy(model, x_train, y_train),
        "steps": int(config.steps),
        "n_train": int(n),
        "n_test": int(x_test.shape[0]),
    }
    return model, report


def save_classifier(path: str | Path, model: DomainClassifier, config: ClassifierConfig, report: dict) -> None:
    """Atomically save {"state_dict", "config", "report"} with torch.save."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch_save_atomic({"state_dict": state, "config": asdict(config), "report": dict(report)}, path)


def load_classifier(path: str | Path) -> tuple[DomainClassifier, ClassifierConfig, dict]:
    """Load (model in eval mode, config, report) written by `save_classifier`."""
    from aiqn.core.checkpoint import load_checkpoint  # weights_only=True, with the error that names the file

    from aiqn.core.damage import reading

    payload = load_checkpoint(path)
    with reading(path, "classifier weights"):  # a checkpoint of another kind, or weights of other shapes
        config = ClassifierConfig(**payload["config"])
        model = build_classifier(config)
        model.load_state_dict(payload["state_dict"])
        report = dict(payload["report"])
    model.eval()
    return model, config, report


@torch.no_grad()
def extract(
    model: DomainClassifier, images_uint8: np.ndarray, levels: int, batch_size: int = 500
) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, hidden) and class probabilities (N, K), both float64, for uint8 images."""
    images_uint8 = np.asarray(images_uint8)
    if images_uint8.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W); got shape {images_uint8.shape}")
    was_training = model.training
    model.eval()
    feats, probs = [], []
    for start in range(0, images_uint8.shape[0], batch_size):
        x = to_unit(images_uint8[start : start + batch_size], levels)
        f, logits = model.features_and_logits(x)
        feats.append(f.double().numpy())
        probs.append(torch.softmax(logits.double(), dim=1).numpy())
    model.train(was_training)
    hidden = model.fc.out_features
    k = model.head.out_features
    features = np.concatenate(feats, axis=0) if feats else np.zeros((0, hidden))
    probabilities = np.concatenate(probs, axis=0) if probs else np.zeros((0, k))
    return features, probabilities
