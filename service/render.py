"""Render a decoded nowcast result as JSON, CF-netCDF, PNG or animated PNG.

A decoded result (``service.jobs.decode_result``) holds, all float32:

- ``members`` (K, T, H, W), ``mean`` (T, H, W), ``percentiles`` (3, T, H, W): rain rate in mm/h;
- ``probability`` (n_thresholds, T, H, W): P(R >= threshold), fraction of members;
- ``thresholds`` (n_thresholds,) mm/h and ``lead_minutes`` (T,); ``observed`` (H, W) mm/h, the
  last input frame (results stored before it was kept have none);
- ``meta``: :class:`~service.contract.ResultMeta` as a dict (model version, options, timings and
  the submitted ``request`` with its times and grid).

The netCDF is written by the one CF writer (:mod:`radar.cf`), as ``nowcast forecast`` writes it.
The PNG maps use the colour scales of :mod:`service.scales` (dry and 0 % transparent).
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

from model.grid import Grid
from model.options import OPTIONS, NowcastOptions
from model.products import PERCENTILES
from service import scales
from service.schemas import Array, ResultMetadata

ENCODINGS = ("base64", "list")
INSTITUTION = "nowcast service (STLDM)"
FRAME_MILLISECONDS = 600  # per lead time in the animated PNG


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
        thresholds=[round(float(x), 6) for x in np.asarray(result["thresholds"])],
        percentiles=list(PERCENTILES),
        timestep=int(meta["timestep_minutes"]),
        leadtimes=lead,
        forecast_reference_time=ref,
        valid_times=None if ref is None else [ref + dt.timedelta(minutes=m) for m in lead],
        n_members=int(meta.get("members") or np.asarray(result["members"]).shape[0]),
        shape=list(np.asarray(result["mean"]).shape[-2:]),
        grid_spacing_km=request.get("grid_spacing_km"),
        crs=request.get("crs"),
        resampled=request.get("resampled"),
        bounds=bounds_of(result),
        model_version=str(meta["model_version"]),
        seed=meta.get("seed"),
        **{name: meta.get(name) for name in OPTIONS if name not in ("members", "thresholds")},
        batch_jobs=meta.get("batch_jobs"),
        timings={k: float(v) for k, v in (meta.get("timings") or {}).items()},
    )


def encode_array(values: np.ndarray, encoding: str) -> Array | list[Any]:
    """float32 array -> base64 :class:`Array`, or nested lists with None for NaN."""
    if encoding == "base64":
        return Array.from_numpy(values)
    if encoding == "list":
        values = np.asarray(values, dtype=np.float32)
        cells = values.astype(object)
        cells[np.isnan(values)] = None
        return cast(list[Any], cells.tolist())
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


def grid_of(result: dict[str, Any]) -> Grid:
    """The :class:`~model.grid.Grid` of a result (from its request)."""
    request = result["meta"].get("request", {})
    shape = np.asarray(result["mean"]).shape[-2:]
    georeferenced = request.get("crs") and request.get("y") and request.get("x")
    return Grid(shape=(int(shape[0]), int(shape[1])), cell_km=request.get("grid_spacing_km"),
                crs=request.get("crs") if georeferenced else None,
                y=np.asarray(request["y"], np.float64) if georeferenced else None,
                x=np.asarray(request["x"], np.float64) if georeferenced else None,
                xy_units=request.get("xy_units"))


def bounds_of(result: dict[str, Any]) -> list[list[float]] | None:
    """[[south, west], [north, east]] in degrees of the result's cell edges, None without a CRS."""
    from radar.georef import edge_bounds, parse_crs

    grid = grid_of(result)
    if grid.crs is None or grid.y is None or grid.x is None or min(grid.shape) < 2:
        return None
    return edge_bounds(parse_crs(grid.crs), grid.y, grid.x)


@dataclass(frozen=True)
class StoredNowcast:
    """A stored result with the attributes the CF writer reads (as an
    :class:`~model.nowcast.EnsembleNowcast` has them), without loading torch in the API."""

    members: np.ndarray
    mean: np.ndarray
    percentiles: np.ndarray
    probability: np.ndarray
    thresholds: np.ndarray
    lead_minutes: np.ndarray
    step_minutes: int
    reference_time: dt.datetime | None
    grid: Grid
    options: NowcastOptions
    model_version: str
    percentile_levels: tuple[int, ...] = field(default=PERCENTILES)


