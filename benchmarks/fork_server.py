"""The pipeline with its fork server against the same pipeline without it, side by side.

Copies the repository twice (the same files), runs `snakemake --profile PROFILE` in each, one after
the other: once with `AIQN_NO_FORK_SERVER=1` (every job a fresh interpreter that imports torch and
the package itself) and once with the run's fork server (src/aiqn/core/forkserver.py). Prints each
run's wall time and CPU time (user + system of snakemake and everything it started, from wait4),
their ratios, and whether the two runs' outputs are byte-identical (scripts/compare_runs.py --bytes).

    python benchmarks/fork_server.py                      # the CI profile, about 10 minutes on 2 cores
    python benchmarks/fork_server.py --profile ""         # the default run (two runs of ~20 minutes)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "scripts"))
from compare_runs import byte_differences  # noqa: E402
from repo_copy import copy_environment, copy_repo  # noqa: E402


def timed_run(repo: Path, profile: str, fork_server: bool, log: Path) -> tuple[int, float, float]:
    """(exit status, wall seconds, CPU seconds) of one `snakemake` run in `repo`."""
    env = copy_environment(repo)
    env.pop("AIQN_FORK_SERVER", None)
    if not fork_server:
        env["AIQN_NO_FORK_SERVER"] = "1"
    command = [sys.executable, "-m", "snakemake", "--cores", "all", *(["--profile", profile] if profile else [])]
    began = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    return os.waitstatus_to_exitcode(status), time.monotonic() - began, usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="profiles/ci", help="Snakemake profile ('' for the default run)")
    parser.add_argument("--work", type=Path, help="folder for the two copies (default: a temporary one)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="aiqn-fork-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    copies = {name: copy_repo(work / name) for name in ("without", "with")}  # both first: the same code
    results = {}
    for name, repo in copies.items():
        code, wall, cpu = timed_run(repo, args.profile, name == "with", work / f"{name}.log")
        results[name] = (wall, cpu)
        print(f"{name:>7} the fork server: exit {code}, wall {wall:7.1f} s, CPU {cpu:7.1f} s ({work / name}.log)",
              flush=True)
        if code != 0:
            return 1
    (wall_a, cpu_a), (wall_b, cpu_b) = results["without"], results["with"]
    print(f"with / without: wall {wall_b / wall_a:.2f}x, CPU {cpu_b / cpu_a:.2f}x")
    compared, lines = byte_differences(copies["without"], copies["with"])
    print("\n".join(lines))
    print(f"outputs: {compared} files compared by sha256, {compared - len(lines)} identical, {len(lines)} differing")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
