"""The data transform between physical radar units and model pixels in [0, 1].

One transform is stored in every checkpoint's config so that training, serving and
evaluation agree. The default is the HKO-7 convention ``pixel = (dBZ + 10) / 70``, clipped,
with the Marshall-Palmer relation ``Z = 200 R^1.6`` between reflectivity and rain rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNITS = ("dBZ", "mm/h", "pixel")


@dataclass(frozen=True)
class PixelTransform:
    """Linear dBZ <-> pixel map plus a Z-R relation ``Z = zr_a * R ** zr_b``.

    Pixels at or below ``dbz_min`` are dry; rain rates below ``rain_min`` mm/h count as dry.
    """

    dbz_min: float = -10.0
    dbz_max: float = 60.0
    zr_a: float = 200.0
    zr_b: float = 1.6
    rain_min: float = 0.1

    def dbz_to_pixel(self, dbz: np.ndarray) -> np.ndarray:
        """(...) reflectivity in dBZ -> (...) pixels in [0, 1]; NaN stays NaN."""
        pixel = (np.asarray(dbz, dtype=np.float32) - self.dbz_min) / (self.dbz_max - self.dbz_min)
        return np.clip(pixel, 0.0, 1.0)

    def pixel_to_dbz(self, pixel: np.ndarray) -> np.ndarray:
        """(...) pixels in [0, 1] -> (...) reflectivity in dBZ."""
        pixel = np.asarray(pixel, dtype=np.float32)
        return (pixel * (self.dbz_max - self.dbz_min) + self.dbz_min).astype(np.float32)

    def rain_to_dbz(self, rain: np.ndarray) -> np.ndarray:
        """(...) rain rate in mm/h -> (...) dBZ; dry cells map to ``dbz_min``."""
        rain = np.asarray(rain, dtype=np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            dbz = 10.0 * np.log10(self.zr_a * np.power(np.maximum(rain, 0.0), self.zr_b))
        dbz = np.where(rain < self.rain_min, self.dbz_min, dbz)
        return np.where(np.isnan(rain), np.nan, dbz).astype(np.float32)

    def dbz_to_rain(self, dbz: np.ndarray) -> np.ndarray:
        """(...) dBZ -> (...) rain rate in mm/h; rates below ``rain_min`` become 0."""
        dbz = np.asarray(dbz, dtype=np.float32)
        rain = np.power(np.power(10.0, dbz / 10.0) / self.zr_a, 1.0 / self.zr_b)
        return np.where(rain < self.rain_min, 0.0, rain).astype(np.float32)

    def to_pixel(self, values: np.ndarray, unit: str) -> np.ndarray:
        """(...) values in ``unit`` (one of ``UNITS``) -> (...) pixels in [0, 1]."""
        if unit == "dBZ":
            return self.dbz_to_pixel(values)
        if unit == "mm/h":
            return self.dbz_to_pixel(self.rain_to_dbz(values))
        if unit == "pixel":
            return np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)
        raise ValueError(f"unknown unit {unit!r}; valid units: {UNITS}")

    def from_pixel(self, pixel: np.ndarray, unit: str) -> np.ndarray:
        """(...) pixels in [0, 1] -> (...) values in ``unit`` (one of ``UNITS``)."""
        if unit == "dBZ":
            return self.pixel_to_dbz(pixel)
        if unit == "mm/h":
            return self.dbz_to_rain(self.pixel_to_dbz(pixel))
        if unit == "pixel":
            return np.asarray(pixel, dtype=np.float32)
        raise ValueError(f"unknown unit {unit!r}; valid units: {UNITS}")
