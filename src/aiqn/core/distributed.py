"""Data-parallel training over several processes (torchrun + DistributedDataParallel).

One process per GPU (or per CPU worker, for tests), started by torchrun, which sets RANK,
WORLD_SIZE and LOCAL_RANK (and MASTER_ADDR / MASTER_PORT) in each process's environment:

    torchrun --standalone --nproc-per-node 8 -m aiqn train ...

`init_from_env` reads them and joins the process group (NCCL on CUDA, gloo on CPU); with
WORLD_SIZE unset or 1 it returns a single-process `DistInfo` and creates no group, so the same
code runs with and without torchrun.

How `aiqn.methods.pixeliqn.train.train` splits the work: every rank draws the same global batch index and
the same global tau tensor from its own (identically seeded) CPU generator and keeps its
`shard_slice` of them, so the union over ranks is exactly the single-process batch. DDP
averages the gradients over ranks; with equal shards that is the gradient of the mean loss over
the global batch, i.e. the single-process update (up to float rounding).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly single-process) data-parallel job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"  # this process's device: "cuda:{local_rank}" under torchrun on GPUs

    @property
    def distributed(self) -> bool:
        """True when a process group of several processes is in use."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def init_from_env(device: str) -> DistInfo:
    """Read RANK / WORLD_SIZE / LOCAL_RANK (set by torchrun) and, when WORLD_SIZE > 1, join the
    process group: backend "nccl" for CUDA, "gloo" for CPU.

    `device` is the resolved device of the run ("cpu", "cuda" or "cuda:N"). On CUDA with several
    processes each one takes `cuda:{LOCAL_RANK}` and makes it the current device; otherwise the
    device is returned unchanged. Without torchrun this is a no-op returning rank 0 of 1.
    """
    rank, world_size = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size <= 1:
        return DistInfo(0, 1, 0, device)
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} must lie in [0, WORLD_SIZE={world_size})")
    cuda = torch.device(device).type == "cuda"
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA devices are visible: this job "
                f"runs {world_size} processes (models.<name>.gpus in params.yaml); lower gpus, or run it where "
                f"{world_size} GPUs are visible (snakemake --resources gpu={world_size}, or the cluster profile)")
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    if not torch_dist.is_initialized():
        kwargs = {}
        if cuda and "device_id" in inspect.signature(torch_dist.init_process_group).parameters:  # torch >= 2.3
            kwargs["device_id"] = torch.device(device)  # binds the NCCL group to this GPU
        torch_dist.init_process_group(backend="nccl" if cuda else "gloo", rank=rank, world_size=world_size,
                                      **kwargs)
    return DistInfo(rank, world_size, local_rank, device)


def is_main(info: DistInfo | None) -> bool:
    """True on rank 0 (and in a single process): the process that writes files and logs."""
    return info is None or info.rank == 0


def barrier(info: DistInfo | None) -> None:
    """Wait for every rank (no-op in a single process)."""
    if info is None or not info.distributed:
        return
    if torch.device(info.device).type == "cuda":
        torch_dist.barrier(device_ids=[torch.device(info.device).index or 0])
    else:
        torch_dist.barrier()


def shutdown(info: DistInfo | None) -> None:
    """Leave the process group, if `init_from_env` created one."""
    if info is not None and info.distributed and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def shard_slice(global_batch: int, rank: int, world_size: int) -> slice:
    """Rows of the global batch that `rank` trains on: equal contiguous shards.

    Equal shards make DDP's gradient average equal the gradient of the global mean loss, so a
    global batch that the world size does not divide is refused.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} must lie in [0, world_size={world_size})")
    if global_batch % world_size:
        raise ValueError(f"the global batch size {global_batch} is not divisible by the number of processes "
                         f"{world_size}: choose a batch size that is a multiple of {world_size}")
    per_rank = global_batch // world_size
    return slice(rank * per_rank, (rank + 1) * per_rank)


def all_reduce_mean(tensor: torch.Tensor, info: DistInfo | None) -> torch.Tensor:
    """Mean of `tensor` over ranks (a new tensor; the input itself when single-process)."""
    if info is None or not info.distributed:
        return tensor
    total = tensor.detach().clone()
    torch_dist.all_reduce(total, op=torch_dist.ReduceOp.SUM)  # gloo has no AVG
    return total / info.world_size


def broadcast_object(obj, info: DistInfo | None):
    """Rank 0's `obj` on every rank (picklable objects; the input itself when single-process)."""
    if info is None or not info.distributed:
        return obj
    holder = [obj]
    torch_dist.broadcast_object_list(holder, src=0)
    return holder[0]
