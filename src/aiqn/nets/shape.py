"""The image every network config starts with (its first four fields, in this order)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ImageShape:
    """channels x height x width images with `levels` intensity levels per channel (0..levels-1)."""

    channels: int = 1
    height: int = 8
    width: int = 8
    levels: int = 17
