"""Training steps per second: today's step against the pinned pre-issue-15 step, and fp32 vs bf16,
eager vs torch.compile, NCHW vs channels_last.

    python benchmarks/training_speed.py --against-baseline               # CPU: digits and 32x32, 1 and 2 threads
    python benchmarks/training_speed.py --gemm-floor --presets digits   # the step's GEMMs alone vs the step
    python benchmarks/training_speed.py --device cuda                  # the paper's small network, batch 32
    python benchmarks/training_speed.py --device cpu --blocks 2 --planes 16 --output-planes 32 --steps 5

`--against-baseline` times the training step of the default configuration (digits: 1x8x8, 17
levels, 5 blocks, 32 planes, 128 output planes, batch 32; RMSProp for the categorical head, Adam
for the quantile head, as params.yaml) and of a 32x32x3 network (15 blocks, 128 planes, 32 output
planes, batch 8), each on 1 and 2 threads, as two kinds of worker process started in turn
(baseline, new, baseline, new, ...): `baseline` runs benchmarks/pinned_step.py (the step before
issue 15) with glibc's default allocator, `new` runs today's `train_step` after the CLI's
`keep_freed_memory()`. Both start from the same weights and draw the same batches, so their
losses after the timed steps agree to float rounding (printed). The ratio is of the medians.

Each variant runs the training loop's own pieces (`BatchSampler`, `wrap_for_training`,
`train_step`, `update_ema`; Adam) on random CIFAR-shaped uint8 data, so data feeding (the
whole array on the GPU, batches gathered there), the optimizer step and the EMA update are
timed too. A variant is warmed up first (`--warmup` steps; torch.compile compiles there, and
the warm-up time is shown), then timed over `--repeats` blocks of `--steps` steps with the
device synchronised at both ends of each block; the median block gives steps/s. The ratio is
to fp32 eager NCHW of the same head in the same run. Random weights and data: speed does not
depend on them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import shlex
import statistics
import sys
import time

import numpy as np
import torch

from aiqn.nets import PixelCNNConfig, build_model
from aiqn.methods.pixeliqn.train import BatchSampler, TrainConfig, train_step, wrap_for_training
from aiqn.core.config import make_optimizer
from aiqn.core.loop import update_ema


def resolve_device(name: str) -> str:
    """auto -> cuda when visible, else cpu."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def run_variant(model_config: PixelCNNConfig, train_config: TrainConfig, images: np.ndarray, device: str,
                warmup: int, steps: int, repeats: int) -> dict:
    """Warm up, then time `repeats` blocks of `steps` training steps of one variant."""
    torch.manual_seed(0)
    model = build_model(model_config).to(device)
    ema = build_model(model_config).to(device)
    if train_config.channels_last:
        model.to(memory_format=torch.channels_last)
        ema.to(memory_format=torch.channels_last)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    optimizer = make_optimizer(model.parameters(), train_config.optimizer, train_config.lr)
    train_model = wrap_for_training(model, train_config)
    train_model.train()
    batches = BatchSampler(images, None, train_config.batch_size, torch.Generator().manual_seed(0), device,
                           draw_tau=model_config.head == "quantile", channels_last=train_config.channels_last)

    def block(n: int) -> tuple[float, torch.Tensor]:
        sync(device)
        began = time.perf_counter()
        loss = torch.zeros(())
        for _ in range(n):
            loss = train_step(train_model, optimizer, batches.draw(), train_config)
            update_ema(ema, model, train_config.ema_rate)
        sync(device)
        return time.perf_counter() - began, loss

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    warmup_s, _ = block(warmup)
    times, loss = [], None
    for _ in range(repeats):
        seconds, loss = block(steps)
        times.append(seconds)
    rates = [steps / t for t in times]
    row = {"steps_per_s": statistics.median(rates), "min_steps_per_s": min(rates), "max_steps_per_s": max(rates),
           "warmup_s": warmup_s, "loss": float(loss)}
    row["images_per_s"] = row["steps_per_s"] * train_config.batch_size
    row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if device.startswith("cuda") else None
    return row


