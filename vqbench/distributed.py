"""Processes, devices and precision, set up once; every collective vqbench uses lives here.

Under torchrun (RANK / WORLD_SIZE / LOCAL_RANK in the environment) the process group starts
with NCCL on CUDA and gloo on CPU; a plain `python` run is a world of one, and every
collective below is then the identity. Only rank 0 logs and writes files.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from vqbench.errors import VQBenchError


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def process_rank() -> int:
    """This process's rank, also before `setup` (torchrun sets RANK)."""
    if initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return process_rank() == 0


def pick_device(requested: str | None = None) -> torch.device:
    """`--device` if given (checked), else CUDA when present, else CPU."""
    if not requested:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        raise VQBenchError(
            f"--device '{requested}' is not a device name; use cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise VQBenchError(
                f"--device {requested}: this machine has no CUDA device (or this torch build "
                f"has no CUDA); use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise VQBenchError(
                f"--device {requested}: only {torch.cuda.device_count()} CUDA device(s) here; "
                f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}"
            )
    elif device.type != "cpu":
        raise VQBenchError(f"--device {requested}: vqbench runs on cpu or cuda; use one of them")
    return device


def setup(requested_device: str | None = None) -> World:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank if device.index is None else device.index)
        torch.cuda.set_device(device)
    # Under torchrun the process group starts even for one process, so that
    # `torchrun --nproc_per_node 1` runs every collective through NCCL (or gloo) as 8 would.
    launched = size > 1 or "TORCHELASTIC_RUN_ID" in os.environ
    if launched and not initialized():
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=size
        )
    return World(rank, size, local_rank, device)


def backend() -> str | None:
    """The process group's backend (`nccl`, `gloo`), or None without one."""
    return dist.get_backend() if initialized() else None


def teardown() -> None:
    if initialized():
        dist.destroy_process_group()


# ---- precision ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Precision:
    """Autocast dtype (None: float32, no autocast) and whether gradients need loss scaling."""

    dtype: torch.dtype | None
    scaled: bool

    def autocast(self, device: torch.device):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)


def pick_precision(choice: str, device: torch.device) -> Precision:
    """`auto` is bf16 on CUDA and fp32 on CPU."""
    if choice == "auto":
        choice = "bf16" if device.type == "cuda" else "fp32"
    return {
        "fp32": Precision(None, False),
        "bf16": Precision(torch.bfloat16, False),
        "fp16": Precision(torch.float16, True),
    }[choice]


# ---- collectives (identities in a world of one) ---------------------------------------------
def all_reduce_sum(*tensors: torch.Tensor) -> None:
    """Sum each tensor over processes, in place."""
    if initialized():
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)


def all_reduce_sum_differentiable(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes with a gradient (each process receives the sum of the gradients)."""
    if not initialized():
        return tensor
    import torch.distributed.nn.functional as dist_fn

    return dist_fn.all_reduce(tensor)


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """The mean of each value over processes."""
    if not initialized() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    size = dist.get_world_size()
    return {k: float(v) / size for k, v in zip(keys, t.tolist())}


def all_finite(flag: torch.Tensor) -> bool:
    """True when `flag` (a 0/1 tensor) is 1 on every process; one host synchronisation."""
    flag = flag.detach().float().clone()
    if initialized():
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() >= 1)


def gather_objects(value: Any) -> list[Any]:
    """Every process's `value`, in rank order."""
    if not initialized():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(value: Any, src: int = 0) -> Any:
    if initialized():
        holder = [value]
        dist.broadcast_object_list(holder, src=src)
        return holder[0]
    return value


def broadcast(tensor: torch.Tensor, src: int = 0) -> None:
    """Rank `src`'s tensor on every process, in place."""
    if initialized():
        dist.broadcast(tensor, src=src)


def barrier() -> None:
    if initialized():
        dist.barrier()


# ---- data parallel ----------------------------------------------------------------------------
def wrap(module: nn.Module, world: World, **kwargs: Any) -> nn.Module:
    """`module` in DistributedDataParallel when there are several processes."""
    if not world.distributed:
        return module
    device_ids = [world.device.index] if world.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids, **kwargs)


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def no_sync(module: nn.Module, sync: bool):
    """DDP's `no_sync` (skip the gradient all-reduce) unless `sync`; a no-op otherwise."""
    inner = getattr(module, "_orig_mod", module)  # under torch.compile
    if sync or not isinstance(inner, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return inner.no_sync()
