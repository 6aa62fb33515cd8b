"""Render a decoded nowcast result as JSON, CF-netCDF or PNG.

A decoded result (``service.jobs.decode_result``) holds, all float32:

- ``members`` (K, T, H, W), ``mean`` (T, H, W), ``percentiles`` (3, T, H, W): rain rate in mm/h;
- ``probability`` (n_thresholds, T, H, W): P(R >= threshold), fraction of members;
- ``thresholds`` (n_thresholds,) mm/h and ``lead_minutes`` (T,);
- ``meta``: model_version, timestep_minutes, members, guidance, seed, timings and the
  submitted ``request`` (timestamps, grid spacing, projection, coordinates).
"""

from __future__ import annotations

import datetime as dt
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from model.products import PERCENTILES, ensemble_dataset
from service.schemas import Array, ResultMetadata

PRODUCTS = ("mean", "probability")
ENCODINGS = ("base64", "list")
INSTITUTION = "nowcast service (STLDM)"
# Rain-rate colour levels in mm/h, as on operational radar maps.
RAIN_LEVELS = (0.1, 0.5, 1, 2, 5, 10, 20, 50, 100, 200)


def reference_time(result: dict[str, Any]) -> dt.datetime | None:
    """Time of the last input frame (the forecast reference time), UTC, or None."""
    stamps = result["meta"].get("request", {}).get("timestamps") or []
    if not stamps:
        return None
    time = dt.datetime.fromisoformat(str(stamps[-1]).replace("Z", "+00:00"))
    return time.replace(tzinfo=dt.timezone.utc) if time.tzinfo is None else time


def metadata(result: dict[str, Any]) -> ResultMetadata:
    """pysteps-style metadata of ``result`` (unit, thresholds, zerovalue, timestep, grid ...)."""
    meta, request = result["meta"], result["meta"].get("request", {})
    ref = reference_time(result)
    lead = [int(x) for x in np.asarray(result["lead_minutes"])]
    return ResultMetadata(
        threshold=float(request.get("rain_min", 0.1)),
        zr_relation=request.get("zr_relation"),
        thresholds=[float(x) for x in np.asarray(result["thresholds"])],
        percentiles=list(PERCENTILES),
        timestep=int(meta["timestep_minutes"]),
        leadtimes=lead,
        forecast_reference_time=ref,
        valid_times=None if ref is None else [ref + dt.timedelta(minutes=m) for m in lead],
        n_members=int(np.asarray(result["members"]).shape[0]),
        shape=list(np.asarray(result["mean"]).shape[-2:]),
        grid_spacing_km=request.get("grid_spacing_km"),
        projection=request.get("projection"),
        model_version=str(meta["model_version"]),
        guidance=meta.get("guidance"),
        seed=meta.get("seed"),
        matching=meta.get("matching"),
        advection=meta.get("advection"),
        batch_jobs=meta.get("batch_jobs"),
        timings={k: float(v) for k, v in (meta.get("timings") or {}).items()},
    )


def encode_array(values: np.ndarray, encoding: str) -> Array | list:
    """float32 array -> base64 :class:`Array`, or nested lists with None for NaN."""
    if encoding == "base64":
        return Array.from_numpy(values)
    if encoding == "list":
        values = np.asarray(values, dtype=np.float32)
        cells = values.astype(object)
        cells[np.isnan(values)] = None
        return cells.tolist()
    raise ValueError(f"unknown encoding {encoding!r}; valid encodings: {list(ENCODINGS)}")


def result_json(job_id: str, result: dict[str, Any], *, members: bool = False,
                encoding: str = "base64") -> dict[str, Any]:
    """The JSON body of ``GET /v1/nowcasts/{id}/result`` (see ``schemas.NowcastResult``)."""
    body: dict[str, Any] = {
        "id": job_id,
        "metadata": metadata(result).model_dump(mode="json"),
        "mean": encode_array(result["mean"], encoding),
        "percentiles": encode_array(result["percentiles"], encoding),
        "probability": encode_array(result["probability"], encoding),
        "members": encode_array(result["members"], encoding) if members else None,
    }
    return {k: v.model_dump() if isinstance(v, Array) else v for k, v in body.items()}


