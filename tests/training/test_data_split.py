"""Seeded train/validation split by time blocks: no overlap in time, reproducible, seed-dependent."""

from __future__ import annotations

import numpy as np
import pytest

from model.transform import PixelTransform
from training.data import build_datasets
from training.windows import choose_validation, time_blocks


@pytest.fixture
def events(tmp_path, write_event) -> list:
    """Two 60-frame events on different days, and a third file at the same times as the first."""
    rng = np.random.default_rng(0)
    rain = rng.uniform(0.0, 5.0, (60, 8, 8)).astype(np.float32)
    return [
        write_event(tmp_path / "a.nc", rain, start="2020-06-01T12:00"),
        write_event(tmp_path / "b.nc", rain[::-1], start="2020-06-03T00:00"),
        write_event(tmp_path / "a_crop.nc", rain[:, ::-1], start="2020-06-01T12:00"),
    ]


def split(paths, seed: int):
    return build_datasets(paths, t_in=2, t_out=2, step_minutes=5, size=8, cell_km=1.0,
                          transform=PixelTransform(), seed=seed, augment=False)


def intervals(dataset) -> list[tuple[np.datetime64, np.datetime64]]:
    return [(dataset.frame_times(i)[0], dataset.frame_times(i)[-1]) for i in range(len(dataset))]


def test_no_instant_is_in_both_splits_even_across_files(events) -> None:
    train, val = split(events, seed=0)
    assert len(train) > 0 and len(val) > 0
    train_frames = {t for i in range(len(train)) for t in train.frame_times(i).tolist()}
    val_frames = {t for i in range(len(val)) for t in val.frame_times(i).tolist()}
    assert not train_frames & val_frames
    for t0, t1 in intervals(train):
        for v0, v1 in intervals(val):
            assert t1 < v0 or v1 < t0


def test_split_is_reproducible_and_depends_on_the_seed(events) -> None:
    train, val = split(events, seed=0)
    train_again, val_again = split(events, seed=0)
    assert np.array_equal(val.windows, val_again.windows)
    assert np.array_equal(train.windows, train_again.windows)
    _, val_other = split(events, seed=1)
    assert not np.array_equal(val.windows, val_other.windows)


def test_validation_holds_about_val_fraction_of_the_windows(events) -> None:
    train, val = split(events, seed=0)
    assert 0.1 < len(val) / (len(train) + len(val)) < 0.35
    assert not val.augment


def test_blocks_are_shared_by_events_that_overlap_in_time() -> None:
    minute = np.timedelta64(1, "m")
    a = np.datetime64("2020-01-01T00:00", "ns") + np.arange(20) * 5 * minute
    crop = a[4:12]
    later = np.datetime64("2020-01-02T00:00", "ns") + np.arange(10) * 5 * minute
    blocks = time_blocks([a, crop, later], [5, 5, 5], duration_minutes=15)  # blocks of 4 frames
    assert blocks[0].tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4
    assert blocks[1].tolist() == blocks[0][4:12].tolist()
    assert blocks[2].tolist() == [5] * 4 + [6] * 6  # the remainder joins the last block


def test_choose_validation_keeps_one_block_each_side() -> None:
    assert choose_validation(np.array([5, 5]), 0.01, seed=0).sum() == 1
    assert choose_validation(np.array([5]), 0.2, seed=0).sum() == 0
    chosen = choose_validation(np.array([1, 0, 1, 1]), 0.9, seed=0)
    assert not chosen[1] and chosen.sum() == 2