def stored_nowcast(result: dict[str, Any]) -> StoredNowcast:
    meta = result["meta"]
    thresholds = tuple(float(t) for t in np.asarray(result["thresholds"]))
    # what results stored before an option existed had
    stored = {"members": np.asarray(result["members"]).shape[0], "steps": 0, "guidance": 0.0,
              "guidance_share": 1.0, "motion_spread": 0.0, "detail_lifetime": 0.0,
              "detail": "fade", "extrapolation_lifetime": 0.0, "blend_spread": 0.0,
              "estimate_lifetime": 0.0, "antithetic": False}
    options = NowcastOptions(seed=int(meta.get("seed") or 0), thresholds=thresholds, **{
        name: read(meta.get(name) if meta.get(name) is not None else stored.get(name))
        for name, read in OPTIONS.items() if name != "thresholds"})
    return StoredNowcast(
        members=np.asarray(result["members"], np.float32), mean=np.asarray(result["mean"], np.float32),
        percentiles=np.asarray(result["percentiles"], np.float32),
        probability=np.asarray(result["probability"], np.float32),
        thresholds=np.asarray(thresholds, np.float32), lead_minutes=np.asarray(result["lead_minutes"]),
        step_minutes=int(meta["timestep_minutes"]), reference_time=reference_time(result),
        grid=grid_of(result), options=options, model_version=str(meta["model_version"]))


def result_dataset(result: dict[str, Any]) -> xr.Dataset:
    """CF-1.8 ``xarray.Dataset`` of ``result``, by the one CF writer (:func:`radar.cf.nowcast_dataset`):
    the worker's own products, so the file says exactly what the JSON says."""
    from radar.cf import nowcast_dataset

    request = result["meta"].get("request", {})
    attrs: dict[str, Any] = {"precip_threshold_mm_h": float(request.get("rain_min", 0.1))}
    for key in ("zr_relation", "resampled"):
        if request.get(key):
            attrs[key] = str(request[key])
    dataset: xr.Dataset = nowcast_dataset(stored_nowcast(result), institution=INSTITUTION,
                                          history=f"input {request.get('source', 'json')}", attrs=attrs)
    return dataset


def result_netcdf(result: dict[str, Any]) -> bytes:
    """CF-netCDF4 bytes of ``result`` (zlib-compressed)."""
    from radar.cf import netcdf_bytes

    return netcdf_bytes(result_dataset(result))


def _lead_index(result: dict[str, Any], lead: int) -> int:
    leads = [int(x) for x in np.asarray(result["lead_minutes"])]
    if lead not in leads:
        raise ValueError(f"lead={lead} is not a lead time of this nowcast; valid leads (min): {leads}")
    return leads.index(lead)


def _graticule(ax: Axes, grid: Grid, extent: tuple[float, float, float, float], to_axis: float) -> None:
    """Lat/lon lines every 1, 2 or 5 degrees over a projected map."""
    from radar.georef import lonlat, parse_crs

    lat, lon = lonlat(parse_crs(str(grid.crs)), np.asarray(grid.y), np.asarray(grid.x))
    span = max(float(np.ptp(lat)), float(np.ptp(lon) * np.cos(np.radians(np.mean(lat)))))
    step = 1.0 if span < 8 else 2.0 if span < 20 else 5.0
    xs, ys = np.asarray(grid.x) / to_axis, np.asarray(grid.y) / to_axis
    style: dict[str, Any] = {"colors": "0.45", "linewidths": 0.5, "linestyles": "dotted"}
    for values, suffix in ((lat, "N"), (lon, "E")):
        levels = np.arange(np.floor(values.min() / step) * step, values.max() + step, step)
        lines = ax.contour(xs, ys, values, levels=levels, **style)
        ax.clabel(lines, fmt=lambda v, s=suffix: f"{v:g}°{s}", fontsize=7, inline=True)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])


