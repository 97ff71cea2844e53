"""Reporting: the Table 1 analogue (ours next to the paper's numbers) and the figures."""

from .figures import image_grid, plot_loss_curves, plot_sample_grids, plot_training_curves
from .tables import build_table1, load_metric_records, metrics_summary, write_table1

__all__ = [
    "build_table1",
    "image_grid",
    "load_metric_records",
    "metrics_summary",
    "plot_loss_curves",
    "plot_sample_grids",
    "plot_training_curves",
    "write_table1",
]
