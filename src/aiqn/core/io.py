"""Files: hashing, atomic writes (a full disk keeps the previous file), JSON and .npz reading that names
a damaged file (aiqn.core.damage)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aiqn.core.damage import DamagedFile, reading


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


class DiskFull(OSError):
    """A write that ran out of space (ENOSPC / EDQUOT); the previous file at the path is intact."""


def atomic_write_bytes(path: str | os.PathLike, write) -> None:
    """Call `write(tmp_path)` then rename onto `path`, so a crash never leaves half a file. A full disk
    leaves the previous file as it was, no temporary file, and a `DiskFull` error that says so."""
    target, tmp = _atomic_target(path)
    try:
        write(tmp)
        os.replace(tmp, target)
    except Exception as error:
        full = _out_of_space(error)
        if full is None or isinstance(error, DiskFull):
            raise
        free = shutil.disk_usage(target.parent).free
        kept = "the previous file is kept" if target.exists() else "nothing was written there"
        raise DiskFull(full.errno, f"the disk is full while writing {target} ({free:,} bytes free on its file "
                       f"system; {kept}). Free space there (or point the run at a larger disk) and rerun") from error
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _out_of_space(error: BaseException | None) -> OSError | None:
    """The ENOSPC / EDQUOT OSError behind `error`, if any: a writer may raise its own error while it
    cleans up (torch.save's zip writer raises a RuntimeError over the OSError), so follow the chain."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return error
        error = error.__cause__ or error.__context__
    return None


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8, line ends as given) through a temporary file and an atomic rename."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)

    atomic_write_bytes(path, write)


def write_csv_atomic(frame, path: str | os.PathLike, **to_csv) -> None:
    """`frame.to_csv(path, **to_csv)` (pandas) through a temporary file and an atomic rename."""
    write_text_atomic(path, frame.to_csv(**to_csv))


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
        with open(tmp, "wb") as handle, zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
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


def read_json(path: str | os.PathLike, what: str = "a JSON record") -> Any:
    """Read a JSON file; a damaged one raises `DamagedFile` (bad JSON at line N, empty, not text)."""
    with reading(path, what), open(path, encoding="utf-8") as handle:
        return json.load(handle)


def read_csv(path: str | os.PathLike, what: str = "a table", **read_csv_options):
    """`pandas.read_csv(path)`; a damaged file (empty, cut mid-row, not text) raises `DamagedFile`."""
    import pandas as pd

    with reading(path, what):
        return pd.read_csv(path, **read_csv_options)


ArraySpec = tuple  # (ndim or None, dtype kinds such as "u", "iu", "f", or None): what a member must be
KIND_NAMES = {"u": "unsigned integer", "i": "integer", "f": "floating point", "U": "text", "b": "bool"}


def read_npz(path: str | os.PathLike, what: str, arrays: dict[str, ArraySpec | None],
             optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The named members of an .npz file, read into memory and checked: every key of `arrays` must be
    there (`optional` ones may be missing), with the ndim and dtype kind its spec gives. A damaged file
    (truncated, empty, not a zip, a corrupted or missing member, a wrong shape or dtype) raises
    `DamagedFile` naming it."""
    with reading(path, what), np.load(path, allow_pickle=False) as data:
        present = set(data.files)
        missing = [key for key in arrays if key not in present and key not in optional]
        if missing:
            raise DamagedFile(path, what, f"it has no array {missing[0]!r} (it holds {sorted(present)})")
        loaded = {key: data[key] for key in arrays if key in present}
    for key, spec in arrays.items():
        if spec is None or key not in loaded:
            continue
        ndim, kinds = spec
        array = loaded[key]
        if ndim is not None and array.ndim != ndim:
            raise DamagedFile(path, what, f"array {key!r} has shape {array.shape}, not {ndim} dimensions")
        if kinds is not None and array.dtype.kind not in kinds:
            raise DamagedFile(path, what, f"array {key!r} has dtype {array.dtype}, not "
                              + " or ".join(KIND_NAMES.get(kind, kind) for kind in kinds))
    return loaded
