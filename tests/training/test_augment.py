"""Augmentation: rotations and flips keep x, y and valid aligned; validation is never augmented."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from model.transform import PixelTransform
from tests.training.helpers import build_windows as build_datasets
from training.data import rotate_flip, shifted_crop

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


def test_shifted_crop_cuts_each_frame_at_its_offset_and_blanks_cells_off_the_grid() -> None:
    pixels = np.arange(3 * 6 * 7, dtype=np.float32).reshape(3, 6, 7) / 200.0
    valid = np.ones_like(pixels, dtype=bool)
    valid[1, 0, 0] = False
    offsets = np.array([[0, 0], [-1, -2], [3, 2]])
    frames, mask = shifted_crop(pixels, valid, np.array([0, 1, 2]), 1, 1, 4, offsets)
    for k, (dy, dx) in enumerate(offsets):
        for i, j in itertools.product(range(4), range(4)):
            y, x = 1 + dy + i, 1 + dx + j
            inside = 0 <= y < 6 and 0 <= x < 7
            assert mask[k, i, j] == (inside and valid[k, y, x])
            assert frames[k, i, j] == (pixels[k, y, x] if inside else 0.0)
    assert not mask[1, :, 0].any() and not mask[2, 2:].any()  # cut off the left and bottom


def _velocity_box(steps: np.ndarray, shifts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per axis, the range of velocities v with rint(k * v) == shift_k for every step k != 0."""
    low, high = np.full(2, -np.inf), np.full(2, np.inf)
    for k, d in zip(steps, shifts, strict=True):
        if k != 0:
            ends = np.sort([(d - 0.5) / k, (d + 0.5) / k], axis=0)
            low, high = np.maximum(low, ends[0]), np.minimum(high, ends[1])
    return low, high


def test_motion_augmentation_adds_one_uniform_velocity_per_item(tmp_path, write_event) -> None:
    rain = np.zeros((6, 12, 12), dtype=np.float32)
    rain[:, 6, 5] = 10.0  # one wet cell that stands still, inside the one 8 x 8 tile at (2, 2)
    path = write_event(tmp_path / "still.nc", rain)
    options = {"t_in": 2, "t_out": 4, "step_minutes": 5, "size": 8, "cell_km": 1.0,
               "transform": PixelTransform(), "val_fraction": 0.0}
    plain, _ = build_datasets([path], augment=False, motion_kmh=12.0, **options)
    wet = PixelTransform().to_pixel(np.float32(10.0), "mm/h")
    assert torch.all(plain[0]["y"][:, 4, 3] == torch.tensor(wet))  # without augment nothing moves
    train, _ = build_datasets([path], augment=True, motion_kmh=12.0, **options)
    torch.manual_seed(1)  # 12 km/h is at most 1 km cell per 5 min
    assert max(np.hypot(*train.random_velocity(0, 5)) for _ in range(50)) <= 1.0 + 1e-9
    torch.manual_seed(0)
    speeds = []
    for _ in range(40):
        item = train[0]
        frames = torch.cat([item["x"], item["y"]]).numpy()
        steps = np.array([k - 1 for k in range(6) if frames[k].max() > 0])  # it may leave the tile
        positions = np.array([np.argwhere(frames[k + 1] > 0)[0] for k in steps])
        assert 0 in steps  # the last input frame is cut at the tile: the cell is on it
        anchor = tuple(positions[list(steps).index(0)])
        assert anchor in {(4, 3), (3, 4), (4, 4), (3, 3)}  # (4, 3) after a turn or flip of 8 x 8
        shifts = positions - positions[list(steps).index(0)]
        low, high = _velocity_box(steps, shifts)
        assert np.all(low <= high + 1e-9)  # one constant velocity, rounded to whole cells
        slowest = np.clip(0.0, low, high)
        assert np.hypot(*slowest) <= 1.0 + 1e-9  # no faster than motion_kmh
        assert not item["valid"].all() or np.all(np.abs(shifts) <= 2)  # cut off the grid: no data
        speeds.append(np.hypot(*(low + high) / 2) if np.isfinite(low).all() else 0.0)
    assert max(speeds) > 0.5 and len({round(s, 2) for s in speeds}) > 5  # random, not one velocity


