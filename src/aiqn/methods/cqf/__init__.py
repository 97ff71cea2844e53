"""CQF (Shmelkov et al. 2018): coverage and quality losses, with a Real NVP flow, and their ablation."""
