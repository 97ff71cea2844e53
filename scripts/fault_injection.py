"""Kill the pipeline with SIGKILL at seeded moments, resume it, and compare every output byte for byte
with an uninterrupted run's.

    python scripts/fault_injection.py [--kills 3] [--seed 0] [--damage] [--work DIR] [--reference DIR]
                                      [--profile profiles/ci] [TARGET ...]

Two copies of the repository (what tests/repo_copy.py copies: the Snakefile, rules, schemas,
params, profiles, src, ...) are made under --work: `reference/` runs `snakemake --profile P` once, uninterrupted (or --reference names a
finished run to compare with); `faulted/` runs the same command and is killed K times. Each kill
point is a job kind (training, sampling, evaluation; the kinds cycle in that order), which job of
that kind in the invocation (1st to 3rd, seeded) and a delay after that job starts (seeded; longer
for training, so a kill often lands after a checkpoint was written). At that moment the whole
process tree of `snakemake` (it, its jobs and their children) is frozen with SIGSTOP and killed
with SIGKILL: no handler runs, nothing is flushed. The run then restarts as a user would,
`snakemake --unlock` and `snakemake --profile P --rerun-incomplete`, which the next kill point may
kill again. After the last restart finishes, a dry run must have nothing to do, and every output
file (scripts/compare_runs.py --bytes: data/processed, results, the reports DVC versions; run facts,
`*.runinfo.*`, left out) must have the sha256 of the reference's (with TARGETs, every output the
faulted run made).

Job kinds, by rule name (KINDS): training is every `train_*` rule and `sweep_trial`; sampling is
Table 1's `score_<dataset>_<model>` (`aiqn chain`: it samples each checkpoint, then scores it),
`inpainting` and `class_grid`; evaluation is `evaluate_*`, `score_cqf`, `score_vae`, the
reference and validation statistics and `density`.

With --damage, after each kill one resumable file of the faulted copy is also damaged before the
restart (`damage_newest`, seeded): the newest checkpoint of a training the kill cut short (else a
sampling shard under state/), cut to a seeded fraction of its bytes. It is written as a new file, so a copy
hard-linked into results/ (a published checkpoint) stays intact, as when a copy of the state folder
was cut short. The restart must move a damaged checkpoint aside (`*.damaged`) and resume from the one
before it (or from the start), draw a damaged shard again, and still end with every output equal.

Prints one line per kill (when, which jobs were running, how many processes were killed) and the
comparison; exits 1 when a restart fails, something is left to do, or any output differs.
Measured output: docs/benchmarks.md, "Faults".
"""

from __future__ import annotations

import argparse
import queue
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "scripts"), str(REPO / "tests")]
from compare_runs import byte_differences  # noqa: E402
from repo_copy import copy_environment, copy_repo  # noqa: E402  (the copies the tests and benchmarks make)
KINDS = {"training": re.compile(r"^(train_\w+|sweep_trial)$"),
         "sampling": re.compile(r"^(score_(?!cqf$|vae$)\w+|inpainting|class_grid)$"),
         "evaluation": re.compile(r"^(evaluate_\w+|score_cqf|score_vae|reference_\w+|validation_stats|density)$")}
DELAYS = {"training": (2.0, 15.0), "sampling": (0.5, 6.0), "evaluation": (0.5, 4.0)}  # seconds after the job starts
RULE_LINE = re.compile(r"^(?:local)?rule (\w+):")
JOBID_LINE = re.compile(r"^\s+jobid: (\d+)")
FINISHED_LINE = re.compile(r"^Finished jobid: (\d+)")


@dataclass
class KillPoint:
    """Kill when the `occurrence`-th job of `kind` in an invocation has run for `delay` seconds.

    `rule` narrows the kind to one rule name; with `when_exists` (a path in the run folder) the delay
    counts from the moment that file appears while the job runs (e.g. a training's first checkpoint)."""

    kind: str
    occurrence: int
    delay: float
    rule: str | None = None
    when_exists: str | None = None

    def matches(self, rule: str) -> bool:
        return rule == self.rule if self.rule else kind_of(rule) == self.kind

    def describe(self) -> str:
        after = f" after {self.when_exists} appears" if self.when_exists else ""
        return f"{self.rule or self.kind}, job {self.occurrence} of its kind, +{self.delay:.1f} s{after}"


