"""The fork server (aiqn.core.forkserver): a job forked from it behaves as its own process would.

Each test starts a real server on a socket in a temporary folder and runs `python -m aiqn ...`
clients against it: outputs equal to a fresh process's byte for byte, exit statuses and killing
signals passed through, a killed client's child killed with it, a client whose fingerprint differs
run in its own process, and a server that stops with its owner."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from aiqn.core import forkserver

REPO = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
JOB_ENVIRONMENT = {**os.environ, **forkserver.ONE_THREAD_JOB}  # what Snakemake gives a job (and start_server the server)


def wait_for(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A running fork server (its process, socket path and working folder), owned by this process."""
    folder = tmp_path_factory.mktemp("forkserver")
    path = str(folder / "socket")
    proc = subprocess.Popen([sys.executable, "-m", "aiqn", forkserver.SERVE_FLAG, path, str(os.getpid())], cwd=folder,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=JOB_ENVIRONMENT)
    assert wait_for(lambda: os.path.exists(path), 20), "the server did not bind its socket"
    yield proc, path, folder
    proc.terminate()
    proc.wait(timeout=20)


def served_rows(folder: Path) -> list[dict]:
    """The server's job log (one row per child it ran)."""
    log = folder / forkserver.JOB_LOG
    if not log.exists():
        return []
    header, *rows = log.read_text().splitlines()
    return [dict(zip(header.split("\t"), row.split("\t"))) for row in rows]


def client(args: list[str], cwd: Path, socket_path: str | None, **env) -> subprocess.Popen:
    environment = {**JOB_ENVIRONMENT, **env}
    environment.pop(forkserver.SOCKET_VARIABLE, None)
    environment.pop(forkserver.DISABLE_VARIABLE, None)
    if socket_path:
        environment[forkserver.SOCKET_VARIABLE] = socket_path
    return subprocess.Popen([sys.executable, "-m", "aiqn", *args], cwd=cwd, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def prepare_args(out_dir: str) -> list[str]:
    return ["--threads", "1", "prepare", "--dataset", "digits", "--raw-dir", "raw", "--out-dir", out_dir,
            "--options", json.dumps(PARAMS["datasets"]["digits"]), "--validation", json.dumps(PARAMS["validation"])]


def classifier_args(data: str, steps: int, out: str) -> list[str]:
    return ["--threads", "1", "train-classifier", "--dataset", "digits", "--train", f"{data}/train.npz", "--test",
            f"{data}/test.npz", "--config", json.dumps({"steps": steps, "hidden": 16}), "--out", f"{out}/c.pt",
            "--report", f"{out}/c.json"]


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and ".runinfo." not in p.name}


def test_a_served_job_writes_the_bytes_of_a_fresh_process(server, tmp_path):
    _, path, folder = server
    before = len(served_rows(folder))
    for name, socket_path in (("fresh", None), ("served", path)):  # the same relative paths: they are recorded
        (tmp_path / name).mkdir()
        for args in (prepare_args("data"), classifier_args("data", 20, "classifier")):
            proc = client(args, tmp_path / name, socket_path)
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
    rows = served_rows(folder)[before:]
    assert [row["verb"] for row in rows] == ["prepare", "train-classifier"]  # the server ran both
    assert all(float(row["user_s"]) > 0 and row["exit"] == "0" for row in rows)
    fresh, served = digests(tmp_path / "fresh"), digests(tmp_path / "served")
    assert fresh and fresh == served


def test_exit_status_and_output_reach_the_client(server, tmp_path):
    _, path, folder = server
    proc = client(["no-such-verb"], tmp_path, path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "invalid choice: 'no-such-verb'" in err
    assert served_rows(folder)[-1]["exit"] == "2"


def started_child(server_proc, before: set[int]) -> psutil.Process:
    found = []
    assert wait_for(lambda: found.extend(c for c in psutil.Process(server_proc.pid).children() if c.pid not in before)
                    or found, 60)
    return found[0]


@pytest.fixture(scope="module")
def prepared(server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("prepared")
    proc = client(prepare_args("data"), folder, None)
    assert proc.wait(timeout=300) == 0
    return folder


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_client_ends_its_child(server, prepared, signum):
    """SIGKILL of the client (Snakemake's, fault_injection.py's) kills the child; SIGTERM and SIGINT are
    forwarded to it, and the client then ends as the child did."""
    server_proc, path, _ = server
    before = {c.pid for c in psutil.Process(server_proc.pid).children()}
    proc = client(classifier_args("data", 10**7, f"killed-{signum}"), prepared, path)
    child = started_child(server_proc, before)
    time.sleep(1.0)  # well into the training
    proc.send_signal(signum)
    proc.wait(timeout=60)
    assert wait_for(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, 20), \
        f"the child outlived its client ({signal.Signals(signum).name})"
    if signum == signal.SIGTERM:
        assert proc.returncode == -signal.SIGTERM
    if signum == signal.SIGINT:
        assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr.read()


def test_a_client_with_another_fingerprint_runs_in_its_own_process(server, tmp_path):
    """A variable read at import time (OMP_NUM_THREADS) set otherwise than in the server: refused, and
    the verb runs in the client's own process instead, with the same result."""
    _, path, folder = server
    before = len(served_rows(folder))
    proc = client(["no-such-verb"], tmp_path, path, OMP_NUM_THREADS="3")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "invalid choice" in err
    assert len(served_rows(folder)) == before


def test_no_server_or_a_dead_socket_runs_in_the_clients_process(tmp_path):
    for socket_path in (None, str(tmp_path / "nothing-here")):
        proc = client(["no-such-verb"], tmp_path, socket_path)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2 and "invalid choice" in err


def test_the_server_stops_with_its_owner(tmp_path):
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    path = str(tmp_path / "socket")
    proc = subprocess.Popen([sys.executable, "-m", "aiqn", forkserver.SERVE_FLAG, path, str(owner.pid)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=JOB_ENVIRONMENT)
    assert wait_for(lambda: os.path.exists(path), 20)
    owner.kill()
    owner.wait()
    assert proc.wait(timeout=60) == 0
    assert not os.path.exists(path)


def test_the_ci_run_ran_its_jobs_in_the_fork_server(ci_run):
    """Every `python -m aiqn` job of the CI run was a child of its fork server, and all exited 0."""
    rows = served_rows(ci_run)
    jobs = sum(1 for log in (ci_run / "logs" / "benchmarks").rglob("*.tsv"))
    assert rows and all(row["exit"] == "0" for row in rows)
    assert len(rows) >= jobs - 2  # plot_data and runtime_report's own line are the only ones that may not be


def test_a_killed_runs_folder_is_removed_but_a_live_or_young_one_is_kept(server, tmp_path):
    _, path, _ = server
    stale, young = tmp_path / f"{forkserver.FOLDER_PREFIX}stale", tmp_path / f"{forkserver.FOLDER_PREFIX}young"
    stale.mkdir()
    young.mkdir()
    live = tmp_path / f"{forkserver.FOLDER_PREFIX}live"
    live.mkdir()
    os.symlink(path, live / "socket")  # the module's running server answers here
    for folder in (stale, live):
        os.utime(folder, (time.time() - 7200, time.time() - 7200))
    assert forkserver.remove_stale_folders(str(tmp_path)) == [str(stale)]
    assert not stale.exists() and young.exists() and live.exists()
