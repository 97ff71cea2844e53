"""The AIQN-VAE (Ostrovski et al. 2018, appendix): a conv VAE with an AIQN over its latents."""