def plan_kills(kills: int, seed: int) -> list[KillPoint]:
    """K kill points from `seed`: the kinds cycle training -> sampling -> evaluation."""
    rng = random.Random(seed)
    kinds = list(KINDS)
    return [KillPoint(kinds[i % len(kinds)], rng.randint(1, 3), round(rng.uniform(*DELAYS[kinds[i % len(kinds)]]), 1))
            for i in range(kills)]


def damage_newest(cwd: Path, rng: random.Random) -> str | None:
    """Cut one resumable file under `cwd`/state to a seeded fraction of its bytes (a new file, so its
    hard links elsewhere keep the good bytes) and return its path relative to `cwd`, or None.

    It picks, seeded, among the newest checkpoints of the trainings the kill cut short: those not yet
    hard-linked into results/ (one link; a finished training's are published, two links), so the
    restart resumes from it. With none, among the sampling shards."""
    state = cwd / "state"
    folders = sorted({path.parent for path in state.rglob("ckpt_*.pt")})
    unfinished = [newest for newest in (max(folder.glob("ckpt_*.pt")) for folder in folders)
                  if newest.stat().st_nlink == 1]
    candidates = unfinished or sorted(state.rglob("shard_*.npz"))
    if not candidates:
        return None
    path = rng.choice(candidates)
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data[: int(len(data) * rng.uniform(0.1, 0.9))])
    return str(path.relative_to(cwd))


def kind_of(rule: str) -> str | None:
    """The job kind of a rule name, or None (preparation, tables, figures)."""
    return next((kind for kind, pattern in KINDS.items() if pattern.match(rule)), None)


