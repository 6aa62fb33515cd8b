"""Read real radar events (CF-netCDF) and cut nowcasting samples out of them.

The event files are described in ``../shared/radar/README.md``: dims ``(time, y, x)``, row 0
northernmost, variables ``reflectivity`` (dBZ) and ``rain_rate`` (mm/h), NaN = no data,
dry = -32 dBZ / 0 mm/h. A sample is a window in time (``n_frames`` at ``step_minutes``) and
space (``size x size`` cells after an area mean of ``coarsen x coarsen`` cells).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

UNIT_OF = {"rain_rate": "mm/h", "reflectivity": "dBZ"}
DRY_VALUE = {"mm/h": 0.0, "dBZ": -32.0}


@dataclass(frozen=True, eq=False)
class RadarSequence:
    """A radar sequence with the metadata that travels with it.

    Attributes
    ----------
    values : np.ndarray
        (T, H, W) float32 in ``unit``; NaN = no data.
    times : np.ndarray
        (T,) datetime64[ns], UTC.
    unit : str
        ``"mm/h"`` or ``"dBZ"``.
    timestep_minutes : int
        Minutes between consecutive frames.
    grid_spacing : float
        Cell size in ``grid_spacing_unit``.
    grid_spacing_unit : str
        ``"m"`` (projected grids) or ``"deg"`` (regular lat/lon grids).
    source : str
        File name of the event.
    y, x : np.ndarray or None
        (H,), (W,) float64 cell-centre coordinates (metres or degrees), None when the file has
        none.
    crs : str
        ``"longlat"`` for regular lat/lon grids, else the file's proj4 string ("" if unknown);
        two grids with the same ``crs`` share a coordinate system.
    """

    values: np.ndarray
    times: np.ndarray
    unit: str
    timestep_minutes: int
    grid_spacing: float
    grid_spacing_unit: str
    source: str
    y: np.ndarray | None = None
    x: np.ndarray | None = None
    crs: str = ""


def read_event(path: str | Path, *, quantity: str = "rain_rate") -> RadarSequence:
    """Read one event file into memory.

    Parameters
    ----------
    path : str or Path
        CF-netCDF event file (``time, y, x``).
    quantity : str
        ``"rain_rate"`` (mm/h) or ``"reflectivity"`` (dBZ).

    Returns
    -------
    RadarSequence
        ``values`` (T, H, W) float32 in the quantity's unit, NaN = no data.
    """
    import xarray as xr  # deferred: keeps `import model` light

    if quantity not in UNIT_OF:
        raise ValueError(f"quantity must be one of {sorted(UNIT_OF)}, got {quantity!r}")
    path = Path(path)
    with xr.open_dataset(path, engine="netcdf4") as ds:
        var = ds[quantity].transpose("time", "y", "x")
        values = np.asarray(var.values, dtype=np.float32)
        times = np.asarray(ds["time"].values).astype("datetime64[ns]")
        attrs = dict(ds.attrs)
        coords = {d: np.asarray(ds[d].values, dtype=np.float64) if d in ds.coords else None
                  for d in ("y", "x")}
    if "grid_spacing_m_x" in attrs:
        spacing = float(np.mean([attrs["grid_spacing_m_x"], attrs["grid_spacing_m_y"]]))
        spacing_unit = "m"
    elif "grid_spacing_deg" in attrs:
        spacing, spacing_unit = float(attrs["grid_spacing_deg"]), "deg"
    else:
        raise ValueError(
            f"{path.name}: need global attributes grid_spacing_m_x/_y or grid_spacing_deg"
        )
    if "time_step_minutes" not in attrs:
        raise ValueError(f"{path.name}: missing global attribute time_step_minutes")
    return RadarSequence(
        values=values,
        times=times,
        unit=UNIT_OF[quantity],
        timestep_minutes=int(attrs["time_step_minutes"]),
        grid_spacing=spacing,
        grid_spacing_unit=spacing_unit,
        source=path.name,
        y=coords["y"],
        x=coords["x"],
        crs=crs_key(attrs),
    )


def crs_key(attrs: dict) -> str:
    """``"longlat"`` for a file with ``grid_spacing_deg``, else its ``projection_proj4`` (or "")."""
    if "grid_spacing_deg" in attrs and "grid_spacing_m_x" not in attrs:
        return "longlat"
    return " ".join(str(attrs.get("projection_proj4", "")).split())


def frame_stride(native_minutes: int, step_minutes: int, *, source: str = "") -> int:
    """Native frames per model step; ``ValueError`` unless the native step divides ``step_minutes``."""
    if step_minutes <= 0 or step_minutes % native_minutes:
        where = f" of {source}" if source else ""
        raise ValueError(
            f"step_minutes={step_minutes} is not a multiple of the native {native_minutes} min "
            f"step{where}; valid steps are multiples of {native_minutes}: "
            f"{native_minutes}, {2 * native_minutes}, {3 * native_minutes}, ..."
        )
    return step_minutes // native_minutes


def serving_step(native_minutes: int, served: tuple[int, ...] | list[int], *, source: str = "") -> int:
    """The step a file is nowcast at: its native step when the model serves it, else the
    smallest served step that is a multiple of it; ``ValueError`` naming the served steps."""
    usable = [s for s in sorted(served) if s % native_minutes == 0]
    if not usable:
        where = f" of {source}" if source else ""
        raise ValueError(f"the model serves steps of {list(served)} min, none a multiple of the native "
                         f"{native_minutes}-min step{where}")
    return usable[0]


def area_mean(values: np.ndarray, coarsen: int) -> np.ndarray:
    """(T, H, W) -> (T, H // coarsen, W // coarsen) mean of the finite cells of each block.

    Blocks without any finite cell stay NaN; trailing rows/columns that do not fill a
    block are dropped.
    """
    t, h, w = values.shape
    h_c, w_c = h // coarsen, w // coarsen
    blocks = values[:, : h_c * coarsen, : w_c * coarsen].reshape(t, h_c, coarsen, w_c, coarsen)
    count = np.isfinite(blocks).sum(axis=(2, 4))
    total = np.nansum(blocks, axis=(2, 4), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, np.nan)
    return mean.astype(np.float32)


def _wettest_origin(frame: np.ndarray, size: int, dry: float) -> tuple[int, int]:
    """Origin of the ``size x size`` window with the largest mean excess over ``dry``.

    Candidates lie on a grid with stride ``size // 4`` (plus the last row/column); NaN
    counts as dry, so no-data areas never beat rain.
    """
    excess = np.nan_to_num(frame.astype(np.float64) - dry, nan=0.0)
    integral = np.pad(excess.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    stride = max(1, size // 4)
    h, w = frame.shape
    ys = np.unique(np.r_[np.arange(0, h - size + 1, stride), h - size])
    xs = np.unique(np.r_[np.arange(0, w - size + 1, stride), w - size])
    y, x = np.meshgrid(ys, xs, indexing="ij")
    y1, x1 = y + size, x + size
    sums = integral[y1, x1] - integral[y, x1] - integral[y1, x] + integral[y, x]
    iy, ix = np.unravel_index(np.argmax(sums), sums.shape)
    return int(ys[iy]), int(xs[ix])


def cut_window(
    seq: RadarSequence,
    *,
    start: int,
    n_frames: int,
    size: int = 128,
    coarsen: int = 1,
    step_minutes: int | None = None,
    y0: int | None = None,
    x0: int | None = None,
) -> RadarSequence:
    """Cut ``n_frames`` frames of ``size x size`` coarsened cells out of ``seq``.

    Parameters
    ----------
    seq : RadarSequence
        Source sequence, ``values`` (T, H, W).
    start : int
        Index of the first frame at the native step.
    n_frames : int
        Number of frames to take, ``step_minutes`` apart.
    size : int
        Window side in coarsened cells.
    coarsen : int
        Area-mean ``coarsen x coarsen`` native cells into one (NaN ignored).
    step_minutes : int, optional
        Output step, a multiple of ``seq.timestep_minutes`` (default: the native step).
    y0, x0 : int, optional
        Window origin in the coarsened grid; both None picks the wettest window of the
        first frame.

    Returns
    -------
    RadarSequence
        ``values`` (n_frames, size, size) in ``seq.unit``; spacing multiplied by ``coarsen``.
    """
    native = seq.timestep_minutes
    step = native if step_minutes is None else step_minutes
    stride = frame_stride(native, step, source=seq.source)
    if n_frames < 1 or size < 1 or coarsen < 1 or start < 0:
        raise ValueError("start must be >= 0 and n_frames, size, coarsen >= 1")
    if (y0 is None) != (x0 is None):
        raise ValueError("give both y0 and x0, or neither to pick the wettest window")
    index = start + stride * np.arange(n_frames)
    if index[-1] >= seq.values.shape[0]:
        raise ValueError(
            f"not enough frames: {n_frames} frames at {step} min from index {start} need "
            f"{index[-1] + 1} native frames, {seq.source} has {seq.values.shape[0]}"
        )
    values = area_mean(seq.values[index], coarsen) if coarsen > 1 else seq.values[index]
    h, w = values.shape[1:]
    if h < size or w < size:
        raise ValueError(f"grid {h}x{w} after coarsen={coarsen} is smaller than size={size}")
    if y0 is None or x0 is None:
        y0, x0 = _wettest_origin(values[0], size, DRY_VALUE[seq.unit])
        logger.debug("%s: wettest window at y0=%d x0=%d", seq.source, y0, x0)
    if not (0 <= y0 <= h - size and 0 <= x0 <= w - size):
        raise ValueError(
            f"window origin must satisfy 0 <= y0 <= {h - size} and 0 <= x0 <= {w - size}"
        )
    y = None if seq.y is None else coarsen_coordinates(seq.y, coarsen)[y0 : y0 + size]
    x = None if seq.x is None else coarsen_coordinates(seq.x, coarsen)[x0 : x0 + size]
    return replace(
        seq,
        values=np.ascontiguousarray(values[:, y0 : y0 + size, x0 : x0 + size]),
        times=seq.times[index],
        timestep_minutes=step,
        grid_spacing=seq.grid_spacing * coarsen,
        y=y,
        x=x,
    )


def coarsen_coordinates(coords: np.ndarray, coarsen: int) -> np.ndarray:
    """(N,) cell centres -> (N // coarsen,) centres of the ``coarsen``-cell blocks (their mean)."""
    n = len(coords) // coarsen
    return coords[: n * coarsen].reshape(n, coarsen).mean(axis=1)