PRESETS = {  # (model config, batch size, timed steps per worker)
    "digits": (dict(channels=1, height=8, width=8, levels=17, blocks=5, filter_size=3, planes=32, output_planes=128),
               32, 40),
    "32x32": (dict(channels=3, height=32, width=32, levels=256, blocks=15, filter_size=3, planes=128,
                   output_planes=32), 8, 4),
}
OPTIMIZER_OF_HEAD = {"categorical": "rmsprop", "quantile": "adam"}  # params.yaml's pixelcnn and pixeliqn


def make_step(kind: str, preset: str, head: str):
    """One training step of the preset's network as a closure, and its EMA update: `kind`
    "baseline" (benchmarks/pinned_step.py) or "new" (today's `train_step`)."""
    import pinned_step  # benchmarks/, beside this file

    arch, batch_size, _ = PRESETS[preset]
    config = PixelCNNConfig(head=head, **arch)
    torch.manual_seed(0)
    model = build_model(config)
    ema = build_model(config)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    name = OPTIMIZER_OF_HEAD[head]
    images = np.random.default_rng(0).integers(0, config.levels, size=(512, config.channels, config.height,
                                                                       config.width), dtype=np.uint8)
    batches = BatchSampler(images, None, batch_size, torch.Generator().manual_seed(0), "cpu",
                           draw_tau=head == "quantile")
    if kind == "baseline":
        optimizer = pinned_step.optimizer(model.parameters(), name, 1e-3)

        def step():
            batch = batches.draw()
            loss = pinned_step.loss(model, batch.images, batch.tau, 0.002)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss.detach()
    else:
        optimizer = make_optimizer(model.parameters(), name, 1e-3)
        train_config = TrainConfig(steps=1, batch_size=batch_size, optimizer=name, lr=1e-3, kappa=0.002)
        step = lambda: train_step(model, optimizer, batches.draw(), train_config)  # noqa: E731
    return step, lambda: update_ema(ema, model, 0.995)


def baseline_worker(kind: str, preset: str, head: str, threads: int, steps: int) -> dict:
    """Time `steps` training steps (after 5 untimed ones) in this process: `kind` "baseline" (the
    pinned step) or "new" (today's). Returns ms/step and the last loss."""
    torch.set_num_threads(threads)
    if kind == "new":
        from aiqn.core.allocator import keep_freed_memory

        keep_freed_memory()
    step, ema_update = make_step(kind, preset, head)
    loss = None
    for _ in range(5):
        loss = step()
        ema_update()
    began = time.perf_counter()
    for _ in range(steps):
        loss = step()
        ema_update()
    return {"ms_per_step": (time.perf_counter() - began) / steps * 1000, "loss": float(loss)}


def gemm_floor(presets: list[str], heads: list[str], threads: list[int], rounds: int) -> None:
    """Today's step beside its matrix products alone: the shapes of every mm/addmm of one step
    (forward and backward, from torch.profiler) replayed on random operands. What the step
    spends beyond that is what fusion, fewer kernels or less Python could still remove."""
    from torch.profiler import profile

    from aiqn.core.allocator import keep_freed_memory

    keep_freed_memory()
    print(f"command: {shlex.join(['python', *sys.argv])}")
    header = f"{'size':<8}{'head':<13}{'threads':>7}{'GEMMs':>7}{'GFLOP':>7}{'GEMM ms':>9}{'GFLOP/s':>9}{'step ms':>9}{'rest ms':>9}"
    print(header)
    print("-" * len(header), flush=True)
    for preset, head, n_threads in itertools.product(presets, heads, threads):
        torch.set_num_threads(n_threads)
        step, ema_update = make_step("new", preset, head)

        def full_step():
            step()
            ema_update()

        for _ in range(3):
            full_step()
        with profile(record_shapes=True) as prof:
            full_step()
        operands = []  # (M, K) @ (K, N) per product
        for event in prof.events():
            if event.name in ("aten::mm", "aten::addmm"):
                first, second = event.input_shapes[:2] if event.name == "aten::mm" else event.input_shapes[1:3]
                operands.append((torch.randn(*first), torch.randn(*second)))
        flop = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in operands)

        def products():
            for a, b in operands:
                torch.mm(a, b)

        times: dict[str, list[float]] = {"gemm": [], "step": []}
        steps = PRESETS[preset][2]
        for _ in range(rounds):
            for name, run in (("gemm", products), ("step", full_step)):
                run()
                began = time.perf_counter()
                for _ in range(steps):
                    run()
                times[name].append((time.perf_counter() - began) / steps * 1000)
        gemm_ms, step_ms = statistics.median(times["gemm"]), statistics.median(times["step"])
        print(f"{preset:<8}{head:<13}{n_threads:>7}{len(operands):>7}{flop / 1e9:>7.2f}{gemm_ms:>9.1f}"
              f"{flop / gemm_ms / 1e6:>9.0f}{step_ms:>9.1f}{step_ms - gemm_ms:>9.1f}", flush=True)