def _figure(result: dict[str, Any], product: str, lead_index: int, threshold: float) -> Figure:
    """A matplotlib Figure of one product at one lead time, with legend, times and coordinates."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.figure import Figure

    scale = scales.scale_of(product)
    values = scales.field(result, product, lead_index=lead_index, threshold=threshold)
    info, grid = metadata(result), grid_of(result)
    fig = Figure(figsize=(7.2, 6.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    h, w = values.shape
    if grid.crs is not None and grid.y is not None and grid.x is not None:
        to_axis = 1.0 if grid.xy_units == "degrees" else 1000.0
        y, x = np.asarray(grid.y) / to_axis, np.asarray(grid.x) / to_axis
        dy, dx = abs(y[1] - y[0]) / 2, abs(x[1] - x[0]) / 2
        extent = (x.min() - dx, x.max() + dx, y.min() - dy, y.max() + dy)
        ax.imshow(scales.rgba(values, scale), extent=extent, origin="upper" if y[0] > y[-1] else "lower",
                  interpolation="nearest")
        unit = "degrees" if to_axis == 1.0 else "km"
        ax.set_xlabel(f"x ({unit})", fontsize=8)
        ax.set_ylabel(f"y ({unit})", fontsize=8)
        _graticule(ax, grid, extent, to_axis)
        ax.text(0.0, -0.14, f"CRS {grid.crs[:90]}", transform=ax.transAxes, fontsize=6, color="0.3")
    else:
        ax.imshow(scales.rgba(values, scale), interpolation="nearest")
        size = "" if not grid.cell_km else f" of {grid.cell_km:g} km"
        ax.set_xlabel(f"column ({w} cells{size})", fontsize=8)
        ax.set_ylabel("row", fontsize=8)
    ax.tick_params(labelsize=7)
    legend = scales.legend(scale, threshold=threshold)
    colours = [e["colour"] for e in legend["entries"]]
    if scale == "probability":
        bounds = [100 * v for v in scales.PROBABILITY_LEVELS] + [100]
        label = legend["title"] + " (%)"
    else:
        bounds = list(scales.RAIN_LEVELS) + [2 * scales.RAIN_LEVELS[-1]]
        label = legend["title"]
    bar = fig.colorbar(ScalarMappable(BoundaryNorm(bounds, len(colours)), ListedColormap(colours)), ax=ax,
                       spacing="uniform", ticks=bounds[:-1], shrink=0.85)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    names = {"mean": "ensemble mean", "p10": "10th percentile", "p50": "median (50th percentile)",
             "p90": "90th percentile", "probability": f"probability of >= {threshold:g} mm/h",
             "observed": "last observed frame"}
    ref = info.forecast_reference_time
    if product == "observed":
        when = "" if ref is None else f"observed {ref:%Y-%m-%d %H:%M} UTC"
    else:
        lead = info.leadtimes[lead_index]
        valid = ("" if info.valid_times is None
                 else f"valid {info.valid_times[lead_index]:%Y-%m-%d %H:%M} UTC, ")
        issued = "" if ref is None else f"issued {ref:%Y-%m-%d %H:%M} UTC"
        when = f"{valid}+{lead} min, {issued}"
    ax.set_title(f"{names[product]}\n{when}", fontsize=9)
    fig.text(0.01, 0.01, f"{info.model_version}, {info.n_members} members; {legend['transparent']} "
             "transparent, grey = no data", fontsize=6, color="0.3")
    return fig


def result_png(result: dict[str, Any], *, lead: int, product: str = "mean", threshold: float = 1.0) -> bytes:
    """PNG map of one product at one lead time: colour scale and legend of :mod:`service.scales`,
    issue and valid times, coordinates and a lat/lon graticule; dry and 0 % transparent.

    Raises
    ------
    ValueError
        ``product`` not in ``scales.PRODUCTS``, a ``lead`` (minutes) not among the result's lead
        times, or a ``threshold`` not among the result's thresholds.
    """
    scales.scale_of(product)
    fig = _figure(result, product, _lead_index(result, lead), threshold)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", transparent=True)
    return buffer.getvalue()


def result_apng(result: dict[str, Any], *, product: str = "mean", threshold: float = 1.0) -> bytes:
    """Animated PNG over every lead time of one product (:func:`result_png`'s frames)."""
    from PIL import Image

    if scales.scale_of(product) and product == "observed":
        raise ValueError("the observation is one frame; animate a forecast product: "
                         f"{[p for p in scales.PRODUCTS if p != 'observed']}")
    frames = []
    for i in range(len(np.asarray(result["lead_minutes"]))):
        buffer = io.BytesIO()
        _figure(result, product, i, threshold).savefig(buffer, format="png", transparent=True)
        frames.append(Image.open(io.BytesIO(buffer.getvalue())).convert("RGBA"))
    out = io.BytesIO()
    frames[0].save(out, format="PNG", save_all=True, append_images=frames[1:], duration=FRAME_MILLISECONDS,
                   loop=0, disposal=1)
    return out.getvalue()
