"""A fork server for the pipeline's jobs: import torch and the package once per run, not once per job.

Every job of the workflow is a `python -m aiqn VERB ...` process, and a fresh one spends about 3-5 s
of CPU importing torch, NumPy, pandas, SciPy, matplotlib and the package before its verb starts;
a run of 130 jobs pays that 130 times (docs/benchmarks.md, "Process start-up and the fork
server"). Here the workflow's `onstart` hook (`start_server`) starts one server per `snakemake`
run. The server imports all of that once and then forks a child per job, so a job's start-up
costs a fork.

    snakemake ─┬─ job shell ── python -m aiqn VERB   (the client: stdlib only, ~0.1 s)
               │                   │  argv, cwd, environment, umask, fds 0-2 (SCM_RIGHTS)
               │                   ▼
               └─ fork server ── fork ── child: runs VERB on the client's fds, as a fresh process would
                                          exit status ──► server ──► client exits with it

The child behaves as the job's own process would:
- it runs with the client's argv, working directory, environment, umask, stdin, stdout and stderr;
- its Python, NumPy and torch global generators are seeded anew (a fresh process seeds them from
  the OS), and its exit status or killing signal becomes the client's;
- SIGINT, SIGTERM and SIGHUP sent to the client are forwarded to the child;
- when the client dies (SIGKILL from Snakemake or scripts/fault_injection.py), the server kills the
  child with SIGKILL at once, and a child whose server dies is killed by the kernel
  (PR_SET_PDEATHSIG): no job outlives the process that stands for it.

The client runs the verb itself, in its own process, whenever the server cannot stand in for it:
no server (`AIQN_FORK_SERVER` unset: a plain shell, a SLURM job, `AIQN_NO_FORK_SERVER=1`), a
refused or failed connection, or a fingerprint that differs from the server's (another
interpreter, `sys.path`, a package source file edited since the server started, or a variable
read at import time such as ATEN_CPU_CAPABILITY or OMP_NUM_THREADS).

Snakemake's benchmark files measure a job's process tree, which the child is not part of: with
the server their CPU and memory columns measure only the client, so the server appends each
child's exact CPU time and peak RSS (from wait4) to logs/forkserver.tsv, which
`aiqn.report.runtime` adds to the runtime report.

This module imports only the standard library at the top: the client must start fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sys
from typing import Callable

SOCKET_VARIABLE = "AIQN_FORK_SERVER"  # the server's socket path, set by `start_server` for the jobs
DISABLE_VARIABLE = "AIQN_NO_FORK_SERVER"  # set to 1: every job imports on its own, as before
JOB_LOG = "logs/forkserver.tsv"
JOB_LOG_COLUMNS = ["verb", "log", "wall_s", "user_s", "system_s", "max_rss_mb", "exit"]
# environment variables read when torch, NumPy or matplotlib are imported: a job whose values differ
# from the server's runs in its own process
IMPORT_TIME_PREFIXES = ("ATEN_", "OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "GOTO_", "VECLIB_", "NUMEXPR_",
                        "TORCH", "PYTORCH_", "CUDA_", "NVIDIA_", "PYTHON", "LD_", "MALLOC_", "MPL", "DNNL_", "ONEDNN_")
# what Snakemake sets for a job of one thread (snakemake/shell.py), which every rule of the workflow is:
# the server imports under it, so that OpenBLAS and OpenMP start as they would in the job's own process
ONE_THREAD_JOB = {name: "1" for name in ("OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                          "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")}
PRELOADED = ("torch", "numpy", "pandas", "scipy.stats", "scipy.linalg", "matplotlib", "tqdm", "yaml")
MAX_MESSAGE = 1 << 20
SERVE_FLAG = "--fork-server"  # `python -m aiqn --fork-server SOCKET OWNER_PID`: start_server's command


def fingerprint(package_dir: str) -> str:
    """What a forked child inherits and a fresh process would compute anew: the interpreter, its
    module path, the import-time environment and every source file of the package (path, size,
    modification time). Equal fingerprints: a child runs what the client's own process would."""
    digest = hashlib.sha256()
    digest.update(json.dumps([sys.executable, sys.path[1:],
                              sorted((k, v) for k, v in os.environ.items() if k.startswith(IMPORT_TIME_PREFIXES))
                              ]).encode())
    for root, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            stat = os.stat(os.path.join(root, name))
            digest.update(f"{os.path.relpath(os.path.join(root, name), package_dir)}:{stat.st_size}:"
                          f"{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _package_dir() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- the client -------------------------------------------------------------------------------------


def run_in_server(argv: list[str]) -> int | None:
    """Run `python -m aiqn ARGV` in the run's fork server; the exit code, or None where the server
    cannot stand in for this process (the caller then runs the verb itself). A child killed by a
    signal kills this process with the same signal."""
    path = os.environ.get(SOCKET_VARIABLE)
    if not path or os.environ.get(DISABLE_VARIABLE) == "1" or "SLURM_JOB_ID" in os.environ:
        return None
    fds = [fd for fd in (0, 1, 2) if _is_open(fd)]
    request = json.dumps({"fingerprint": fingerprint(_package_dir()), "argv": argv, "cwd": os.getcwd(),
                          "env": dict(os.environ), "umask": _umask(), "fds": fds,
                          "sys_path": sys.path}).encode()
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        conn.connect(path)
        socket.send_fds(conn, [request], fds)
        reply = json.loads(conn.recv(MAX_MESSAGE) or b"{}")
    except (OSError, ValueError):
        return None
    if "pid" not in reply:  # refused (another fingerprint) or a server on its way out
        return None
    child = reply["pid"]

    def forward(signum, _frame):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    while True:
        try:
            final = conn.recv(MAX_MESSAGE)
            break
        except InterruptedError:
            continue
    if not final:  # the server died, and the kernel killed the child with it
        print("aiqn: the fork server stopped before this job ended; the job was killed", file=sys.stderr)
        return 1
    status = json.loads(final)["status"]
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    return os.waitstatus_to_exitcode(status)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- the server -------------------------------------------------------------------------------------


def serve(path: str, owner: int, run: Callable[[list[str]], None], package: str) -> None:
    """Listen on `path`, import the heavy modules and every module of `package`, then fork a child per
    request that calls `run(argv)` (the CLI's main), until `owner` (the snakemake process) exits.
    Binding comes first, so that jobs started while the modules load wait in the backlog instead of
    importing them again themselves."""
    import pkgutil
    import selectors
    import time
    import warnings

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)
    children: dict[int, dict] = {}  # pid -> its client's connection, pidfd, start time, verb and log file
    try:
        import importlib

        own_fingerprint = fingerprint(_package_dir())  # before the imports, like the client's
        environment_before = dict(os.environ)
        for name in PRELOADED:
            importlib.import_module(name)
        for module in pkgutil.walk_packages(importlib.import_module(package).__path__, f"{package}."):
            importlib.import_module(module.name)
        # what the imports set (e.g. KMP_INIT_AT_FORK): a fresh process has it after its imports too
        import_environment = {k: v for k, v in os.environ.items() if environment_before.get(k) != v}
        selector = selectors.DefaultSelector()
        selector.register(listener, selectors.EVENT_READ, ("listener", None))
        while _alive(owner):
            for key, _ in selector.select(timeout=1.0):
                kind, pid = key.data
                if kind == "listener":
                    conn, _ = listener.accept()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
                        child = _start_child(conn, own_fingerprint, import_environment, run, selector, listener,
                                              children)
                    if child is not None:
                        pid, pidfd, argv, log = child
                        children[pid] = {"conn": conn, "pidfd": pidfd, "start": time.monotonic(), "verb": _verb(argv),
                                         "log": log}
                        selector.register(conn, selectors.EVENT_READ, ("client", pid))
                        selector.register(pidfd, selectors.EVENT_READ, ("child", pid))
                elif kind == "client":  # readable means closed: the client died, so must its child
                    selector.unregister(key.fileobj)
                    _kill(pid)
                else:
                    _reap(pid, children.pop(pid), selector)
    finally:
        for pid in children:
            _kill(pid)
        listener.close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _start_child(conn, own_fingerprint, import_environment, run, selector, listener, children):
    """Receive one request on `conn` and fork its child; (pid, pidfd, argv, log path), or None if refused."""
    conn.settimeout(10)
    try:
        message, fds, _, _ = socket.recv_fds(conn, MAX_MESSAGE, 3)
        request = json.loads(message)
    except (OSError, ValueError):
        conn.close()
        return None
    if request.get("fingerprint") != own_fingerprint:
        for fd in fds:
            os.close(fd)
        conn.send(json.dumps({"refused": "fingerprint"}).encode())
        conn.close()
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            selector.close()
            listener.close()
            for other in children.values():
                other["conn"].close()
                os.close(other["pidfd"])
            conn.close()
            _become_job(request, fds, import_environment, run)
        finally:
            os._exit(70)  # only if _become_job itself failed
    log = _job_log_path(request, fds)
    for fd in fds:
        os.close(fd)
    conn.settimeout(None)
    conn.send(json.dumps({"pid": pid}).encode())
    return pid, os.pidfd_open(pid), request["argv"], log


