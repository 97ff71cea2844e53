"""Successive halving against the exhaustive sweep of the same configurations.

Runs the sweep of the default pipeline (digits) twice in two temporary copies of the repository,
through Snakemake: once exhaustive (eta 1: every configuration trained the full sweep budget)
and once with successive halving (eta 3: rungs at 1/9, 1/3 and all of the budget, the best third
kept per rung). Both draw the same configurations (same seed and N). Prints, per model, the
training steps and trial seconds of each, their ratio, and where halving's choice ranks among
the exhaustive results (1 = it found the exhaustive winner).

    python benchmarks/halving.py                 # N = 9, both models, about 10 minutes on 2 cores
    python benchmarks/halving.py --n-configs 27 --models pixeliqn
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from repo_copy import copy_repo  # noqa: E402

from aiqn.core.runinfo import read_runinfo  # noqa: E402


def run_sweep(root: Path, eta: int, n_configs: int, models: list[str], cores: int) -> tuple[float, dict]:
    """Run the sweeps of `models` on digits with this eta; return (wall seconds, selected.json per model)."""
    repo = copy_repo(root)
    overlay = {"sweep": {"n_configs": n_configs, "eta": eta, "models": models}}
    (repo / "bench.yaml").write_text(yaml.safe_dump(overlay))
    targets = [f"results/sweeps/digits/{m}/selected.json" for m in models]
    began = time.time()
    result = subprocess.run([sys.executable, "-m", "snakemake", *targets, "--cores", str(cores),
                             "--configfile", "params.yaml", "bench.yaml"],
                            cwd=repo, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(repo / "src")})
    if result.returncode != 0:
        raise SystemExit(f"snakemake failed in {repo}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    wall = time.time() - began
    chosen = {}
    for m in models:  # the trial seconds are run facts, beside selected.json (aiqn.core.runinfo)
        path = repo / f"results/sweeps/digits/{m}/selected.json"
        chosen[m] = {**json.loads(path.read_text()), **read_runinfo(path)}
    return wall, chosen


def exhaustive_rank(exhaustive: dict, trial: str) -> int:
    """1-based rank of `trial` among the exhaustive sweep's finished trials (by its metric)."""
    ranking = [entry["trial"] for entry in exhaustive["decisions"][-1]["ranking"] if entry["status"] == "ok"]
    return ranking.index(trial) + 1 if trial in ranking else -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-configs", type=int, default=9)
    parser.add_argument("--eta", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["pixelcnn", "pixeliqn"])
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "full").mkdir()
        (Path(tmp) / "halving").mkdir()
        wall_full, full = run_sweep(Path(tmp) / "full", 1, args.n_configs, args.models, args.cores)
        wall_half, half = run_sweep(Path(tmp) / "halving", args.eta, args.n_configs, args.models, args.cores)

    print(f"command: python benchmarks/halving.py --n-configs {args.n_configs} --eta {args.eta} "
          f"--models {' '.join(args.models)} --cores {args.cores}")
    print(f"digits, {args.n_configs} configurations per model; wall time (both models, {args.cores} cores): "
          f"exhaustive {wall_full:.0f} s, halving {wall_half:.0f} s ({wall_half / wall_full:.2f}x)")
    header = (f"{'model':<10}{'mode':<12}{'rungs (steps)':<18}{'train steps':>12}{'trial s':>10}{'vs full':>9}"
              f"{'chosen':>8}{'FID':>10}{'rank in full':>14}")
    print(header)
    print("-" * len(header))
    for model in args.models:
        for mode, chosen in (("exhaustive", full[model]), ("halving", half[model])):
            steps_ratio = chosen["compute_steps"] / full[model]["compute_steps"]
            print(f"{model:<10}{mode:<12}{str(chosen['budgets']):<18}{chosen['compute_steps']:>12}"
                  f"{chosen['compute_seconds']:>10.0f}{steps_ratio:>8.2f}x{chosen['chosen']:>8}{chosen['value']:>10.2f}"
                  f"{exhaustive_rank(full[model], chosen['chosen']):>14}")


if __name__ == "__main__":
    main()
