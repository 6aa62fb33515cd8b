"""Where radar cells are: coordinate reference systems, cell sizes and lat/lon (pyproj).

A grid here is a CRS plus 1-D cell-centre coordinates ``y`` (H,) and ``x`` (W,) in the CRS's
own units (metres for projected CRSs, degrees for lat/lon), row 0 first, as in
:class:`model.grid.Grid`. Everything that converts coordinates lives in this module, so the
readers, the CF writer and the service's map layers agree on where a cell is.
"""

from __future__ import annotations

import math
import re

import numpy as np

EARTH_KM_PER_DEGREE = 6371.0 * math.pi / 180  # mean Earth radius: 111.19 km per degree of latitude
# A cell size this many times off the model's is "far" from it (1 km data for a 4 km model is).
CELL_KM_TOLERANCE = 1.5


def parse_crs(text: str):
    """``pyproj.CRS`` of an EPSG code (``"EPSG:3067"``), a WKT or a proj4 string.

    A proj4 string may be followed by a note in parentheses (the project's event files do
    that); the note is dropped. ``ValueError`` naming the string when pyproj cannot read it.
    """
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    cleaned = str(text).strip()
    if cleaned.startswith("+"):
        cleaned = re.split(r"\s\(", cleaned, maxsplit=1)[0].strip()
    try:
        return CRS.from_user_input(cleaned)
    except CRSError as err:
        raise ValueError(f"crs {text[:200]!r} is not an EPSG code, WKT or proj4 string pyproj can read "
                         f"({err})") from err


def crs_text(crs) -> str:
    """A compact string for ``crs``: ``"EPSG:nnnn"`` when it is one, else its proj4 string when
    that round-trips, else its WKT."""
    authority = crs.to_authority(min_confidence=95)
    if authority is not None:
        return f"{authority[0]}:{authority[1]}"
    return crs.srs if crs.srs else crs.to_wkt()


def xy_units(crs) -> str:
    """``"degrees"`` for a geographic CRS, else ``"m"`` (projected axes in metres).

    ``ValueError`` for a projected CRS whose axes are not in metres (convert to metres first).
    """
    if crs.is_geographic:
        return "degrees"
    units = {axis.unit_name for axis in crs.axis_info[:2]}
    if units - {"metre", "meter"}:
        raise ValueError(f"projected CRS axes must be in metres, got {sorted(units)}")
    return "m"


def regular_spacing(values: np.ndarray, name: str) -> float:
    """The step of evenly spaced cell centres ``values`` (N,), N >= 2; ``ValueError`` otherwise."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) < 2:
        raise ValueError(f"{name} must hold at least 2 cell-centre coordinates")
    steps = np.diff(values)
    step = float(np.median(steps))
    if step == 0 or not np.allclose(steps, step, rtol=1e-3, atol=1e-9 + 1e-6 * abs(step)):
        raise ValueError(f"{name} coordinates must be evenly spaced (a regular grid); got steps from "
                         f"{steps.min():g} to {steps.max():g}")
    return step


def cell_km(crs, y: np.ndarray, x: np.ndarray) -> float:
    """Cell size in km of the grid: the square root of the cell area, so that 4 x 4 km cells
    give 4. Degrees are converted at the grid's mean latitude."""
    dy, dx = abs(regular_spacing(y, "y")), abs(regular_spacing(x, "x"))
    if xy_units(crs) == "degrees":
        lat = math.radians(float(np.mean(y)))
        return math.sqrt(dy * EARTH_KM_PER_DEGREE * dx * EARTH_KM_PER_DEGREE * max(math.cos(lat), 1e-6))
    return math.sqrt(dy * dx) / 1000


def lonlat(crs, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) latitude and longitude in degrees of the cell centres."""
    from pyproj import Transformer

    xx, yy = np.meshgrid(np.asarray(x, np.float64), np.asarray(y, np.float64))
    if crs.is_geographic:
        return yy, xx
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon, lat = to_lonlat.transform(xx, yy)
    return np.asarray(lat), np.asarray(lon)


def lonlat_points(crs, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Latitude and longitude in degrees of points ``(y[i], x[i])`` (any shape, paired)."""
    from pyproj import Transformer

    y, x = np.asarray(y, np.float64), np.asarray(x, np.float64)
    if crs.is_geographic:
        return y, x
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
    return np.asarray(lat), np.asarray(lon)


def edge_bounds(crs, y: np.ndarray, x: np.ndarray) -> list[list[float]]:
    """[[south, west], [north, east]] in degrees around the cell edges of a regular grid."""
    y, x = np.asarray(y, np.float64), np.asarray(x, np.float64)
    hy, hx = regular_spacing(y, "y") / 2, regular_spacing(x, "x") / 2
    ys = np.r_[y[0] - hy, y, y[-1] + hy]
    xs = np.r_[x[0] - hx, x, x[-1] + hx]
    edge_y = np.r_[ys, ys, np.full(len(xs), ys[0]), np.full(len(xs), ys[-1])]
    edge_x = np.r_[np.full(len(ys), xs[0]), np.full(len(ys), xs[-1]), xs, xs]
    lat, lon = lonlat_points(crs, edge_y, edge_x)
    return [[float(lat.min()), float(lon.min())], [float(lat.max()), float(lon.max())]]


def to_grid_xy(crs, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates in ``crs`` of points given in degrees (any shape): ``(x, y)``."""
    from pyproj import Transformer

    if crs.is_geographic:
        return np.asarray(lon, np.float64), np.asarray(lat, np.float64)
    to_grid = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    x, y = to_grid.transform(np.asarray(lon, np.float64), np.asarray(lat, np.float64))
    return np.asarray(x), np.asarray(y)


def check_cell_size(actual_km: float, model_km: float | None) -> None:
    """``ValueError`` saying so when ``actual_km`` is far (more than :data:`CELL_KM_TOLERANCE`
    times) from the model's cell size ``model_km`` (None: not known, nothing checked)."""
    if model_km is None or not math.isfinite(actual_km):
        return
    ratio = actual_km / model_km
    if ratio > CELL_KM_TOLERANCE or ratio < 1 / CELL_KM_TOLERANCE:
        hint = (f"area-mean {round(1 / ratio)} x {round(1 / ratio)} cells first, or ask for resample=true"
                if ratio < 1 / CELL_KM_TOLERANCE else "the service never splits cells; send finer data")
        raise ValueError(f"the grid's cells are {actual_km:.2f} km, far from the model's {model_km:g} km "
                         f"cells (GET /v1/model, cell_km): the model's skill holds only near its own "
                         f"cell size; {hint}")


def resample_factor(actual_km: float, model_km: float) -> int:
    """Cells per side to area-mean so that ``actual_km`` cells come near ``model_km``."""
    return max(1, round(model_km / actual_km))
