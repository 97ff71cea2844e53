"""Files: hashing, atomic writes, JSON I/O."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_record(path: str | os.PathLike) -> dict[str, str]:
    """`{"path": ..., "sha256": ...}` for a file: how outputs name the inputs they came from."""
    return {"path": str(path), "sha256": sha256_file(path)}


def _atomic_target(path: str | os.PathLike) -> tuple[Path, str]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return path, tmp


def atomic_write_bytes(path: str | os.PathLike, write) -> None:
    """Call `write(tmp_path)` then rename onto `path`, so a crash never leaves half a file."""
    target, tmp = _atomic_target(path)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def interned(obj: Any) -> Any:
    """`obj` with every str in its dicts, lists and tuples replaced by `sys.intern(str)`. Pickle writes
    a string once and refers back to it by object identity, so equal strings that are distinct objects
    (a resumed run's optimizer keys come from the loaded file, an uninterrupted run's from the code)
    gave different bytes; interned, equal strings are one object in every run."""
    if isinstance(obj, str):
        return sys.intern(obj)
    if type(obj) in (dict, OrderedDict):  # a state_dict: an OrderedDict whose _metadata is kept
        copy = type(obj)((interned(key), interned(value)) for key, value in obj.items())
        if hasattr(obj, "_metadata"):
            copy._metadata = obj._metadata
        return copy
    if type(obj) in (list, tuple):
        return type(obj)(interned(item) for item in obj)
    return obj


def torch_save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` through a temporary file and an atomic rename, of `interned(obj)`. It writes through
    an open handle: given a file name, torch stores that (random, temporary) name as the zip archive's
    root folder, so equal objects gave different bytes; through a handle the folder is torch's fixed
    'archive'."""
    obj = interned(obj)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)

    atomic_write_bytes(path, write)


ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the zip format's earliest date: an .npz's entries carry no write time


def save_npz_atomic(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """What `np.savez_compressed` writes (np.load reads it), through a temporary file and an atomic
    rename, with every entry dated ZIP_TIME: numpy dates each entry with the time of writing, so
    equal arrays gave different bytes."""

    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, array in arrays.items():
                entry = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_TIME)
                entry.compress_type = zipfile.ZIP_DEFLATED
                with archive.open(entry, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)

    atomic_write_bytes(path, write)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Pretty, key-sorted JSON written atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as handle:
            json.dump(obj, handle, indent=2, sort_keys=True)
            handle.write("\n")

    atomic_write_bytes(path, write)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file."""
    with open(path) as handle:
        return json.load(handle)
