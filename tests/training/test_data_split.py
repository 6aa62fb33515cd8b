"""The three splits (radar/split.py): no instant in two splits on one grid, every network trains,
held-out time and regions never train, short windows are masked, sampling is balanced."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.transform import PixelTransform
from radar.split import SplitRule, window_lengths
from radar.windows import choose_validation
from tests.training.helpers import build_windows
from training.data import build_splits

TRANSFORM = PixelTransform()


@pytest.fixture
def events(tmp_path, write_event) -> list:
    """Two networks: 'a' on two days (one file plus a crop of it), 'b' on a third day."""
    rng = np.random.default_rng(0)
    rain = rng.uniform(0.0, 5.0, (60, 8, 8)).astype(np.float32)
    return [
        write_event(tmp_path / "a_day1.nc", rain, start="2020-06-01T12:00"),
        write_event(tmp_path / "a_day1crop.nc", rain[:, ::-1], start="2020-06-01T12:00"),
        write_event(tmp_path / "a_day3.nc", rain[::-1], start="2020-06-03T00:00"),
        write_event(tmp_path / "b_day5.nc", rain[:, :, ::-1], start="2020-06-05T00:00"),
    ]


def split(paths, seed: int = 0, **rule):
    options = {"val_fraction": 0.3, "seed": seed, "test_minutes": 0, "test_region": "", "val_region": "",
               "block_minutes": 30, **rule}
    return build_splits(paths, t_in=2, t_out=2, steps=(5,), size=8, cell_km=1.0, transform=TRANSFORM,
                        rule=SplitRule(**options), min_leads=2, augment=False, which=("train", "val", "test"))


def frames_of(dataset) -> set:
    return {(dataset.events[int(dataset.windows[i, 0])].source, t)
            for i in range(len(dataset)) for t in dataset.frame_times(i).tolist()}


def test_no_frame_is_in_two_splits_and_every_network_trains(events) -> None:
    parts = split(events, test_minutes=60)
    train, val, test = parts["train"], parts["val"], parts["test"]
    assert len(train) and len(val) and len(test)
    assert not frames_of(train) & frames_of(val) and not frames_of(train) & frames_of(test)
    assert not frames_of(val) & frames_of(test)
    for t0, t1 in ((w[0], w[-1]) for w in map(train.frame_times, range(len(train)))):
        for i in range(len(val)):  # the crop shares the day's time axis: no overlap across files
            v = val.frame_times(i)
            same_day = str(v[0])[:10] == str(t0)[:10]
            assert not same_day or t1 < v[0] or v[-1] < t0
    networks = {name.split("_")[0] for name in train.counts()}
    assert networks == {"a", "b"}


def test_the_last_test_minutes_of_every_long_enough_group_are_held_out(events) -> None:
    parts = split(events, test_minutes=60, val_fraction=0.0)
    test = parts["test"]
    assert set(test.counts()) == {"a_day1.nc", "a_day1crop.nc", "a_day3.nc", "b_day5.nc"}
    for i in range(len(test)):
        event = test.events[int(test.windows[i, 0])]
        assert test.frame_times(i)[0] >= event.times[-1] - np.timedelta64(60, "m")
    short = split(events, test_minutes=200, val_fraction=0.0)  # 295-min groups: not twice as long
    assert len(short["test"]) == 0


def test_split_is_reproducible_and_depends_on_the_seed(events) -> None:
    first, again = split(events, seed=0), split(events, seed=0)
    assert np.array_equal(first["val"].windows, again["val"].windows)
    assert np.array_equal(first["train"].windows, again["train"].windows)
    others = [split(events, seed=s)["val"].windows for s in (1, 2, 3)]
    assert any(not np.array_equal(first["val"].windows, o) for o in others)


def test_validation_holds_about_val_fraction_of_each_networks_windows(events) -> None:
    parts = split(events)
    for network in ("a", "b"):
        n_train = sum(n for f, n in parts["train"].counts().items() if f.startswith(network))
        n_val = sum(n for f, n in parts["val"].counts().items() if f.startswith(network))
        assert 0.1 < n_val / (n_train + n_val) < 0.5
    assert not parts["val"].augment


def test_a_held_out_region_takes_the_tiles_inside_it_and_drops_the_straddling_ones(tmp_path, write_event):
    rain = np.full((10, 24, 24), 3.0, dtype=np.float32)
    wide = write_event(tmp_path / "net_wide.nc", rain)
    # the region file covers cells 8..15 of the wide grid (same coordinates, same grid)
    region = write_event(tmp_path / "net_region.nc", rain[:, 8:16, 8:16])
    import xarray as xr

    with xr.open_dataset(region) as ds:
        moved = ds.load().assign_coords(y=ds.y + (24 - 16) * 1000.0, x=ds.x + 8000.0)
    moved.to_netcdf(tmp_path / "net_region2.nc")
    parts = build_splits([wide, tmp_path / "net_region2.nc"], t_in=2, t_out=2, steps=(5,), size=8,
                         cell_km=1.0, transform=TRANSFORM, stride=4, min_leads=2, augment=False,
                         rule=SplitRule(val_fraction=0.0, test_minutes=0, test_region="net_region2.nc",
                                        val_region=""), which=("train", "val", "test"))
    train, test = parts["train"], parts["test"]
    assert set(test.counts()) == {"net_wide.nc", "net_region2.nc"}
    wide_test = {tuple(w[3:5]) for w in test.windows if test.events[w[0]].source == "net_wide.nc"}
    assert wide_test == {(8, 8)}  # the one tile inside the region
    for w in train.windows:  # no training tile touches rows/cols 8..15
        y0, x0 = w[3], w[4]
        assert y0 + 8 <= 8 or y0 >= 16 or x0 + 8 <= 8 or x0 >= 16


def test_windows_are_cut_short_at_the_end_of_their_split_and_the_missing_leads_masked(tmp_path, write_event):
    path = write_event(tmp_path / "x_event.nc", np.full((9, 8, 8), 2.0, dtype=np.float32))
    train, _ = build_windows([path], t_in=2, t_out=4, size=8, cell_km=1.0, transform=TRANSFORM,
                             min_leads=2, augment=False)
    assert sorted(train.windows[:, 2].tolist()) == [4, 5, 6, 6, 6, 6]  # starts 5, 4 and 0..3
    short = next(i for i in range(len(train)) if train.windows[i, 2] == 4)
    item = train[short]
    assert item["valid"][:4].all() and not item["valid"][4:].any()
    assert torch.all(item["y"][2:] == 0.0) and int(item["step_minutes"]) == 5


def test_window_lengths_stop_at_a_change_of_run() -> None:
    seg = np.array([0, 0, 0, 0, 1, 1, 1])
    assert window_lengths(seg, 1, 3).tolist() == [3, 3, 2, 1, 3, 2, 1]
    assert window_lengths(seg, 2, 3).tolist() == [2, 2, 1, 1, 2, 1, 1]


def test_balance_weights_give_every_network_and_step_the_same_share(events) -> None:
    parts = split(events, val_fraction=0.0)
    weights = parts["train"].balance_weights()
    networks = np.array([parts["train"].events[e].network for e in parts["train"].windows[:, 0]])
    assert weights[networks == "a"].sum() == pytest.approx(weights[networks == "b"].sum())


def test_choose_validation_keeps_one_block_each_side() -> None:
    assert choose_validation(np.array([5, 5]), 0.01, seed=0).sum() == 1
    assert choose_validation(np.array([5]), 0.2, seed=0).sum() == 0
    chosen = choose_validation(np.array([1, 0, 1, 1]), 0.9, seed=0)
    assert not chosen[1] and chosen.sum() == 2

