"""MeteoNet reflectivity composites (Meteo-France) as 5 -> 20 windows at 5 min.

Layout of the public files (``reflectivity_old_NW_2016_01.1.npz`` and the like): an ``.npz``
with ``data`` (T, H, W) maps, ``dates`` (T,) datetime objects and ``miss_dates``, the times of
the maps left out of the period. Two encodings:

- old product (no ``prob`` array): uint8 dBZ, the lower bound of each level; 0 means below
  8 dBZ (no echo, read as dry), 255 no data.
- new product (with ``prob`` and ``height`` arrays): int16 tenths of dBZ; -100 non-detection
  (dry), -200 no data.

Dry becomes -32 dBZ and no data NaN; the model config's ``PixelTransform`` then gives pixels
and ``valid``. Windows never span a missing map (runs are cut where ``dates`` are not 5 min
apart). ``dates`` is an object array, so the file is read with ``allow_pickle=True``: only
open MeteoNet files from a trusted source. A file's ``data`` is loaded whole when an item
needs it and the last file is cached, so visit windows file by file (a sequential or
file-grouped sampler) when there are many files.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from model.transform import PixelTransform
from radar.read import DRY_VALUE
from training.adapters.common import consecutive_runs, make_item, window_starts

logger = logging.getLogger(__name__)

STEP_MINUTES = 5
OLD_NO_ECHO, OLD_MISSING = 0, 255
NEW_NO_ECHO, NEW_MISSING = -100, -200


def decode_reflectivity(data: np.ndarray, *, new_product: bool) -> np.ndarray:
    """(T, H, W) stored MeteoNet values -> (T, H, W) float32 dBZ, dry -32 dBZ, NaN = no data."""
    data = np.asarray(data)
    if new_product:
        dbz = data.astype(np.float32) / np.float32(10.0)
        dbz[data == NEW_NO_ECHO] = DRY_VALUE["dBZ"]
        dbz[data == NEW_MISSING] = np.nan
    else:
        dbz = data.astype(np.float32)
        dbz[data == OLD_NO_ECHO] = DRY_VALUE["dBZ"]
        dbz[data == OLD_MISSING] = np.nan
    return dbz


def read_dates(path: str | Path) -> np.ndarray:
    """(T,) datetime64[ns] of a MeteoNet npz's ``dates``, without loading ``data``."""
    with np.load(path, allow_pickle=True) as npz:
        return np.array(list(npz["dates"]), dtype="datetime64[ns]")


def read_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One MeteoNet reflectivity file -> ((T, H, W) float32 dBZ with NaN = no data, (T,) datetime64)."""
    with np.load(path, allow_pickle=True) as npz:
        for key in ("data", "dates"):
            if key not in npz.files:
                raise ValueError(f"{Path(path).name}: missing array {key!r}; MeteoNet files hold data, dates")
        dbz = decode_reflectivity(npz["data"], new_product="prob" in npz.files)
        dates = np.array(list(npz["dates"]), dtype="datetime64[ns]")
    if len(dates) != len(dbz):
        raise ValueError(f"{Path(path).name}: {len(dates)} dates for {len(dbz)} maps")
    return dbz, dates


class MeteoNetReflectivity(Dataset):
    """Windows of ``t_in + t_out`` consecutive 5-min maps from MeteoNet npz files.

    Parameters
    ----------
    paths : sequence of str or Path
        MeteoNet reflectivity ``.npz`` files.
    t_in, t_out : int
    stride : int
        Frames between window starts.
    size : int, optional
        Area-average the (cropped) frames to ``size x size``; None keeps the grid.
    crop : tuple of int, optional
        ``(y0, x0, height, width)`` in native pixels, applied before ``size`` (the NW zone is
        565 x 784 pixels of 0.01 deg; crop a square before resizing to keep the aspect).
    transform : PixelTransform
        The model config's transform.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        *,
        t_in: int = 5,
        t_out: int = 20,
        stride: int = 5,
        size: int | None = None,
        crop: tuple[int, int, int, int] | None = None,
        transform: PixelTransform | None = None,
    ) -> None:
        if crop is not None and (len(crop) != 4 or min(crop) < 0 or min(crop[2:]) < 1):
            raise ValueError(f"crop must be (y0, x0, height, width) with y0, x0 >= 0 and sizes >= 1, "
                             f"got {crop}")
        self.paths = [Path(p) for p in paths]
        self.t_in, self.t_out, self.size, self.crop = t_in, t_out, size, crop
        self.transform = PixelTransform() if transform is None else transform
        self.dates = [read_dates(p) for p in self.paths]
        self.windows = [(f, int(s)) for f, dates in enumerate(self.dates)
                        for s in window_starts(consecutive_runs(dates, STEP_MINUTES), t_in + t_out, stride)]
        self._cache: tuple[int, np.ndarray] | None = None
        logger.info("MeteoNet: %d windows from %d files", len(self.windows), len(self.paths))

    def __len__(self) -> int:
        return len(self.windows)

    def _dbz(self, f: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != f:
            self._cache = (f, read_npz(self.paths[f])[0])
        return self._cache[1]

    def __getitem__(self, i: int) -> dict:
        f, start = self.windows[i]
        dbz = self._dbz(f)[start : start + self.t_in + self.t_out]
        if self.crop is not None:
            y0, x0, h, w = self.crop
            if y0 + h > dbz.shape[1] or x0 + w > dbz.shape[2]:
                raise ValueError(f"crop {self.crop} does not fit the {dbz.shape[1]}x{dbz.shape[2]} grid")
            dbz = dbz[:, y0 : y0 + h, x0 : x0 + w]
        valid = np.isfinite(dbz)
        pixels = self.transform.to_pixel(np.where(valid, dbz, DRY_VALUE["dBZ"]), "dBZ")
        return make_item(pixels, valid, t_in=self.t_in, size=self.size, source=self.paths[f].name,
                         start=self.dates[f][start])
