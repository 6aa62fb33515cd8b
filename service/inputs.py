"""Radar input at the API boundary: decode, validate, convert to model pixels.

The API never loads the networks; it reads what it needs to check a request (frame count,
timestep, side multiple, data transform, version) from the checkpoint folder's
``config.json`` and ``manifest.json``. Uploaded files are read by the same reader as the CLI's
(``radar.readers``: CF-netCDF, ODIM_H5, GRIB2, GeoTIFF). Every check raises :class:`InputError`
(a ``ValueError``) whose message names the problem and the valid choices; the API answers 422.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model.config import STLDMConfig
from model.options import NowcastDefaults, step_of, utc
from model.transform import UNITS, PixelTransform

if TYPE_CHECKING:
    from radar.readers import RadarSequence
    from service.schemas import GridSpec

log = logging.getLogger(__name__)

MIN_SIDE = 16


class InputError(ValueError):
    """A request the service cannot forecast from; the message is returned to the client."""


@dataclass(frozen=True)
class ModelInfo:
    """What the API needs to know about the served checkpoint (no weights)."""

    model_version: str
    t_in: int
    t_out: int
    size: int  # the frame side the model was trained on
    size_multiple: int
    transform: PixelTransform
    defaults: NowcastDefaults  # the steps it serves, its cell size and its default options

    @property
    def step_minutes(self) -> tuple[int, ...]:
        return self.defaults.step_minutes


def read_model_info(checkpoint: str | Path) -> ModelInfo:
    """Read ``config.json`` and ``manifest.json`` of the checkpoint folder ``checkpoint``
    (its defaults as :meth:`model.options.NowcastDefaults.from_manifest` reads them)."""
    from model.checkpoint import CONFIG_FILE, read_manifest

    path = Path(checkpoint)
    manifest = read_manifest(path)
    config = STLDMConfig.from_dict(json.loads((path / CONFIG_FILE).read_text()))
    return ModelInfo(model_version=manifest["model_version"], t_in=config.t_in, t_out=config.t_out,
                     size=config.size, size_multiple=config.size_multiple, transform=config.transform,
                     defaults=NowcastDefaults.from_manifest(manifest, config))


def frames_from_lists(frames: list[Any]) -> np.ndarray:
    """Nested lists (None = no data) -> float32 array; ``InputError`` when ragged."""
    try:
        values = np.array(frames, dtype=np.float32)
    except (ValueError, TypeError) as err:
        raise InputError(f"frames must be a regular (T, H, W) nested list of numbers ({err})") from err
    return values


def check_frames(values: np.ndarray, timestamps: Sequence[dt.datetime], *, info: ModelInfo,
                 max_side: int) -> tuple[list[dt.datetime], int]:
    """Validate (T, H, W) radar frames and their times against the model; return UTC times and
    their step in minutes.

    Raises
    ------
    InputError
        Not 3-D, a frame count other than ``info.t_in``, sides outside ``[16, max_side]``,
        infinite values, no finite value at all, or timestamps that are not one of the steps the
        model serves apart. Sides need not be multiples of the model's ``size_multiple``: the
        worker pads (``model.padding.to_model_grid``).
    """
    if values.ndim != 3:
        raise InputError(f"frames must be 3-D (T, H, W), got shape {list(values.shape)}")
    t, h, w = values.shape
    if t != info.t_in:
        raise InputError(f"frames must hold t_in={info.t_in} frames (the model's input length), got {t}")
    for name, side in (("H", h), ("W", w)):
        if not MIN_SIDE <= side <= max_side:
            raise InputError(f"frame side {name}={side} must be between {MIN_SIDE} and max_side={max_side}")
    n_inf = int(np.isinf(values).sum())
    if n_inf:
        raise InputError(f"frames contain {n_inf} infinite values; mark no-data cells with NaN")
    if np.isnan(values).all():
        raise InputError("frames are all NaN (no data anywhere); nothing to forecast from")
    if len(timestamps) != t:
        raise InputError(f"timestamps must give one time per frame: {t} frames, {len(timestamps)} timestamps")
    times = [utc(x) for x in timestamps]
    try:
        step = step_of(times, info.step_minutes)
    except ValueError as err:
        raise InputError(str(err)) from err
    return times, step


def to_pixels(values: np.ndarray, unit: str, transform: PixelTransform) -> np.ndarray:
    """(T, H, W) values in ``unit`` -> (T, H, W) float32 pixels in [0, 1], NaN kept."""
    if unit not in UNITS:
        raise InputError(f"unknown unit {unit!r}; valid units: {list(UNITS)}")
    return transform.to_pixel(values, unit).astype(np.float32)


@dataclass(frozen=True)
class RadarInput:
    """The frames of a request ready to check and queue, with the grid fields of its job.

    ``values`` (t_in, H, W) in ``unit``, NaN = no data; ``grid`` holds the
    :class:`~service.contract.JobRequest` fields grid_spacing_km, crs, y, x, xy_units, resampled.
    """

    values: np.ndarray
    unit: str
    timestamps: list[dt.datetime]
    grid: dict[str, Any]
    source: str


def _grid_fields(seq: RadarSequence, coarsen: int) -> dict[str, Any]:
    from radar.georef import parse_crs, xy_units
    from radar.readers import sequence_cell_km

    crs = seq.crs or None
    cell = sequence_cell_km(seq)
    return {
        "grid_spacing_km": None if cell is None else round(cell, 6), "crs": crs,
        "y": None if crs is None or seq.y is None else [float(v) for v in seq.y],
        "x": None if crs is None or seq.x is None else [float(v) for v in seq.x],
        "xy_units": None if crs is None else xy_units(parse_crs(crs)),
        "resampled": f"area mean of {coarsen} x {coarsen} cells" if coarsen > 1 else None,
    }


def read_upload(files: Sequence[tuple[str, bytes]], *, info: ModelInfo, resample: bool) -> RadarInput:
    """The last ``t_in`` frames of uploaded radar files (any format ``radar.readers`` reads) at a
    step the model serves, resampled to its cells when asked; ``InputError`` naming the problem."""
    from radar.readers import last_frames, read_radar

    try:
        seq = read_radar(list(files))
        window, coarsen = last_frames(seq, t_in=info.t_in, steps=info.step_minutes,
                                      cell_km=info.defaults.cell_km, resample=resample)
    except ValueError as err:
        raise InputError(str(err)) from err
    times = [utc(dt.datetime.fromisoformat(str(np.datetime_as_string(t, unit="s")))) for t in window.times]
    return RadarInput(values=window.values, unit=window.unit, timestamps=times,
                      grid=_grid_fields(window, coarsen), source=seq.source)


def json_input(values: np.ndarray, unit: str, times: list[dt.datetime], step: int, *, info: ModelInfo,
               grid: GridSpec | None, grid_spacing_km: float | None, resample: bool) -> RadarInput:
    """A JSON request's frames with its grid (a :class:`~service.schemas.GridSpec` or None),
    resampled to the model's cells when asked; ``InputError`` for a grid that does not fit the
    frames or is far from the model's cell size."""
    from radar.georef import parse_crs
    from radar.read import RadarSequence
    from radar.readers import last_frames, sequence_cell_km

    try:
        y = x = crs = None
        if grid is not None:
            crs = parse_crs(grid.crs)
            y, x = grid.coordinates(values.shape[1:])
        seq = RadarSequence(
            values=values, times=np.array([np.datetime64(t.replace(tzinfo=None), "ns") for t in times]),
            unit=unit, timestep_minutes=step,
            grid_spacing=np.nan if grid_spacing_km is None else grid_spacing_km * 1000,
            grid_spacing_unit="" if grid_spacing_km is None else "m", source="request",
            y=y, x=x, crs="" if grid is None else grid.crs)
        if crs is not None and grid_spacing_km is not None:
            from_grid = sequence_cell_km(seq)
            if from_grid is not None and abs(from_grid / grid_spacing_km - 1) > 0.1:
                raise ValueError(f"grid_spacing_km={grid_spacing_km:g} contradicts the grid's "
                                 f"{from_grid:.3f} km cells")
        if resample and unit not in ("dBZ", "mm/h"):
            raise ValueError(f"resample needs frames in dBZ or mm/h, got {unit!r}")
        window, coarsen = last_frames(seq, t_in=values.shape[0], steps=(step,),
                                      cell_km=info.defaults.cell_km, resample=resample)
    except ValueError as err:
        raise InputError(str(err)) from err
    return RadarInput(values=window.values, unit=unit, timestamps=times, grid=_grid_fields(window, coarsen),
                      source="json")
