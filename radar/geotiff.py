"""GeoTIFF radar images, read with rasterio (GDAL).

Each band is one frame. A GeoTIFF says nothing standard about time or quantity, so both are read
from metadata GDAL keeps: the band's unit type (``dBZ``, ``mm/h`` or another rate unit of
:data:`radar.frames.RATE_UNITS`) or a ``units`` tag, and the band's ``time`` tag (ISO 8601) or
the file's ``TIFFTAG_DATETIME`` (``YYYY:MM:DD HH:MM:SS``, UTC). The nodata value becomes NaN.
A file missing either gets a ``ValueError`` that names the tag to set.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from radar.frames import RATE, REFLECTIVITY, Frames, north_up, to_unit, utc


def _time(band_tags: dict, file_tags: dict, source: str, band: int) -> dt.datetime:
    text = band_tags.get("time") or file_tags.get("time") or file_tags.get("TIFFTAG_DATETIME")
    if not text:
        raise ValueError(f"{source}: band {band} has no time; set the band tag 'time' (ISO 8601) or the "
                         "TIFFTAG_DATETIME tag ('YYYY:MM:DD HH:MM:SS', UTC)")
    for parse in (lambda s: dt.datetime.strptime(s, "%Y:%m:%d %H:%M:%S"),
                  lambda s: dt.datetime.fromisoformat(s.replace("Z", "+00:00"))):
        try:
            return utc(parse(str(text).strip()))
        except ValueError:
            continue
    raise ValueError(f"{source}: band {band} time {text!r} is neither ISO 8601 nor 'YYYY:MM:DD HH:MM:SS'")


def _kind(units: str, source: str, band: int) -> str:
    key = " ".join(units.split()).lower()
    if key in ("dbz", "db"):
        return REFLECTIVITY
    if key:
        return RATE  # to_unit names the accepted rate units if this is none of them
    raise ValueError(f"{source}: band {band} has no unit; set its unit type (or a 'units' tag) to 'dBZ' "
                     "or 'mm/h'")


def read_geotiff(path: str | Path, source: str) -> Frames:
    """The frames of a GeoTIFF (module docstring), one per band."""
    try:
        import rasterio
    except ImportError as err:
        raise ValueError("reading GeoTIFF needs rasterio (pip install rasterio)") from err
    from radar.georef import crs_text, parse_crs

    try:
        src = rasterio.open(str(path))
    except rasterio.errors.RasterioIOError as err:
        raise ValueError(f"{source}: not a readable GeoTIFF ({err})") from err
    with src:
        transform = src.transform
        if transform.b != 0 or transform.d != 0:
            raise ValueError(f"{source}: rotated GeoTIFF grids are not supported (transform {transform})")
        h, w = src.height, src.width
        x = transform.c + (np.arange(w) + 0.5) * transform.a
        y = transform.f + (np.arange(h) + 0.5) * transform.e
        crs = crs_text(parse_crs(src.crs.to_wkt())) if src.crs else None
        if crs is None:
            y = x = None
        file_tags = src.tags()
        frames, times, units_seen = [], [], set()
        for band in range(1, src.count + 1):
            tags = src.tags(band)
            units = src.units[band - 1] or tags.get("units") or file_tags.get("units") or ""
            kind = _kind(units, source, band)
            data = src.read(band, masked=True).astype(np.float32)
            values, unit = to_unit(np.ma.filled(data, np.nan)[None], kind, units,
                                   what=f"{source}: band {band}")
            frames.append(values[0])
            times.append(_time(tags, file_tags, source, band))
            units_seen.add(unit)
    if len(units_seen) > 1:
        raise ValueError(f"{source}: bands hold different quantities {sorted(units_seen)}")
    unit = units_seen.pop()
    values, y = north_up(np.stack(frames), y)
    return Frames(values=values, times=times, unit=unit, crs=crs, y=y, x=x, quantity=f"GeoTIFF band ({unit})")
