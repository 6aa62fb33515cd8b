"""Map layers of a finished nowcast for the viewer (API keys as for the rest of ``/v1/nowcasts``).

- ``GET /v1/nowcasts/{id}/map``: where the result goes on the map (bounds), its times (issue,
  valid, input age, stale or not), products, thresholds and legends;
- ``GET /v1/nowcasts/{id}/overlay``: one product at one lead time as a transparent PNG in Web
  Mercator between the map's bounds (:mod:`service.maps`);
- ``GET /v1/nowcasts/{id}/point``: the members' time series (plume) and the exceedance
  probabilities at a cell, found by lat/lon or by row/column.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from redis.asyncio import Redis

from model.grid import Grid
from service import maps, render, scales
from service.deps import RedisDep, SettingsDep
from service.routes_nowcasts import RESULT_RESPONSES, JobId, done_result
from service.settings import Settings

router = APIRouter(prefix="/v1/nowcasts", tags=["maps"])

Product = Literal[scales.PRODUCTS]  # type: ignore[valid-type]


async def _loaded(request: Request, redis: Redis, settings: Settings,
                  job_id: str) -> tuple[dict[str, Any], Grid, maps.MapLayout]:
    cache: maps.ResultCache = request.app.state.result_cache
    item = cache.get(job_id)
    if item is None:
        result = await done_result(redis, settings, job_id)
        grid = render.grid_of(result)
        item = (result, grid, await run_in_threadpool(maps.map_layout, grid))
        cache.put(job_id, item)
    return item


@router.get("/{job_id}/map", responses=RESULT_RESPONSES)
async def get_nowcast_map(job_id: JobId, request: Request, redis: RedisDep,
                          settings: SettingsDep) -> dict[str, Any]:
    """Bounds, times, products and legends of a finished nowcast's map layers."""
    result, grid, layout = await _loaded(request, redis, settings, job_id)
    info = render.metadata(result)
    ref = info.forecast_reference_time
    age = None if ref is None else (dt.datetime.now(dt.timezone.utc) - ref).total_seconds() / 60
    products = [p for p in scales.PRODUCTS if p != "observed" or "observed" in result]
    return {
        "id": job_id, "georeferenced": layout.georeferenced, "bounds": layout.bounds,
        "overlay_size": list(layout.index.shape), "crs": grid.crs, "cell_km": grid.cell_km,
        "resampled": info.resampled, "shape": info.shape, "lead_minutes": info.leadtimes,
        "valid_times": info.valid_times, "forecast_reference_time": ref,
        "input_age_minutes": None if age is None else round(age, 1),
        "stale": age is not None and age > settings.ui.stale_minutes,
        "stale_minutes": settings.ui.stale_minutes, "thresholds": info.thresholds,
        "products": products, "model_version": info.model_version, "members": info.n_members,
        "steps": info.steps, "advection": info.advection,
        "legends": {"rain": scales.legend("rain"), "probability": scales.legend("probability")},
    }


@router.get("/{job_id}/overlay", response_class=Response,
            responses={200: {"content": {"image/png": {}}}, **RESULT_RESPONSES})
async def get_nowcast_overlay(
    job_id: JobId, request: Request, redis: RedisDep, settings: SettingsDep,
    product: Annotated[Product, Query(description="mean, p10, p50, p90, probability or observed")] = "mean",
    lead: Annotated[int | None, Query(description="lead time in minutes (default: the first)")] = None,
    threshold: Annotated[float, Query(description="mm/h, for product=probability")] = 1.0,
) -> Response:
    """One product at one lead time as a transparent Web Mercator PNG for the map (``/map`` bounds)."""
    result, _, layout = await _loaded(request, redis, settings, job_id)
    leads = [int(v) for v in np.asarray(result["lead_minutes"])]
    lead = leads[0] if lead is None else lead
    if lead not in leads:
        raise HTTPException(422, f"lead={lead} is not a lead time of this nowcast; valid leads (min): "
                                 f"{leads}")
    try:
        values = scales.field(result, product, lead_index=leads.index(lead), threshold=threshold)
    except ValueError as err:
        raise HTTPException(422, str(err)) from err
    png = await run_in_threadpool(maps.overlay_png, values, scales.scale_of(product), layout)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/{job_id}/point", responses=RESULT_RESPONSES)
async def get_nowcast_point(
    job_id: JobId, request: Request, redis: RedisDep, settings: SettingsDep,
    lat: Annotated[float | None, Query(ge=-90, le=90)] = None,
    lon: Annotated[float | None, Query(ge=-360, le=360)] = None,
    row: Annotated[int | None, Query(ge=0)] = None,
    col: Annotated[int | None, Query(ge=0)] = None,
) -> dict[str, Any]:
    """Members' rain rate (plume), mean, percentiles and P(R >= threshold) per lead time at a cell."""
    result, grid, _ = await _loaded(request, redis, settings, job_id)
    try:
        r, c = maps.cell_at(grid, lat=lat, lon=lon, row=row, col=col)
    except ValueError as err:
        raise HTTPException(422, str(err)) from err
    return {"id": job_id, **maps.point_series(result, grid, r, c)}
