"""One GPU check of the paper-scale claims: training speed, cached sampling, and an exact resume of `train`.

    benchmarks/gpu_check.sh [OUT] [OPTIONS]                        # on one GPU, under 8 minutes
    python benchmarks/gpu_check.py --device cuda --out gpu_check     # the same, without the time limit
    python benchmarks/gpu_check.py --device cpu --blocks 1 --planes 8 --output-planes 16 --filter-size 3 \\
        --size 8 --batch-size 4 --steps 3 --warmup 1 --repeats 1 --sample-count 8 --sample-batch 4 \\
        --train-images 64 --train-steps 120 --checkpoint-every 40 --out /tmp/gpu_check   # tiny, on a CPU

Sections (each writes `gpu_check.json` and `gpu_check.md` into --out again when it ends, so a run
cut short by a time limit still leaves what it measured):

1. training: steps/s and peak GPU memory of the paper's small network (the paper profile's
   models.pixelcnn / models.pixeliqn: 15 blocks, filter 5, 128 planes, 1024 output planes, batch
   32, each head with its profile optimizer and layout) on random CIFAR-shaped data, at fp32, bf16
   and bf16 + torch.compile, timed by benchmarks/training_speed.py's `run_variant`. The compiled
   variants run last: they take the longest to warm up.
2. sampling: `generate(..., method="cached")` of --sample-count samples at --sample-batch on a
   randomly initialised network of the same size (speed does not depend on the weights), and the
   time projected linearly to --project-count samples.
3. resume: the real `python -m aiqn train` verb with the paper profile's pixeliqn settings (steps
   and checkpoints overridden) on random data of the --train-dataset's shape: once uninterrupted
   (run A), once SIGKILLed after its first checkpoint and rerun with the same command (run B). The
   check passes when B resumed from a checkpoint, A's and B's final checkpoints hold equal model
   and EMA tensors (torch.equal) and their train_log.csv agree on every step, loss and lr.

Targets: at least 60 steps/s in bf16 per head (the better of eager and compiled) and 10,000 cached
samples projected under 5 minutes; they are judged at whatever size ran, and `full_size` says
whether that was the paper's. Exit status 1 when the resume check fails, 0 otherwise.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))  # training_speed.py, beside this file

from training_speed import device_name, run_variant, sync  # noqa: E402

from aiqn.data import get_dataset  # noqa: E402
from aiqn.methods.pixeliqn.train import TrainConfig  # noqa: E402
from aiqn.nets import PixelCNNConfig, build_model  # noqa: E402
from aiqn.nets.sampling import generate  # noqa: E402

HEAD_MODELS = {"categorical": "pixelcnn", "quantile": "pixeliqn"}  # the paper profile's small models per head
ARCHITECTURE_FIELDS = ("blocks", "filter_size", "planes", "output_planes")
SECTIONS = ("training", "sampling", "resume")
STEPS_PER_S_TARGET = 60.0
SAMPLING_TARGET_S = 300.0


def say(message: str) -> None:
    """One progress line, flushed at once (the log of a job under `timeout` is read while it runs)."""
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def merged(base: dict, overlay: dict) -> dict:
    """`overlay` merged into a copy of `base` key by key (dicts recursively, everything else replaced),
    as Snakemake merges a profile's configfile into params.yaml."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def paper_model_entry(model: str, dataset: str) -> dict:
    """A model's definition in the paper profile (params.yaml with profiles/paper/params.yaml merged in),
    with its dataset_overrides for `dataset` applied and the run's seed where its train section has none,
    as the pipeline's train rule builds it. Returns {"head", "architecture", "train"}."""
    params = merged(yaml.safe_load((REPO / "params.yaml").read_text()),
                    yaml.safe_load((REPO / "profiles" / "paper" / "params.yaml").read_text()))
    entry = params["models"][model]
    entry = merged({k: v for k, v in entry.items() if k != "dataset_overrides"},
                   entry.get("dataset_overrides", {}).get(dataset, {}))
    train = dict(entry["train"])
    train.setdefault("seed", params["seed"])
    return {"head": entry["head"], "architecture": dict(entry["architecture"]), "train": train}