def snakemake_command(profile: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--profile", profile, *extra]


def kill_tree(pid: int) -> int:
    """Freeze `pid` and every descendant (SIGSTOP, so none spawns or reaps), then SIGKILL them all.
    Returns how many processes were killed."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for proc in tree:
        try:
            proc.suspend()
        except psutil.NoSuchProcess:
            pass
    tree = [root, *root.children(recursive=True)]  # anything started before the freeze took hold
    killed = 0
    for proc in tree:
        try:
            proc.kill()
            killed += 1
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=30)
    return killed


@dataclass
class Invocation:
    """What one `snakemake` invocation did: its exit status, whether it was killed, and when."""

    returncode: int | None = None
    killed: int = 0  # processes killed (0: it ran to the end)
    at: float = 0.0  # seconds into the invocation
    running: list[str] = field(default_factory=list)  # 'rule (jobid N)' of the jobs running when killed
    target_running: bool = False  # whether the job the kill point waited for was still running
    seconds: float = 0.0


def run_invocation(cwd: Path, command: list[str], log, point: KillPoint | None = None) -> Invocation:
    """Run `command` in `cwd`, its output appended to `log`; with `point`, kill the process tree at it."""
    began = time.monotonic()
    proc = subprocess.Popen(command, cwd=cwd, env=copy_environment(cwd), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout] + [lines.put(None)],
                              daemon=True)
    reader.start()
    running: dict[str, str] = {}  # jobid -> rule
    seen = {kind: 0 for kind in KINDS}
    pending_rule, target, deadline = None, None, None  # target: the jobid the kill point waits on
    result = Invocation()
    while True:
        now = time.monotonic()
        if target and deadline is None and point.when_exists and (cwd / point.when_exists).exists():
            deadline = now + point.delay
        if deadline is not None and now >= deadline:  # the kill moment
            result.at = now - began
            result.running = [f"{rule} (jobid {jobid})" for jobid, rule in running.items()]
            result.target_running = target in running
            result.killed = kill_tree(proc.pid)
            break
        timeout = deadline - now if deadline is not None else 0.2 if target else None  # 0.2: poll `when_exists`
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            continue
        if line is None:
            break
        log.write(line)
        if match := RULE_LINE.match(line):
            pending_rule = match.group(1)
        elif (match := JOBID_LINE.match(line)) and pending_rule:
            jobid, rule, pending_rule = match.group(1), pending_rule, None
            running[jobid] = rule
            if point and target is None and point.matches(rule):
                seen[point.kind] += 1
                if seen[point.kind] == point.occurrence:
                    target = jobid
                    deadline = None if point.when_exists else time.monotonic() + point.delay
        elif match := FINISHED_LINE.match(line):
            running.pop(match.group(1), None)
    result.returncode = proc.wait()
    reader.join(timeout=10)
    log.flush()
    result.seconds = time.monotonic() - began
    return result


def run_with_kills(cwd: Path, profile: str, points: list[KillPoint], targets: list[str], log_path: Path,
                   say=print, damage: random.Random | None = None) -> bool:
    """Run the pipeline in `cwd`, killed at each of `points` and restarted after each (with `damage`, a
    seeded resumable file is damaged after each kill: `damage_newest`); True when the last restart
    finished and a dry run then has nothing to do."""
    with open(log_path, "a") as log:
        for number, point in enumerate([*points, None], start=1):
            extra = ["--rerun-incomplete"] if number > 1 else []
            if number > 1:
                subprocess.run(snakemake_command(profile, "--unlock"), cwd=cwd, env=copy_environment(cwd), check=True,
                               stdout=log, stderr=subprocess.STDOUT)
            done = run_invocation(cwd, snakemake_command(profile, *extra, *targets), log, point)
            if point is None or not done.killed:
                where = "(the kill point was never reached)" if point else ""
                say(f"invocation {number}: {' '.join(extra) or 'first run'} ran to the end in {done.seconds:.0f} s "
                    f"(exit {done.returncode}) {where}".rstrip())
                if done.returncode != 0:
                    say(f"  FAILED: see {log_path}")
                    return False
                if point is None:
                    break
                continue
            say(f"invocation {number}: killed at {done.at:.1f} s ({point.describe()}): SIGKILL to {done.killed} "
                f"processes; running: {', '.join(done.running) or 'no job'}"
                + ("" if done.target_running else " (the job waited for had already finished)"))
            if damage is not None:
                say(f"  damaged before the restart: {damage_newest(cwd, damage) or 'nothing (no resumable file yet)'}")
        dry = subprocess.run(snakemake_command(profile, "-n", *targets), cwd=cwd, env=copy_environment(cwd),
                             capture_output=True, text=True)
        log.write(dry.stdout + dry.stderr)
    nothing = dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr
    say("dry run after the last restart: " + ("nothing to be done" if nothing else f"jobs left (see {log_path})"))
    return nothing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help="Snakemake targets (default: the profile's whole DAG)")
    parser.add_argument("--kills", type=int, default=3, help="kill points (K)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill points")
    parser.add_argument("--damage", action="store_true", help="after each kill, cut one resumable file "
                        "(newest state checkpoint or sampling shard, seeded) short before the restart")
    parser.add_argument("--profile", default="profiles/ci")
    parser.add_argument("--work", type=Path, default=Path("/tmp/aiqn-fault-injection"),
                        help="folder for the two copies (emptied first)")
    parser.add_argument("--reference", type=Path, help="a finished uninterrupted run to compare with, "
                        "instead of running one")
    args = parser.parse_args(argv)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    points = plan_kills(args.kills, args.seed)
    print(f"kill points (seed {args.seed}): " + "; ".join(point.describe() for point in points))
    faulted = copy_repo(args.work / "faulted")  # both copied first: the same code, whatever changes meanwhile
    reference = args.reference or copy_repo(args.work / "reference")
    if args.reference is None:
        with open(args.work / "reference.log", "w") as log:
            done = run_invocation(reference, snakemake_command(args.profile, *args.targets), log)
        print(f"reference: uninterrupted run in {done.seconds:.0f} s (exit {done.returncode})")
        if done.returncode != 0:
            print(f"FAILED: see {args.work / 'reference.log'}")
            return 1
    damage = random.Random(args.seed + 1) if args.damage else None
    if not run_with_kills(faulted, args.profile, points, args.targets, args.work / "faulted.log", damage=damage):
        return 1
    compared, lines = byte_differences(reference, faulted, within_b=bool(args.targets))
    print("\n".join(lines))
    print(f"compared {compared} output files by sha256 with the uninterrupted run: {compared - len(lines)} "
          f"identical, {len(lines)} differing or missing")
    return 1 if lines or not compared else 0


if __name__ == "__main__":
    sys.exit(main())
