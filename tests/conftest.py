"""Shared fixtures: the real digits data, prepared once per test session."""

import pytest
import torch

import aiqn.data  # noqa: F401  (registers datasets)
from aiqn.data.prepare import prepare_dataset


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    """data/processed/digits equivalent in a temporary folder (train.npz, test.npz, meta.json)."""
    out = tmp_path_factory.mktemp("digits")
    prepare_dataset("digits", out / "raw", out, {"test_fraction": 0.2, "split_seed": 0})
    return out


@pytest.fixture(autouse=True)
def _single_thread():
    """Bitwise comparisons in tests are made with one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
