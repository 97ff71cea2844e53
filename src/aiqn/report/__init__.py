"""Reporting: the Table 1 analogue (ours next to the paper's numbers), the figures and the
provenance records.

The table and figure functions are loaded on first use (PEP 562), so that importing
`aiqn.report.provenance`, which every CLI call does, does not pay for pandas and matplotlib.
"""

from importlib import import_module

_EXPORTS = {
    "build_table1": "tables",
    "load_metric_records": "tables",
    "metrics_document": "summary",
    "write_table1": "tables",
    "image_grid": "figures",
    "plot_class_grid": "figures",
    "plot_inpainting": "figures",
    "plot_loss_curves": "figures",
    "plot_memorisation": "figures",
    "plot_sample_grids": "figures",
    "plot_training_curves": "figures",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
