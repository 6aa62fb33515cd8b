"""pydantic schemas of the HTTP API: nowcast request, job status, result.

Arrays travel as :class:`Array` objects (base64 of little-endian float32 plus shape and dtype),
or as nested lists where a client asks for them. Results carry pysteps-style metadata (unit,
thresholds, zero value, timestep, lead times, members, grid, CRS, model version).
"""

from __future__ import annotations

import base64
import datetime as dt
import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from model.options import MAX_LIFETIME
from model.products import DEFAULT_THRESHOLDS
from model.transform import UNITS

Unit = Literal["dBZ", "mm/h", "pixel"]
NestedFrames = list[list[list[float | None]]]
MAX_THRESHOLDS = 16
MAX_THRESHOLD_MM_H = 1000.0  # a rain rate no radar measures; thresholds above it are typos
MAX_GRID_SPACING_KM = 100.0
Threshold = Annotated[float, Field(ge=0.0, le=MAX_THRESHOLD_MM_H)]
MAX_COORDINATE = 1e8  # metres (or degrees): beyond any radar grid
Coordinate = Annotated[float, Field(ge=-MAX_COORDINATE, le=MAX_COORDINATE)]


class Array(BaseModel):
    """An n-d array as base64 of its little-endian float32 bytes, C order."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(description="base64 of the little-endian float32 values, C order")
    shape: list[int] = Field(description="array shape, e.g. [T, H, W]")
    dtype: str = Field("float32", description="must be 'float32'")

    @classmethod
    def from_numpy(cls, values: np.ndarray) -> Array:
        values = np.ascontiguousarray(values, dtype="<f4")
        return cls(data=base64.b64encode(values.tobytes()).decode("ascii"), shape=list(values.shape),
                   dtype="float32")

    def to_numpy(self) -> np.ndarray:
        """The float32 array; ``ValueError`` naming the problem when the fields disagree."""
        if self.dtype != "float32":
            raise ValueError(f"frames.dtype must be 'float32', got {self.dtype!r}")
        if any(n < 0 for n in self.shape):
            raise ValueError(f"frames.shape must not be negative, got {self.shape}")
        try:
            raw = base64.b64decode(self.data, validate=True)
        except ValueError as err:
            raise ValueError(f"frames.data is not valid base64 ({err})") from err
        expected = math.prod(self.shape) * 4
        if len(raw) != expected:
            raise ValueError(
                f"frames.data has {len(raw)} bytes but shape {self.shape} of float32 needs {expected}"
            )
        return np.frombuffer(raw, dtype="<f4").reshape(self.shape).astype(np.float32)


class NowcastOptions(BaseModel):
    """Ensemble options; the same names as the worker's and the model's arguments. An option
    left out takes the served checkpoint's default (``GET /v1/model``, ``defaults``). Numbers
    are finite: ``NaN`` and ``Infinity`` are refused (strict JSON has neither)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    members: int | None = Field(None, ge=1, description="ensemble size (1 .. model.max_members)")
    thresholds: list[Threshold] | None = Field(
        None, min_length=1, max_length=MAX_THRESHOLDS,
        description=f"rain-rate thresholds of the exceedance probabilities, mm/h (default "
        f"{list(DEFAULT_THRESHOLDS)} unless the checkpoint says otherwise)",
    )
    guidance: float | None = Field(None, ge=0.0, le=10.0, description="classifier-free guidance scale")
    guidance_share: float | None = Field(
        None, ge=0.0, le=1.0, description="share of the DDIM steps, the noisiest first, that apply "
        "guidance; the others skip its second network pass (1: every step, as the STLDM paper)")
    seed: int = Field(0, ge=0, lt=2**63, description="seed of the request: member k starts from noise "
                      "drawn by a generator seeded from the hash of (seed, k), whatever else the worker "
                      "batches with it")
    matching: Literal["cdf", "none"] | None = Field(
        None, description="'cdf': each member's rain-rate distribution is matched to the last "
        "input frame's (pysteps probability matching; restores intensities the latent model "
        "smooths away); 'none': members as sampled",
    )
    advection: Literal["dense", "bulk", "none"] | None = Field(
        None, description="'dense': the model forecasts in the frame moving with the motion field of "
        "the input frames (pysteps Lucas-Kanade) and every lead is advected back along it "
        "(model/lagrangian.py); 'bulk': with one velocity per request (model/advection.py); "
        "'none': on the ground, as the STLDM paper",
    )
    motion_spread: float | None = Field(
        None, ge=0.0, le=10.0, description="with advection 'dense', the size of the member-wise "
        "motion perturbations (STEPS' bps; 1.0: pysteps' sizes, 0: none); left out, the checkpoint's "
        "size for the request's time step (GET /v1/model, defaults.motion_spread_by_step)",
    )
    detail_lifetime: float | None = Field(
        None, ge=0.0, le=MAX_LIFETIME, description="minutes over which the detail of the last input frame "
        "that the model's autoencoder does not reproduce (small cells, sharp edges) fades from the "
        "members: it is added back to every member in the forecast frame with weight "
        "exp(-lead / detail_lifetime); 0: members as decoded",
    )
    detail: Literal["fade", "renew"] | None = Field(
        None, description="how that detail enters the members: 'fade', the same in every member, "
        "fading as above; 'renew', each member's own, starting from the observed detail and renewed "
        "with noise of its spectrum and local amplitude (as STEPS' small scales), its correlation "
        "with the observed detail exp(-lead / detail_lifetime)",
    )
    extrapolation_lifetime: float | None = Field(
        None, ge=0.0, le=MAX_LIFETIME, description="minutes over which the members go from the extrapolation "
        "of the last input frame (along the motion field) to the model's forecast: lead l is w * "
        "extrapolation + (1 - w) * member with w = exp(-l / extrapolation_lifetime); 0: the model's "
        "members alone",
    )
    blend_spread: float | None = Field(
        None, ge=0.0, le=1.0, description="how much of the members' own spread that blend keeps: their "
        "departures from the ensemble mean enter lead l with weight max(1 - w, blend_spread * "
        "sqrt(1 - w^2)), as an AR(1) process keeps its innovations, instead of 1 - w; 0: 1 - w "
        "(the members spread little at the first leads)",
    )
    estimate_lifetime: float | None = Field(
        None, ge=0.0, le=MAX_LIFETIME, description="minutes over which that blend's target goes from the "
        "last input frame to the model's first estimate (where the rain is taken from): the target of "
        "lead l is v * extrapolation + (1 - v) * first estimate with v = exp(-l / estimate_lifetime); "
        "0: the extrapolation at every lead",
    )
    antithetic: bool | None = Field(
        None, description="members in mirrored pairs: member 2j+1 starts from the negated noise of member "
        "2j, with its opposite motion perturbation and negated detail innovations, so each pair is "
        "centred on the unperturbed forecast; false: every member draws its own (an odd last member "
        "always does)",
    )
    resample: bool = Field(
        False, description="area-mean blocks of cells to come near the model's cell size (GET /v1/model, "
        "cell_km) when the grid is finer; without it a grid far from that size is refused (422). The "
        "result's metadata says when it was resampled")
    idempotency_key: str | None = Field(
        None, min_length=1, max_length=200,
        description="repeat submissions with the same key return the same job "
        "(also accepted as the Idempotency-Key header)",
    )

    @field_validator("thresholds")
    @classmethod
    def _finite_non_negative(cls, value: list[float] | None) -> list[float] | None:
        bad = [v for v in value or [] if not math.isfinite(v) or not 0 <= v <= MAX_THRESHOLD_MM_H]
        if bad:
            raise ValueError(f"thresholds must be finite rain rates in [0, {MAX_THRESHOLD_MM_H:g}] mm/h, "
                             f"got {bad}")
        return value