def network_overrides(args) -> dict:
    """The architecture options given on the command line (None: the profile's value)."""
    return {name: getattr(args, name) for name in ARCHITECTURE_FIELDS if getattr(args, name) is not None}


def is_full_size(args) -> bool:
    """Whether sections 1 and 2 ran at the paper's size: the profile's network and batch on 3x32x32 images
    at 256 levels (the targets are stated for that size)."""
    profile = paper_model_entry("pixeliqn", "cifar10")
    network = {**profile["architecture"], **network_overrides(args)}
    return (network == profile["architecture"] and args.batch_size in (None, profile["train"]["batch_size"])
            and (args.channels, args.size, args.levels) == (3, 32, 256))


# ----------------------------------------------------------------------------------------------- 1. training

def training_variants(args, device: str) -> list[tuple[str, bool]]:
    """(precision, compiled) of every timed variant: each precision eager, then bf16 compiled when
    compile is on (auto: on CUDA only)."""
    compile_on = args.compile == "on" or (args.compile == "auto" and device.startswith("cuda"))
    variants = [(precision, False) for precision in args.precisions]
    if compile_on:
        variants += [("bf16", True)]
    return variants


def time_training(args, device: str, head: str, precision: str, compiled: bool, images: np.ndarray) -> dict:
    """One training-speed row: `run_variant` of the head's paper-profile model and train settings."""
    entry = paper_model_entry(HEAD_MODELS[head], args.train_dataset)
    architecture = {**entry["architecture"], **network_overrides(args)}
    model_config = PixelCNNConfig(head=head, channels=args.channels, height=args.size, width=args.size,
                                  levels=args.levels, **architecture)
    train = entry["train"]
    batch_size = args.batch_size or train["batch_size"]
    train_config = TrainConfig(steps=1, batch_size=batch_size, optimizer=train["optimizer"], lr=train["lr"],
                               kappa=train.get("kappa", 0.002), ema_rate=train["ema_rate"], precision=precision,
                               compile=compiled, channels_last=bool(train.get("channels_last", False)))
    if compiled:
        torch._dynamo.reset()  # a fresh model each variant: do not count against the recompile limit
    row = run_variant(model_config, train_config, images, device, args.warmup, args.steps, args.repeats)
    row.update(head=head, precision=precision, compile=compiled, optimizer=train_config.optimizer,
               channels_last=train_config.channels_last, batch_size=batch_size, **architecture)
    return row


# ----------------------------------------------------------------------------------------------- 2. sampling

def time_sampling(args, device: str, head: str) -> dict:
    """Seconds for `generate(..., method="cached")` of --sample-count samples at --sample-batch on a
    randomly initialised network, and the linear projection to --project-count samples."""
    architecture = {**paper_model_entry(HEAD_MODELS[head], args.train_dataset)["architecture"],
                    **network_overrides(args)}
    config = PixelCNNConfig(head=head, channels=args.channels, height=args.size, width=args.size, levels=args.levels,
                            **architecture)
    torch.manual_seed(0)
    model = build_model(config).to(device).eval()
    sync(device)
    began = time.perf_counter()
    images = generate(model, args.sample_count, args.sample_batch, seed=0, method="cached", progress=False)
    sync(device)
    seconds = time.perf_counter() - began
    expected = (args.sample_count, config.channels, config.height, config.width)
    if images.shape != expected or images.dtype != np.uint8 or int(images.max()) >= config.levels:
        raise RuntimeError(f"cached sampling returned {images.dtype} {images.shape} (max {images.max()}), "
                           f"expected uint8 {expected} below {config.levels}")
    projected = seconds * args.project_count / args.sample_count
    return {"head": head, "method": "cached", "count": args.sample_count, "batch_size": args.sample_batch,
            "seconds": seconds, "samples_per_s": args.sample_count / seconds, "project_count": args.project_count,
            "projected_s": projected, **architecture}


# ----------------------------------------------------------------------------------------------- 3. resume

