"""Prepare a registered dataset into `{out_dir}/{train,test}.npz` plus `meta.json`."""

from __future__ import annotations

from pathlib import Path

from aiqn.data.registry import check_split, get_dataset
from aiqn.core.io import save_npz_atomic, sha256_file, write_json


def prepare_dataset(name: str, raw_dir: str | Path, out_dir: str | Path, options: dict) -> dict:
    """Run the dataset's `prepare`, validate the arrays, write them and a meta.json; return meta."""
    spec = get_dataset(name)
    out_dir = Path(out_dir)
    train, test, provenance = spec.prepare(Path(raw_dir), options)
    meta = {
        "dataset": name,
        "shape": list(spec.shape),
        "levels": spec.levels,
        "num_classes": spec.num_classes,
        "provenance": provenance,
        "splits": {},
    }
    for split_name, split in (("train", train), ("test", test)):
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
