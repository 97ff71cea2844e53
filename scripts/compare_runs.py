"""Compare two pipeline runs: their numbers value for value, or every output file byte for byte.

    python scripts/compare_runs.py RUN_A RUN_B [--all-json]
    python scripts/compare_runs.py RUN_A RUN_B --bytes

RUN_A and RUN_B are repository folders in which `snakemake` has run (e.g. two clones, one on an
old commit and one on a new one, both after `snakemake --profile profiles/ci`).

By value (the default): every `reports/tables/*.csv`, `reports/metrics.json`, and every metrics
JSON under `results/` (`results/**/metrics/**.json`, the sweeps' trial and selection records, the
classifier's report, the density summaries); with --all-json, every JSON under `results/` and
`reports/`. Fields that say where, when or by which code a number was made, not what it is, are
left out: timings, hosts and package versions, git commits, and file hashes (sha256), so runs of
two commits, or of files written before outputs became byte-identical (2026-12-03), compare.

By bytes (--bytes): the sha256 of every file DVC versions (`data/processed/`, `results/`,
`reports/tables|figures|sweeps|provenance/`, `reports/metrics.json`), run facts
(`*.runinfo.*`, aiqn.core.runinfo) left out. Two runs of the same code and inputs must match
file for file; scripts/fault_injection.py uses this to compare a killed-and-resumed run with an
uninterrupted one.

Prints one line per file that differs (by value: with the first differing fields) and a summary;
exits 1 when anything differs or a file exists on one side only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Iterator

# keys whose values record the making of a number, not the number (matched at any depth)
VOLATILE = {"seconds", "seconds_this_invocation", "cpu_seconds_this_invocation", "environment", "host", "code",
            "commit", "dirty", "torch_version", "wall_seconds", "elapsed", "cost_seconds", "compute_seconds",
            "train_seconds",
            "sha256"}
METRICS_GLOBS = ("results/**/metrics/**/*.json", "results/metrics/**/*.json", "results/sweeps/**/*.json",
                 "results/extractors/*/classifier.json", "results/density/**/*.json")
TABLE_GLOBS = ("reports/tables/*.csv", "reports/metrics.json")
# what dvc.yaml's stage declares as outputs and metrics (compared by bytes)
OUTPUTS = ("data/processed", "results", "reports/tables", "reports/figures", "reports/sweeps", "reports/provenance",
           "reports/metrics.json")
RUNINFO_MARK = ".runinfo."  # aiqn.core.runinfo.MARK (this script runs without the package installed)


def files(root: Path, all_json: bool) -> set[str]:
    """Relative paths of the files compared under `root`."""
    globs = TABLE_GLOBS + (("results/**/*.json", "reports/**/*.json") if all_json else METRICS_GLOBS)
    return {str(path.relative_to(root)) for pattern in globs for path in root.glob(pattern)
            if path.is_file() and RUNINFO_MARK not in path.name}


def output_files(root: Path) -> dict[str, str]:
    """sha256 of every output file under `root` (OUTPUTS), by relative path; run facts left out."""
    found = {}
    for name in OUTPUTS:
        top = root / name
        for path in ([top] if top.is_file() else sorted(top.rglob("*")) if top.is_dir() else []):
            if path.is_file() and RUNINFO_MARK not in path.name:
                found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def byte_differences(root_a: Path, root_b: Path, within_b: bool = False) -> tuple[int, list[str]]:
    """(files compared, one line per output file that differs or exists on one side only). With
    `within_b`, only the outputs run B has (B built some targets of A's DAG)."""
    a, b = output_files(root_a), output_files(root_b)
    if within_b:
        a = {name: digest for name, digest in a.items() if name in b}
    lines = [f"ONLY IN {'a' if name in a else 'b'}: {name}" for name in sorted(a.keys() ^ b.keys())]
    lines += [f"DIFFERS {name} (sha256 {a[name][:12]} != {b[name][:12]})" for name in sorted(a.keys() & b.keys())
              if a[name] != b[name]]
    return len(a.keys() | b.keys()), lines


def differences(a: Any, b: Any, trail: str = "") -> Iterator[str]:
    """Where two parsed JSON values differ, as 'trail: a != b', volatile fields left out."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key in VOLATILE:
                continue
            if key not in a or key not in b:
                yield f"{trail}/{key}: only in {'b' if key not in a else 'a'}"
                continue
            yield from differences(a[key], b[key], f"{trail}/{key}")
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            yield f"{trail}: {len(a)} items != {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            yield from differences(x, y, f"{trail}[{i}]")
    elif a != b and not (a != a and b != b):  # NaN equals NaN here
        yield f"{trail}: {a!r} != {b!r}"


def compare_file(root_a: Path, root_b: Path, name: str) -> list[str]:
    """The differences of one file present in both runs."""
    if name.endswith(".json"):
        return list(differences(json.loads((root_a / name).read_text()), json.loads((root_b / name).read_text())))
    import pandas as pd

    a, b = pd.read_csv(root_a / name), pd.read_csv(root_b / name)
    a = a.drop(columns=[c for c in a.columns if c in VOLATILE])
    b = b.drop(columns=[c for c in b.columns if c in VOLATILE])
    return list(differences(json.loads(a.to_json(orient="records")), json.loads(b.to_json(orient="records"))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--all-json", action="store_true", help="every JSON under results/ and reports/")
    parser.add_argument("--bytes", action="store_true", help="every output file by sha256 (run facts left out)")
    parser.add_argument("--show", type=int, default=3, help="differing fields shown per file")
    args = parser.parse_args(argv)
    if args.bytes:
        compared, lines = byte_differences(args.run_a, args.run_b)
        if not compared:
            print(f"nothing to compare: no outputs under {args.run_a} or {args.run_b} (run snakemake first)")
            return 1
        print("\n".join(lines))
        print(f"compared {compared} output files by sha256: {compared - len(lines)} identical, {len(lines)} "
              "differing or missing")
        return 1 if lines else 0
    names_a, names_b = files(args.run_a, args.all_json), files(args.run_b, args.all_json)
    if not names_a and not names_b:
        print(f"nothing to compare: no tables or metrics under {args.run_a} or {args.run_b} (run snakemake first)")
        return 1
    bad = 0
    for name in sorted(names_a ^ names_b):
        print(f"ONLY IN {'a' if name in names_a else 'b'}: {name}")
        bad += 1
    same = 0
    for name in sorted(names_a & names_b):
        found = compare_file(args.run_a, args.run_b, name)
        if found:
            bad += 1
            print(f"DIFFERS {name} ({len(found)} fields): " + "; ".join(found[: args.show]))
        else:
            same += 1
    print(f"compared {len(names_a & names_b)} files: {same} identical, {bad} differing or missing")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
