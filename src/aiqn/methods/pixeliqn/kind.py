"""The checkpoint kind of this method (PixelCNN and PixelIQN; checkpoints older than kinds carry none)."""

KIND = "pixelcnn"
