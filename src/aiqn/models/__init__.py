"""Networks: the Gated PixelCNN backbone with its categorical (PixelCNN) and quantile
(PixelIQN) heads. `build_model(config)` is the one factory."""

from aiqn.models.pixelcnn import GatedPixelCNN, PixelCNNConfig, from_unit, to_unit


def build_model(config: PixelCNNConfig | dict) -> GatedPixelCNN:
    """Build a model from its config (a `PixelCNNConfig` or the dict stored in a checkpoint)."""
    if isinstance(config, dict):
        config = PixelCNNConfig(**config)
    return GatedPixelCNN(config)


__all__ = ["GatedPixelCNN", "PixelCNNConfig", "build_model", "from_unit", "to_unit"]
