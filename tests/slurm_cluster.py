"""A throw-away single-node SLURM cluster on this machine, for tests and for trying profiles/slurm
by hand (docs/cluster.md). The recipe is the one seen working on Debian 12 with slurm 22.05 and
munge 0.5 (../shared/slurm-local.md):

- packages `slurmctld slurmd slurm-client munge` from apt, installed only when a program is
  missing (root only); the Snakemake executor plugin from PyPI when it is not importable;
- munged as the munge user, its socket in a directory of mode 755 in a scratch directory;
- one slurm.conf in the scratch directory (CPUs and memory of this machine, read at runtime, and
  two free TCP ports), linked from /etc/slurm/slurm.conf because the plugin's job step strips
  every SLURM_* variable, SLURM_CONF included, before its inner `srun`; the link is made only
  where that path does not exist and removed afterwards;
- `slurmctld -D` and `slurmd -D` as child processes; ready when `sinfo` shows the node idle.

On exit it cancels the jobs of this private cluster, stops exactly the daemons it started (by
PID), removes the link and the scratch directory. Where SLURM cannot start here (not root, no
apt, packages not installable, a foreign /etc/slurm/slurm.conf, daemons that die) `local_slurm()`
yields a reason string instead, for `pytest.skip(reason)`.

    with local_slurm() as cluster:
        if isinstance(cluster, str):
            pytest.skip(cluster)
        subprocess.run(["sbatch", "--wrap", "hostname"], env=cluster.env)

By hand: `scripts/slurm-local.sh start|status|stop` (or `python tests/slurm_cluster.py ...`).
NOTE: it changes the machine (apt packages, pip package, /etc/slurm/slurm.conf while it runs);
it is meant for disposable development machines and CI runners, never for a real cluster node.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

APT_PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
PROGRAMS = ["slurmctld", "slurmd", "sinfo", "sbatch", "squeue", "scancel", "srun", "scontrol", "munged"]
PLUGIN = "snakemake-executor-plugin-slurm>=2.8,<3"  # seen working: 2.8.0 (jobstep 0.6.1), snakemake 9.27
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")  # where the job step's inner srun looks (trap 1)
PARTITION = "debug"
NODE = "localhost"
SCRATCH_BASE = Path("/tmp")  # not $TMPDIR: the munge user must be able to reach its socket directory
SCRATCH_PREFIX = "aiqn-slurm-"
STATE_FILE = SCRATCH_BASE / "aiqn-slurm-local.json"  # the cluster started by hand (main())

SLURM_CONF = """\
# Written by tests/slurm_cluster.py: a single-node cluster in {scratch}
ClusterName=local
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={scratch}/munge/munge.socket.2
SlurmUser=root
SlurmdUser=root
StateSaveLocation={scratch}/state
SlurmdSpoolDir={scratch}/spool
SlurmctldPidFile={scratch}/slurmctld.pid
SlurmdPidFile={scratch}/slurmd.pid
SlurmctldLogFile={scratch}/log/slurmctld.log
SlurmdLogFile={scratch}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
NodeName={node} NodeAddr=127.0.0.1 {hardware} State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def _run(cmd: list[str], timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)


