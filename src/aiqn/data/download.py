"""Raw files for datasets that are downloaded: fetch once, verify always, extract safely.

`ensure_raw_file(source, raw_dir)` returns `raw_dir / source.filename`, checked against the
sha256 (or md5) the `Source` carries:

- the file is already there: its checksum is verified and it is used (a mismatch stops with a
  message naming the file, both checksums and the fix; the file is never silently replaced);
- it is not: it is downloaded from `source.url` into a temporary file in `raw_dir`, checked,
  then renamed into place (a crash or a bad download never leaves a half or wrong file under
  the final name);
- the download fails (offline, DNS, HTTP error, timeout): `RawFileMissing` says, on one line,
  the URL, the full path to put the file at by hand and the checksum it must have.

`safe_extract(tar_path, dest)` extracts a tarball after checking every member: nothing may land
outside `dest` (absolute names, `..`, links pointing outside, device files are refused), and
nothing is extracted when any member is refused.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from aiqn.data.registry import Source

TIMEOUT_S = 60.0
_CHUNK = 1 << 20


class RawFileMissing(FileNotFoundError):
    """A raw file is not in raw_dir and could not be downloaded (one-line message with the fix).

    A FileNotFoundError, so `python -m aiqn prepare` prints it as one line without a traceback."""


class ChecksumMismatch(ValueError):
    """A raw file (local or just downloaded) does not have the checksum its Source names."""


class UnsafeArchive(ValueError):
    """A tarball member would be written outside the extraction folder."""


def expected_checksum(source: Source) -> tuple[str, str]:
    """(algorithm, hex digest) a source must match: sha256 when given, else md5.

    A sha256 shorter than 64 hex digits (at least 8) is a prefix, as in torch.hub's file names
    (`weights-...-6726825d.pth`: the file's sha256 starts with 6726825d); see `checksum_matches`."""
    if source.sha256:
        if not 8 <= len(source.sha256) <= 64:
            raise ValueError(f"Source {source.filename!r}: a sha256 (prefix) needs 8 to 64 hex digits")
        return "sha256", source.sha256.lower()
    if source.md5:
        return "md5", source.md5.lower()
    raise ValueError(f"Source {source.filename!r} has neither sha256 nor md5; a raw file must carry a checksum")


def checksum_matches(found: str, expected: str) -> bool:
    """True when a full hex digest equals the expected one, or starts with an expected prefix."""
    return found == expected or (len(expected) < len(found) and found.startswith(expected))


def describe_checksum(algorithm: str, expected: str) -> str:
    """'sha256 abc...' or, for a prefix, 'a sha256 starting with 6726825d'."""
    return f"{algorithm} {expected}" if len(expected) in (32, 64) else f"a {algorithm} starting with {expected}"


def file_digests(path: str | os.PathLike, algorithms: tuple[str, ...]) -> dict[str, str]:
    """Hex digests of a file for several algorithms (e.g. md5 and sha256), in one read."""
    digests = {name: hashlib.new(name) for name in dict.fromkeys(algorithms)}
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            for digest in digests.values():
                digest.update(chunk)
    return {name: digest.hexdigest() for name, digest in digests.items()}


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    """Hex digest of a file (`algorithm`: sha256 or md5), read in chunks."""
    return file_digests(path, (algorithm,))[algorithm]


def _check_local(source: Source, target: Path, algorithm: str, expected: str, found: str) -> None:
    if not checksum_matches(found, expected):
        raise ChecksumMismatch(
            f"{target.resolve()}: {algorithm} {found} differs from the expected {describe_checksum(algorithm, expected)}; "
            f"delete it so that it is downloaded again"
            f"{f' from {source.url}' if source.url else ''}, or replace it with the right file."
        )


def raw_file_record(source: Source, raw_dir: str | os.PathLike, timeout: float = TIMEOUT_S) -> dict:
    """`ensure_raw_file`, and the file's provenance record {path, sha256, url (, md5)}: a file
    already in place is verified and hashed for the record in one read (a 4 GB archive is read
    once, not twice)."""
    algorithm, expected = expected_checksum(source)
    target = Path(raw_dir) / source.filename
    if target.exists():
        digests = file_digests(target, (algorithm, "sha256"))
        _check_local(source, target, algorithm, expected, digests[algorithm])
        sha256 = digests["sha256"]
    else:
        target = ensure_raw_file(source, raw_dir, timeout)
        sha256 = file_digest(target, "sha256")
    record = {"path": str(target), "sha256": sha256, "url": source.url}
    return {**record, "md5": source.md5} if source.md5 else record


def ensure_raw_file(source: Source, raw_dir: str | os.PathLike, timeout: float = TIMEOUT_S) -> Path:
    """`raw_dir / source.filename`, verified; downloaded from `source.url` first when absent."""
    algorithm, expected = expected_checksum(source)
    raw_dir = Path(raw_dir)
    target = raw_dir / source.filename
    if target.exists():
        _check_local(source, target, algorithm, expected, file_digest(target, algorithm))
        return target
    by_hand = f"put the file at {target.resolve()} by hand ({describe_checksum(algorithm, expected)})"
    if not source.url:
        raise RawFileMissing(f"{source.filename} is not in {raw_dir.resolve()} and has no download URL; {by_hand}.")
    raw_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=raw_dir, prefix=f".{source.filename}.", suffix=".part")
    try:
        digest = hashlib.new(algorithm)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(source.url, timeout=timeout) as response:
                if response.headers.get_content_type() == "text/html":  # a login or confirmation page
                    raise RawFileMissing(
                        f"{source.url} answered with an HTML page (a login, licence or download-confirmation "
                        f"page), not the file; download it in a browser and {by_hand}."
                    )
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
        except RawFileMissing:
            raise
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
            reason = getattr(error, "reason", None) or error
            raise RawFileMissing(
                f"could not download {source.url} ({type(error).__name__}: {reason}); if this machine is "
                f"offline, download it elsewhere and {by_hand}."
            ) from None
        found = digest.hexdigest()
        if not checksum_matches(found, expected):
            raise ChecksumMismatch(
                f"{source.url} served a file with {algorithm} {found}, not the expected "
                f"{describe_checksum(algorithm, expected)}; "
                f"nothing was written. Check the URL, or {by_hand}."
            )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def check_member(member: tarfile.TarInfo, dest: str | os.PathLike) -> None:
    """Raise UnsafeArchive if extracting `member` into `dest` could write outside `dest`."""
    root = os.path.realpath(dest)
    name = member.name
    if os.path.isabs(name) or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"archive member {name!r} has an absolute path; refusing to extract")
    target = os.path.realpath(os.path.join(root, name))
    if not _inside(target, root):
        raise UnsafeArchive(f"archive member {name!r} would be written outside {root}; refusing to extract")
    if member.issym() or member.islnk():
        link = member.linkname
        if os.path.isabs(link):
            raise UnsafeArchive(f"archive member {name!r} links to the absolute path {link!r}; refusing to extract")
        # a symlink is relative to its own folder, a hard link to the archive's root
        base = os.path.dirname(target) if member.issym() else root
        if not _inside(os.path.realpath(os.path.join(base, link)), root):
            raise UnsafeArchive(f"archive member {name!r} links to {link!r}, outside {root}; refusing to extract")
    elif not (member.isfile() or member.isdir()):
        raise UnsafeArchive(f"archive member {name!r} is a device or fifo; refusing to extract")


def safe_extract(tar_path: str | os.PathLike, dest: str | os.PathLike) -> list[str]:
    """Extract a (possibly compressed) tarball into `dest` after checking every member; return the
    member names. Raises UnsafeArchive, extracting nothing, if any member is refused."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path) as tar:
        members = tar.getmembers()
        for member in members:
            check_member(member, dest)
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.10.12: the standard filter as well
            tar.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover - older Pythons; every member was checked above
            tar.extractall(dest, members=members)
    return [member.name for member in members]
