"""Prepare a registered dataset into `{out_dir}/{train,val,test}.npz` plus `meta.json`: the dataset's own
train/test split, and a validation split carved from its train split (for choosing configurations and
checkpoints; the models never train on it, and the test split is only reported)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aiqn.data.registry import check_split, get_dataset
from aiqn.core.io import save_npz_atomic, sha256_file, write_json


def carve_validation(train: dict, fraction: float, seed: int) -> tuple[dict, dict]:
    """Split `fraction` of a train split off as validation: seeded and class-stratified. Returns (train,
    validation); each keeps `index`, the positions in the dataset's own train split."""
    from sklearn.model_selection import train_test_split

    labels = train["labels"]
    try:
        keep, held = train_test_split(np.arange(len(labels)), test_size=fraction, random_state=seed, stratify=labels)
    except ValueError as exc:  # e.g. a class with one image, or a fraction that leaves a class out
        raise ValueError(f"params.yaml: validation.fraction={fraction} cannot carve a class-stratified validation "
                         f"split from {len(labels)} training images ({exc}); raise or lower it") from exc
    keep, held = np.sort(keep), np.sort(held)
    return ({"images": train["images"][keep], "labels": labels[keep], "index": keep},
            {"images": train["images"][held], "labels": labels[held], "index": held})


def prepare_dataset(name: str, raw_dir: str | Path, out_dir: str | Path, options: dict,
                    validation: dict | None = None) -> dict:
    """Run the dataset's `prepare`, carve the validation split (`validation`: {"fraction", "seed"}, the
    params' `validation` section; None: no validation split) from its train split, validate the arrays,
    write them and a meta.json; return meta."""
    spec = get_dataset(name)
    out_dir = Path(out_dir)
    train, test, provenance = spec.prepare(Path(raw_dir), options)
    splits = {"train": train, "test": test}
    if validation is not None:
        splits["train"], splits["val"] = carve_validation(train, validation["fraction"], validation["seed"])
    meta = {
        "dataset": name,
        "shape": list(spec.shape),
        "levels": spec.levels,
        "num_classes": spec.num_classes,
        "provenance": provenance,
        "splits": {},
    }
    if validation is not None:
        meta["validation"] = {"fraction": validation["fraction"], "seed": validation["seed"],
                              "carved_from": "the dataset's train split, stratified by label"}
    for split_name, split in splits.items():
        check_split(split, spec, f"{name}/{split_name}")
        path = out_dir / f"{split_name}.npz"
        save_npz_atomic(path, images=split["images"], labels=split["labels"])
        meta["splits"][split_name] = {
            "path": str(path),
            "sha256": sha256_file(path),
            "n": int(split["images"].shape[0]),
        }
    write_json(out_dir / "meta.json", meta)
    return meta