def against_baseline(presets: list[str], heads: list[str], threads: list[int], rounds: int, json_path: str | None) -> None:
    """Alternate baseline and new worker processes; print medians, spread, ratio and losses."""
    import subprocess

    print(f"command: {shlex.join(['python', *sys.argv])}")
    print(f"machine: {platform.processor() or platform.machine()}; torch {torch.__version__}; {rounds} rounds of "
          "(baseline, new) worker processes per row; ms/step median (min-max)", flush=True)
    header = (f"{'size':<8}{'head':<13}{'threads':>7}{'baseline ms':>13}{'(min-max)':>15}{'new ms':>9}"
              f"{'(min-max)':>15}{'speed-up':>10}{'loss baseline':>15}{'loss new':>11}")
    print(header)
    print("-" * len(header), flush=True)
    rows = []
    for preset, head, n_threads in itertools.product(presets, heads, threads):
        steps = PRESETS[preset][2]
        times: dict[str, list[float]] = {"baseline": [], "new": []}
        losses: dict[str, float] = {}
        for _ in range(rounds):
            for kind in ("baseline", "new"):
                out = subprocess.run([sys.executable, __file__, "--worker", kind, preset, head, str(n_threads),
                                      str(steps)], check=True, capture_output=True, text=True).stdout
                result = json.loads(out.strip().splitlines()[-1])
                times[kind].append(result["ms_per_step"])
                losses[kind] = result["loss"]
        base, new = statistics.median(times["baseline"]), statistics.median(times["new"])
        row = {"size": preset, "head": head, "threads": n_threads, "baseline_ms": base, "new_ms": new,
               "speed_up": base / new, "baseline_times": times["baseline"], "new_times": times["new"],
               "loss_baseline": losses["baseline"], "loss_new": losses["new"]}
        rows.append(row)
        spread = lambda t: f"({min(t):.1f}-{max(t):.1f})"  # noqa: E731
        print(f"{preset:<8}{head:<13}{n_threads:>7}{base:>13.1f}{spread(times['baseline']):>15}{new:>9.1f}"
              f"{spread(times['new']):>15}{base / new:>9.2f}x{losses['baseline']:>15.6f}{losses['new']:>11.6f}",
              flush=True)
    if json_path:
        with open(json_path, "w") as handle:
            json.dump({"command": shlex.join(["python", *sys.argv]), "torch": torch.__version__, "rows": rows},
                      handle, indent=2)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":  # one timed process of --against-baseline
        kind, preset, head, threads, steps = sys.argv[2:7]
        print(json.dumps(baseline_worker(kind, preset, head, int(threads), int(steps))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against-baseline", action="store_true",
                        help="time today's CPU step against benchmarks/pinned_step.py (see the docstring)")
    parser.add_argument("--gemm-floor", action="store_true",
                        help="today's CPU step beside its matrix products alone (see gemm_floor)")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5, help="(baseline, new) process pairs per row")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--heads", nargs="+", default=["categorical", "quantile"], choices=["categorical", "quantile"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--compile", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument("--channels-last", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per block")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks per variant (median shown)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (torch.compile compiles there)")
    # the paper's small network (appendix): 15 blocks, filter 5, 128 planes, 1024 output planes; CIFAR-10 shape
    parser.add_argument("--blocks", type=int, default=15)
    parser.add_argument("--filter-size", type=int, default=5)
    parser.add_argument("--planes", type=int, default=128)
    parser.add_argument("--output-planes", type=int, default=1024)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--size", type=int, default=32, help="image height and width")
    parser.add_argument("--levels", type=int, default=256)
    parser.add_argument("--dataset-size", type=int, default=50_000, help="random uint8 images to draw batches from")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    if args.gemm_floor:
        gemm_floor(args.presets, args.heads, args.threads, args.rounds)
        return
    if args.against_baseline:
        against_baseline(args.presets, args.heads, args.threads, args.rounds, args.json)
        return

    device = resolve_device(args.device)
    images = np.random.default_rng(0).integers(0, args.levels, size=(args.dataset_size, args.channels, args.size,
                                                                      args.size), dtype=np.uint8)
    arch = dict(channels=args.channels, height=args.size, width=args.size, levels=args.levels, blocks=args.blocks,
                filter_size=args.filter_size, planes=args.planes, output_planes=args.output_planes)
    print(f"command: {shlex.join(['python', *sys.argv])}")
    print(f"device: {device} ({device_name(device)}); torch {torch.__version__}; "
          f"network {args.blocks} blocks, filter {args.filter_size}, {args.planes} planes, {args.output_planes} "
          f"output planes, {args.channels}x{args.size}x{args.size}, {args.levels} levels; batch {args.batch_size}; "
          f"{args.repeats} x {args.steps} timed steps after {args.warmup} warm-up steps", flush=True)
    header = (f"{'head':<12}{'precision':<10}{'compile':<8}{'layout':<14}{'steps/s':>9}{'(min-max)':>15}"
              f"{'images/s':>10}{'vs fp32 eager':>15}{'warm-up s':>11}{'peak GiB':>10}{'loss':>9}")
    print(header)
    print("-" * len(header), flush=True)
    rows = []
    for head in args.heads:
        baseline = None
        for compiled, precision, layout in itertools.product(args.compile, args.precisions, args.channels_last):
            train_config = TrainConfig(steps=1, batch_size=args.batch_size, optimizer="adam", lr=1e-4,
                                       precision=precision, compile=compiled == "on", channels_last=layout == "on")
            if compiled == "on":
                torch._dynamo.reset()  # a fresh model each variant: do not count against the recompile limit
            row = run_variant(PixelCNNConfig(head=head, **arch), train_config, images, device, args.warmup,
                              args.steps, args.repeats)
            row.update(head=head, precision=precision, compile=compiled, channels_last=layout, device=device,
                       batch_size=args.batch_size)
            if (precision, compiled, layout) == ("fp32", "off", "off"):
                baseline = row["steps_per_s"]
            row["ratio"] = row["steps_per_s"] / baseline if baseline else None
            rows.append(row)
            ratio = f"{row['ratio']:.2f}x" if row["ratio"] else "-"
            peak = f"{row['peak_gib']:.2f}" if row["peak_gib"] is not None else "-"
            spread = f"({row['min_steps_per_s']:.2f}-{row['max_steps_per_s']:.2f})"
            print(f"{head:<12}{precision:<10}{compiled:<8}{'channels_last' if layout == 'on' else 'NCHW':<14}"
                  f"{row['steps_per_s']:>9.2f}{spread:>15}{row['images_per_s']:>10.1f}{ratio:>15}"
                  f"{row['warmup_s']:>11.1f}{peak:>10}{row['loss']:>9.4f}", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"command": shlex.join(["python", *sys.argv]), "torch": torch.__version__,
                       "device_name": device_name(device), "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
