"""AGAVE (Lucas & Verbeek 2018): a VAE with an auxiliary image and a PixelCNN decoder conditioned on f(z)."""