def write_random_split(path: Path, dataset: str, count: int) -> None:
    """A prepared split as `load_split` reads it (uint8 images N x C x H x W below the dataset's levels,
    int64 labels) of random values in the dataset's shape."""
    spec = get_dataset(dataset)
    rng = np.random.default_rng(0)
    images = rng.integers(0, spec.levels, size=(count, *spec.shape), dtype=np.uint8)
    labels = rng.integers(0, max(spec.num_classes, 1), size=count).astype(np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=images, labels=labels)


def train_command(args, device: str, data: Path, run_dir: Path, model_config: dict, train_config: dict) -> list[str]:
    """The `python -m aiqn train` command line of one run folder (state and output inside it)."""
    threads = ["--threads", str(args.threads)] if args.threads else []
    return [sys.executable, "-m", "aiqn", *threads, "train", "--dataset", args.train_dataset, "--data", str(data),
            "--model-config", json.dumps(model_config), "--train-config", json.dumps(train_config),
            "--state-dir", str(run_dir / "state"), "--out-dir", str(run_dir / "out"), "--device", device,
            "--no-progress"]


def run_to_end(command: list[str], log_path: Path) -> dict:
    """Run a command to its end with its output in `log_path`; its exit code and wall seconds."""
    began = time.perf_counter()
    with open(log_path, "w") as log_file:
        code = subprocess.run(command, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT, check=False).returncode
    return {"returncode": code, "wall_s": time.perf_counter() - began, "log": str(log_path)}


