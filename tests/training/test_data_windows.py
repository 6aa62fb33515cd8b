"""Windows cut from event files: units, no-data mask, coarsening, time step, coverage, dry windows."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from model.transform import PixelTransform
from radar.events import coarsen_values
from radar.read import frame_stride
from radar.windows import tile_origins
from tests.training.helpers import build_windows as build_datasets

TRANSFORM = PixelTransform()


def build(paths, **kwargs):
    options = {"t_in": 2, "t_out": 2, "step_minutes": 5, "size": 8, "cell_km": 1.0, "transform": TRANSFORM,
               "val_fraction": 0.0, "augment": False}
    options.update(kwargs)
    return build_datasets(paths, **options)


def test_rain_rate_file_gives_transform_pixels_and_masks_no_data(tmp_path, write_event) -> None:
    rain = np.full((12, 8, 8), 5.0, dtype=np.float32)
    rain[:, :2, :2] = np.nan
    train, val = build([write_event(tmp_path / "rain.nc", rain)])
    assert len(train) == 12 - 4 + 1 and len(val) == 0
    item = train[0]
    assert item["x"].shape == (2, 8, 8) and item["y"].shape == (2, 8, 8)
    assert item["x"].dtype == torch.float32 and item["valid"].dtype == torch.bool
    assert item["valid"].shape == (4, 8, 8)
    frames = torch.cat([item["x"], item["y"]])
    assert not item["valid"][:, :2, :2].any() and item["valid"][:, 2:, :].all()
    assert torch.all(frames[:, :2, :2] == 0.0)
    expected = float(TRANSFORM.to_pixel(np.float32(5.0), "mm/h"))
    assert frames[:, 4, 4] == pytest.approx([expected] * 4)
    assert item["source"] == "rain.nc" and item["start"] == "2020-06-01T12:00:00Z"


def test_reflectivity_file_is_read_in_dbz(tmp_path, write_event) -> None:
    dbz = np.full((4, 8, 8), 30.0, dtype=np.float32)
    dbz[:, 0, 0] = np.nan
    train, _ = build([write_event(tmp_path / "dbz.nc", dbz, unit="dBZ")])
    item = train[0]
    assert item["x"][0, 3, 3].item() == pytest.approx((30.0 + 10.0) / 70.0)
    assert not item["valid"][:, 0, 0].any() and item["x"][0, 0, 0].item() == 0.0


def test_coarsening_means_rain_rate_and_needs_half_the_cells() -> None:
    rain = np.zeros((1, 4, 4), dtype=np.float32)
    rain[0, :2, :2] = [[2.0, 4.0], [np.nan, np.nan]]  # half the block: valid, mean of 2 and 4
    rain[0, :2, 2:] = [[8.0, np.nan], [np.nan, np.nan]]  # a quarter: no data
    rain[0, 2:, :2] = [[0.0, 10.0], [0.0, 10.0]]
    out = coarsen_values(rain, 2, "mm/h")
    assert out.shape == (1, 2, 2)
    assert out[0, 0, 0] == pytest.approx(3.0) and np.isnan(out[0, 0, 1])
    assert out[0, 1, 0] == pytest.approx(5.0) and out[0, 1, 1] == 0.0


def test_coarsening_averages_reflectivity_as_linear_z() -> None:
    dbz = np.array([[[20.0, 40.0], [20.0, 40.0]]], dtype=np.float32)
    out = coarsen_values(dbz, 2, "dBZ")
    assert out[0, 0, 0] == pytest.approx(10 * np.log10((100.0 + 10000.0) / 2), abs=1e-3)


def test_cell_km_coarsens_the_grid(tmp_path, write_event) -> None:
    rain = np.zeros((4, 16, 16), dtype=np.float32)
    rain[:, :, ::2] = 10.0  # alternate columns: each 2 x 2 block averages 5 mm/h
    train, _ = build([write_event(tmp_path / "fine.nc", rain)], cell_km=2.0)
    assert len(train) == 1 and train.events[0].coarsen == 2
    expected = float(TRANSFORM.to_pixel(np.float32(5.0), "mm/h"))
    assert train[0]["x"][0].unique().tolist() == pytest.approx([expected])


def test_step_subsamples_native_frames(tmp_path, write_event) -> None:
    dbz = np.broadcast_to(2.0 * np.arange(12, dtype=np.float32)[:, None, None], (12, 8, 8)).copy()
    train, _ = build([write_event(tmp_path / "ramp.nc", dbz, unit="dBZ")], step_minutes=10)
    assert len(train) == 12 - 7 + 1  # a window spans 7 native frames
    for i in range(len(train)):
        start = int(train.windows[i, 1])
        frames = torch.cat([train[i]["x"], train[i]["y"]])[:, 0, 0]
        expected = [(2.0 * (start + 2 * j) + 10.0) / 70.0 for j in range(4)]
        assert frames.tolist() == pytest.approx(expected)
        assert np.all(np.diff(train.frame_times(i)) == np.timedelta64(10, "m"))


def test_step_not_a_multiple_of_the_native_step_is_refused(tmp_path, write_event, caplog) -> None:
    with pytest.raises(ValueError, match="valid steps are multiples of 2: 2, 4, 6"):
        frame_stride(2, 5, source="mrms.nc")
    path = write_event(tmp_path / "mrms.nc", np.ones((30, 8, 8), dtype=np.float32), step_minutes=2)
    with caplog.at_level(logging.WARNING), pytest.raises(ValueError, match=r"serves the steps \[5\] min"):
        build([path], step_minutes=5)
    assert "mrms.nc: its 2-min step with 30 frames serves none of the steps [5] min" in caplog.text
    train, _ = build([path], step_minutes=4)  # 4 is a multiple of 2: used
    assert len(train) > 0


def test_windows_below_min_coverage_are_skipped(tmp_path, write_event) -> None:
    rain = np.ones((4, 8, 16), dtype=np.float32)
    rain[:, 2:, 8:] = np.nan  # right tile: 25 % coverage
    path = write_event(tmp_path / "edge.nc", rain)
    train, _ = build([path])
    assert len(train) == 1 and train.windows[0, 4] == 0
    train, _ = build([path], min_coverage=0.2)
    assert sorted(train.windows[:, 4].tolist()) == [0, 8]


def test_min_rain_fraction_skips_dry_windows(tmp_path, write_event) -> None:
    rain = np.zeros((4, 8, 16), dtype=np.float32)
    rain[:, :, :8] = 2.0  # left tile wet, right tile dry
    path = write_event(tmp_path / "dry.nc", rain)
    train, _ = build([path])
    assert len(train) == 2  # default 0.0 keeps dry windows
    train, _ = build([path], min_rain_fraction=0.5)
    assert train.windows[:, 4].tolist() == [0]


def test_windows_never_span_a_gap_in_time(tmp_path, write_event) -> None:
    times = np.datetime64("2020-06-01T12:00", "ns") + np.r_[0:6, 7:13] * np.timedelta64(5, "m")
    path = write_event(tmp_path / "gap.nc", np.ones((12, 8, 8), dtype=np.float32), times=times)
    train, _ = build([path])
    assert len(train) == 2 * (6 - 4 + 1)
    for i in range(len(train)):
        assert np.all(np.diff(train.frame_times(i)) == np.timedelta64(5, "m"))


def test_tiles_are_centred_and_strided() -> None:
    assert tile_origins(20, 8, 8, 8).tolist() == [[2, 0], [10, 0]]
    assert tile_origins(16, 16, 8, 4)[:, 0].tolist() == [0, 0, 0, 4, 4, 4, 8, 8, 8]
    assert len(tile_origins(7, 16, 8, 8)) == 0


def test_invalid_arguments_name_the_valid_range(tmp_path, write_event) -> None:
    path = write_event(tmp_path / "a.nc", np.ones((4, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        build([path], val_fraction=1.0)
    with pytest.raises(ValueError, match=r"min_coverage must be in \[0, 1\]"):
        build([path], min_coverage=2.0)
