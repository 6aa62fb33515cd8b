"""CF-netCDF radar files: the variable is found by its ``standard_name``.

Preference (first found): ``equivalent_reflectivity_factor`` (dBZ), ``lwe_precipitation_rate``
or ``rainfall_rate`` (mm/h, or any rate unit of :data:`radar.frames.RATE_UNITS`),
``precipitation_flux`` (kg m-2 s-1), then the accumulations ``lwe_thickness_of_precipitation_amount``,
``thickness_of_rainfall_amount`` and ``precipitation_amount`` (mm or kg m-2 over the time
bounds or the time step). Files without standard names are read when they use the project's
variable names (``reflectivity``, ``rain_rate``: ``../shared/radar/README.md``).

The grid: the variable's ``grid_mapping`` (``pyproj.CRS.from_cf``), else lat/lon coordinates
(EPSG:4326), else a ``projection_proj4``, ``crs_wkt`` or ``spatial_ref`` global attribute.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from radar.frames import ACCUMULATION, RATE, REFLECTIVITY, Frames, north_up, to_unit

STANDARD_NAMES = (
    ("equivalent_reflectivity_factor", REFLECTIVITY),
    ("lwe_precipitation_rate", RATE),
    ("rainfall_rate", RATE),
    ("precipitation_flux", RATE),
    ("lwe_thickness_of_precipitation_amount", ACCUMULATION),
    ("thickness_of_rainfall_amount", ACCUMULATION),
    ("precipitation_amount", ACCUMULATION),
)
PROJECT_NAMES = (("reflectivity", REFLECTIVITY), ("rain_rate", RATE))
Y_NAMES = ("projection_y_coordinate", "latitude", "grid_latitude")
X_NAMES = ("projection_x_coordinate", "longitude", "grid_longitude")


def pick_variable(ds, source: str) -> tuple[str, str]:
    """(variable name, quantity kind) of the radar variable of ``ds``; ``ValueError`` listing what
    the file has when none qualifies."""
    for standard_name, kind in STANDARD_NAMES:
        for name, var in ds.data_vars.items():
            if var.attrs.get("standard_name") == standard_name and var.ndim >= 2:
                return str(name), kind
    for wanted, kind in PROJECT_NAMES:
        if wanted in ds.data_vars and ds[wanted].ndim >= 2:
            return wanted, kind
    found = {str(n): v.attrs.get("standard_name", "-") for n, v in ds.data_vars.items()}
    raise ValueError(
        f"{source}: no radar variable: need a standard_name among "
        f"{[s for s, _ in STANDARD_NAMES]} (or a variable named 'reflectivity' or 'rain_rate'); "
        f"the file has (variable: standard_name) {found}")


def _axes(ds, var, time_dim: str | None) -> tuple[str, str]:
    others = [str(d) for d in var.dims if d != time_dim]
    if len(others) != 2:
        raise ValueError(f"variable {var.name!r} must have dims (time, y, x), got {var.dims}")

    def role(dim: str) -> str | None:
        attrs = ds[dim].attrs if dim in ds.variables else {}
        name = attrs.get("standard_name")
        if attrs.get("axis") == "Y" or name in Y_NAMES or dim in ("y", "lat", "latitude"):
            return "y"
        if attrs.get("axis") == "X" or name in X_NAMES or dim in ("x", "lon", "longitude"):
            return "x"
        return None

    roles = {role(d): d for d in others}
    if set(roles) == {"y", "x"}:
        return roles["y"], roles["x"]
    return others[0], others[1]  # CF's usual order (..., y, x)


def _time_dim(ds, var) -> str | None:
    for dim in var.dims:
        attrs = ds[dim].attrs if dim in ds.variables else {}
        if dim == "time" or attrs.get("standard_name") == "time" or attrs.get("axis") == "T":
            return str(dim)
    return None


def _times(values) -> list[dt.datetime]:
    stamps = np.asarray(values)
    if not np.issubdtype(stamps.dtype, np.datetime64):
        raise ValueError("the time coordinate is not a CF time (units 'seconds since ...')")
    return [dt.datetime.fromisoformat(str(np.datetime_as_string(t, unit="s"))).replace(tzinfo=dt.timezone.utc)
            for t in stamps.astype("datetime64[s]")]


def _crs(ds, var, y_name: str, x_name: str) -> str | None:
    from radar.georef import crs_text, parse_crs

    mapping = var.attrs.get("grid_mapping")
    if mapping:
        from pyproj import CRS
        from pyproj.exceptions import CRSError

        name = str(mapping).split(":")[0].strip()
        if name not in ds.variables:
            raise ValueError(f"variable {var.name!r} names grid_mapping {name!r}, which the file lacks")
        try:
            return crs_text(CRS.from_cf(dict(ds[name].attrs)))
        except CRSError as err:
            raise ValueError(f"grid mapping {name!r} is not one pyproj can read ({err})") from err
    y_attrs = ds[y_name].attrs if y_name in ds.variables else {}
    x_attrs = ds[x_name].attrs if x_name in ds.variables else {}
    def degrees(attrs: dict, name: str) -> bool:
        return attrs.get("standard_name") == name or str(attrs.get("units", "")).startswith("degree")

    if degrees(y_attrs, "latitude") and degrees(x_attrs, "longitude"):
        return "EPSG:4326"
    for key in ("projection_proj4", "crs_wkt", "spatial_ref", "proj4"):
        if ds.attrs.get(key):
            return crs_text(parse_crs(str(ds.attrs[key])))
    return None


def _coordinate(ds, name: str) -> np.ndarray | None:
    if name not in ds.coords:
        return None
    values = np.asarray(ds[name].values, dtype=np.float64)
    if str(ds[name].attrs.get("units", "")).strip() == "km":
        values = values * 1000.0
    return values if values.ndim == 1 else None


def _accumulation_minutes(ds, time_dim: str | None, times: list[dt.datetime]) -> float | None:
    if time_dim is not None and ds[time_dim].attrs.get("bounds") in ds.variables:
        bounds = np.asarray(ds[ds[time_dim].attrs["bounds"]].values)
        return float((bounds[-1, 1] - bounds[-1, 0]) / np.timedelta64(1, "m"))
    if len(times) > 1:
        return (times[-1] - times[-2]).total_seconds() / 60
    return float(ds.attrs["time_step_minutes"]) if "time_step_minutes" in ds.attrs else None


def read_cf(path: str | Path, source: str) -> Frames:
    """The radar variable of a CF-netCDF file as :class:`~radar.frames.Frames` (module docstring)."""
    import xarray as xr

    try:
        ds = xr.open_dataset(path, engine="netcdf4")
    except (OSError, ValueError) as err:
        raise ValueError(f"{source}: not a readable netCDF file ({err})") from err
    with ds:
        name, kind = pick_variable(ds, source)
        var = ds[name]
        time_dim = _time_dim(ds, var)
        if time_dim is None:
            if var.ndim != 2 or "time" not in ds.coords or ds["time"].ndim != 0:
                raise ValueError(f"{source}: variable {name!r} has no time dimension and the file no "
                                 "scalar time coordinate")
            var = var.expand_dims("time")
            times = _times(np.atleast_1d(ds["time"].values))
        else:
            times = _times(var[time_dim].values)
        y_name, x_name = _axes(ds, var, time_dim or "time")
        var = var.transpose(time_dim or "time", y_name, x_name)
        values = np.asarray(var.values, dtype=np.float32)
        values, unit = to_unit(values, kind, str(var.attrs.get("units", "")), what=f"{source}: {name!r}",
                               accumulation_minutes=_accumulation_minutes(ds, time_dim, times))
        crs = _crs(ds, ds[name], y_name, x_name)
        y, x = _coordinate(ds, y_name), _coordinate(ds, x_name)
        quantity = str(ds[name].attrs.get("standard_name") or name)
    values, y = north_up(values, y)
    return Frames(values=values, times=times, unit=unit, crs=crs, y=y, x=x, quantity=quantity)
