"""Damaged files: one error that names the file, says what is wrong with it and how to fix it.

Files reach a run damaged in ways the atomic writers cannot prevent: a copy or rsync cut short, a
broken DVC cache or remote, a file edited by hand. Every reader of a pipeline file (checkpoints,
prepared arrays, samples and shards, reference statistics and features, metrics and provenance JSON,
classifier weights, params overlays) reads inside `reading(path, what)`, which turns whatever the
library raises (OSError, BadZipFile, zlib.error, EOFError, UnpicklingError, JSONDecodeError,
YAMLError, KeyError, ...) into one `DamagedFile`:

    results/runs/digits/pixeliqn/seed-0/ckpt_0001500.pt (a checkpoint) is damaged: truncated (a zip
    archive without its end record, 20,000 bytes). Fix: delete it and rerun the rule that writes it:
    `rm results/...pt && snakemake --cores all results/...pt`

A file that DVC tracks (a `.dvc` file beside it or above it, or an output in dvc.lock) is restored
with `dvc checkout` / `dvc pull` instead. A missing file stays a FileNotFoundError: it is not damaged.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import zipfile
import zlib
from functools import lru_cache
from pathlib import Path

ZIP_MAGIC = b"PK\x03\x04"
# What the readers raise for a damaged file. A FileNotFoundError is left alone (a missing file is not
# damaged: its callers already name the rule that writes it); PermissionError likewise.
DAMAGE_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error, pickle.UnpicklingError, ValueError,
                 KeyError, IndexError, TypeError, RuntimeError, UnicodeDecodeError)


class DamagedFile(ValueError):
    """A pipeline file that cannot be read as what it should be. `path`, `problem` and `fix` are the
    parts of the message; a ValueError, so callers that refuse malformed input keep working."""

    def __init__(self, path: str | os.PathLike, what: str, problem: str, fix: str | None = None):
        self.path, self.what, self.problem = str(path), what, problem
        self.fix = fix or fix_for(path)
        super().__init__(f"{self.path} ({what}) is damaged: {problem}. Fix: {self.fix}")


def fix_for(path: str | os.PathLike) -> str:
    """How to get a good copy of `path`: `dvc checkout` for a DVC-tracked file, else delete and rerun."""
    shown = str(path)
    if dvc_tracked(path):
        return (f"restore the committed copy with `dvc checkout {shown}` (or `dvc pull {shown}` if the cache "
                "lacks it too)")
    return f"delete it and rerun the rule that writes it: `rm {shown} && snakemake --cores all {shown}`"


def dvc_tracked(path: str | os.PathLike) -> bool:
    """Whether DVC versions `path`: a `<path>.dvc` beside it or beside a folder above it, or `path` (or a
    folder above it) among the outputs in the nearest dvc.lock."""
    path = Path(os.path.abspath(path))
    for candidate in (path, *path.parents):
        if candidate.name and candidate.with_name(candidate.name + ".dvc").is_file():
            return True
    for root in path.parents:
        lock = root / "dvc.lock"
        if lock.is_file():
            outs = _dvc_lock_outputs(str(lock), lock.stat().st_mtime_ns)
            relative = path.relative_to(root)
            return any(Path(out) == relative or Path(out) in relative.parents for out in outs)
    return False


@lru_cache(maxsize=4)
def _dvc_lock_outputs(lock: str, _mtime: int) -> tuple[str, ...]:
    import yaml

    try:
        with open(lock) as handle:
            stages = (yaml.safe_load(handle) or {}).get("stages", {})
    except (OSError, yaml.YAMLError):
        return ()
    return tuple(out["path"] for stage in stages.values() if isinstance(stage, dict)
                 for out in stage.get("outs", []) if isinstance(out, dict) and "path" in out)


def describe(path: str | os.PathLike, error: BaseException | None = None) -> str:
    """What is wrong with `path`, from the file itself and the error a reader raised on it."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if size == 0:
        return "empty (0 bytes)"
    if isinstance(error, json.JSONDecodeError):
        return f"bad JSON at line {error.lineno}, column {error.colno}: {error.msg}"
    if type(error).__name__ in ("ScannerError", "ParserError", "ComposerError", "ConstructorError"):
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"bad YAML{where}: {getattr(error, 'problem', None) or error}"
    if isinstance(error, UnicodeDecodeError):
        return f"not text (a byte that is not UTF-8 at offset {error.start:,})"
    if path.suffix in (".npz", ".pt") or head == ZIP_MAGIC:
        if head != ZIP_MAGIC:
            return f"not a zip archive (it starts with bytes {head!r}, {size:,} bytes in all)"
        if not zipfile.is_zipfile(path):
            return f"truncated (a zip archive without its end record, {size:,} bytes)"
        bad = failed_member(path)
        if bad:
            return f"a member is corrupted ({bad})"
    if isinstance(error, KeyError):
        return f"it has no entry {_key(error)}"
    if error is None:
        return "unreadable"
    return f"{type(error).__name__}: {error}".strip()


def _key(error: KeyError) -> str:
    return repr(error.args[0]) if error.args else "?"


def failed_member(path: str | os.PathLike) -> str | None:
    """What fails zipfile's own check of every member's CRC (a flipped byte that a reader such as
    torch.load does not notice), or None when every member is intact."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as exc:
        return str(exc)
    return f"member {bad!r} fails its CRC check" if bad else None


@contextlib.contextmanager
def reading(path: str | os.PathLike, what: str):
    """Read `path` inside this block: a damaged file raises one `DamagedFile` that names it.

    Keep the block to the reading itself (and checks of what was read), so that a bug elsewhere is
    never reported as a damaged file."""
    try:
        yield
    except (DamagedFile, FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except DAMAGE_ERRORS as error:
        raise DamagedFile(path, what, describe(path, error)) from error
    except Exception as error:  # yaml.YAMLError and other library errors of a parser
        if type(error).__module__.split(".")[0] in ("yaml", "numpy", "torch"):
            raise DamagedFile(path, what, describe(path, error)) from error
        raise
