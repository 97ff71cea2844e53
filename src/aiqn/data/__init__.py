"""Datasets: the registry and one module per dataset (importing this package registers them)."""

from aiqn.data import digits  # noqa: F401  (registers "digits")
from aiqn.data import photos32  # noqa: F401  (registers "photos32")
from aiqn.data.registry import DatasetSpec, get_dataset, load_split, registered_names

__all__ = ["DatasetSpec", "get_dataset", "load_split", "registered_names"]
