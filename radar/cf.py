"""The one CF-1.8 netCDF layout of an ensemble nowcast, for ``nowcast forecast`` and the service.

Layout (OPERATIONS.md, pysteps' exporter + IMPROVER):

- dims ``realization`` (K), ``time`` (T, valid time), ``y`` (H), ``x`` (W), ``threshold``,
  ``percentile``;
- ``time`` with ``forecast_period`` (lead time in s) on the same dim and a scalar
  ``forecast_reference_time`` (the last input frame);
- a grid mapping variable ``projection`` from ``pyproj.CRS.to_cf()`` when the grid's CRS is
  known, ``x``/``y`` as ``projection_x/y_coordinate`` in metres (or ``longitude``/``latitude``
  for lat/lon grids) and 2-D ``lat``/``lon`` of the cell centres; a grid without CRS gets
  plain cell indices (units ``1``) and no map;
- ``precipitation_rate`` (members), ``precipitation_rate_mean`` and
  ``precipitation_rate_percentile`` in ``mm h-1`` (standard_name ``lwe_precipitation_rate``), and
  ``probability_of_lwe_precipitation_rate_above_threshold`` (units 1) whose ``threshold``
  coordinate has standard_name ``lwe_precipitation_rate``, units ``mm h-1`` and
  ``spp__relative_to_threshold = "greater_than_or_equal_to"``;
- global attributes Conventions, title, institution, source, history, references and the
  pysteps-style zerovalue, threshold and Z-R relation.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # not at run time: the API process writes results without torch
    from model.nowcast import EnsembleNowcast

TITLE = "STLDM ensemble precipitation nowcast"
REFERENCES = "Foo et al., STLDM, TMLR (arXiv 2512.21118)"
RATE = {"standard_name": "lwe_precipitation_rate", "units": "mm h-1"}
TIME_UNITS = "seconds since 1970-01-01 00:00:00"


def _stamp(time: dt.datetime | None) -> np.datetime64:
    if time is None:
        return np.datetime64("1970-01-01T00:00", "ns")
    return np.datetime64(time.astimezone(dt.timezone.utc).replace(tzinfo=None), "ns")


def _grid_coords(nowcast: EnsembleNowcast | Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Coordinates of the grid and the grid mapping's attributes (None without a CRS)."""
    from radar.georef import lonlat, parse_crs

    grid = nowcast.grid
    h, w = grid.shape
    if grid.crs is None or grid.y is None or grid.x is None:
        if grid.cell_km is None:  # nothing but cells: indices, no map
            rows, columns = np.arange(h, dtype=np.int32), np.arange(w, dtype=np.int32)
            return {"y": ("y", rows, {"long_name": "row index", "units": "1"}),
                    "x": ("x", columns, {"long_name": "column index", "units": "1"})}, None
        # the cell size without a CRS: distances from the grid's upper-left corner, in an unknown projection
        step = grid.cell_km * 1000.0
        note = "cell centre, metres from the grid's upper-left corner (projection unknown)"
        return {"y": ("y", -(np.arange(h) + 0.5) * step, {"standard_name": "projection_y_coordinate",
                                                         "units": "m", "axis": "Y", "comment": note}),
                "x": ("x", (np.arange(w) + 0.5) * step, {"standard_name": "projection_x_coordinate",
                                                        "units": "m", "axis": "X", "comment": note})}, None
    crs = parse_crs(grid.crs)
    y, x = np.asarray(grid.y, np.float64), np.asarray(grid.x, np.float64)
    coords: dict[str, Any]
    if crs.is_geographic:
        coords = {"y": ("y", y, {"standard_name": "latitude", "units": "degrees_north", "axis": "Y"}),
                  "x": ("x", x, {"standard_name": "longitude", "units": "degrees_east", "axis": "X"})}
    else:
        lat, lon = lonlat(crs, y, x)
        coords = {
            "y": ("y", y, {"standard_name": "projection_y_coordinate", "units": "m", "axis": "Y"}),
            "x": ("x", x, {"standard_name": "projection_x_coordinate", "units": "m", "axis": "X"}),
            "lat": (("y", "x"), lat.astype(np.float64), {"standard_name": "latitude",
                                                         "units": "degrees_north"}),
            "lon": (("y", "x"), lon.astype(np.float64), {"standard_name": "longitude",
                                                         "units": "degrees_east"}),
        }
    mapping = {k: v for k, v in crs.to_cf().items() if v is not None}
    if mapping.get("grid_mapping_name") == "polar_stereographic":  # CF requires it; pyproj omits it
        pole = 90.0 if float(mapping.get("standard_parallel", 90.0)) >= 0 else -90.0
        mapping.setdefault("latitude_of_projection_origin", pole)
    if mapping.get("grid_mapping_name") == "oblique_mercator" and "azimuth_of_central_line" in mapping:
        # compliance-checker 6.1 (cf/appendix_f.py) asks for "azimuth", CF-1.8 names it
        # azimuth_of_central_line: write both, same value
        mapping["azimuth"] = mapping["azimuth_of_central_line"]
    return coords, mapping