def test_bulk_advection_cuts_windows_along_the_rain_so_it_stands_still(tmp_path, write_event) -> None:
    rain = np.zeros((7, 24, 24), dtype=np.float32)
    for t in range(7):  # a 4 x 3 block of 6 mm/h moving (1, -1) cells per step over a wide grid
        rain[t, 6 + t:10 + t, 14 - t:17 - t] = 6.0
    path = write_event(tmp_path / "moving.nc", rain)
    options = {"t_in": 3, "t_out": 4, "step_minutes": 5, "size": 16, "cell_km": 1.0,
               "transform": PixelTransform(), "val_fraction": 0.0, "augment": False}
    ground, _ = build_datasets([path], **options)
    moving, _ = build_datasets([path], advection="bulk", **options)
    item, still = ground[0], moving[0]
    frames = torch.cat([still["x"], still["y"]])
    assert torch.equal(still["x"][-1], item["x"][-1])  # the last input frame is the anchor
    for frame in frames:  # the block stands still where the last input frame has it
        assert torch.equal(frame > 0, item["x"][-1] > 0)
    assert not torch.equal(item["y"][-1] > 0, item["x"][-1] > 0)  # on the ground it moved
    assert still["valid"].all()  # cut from the event's wider grid, not padded
    with pytest.raises(ValueError, match="advection must be one of"):
        build_datasets([path], advection="optical_flow", **options)


def test_dense_advection_cuts_windows_into_the_frame_moving_with_the_motion_field(tmp_path, write_event):
    rng = np.random.default_rng(4)
    texture = (rng.uniform(size=(48, 48)) > 0.8).astype(np.float32)
    import scipy.ndimage as ndi

    texture = ndi.gaussian_filter(texture, 1.5) * 40.0  # rain cells, tens of mm/h
    rain = np.stack([np.roll(texture, (t, -t), axis=(0, 1)) for t in range(7)])  # (1, -1) cells per step
    path = write_event(tmp_path / "moving.nc", rain)
    options = {"t_in": 3, "t_out": 4, "step_minutes": 5, "size": 16, "cell_km": 1.0,
               "transform": PixelTransform(), "val_fraction": 0.0, "augment": False, "motion_cache": None}
    ground, _ = build_datasets([path], **options)
    moving, _ = build_datasets([path], advection="dense", **options)
    assert np.array_equal(ground.windows, moving.windows)
    centre = next(i for i in range(len(moving)) if tuple(moving.windows[i, 3:5]) == (16, 16))
    item, still = ground[centre], moving[centre]
    torch.testing.assert_close(still["x"][-1], item["x"][-1])  # the last input frame is the anchor
    inside = still["valid"]
    frames = torch.cat([still["x"], still["y"]])
    for frame, ok in zip(frames, inside, strict=True):  # the rain stands where the last input has it
        assert ok.float().mean() > 0.5
        torch.testing.assert_close(frame[ok], item["x"][-1][ok], atol=0.08, rtol=0.0)
    assert not torch.allclose(item["y"][-1], item["x"][-1], atol=0.08)  # on the ground it moved


def test_motion_fields_are_kept_at_a_quarter_resolution_and_read_back_bilinear():
    from training.motion import subsample, upsample

    yy, xx = np.mgrid[0:40, 0:52].astype(np.float64)
    smooth = np.stack([0.8 + 0.02 * xx, -0.3 + 0.015 * yy])  # a linear field: bilinear is exact inside
    coarse = subsample(smooth)
    assert coarse.shape == (2, 10, 13)
    back = upsample(coarse, slice(4, 36), slice(6, 46))
    np.testing.assert_allclose(back, smooth[:, 4:36, 6:46], atol=1e-6)
