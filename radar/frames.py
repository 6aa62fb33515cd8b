"""What every radar format reader gives back, and the unit rules they share.

Each reader (:mod:`radar.cf_reader`, :mod:`radar.odim`, :mod:`radar.grib`, :mod:`radar.geotiff`)
turns one file into :class:`Frames`: one or more frames in dBZ or mm/h with their times and
grid. :func:`radar.readers.read_radar` then puts the frames of one or more files together.

Quantities (OPERATIONS.md): reflectivity in dBZ is kept as it is (the model's pixels are linear
in dBZ, no Z-R relation needed); rain rates are converted to mm/h; accumulations to mm/h over
their accumulation period (a 5-min amount of 1 mm is 12 mm/h). NaN = no data, never dry.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

REFLECTIVITY, RATE, ACCUMULATION = "reflectivity", "rate", "accumulation"

# unit spelling -> factor to the quantity's unit (dBZ; mm/h; mm)
RATE_UNITS = {"mm h-1": 1.0, "mm/h": 1.0, "mm hr-1": 1.0, "mm h**-1": 1.0, "mm.h-1": 1.0,
              "mm s-1": 3600.0, "mm/s": 3600.0, "kg m-2 s-1": 3600.0, "m s-1": 3.6e6, "m/s": 3.6e6,
              "kg m-2 h-1": 1.0}
AMOUNT_UNITS = {"mm": 1.0, "kg m-2": 1.0, "kg/m2": 1.0, "m": 1000.0}
REFLECTIVITY_UNITS = ("dbz", "dbz.", "db", "dbr")


@dataclass(frozen=True, eq=False)
class Frames:
    """Frames read from one file.

    Attributes
    ----------
    values : (T, H, W) float32 in ``unit``; NaN = no data.
    times : T aware UTC datetimes (validity time of each frame).
    unit : ``"dBZ"`` or ``"mm/h"``.
    crs : the grid's CRS as text (EPSG code, proj4 or WKT), None when the file has none.
    y, x : (H,), (W,) float64 cell centres in the CRS's units (row 0 northernmost), or None.
    quantity : what the file held (e.g. ``"DBZH"``, ``"lwe_precipitation_rate"``), for messages.
    """

    values: np.ndarray
    times: list[dt.datetime]
    unit: str
    crs: str | None
    y: np.ndarray | None
    x: np.ndarray | None
    quantity: str

    def __post_init__(self) -> None:
        if self.values.ndim != 3 or len(self.times) != self.values.shape[0]:
            raise ValueError(f"frames must be (T, H, W) with T times, got {self.values.shape} and "
                             f"{len(self.times)} times")


def to_unit(values: np.ndarray, kind: str, units: str, *, accumulation_minutes: float | None = None,
            what: str = "variable") -> tuple[np.ndarray, str]:
    """Values of a quantity ``kind`` in ``units`` -> (values in dBZ or mm/h, that unit).

    ``ValueError`` naming the variable and the accepted units when ``units`` is not one of them,
    or when an accumulation has no accumulation period.
    """
    key = " ".join(str(units).strip().split()).lower()
    values = np.asarray(values, dtype=np.float32)
    if kind == REFLECTIVITY:
        if key not in REFLECTIVITY_UNITS:
            raise ValueError(f"{what}: reflectivity must be in dBZ, got units {units!r}")
        return values, "dBZ"
    if kind == RATE:
        if key not in RATE_UNITS:
            raise ValueError(f"{what}: rain rate units {units!r} not understood; valid: {sorted(RATE_UNITS)}")
        return values * np.float32(RATE_UNITS[key]), "mm/h"
    if kind == ACCUMULATION:
        if key not in AMOUNT_UNITS:
            raise ValueError(f"{what}: accumulation units {units!r} not understood; valid: "
                             f"{sorted(AMOUNT_UNITS)}")
        if not accumulation_minutes or accumulation_minutes <= 0:
            raise ValueError(f"{what}: an accumulation needs its period (time bounds, or a regular time "
                             "step) to become a rain rate")
        return values * np.float32(AMOUNT_UNITS[key] * 60.0 / accumulation_minutes), "mm/h"
    raise ValueError(f"unknown quantity kind {kind!r}; valid: {[REFLECTIVITY, RATE, ACCUMULATION]}")


def utc(time: dt.datetime) -> dt.datetime:
    """Aware UTC datetime; naive times are taken as UTC."""
    return time.replace(tzinfo=dt.timezone.utc) if time.tzinfo is None else time.astimezone(dt.timezone.utc)


def north_up(values: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Flip rows so that row 0 is the northernmost (``y`` decreasing), as pysteps' ``yorigin="upper"``."""
    if y is not None and len(y) > 1 and y[1] > y[0]:
        return np.ascontiguousarray(values[:, ::-1]), np.ascontiguousarray(y[::-1])
    return values, y
