"""Where the frames of a nowcast are: the grid that travels with the data.

A :class:`Grid` is what a request says about its cells (shape, spacing, coordinate reference
system, coordinates) and what a nowcast gives back unchanged, so that products land on a map.
Nothing here converts coordinates; writers (CF-netCDF) and readers do that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Grid:
    """The cells of a request.

    Attributes
    ----------
    shape : (H, W) cells.
    cell_km : grid spacing in km, None when unknown.
    crs : coordinate reference system (EPSG code like ``"EPSG:3067"``, WKT or proj4), None when
        unknown.
    y, x : (H,), (W,) float64 cell-centre coordinates in ``xy_units`` (row 0 first), None when
        unknown.
    xy_units : units of ``x`` and ``y`` ("m", "km" or "degrees"), None when unknown.
    """

    shape: tuple[int, int]
    cell_km: float | None = None
    crs: str | None = None
    y: np.ndarray | None = field(default=None, repr=False)
    x: np.ndarray | None = field(default=None, repr=False)
    xy_units: str | None = None

    def __post_init__(self) -> None:
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise ValueError(f"grid shape must be (H, W) with positive sides, got {self.shape}")
        for name, n in (("y", self.shape[0]), ("x", self.shape[1])):
            values = getattr(self, name)
            if values is not None and np.shape(values) != (n,):
                raise ValueError(f"grid {name} must hold {n} coordinates, got shape {np.shape(values)}")
        if self.cell_km is not None and not (np.isfinite(self.cell_km) and self.cell_km > 0):
            raise ValueError(f"grid cell_km must be a positive number of km, got {self.cell_km}")
