"""The job contract between the API and the workers: what a queued job holds, typed.

The route writes a :class:`JobRequest` (with the frames beside it in Redis, as model pixels:
``service.jobs``); the worker reads it back with the same model, so a field cannot be misspelt
on one side or defaulted differently on the other. Options left ``None`` take the served
checkpoint's defaults (``model.options.NowcastDefaults``), resolved in one place by the worker's
:class:`~model.nowcast.Nowcaster`; the result's metadata records the options as resolved.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class JobRequest(BaseModel):
    """A queued nowcast: its options, times and grid (the frames are stored beside it).

    Member ``k`` of a job with ``seed`` s starts from noise drawn by a generator seeded from the
    hash of ``(s, k)`` (``model.sampler.member_generator``): it is the same whatever other jobs
    share the worker's batch.
    """

    model_config = ConfigDict(extra="forbid")

    shape: list[int] = Field(description="[T, H, W] of the stored frames")
    unit: str = Field(description="unit the client sent; the frames are stored as model pixels")
    timestamps: list[dt.datetime] = Field(description="UTC time of each frame")
    step_minutes: int = Field(description="minutes between the frames (one the model serves)")
    members: int | None = None
    thresholds: list[float] | None = None
    guidance: float | None = None
    guidance_share: float | None = None
    seed: int = 0
    matching: Literal["cdf", "none"] | None = None
    advection: Literal["dense", "bulk", "none"] | None = None
    motion_spread: float | None = None
    detail_lifetime: float | None = None
    detail: Literal["fade", "renew"] | None = None
    extrapolation_lifetime: float | None = None
    blend_spread: float | None = None
    estimate_lifetime: float | None = None
    antithetic: bool | None = None
    grid_spacing_km: float | None = Field(None, description="cell size in km (the grid's, after resampling)")
    crs: str | None = Field(None, description="CRS of y and x (EPSG code, proj4 or WKT)")
    y: list[float] | None = Field(None, description="(H,) cell centres, row 0 first, in the CRS's units")
    x: list[float] | None = Field(None, description="(W,) cell centres")
    xy_units: str | None = Field(None, description="units of y and x: 'm' or 'degrees'")
    resampled: str | None = Field(None, description="how the input was area-averaged to the model's cells")
    source: str = "json"
    rain_min: float = Field(0.1, description="rain rates below this are dry (the checkpoint's transform)")
    zr_relation: str | None = None


class ResultMeta(BaseModel):
    """The metadata the worker stores with a result (and the renderers read)."""

    model_config = ConfigDict(extra="forbid")

    model_version: str
    timestep_minutes: int
    members: int
    guidance: float
    seed: int
    matching: str
    advection: str
    motion_spread: float
    detail_lifetime: float = 0.0  # results stored before the options existed have none
    extrapolation_lifetime: float = 0.0
    guidance_share: float = 1.0
    detail: str = "fade"
    blend_spread: float = 0.0
    estimate_lifetime: float = 0.0
    antithetic: bool = False
    steps: int
    batch_jobs: int
    worker: str
    attempts: int
    timings: dict[str, float]
    request: JobRequest
