"""Does bf16 autocast hurt the loss? The same model, seed and batches trained in fp32 and bf16.

    python benchmarks/bf16_loss.py                           # digits, the default pipeline's networks, CPU
    python benchmarks/bf16_loss.py --device cuda --steps 4000 --last 500

For each head it trains the project's default digits network (params.yaml: `models.pixelcnn` /
`models.pixeliqn`, architecture and training settings; `--steps` replaces the step count) with
`aiqn.methods.pixeliqn.train.train` on the real digits data (prepared into a temporary folder), once with
`precision: fp32` and once with `precision: bf16`, same seed, so both see the same batches and
taus. It prints the mean training loss over the last `--last` steps and the held-out loss of
the final EMA weights (evaluated in fp32 on the test split, fixed taus) for both, with the
bf16 / fp32 ratio. For scale, a second fp32 run with another seed (`--spread-seed`, on by
default) shows how much the same numbers move between two fp32 runs: a bf16 difference within
that spread is noise. Losses are in nats per pixel-channel (categorical) or the Huber quantile
loss (quantile); lower is better.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from aiqn.data import load_split
from aiqn.data.prepare import prepare_dataset
from aiqn.nets import PixelCNNConfig
from aiqn.methods.pixeliqn.train import TrainConfig, model_loss, train
from aiqn.nets import model_from_checkpoint

MODELS = {"categorical": "pixelcnn", "quantile": "pixeliqn"}
REPO = Path(__file__).resolve().parents[1]


def configs(params: dict, head: str, steps: int, seed: int, precision: str, device: str) -> tuple:
    """Model and training configs of the default pipeline's network for `head`."""
    spec = params["models"][MODELS[head]]
    model_config = PixelCNNConfig(channels=1, height=8, width=8, levels=17, head=head, **spec["architecture"])
    train_settings = {**spec["train"], "steps": steps, "checkpoint_steps": [steps], "seed": seed,
                      "precision": precision}
    return model_config, TrainConfig(**train_settings)


@torch.no_grad()
def held_out_loss(checkpoint: Path, images: np.ndarray, kappa: float, device: str) -> float:
    """fp32 loss of the checkpoint's EMA weights on `images`, with taus from a fixed generator."""
    model = model_from_checkpoint(checkpoint, use_ema=True, device=device)
    batch = torch.from_numpy(images).long().to(device)  # (N, 1, 8, 8)
    return model_loss(model, batch, torch.Generator().manual_seed(123), kappa).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--last", type=int, default=100, help="average the training loss over the last N steps")
    parser.add_argument("--heads", nargs="+", default=["categorical", "quantile"], choices=list(MODELS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spread-seed", type=int, default=1, help="seed of the extra fp32 run (-1: none)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    args = parser.parse_args()
    params = yaml.safe_load(Path(args.params).read_text())

    print(f"command: {shlex.join(['python', *sys.argv])}")
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads; digits, "
          f"{args.steps} steps, training loss averaged over the last {args.last}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepare_dataset("digits", tmp / "raw", tmp / "digits", {"test_fraction": 0.2, "split_seed": 0})
        train_images, train_labels = load_split(tmp / "digits" / "train.npz")
        test_images, _ = load_split(tmp / "digits" / "test.npz")
        runs = [("fp32", args.seed), ("bf16", args.seed)]
        if args.spread_seed >= 0:
            runs.append(("fp32", args.spread_seed))
        results = {}
        for head in args.heads:
            for precision, seed in runs:
                model_config, train_config = configs(params, head, args.steps, seed, precision, args.device)
                run_dir = tmp / f"{head}-{precision}-{seed}"
                began = time.time()
                ckpt = train(model_config, train_config, train_images, run_dir, labels=train_labels,
                             device=args.device, progress=False)[args.steps]
                seconds = time.time() - began
                losses = np.loadtxt(run_dir / "train_log.csv", delimiter=",", skiprows=1, usecols=1)  # (steps,)
                results[head, precision, seed] = {
                    "train": float(losses[-args.last:].mean()),
                    "test": held_out_loss(ckpt, test_images, train_config.kappa, args.device),
                    "seconds": seconds,
                }
                print(f"  {head} {precision} seed {seed}: {seconds:.0f} s", flush=True)

    print()
    header = (f"{'head':<12}{'loss':<22}{'fp32':>10}{'bf16':>10}{'bf16/fp32':>11}"
              + (f"{'fp32 seed ' + str(args.spread_seed):>15}{'seed/fp32':>11}" if args.spread_seed >= 0 else ""))
    print(header)
    print("-" * len(header))
    for head in args.heads:
        for key, label in (("train", f"train, last {args.last} steps"), ("test", "test, EMA, fp32 eval")):
            fp32, bf16 = results[head, "fp32", args.seed][key], results[head, "bf16", args.seed][key]
            line = f"{head:<12}{label:<22}{fp32:>10.4f}{bf16:>10.4f}{bf16 / fp32:>11.4f}"
            if args.spread_seed >= 0:
                other = results[head, "fp32", args.spread_seed][key]
                line += f"{other:>15.4f}{other / fp32:>11.4f}"
            print(line)
        times = [results[head, p, args.seed]["seconds"] for p in ("fp32", "bf16")]
        print(f"{head:<12}{'seconds':<22}{times[0]:>10.0f}{times[1]:>10.0f}{times[1] / times[0]:>11.2f}")


if __name__ == "__main__":
    main()
