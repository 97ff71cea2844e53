"""Where and when an output was made, kept out of the output's own bytes.

Outputs (checkpoints, samples, metrics JSON, tables, logs) hold only what their inputs determine,
so identical inputs write identical bytes and their sha256 match across reruns and machines. The
facts that differ between two runs of the same inputs (host, platform, the time a file was
finished, wall and CPU seconds) go into a sidecar whose name carries `.runinfo.`:

- `<output>.runinfo.json` beside an output (`write_runinfo`), for one-off facts;
- `train_times.runinfo.csv` in a run folder, the wall seconds of each logged training step.

`.dvcignore` leaves `*.runinfo.*` out of DVC's hashes of the output folders, no provenance
record hashes a sidecar, and the determinism checks (tests, scripts/fault_injection.py) skip them.
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path

MARK = ".runinfo."
TRAIN_TIMES = "train_times.runinfo.csv"  # step,seconds: wall seconds since the invocation's loop began


def runinfo_path(target: str | os.PathLike) -> Path:
    """The sidecar of an output: `<output>.runinfo.json`."""
    return Path(f"{os.fspath(target)}{MARK}json")


def is_runinfo(path: str | os.PathLike) -> bool:
    """Whether a file is a run-facts sidecar (never part of a compared or hashed output)."""
    return MARK in Path(path).name


def machine() -> dict:
    """The host, the platform and the time now (UTC, to the second)."""
    return {"host": platform.node(), "platform": platform.platform(),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def write_runinfo(target: str | os.PathLike, **facts) -> None:
    """Write `<target>.runinfo.json`: `machine()` and `facts` (seconds, CPU seconds, ...)."""
    from aiqn.core.io import write_json

    write_json(runinfo_path(target), {**machine(), **facts})


def read_runinfo(target: str | os.PathLike) -> dict:
    """The sidecar of `target`, or {} when there is none (e.g. an output from before sidecars)."""
    from aiqn.core.io import read_json

    path = runinfo_path(target)
    return read_json(path) if path.exists() else {}
