"""profiles/slurm on a real (single-node, throw-away) SLURM cluster: the same targets built by the
local executor and through SLURM, in two temporary copies of the repo, give the same metrics and
arrays. The cluster is installed and started by tests/slurm_cluster.py (root and apt needed; the
test is skipped with the reason otherwise, or fails where AIQN_REQUIRE_SLURM=1).
Also, without a cluster: how the profile combines with the others and how it asks for GPUs."""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from repo_copy import REPO, copy_repo, snakemake
from slurm_cluster import PARTITION, local_slurm

# Built in both copies and compared; paths relative to the repo. Every .json, .npz, .pt and .csv
# the two runs write under results/, data/processed/ and reports/ is compared, not only these.
# The CI-size hyperparameter sweep of PixelIQN on digits: configurations, one job per trial and
# rung (successive halving: the second rung is known only after the first, a checkpoint), the
# choice and the report.
SLURM_TARGETS = ["results/sweeps/digits/pixeliqn/selected.json", "reports/sweeps/digits_pixeliqn.csv"]

# On top of params.yaml and profiles/ci/params.yaml: no GPU is requested (gpu=0 on device cpu),
# and only the digits dataset. The hyperparameter sweep (params `sweep`, whose choice the
# training of a swept model waits for) is switched off while no target is one of its outputs.
OVERLAY = {"device": "cpu", "run": {"datasets": ["digits"]}}
if not any(target.startswith("results/sweeps/") for target in SLURM_TARGETS):
    OVERLAY["sweep"] = {"datasets": []}

# Settings for a cluster without accounting (docs/cluster.md): status by squeue (sacct fails
# silently and Snakemake would wait forever), the first status check after 5 s instead of 40.
SLURM_ARGS = ["--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "5",
              "--slurm-no-account"]

# Fields that legitimately differ between two runs of the same job: timings, hosts, PIDs (most now
# live in *.runinfo.* sidecars, which are not compared); and file digests, left out so that a
# difference is reported at the field or tensor that differs rather than as a hash of the file
# (identical runs write identical bytes since 2026-12-03: tests/test_checkpoint_safety.py).
VOLATILE_KEY = re.compile(r"(^|_)(host|hostname|node|nodename|time|timestamp|date|created|started|finished|"
                          r"seconds|elapsed|duration|wall|pid|slurm\w*|sha256)(_|$)", re.IGNORECASE)


@pytest.fixture(scope="module")
def slurm():
    with local_slurm() as cluster:
        if isinstance(cluster, str):
            if os.environ.get("AIQN_REQUIRE_SLURM"):
                pytest.fail(f"no local SLURM cluster: {cluster}")
            pytest.skip(f"no local SLURM cluster: {cluster}")
        yield cluster  # torn down (jobs cancelled, daemons stopped by PID, link removed) even on failure


def _config_args(repo: Path) -> list[str]:
    """Last on the command line: --configfile takes every argument after it."""
    (repo / "slurm_overlay.yaml").write_text(yaml.safe_dump(OVERLAY))
    return ["--configfile", "profiles/ci/params.yaml", "slurm_overlay.yaml"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, slurm):
    local = copy_repo(tmp_path_factory.mktemp("local"))
    began = time.monotonic()
    result = snakemake(local, *SLURM_TARGETS, "--profile", "profiles/ci", *_config_args(local))
    local_seconds = time.monotonic() - began
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    cluster = copy_repo(tmp_path_factory.mktemp("slurm"))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AIQN_SLURM_PARTITION", slurm.partition)  # read by profiles/slurm
        env.delenv("AIQN_SLURM_ACCOUNT", raising=False)
        env.setenv("SLURM_CONF", str(slurm.conf))
        began = time.monotonic()
        result = snakemake(cluster, *SLURM_TARGETS, "--profile", "profiles/ci", "--profile", "profiles/slurm",
                           *SLURM_ARGS, "--verbose", *_config_args(cluster), timeout=900)
        slurm_seconds = time.monotonic() - began
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"{log[-6000:]}\n{slurm.logs()}"
    print(f"\nwall time: local {local_seconds:.0f} s, SLURM {slurm_seconds:.0f} s")
    return {"local": local, "slurm": cluster, "log": log, "seconds": (local_seconds, slurm_seconds)}


@pytest.mark.slow
def test_every_job_ran_as_a_slurm_job_without_gpus(runs):
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", runs["log"])
    calls = [line for line in runs["log"].splitlines() if "sbatch call:" in line]
    done = re.search(r"(\d+) of (\d+) steps \(100%\) done", runs["log"])
    assert done and len(submitted) == len(calls) == int(done.group(2)) > 0
    for call in calls:
        assert f" -p {PARTITION} " in call and "--gpus" not in call and "--gres" not in call, call
        assert re.search(r"--cpus-per-task=\d", call) and "--nodes=1" in call, call
        assert re.search(r"--mem \d+", call) and re.search(r" -t \d+", call), call