def nowcast_dataset(nowcast: EnsembleNowcast | Any, *, institution: str = "", history: str = "",
                    attrs: dict[str, Any] | None = None):
    """CF-1.8 ``xarray.Dataset`` of ``nowcast`` (module docstring).

    Parameters
    ----------
    nowcast : an :class:`~model.nowcast.EnsembleNowcast`, or any object with its attributes
        (the service's stored results): members (K, T, H, W), mean (T, H, W), percentiles
        (P, T, H, W) in mm/h, probability (n_thresholds, T, H, W) in [0, 1], NaN = no data;
        thresholds, percentile_levels, lead_minutes, step_minutes, reference_time, grid,
        options, model_version.
    institution, history : global attributes (history gets a line of this nowcast's options).
    attrs : further global attributes (e.g. the Z-R relation, resampling).
    """
    import xarray as xr

    k, t, h, w = nowcast.members.shape
    ref = _stamp(nowcast.reference_time)
    lead = np.asarray(nowcast.lead_minutes, dtype=np.int64) * 60
    grid_coords, mapping = _grid_coords(nowcast)
    coords: dict[str, Any] = {
        "realization": ("realization", np.arange(k, dtype=np.int32),
                        {"standard_name": "realization", "units": "1"}),
        "time": ("time", ref + lead.astype("timedelta64[s]"), {"standard_name": "time", "axis": "T"}),
        "forecast_period": ("time", lead.astype(np.int32),
                            {"standard_name": "forecast_period", "units": "s"}),
        "forecast_reference_time": ((), ref, {"standard_name": "forecast_reference_time"}),
        "threshold": ("threshold", np.asarray(nowcast.thresholds, np.float32),
                      {**RATE, "spp__relative_to_threshold": "greater_than_or_equal_to"}),
        "percentile": ("percentile", np.asarray(nowcast.percentile_levels, np.float32),
                       {"long_name": "percentile of the ensemble", "units": "%"}),
        **grid_coords,
    }
    dims = ("time", "y", "x")
    link = {"grid_mapping": "projection"} if mapping else {}
    data: dict[str, Any] = {
        "precipitation_rate": (("realization", *dims), nowcast.members.astype(np.float32),
                               {**RATE, "long_name": "ensemble member rain rate", **link}),
        "precipitation_rate_mean": (dims, nowcast.mean.astype(np.float32),
                                    {**RATE, "long_name": "ensemble mean rain rate", **link}),
        "precipitation_rate_percentile": (("percentile", *dims), nowcast.percentiles.astype(np.float32),
                                          {**RATE, "long_name": "percentiles of the ensemble's rain rate",
                                           **link}),
        "probability_of_lwe_precipitation_rate_above_threshold": (
            ("threshold", *dims), nowcast.probability.astype(np.float32),
            {"long_name": "probability of rain rate at or above threshold (fraction of members)",
             "units": "1", **link}),
    }
    if mapping:
        data["projection"] = ((), np.int32(0), mapping)
    opts = nowcast.options
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    line = (f"{now} nowcast by {nowcast.model_version}: {opts.members} members, {opts.steps} DDIM steps, "
            f"guidance {opts.guidance:g} on {opts.guidance_share:.0%} of the steps, seed {opts.seed}, "
            f"matching {opts.matching}, advection "
            f"{opts.advection}, motion spread {opts.motion_spread:g}, detail lifetime "
            f"{opts.detail_lifetime:g} min ({opts.detail}), extrapolation lifetime "
            f"{opts.extrapolation_lifetime:g} min, blend spread {opts.blend_spread:g}, estimate lifetime "
            f"{opts.estimate_lifetime:g} min, "
            f"{'antithetic member pairs' if opts.antithetic else 'independent members'}")
    global_attrs = {
        "Conventions": "CF-1.8", "title": TITLE, "institution": institution or "unknown",
        "source": f"STLDM {nowcast.model_version}", "history": f"{history}\n{line}".strip(),
        "references": REFERENCES, "zerovalue": 0.0, "timestep_minutes": int(nowcast.step_minutes),
        **({"grid_spacing_km": float(nowcast.grid.cell_km)} if nowcast.grid.cell_km else {}),
        **(attrs or {}),
    }
    return xr.Dataset(data, coords=coords, attrs=global_attrs)


def encoding_of(ds) -> dict[str, dict[str, Any]]:
    """netCDF encoding: zlib on the data, CF time units, no fill value on coordinates."""
    encoding: dict[str, dict[str, Any]] = {
        name: {"zlib": True, "complevel": 4} for name in ds.data_vars if name != "projection"}
    for name in ("time", "forecast_reference_time"):
        # float64 seconds: exact, and CF-1.8 has no 64-bit integers
        encoding[name] = {"units": TIME_UNITS, "dtype": "float64", "_FillValue": None}
    for name in ds.coords:
        encoding.setdefault(str(name), {})["_FillValue"] = None
    return encoding


def write_netcdf(ds, path: str | Path) -> Path:
    """Write ``ds`` (from :func:`nowcast_dataset`) as netCDF4 to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path, engine="netcdf4", encoding=encoding_of(ds))
    return path


def netcdf_bytes(ds) -> bytes:
    """``ds`` as netCDF4 file bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        return write_netcdf(ds, Path(tmp) / "nowcast.nc").read_bytes()
