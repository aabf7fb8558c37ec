"""Training across processes with ``torch.distributed`` and DistributedDataParallel.

A fit launched by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``) joins the process group
here: NCCL on GPUs (one per local rank), gloo on the CPU. Each global batch of
trajectories is split between the ranks like ``DistributedSampler`` splits a
permutation (rank ``r`` takes every ``world``-th trajectory from ``r`` on), and
each rank's loss is weighted by its share, so the gradients DDP averages are
those of the global batch. Rank 0 alone writes the run directory.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .config import resolve_device


@dataclass(frozen=True)
class Distributed:
    """Where this process stands in the process group (``world == 1``: a plain run).

    Attributes:
        device: the device this process trains on.
        rank: this process's rank, 0 .. world - 1.
        world: the number of processes.
    """

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's part of a global batch of trajectory indices (may be empty)."""
        return rows[self.rank :: self.world]

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the ranks (float64, on the process group's device)."""
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def all_ok(self, ok: bool) -> bool:
        """True on every rank when ``ok`` is True on every rank (a collective: all must call)."""
        return self.sum([0.0 if ok else 1.0])[0] == 0.0

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` from every rank, in rank order."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def launched_world() -> int:
    """The number of processes ``torchrun`` started (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def join(device_name: str, timeout_s: float = 1800.0) -> Distributed:
    """Join the process group ``torchrun`` set up, or describe a single process.

    Args:
        device_name: ``train.device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``); under
            torchrun a CUDA device becomes ``cuda:<LOCAL_RANK>``.
        timeout_s: how long a collective may wait for the other ranks before it fails
            (a rank that died cannot leave the others waiting forever).
    """
    world = launched_world()
    device = resolve_device(device_name)
    if world == 1:
        return Distributed(device)
    rank = int(os.environ["RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    return Distributed(device, rank, world)


def leave(context: Distributed) -> None:
    """Leave the process group this module joined (no-op for a single process)."""
    if context.active and dist.is_initialized():
        dist.destroy_process_group()


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel wrapper (``module`` itself if unwrapped)."""
    from torch.nn.parallel import DistributedDataParallel

    return module.module if isinstance(module, DistributedDataParallel) else module


def wrap(module: torch.nn.Module, context: Distributed) -> torch.nn.Module:
    """``module`` inside DistributedDataParallel when there are several ranks.

    The ODE solve runs inside the wrapped module's ``forward``, once per step, so
    DDP sees one forward and one backward per step whatever the solver does; the
    gradient methods hand parameter gradients back through autograd, where DDP's
    hooks average them.
    """
    if not context.active:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [context.device.index] if context.device.type == "cuda" else None
    # Every parameter of a right-hand side is reached by each solve (ACA, MALI and the
    # adjoint return zeros for the ones f does not use), so no unused-parameter search.
    return DistributedDataParallel(module, device_ids=ids)
