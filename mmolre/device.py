"""The torch device a stage runs on, and its place among torchrun's processes."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, NamedTuple

import torch
import torch.distributed as dist

from mmolre import MmolreError


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MmolreError("device=cuda but no CUDA device is available; use device=auto or cpu")
    return torch.device(name)


class Distributed(NamedTuple):
    rank: int
    world: int
    local_rank: int


def distributed_context() -> Distributed:
    """Rank, world size and local rank under torchrun, else (0, 1, 0)."""
    if "RANK" not in os.environ:
        return Distributed(0, 1, 0)
    return Distributed(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))


def rank_device(device: torch.device, ranks: Distributed) -> torch.device:
    """The device this rank uses: its LOCAL_RANK's GPU under torchrun, else `device`."""
    if ranks.world == 1 or device.type != "cuda":
        return device
    device = torch.device("cuda", ranks.local_rank)
    torch.cuda.set_device(device)
    return device


@contextlib.contextmanager
def process_group(ranks: Distributed, backend: str) -> Iterator[None]:
    """torchrun's process group for the block (nothing in a single process)."""
    if ranks.world == 1:
        yield
        return
    dist.init_process_group(backend)
    try:
        yield
    finally:
        dist.destroy_process_group()
