"""Resumable training state: RNG streams, data order, and atomic checkpoint folders.

``training_state.pt`` (inside ``<out>/last``) holds only tensors, dicts, lists, ints, floats,
bools, strings and None, so it loads with ``torch.load(weights_only=True)``: no pickled code.
"""

from __future__ import annotations

import itertools
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from model.checkpoint import save_checkpoint

STATE_FILE = "training_state.pt"


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """This process's generator states as weights-only-loadable values."""
    version, keys, gauss = random.getstate()
    _, np_keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(keys), gauss],
        "numpy": {"keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ResumableSampler(Sampler[int]):
    """Endless epochs in :class:`DistributedSampler` order, starting ``start`` samples in.

    Epoch ``e`` is the shuffle of ``DistributedSampler(seed=seed).set_epoch(e)`` (this rank's
    shard), so a run resumed at sample ``start`` sees exactly the windows an uninterrupted run
    would have seen, without loading the skipped ones.

    With ``weights`` ((N,) non-negative, one per window), an epoch instead draws as many
    windows as this rank's shard holds, with replacement, in proportion to the weights, from
    a generator seeded by (seed, epoch, rank): just as reproducible and resumable.
    """

    def __init__(self, dataset: Dataset, *, seed: int, world_size: int = 1, rank: int = 0,
                 start: int = 0, weights: Sequence[float] | None = None) -> None:
        self.inner = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True,
                                        seed=seed, drop_last=True)
        if len(self.inner) == 0:
            raise ValueError(f"{len(dataset)} training windows cannot be shared by {world_size} ranks")
        self.start = start
        self.seed, self.rank = seed, rank
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if self.weights is not None and (len(self.weights) != len(dataset) or self.weights.sum() <= 0):
            raise ValueError(f"weights must give one non-negative weight per window ({len(dataset)}), "
                             "not all zero")

    def epoch(self, epoch: int):
        if self.weights is None:
            self.inner.set_epoch(epoch)
            return iter(self.inner)
        generator = torch.Generator().manual_seed(self.seed + 1_000_003 * epoch + 7919 * self.rank)
        draws = torch.multinomial(self.weights, len(self.inner), replacement=True, generator=generator)
        return iter(draws.tolist())

    def __iter__(self):
        epoch, skip = divmod(self.start, len(self.inner))
        while True:
            yield from itertools.islice(self.epoch(epoch), skip, None)
            epoch, skip = epoch + 1, 0


def save_folder(model: torch.nn.Module, path: Path, *, extra: dict[str, Any],
                state: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint folder (plus ``training_state.pt`` when ``state`` is given) atomically.

    The folder is written next to ``path`` and renamed into place, so a run killed while saving
    leaves the previous checkpoint intact.
    """
    tmp = path.with_name(path.name + ".tmp")
    old = path.with_name(path.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(model, tmp, extra=extra)
    if state is not None:
        torch.save(state, tmp / STATE_FILE)
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def resumable_folder(out: Path) -> Path | None:
    """``<out>/last`` when it holds a training state (or the ``.old`` one a crash left behind)."""
    for folder in (out / "last", out / "last.old"):
        if (folder / STATE_FILE).is_file():
            return folder
    return None


def load_partial(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Copy into ``model`` every tensor of ``state`` that fits (fine-tuning with new options).

    A tensor with the same name and shape is copied; one whose input-channel axis (axis 1)
    grew, all else equal, gets the old slice copied and the new slice zeroed (a conv that now
    also sees extra condition channels starts by ignoring them); the rest keep their fresh
    initialisation. Returns counts: copied, widened, new (model tensors not copied or
    widened) and dropped (``state`` tensors the model has no place for).
    """
    own = model.state_dict()  # shares storage with the parameters and buffers
    copied = widened = 0
    with torch.no_grad():
        for name, target in own.items():
            source = state.get(name)
            if source is None:
                continue
            if source.shape == target.shape:
                target.copy_(source)
                copied += 1
            elif (source.ndim == target.ndim >= 2 and source.shape[0] == target.shape[0]
                  and source.shape[2:] == target.shape[2:] and source.shape[1] < target.shape[1]):
                target.zero_()
                target[:, : source.shape[1]].copy_(source)
                widened += 1
    return {"copied": copied, "widened": widened, "new": len(own) - copied - widened,
            "dropped": len(set(state) - set(own))}


def load_state(folder: Path) -> dict[str, Any]:
    return torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
