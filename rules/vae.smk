# The AIQN-VAE (appendix, Figure 9): a convolutional VAE and an AIQN over its latent space.


def vae_targets():
    """The VAE's report files for `rule all`."""
    return []