def ensure_plugin() -> str | None:
    """Install the Snakemake SLURM executor plugin when it is not importable; a reason on failure."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is not None:
        return None
    try:
        result = _run([sys.executable, "-m", "pip", "install", "--quiet", PLUGIN], timeout=600)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"pip install {PLUGIN} failed: {error}"
    importlib.invalidate_caches()
    if result.returncode != 0 or importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return f"pip install {PLUGIN} failed: {(result.stdout + result.stderr)[-1500:]}"
    return None


def missing_programs() -> list[str]:
    return [name for name in PROGRAMS if shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None]


def ensure_packages() -> str | None:
    """apt-get install the SLURM and munge packages when a program is missing; a reason on failure."""
    missing = missing_programs()
    if not missing:
        return None
    if os.geteuid() != 0:
        return f"SLURM is not installed ({', '.join(missing)} missing) and installing it needs root"
    if shutil.which("apt-get") is None:
        return f"SLURM is not installed ({', '.join(missing)} missing) and there is no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=120"]
    for cmd in (["apt-get", *lock, "update"],
                ["apt-get", *lock, "install", "-y", "--no-install-recommends", *APT_PACKAGES]):
        try:
            result = _run(cmd, timeout=600, env=env)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"{' '.join(cmd)} failed: {error}"
        if result.returncode != 0:
            return f"{' '.join(cmd)} failed (exit {result.returncode}): {(result.stdout + result.stderr)[-1500:]}"
    still = missing_programs()
    return f"after apt-get install, still missing: {', '.join(still)}" if still else None


def _hardware() -> str:
    """This node as slurmd sees it (`slurmd -C`: CPUs, sockets, cores, threads, RealMemory)."""
    try:
        first = _run(["slurmd", "-C"], timeout=30).stdout.splitlines()[0]
        fields = dict(item.split("=", 1) for item in first.split() if "=" in item)
        keys = ["CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory"]
        if all(fields.get(k, "").isdigit() for k in keys):
            return " ".join(f"{k}={fields[k]}" for k in keys)
    except (OSError, subprocess.TimeoutExpired, IndexError, ValueError):
        pass
    memory_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    return f"CPUs={os.cpu_count()} RealMemory={memory_kb // 1024}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM the daemon when the process that started it dies (a killed pytest)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not running
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _stop_pid(pid: int, marker: str, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL, one PID, and only while its command line still names `marker`."""
    if marker not in _cmdline(pid):
        return  # gone, or the PID now belongs to another process
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _stale_link() -> bool:
    """Whether /etc/slurm/slurm.conf is a link of ours whose slurmctld no longer runs."""
    if not DEFAULT_CONF.is_symlink():
        return False
    scratch = Path(os.readlink(DEFAULT_CONF)).parent
    if not scratch.name.startswith(SCRATCH_PREFIX):
        return False
    try:
        pid = int((scratch / "slurmctld.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return True
    return not (_alive(pid) and str(scratch) in _cmdline(pid))


class LocalSlurm:
    """One single-node cluster in `scratch`; start() returns a reason string where it cannot start."""

    def __init__(self, scratch: Path | None = None, *, tie_to_parent: bool = True, timeout: float = 90):
        self.scratch = Path(scratch or tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=SCRATCH_BASE))
        self.conf = self.scratch / "slurm.conf"
        self.partition = PARTITION
        self.node = NODE
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.tie_to_parent = tie_to_parent
        self.timeout = timeout
        self.pids: dict[str, int] = {}  # name -> PID of every daemon started here
        self._processes: list[subprocess.Popen] = []
        self.linked = False
        self.made_etc_slurm = False

    # -- start -----------------------------------------------------------------------------
    def start(self) -> str | None:
        if os.geteuid() != 0:
            return "a local SLURM cluster needs root (munged runs as the munge user, slurmd as root)"
        reason = ensure_plugin() or ensure_packages() or self._link_config()
        if reason:
            return reason
        try:
            self._write_config()
            reason = self._start_munge() or self._start_slurm() or self._wait_idle()
        except (OSError, subprocess.SubprocessError, KeyError) as error:
            reason = f"could not start the local SLURM cluster: {error!r}\n{self.logs()}"
        return reason

    def _link_config(self) -> str | None:
        """/etc/slurm/slurm.conf -> our slurm.conf, only where that path is free (or a stale link of ours)."""
        if _stale_link():  # left by a run that was killed before its clean-up (its daemons died with it)
            stale = Path(os.readlink(DEFAULT_CONF)).parent
            DEFAULT_CONF.unlink()
            shutil.rmtree(stale, ignore_errors=True)
        if DEFAULT_CONF.exists() or DEFAULT_CONF.is_symlink():
            return (f"{DEFAULT_CONF} exists (another SLURM setup, or a local cluster already running: "
                    f"scripts/slurm-local.sh stop); the plugin's job step reads that path, not SLURM_CONF")
        if not DEFAULT_CONF.parent.exists():
            DEFAULT_CONF.parent.mkdir(parents=True)
            self.made_etc_slurm = True
        DEFAULT_CONF.symlink_to(self.conf)
        self.linked = True
        return None

    def _write_config(self) -> None:
        self.scratch.chmod(0o755)  # munged (not root) must reach its socket directory
        for sub in ("state", "spool", "log"):
            (self.scratch / sub).mkdir(exist_ok=True)
        self.conf.write_text(SLURM_CONF.format(scratch=self.scratch, node=self.node, partition=self.partition,
                                               hardware=_hardware(), ctld_port=_free_port(),
                                               slurmd_port=_free_port()))

    def _spawn(self, name: str, cmd: list[str], **kwargs) -> subprocess.Popen:
        log = open(self.scratch / "log" / f"{name}.out", "ab")
        process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   preexec_fn=_die_with_parent if self.tie_to_parent else None,
                                   start_new_session=not self.tie_to_parent, **kwargs)
        log.close()
        self._processes.append(process)
        self.pids[name] = process.pid
        return process

    def _start_munge(self) -> str | None:
        key = Path("/etc/munge/munge.key")
        if not key.exists():  # the package creates it; a minimal image may have skipped that
            result = _run(["mungekey", "--create", f"--keyfile={key}"])
            if result.returncode != 0:
                return f"no {key} and mungekey failed: {result.stderr}"
            shutil.chown(key, "munge", "munge")
            key.chmod(0o600)
        munge_dir = self.scratch / "munge"
        munge_dir.mkdir(mode=0o755, exist_ok=True)
        munge_dir.chmod(0o755)  # 700 fails: "Socket is inaccessible"
        shutil.chown(munge_dir, "munge", "munge")
        user = pwd.getpwnam("munge")
        socket_path = munge_dir / "munge.socket.2"
        process = self._spawn("munged", ["munged", "-F", f"--socket={socket_path}",
                                          f"--pid-file={munge_dir}/munged.pid", f"--log-file={munge_dir}/munged.log",
                                          f"--seed-file={munge_dir}/munged.seed"],
                              user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return f"munged exited with {process.returncode}\n{self.logs()}"
            if socket_path.exists():
                return None
            time.sleep(0.2)
        return f"munged did not create {socket_path} in 20 s\n{self.logs()}"

    def _start_slurm(self) -> str | None:
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)], env=self.env)
        time.sleep(1)  # slurmd registers with the controller; give it a moment to listen
        self._spawn("slurmd", ["slurmd", "-D", "-N", self.node, "-f", str(self.conf)], env=self.env)
        return None

    def node_state(self) -> str:
        try:
            result = _run(["sinfo", "-h", "-N", "-n", self.node, "-o", "%t"], timeout=15, env=self.env)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"sinfo: {error}"
        lines = (result.stdout.strip() or result.stderr.strip()).splitlines()
        return lines[0].strip() if lines else ""

    def _wait_idle(self) -> str | None:
        deadline = time.monotonic() + self.timeout
        state = ""
        while time.monotonic() < deadline:
            for process in self._processes:
                if process.poll() is not None:
                    return f"{Path(process.args[0]).name} exited with {process.returncode}\n{self.logs()}"
            state = self.node_state()
            if state == "idle":
                return None
            time.sleep(0.5)
        return f"node {self.node} not idle after {self.timeout:.0f} s (sinfo: {state!r})\n{self.logs()}"

    # -- inspect ---------------------------------------------------------------------------
    def logs(self, chars: int = 1500) -> str:
        """The end of every daemon log, for error messages."""
        parts = []
        for path in sorted((self.scratch / "log").glob("*")) + [self.scratch / "munge" / "munged.log"]:
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace")
                if text.strip():
                    parts.append(f"--- {path} ---\n{text[-chars:]}")
        return "\n".join(parts) or "(no daemon logs)"

    # -- stop ------------------------------------------------------------------------------
    def stop(self, remove_scratch: bool = True) -> None:
        """Cancel this cluster's jobs, stop the daemons started here by PID, remove the link."""
        if self.pids.get("slurmctld") and _alive(self.pids["slurmctld"]):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                _run(["scancel", "--quiet", "--full", f"--partition={self.partition}"], timeout=15, env=self.env)
                deadline = time.monotonic() + 20  # let slurmstepd end the job processes
                while time.monotonic() < deadline and _run(["squeue", "-h", "-o", "%i"], timeout=15,
                                                           env=self.env).stdout.strip():
                    time.sleep(0.5)
        marker = str(self.scratch)
        for name in ("slurmd", "slurmctld", "munged"):
            if name in self.pids:
                _stop_pid(self.pids.pop(name), marker)
        for process in self._processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        self._processes.clear()
        if self.linked and DEFAULT_CONF.is_symlink() and os.readlink(DEFAULT_CONF) == str(self.conf):
            DEFAULT_CONF.unlink()
        self.linked = False
        if self.made_etc_slurm:
            with contextlib.suppress(OSError):
                DEFAULT_CONF.parent.rmdir()
            self.made_etc_slurm = False
        if remove_scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)


