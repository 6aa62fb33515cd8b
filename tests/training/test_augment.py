"""Augmentation: rotations and flips keep x, y and valid aligned; validation is never augmented."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from model.transform import PixelTransform
from training.data import build_datasets, rotate_flip

TRANSFORMS = list(itertools.product(range(4), (False, True)))


def test_rotate_flip_moves_frames_and_mask_together() -> None:
    frames = torch.rand(3, 6, 6)
    valid = frames > 0.5
    seen = set()
    for k, flip in TRANSFORMS:
        out, out_valid = rotate_flip(frames, valid, k=k, flip=flip)
        assert torch.equal(out_valid, out > 0.5)
        seen.add(out.numpy().tobytes())
    assert len(seen) == 8  # the eight symmetries of the square are distinct on random data
    with pytest.raises(ValueError, match=r"k must be one of \(0, 1, 2, 3\)"):
        rotate_flip(frames, valid, k=4, flip=False)


def test_training_items_are_augmented_consistently(tmp_path, write_event) -> None:
    rng = np.random.default_rng(1)
    rain = rng.uniform(0.0, 20.0, (6, 8, 8)).astype(np.float32)
    rain[:, :3, :1] = np.nan  # an asymmetric no-data patch
    path = write_event(tmp_path / "asym.nc", rain)
    options = {"t_in": 2, "t_out": 2, "step_minutes": 5, "size": 8, "cell_km": 1.0,
               "transform": PixelTransform(), "val_fraction": 0.0}
    plain, _ = build_datasets([path], augment=False, **options)
    augmented, _ = build_datasets([path], augment=True, **options)
    torch.manual_seed(0)
    used = set()
    for _ in range(12):
        reference, item = plain[0], augmented[0]
        frames = torch.cat([reference["x"], reference["y"]])
        got = torch.cat([item["x"], item["y"]])
        matches = [(k, f) for k, f in TRANSFORMS
                   if torch.equal(rotate_flip(frames, reference["valid"], k=k, flip=f)[0], got)]
        assert len(matches) == 1
        k, flip = matches[0]
        assert torch.equal(rotate_flip(frames, reference["valid"], k=k, flip=flip)[1], item["valid"])
        assert torch.all(got[~item["valid"]] == 0.0)
        used.add((k, flip))
    assert len(used) > 1
