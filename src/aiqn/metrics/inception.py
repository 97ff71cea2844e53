"""Inception-v3 features for FID and IS, as in the literature (the paper's Table 1).

The network is torch-fidelity's `FeatureExtractorInceptionV3` ("inception-v3-compat"): the
TensorFlow 2015-12-05 Inception-v3 graph ported to PyTorch, bit-compatible with the original TF
FID / IS code (its TF-1.x bilinear resize to 299x299, 1008 logits). We use its 2048-d pool
features for FID and its `logits_unbiased` (softmax) for IS; our own FID / IS arithmetic
(aiqn.metrics.frechet / inception_score) is checked against torch-fidelity's in
tests/test_inception.py wherever torch-fidelity is importable.

torch-fidelity is an optional extra (`pip install -e '.[inception]'`): it imports torchvision,
which needs a torch build it matches (a CUDA machine's usual install); the CPU-only torch of
the development machines cannot import it, so there the evaluation rules stop with a message.

The weights file is a pipeline input, `data/raw/inception/weights-inception-2015-12-05-6726825d.pth`,
fetched by the `download` rule from torch-fidelity's release (or placed there by hand) and
checked against the sha256 prefix in its name (torch.hub's convention). Its full sha256 goes
into every metric label (first 12 digits) and provenance record (all of it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from aiqn.data.download import raw_file_record
from aiqn.data.registry import Source, register_downloads

WEIGHTS = Source(
    filename="weights-inception-2015-12-05-6726825d.pth",
    url="https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
    sha256="6726825d",  # torch.hub style: the file's sha256 starts with these digits
)
register_downloads("inception", (WEIGHTS,))

NAME = "inception-v3"
FEATURES = "2048"
LOGITS = "logits_unbiased"


class InceptionUnavailable(ImportError):
    """torch-fidelity (and so torchvision) cannot be imported in this environment."""


def to_rgb255(images: np.ndarray, levels: int) -> np.ndarray:
    """uint8 images (N, C, H, W) with values 0..levels-1 -> uint8 RGB 0..255 (N, 3, H, W).

    Values are rescaled linearly (round(v * 255 / (levels - 1))); grey images are repeated
    into the three channels, as Inception-v3 expects RGB."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1 or 3, H, W); got {images.shape}")
    if levels != 256:
        images = np.rint(images.astype(np.float64) * (255.0 / (levels - 1))).astype(np.uint8)
    if images.shape[1] == 1:
        images = np.repeat(images, 3, axis=1)
    return np.ascontiguousarray(images, dtype=np.uint8)


def _feature_extractor_class():
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as error:
        raise InceptionUnavailable(
            f"evaluation.extractor is 'inception' but torch-fidelity cannot be imported ({error}); install the "
            "optional extra with `pip install -e '.[inception]'` on a machine whose torch matches torchvision "
            "(a CUDA machine), or set evaluation.extractor: classifier in params.yaml."
        ) from None
    return FeatureExtractorInceptionV3


class InceptionExtractor:
    """Callable: uint8 images -> (2048-d pool features, softmax over the 1008 logits), float64."""

    def __init__(self, weights_path: str | Path, device: str = "cpu", batch_size: int = 200):
        weights_path = Path(weights_path)
        if not weights_path.exists():
            raise FileNotFoundError(
                f"{weights_path} does not exist; it is written by the `download` rule "
                f"(snakemake {weights_path}) or placed there by hand ({WEIGHTS.url}, sha256 starting with "
                f"{WEIGHTS.sha256})."
            )
        # verifies the checksum prefix and gives the full sha256 for labels and provenance (one read)
        self.sha256 = raw_file_record(WEIGHTS, weights_path.parent)["sha256"]
        self.path = weights_path
        cls = _feature_extractor_class()
        self.model = cls(NAME + "-compat", [FEATURES, LOGITS], feature_extractor_weights_path=str(weights_path))
        self.model = self.model.to(device).eval()
        self.device = device
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, images: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
        rgb = to_rgb255(images, levels)
        features, probs = [], []
        for start in range(0, len(rgb), self.batch_size):
            batch = torch.from_numpy(rgb[start : start + self.batch_size]).to(self.device)
            pool, logits = self.model(batch)  # (B, 2048), (B, 1008), in features_list order
            features.append(pool.double().cpu().numpy())
            probs.append(torch.softmax(logits.double(), dim=1).cpu().numpy())
        return np.concatenate(features), np.concatenate(probs)
