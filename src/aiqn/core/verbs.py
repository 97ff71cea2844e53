"""The one way a verb is declared: `verb(name, func, help) -> argparse parser`, handed by
`aiqn.cli` to each layer's `add_verbs`, and the argument groups and parsers several verbs share."""

from __future__ import annotations

import argparse
from typing import Callable

Declare = Callable[[str, Callable, str], argparse.ArgumentParser]  # verb(name, func, help_text)


def run_arguments(p: argparse.ArgumentParser, architecture: str | None = None, train_config: str | None = None
                  ) -> None:
    """Arguments of a verb that trains one run: dataset, data, configs as JSON, state and output folders,
    device, progress. `architecture` / `train_config`: the help of --architecture / --train-config
    (None: the verb takes no such argument)."""
    p.add_argument("--dataset", required=True)
    p.add_argument("--data", required=True, help="train.npz of the dataset")
    if architecture is not None:
        p.add_argument("--architecture", default="{}", help=architecture)
    if train_config is not None:
        p.add_argument("--train-config", required=True, help=train_config)
    p.add_argument("--state-dir", required=True, help="resumable working folder (not a rule output)")
    p.add_argument("--out-dir", required=True, help="the final checkpoint, train_log.csv, config.json, train.json")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")


def sample_arguments(p: argparse.ArgumentParser, batch_size: int = 1000,
                     batch_help: str = "latents decoded per pass (same images for any)") -> None:
    """Arguments of a verb that draws N samples from one checkpoint."""
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=batch_size, help=batch_help)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")


def grid_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of a figures verb that draws a sample grid (real | model panels) and loss curves."""
    p.add_argument("--dataset", required=True)
    p.add_argument("--real", required=True, help="test.npz (the real panel)")
    p.add_argument("--samples", nargs="+", required=True, help="NAME=PATH of each sample panel, in order")
    p.add_argument("--train-logs", nargs="+", required=True, help="NAME=PATH of each train_log.csv")
    p.add_argument("--grid-n", type=int, default=64)
    p.add_argument("--grid-out", required=True)


def wildcards(text: str) -> dict[str, str]:
    """'dataset=digits,model=pixeliqn' -> {'dataset': 'digits', 'model': 'pixeliqn'}."""
    return dict(pair.split("=", 1) for pair in text.split(",") if pair)


def pairs(items: list[str]) -> dict[str, str]:
    """['NAME=PATH', ...] -> {NAME: PATH} in the given order (names may contain spaces, not '='); an item
    without a name, an '=' or a path is refused, naming it."""
    result = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not (name and sep and path):
            raise ValueError(f"{item!r}: expected NAME=PATH")
        result[name] = path
    return result
