"""Publishing a run: finished checkpoints and logs hard-linked from the resumable state folder into
the rule's output folder, `train.json` beside the final checkpoint, and the samples a verb writes."""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from aiqn.core.environment import environment
from aiqn.core.damage import DamagedFile
from aiqn.core.io import file_record, read_json, read_npz, save_npz_atomic, sha256_file, write_json
from aiqn.core.runinfo import TRAIN_TIMES, write_runinfo

log = logging.getLogger("aiqn")


def publish(state_dir: str, out_dir: str, checkpoints: dict) -> None:
    """Hard-link (or copy) finished checkpoints and the log from the resumable state folder into
    the rule's declared output folder (with the log's wall times, when there are any). The state folder is never a declared output, so Snakemake's
    clean-up of a failed job cannot delete what a resumed run needs."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources = list(checkpoints.values()) + [Path(state_dir) / "train_log.csv", Path(state_dir) / "config.json"]
    if (Path(state_dir) / TRAIN_TIMES).exists():
        sources.append(Path(state_dir) / TRAIN_TIMES)
    for source in sources:
        target = out / source.name
        if target.exists():
            target.unlink()
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)


def publish_final(args, final: Path, step: int, model_config, train_config, began: float, device: str,
                  runinfo: dict | None = None, **extra) -> None:
    """Publish the final checkpoint of a run (`publish`) and write `train.json` beside it: the
    checkpoint, log and data hashes, both configs (dataclasses), seed, device and environment, plus
    `extra` fields; this invocation's wall seconds, the host and `runinfo` go to `train.json.runinfo.json`. Used by the verbs that train the sibling models (VAE,
    AGAVE, CQF); `args` has dataset, data, state_dir and out_dir."""
    publish(args.state_dir, args.out_dir, {step: final})
    out = Path(args.out_dir)
    write_json(out / "train.json", {
        "dataset": args.dataset, **extra, "step": step, "checkpoint": file_record(out / final.name),
        "train_log": file_record(out / "train_log.csv"), "data": file_record(args.data),
        "config": {"model": asdict(model_config), "train": asdict(train_config)}, "seed": train_config.seed,
        "device": device, "environment": environment(device)})
    write_runinfo(out / "train.json", seconds_this_invocation=round(time.time() - began, 2), **(runinfo or {}))
    log.info("step %d checkpoint -> %s (%.1f s)", step, out / final.name, time.time() - began)


def write_samples(out: str, images: np.ndarray, labels: np.ndarray | None, checkpoint: str, step: int, device: str,
                  **meta) -> None:
    """Samples `images` (n, C, H, W) uint8 and their class `labels` (n,) (None: -1, unconditional) to
    `out` (.npz), and `out.json` beside it: `meta` (n, seed, batch size, how they were drawn, ...), the
    step, the checkpoint's and the samples' sha256, the device and the environment; the host in
    `out.runinfo.json`."""
    save_npz_atomic(out, images=images, labels=labels if labels is not None else np.full(len(images), -1))
    write_json(out + ".json", {**meta, "step": step, "checkpoint": file_record(checkpoint),
                               "samples": file_record(out), "device": device, "environment": environment(device)})
    write_runinfo(out)


def read_samples(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, C, H, W) uint8, labels (n,) int; -1 where unconditional) of a file `write_samples`
    wrote. A damaged file raises `DamagedFile`: truncated, not an .npz, a missing array, a wrong shape
    or dtype, or bytes whose sha256 differs from the one its `.json` record holds."""
    arrays = read_npz(path, "samples", {"images": (4, "u"), "labels": (1, "iu")}, optional=("labels",))
    images = arrays["images"]
    labels = arrays.get("labels", np.full(len(images), -1))
    sidecar = Path(f"{path}.json")
    if sidecar.exists():
        recorded = (read_json(sidecar, "the samples' record").get("samples") or {}).get("sha256")
        actual = sha256_file(path)
        if recorded and recorded != actual:
            raise DamagedFile(path, "samples", f"checksum mismatch: its sha256 is {actual[:16]}..., {sidecar} "
                              f"records {recorded[:16]}...")
    return images, labels


def grid_record(out_json: str, dataset: str, real: str, grid_n: int, samples: dict[str, str],
                logs: dict[str, str]) -> None:
    """The JSON beside a sample-grid figure: the real images, each panel's samples (left to right, with
    their own JSON) and the training logs, by sha256."""
    write_json(out_json, {"dataset": dataset, "real": file_record(real), "grid_n": grid_n,
                          "panels": [{"name": name, **file_record(path), "meta": read_json(path + ".json")}
                                     for name, path in samples.items()],
                          "train_logs": {name: file_record(path) for name, path in logs.items()}})
