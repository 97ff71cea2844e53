"""Naive vs cached sampling, timed in the same run on the same model and the same draws.

    python benchmarks/sampling.py                      # CPU: digits size and 32x32x3, batches 1 16 64
    python benchmarks/sampling.py --device cuda --sizes paper-small --batches 256 --project 10000

For each size and batch it prints the naive time, the cached time and their ratio. The naive
sampler runs one full forward pass per pixel-channel, and every pass costs the same, so at
32x32x3 (3,072 passes) it is timed over `--naive-steps` passes and extrapolated to the whole
image; the table says which naive times are measured and which are extrapolated. Where the naive
run is complete, the two samplers' uint8 outputs are also compared. Random weights: speed does
not depend on training.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import torch

from aiqn.nets.cached_sampling import CachedSampler
from aiqn.nets.draws import draw_noise, noise_generator
from aiqn.nets import PixelCNNConfig, build_model
from aiqn.nets.sampling import sample_progressive

SIZES = {
    # the default pipeline's digits network (params.yaml)
    "digits": dict(channels=1, height=8, width=8, levels=17, blocks=5, filter_size=3, planes=32, output_planes=128),
    # the paper's small network (appendix): 15 blocks, filter 5, 128 planes, 1024 output planes
    "paper-small": dict(channels=3, height=32, width=32, levels=256, blocks=15, filter_size=5, planes=128,
                        output_planes=1024),
}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_naive(model, noise, steps: int | None, device: str) -> tuple[float, int, torch.Tensor]:
    """Seconds for `steps` naive pixel-channel steps (all when None), steps run, last image."""
    sync(device)
    began = time.perf_counter()
    image, done = None, 0
    for _, image in itertools.islice(sample_progressive(model, noise), steps):
        done += 1
    sync(device)
    return time.perf_counter() - began, done, image


def time_cached(model, noise, device: str) -> tuple[float, torch.Tensor]:
    sampler = CachedSampler(model)
    sync(device)
    began = time.perf_counter()
    image = None
    for _, image in sampler.sample_progressive(noise):
        pass
    sync(device)
    return time.perf_counter() - began, image


def run(size: str, batch: int, head: str, naive_steps: int, device: str, skip_naive: bool) -> dict:
    config = PixelCNNConfig(head=head, **SIZES[size])
    torch.manual_seed(0)
    model = build_model(config).to(device).eval()
    noise = draw_noise(batch, model, noise_generator(0, 0))
    total_steps = config.channels * config.height * config.width
    time_cached(model, noise[:1], device)  # warm-up of both samplers
    time_naive(model, noise, 1, device)
    cached_s, cached_image = time_cached(model, noise, device)
    row = {"size": size, "head": head, "batch": batch, "device": device, "cached_s": cached_s,
           "cached_samples_per_s": batch / cached_s}
    if not skip_naive:
        steps = None if naive_steps <= 0 or naive_steps >= total_steps else naive_steps
        naive_s, done, naive_image = time_naive(model, noise, steps, device)
        row["naive_measured_steps"] = done
        row["naive_s"] = naive_s * total_steps / done
        row["naive_extrapolated"] = done < total_steps
        row["ratio"] = row["naive_s"] / cached_s
        row["identical"] = bool(torch.equal(naive_image, cached_image)) if done == total_steps else None
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--head", default="categorical", choices=["categorical", "quantile"])
    parser.add_argument("--naive-steps", type=int, default=6,
                        help="naive passes timed at sizes above 8x8 (0: the whole image)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-naive", action="store_true", help="time only the cached sampler")
    parser.add_argument("--project", type=int, default=0, help="also print the projected time for N samples")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    header = f"{'size':<12}{'head':<12}{'batch':>6}{'naive s':>12}{'cached s':>10}{'ratio':>9}{'cached img/s':>14}  note"
    print(header)
    rows = []
    for size, batch in itertools.product(args.sizes, args.batches):
        steps = 0 if size == "digits" else args.naive_steps
        row = run(size, batch, args.head, steps, args.device, args.skip_naive)
        rows.append(row)
        naive = f"{row['naive_s']:.2f}" if "naive_s" in row else "-"
        ratio = f"{row['ratio']:.1f}x" if "ratio" in row else "-"
        note = ""
        if row.get("naive_extrapolated"):
            note = f"naive extrapolated from {row['naive_measured_steps']} passes"
        elif row.get("identical") is not None:
            note = "identical samples" if row["identical"] else "SAMPLES DIFFER"
        if args.project:
            note += f"; {args.project} samples: {args.project / row['cached_samples_per_s'] / 60:.1f} min cached"
        print(f"{size:<12}{args.head:<12}{batch:>6}{naive:>12}{row['cached_s']:>10.2f}{ratio:>9}"
              f"{row['cached_samples_per_s']:>14.2f}  {note}", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
