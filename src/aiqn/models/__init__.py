"""Networks: the Gated PixelCNN backbone with its categorical (PixelCNN) and quantile
(PixelIQN) heads, and the original ungated PixelCNN (`gated: false`). `build_model(config)` is
the one factory."""

from aiqn.models.pixelcnn import GatedPixelCNN, PixelCNNConfig, from_unit, to_unit
from aiqn.models.plain_pixelcnn import PlainPixelCNN


def build_model(config: PixelCNNConfig | dict) -> GatedPixelCNN | PlainPixelCNN:
    """Build a model from its config (a `PixelCNNConfig` or the dict stored in a checkpoint)."""
    if isinstance(config, dict):
        config = PixelCNNConfig(**config)
    return GatedPixelCNN(config) if config.gated else PlainPixelCNN(config)


__all__ = ["GatedPixelCNN", "PixelCNNConfig", "PlainPixelCNN", "build_model", "from_unit", "to_unit"]
