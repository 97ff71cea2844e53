"""Reproduction pipeline for "Autoregressive Quantile Networks for Generative Modeling"
(Ostrovski, Dabney, Munos, ICML 2018): Gated PixelCNN and PixelIQN, trained, sampled and
evaluated (FID / IS) end to end by the Snakemake workflow at the repository root."""

__version__ = "0.1.0"
