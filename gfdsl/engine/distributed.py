"""Training past one process with PyTorch's own engine: DistributedDataParallel, launched
by torchrun (`gfdsl run SPEC --nproc N` starts `python -m torch.distributed.run`).

Each step every rank draws the same global batch of indices (one shared data-order
generator) and takes its own contiguous shard, so the global batch equals the
single-process batch and DDP's gradient average equals the single-process gradient of
the mean loss. Only rank 0 writes the run directory; checkpoints hold rank-independent
state (parameters, optimizer, the data-order generator) and resume on any number of
ranks. Backends: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched() -> Ranks:
    """The ranks torchrun describes in the environment (a single process otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    return Ranks(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(r: Ranks, device: torch.device) -> torch.device:
    """Join the process group; each CUDA rank takes the GPU of its local rank."""
    if not r.enabled:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", r.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def barrier(r: Ranks) -> None:
    if r.enabled and dist.is_initialized():
        dist.barrier()


def all_mean(r: Ranks, t: torch.Tensor) -> torch.Tensor:
    if r.enabled:
        t = t.clone()
        dist.all_reduce(t)
        t /= r.world
    return t


def first_bad(r: Ranks, step: torch.Tensor) -> torch.Tensor:
    """The earliest non-finite step over all ranks (-1 if none)."""
    if not r.enabled:
        return step
    big = torch.iinfo(torch.long).max
    v = torch.where(step < 0, torch.full_like(step, big), step)
    dist.all_reduce(v, op=dist.ReduceOp.MIN)
    return torch.where(v == big, torch.full_like(v, -1), v)


def finish(r: Ranks) -> None:
    if r.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def launch(argv: list[str], nproc: int) -> int:
    """Re-run `gfdsl run ...` under torchrun with nproc processes on this machine."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "gfdsl", *argv]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    return subprocess.call(cmd, env=env)
