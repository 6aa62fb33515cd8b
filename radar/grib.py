"""GRIB2 radar fields (NOAA MRMS and WMO radar parameters), read with pygrib (ecCodes), as
pysteps' ``import_mrms_grib`` does.

A message is used when its (discipline, category, number) is in :data:`PARAMETERS`: MRMS
``PrecipRate`` (209, 6, 1; mm/h; -3 = outside coverage), WMO precipitation rates (0, 1, 52 and
0, 15, 17; kg m-2 s-1), total precipitation (0, 1, 8; kg m-2 over the product's statistical
period) and reflectivities (0, 15, 1; 0, 16, 4; 0, 16, 5; dB). Each message is one frame at its
validity time; a file may hold several. Regular lat/lon grids (MRMS) are read as such; other
grids through ecCodes' projection parameters.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from radar.frames import ACCUMULATION, RATE, REFLECTIVITY, Frames, north_up, to_unit, utc

# (discipline, category, number) -> (kind, units, name)
PARAMETERS = {
    (209, 6, 1): (RATE, "mm h-1", "MRMS PrecipRate"),
    (0, 1, 52): (RATE, "kg m-2 s-1", "total precipitation rate"),
    (0, 15, 17): (RATE, "kg m-2 s-1", "radar precipitation rate"),
    (0, 1, 8): (ACCUMULATION, "kg m-2", "total precipitation"),
    (0, 15, 1): (REFLECTIVITY, "dBZ", "base reflectivity"),
    (0, 16, 4): (REFLECTIVITY, "dBZ", "reflectivity"),
    (0, 16, 5): (REFLECTIVITY, "dBZ", "composite reflectivity"),
}


def _grid(message) -> tuple[str, np.ndarray, np.ndarray]:
    from radar.georef import crs_text, parse_crs, to_grid_xy

    lats, lons = message.latlons()
    if message["gridType"] == "regular_ll":
        lon = np.asarray(lons[0], np.float64)
        return "EPSG:4326", np.asarray(lats[:, 0], np.float64), np.where(lon > 180, lon - 360, lon)
    try:
        crs = parse_crs(" ".join(f"+{k}={v}" for k, v in message.projparams.items()))
    except (ValueError, AttributeError, RuntimeError) as err:
        raise ValueError(f"GRIB2 grid type {message['gridType']!r} has no usable projection ({err})") from err
    x, y = to_grid_xy(crs, lats, lons)
    return crs_text(crs), np.asarray(y[:, 0]), np.asarray(x[0])


def _period_minutes(message) -> float | None:
    try:
        start, end = message.analDate, message.validDate
    except (RuntimeError, AttributeError, KeyError):
        return None
    minutes = (end - start).total_seconds() / 60
    return minutes if minutes > 0 else None


def read_grib(path: str | Path, source: str) -> Frames:
    """The radar frames of a GRIB2 file (module docstring), one per usable message."""
    try:
        import pygrib
    except ImportError as err:
        raise ValueError("reading GRIB2 needs pygrib (pip install pygrib)") from err

    frames, times, kinds, seen = [], [], set(), []
    crs = y = x = None
    try:
        messages = pygrib.open(str(path))
    except OSError as err:
        raise ValueError(f"{source}: not a readable GRIB file ({err})") from err
    with messages:
        for message in messages:
            key = (int(message["discipline"]), int(message["parameterCategory"]),
                   int(message["parameterNumber"]))
            seen.append(key)
            if key not in PARAMETERS:
                continue
            kind, units, name = PARAMETERS[key]
            values = np.ma.filled(np.ma.asarray(message.values, dtype=np.float32), np.nan)
            if kind == REFLECTIVITY:
                values[values <= -99] = np.nan  # MRMS-style missing (-99 no coverage, -999 missing)
            else:
                values[values < 0] = np.nan  # MRMS -3 = outside coverage; a rate is never negative
            values, unit = to_unit(values[None], kind, units, what=f"{source}: {name}",
                                   accumulation_minutes=_period_minutes(message))
            crs, y, x = _grid(message)
            frames.append(values[0])
            times.append(utc(message.validDate if isinstance(message.validDate, dt.datetime)
                             else dt.datetime.fromisoformat(str(message.validDate))))
            kinds.add((unit, name))
    if not frames:
        raise ValueError(f"{source}: no radar field in this GRIB file; its messages are (discipline, "
                         f"category, number) {sorted(set(seen))}, readable: {sorted(PARAMETERS)}")
    if len(kinds) > 1:
        raise ValueError(f"{source}: messages hold different quantities {sorted(kinds)}")
    unit, name = kinds.pop()
    values, y = north_up(np.stack(frames), y)
    return Frames(values=values, times=times, unit=unit, crs=crs, y=y, x=x, quantity=name)