class GridSpec(BaseModel):
    """Where the cells are: a CRS and either the cell-centre coordinates or the first cell's
    centre and the spacing (``x_j = x0 + j dx``, ``y_i = y0 + i dy``; north-up grids have dy < 0).
    Coordinates are in the CRS's units: metres for projected CRSs, degrees for lat/lon; finite,
    within +-1e8 (no radar grid reaches further)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    crs: str = Field(max_length=8000, description="EPSG code ('EPSG:3067'), WKT or proj4 string",
                     examples=["EPSG:3067"])
    x: list[Coordinate] | None = Field(None, description="(W,) cell-centre x coordinates")
    y: list[Coordinate] | None = Field(None, description="(H,) cell-centre y coordinates, row 0 first")
    x0: Coordinate | None = Field(None, description="x of the centre of column 0")
    y0: Coordinate | None = Field(None, description="y of the centre of row 0")
    dx: Coordinate | None = Field(None, description="x step per column")
    dy: Coordinate | None = Field(None, description="y step per row (negative when row 0 is the "
                                  "northernmost)")

    def coordinates(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(y (H,), x (W,)) for a grid of ``shape``; ``ValueError`` naming what is missing or wrong."""
        h, w = shape
        if self.x is not None or self.y is not None:
            if self.x is None or self.y is None or len(self.y) != h or len(self.x) != w:
                raise ValueError(f"grid.y and grid.x must hold H={h} and W={w} coordinates, got "
                                 f"{None if self.y is None else len(self.y)} and "
                                 f"{None if self.x is None else len(self.x)}")
            return np.asarray(self.y, np.float64), np.asarray(self.x, np.float64)
        corner = (self.x0, self.y0, self.dx, self.dy)
        if any(v is None for v in corner) or not self.dx or not self.dy:
            raise ValueError("grid needs either x and y, or x0, y0 and non-zero dx, dy")
        return (float(self.y0) + float(self.dy) * np.arange(h),  # type: ignore[arg-type]
                float(self.x0) + float(self.dx) * np.arange(w))  # type: ignore[arg-type]