@contextlib.contextmanager
def local_slurm(timeout: float = 90) -> Iterator[LocalSlurm | str]:
    """A running single-node cluster, or the reason why there is none; always cleaned up."""
    cluster = LocalSlurm(timeout=timeout)
    try:
        reason = cluster.start()
        yield reason if reason else cluster
    finally:
        cluster.stop()


# -- by hand: scripts/slurm-local.sh start|status|stop --------------------------------------------
def main(argv: list[str]) -> int:
    command = argv[0] if argv else "status"
    state = json.loads(STATE_FILE.read_text()) if STATE_FILE.exists() else None
    if command == "start":
        if state:
            print(f"already started ({STATE_FILE}); stop it first", file=sys.stderr)
            return 1
        cluster = LocalSlurm(tie_to_parent=False)
        reason = cluster.start()
        if reason:
            cluster.stop()
            print(reason, file=sys.stderr)
            return 1
        STATE_FILE.write_text(json.dumps({"scratch": str(cluster.scratch), "pids": cluster.pids,
                                          "linked": cluster.linked, "made_etc_slurm": cluster.made_etc_slurm}))
        print(f"local SLURM cluster up: partition {cluster.partition}, config {cluster.conf} "
              f"(linked from {DEFAULT_CONF}), daemons {cluster.pids}")
        return 0
    if command == "stop":
        if not state:
            print("no local cluster started by this script", file=sys.stderr)
            return 1
        cluster = LocalSlurm(Path(state["scratch"]))
        cluster.pids, cluster.linked, cluster.made_etc_slurm = state["pids"], state["linked"], state["made_etc_slurm"]
        cluster.stop()
        STATE_FILE.unlink()
        print("stopped")
        return 0
    if command == "status":
        if not state:
            print("not started")
            return 1
        cluster = LocalSlurm(Path(state["scratch"]))
        print(f"node {cluster.node}: {cluster.node_state()}; daemons {state['pids']}; scratch {state['scratch']}")
        return 0
    print("usage: slurm_cluster.py start|status|stop", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
