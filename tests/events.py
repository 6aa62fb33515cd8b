"""Tiny CF-netCDF events in the shared events' format, written by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

VARIABLE = {"mm/h": ("rain_rate", "mm h-1"), "dBZ": ("reflectivity", "dBZ")}


def write_event(
    path: Path,
    values: np.ndarray,
    *,
    unit: str = "mm/h",
    step_minutes: int = 5,
    start: str = "2020-06-01T12:00",
    times: np.ndarray | None = None,
    spacing_m: float | None = 1000.0,
    spacing_deg: float | None = None,
) -> Path:
    """Write ``values`` (T, H, W) in ``unit`` as one variable of a CF-netCDF event file."""
    t, h, w = values.shape
    if times is None:
        times = np.datetime64(start, "ns") + np.arange(t) * np.timedelta64(step_minutes, "m")
    name, units = VARIABLE[unit]
    attrs: dict = {"Conventions": "CF-1.8", "time_step_minutes": step_minutes}
    if spacing_deg is not None:
        attrs["grid_spacing_deg"] = spacing_deg
    else:
        attrs["grid_spacing_m_x"] = attrs["grid_spacing_m_y"] = spacing_m
    ds = xr.Dataset(
        {name: (("time", "y", "x"), values.astype(np.float32), {"units": units})},
        coords={"time": np.asarray(times, dtype="datetime64[ns]"), "y": np.arange(h)[::-1] * 1000.0,
                "x": np.arange(w) * 1000.0},
        attrs=attrs,
    )
    ds.to_netcdf(path, engine="netcdf4")
    return path


