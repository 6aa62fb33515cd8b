"""Radar input at the API boundary: decode, validate, convert to model pixels.

The API never loads the networks; it reads what it needs to check a request (frame count,
timestep, side multiple, data transform, version) from the checkpoint folder's
``config.json`` and ``manifest.json``. Every check raises :class:`InputError` (a
``ValueError``) whose message names the problem and the valid choices.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.config import STLDMConfig
from model.options import NowcastDefaults, step_of, utc
from model.transform import UNITS, PixelTransform

log = logging.getLogger(__name__)

MIN_SIDE = 16
# Preferred first: the model's pixels are linear in dBZ, so reflectivity needs no Z-R relation.
UPLOAD_VARIABLES = (
    ("standard_name", "equivalent_reflectivity_factor", "dBZ"),
    ("standard_name", "lwe_precipitation_rate", "mm/h"),
    ("name", "reflectivity", "dBZ"),
    ("name", "rain_rate", "mm/h"),
)
UNIT_SPELLINGS = {"dbz": "dBZ", "mm h-1": "mm/h", "mm/h": "mm/h", "mm hr-1": "mm/h", "1": "pixel"}


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


def frames_from_lists(frames: list) -> np.ndarray:
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
class Upload:
    """Frames read from an uploaded CF-netCDF file."""

    values: np.ndarray  # (t_in, H, W) in ``unit``, NaN = no data
    unit: str
    timestamps: list[dt.datetime]
    grid_spacing_km: float | None
    projection: str | None
    y: list[float] | None
    x: list[float] | None
    coordinate_units: str | None
    variable: str


def _pick_variable(ds) -> tuple[str, str]:
    for how, key, unit in UPLOAD_VARIABLES:
        for name, var in ds.data_vars.items():
            if (how == "name" and name == key) or (how == "standard_name"
                                                     and var.attrs.get("standard_name") == key):
                declared = str(var.attrs.get("units", "")).strip()
                if declared and UNIT_SPELLINGS.get(declared.lower()) not in (unit, None):
                    raise InputError(f"variable {name!r} has units {declared!r}; expected {unit}")
                return str(name), unit
    raise InputError(
        "no radar variable found: need standard_name 'equivalent_reflectivity_factor' (dBZ) or "
        "'lwe_precipitation_rate' (mm h-1), or a variable named 'reflectivity' or 'rain_rate'; "
        f"file has {sorted(map(str, ds.data_vars))}"
    )


def _projection(ds, var) -> str | None:
    mapping = var.attrs.get("grid_mapping")
    if mapping and mapping in ds.variables:
        attrs = ds[mapping].attrs
        for key in ("crs_wkt", "spatial_ref", "proj4", "proj4_params"):
            if attrs.get(key):
                return str(attrs[key])
    for key in ("projection_proj4", "projection", "crs_wkt"):
        if ds.attrs.get(key):
            return str(ds.attrs[key])
    return None


def _grid_spacing_km(ds, x: np.ndarray | None, units: str | None) -> float | None:
    if "grid_spacing_m_x" in ds.attrs and "grid_spacing_m_y" in ds.attrs:
        return float(np.mean([ds.attrs["grid_spacing_m_x"], ds.attrs["grid_spacing_m_y"]])) / 1000
    if x is not None and len(x) > 1 and units in ("m", "km"):
        spacing = float(np.abs(np.diff(x)).mean())
        return spacing / 1000 if units == "m" else spacing
    return None


def read_upload(content: bytes, *, t_in: int) -> Upload:
    """The last ``t_in`` frames of an uploaded CF-netCDF file (dims ``time, y, x``).

    The variable is chosen by standard_name (reflectivity first), else by the names of the
    project's event files (``reflectivity``, ``rain_rate``; see ``radar/read.py``).
    """
    import xarray as xr

    with tempfile.NamedTemporaryFile(suffix=".nc") as tmp:
        tmp.write(content)
        tmp.flush()
        try:
            ds = xr.open_dataset(tmp.name, engine="netcdf4")
        except (OSError, ValueError) as err:
            raise InputError(f"file is not a readable netCDF file ({err})") from err
        with ds:
            name, unit = _pick_variable(ds)
            var = ds[name]
            if var.ndim != 3 or "time" not in var.dims:
                raise InputError(f"variable {name!r} must have dims (time, y, x), got {var.dims}")
            others = [str(d) for d in var.dims if d != "time"]
            var = var.transpose("time", *others).isel(time=slice(-t_in, None))
            values = np.asarray(var.values, dtype=np.float32)
            try:
                times = [dt.datetime.fromisoformat(str(np.datetime_as_string(t, unit="s")))
                         for t in np.asarray(var["time"].values).astype("datetime64[s]")]
            except (TypeError, ValueError) as err:
                raise InputError(f"time coordinate of {name!r} is not a CF time ({err})") from err
            coord: dict[str, Any] = {}
            for dim in others:
                coord[dim] = np.asarray(ds[dim].values, dtype=np.float64) if dim in ds.coords else None
            ydim, xdim = others
            xunits = str(ds[xdim].attrs.get("units", "")) if coord[xdim] is not None else None
            return Upload(
                values=values, unit=unit, timestamps=[utc(t) for t in times],
                grid_spacing_km=_grid_spacing_km(ds, coord[xdim], xunits),
                projection=_projection(ds, ds[name]),
                y=None if coord[ydim] is None else coord[ydim].tolist(),
                x=None if coord[xdim] is None else coord[xdim].tolist(),
                coordinate_units=xunits or None, variable=name,
            )
