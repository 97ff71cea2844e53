"""Shared fixtures: the real digits data, prepared once per test session, and the CI-profile
pipeline run (`ci_run`), run once per session for every test that reads it. With pytest-xdist
(pyproject's addopts: two workers, --dist loadgroup) a module's tests stay on one worker (its
module fixtures run once), the CI run is built by one worker and read by both, and the longest
fixtures start first."""

import shutil

import pytest
import torch

import aiqn.data  # noqa: F401  (registers datasets)
from aiqn.data.prepare import prepare_dataset


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    """data/processed/digits equivalent in a temporary folder (train.npz, test.npz, meta.json)."""
    out = tmp_path_factory.mktemp("digits")
    prepare_dataset("digits", out / "raw", out, {"test_fraction": 0.2, "split_seed": 0})
    return out


@pytest.fixture(scope="session")
def ci_run(tmp_path_factory, worker_id):
    """A copy of the repository after `snakemake --profile profiles/ci` (every rule of the default's DAG
    at its tiny size, on digits, photos32 and photos8), made once per session: under pytest-xdist the
    first worker that needs it builds it in the folder all workers share, the others wait for it (a file
    lock). Tests read it; one that changes it works on its own copy (shutil.copytree)."""
    from filelock import FileLock

    from repo_copy import copy_repo, snakemake

    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    repo, built, failed = shared / "ci_run", shared / "ci_run.built", shared / "ci_run.failed"
    with FileLock(str(shared / "ci_run.lock")):
        if failed.exists():  # another worker's build failed: the same error here, without a second build
            pytest.fail(failed.read_text())
        if not built.exists():
            shutil.rmtree(repo, ignore_errors=True)  # what a build that raised (a timeout) left
            copy_repo(repo)
            result = snakemake(repo, "--profile", "profiles/ci", timeout=1800)
            if result.returncode != 0:
                failed.write_text("the CI run failed:\n" + result.stdout[-3000:] + result.stderr[-5000:])
                pytest.fail(failed.read_text())
            built.touch()
    return repo


# Collection order is the order xdist hands the groups out: first the first test that reads the CI run
# (it builds the longest fixture), then the SLURM comparison (tests/test_slurm.py, two runs of the sweep),
# the other modules, and last the other readers of the CI run, by then built, spread over both workers.
FIRST_MODULES = ("tests/test_slurm.py",)


def reads_ci_run(item) -> bool:
    return "ci_run" in item.fixturenames


def module_of(item) -> str:
    return item.nodeid.split("::")[0]


def xdist_group_of(item) -> str:
    """A test that reads the CI run is a group of its own (any worker may take it); every other test goes
    with its module, so that module-scoped fixtures run once."""
    return item.nodeid if reads_ci_run(item) else module_of(item)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks
def pytest_collection_modifyitems(config, items):
    builder = next((item for item in items if reads_ci_run(item)), None)

    def rank(item) -> int:
        if item is builder:
            return 0
        if reads_ci_run(item):
            return 3
        return 1 if module_of(item) in FIRST_MODULES else 2

    for item in items:
        item.add_marker(pytest.mark.xdist_group(xdist_group_of(item)))
    items.sort(key=rank)  # stable: within a rank, the collection order


@pytest.fixture(autouse=True)
def _single_thread():
    """Bitwise comparisons in tests are made with one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