def run_and_kill(command: list[str], log_path: Path, checkpoint: Path, poll_s: float) -> dict:
    """Start a command and SIGKILL it as soon as `checkpoint` exists (checkpoints are written by an
    atomic rename, so existing means complete). Says whether it was still running when killed."""
    began = time.perf_counter()
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(command, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            while process.poll() is None and not checkpoint.exists():
                time.sleep(poll_s)
            still_running = process.poll() is None
        finally:  # also when this check is stopped itself: leave no training process behind
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            code = process.wait()
    return {"returncode": code, "wall_s": time.perf_counter() - began, "log": str(log_path),
            "killed": still_running and code == -signal.SIGKILL}


def log_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """train_log.csv's header and rows (its wall times are apart, in train_times.runinfo.csv)."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def log_rate(path: Path, from_step: int) -> float | None:
    """Steps per second of the invocation that trained from `from_step` (0: a fresh start) to the end:
    its steps over `seconds` at the last row of the run's train_times.runinfo.csv (`path`; `seconds`
    counts from the start of that invocation's loop; a resumed run's file keeps the earlier
    invocation's rows up to `from_step`)."""
    with open(path, newline="") as handle:
        last = list(csv.DictReader(handle))[-1]
    seconds = float(last["seconds"])
    return (int(last["step"]) - from_step) / seconds if seconds > 0 else None


def compare_states(a: dict, b: dict) -> dict:
    """torch.equal on every tensor of two state dicts; the keys that differ and the largest difference."""
    differing = sorted(key for key in a.keys() | b.keys()
                       if key not in a or key not in b or not torch.equal(a[key], b[key]))
    largest = max((float((a[key].double() - b[key].double()).abs().max()) for key in differing
                   if key in a and key in b and a[key].shape == b[key].shape), default=0.0)
    return {"equal": not differing, "tensors": len(a), "differing": differing[:10], "n_differing": len(differing),
            "max_abs_diff": largest}


def compare_checkpoints(path_a: Path, path_b: Path) -> dict:
    """Model and EMA weights of two checkpoints compared tensor by tensor."""
    # weights_only=False: checkpoints hold configs and RNG states as pickled Python objects
    a = torch.load(path_a, map_location="cpu", weights_only=False)
    b = torch.load(path_b, map_location="cpu", weights_only=False)
    return {"step": a["step"], "model": compare_states(a["model"], b["model"]),
            "ema": compare_states(a["ema"], b["ema"])}


def resumed_from(log_path: Path) -> int | None:
    """The step the `train` verb says it resumed from ("resuming from ... (step N)"), None if it did not."""
    for line in log_path.read_text().splitlines():
        if "resuming from" in line and "(step " in line:
            return int(line.rsplit("(step ", 1)[1].split(")")[0])
    return None


def keep_logs(runs: dict[str, dict], logs: dict[str, Path], out: Path) -> None:
    """Copy the verb's output of each run and the train logs into `out` (the run folders may be temporary);
    each run's `log` then names its copy, relative to the summaries."""
    out.mkdir(parents=True, exist_ok=True)
    for name, run in runs.items():
        source = Path(run["log"])
        shutil.copy2(source, out / f"{name}.log")
        run["log"] = f"{out.name}/{name}.log"
    for name, path in logs.items():
        if path.exists():
            shutil.copy2(path, out / name)


def resume_check(args, device: str, work: Path, out: Path) -> dict:
    """Run A uninterrupted, run B killed after its first checkpoint and rerun; compare (module docstring).
    The verb's output and both train logs are copied into `out`."""
    entry = paper_model_entry(args.train_model, args.train_dataset)
    model_config = {"head": entry["head"], **entry["architecture"], **network_overrides(args)}
    checkpoint_steps = list(range(args.checkpoint_every, args.train_steps + 1, args.checkpoint_every))
    if len(checkpoint_steps) < 2:
        raise SystemExit(f"--train-steps {args.train_steps} with --checkpoint-every {args.checkpoint_every} gives "
                         f"{len(checkpoint_steps)} checkpoint(s); the resume check needs one before the last")
    train_config = {**entry["train"], "steps": args.train_steps, "checkpoint_steps": checkpoint_steps}
    if args.batch_size:
        train_config["batch_size"] = args.batch_size
    data = work / "data" / "train.npz"
    write_random_split(data, args.train_dataset, args.train_images)
    final = f"ckpt_{args.train_steps:07d}.pt"
    first = f"ckpt_{checkpoint_steps[0]:07d}.pt"
    dir_a, dir_b = work / "A", work / "B"
    for run_dir in (dir_a, dir_b):
        run_dir.mkdir(parents=True, exist_ok=True)
    result = {"model": args.train_model, "dataset": args.train_dataset, "model_config": model_config,
              "train_config": train_config, "command_a": shlex.join(train_command(args, device, data, dir_a,
                                                                                  model_config, train_config))}

    say(f"resume: run A, {args.train_steps} steps uninterrupted")
    run_a = run_to_end(train_command(args, device, data, dir_a, model_config, train_config), dir_a / "verb.log")
    say(f"resume: run A exited {run_a['returncode']} after {run_a['wall_s']:.1f} s")
    say(f"resume: run B, SIGKILL once {first} exists")
    command_b = train_command(args, device, data, dir_b, model_config, train_config)
    killed = run_and_kill(command_b, dir_b / "verb_killed.log", dir_b / "state" / first, args.poll_s)
    killed["checkpoints_at_kill"] = sorted(p.name for p in (dir_b / "state").glob("ckpt_*.pt"))
    say(f"resume: run B {'killed' if killed['killed'] else 'NOT killed (it ended first)'} after "
        f"{killed['wall_s']:.1f} s with {killed['checkpoints_at_kill']}; rerunning the same command")
    resumed = run_to_end(command_b, dir_b / "verb_resumed.log")
    resumed["resumed_from_step"] = resumed_from(dir_b / "verb_resumed.log")
    say(f"resume: run B resumed from step {resumed['resumed_from_step']}, exited {resumed['returncode']} after "
        f"{resumed['wall_s']:.1f} s")
    result["runs"] = {"A": run_a, "B_killed": killed, "B_resumed": resumed}
    keep_logs(result["runs"], {"A_train_log.csv": dir_a / "state" / "train_log.csv",
                               "B_train_log.csv": dir_b / "state" / "train_log.csv"}, out)

    out_a, out_b = dir_a / "out", dir_b / "out"
    finished = run_a["returncode"] == 0 and resumed["returncode"] == 0 and (out_a / final).exists() and (
        out_b / final).exists()
    if finished:
        run_a["steps_per_s"] = log_rate(dir_a / "state" / "train_times.runinfo.csv", 0)
        resumed["steps_per_s"] = log_rate(dir_b / "state" / "train_times.runinfo.csv", resumed["resumed_from_step"] or 0)
        result["final"] = compare_checkpoints(out_a / final, out_b / final)
        # every checkpoint both runs kept: one written before the kill that differs points at nondeterminism,
        # not at resuming
        result["checkpoints"] = [compare_checkpoints(dir_a / "state" / path.name, path)
                                 for path in sorted((dir_b / "state").glob("ckpt_*.pt"))
                                 if (dir_a / "state" / path.name).exists()]
        header_a, rows_a = log_rows(out_a / "train_log.csv")
        header_b, rows_b = log_rows(out_b / "train_log.csv")
        first_difference = next((a[0] for a, b in zip(rows_a, rows_b) if a != b), None)
        result["logs"] = {"equal": header_a == header_b and rows_a == rows_b, "columns": header_a,
                          "rows_a": len(rows_a), "rows_b": len(rows_b), "first_differing_step": first_difference}
    interrupted = killed["killed"] and final not in killed["checkpoints_at_kill"]
    result["checks"] = {
        "both_runs_finished": finished,
        "interrupted_before_the_end": interrupted,
        "resumed_from_a_checkpoint": resumed["resumed_from_step"] in checkpoint_steps[:-1],
        "model_weights_equal": finished and result["final"]["model"]["equal"],
        "ema_weights_equal": finished and result["final"]["ema"]["equal"],
        "train_logs_equal": finished and result["logs"]["equal"],
    }
    result["passed"] = all(result["checks"].values())
    return result


# ----------------------------------------------------------------------------------------------- summaries

def targets(report: dict, args) -> list[dict]:
    """The stated targets, each with its measured value and met / not met (None: not measured)."""
    full = is_full_size(args)
    found = []
    for head in args.heads:
        rows = [r for r in report["training"] if r["head"] == head and r["precision"] == "bf16"]
        best = max(rows, key=lambda r: r["steps_per_s"], default=None)
        found.append({"name": f"training steps/s, bf16, {head} head", "unit": "steps/s",
                      "threshold": STEPS_PER_S_TARGET, "comparison": ">=",
                      "value": best["steps_per_s"] if best else None,
                      "variant": ("bf16+compile" if best["compile"] else "bf16") if best else None,
                      "met": best["steps_per_s"] >= STEPS_PER_S_TARGET if best else None, "full_size": full})
    for row in report["sampling"]:
        found.append({"name": f"{row['project_count']} cached samples, {row['head']} head", "unit": "s",
                      "threshold": SAMPLING_TARGET_S, "comparison": "<", "value": row["projected_s"],
                      "variant": f"batch {row['batch_size']}, projected from {row['count']}",
                      "met": row["projected_s"] < SAMPLING_TARGET_S, "full_size": full})
    return found


def cell(value, digits: int = 2) -> str:
    """A Markdown table cell: numbers rounded, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if value == 0 or abs(value) >= 0.01 else f"{value:.3g}"
    return str(value)


def table(header: list[str], rows: list[list]) -> list[str]:
    """A Markdown table."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def markdown(report: dict) -> str:
    """The summary: targets, training rows, sampling, resume check."""
    lines = ["# GPU check", "", f"- command: `{report['command']}`",
             f"- torch {report['torch']}, device {report['device']} ({report['device_name']})",
             f"- started {report['started']}, {report['elapsed_s']:.0f} s; complete: {cell(report['complete'])}", ""]
    lines += ["## Targets", ""] + table(
        ["target", "value", "needs", "met", "variant", "paper size"],
        [[t["name"], t["value"], f"{t['comparison']} {t['threshold']:g} {t['unit']}", t["met"], t["variant"],
          t["full_size"]] for t in report["targets"]]) + [""]
    lines += ["## Training speed", ""]
    rows = sorted(report["training"], key=lambda r: (r["head"], r["compile"], r["precision"]))
    lines += table(["head", "precision", "compile", "layout", "optimizer", "batch", "steps/s", "min", "max",
                    "images/s", "warm-up s", "peak GiB", "loss"],
                   [[r["head"], r["precision"], r["compile"], "channels_last" if r["channels_last"] else "NCHW",
                     r["optimizer"], r["batch_size"], r["steps_per_s"], r["min_steps_per_s"], r["max_steps_per_s"],
                     r["images_per_s"], r["warmup_s"], r["peak_gib"], r["loss"]] for r in rows]) + [""]
    lines += ["## Cached sampling", ""] + table(
        ["head", "samples", "batch", "seconds", "samples/s", "projected count", "projected s", "projected min"],
        [[r["head"], r["count"], r["batch_size"], r["seconds"], r["samples_per_s"], r["project_count"],
          r["projected_s"], r["projected_s"] / 60] for r in report["sampling"]]) + [""]
    resume = report["resume"]
    lines += ["## Resume check", ""]
    if resume is None:
        lines += ["not run", ""]
    else:
        verdict = "PASSED" if resume["passed"] else "FAILED"
        settings = resume["train_config"]
        lines += [(f"**{verdict}**: `train` ({resume['model']} on random {resume['dataset']}-shaped data, "
                   f"{settings['steps']} steps, checkpoints at {settings['checkpoint_steps']}; "
                   f"the verb's output and train logs in resume/)"), ""]
        runs = resume["runs"]
        lines += table(["run", "exit code", "wall s", "steps/s (train_log)", "note"], [
            ["A, uninterrupted", runs["A"]["returncode"], runs["A"]["wall_s"], runs["A"].get("steps_per_s"), ""],
            ["B, killed", runs["B_killed"]["returncode"], runs["B_killed"]["wall_s"], None,
             f"checkpoints at the kill: {', '.join(runs['B_killed']['checkpoints_at_kill']) or 'none'}"],
            ["B, rerun", runs["B_resumed"]["returncode"], runs["B_resumed"]["wall_s"],
             runs["B_resumed"].get("steps_per_s"), f"resumed from step {cell(runs['B_resumed']['resumed_from_step'])}"],
        ]) + [""]
        lines += table(["check", "passed"], [[name.replace("_", " "), value]
                                             for name, value in resume["checks"].items()]) + [""]
        if "checkpoints" in resume:
            lines += table(["checkpoint step", "model tensors equal", "EMA tensors equal", "max abs diff (model)"],
                           [[c["step"], c["model"]["equal"], c["ema"]["equal"], c["model"]["max_abs_diff"]]
                            for c in resume["checkpoints"]]) + [""]
    return "\n".join(lines)


def write_summaries(report: dict, args, out: Path, began: float) -> None:
    """gpu_check.json and gpu_check.md as they stand (written again after every section)."""
    report["elapsed_s"] = time.perf_counter() - began
    report["targets"] = targets(report, args)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "gpu_check.md").write_text(markdown(report) + "\n")


