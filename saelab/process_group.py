"""The torch.distributed process group as saelab's distributed code sees it: rank r of N, or rank 0 of 1 when no
process group runs (no torchrun), so the same code runs single-process. `init()` starts a group when torchrun set
one up (gloo on CPUs, NCCL on GPUs); `close()` ends it."""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


def active() -> bool:
    """Whether a torch.distributed process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def barrier() -> None:
    if active():
        dist.barrier()


def init(backend: str | None = None, timeout_s: float = 1800) -> str:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, ... in the environment) and
    return this rank's device: ``cuda:<local rank>`` with NCCL on a GPU machine, ``cpu`` with gloo otherwise.
    Without torchrun's variables it starts nothing and returns the single-process device."""
    cuda = torch.cuda.is_available()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return "cuda" if cuda else "cpu"
    backend = backend or ("nccl" if cuda else "gloo")
    device = "cpu"
    if backend == "nccl":
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return device


def close() -> None:
    """Leave the process group (the end of a torchrun script)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


__all__ = ["active", "barrier", "close", "init", "rank", "world_size"]
