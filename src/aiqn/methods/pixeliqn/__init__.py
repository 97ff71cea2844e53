"""The AIQN paper's PixelCNN and PixelIQN (Ostrovski et al. 2018): train step, sweeps, inpainting,
quantile density, figures and verbs."""
