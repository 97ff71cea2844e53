"""Networks: the Gated PixelCNN backbone with its categorical (PixelCNN) and quantile
(PixelIQN) heads, and the original ungated PixelCNN (`gated: false`). `build_model(config)` is
the one factory."""

from aiqn.core.checkpoint import load_checkpoint
from aiqn.nets.pixelcnn import GatedPixelCNN, PixelCNNConfig, from_unit, to_unit
from aiqn.nets.plain_pixelcnn import PlainPixelCNN


def build_model(config: PixelCNNConfig | dict) -> GatedPixelCNN | PlainPixelCNN:
    """Build a model from its config (a `PixelCNNConfig` or the dict stored in a checkpoint)."""
    if isinstance(config, dict):
        config = PixelCNNConfig(**config)
    return GatedPixelCNN(config) if config.gated else PlainPixelCNN(config)



def model_from_checkpoint(path_or_ckpt, use_ema: bool = True, device: str = "cpu") -> GatedPixelCNN | PlainPixelCNN:
    """Rebuild a PixelCNN from a checkpoint alone (config inside), loading EMA weights by default."""
    ckpt = path_or_ckpt if isinstance(path_or_ckpt, dict) else load_checkpoint(path_or_ckpt)
    model = build_model(ckpt["config"])
    model.load_state_dict(ckpt["ema"] if use_ema else ckpt["model"])
    return model.to(device).eval()


__all__ = ["GatedPixelCNN", "PixelCNNConfig", "PlainPixelCNN", "build_model", "from_unit", "model_from_checkpoint",
           "to_unit"]