class NowcastRequest(NowcastOptions):
    """``POST /v1/nowcasts`` JSON body: the last ``t_in`` radar frames and options."""

    frames: Array | NestedFrames = Field(
        description="(T_in, H, W) frames in `unit`; NaN (or null in lists) = no data"
    )
    unit: Unit = Field(description=f"unit of the frames, one of {UNITS}")
    timestamps: list[dt.datetime] = Field(
        description="ISO 8601 time of each frame (UTC when no offset), increasing by one of the steps "
        "the model serves (GET /v1/model, step_minutes)"
    )
    grid_spacing_km: float | None = Field(None, gt=0, le=MAX_GRID_SPACING_KM,
                                          description="cell size in km, when no grid is given")
    grid: GridSpec | None = Field(None, description="CRS and coordinates of the cells: the result "
                                  "gets a CF grid mapping, lat/lon and a map in the viewer")


class SubmitResponse(BaseModel):
    id: str
    status: str
    status_url: str
    result_url: str


class JobStatus(BaseModel):
    """``GET /v1/nowcasts/{id}``: where a job is and how long it took."""

    id: str
    status: str = Field(description="queued, running, done or failed")
    queue_position: int | None = Field(None, description="0 = next to run; only while queued")
    created: dt.datetime | None = None
    started: dt.datetime | None = None
    finished: dt.datetime | None = None
    queued_seconds: float | None = Field(None, description="created -> started (or now)")
    run_seconds: float | None = Field(None, description="started -> finished (or now)")
    attempts: int = 0
    model_version: str | None = None
    error: str | None = None
    result_url: str | None = None


class JobSummary(BaseModel):
    """One line of ``GET /v1/nowcasts``: a job, what it was made from and where it stands."""

    id: str
    status: str
    created: dt.datetime | None = None
    finished: dt.datetime | None = None
    source: str | None = Field(None, description="what was sent: json, or the uploaded file's name")
    forecast_reference_time: dt.datetime | None = Field(None, description="time of the last input frame")
    members: int | None = None
    model_version: str | None = None
    error: str | None = None
    status_url: str


class JobList(BaseModel):
    """``GET /v1/nowcasts``: the newest jobs first."""

    jobs: list[JobSummary]


class ResultMetadata(BaseModel):
    """pysteps-style metadata of a nowcast result."""

    unit: str = "mm/h"
    transform: str | None = None
    zerovalue: float = 0.0
    threshold: float = Field(0.1, description="rain rates below this are dry (mm/h)")
    zr_relation: str | None = Field(None, description="Z-R relation of the model's data transform")
    thresholds: list[float] = Field(description="thresholds of `probability`, mm/h")
    percentiles: list[int] = Field(description="percentiles of `percentiles`")
    timestep: int = Field(description="minutes between lead times")
    leadtimes: list[int] = Field(description="lead times in minutes")
    forecast_reference_time: dt.datetime | None = Field(
        None, description="time of the last input frame"
    )
    valid_times: list[dt.datetime] | None = None
    n_members: int
    shape: list[int] = Field(description="[H, W] of every field")
    grid_spacing_km: float | None = None
    crs: str | None = Field(None, description="CRS of the grid (EPSG code, proj4 or WKT)")
    resampled: str | None = Field(None, description="how the input was resampled to the model's cells")
    bounds: list[list[float]] | None = Field(
        None, description="[[south, west], [north, east]] in degrees around the grid's cell edges")
    yorigin: str = "upper"
    model_version: str
    guidance: float | None = None
    guidance_share: float | None = None
    seed: int | None = None
    matching: str | None = None
    advection: str | None = None
    motion_spread: float | None = None
    detail_lifetime: float | None = None
    detail: str | None = None
    extrapolation_lifetime: float | None = None
    blend_spread: float | None = None
    estimate_lifetime: float | None = None
    antithetic: bool | None = None
    steps: int | None = Field(None, description="DDIM steps")
    batch_jobs: int | None = Field(None, description="jobs sampled together in the worker's forecast call")
    timings: dict[str, float] = Field(default_factory=dict)


class NowcastResult(BaseModel):
    """``GET /v1/nowcasts/{id}/result?format=json``."""

    id: str
    metadata: ResultMetadata
    mean: Array | list[Any] = Field(description="(T, H, W) ensemble mean, mm/h")
    percentiles: Array | list[Any] = Field(description="(3, T, H, W) 10th/50th/90th percentiles, mm/h")
    probability: Array | list[Any] = Field(
        description="(n_thresholds, T, H, W) P(R >= threshold), fraction of members"
    )
    members: Array | list[Any] | None = Field(None, description="(K, T, H, W) members, mm/h (members=true)")