def _normalised(value, roots: tuple[str, ...]):
    """`value` without volatile fields, the copies' paths as <repo>, tensors and arrays as numpy,
    JSON held in a string (the .npz `meta` and `key` entries) parsed."""
    if isinstance(value, dict):
        return {k: _normalised(v, roots) for k, v in value.items() if not VOLATILE_KEY.search(str(k))}
    if isinstance(value, (list, tuple)):
        return [_normalised(v, roots) for v in value]
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray) and value.dtype.kind == "U" and value.ndim == 0:
        value = str(value)
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, str):
        if value[:1] in "{[":
            with contextlib.suppress(ValueError):
                return _normalised(json.loads(value), roots)
        for root in roots:
            value = value.replace(root, "<repo>")
    return value


def _load(path: Path):
    if path.suffix == ".json":
        return json.loads(path.read_text())
    if path.suffix == ".npz":
        with np.load(path) as arrays:
            return {key: arrays[key] for key in arrays.files}
    if path.suffix == ".pt":
        return torch.load(path, map_location="cpu", weights_only=False)
    if path.suffix == ".csv":  # empty cells as None: NaN != NaN would fail any comparison
        frame = pd.read_csv(path)
        return frame.astype(object).where(frame.notna(), None).to_dict(orient="list")
    raise ValueError(path)


def _files(repo: Path) -> set[str]:
    return {str(p.relative_to(repo)) for top in ("results", "data/processed", "reports") for p in (repo / top).rglob("*")
            if p.suffix in (".json", ".npz", ".pt", ".csv") and ".runinfo." not in p.name}  # run facts differ


@pytest.mark.slow
def test_slurm_and_local_runs_give_the_same_results(runs):
    """Every result file (metrics and provenance JSON, .npz arrays, checkpoints, training logs) of
    the two runs is equal, up to the fields that legitimately differ (VOLATILE_KEY)."""
    local, cluster = runs["local"], runs["slurm"]
    for target in SLURM_TARGETS:
        assert (local / target).exists() and (cluster / target).exists(), target
    names = _files(local)
    assert names == _files(cluster)
    trials = [n for n in names if n.startswith("results/sweeps/digits/pixeliqn/rung")]
    assert len([n for n in trials if "/rung0/" in n]) == 3 and len([n for n in trials if "/rung1/" in n]) == 1
    roots = (str(local), str(cluster))
    for name in sorted(names):
        ours, theirs = (_normalised(_load(repo / name), roots) for repo in (local, cluster))
        assert ours == theirs, name


# -- without a cluster ---------------------------------------------------------------------------

def test_slurm_profile_last_replaces_the_paper_profiles_gpu_limit(monkeypatch):
    pytest.importorskip("snakemake_executor_plugin_slurm",
                        reason="the SLURM executor plugin is the optional extra .[slurm] (scripts/setup.sh installs it)")
    from snakemake.cli import parse_args

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("AIQN_SLURM_PARTITION", "gpu")
    monkeypatch.setenv("AIQN_SLURM_ACCOUNT", "project1")
    _, args = parse_args(["--profile", "profiles/paper", "--profile", "profiles/slurm"])
    assert args.executor == "slurm" and args.jobs == 100 and args.retries == 2 and args.latency_wait == 60
    assert args.configfile == [Path("profiles/paper/params.yaml")]  # the paper's overlay still applies
    assert set(args.resources) == {"dvc_lock"}  # no global gpu=1: SLURM allots the GPUs
    assert {"slurm_partition", "slurm_account", "runtime", "mem_mb", "nodes", "cpus_per_gpu"} <= set(args.default_resources)
    assert "gpu_model" not in args.default_resources
    monkeypatch.delenv("AIQN_SLURM_PARTITION")
    monkeypatch.delenv("AIQN_SLURM_ACCOUNT")
    _, args = parse_args(["--profile", "profiles/slurm"])
    assert not {"slurm_partition", "slurm_account"} & set(args.default_resources)  # the cluster's defaults


class _Resources(dict):
    __getattr__ = dict.__getitem__


class _Job:
    def __init__(self, **resources):
        self.resources = _Resources(resources)
        self.threads = 1


def _profile_numbers() -> dict:
    """The plain numbers of profiles/slurm's default-resources (nodes, cpus_per_gpu, runtime)."""
    import yte

    with open(REPO / "profiles/slurm/config.yaml") as stream:
        profile = yte.process_yaml(stream, require_use_yte=True)
    return {k: v for k, v in profile["default-resources"].items() if isinstance(v, int)}


@pytest.mark.parametrize("gpu", [0, 1, 4])
def test_sbatch_asks_for_the_rules_gpus_on_one_node_and_none_for_gpu_0(gpu):
    """The plugin's own sbatch line for a job with the profile's resources and `gpu=N`."""
    pytest.importorskip("snakemake_executor_plugin_slurm",
                        reason="the SLURM executor plugin is the optional extra .[slurm] (scripts/setup.sh installs it)")
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    job = _Job(gpu=gpu, mem_mb=4000, **_profile_numbers())
    params = {"run_uuid": "run", "slurm_logfile": "log", "comment_str": "rule", "account": "", "partition": " -p gpu",
              "workdir": "/work"}
    call = get_submit_command(job, params) + set_gres_string(job)  # as the plugin's run_job builds it
    assert "--nodes=1" in call and " -t 1440" in call
    if gpu:
        assert f"--gpus={gpu}" in call and "--cpus-per-gpu=4" in call and "--cpus-per-task" not in call
    else:
        assert "--gpus" not in call and "--gres" not in call and "--cpus-per-task=1" in call
