"""Helpers for tests that run the pipeline in a temporary copy of the repository."""

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COPIED = ["Snakefile", "rules", "envs", "schemas", "params.yaml", "profiles", "paper", "src", "report", "scripts", "dvc.yaml",
          ".dvc/config", ".dvc/plots", ".dvcignore", ".gitignore"]


def copy_repo(dest: Path) -> Path:
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def copy_environment(cwd: Path) -> dict:
    """This process's environment with the copy's own package (`cwd/src`) first on the path."""
    return {**os.environ, "PYTHONPATH": str(cwd / "src")}


def snakemake(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run Snakemake in `cwd`, with the copy's own package first on the path."""
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=copy_environment(cwd))


def run_python(cwd: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python ARGS` in `cwd`, with the copy's own package first on the path."""
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=copy_environment(cwd))


@contextlib.contextmanager
def repo_layout(root: Path, digits_dir: Path):
    """Run in-process CLI verbs in `root`, laid out like the repository: the prepared digits in
    data/processed/digits, one torch thread; the working folder and threads are restored after.
    Yields the data folder (relative)."""
    import torch

    cwd, threads = os.getcwd(), torch.get_num_threads()
    os.chdir(root)
    torch.set_num_threads(1)
    try:
        data = "data/processed/digits"
        shutil.copytree(digits_dir, data, ignore=shutil.ignore_patterns("raw"))
        yield data
    finally:
        torch.set_num_threads(threads)
        os.chdir(cwd)


def digits_scoring(data: str, n_reference: int = 200) -> tuple[list[str], str, list[str]]:
    """Train a tiny digits classifier, its reference statistics and the reference features, as the
    pipeline's rules do; returns (the extractor arguments of the evaluation verbs, the reference
    statistics path, their N-vs-N comparison arguments: 50 a side, for runs of at least 50 samples)."""
    import json

    from aiqn.cli import main

    main(["train-classifier", "--dataset", "digits", "--train", f"{data}/train.npz", "--test", f"{data}/test.npz",
          "--config", json.dumps({"steps": 30, "hidden": 16}), "--out", "results/extractors/digits/classifier.pt",
          "--report", "results/extractors/digits/classifier.json"])
    extractor = ["--extractor", "results/extractors/digits/classifier.pt", "--extractor-name", "digits-classifier",
                 "--extractor-kind", "classifier", "--device", "cpu"]
    reference = f"results/reference/digits/digits-classifier_{n_reference}.npz"
    main(["reference-stats", *extractor, "--dataset", "digits", "--data", f"{data}/train.npz", "--n",
          str(n_reference), "--out", reference])
    features = "results/reference/digits/digits-classifier_features.npz"
    main(["reference-features", *extractor, "--dataset", "digits", "--train", f"{data}/train.npz", "--test",
          f"{data}/test.npz", "--out", features])
    comparison = ["--features", features, "--train", f"{data}/train.npz", "--n-compare", "50", "--kid-subsets", "10",
                  "--kid-subset-size", "20", "--bootstrap", "20"]
    return extractor, reference, comparison


def comparison_labels(n_train: int, n_test: int) -> dict[str, str]:
    """metric -> label of the N-vs-N and memorisation entries `digits_scoring`'s arguments give."""
    kid = "50 vs 50, 10 subsets of 20, unit-scaled features"
    held = f"vs {n_train} train, < p5 of {n_test} test"
    return {"FID vs train": "FID vs train (digits-classifier, 50 vs 50)",
            "FID vs test": "FID vs test (digits-classifier, 50 vs 50)",
            "KID vs train": f"KID x1000 vs train (digits-classifier, {kid})",
            "KID vs test": f"KID x1000 vs test (digits-classifier, {kid})",
            "memorised (pixels)": f"memorised, pixels ({held})",
            "memorised (features)": f"memorised, features (digits-classifier, {held})"}
