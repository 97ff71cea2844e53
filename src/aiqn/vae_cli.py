"""Command-line verbs of the AIQN-VAE (appendix, Figure 9), registered by `aiqn.cli.build_parser`."""

from __future__ import annotations


def add_vae_verbs(verb) -> None:
    """Register the VAE verbs with `verb(name, func, help) -> argparse parser` of aiqn.cli."""
