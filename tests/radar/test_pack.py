"""Packed events (radar/pack.py) read back as the netCDF file they came from, to 1/254 of a pixel."""

from __future__ import annotations

import numpy as np
import pytest

from model.transform import PixelTransform
from radar.events import load_event, read_header
from radar.pack import pack_event


def test_a_packed_event_reads_back_as_its_netcdf_file(tmp_path, write_event):
    rng = np.random.default_rng(3)
    rain = rng.gamma(0.6, 3.0, (6, 16, 20)).astype(np.float32)
    rain[:, :3, :5] = np.nan
    path = write_event(tmp_path / "net_event.nc", rain)
    transform = PixelTransform()
    header = read_header(path)
    event = load_event(header, cell_km=2.0, transform=transform)
    packed = pack_event(event, header, transform, tmp_path / "net_event.nc.npz")
    again_header = read_header(packed)
    assert again_header.source == "net_event.nc" and again_header.n_frames == 6
    assert again_header.step_minutes == header.step_minutes and again_header.native_km == header.native_km
    again = load_event(again_header, cell_km=2.0, transform=transform)
    assert np.array_equal(again.valid, event.valid) and np.array_equal(again.times, event.times)
    assert np.abs(again.pixels - event.pixels).max() <= 0.5 / 254 + 1e-7
    assert again.network == "net" and again.cell_km == event.cell_km
    np.testing.assert_allclose(again.x, event.x)
    with pytest.raises(ValueError, match="packed at 2 km"):
        load_event(again_header, cell_km=4.0, transform=transform)
