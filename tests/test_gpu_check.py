"""benchmarks/gpu_check.py end to end at a tiny size on the CPU: every section runs, the summaries hold
them, and the SIGKILL-and-resume of the `train` verb gives the uninterrupted run's weights and log."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEADS = ("categorical", "quantile")
PRECISIONS = ("fp32", "bf16")
TINY = ["--device", "cpu", "--threads", "1", "--blocks", "1", "--planes", "8", "--output-planes", "16",
        "--filter-size", "3", "--size", "8", "--batch-size", "4", "--dataset-size", "64", "--warmup", "1",
        "--steps", "3", "--repeats", "1", "--precisions", *PRECISIONS, "--compile", "off",
        "--sample-count", "8", "--sample-batch", "4", "--train-images", "64", "--train-steps", "120",
        "--checkpoint-every", "40"]


@pytest.fixture(scope="module")
def check(tmp_path_factory):
    """One tiny run of the check: (completed process, output folder, the JSON report)."""
    out = tmp_path_factory.mktemp("gpu_check")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), *TINY, "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=240)
    report = json.loads((out / "gpu_check.json").read_text()) if (out / "gpu_check.json").exists() else None
    return done, out, report


def test_exits_zero_and_writes_both_summaries(check):
    done, out, report = check
    assert done.returncode == 0, done.stdout + done.stderr
    assert report is not None and report["complete"]
    assert (out / "gpu_check.md").exists()
    assert report["device"] == "cpu" and report["torch"] and report["command"].startswith("python ")
    assert "[gpu_check" in done.stdout  # progress lines


def test_training_rows_for_both_heads_and_every_precision(check):
    _, _, report = check
    variants = {(row["head"], row["precision"], row["compile"]) for row in report["training"]}
    assert variants == {(head, precision, False) for head in HEADS for precision in PRECISIONS}
    for row in report["training"]:
        for name in ("steps_per_s", "min_steps_per_s", "max_steps_per_s", "images_per_s", "warmup_s", "loss"):
            assert row[name] > 0, (row["head"], row["precision"], name)
        assert row["peak_gib"] is None  # GPU memory only on CUDA
        assert (row["blocks"], row["planes"], row["output_planes"], row["batch_size"]) == (1, 8, 16, 4)


def test_cached_sampling_and_its_projection(check):
    _, _, report = check
    (row,) = report["sampling"]
    assert (row["method"], row["count"], row["batch_size"], row["project_count"]) == ("cached", 8, 4, 10_000)
    assert row["seconds"] > 0 and row["samples_per_s"] > 0
    assert row["projected_s"] == pytest.approx(row["seconds"] * 10_000 / 8)


def test_resume_check_passed_with_equal_weights_and_logs(check):
    _, out, report = check
    resume = report["resume"]
    assert resume["passed"], resume["checks"]
    assert all(resume["checks"].values())
    runs = resume["runs"]
    assert runs["B_killed"]["killed"] and runs["B_killed"]["returncode"] < 0
    assert runs["B_resumed"]["resumed_from_step"] in (40, 80)
    assert resume["final"]["step"] == 120
    for part in ("model", "ema"):
        assert resume["final"][part]["equal"] and resume["final"][part]["tensors"] > 0
    assert resume["logs"]["equal"] and resume["logs"]["rows_a"] == resume["logs"]["rows_b"] == 120
    for run in runs.values():
        assert run["wall_s"] > 0 and (out / run["log"]).exists()
    assert runs["A"]["steps_per_s"] > 0 and runs["B_resumed"]["steps_per_s"] > 0
    assert (out / "resume" / "A_train_log.csv").exists() and (out / "resume" / "B_train_log.csv").exists()


def test_targets_and_markdown_sections(check):
    _, out, report = check
    names = [target["name"] for target in report["targets"]]
    assert names == [f"training steps/s, bf16, {head} head" for head in HEADS] + ["10000 cached samples, quantile head"]
    for target in report["targets"]:
        assert target["value"] > 0 and isinstance(target["met"], bool) and target["full_size"] is False
    text = (out / "gpu_check.md").read_text()
    for heading in ("## Targets", "## Training speed", "## Cached sampling", "## Resume check", "**PASSED**"):
        assert heading in text
