"""Map layers of a result for the viewer: images in Web Mercator at the grid's true place, and
the ensemble at a point.

Leaflet draws images in Web Mercator (EPSG:3857) between two lat/lon corners. A radar grid is
in its own projection, so :func:`map_layout` resamples it once per result (nearest cell, each
Mercator pixel takes the cell its centre falls in) and :func:`overlay_png` paints any field
through that index. A grid without CRS is drawn as it is, in cell coordinates
(``[[-H, 0], [0, W]]``, Leaflet's ``CRS.Simple``).
"""

from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.grid import Grid
from service import scales

MAX_OVERLAY_PIXELS = 1_500_000
OVERSAMPLE = 2.0  # Mercator pixels per cell side: cell edges stay sharp when zoomed in


@dataclass(frozen=True)
class MapLayout:
    """Where a result's cells go on the map.

    ``index`` (h, w) int64: the flat cell index (row * W + column) each image pixel shows, -1
    outside the grid; ``bounds`` [[south, west], [north, east]] of the image in degrees (cell
    coordinates when not ``georeferenced``).
    """

    georeferenced: bool
    bounds: list[list[float]]
    index: np.ndarray


def map_layout(grid: Grid) -> MapLayout:
    """The Web Mercator image layout of ``grid`` (module docstring)."""
    from pyproj import Transformer

    from radar.georef import edge_bounds, parse_crs, regular_spacing

    h, w = grid.shape
    if grid.crs is None or grid.y is None or grid.x is None or min(h, w) < 2:
        return MapLayout(False, [[-float(h), 0.0], [0.0, float(w)]], np.arange(h * w).reshape(h, w))
    crs = parse_crs(grid.crs)
    y, x = np.asarray(grid.y, np.float64), np.asarray(grid.x, np.float64)
    (south, west), (north, east) = edge_bounds(crs, y, x)
    to_merc = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    (mx0, mx1), (my0, my1) = to_merc.transform([west, east], [south, north])
    cell_m = (grid.cell_km or 1.0) * 1000 / max(math.cos(math.radians((south + north) / 2)), 0.05)
    pixel = cell_m / OVERSAMPLE
    pixel = max(pixel, math.sqrt((mx1 - mx0) * (my1 - my0) / MAX_OVERLAY_PIXELS))
    width, height = max(1, math.ceil((mx1 - mx0) / pixel)), max(1, math.ceil((my1 - my0) / pixel))
    mx = mx0 + (np.arange(width) + 0.5) * (mx1 - mx0) / width
    my = my1 - (np.arange(height) + 0.5) * (my1 - my0) / height
    to_grid = Transformer.from_crs("EPSG:3857", crs, always_xy=True)
    gx, gy = to_grid.transform(*np.meshgrid(mx, my))
    col = np.rint((np.asarray(gx) - x[0]) / regular_spacing(x, "x")).astype(np.int64)
    row = np.rint((np.asarray(gy) - y[0]) / regular_spacing(y, "y")).astype(np.int64)
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    return MapLayout(True, [[south, west], [north, east]], np.where(inside, row * w + col, -1))


def overlay_png(values: np.ndarray, scale: str, layout: MapLayout) -> bytes:
    """(H, W) field -> PNG of the layout's image in ``scale``'s colours (transparent outside)."""
    from PIL import Image

    colours = scales.rgba(values, scale).reshape(-1, 4)
    image = np.zeros((*layout.index.shape, 4), np.uint8)
    inside = layout.index >= 0
    image[inside] = colours[layout.index[inside]]
    buffer = io.BytesIO()
    Image.fromarray(image, "RGBA").save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def cell_at(grid: Grid, *, lat: float | None = None, lon: float | None = None, row: int | None = None,
            col: int | None = None) -> tuple[int, int]:
    """(row, column) of the cell at ``lat``, ``lon`` (georeferenced grids) or given directly;
    ``ValueError`` when the point is outside the grid."""
    from radar.georef import parse_crs, regular_spacing, to_grid_xy

    h, w = grid.shape
    if lat is not None and lon is not None:
        if grid.crs is None or grid.y is None or grid.x is None:
            raise ValueError("this grid has no CRS: give row and col instead of lat and lon")
        gx, gy = to_grid_xy(parse_crs(grid.crs), np.asarray(lat), np.asarray(lon))
        col = int(np.rint((float(gx) - grid.x[0]) / regular_spacing(grid.x, "x")))
        row = int(np.rint((float(gy) - grid.y[0]) / regular_spacing(grid.y, "y")))
    if row is None or col is None:
        raise ValueError("give lat and lon, or row and col")
    if not (0 <= row < h and 0 <= col < w):
        raise ValueError(f"the point is outside the grid (row {row}, column {col} of {h} x {w})")
    return row, col


def _list(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else round(float(v), 3) for v in np.asarray(values, np.float64)]


def point_series(result: dict[str, Any], grid: Grid, row: int, col: int) -> dict[str, Any]:
    """The ensemble at one cell: members' rain rate (plume), mean, percentiles and exceedance
    probabilities per lead time, and the last observation there."""
    from radar.georef import lonlat_points, parse_crs

    lat = lon = None
    if grid.crs is not None and grid.y is not None and grid.x is not None:
        crs = parse_crs(grid.crs)
        lat_a, lon_a = lonlat_points(crs, np.asarray([grid.y[row]]), np.asarray([grid.x[col]]))
        lat, lon = round(float(lat_a[0]), 4), round(float(lon_a[0]), 4)
    members = np.asarray(result["members"])[:, :, row, col]
    percentiles = np.asarray(result["percentiles"])[:, :, row, col]
    observed = result.get("observed")
    return {
        "row": row, "col": col, "lat": lat, "lon": lon,
        "lead_minutes": [int(v) for v in np.asarray(result["lead_minutes"])],
        "members": [_list(m) for m in members],
        "mean": _list(np.asarray(result["mean"])[:, row, col]),
        "percentiles": {str(p): _list(v) for p, v in zip(scales.PERCENTILE_PRODUCTS.values(), percentiles,
                                                          strict=True)},
        "thresholds": [round(float(t), 6) for t in np.asarray(result["thresholds"])],
        "probability": [_list(p) for p in np.asarray(result["probability"])[:, :, row, col]],
        "observed": None if observed is None else _list(np.asarray(observed)[row:row + 1, col])[0],
    }


class ResultCache:
    """The last few decoded results and their map layouts, by job id (results never change once
    done, so a viewer stepping through lead times decodes a result once)."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._items: OrderedDict[str, tuple[dict[str, Any], Grid, MapLayout]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, job_id: str) -> tuple[dict[str, Any], Grid, MapLayout] | None:
        with self._lock:
            item = self._items.get(job_id)
            if item is not None:
                self._items.move_to_end(job_id)
            return item

    def put(self, job_id: str, item: tuple[dict[str, Any], Grid, MapLayout]) -> None:
        with self._lock:
            self._items[job_id] = item
            self._items.move_to_end(job_id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