def _job_log_path(request: dict, fds: list[int]) -> str:
    """The file the job's stderr goes to (its rule's `log:`, through `> {log} 2>&1`), relative to its
    working folder: what names the job in logs/forkserver.tsv; '-' for anything else."""
    if 2 not in request["fds"]:
        return "-"
    try:
        target = os.readlink(f"/proc/self/fd/{fds[request['fds'].index(2)]}")
    except OSError:
        return "-"
    relative = os.path.relpath(target, request["cwd"])
    return relative if os.path.isfile(target) and not relative.startswith("..") else "-"


def _become_job(request: dict, fds: list[int], import_environment: dict[str, str],
                run: Callable[[list[str]], None]) -> None:
    """In the forked child: take the client's place (fds, directory, environment, argv, fresh
    generators), run its verb like `python -m aiqn` would, and exit with its status."""
    import atexit
    import ctypes
    import random
    import tempfile
    import traceback

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the server
    if os.getppid() == 1:  # the server died before the line above
        os._exit(70)
    os.setpgid(0, 0)  # signals reach the child only through its client, which forwards them
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in zip(request["fds"], fds):
        os.dup2(fd, target)
        os.close(fd)
    for target in {0, 1, 2} - set(request["fds"]):
        os.close(target)
    sys.stdout = open(1, "w", buffering=1 if os.isatty(1) else -1, closefd=False) if 1 in request["fds"] else None
    sys.stderr = open(2, "w", buffering=1, closefd=False) if 2 in request["fds"] else None
    sys.stdin = open(0, "r", closefd=False) if 0 in request["fds"] else None
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update({**request["env"], **import_environment})
    os.umask(request["umask"])
    sys.path[:] = request["sys_path"]
    tempfile.tempdir = None  # gettempdir() reads TMPDIR (Snakemake's tmpdir resource) again
    sys.argv = [os.path.join(_package_dir(), "__main__.py"), *request["argv"]]
    random.seed()
    import numpy
    import torch

    numpy.random.seed()
    torch.seed()
    code = 0
    try:
        run(request["argv"])
    except SystemExit as exit_:
        code = _exit_code(exit_.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        _flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:  # noqa: BLE001 - as the interpreter would: traceback, exit status 1
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    _flush()
    os._exit(code)


def _exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            try:
                stream.flush()
            except OSError:
                pass


def _verb(argv: list[str]) -> str:
    """The verb of an argv (`chain` for chained calls): its first word after the global options."""
    index = 0
    while index < len(argv) and argv[index].startswith("-"):
        index += 2 if argv[index] == "--threads" else 1
    return argv[index] if index < len(argv) else "?"


def _reap(pid: int, child: dict, selector) -> None:
    """A child exited: send its status to its client (if still there) and log its resource use."""
    import time

    _, status, usage = os.wait4(pid, 0)
    selector.unregister(child["pidfd"])
    os.close(child["pidfd"])
    conn = child["conn"]
    try:
        selector.unregister(conn)
    except (KeyError, ValueError):
        pass
    try:
        conn.send(json.dumps({"status": status}).encode())
    except OSError:
        pass
    conn.close()
    row = [child["verb"], child["log"], f"{time.monotonic() - child['start']:.3f}", f"{usage.ru_utime:.3f}",
           f"{usage.ru_stime:.3f}", f"{usage.ru_maxrss / 1024:.1f}", str(os.waitstatus_to_exitcode(status))]
    try:
        os.makedirs(os.path.dirname(JOB_LOG), exist_ok=True)
        new = not os.path.exists(JOB_LOG)
        with open(JOB_LOG, "a") as log:
            log.write(("\t".join(JOB_LOG_COLUMNS) + "\n" if new else "") + "\t".join(row) + "\n")
    except OSError:
        pass


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


# --- the workflow's side ----------------------------------------------------------------------------


def start_server(local: bool, wait_s: float = 10.0):
    """Start this run's fork server (from the Snakefile's `onstart`) and tell the jobs where it is
    (`AIQN_FORK_SERVER` in the environment they inherit). Nothing for a dry run's, a cluster
    executor's (`local` False: a SLURM job on another node must not run in this one) or where
    `AIQN_NO_FORK_SERVER=1`. Returns the server's process, or None."""
    import atexit
    import shutil
    import subprocess
    import tempfile
    import time

    if not local or os.environ.get(DISABLE_VARIABLE) == "1" or not hasattr(os, "pidfd_open"):
        return None
    remove_stale_folders(tempfile.gettempdir())
    folder = tempfile.mkdtemp(prefix=FOLDER_PREFIX)  # short (a socket path has 107 bytes) and private (0700)
    path = os.path.join(folder, "socket")
    python = shutil.which("python") or sys.executable  # the interpreter the jobs' `python -m aiqn` runs
    os.makedirs(".snakemake/log", exist_ok=True)
    with open(".snakemake/log/forkserver.log", "ab") as log:
        server = subprocess.Popen([python, "-m", "aiqn", SERVE_FLAG, path, str(os.getpid())],
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=log, env={**os.environ, **ONE_THREAD_JOB})
    deadline = time.monotonic() + wait_s
    while not os.path.exists(path) and server.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if not os.path.exists(path):
        server.kill()
        print("aiqn: the fork server did not start (.snakemake/log/forkserver.log); every job imports torch "
              "on its own", file=sys.stderr)
        return None
    os.environ[SOCKET_VARIABLE] = path
    atexit.register(stop_server, server, folder)
    return server


FOLDER_PREFIX = "aiqn-fork-"


def remove_stale_folders(parent: str, older_than_s: float = 3600.0) -> list[str]:
    """Remove the server folders under `parent` that a killed run left (no server answers on their
    socket) and that are older than `older_than_s` (a younger one may belong to a server still
    starting); returns what it removed."""
    import shutil
    import time

    removed = []
    for name in os.listdir(parent):
        folder = os.path.join(parent, name)
        if not name.startswith(FOLDER_PREFIX) or not os.path.isdir(folder):
            continue
        try:
            if time.time() - os.stat(folder).st_mtime < older_than_s:
                continue
        except OSError:
            continue
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            probe.connect(os.path.join(folder, "socket"))
            continue  # a live server: not stale
        except OSError:
            pass
        finally:
            probe.close()
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def stop_server(server, folder: str) -> None:
    """Stop the server `start_server` started and remove its folder."""
    import shutil

    os.environ.pop(SOCKET_VARIABLE, None)
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=10)
        except Exception:  # noqa: BLE001 - it would not stop: kill it
            server.kill()
    shutil.rmtree(folder, ignore_errors=True)



def server_main(argv: list[str], run: Callable[[list[str]], None], package: str) -> None:
    """`python -m aiqn --fork-server SOCKET OWNER_PID` (aiqn/__main__.py): the server's process."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the jobs through their clients
    serve(argv[0], int(argv[1]), run, package)
