"""Training steps per second: fp32 vs bf16, eager vs torch.compile, NCHW vs channels_last.

    python benchmarks/training_speed.py --device cuda                  # the paper's small network, batch 32
    python benchmarks/training_speed.py --device cpu --blocks 2 --planes 16 --output-planes 32 --steps 5

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
