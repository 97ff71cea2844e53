"""The whole Snakemake pipeline at the `profiles/ci` size, in a temporary copy of the repo:
prepare -> train (both models) -> sample -> evaluate -> Table 1 and figures; then a second
invocation has nothing to do. Also: a params.yaml that breaks the schema names the key."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COPIED = ["Snakefile", "rules", "schemas", "params.yaml", "profiles", "paper", "src"]


def copy_repo(dest: Path) -> Path:
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, dest / name)
    return dest


def snakemake(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run Snakemake in `cwd`, with the copy's own package first on the path."""
    env = {**os.environ, "PYTHONPATH": str(cwd / "src")}
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("repo"))
    result = snakemake(repo, "--profile", "profiles/ci")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return repo


@pytest.mark.slow
def test_ci_pipeline_writes_table1_and_figures(ci_run):
    table = pd.read_csv(ci_run / "reports/tables/table1.csv")
    ours = table[table.source == "ours"]
    assert set(ours.model) == {"pixelcnn", "pixeliqn", "real data (test split)"}
    for model in ("pixelcnn", "pixeliqn"):
        rows = ours[ours.model == model]
        assert {"FID", "IS"} <= set(rows.metric)
        assert rows.value.notna().all() and (rows[rows.metric == "FID"].value >= 0).all()
        assert rows.label.str.contains("digits-classifier").any()
    assert "bits/dim" in set(ours[ours.model == "pixelcnn"].metric)
    assert table.source.str.startswith("paper").any()
    for figure in ("digits_samples.png", "digits_training_curves.png", "digits_loss.png"):
        assert (ci_run / "reports/figures" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (ci_run / "reports/tables/table1.md").read_text()
    assert "Paper" in md and "Ours" in md
    metrics = json.loads((ci_run / "results/metrics/digits/pixeliqn/0000150.json").read_text())
    assert metrics["final"] and metrics["n_samples"] == 100
    for step in ("0000050", "0000150"):  # several checkpoints are evaluated (Figure 4)
        assert (ci_run / f"results/metrics/digits/pixelcnn/{step}.json").exists()
    for log in ("logs/train/digits/pixelcnn.log", "logs/sample/digits/pixeliqn/0000150.log"):
        assert (ci_run / log).stat().st_size > 0


@pytest.mark.slow
def test_second_invocation_has_nothing_to_do(ci_run):
    result = snakemake(ci_run, "--profile", "profiles/ci", "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Nothing to be done" in result.stdout + result.stderr


def test_params_breaking_the_schema_name_the_key(tmp_path):
    repo = copy_repo(tmp_path)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["sampling"]["n_samples"] = "many"
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    result = snakemake(repo, "--cores", "1", "--dry-run", timeout=120)
    assert result.returncode != 0
    assert "n_samples" in result.stdout + result.stderr


def test_unknown_key_is_rejected_with_its_name(tmp_path):
    repo = copy_repo(tmp_path)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["models"]["pixeliqn"]["train"]["kapa"] = 0.01  # a typo of kappa
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    result = snakemake(repo, "--cores", "1", "--dry-run", timeout=120)
    assert result.returncode != 0
    assert "kapa" in result.stdout + result.stderr