# ----------------------------------------------------------------------------------------------- main

def parse_args() -> argparse.Namespace:
    """The command line: device, output folder, sections and every size (the paper's by default)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--out", default="gpu_check", help="folder of gpu_check.json and gpu_check.md")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads here and in `train` (0: torch's default)")
    # the network: the paper profile's small models unless given
    parser.add_argument("--blocks", type=int, help="default: the paper profile's (15)")
    parser.add_argument("--filter-size", type=int, help="default: the paper profile's (5)")
    parser.add_argument("--planes", type=int, help="default: the paper profile's (128)")
    parser.add_argument("--output-planes", type=int, help="default: the paper profile's (1024)")
    parser.add_argument("--batch-size", type=int, help="training batch; default: the paper profile's (32)")
    # 1. training speed, on random data of this shape
    parser.add_argument("--heads", nargs="+", default=["categorical", "quantile"], choices=list(HEAD_MODELS))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                        help="also time bf16 + torch.compile (auto: on CUDA only)")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--size", type=int, default=32, help="image height and width of sections 1 and 2")
    parser.add_argument("--levels", type=int, default=256)
    parser.add_argument("--dataset-size", type=int, default=10_000, help="random images the timed batches come from")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (torch.compile compiles there)")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per block")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks per variant (median shown)")
    # 2. cached sampling
    parser.add_argument("--sample-heads", nargs="+", default=["quantile"], choices=list(HEAD_MODELS))
    parser.add_argument("--sample-count", type=int, default=1000)
    parser.add_argument("--sample-batch", type=int, default=256)
    parser.add_argument("--project-count", type=int, default=10_000)
    # 3. resume of the train verb
    parser.add_argument("--train-model", default="pixeliqn", help="the paper profile's model whose settings train uses")
    parser.add_argument("--train-dataset", default="cifar10", help="registered dataset whose shape the random data has")
    parser.add_argument("--train-images", type=int, default=10_000, help="random images in the data file")
    parser.add_argument("--train-steps", type=int, default=2000)
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--poll-s", type=float, default=0.01, help="how often run B's first checkpoint is looked for")
    parser.add_argument("--work-dir", help="data and run folders (default: a temporary folder, removed at the end)")
    return parser.parse_args()


def main() -> int:
    """Run the sections, writing the summaries after each; 1 when the resume check fails."""
    args = parse_args()
    began = time.perf_counter()
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_check: --device cuda but no CUDA device is visible (use --device cpu at a tiny size)")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    report = {"command": shlex.join(["python", *sys.argv]), "torch": torch.__version__, "device": device,
              "device_name": device_name(device), "python": platform.python_version(),
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "complete": False,
              "full_size": is_full_size(args), "training": [], "sampling": [], "resume": None}
    say(f"{report['command']}")
    say(f"torch {torch.__version__} on {device} ({report['device_name']}); paper size: {report['full_size']}; "
        f"summaries in {out}/gpu_check.{{json,md}}")
    write_summaries(report, args, out, began)
    # `timeout` stops the check with SIGTERM: end through the `finally` below (summaries kept, no run left behind)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        variants = training_variants(args, device) if "training" in args.sections else []
        images = np.random.default_rng(0).integers(0, args.levels, size=(args.dataset_size, args.channels, args.size,
                                                                          args.size), dtype=np.uint8)

        def train_rows(selected: list[tuple[str, bool]]) -> None:
            for head in args.heads:
                for precision, compiled in selected:
                    name = f"{head} {precision}{' + compile' if compiled else ''}"
                    say(f"training: {name} ...")
                    row = time_training(args, device, head, precision, compiled, images)
                    report["training"].append(row)
                    peak = f"{row['peak_gib']:.2f} GiB peak" if row["peak_gib"] is not None else "no GPU memory"
                    say(f"training: {name}: {row['steps_per_s']:.2f} steps/s ({row['min_steps_per_s']:.2f}-"
                        f"{row['max_steps_per_s']:.2f}), warm-up {row['warmup_s']:.1f} s, {peak}, "
                        f"loss {row['loss']:.4f}")
                    write_summaries(report, args, out, began)

        train_rows([v for v in variants if not v[1]])
        if "sampling" in args.sections:
            for head in args.sample_heads:
                say(f"sampling: {args.sample_count} cached samples of the {head} head at batch {args.sample_batch} ...")
                row = time_sampling(args, device, head)
                report["sampling"].append(row)
                say(f"sampling: {row['seconds']:.1f} s ({row['samples_per_s']:.1f} samples/s); {args.project_count} "
                    f"samples projected {row['projected_s']:.0f} s ({row['projected_s'] / 60:.1f} min)")
                write_summaries(report, args, out, began)
        if "resume" in args.sections:
            if device.startswith("cuda"):
                torch.cuda.empty_cache()  # the verb's processes share the GPU with this one
            report["resume"] = resume_check(args, device, work, out / "resume")
            say(f"resume: {'PASSED' if report['resume']['passed'] else 'FAILED'} {report['resume']['checks']}")
            write_summaries(report, args, out, began)
        train_rows([v for v in variants if v[1]])  # compiled variants last: the slowest to warm up
        report["complete"] = True
    finally:
        write_summaries(report, args, out, began)
        if not report["complete"]:
            say(f"stopped before the end after {report['elapsed_s']:.0f} s; what finished is in {out}/gpu_check.md")
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    for target in report["targets"]:
        say(f"target {target['name']}: {cell(target['value'])} {target['unit']} (needs {target['comparison']} "
            f"{target['threshold']:g}): {'met' if target['met'] else 'NOT met' if target['met'] is not None else '-'}")
    say(f"done in {report['elapsed_s']:.0f} s: {out / 'gpu_check.md'}, {out / 'gpu_check.json'}")
    return 1 if report["resume"] is not None and not report["resume"]["passed"] else 0


if __name__ == "__main__":
    sys.exit(main())
