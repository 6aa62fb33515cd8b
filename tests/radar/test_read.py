"""Tests for reading radar events and cutting samples (radar/read.py)."""

from pathlib import Path

import numpy as np
import pytest

from radar.read import area_mean, cut_window, read_event

xr = pytest.importorskip("xarray")

FMI_EVENT = Path("/work/shared/radar/events/fmi_20160928.nc")


def write_event(path: Path, rain: np.ndarray, *, step_minutes: int = 2) -> Path:
    """Write a tiny CF-netCDF event; ``rain`` is (T, H, W) in mm/h, NaN = no data."""
    t, h, w = rain.shape
    times = np.datetime64("2019-06-10T00:00", "ns") + np.arange(t) * np.timedelta64(
        step_minutes, "m"
    )
    with np.errstate(divide="ignore"):
        dbz = np.where(rain > 0, 10 * np.log10(200 * rain**1.6), -32.0).astype(np.float32)
    dbz[np.isnan(rain)] = np.nan
    ds = xr.Dataset(
        {
            "rain_rate": (("time", "y", "x"), rain.astype(np.float32), {"units": "mm h-1"}),
            "reflectivity": (("time", "y", "x"), dbz, {"units": "dBZ"}),
        },
        coords={"time": times, "y": np.arange(h)[::-1] * 1000.0, "x": np.arange(w) * 1000.0},
        attrs={
            "Conventions": "CF-1.8",
            "time_step_minutes": step_minutes,
            "grid_spacing_m_x": 1000.0,
            "grid_spacing_m_y": 1000.0,
        },
    )
    ds.to_netcdf(path, engine="netcdf4")
    return path


@pytest.fixture
def event(tmp_path: Path) -> Path:
    """8 frames of 16 x 12 cells at 2 min; frame k holds k mm/h, one no-data corner."""
    rain = np.broadcast_to(np.arange(8, dtype=np.float32)[:, None, None], (8, 16, 12)).copy()
    rain[:, :2, :2] = np.nan
    return write_event(tmp_path / "tiny.nc", rain)


def test_read_event_units_values_and_metadata(event: Path) -> None:
    seq = read_event(event)
    assert seq.unit == "mm/h"
    assert seq.values.dtype == np.float32 and seq.values.shape == (8, 16, 12)
    assert seq.values[3, 5, 5] == pytest.approx(3.0)
    assert seq.times.dtype == np.dtype("datetime64[ns]")
    assert (seq.timestep_minutes, seq.grid_spacing, seq.grid_spacing_unit) == (2, 1000.0, "m")
    assert seq.source == "tiny.nc"
    dbz = read_event(event, quantity="reflectivity")
    assert dbz.unit == "dBZ"
    assert dbz.values[0, 5, 5] == -32.0
    assert dbz.values[1, 5, 5] == pytest.approx(10 * np.log10(200.0), abs=1e-4)


def test_read_event_keeps_nan_as_no_data(event: Path) -> None:
    seq = read_event(event)
    assert np.isnan(seq.values[:, :2, :2]).all()
    assert np.isfinite(seq.values[:, 2:, :]).all()


def test_read_event_rejects_unknown_quantity(event: Path) -> None:
    with pytest.raises(ValueError, match="rain_rate"):
        read_event(event, quantity="precip")


def test_cut_window_step_4_takes_every_second_native_frame(event: Path) -> None:
    out = cut_window(read_event(event), start=1, n_frames=3, size=8, step_minutes=4, y0=4, x0=4)
    np.testing.assert_allclose(out.values[:, 0, 0], [1.0, 3.0, 5.0])
    assert out.timestep_minutes == 4
    assert np.all(np.diff(out.times) == np.timedelta64(4, "m"))


def test_cut_window_rejects_step_not_multiple_of_native(event: Path) -> None:
    with pytest.raises(ValueError, match="multiple"):
        cut_window(read_event(event), start=0, n_frames=2, size=8, step_minutes=3)


def test_cut_window_rejects_too_few_frames_and_too_small_grid(event: Path) -> None:
    seq = read_event(event)
    with pytest.raises(ValueError, match="not enough frames"):
        cut_window(seq, start=0, n_frames=5, size=8, step_minutes=4)
    with pytest.raises(ValueError, match="smaller than size"):
        cut_window(seq, start=0, n_frames=2, size=8, coarsen=2)


def test_area_mean_ignores_nan_and_keeps_all_nan_blocks_nan() -> None:
    values = np.array([[[1.0, 3.0, np.nan, np.nan], [5.0, np.nan, np.nan, np.nan]]], np.float32)
    out = area_mean(values, 2)
    assert out.shape == (1, 1, 2)
    assert out[0, 0, 0] == pytest.approx(3.0)
    assert np.isnan(out[0, 0, 1])


def test_cut_window_coarsens_crops_and_scales_spacing(event: Path) -> None:
    out = cut_window(read_event(event), start=2, n_frames=2, size=4, coarsen=2, y0=0, x0=0)
    assert out.values.shape == (2, 4, 4)
    assert np.isnan(out.values[0, 0, 0])  # the 2 x 2 no-data corner is one coarse cell
    np.testing.assert_array_equal(out.values[:, 1:, 1:].mean(axis=(1, 2)), [2.0, 3.0])
    assert np.ptp(out.values[:, 1:, 1:], axis=(1, 2)).max() == 0.0
    assert out.grid_spacing == 2000.0


def test_cut_window_picks_the_wettest_window(tmp_path: Path) -> None:
    rain = np.zeros((2, 32, 32), np.float32)
    rain[:, 20:28, 18:26] = 10.0
    rain[:, :8, :8] = np.nan  # no data must not count as rain
    seq = read_event(write_event(tmp_path / "cell.nc", rain))
    out = cut_window(seq, start=0, n_frames=2, size=8)
    assert out.values.shape == (2, 8, 8)
    assert out.values.mean() > 5.0


@pytest.mark.skipif(not FMI_EVENT.exists(), reason="shared radar events not available")
def test_cut_window_on_real_fmi_event() -> None:
    seq = read_event(FMI_EVENT)
    out = cut_window(seq, start=0, n_frames=25, size=128, coarsen=4)
    assert out.values.shape == (25, 128, 128)
    assert out.unit == "mm/h" and out.timestep_minutes == 5
    assert np.isfinite(out.values).mean() > 0.5
