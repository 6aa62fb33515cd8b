"""Processes and devices: the same loop runs alone or as one rank of ``torchrun``."""

from __future__ import annotations

import os
from typing import Any

import torch

from training.state import rng_state


def setup(device_name: str) -> tuple[int, int, torch.device]:
    """(world size, rank, device) of this process; joins the process group under ``torchrun``.

    ``torchrun`` sets WORLD_SIZE, RANK and LOCAL_RANK; NCCL serves CUDA and gloo the CPU.
    """
    world, rank, local_rank = (int(os.environ.get(k, "0")) for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"))
    world = max(world, 1)
    device = pick_device(device_name, local_rank)
    if world > 1:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world, rank, device


def teardown(world: int) -> None:
    if world > 1:
        torch.distributed.destroy_process_group()


def pick_device(name: str, local_rank: int) -> torch.device:
    """``name`` as a device; "auto" is this rank's GPU when there is one, else the CPU."""
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def agree(flag: bool, world: int, device: torch.device) -> bool:
    """True on every rank when it is True on any (so all ranks stop at the same step)."""
    if world == 1:
        return flag
    value = torch.tensor([float(flag)], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def gather_rng(world: int) -> list[dict[str, Any]]:
    """Every rank's generator states, indexed by rank."""
    if world == 1:
        return [rng_state()]
    states: list[Any] = [None] * world
    torch.distributed.all_gather_object(states, rng_state())
    return states