def result_dataset(result: dict[str, Any]):
    """CF-1.8 ``xarray.Dataset`` in the layout of ``model.products.ensemble_dataset``.

    The layout comes from ``ensemble_dataset``; the mean, percentiles and probabilities are
    then replaced by the worker's own (post-processed) products, so the file says exactly
    what the JSON says.
    """
    meta, request = result["meta"], result["meta"].get("request", {})
    ref = reference_time(result)
    members = np.asarray(result["members"], dtype=np.float32)
    y = np.asarray(request["y"]) if request.get("y") else None
    x = np.asarray(request["x"]) if request.get("x") else None
    ds = ensemble_dataset(
        members, timestep_minutes=int(meta["timestep_minutes"]),
        reference_time=None if ref is None else np.datetime64(ref.replace(tzinfo=None), "ns"),
        thresholds=[float(t) for t in np.asarray(result["thresholds"])],
        model_version=str(meta["model_version"]), y=y, x=x,
    )
    ds["precipitation_rate_mean"].values[...] = result["mean"]
    ds["precipitation_rate_percentile"].values[...] = result["percentiles"]
    ds["probability_of_lwe_precipitation_rate_above_threshold"].values[...] = result["probability"]

    units = request.get("coordinate_units") or ("m" if x is not None else "1")
    ds["x"].attrs.update(standard_name="projection_x_coordinate", units=units)
    ds["y"].attrs.update(standard_name="projection_y_coordinate", units=units)
    ds["time"].attrs.update(standard_name="time")
    ds["forecast_period"].attrs.update(standard_name="forecast_period")
    ds["forecast_reference_time"].attrs.update(standard_name="forecast_reference_time")
    ds["realization"].attrs.update(standard_name="realization", units="1")
    ds["percentile"].attrs.update(units="%")
    ds["probability_of_lwe_precipitation_rate_above_threshold"].attrs.update(
        long_name="probability of rain rate at or above threshold (fraction of members)")
    if request.get("projection"):
        ds["projection"] = ((), np.int32(0), _grid_mapping(request["projection"]))
        for name in ds.data_vars:
            if name != "projection":
                ds[name].attrs["grid_mapping"] = "projection"
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    ds.attrs.update(
        institution=INSTITUTION,
        history=f"{now} nowcast by {meta['model_version']} ({meta.get('members')} members, "
                f"guidance {meta.get('guidance')}, seed {meta.get('seed')}, "
                f"matching {meta.get('matching')}, advection {meta.get('advection')})",
        zerovalue=0.0,
        precip_threshold_mm_h=float(request.get("rain_min", 0.1)),
    )
    if request.get("zr_relation"):
        ds.attrs["zr_relation"] = request["zr_relation"]
    if request.get("grid_spacing_km"):
        ds.attrs["grid_spacing_km"] = float(request["grid_spacing_km"])
    return ds


def _grid_mapping(projection: str) -> dict[str, str]:
    key = "proj4" if projection.lstrip().startswith("+") else "crs_wkt"
    return {"grid_mapping_name": "unknown", key: projection}


def result_netcdf(result: dict[str, Any]) -> bytes:
    """CF-netCDF4 bytes of ``result`` (zlib-compressed)."""
    ds = result_dataset(result)
    encoding: dict[str, dict[str, Any]] = {
        name: {"zlib": True, "complevel": 4} for name in ds.data_vars if name != "projection"}
    encoding["time"] = {"units": "seconds since 1970-01-01 00:00:00", "dtype": "int64"}
    encoding["forecast_reference_time"] = {"units": "seconds since 1970-01-01 00:00:00",
                                           "dtype": "int64"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "nowcast.nc"
        ds.to_netcdf(path, engine="netcdf4", encoding=encoding)
        return path.read_bytes()


def result_png(result: dict[str, Any], *, lead: int, product: str = "mean",
               threshold: float = 1.0) -> bytes:
    """PNG map of one lead time: the ensemble mean (mm/h) or P(R >= threshold).

    Raises
    ------
    ValueError
        ``product`` not in ``PRODUCTS``, a ``lead`` (minutes) not among the result's lead
        times, or a ``threshold`` not among the result's thresholds.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import BoundaryNorm
    from matplotlib.figure import Figure

    leads = [int(x) for x in np.asarray(result["lead_minutes"])]
    if lead not in leads:
        raise ValueError(f"lead={lead} is not a lead time of this nowcast; valid leads (min): {leads}")
    if product not in PRODUCTS:
        raise ValueError(f"unknown product {product!r}; valid products: {list(PRODUCTS)}")
    i = leads.index(lead)
    fig = Figure(figsize=(6, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    info = metadata(result)
    valid = "" if info.valid_times is None else f", valid {info.valid_times[i]:%Y-%m-%d %H:%M} UTC"
    if product == "mean":
        cmap = colormaps["viridis"].with_extremes(under="white", bad="0.85")  # dry white, no data grey
        image = ax.imshow(result["mean"][i], cmap=cmap, interpolation="nearest",
                          norm=BoundaryNorm(RAIN_LEVELS, cmap.N, extend="max"))
        fig.colorbar(image, ax=ax, label="rain rate (mm/h)")
        ax.set_title(f"ensemble mean, +{lead} min{valid}", fontsize=9)
    else:
        thresholds = [float(x) for x in np.asarray(result["thresholds"])]
        match = [k for k, t in enumerate(thresholds) if np.isclose(t, threshold)]
        if not match:
            raise ValueError(f"threshold={threshold} is not in this nowcast; valid thresholds (mm/h): "
                             f"{thresholds}")
        cmap = colormaps["Blues"].with_extremes(bad="0.85")
        image = ax.imshow(result["probability"][match[0], i], cmap=cmap, vmin=0.0, vmax=1.0,
                          interpolation="nearest")
        fig.colorbar(image, ax=ax, label=f"P(R >= {threshold:g} mm/h)")
        ax.set_title(f"probability of >= {threshold:g} mm/h, +{lead} min{valid}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(info.model_version, fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
