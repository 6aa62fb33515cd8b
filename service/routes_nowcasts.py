"""``/v1/nowcasts``: submit a nowcast, follow its job, fetch the result.

A submission is JSON (:class:`~service.schemas.NowcastRequest`) or a multipart upload of radar
files in any format ``radar.readers`` reads (field ``file``, repeated for one file per frame,
plus the option fields of :class:`~service.schemas.NowcastOptions`; ``thresholds``
comma-separated). Either way the frames are validated against the served checkpoint, their
grid checked against its cell size (or resampled to it), and queued as model pixels.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from redis.asyncio import Redis

from model.options import REQUEST_OPTIONS
from service import bounds, jobs, render, result_stream, scales
from service.contract import JobRequest
from service.deps import ClientDep, ModelInfoDep, RedisDep, SettingsDep
from service.inputs import (
    InputError,
    ModelInfo,
    RadarInput,
    check_frames,
    frames_from_lists,
    json_input,
    read_upload,
    to_pixels,
)
from service.problems import ProblemError, responses
from service.schemas import (
    Array,
    JobList,
    JobStatus,
    JobSummary,
    NowcastOptions,
    NowcastRequest,
    NowcastResult,
    SubmitResponse,
)
from service.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/nowcasts", tags=["nowcasts"])

RETRY_AFTER_SECONDS = 30


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its ``$defs`` inlined (for ``openapi_extra``)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A property schema without its ``null`` branch: a form field is left out, never null."""
    branches = [b for b in schema.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) != 1:
        return schema
    rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
    return {**branches[0], **rest}


def _upload_schema() -> dict[str, Any]:
    options = _inline_refs(NowcastOptions.model_json_schema())
    options["properties"] = {name: _not_null(prop) for name, prop in options["properties"].items()}
    options["properties"]["thresholds"] = {"type": "string", "example": "0.1,1,5,10,20,50",
                                           "description": "comma-separated thresholds, mm/h"}
    options["properties"]["file"] = {
        "type": "array", "items": {"type": "string", "format": "binary"},
        "description": "radar file(s): CF-netCDF, ODIM_H5, GRIB2 or GeoTIFF (radar/readers.py); the last "
                       "t_in frames at a step the model serves are used"}
    options["required"] = ["file"]
    return options


SUBMIT_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _inline_refs(NowcastRequest.model_json_schema())},
    "multipart/form-data": {"schema": _upload_schema()},
}}}


def _validation_error(err: ValidationError, where: str) -> RequestValidationError:
    errors = err.errors(include_url=False, include_context=False, include_input=False)
    return RequestValidationError([{**e, "loc": (where, *e["loc"])} for e in errors])


def _times(timestamps: list[dt.datetime], settings: Settings) -> list[dt.datetime]:
    limits = settings.limits
    return bounds.check_times(timestamps, now=dt.datetime.now(dt.timezone.utc),
                              max_past_hours=limits.max_past_hours, max_future_hours=limits.max_future_hours)


async def _parse_json(request: Request, info: ModelInfo,
                      settings: Settings) -> tuple[NowcastRequest, RadarInput, int]:
    max_side = settings.model.max_side
    try:
        # strict: JSON types as the schema says (no "2" for 2, no false for 0.0)
        body = NowcastRequest.model_validate_json(await request.body(), strict=True)
    except ValidationError as err:
        raise _validation_error(err, "body") from err
    if isinstance(body.frames, Array):
        if any(n > max_side for n in body.frames.shape[1:]):  # refused before decoding the data
            raise InputError(f"frames.shape {body.frames.shape}: sides must be at most max_side={max_side}")
        try:
            values = body.frames.to_numpy()
        except ValueError as err:
            raise InputError(str(err)) from err
    else:
        values = frames_from_lists(body.frames)
    times, step = check_frames(values, _times(body.timestamps, settings), info=info, max_side=max_side)
    data = json_input(values, body.unit, times, step, info=info, grid=body.grid,
                      grid_spacing_km=body.grid_spacing_km, resample=body.resample)
    if data.values.shape != values.shape:  # resampled: the sides again
        check_frames(data.values, data.timestamps, info=info, max_side=max_side)
    return body, data, step


async def _parse_upload(request: Request, info: ModelInfo,
                        settings: Settings) -> tuple[NowcastOptions, RadarInput, int]:
    max_side = settings.model.max_side
    form = await request.form()
    uploads = [f for f in form.getlist("file") if not isinstance(f, str)]
    if not uploads:
        raise InputError("multipart submission needs radar file(s) in the field 'file' (CF-netCDF, ODIM_H5, "
                         "GRIB2 or GeoTIFF; several files for one frame each)")
    files = []
    for upload in uploads:  # together at most limits.max_body_bytes (service.bounds.BodyLimit)
        content = await upload.read()
        await run_in_threadpool(bounds.check_netcdf_layout, content, name=upload.filename or "upload")
        files.append((upload.filename or "upload", content))
    fields: dict[str, Any] = {k: v for k, v in form.items() if k != "file"}
    if "thresholds" in fields:
        fields["thresholds"] = [x for x in str(fields["thresholds"]).split(",") if x.strip()]
    try:
        options = NowcastOptions.model_validate(fields)
    except ValidationError as err:
        raise _validation_error(err, "form") from err
    data = await run_in_threadpool(read_upload, files, info=info, resample=options.resample)
    _, step = check_frames(data.values, _times(data.timestamps, settings), info=info, max_side=max_side)
    return options, data, step


def _links(**targets: str) -> dict[str, Any]:
    """OpenAPI links to the job's operations, with ``job_id`` taken from this response."""
    return {name: {"operationId": operation, "parameters": {"job_id": "$response.body#/id"}}
            for name, operation in targets.items()}


STATUS_OPERATION = "get_nowcast_v1_nowcasts__job_id__get"
RESULT_OPERATIONS = {"result": "get_nowcast_result_v1_nowcasts__job_id__result_get",
                     "png": "get_nowcast_png_v1_nowcasts__job_id__png_get"}


@router.post("", status_code=202, response_model=SubmitResponse, openapi_extra=SUBMIT_BODY,
             responses={202: {"description": "queued (Location: the job's status URL)",
                              "links": _links(status=STATUS_OPERATION, **RESULT_OPERATIONS)},
                        **responses(400, 401, 413, 415, 422, 429, 503, descriptions={
                 400: "a multipart body that cannot be parsed",
                 413: "request body over limits.max_body_bytes",
                 422: "invalid input, or an idempotency key reused with a different request",
                 429: "queue full (Retry-After)", 503: "Redis unavailable (Retry-After)"})})
async def submit_nowcast(
    request: Request, response: Response, redis: RedisDep, settings: SettingsDep, info: ModelInfoDep,
    client: ClientDep,
    idempotency_header: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1,
                                                     max_length=200)] = None,
) -> SubmitResponse:
    """Queue an ensemble nowcast of the last ``t_in`` radar frames (202 + ``Location``)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        options, data, step = await _parse_upload(request, info, settings)
    elif content_type.startswith("application/json"):
        options, data, step = await _parse_json(request, info, settings)
    else:
        raise HTTPException(415, f"content type {content_type!r}: send application/json or "
                                 "multipart/form-data")
    bounds.check_values(data.values, data.unit)
    if options.members is not None and options.members > settings.model.max_members:
        raise InputError(f"members={options.members} exceeds max_members={settings.model.max_members}")
    try:  # the worker resolves the same way; a bad combination is refused here, not after queueing
        resolved = info.defaults.resolve(seed=options.seed,
                                         **options.model_dump(include=set(REQUEST_OPTIONS)))
    except ValueError as err:
        raise InputError(str(err)) from err
    height, width = data.values.shape[1:]
    bounds.check_member_cells(height, width, resolved.members,
                              max_member_cells=settings.limits.max_member_cells)
    bounds.check_result_size(height, width, t_out=info.t_out, members=resolved.members,
                             thresholds=len(resolved.thresholds),
                             max_result_bytes=settings.limits.max_result_bytes)
    max_age = settings.queue.max_age_minutes
    age = (dt.datetime.now(dt.timezone.utc) - data.timestamps[-1]).total_seconds() / 60
    if max_age is not None and age > max_age:
        raise InputError(f"the last frame is {age:.0f} min old; max_age_minutes={max_age:g} "
                         "(a stale nowcast is worth less than the next one)")
    key = options.idempotency_key
    if idempotency_header and key and idempotency_header != key:
        raise InputError("Idempotency-Key header and idempotency_key field differ")
    key = key or idempotency_header
    pixels = to_pixels(data.values, data.unit, info.transform)
    job_request = JobRequest(
        shape=list(data.values.shape), unit=data.unit, timestamps=data.timestamps, step_minutes=step,
        seed=options.seed, **options.model_dump(include=set(REQUEST_OPTIONS)), source=data.source,
        **data.grid,
        # the checkpoint's conventions, so that the result's metadata can state them
        rain_min=info.transform.rain_min,
        zr_relation=f"Z = {info.transform.zr_a:g} R^{info.transform.zr_b:g}",
    )
    try:
        job_id, created = await jobs.submit(redis, settings.queue, frames=pixels, idempotency_key=key,
                                            scope=client, request=job_request.model_dump(mode="json"))
    except jobs.QueueFull as err:
        request.app.state.metrics.submissions.labels(outcome="queue_full").inc()
        raise ProblemError(429, f"queue full ({err}); retry later",
                           headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from err
    except jobs.IdempotencyConflict as err:
        request.app.state.metrics.submissions.labels(outcome="idempotency_conflict").inc()
        raise ProblemError(422, f"Idempotency-Key {key!r} was used for job {err.job_id} with a different "
                           "request (options or frames); use a new key for a new request",
                           kind="idempotency-key-reused", title="Idempotency key reused") from err
    request.app.state.metrics.submissions.labels(outcome="queued" if created else "duplicate").inc()
    log.info("job %s %s (%s, %s members)", job_id, "queued" if created else "replayed",
             data.source, options.members or "default")
    status_url = str(request.url_for("get_nowcast", job_id=job_id))
    response.headers["Location"] = status_url
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    job = None if created else await jobs.get_job(redis, settings.queue, job_id)
    return SubmitResponse(id=job_id, status=job.get("status", jobs.QUEUED) if job else jobs.QUEUED,
                          status_url=status_url,
                          result_url=str(request.url_for("get_nowcast_result", job_id=job_id)))


def _summary(request: Request, job: dict[str, str]) -> JobSummary:
    try:
        stored = json.loads(job.get("request") or "{}")
    except json.JSONDecodeError:
        stored = {}
    stamps = stored.get("timestamps") or []
    return JobSummary(
        id=job["id"], status=job.get("status", ""), created=_time(job.get("created")),
        finished=_time(job.get("finished")), source=stored.get("source"),
        forecast_reference_time=_time(stamps[-1]) if stamps else None, members=stored.get("members"),
        model_version=job.get("model_version") or None, error=job.get("error") or None,
        status_url=str(request.url_for("get_nowcast", job_id=job["id"])))


@router.get("", response_model=JobList,
            responses={304: {"description": "not modified"}, **responses(401, 422, 503)})
async def list_nowcasts(
    request: Request, redis: RedisDep, settings: SettingsDep,
    status: Annotated[Literal["queued", "running", "done", "failed"] | None,
                      Query(description="only jobs in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="at most this many, newest first")] = 20,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The newest jobs (newest first), with their state; ``ETag`` / 304 for polling."""
    found = await jobs.list_jobs(redis, settings.queue, status=status, limit=limit)
    body = JobList(jobs=[_summary(request, job) for job in found]).model_dump_json()
    return _etagged(body, if_none_match)


def _etagged(body: str, if_none_match: str | None) -> Response:
    """``body`` as JSON with a weak ETag, or 304 when the client has it already."""
    etag = 'W/"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if if_none_match and etag in [tag.strip() for tag in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def _time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromtimestamp(float(value), tz=dt.timezone.utc)
    except ValueError:
        time = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return time.replace(tzinfo=dt.timezone.utc) if time.tzinfo is None else time


def _seconds(a: dt.datetime | None, b: dt.datetime | None) -> float | None:
    return None if a is None or b is None else round((b - a).total_seconds(), 3)


async def _job_or_404(redis: Redis, settings: Settings, job_id: str) -> dict[str, str]:
    job = await jobs.get_job(redis, settings.queue, job_id)
    if job is None:
        raise HTTPException(404, f"unknown or expired job {job_id!r}")
    return job


JobId = Annotated[str, Path(min_length=1, max_length=64, description="the id POST /v1/nowcasts returned")]


@router.get("/{job_id}", response_model=JobStatus,
            responses={200: {"links": _links(**RESULT_OPERATIONS)}, 304: {"description": "not modified"},
                       **responses(401, 404, 422, 503)})
async def get_nowcast(job_id: JobId, request: Request, redis: RedisDep, settings: SettingsDep,
                      if_none_match: Annotated[str | None, Header()] = None) -> Response:
    """Status, queue position, timings and model version of a job; ``ETag`` / 304 for polling."""
    job = await _job_or_404(redis, settings, job_id)
    status = job.get("status", "")
    created, started, finished = (_time(job.get(k)) for k in ("created", "started", "finished"))
    position = await jobs.queue_position(redis, settings.queue, job_id) if status == jobs.QUEUED else None
    body = JobStatus(
        id=job_id, status=status, queue_position=position, created=created, started=started,
        finished=finished, queued_seconds=_seconds(created, started), run_seconds=_seconds(started, finished),
        attempts=int(job.get("attempts") or 0), model_version=job.get("model_version") or None,
        error=job.get("error") or None,
        result_url=str(request.url_for("get_nowcast_result", job_id=job_id)) if status == jobs.DONE else None,
    ).model_dump_json()
    return _etagged(body, if_none_match)


async def done_blob(redis: Redis, settings: Settings, job_id: str) -> bytes:
    """The stored result of a finished job; 404 unknown or expired, 409 (``job_status``) not done."""
    job = await _job_or_404(redis, settings, job_id)
    status = job.get("status")
    if status != jobs.DONE:
        detail = f"job {job_id} is {status}" + (f": {job['error']}" if job.get("error") else "")
        raise ProblemError(409, detail, job_status=status)
    blob = await jobs.get_result(redis, settings.queue, job_id)
    if blob is None:
        raise HTTPException(404, f"result of job {job_id} has expired")
    return blob


async def done_result(redis: Redis, settings: Settings, job_id: str,
                      names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The decoded result of a finished job (the arrays ``names``, default all), as :func:`done_blob`."""
    return await run_in_threadpool(jobs.decode_result, await done_blob(redis, settings, job_id), names)


RESULT_RESPONSES = responses(401, 404, 409, 422, 503, descriptions={
    409: "the job is not done (job_status says where it is)",
    422: "invalid query, or a JSON result over limits.max_response_bytes"})
WITHOUT_MEMBERS = tuple(n for n in jobs.RESULT_ARRAYS + jobs.OPTIONAL_RESULT_ARRAYS if n != "members")


@router.get("/{job_id}/result", response_model=NowcastResult,
            responses={200: {"content": {"application/x-netcdf": {}}}, **RESULT_RESPONSES})
async def get_nowcast_result(
    job_id: JobId, redis: RedisDep, settings: SettingsDep,
    format: Annotated[Literal["json", "netcdf"], Query(description="json or CF-netCDF")] = "json",
    members: Annotated[bool, Query(description="include the members (JSON)")] = False,
    encoding: Annotated[Literal["base64", "list"], Query(description="JSON array encoding; no data is "
                                                         "NaN in base64 float32, null in lists")] = "base64",
) -> Response:
    """Ensemble mean, percentiles, exceedance probabilities (and members) of a finished job."""
    blob = await done_blob(redis, settings, job_id)
    if format == "netcdf":
        result = await run_in_threadpool(jobs.decode_result, blob)
        data = await run_in_threadpool(render.result_netcdf, result)
        return Response(data, media_type="application/x-netcdf", headers={
            "Content-Disposition": f'attachment; filename="nowcast-{job_id}.nc"'})
    size = bounds.json_result_bytes(jobs.result_sizes(blob), members=members, encoding=encoding)
    bounds.check_response_size(size, max_response_bytes=settings.limits.max_response_bytes, members=members,
                               encoding=encoding)
    names = None if members else WITHOUT_MEMBERS
    result = await run_in_threadpool(jobs.decode_result, blob, names)
    body = await run_in_threadpool(result_stream.json_chunks, job_id, result, members=members,
                                   encoding=encoding)
    return StreamingResponse(body, media_type="application/json")


@router.get("/{job_id}/png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}, **RESULT_RESPONSES})
async def get_nowcast_png(
    job_id: JobId, redis: RedisDep, settings: SettingsDep,
    lead: Annotated[int | None, Query(description="lead time in minutes (default: the first)")] = None,
    product: Annotated[Literal[scales.PRODUCTS], Query(description="mean, percentiles p10/p50/p90, "  # type: ignore[valid-type]
                                                       "probability, or the last observed frame")] = "mean",
    threshold: Annotated[float, Query(description="mm/h, for product=probability")] = 1.0,
    animated: Annotated[bool, Query(description="an animated PNG over every lead time")] = False,
) -> Response:
    """A PNG map of one product at one lead time (or animated over the lead times): colour scale
    with legend, issue and valid times, coordinates and graticule, dry and 0 % transparent."""
    result = await done_result(redis, settings, job_id, WITHOUT_MEMBERS)
    lead = int(np.asarray(result["lead_minutes"])[0]) if lead is None else lead
    try:
        if animated:
            png = await run_in_threadpool(render.result_apng, result, product=product, threshold=threshold)
        else:
            png = await run_in_threadpool(render.result_png, result, lead=lead, product=product,
                                          threshold=threshold)
    except ValueError as err:
        raise HTTPException(422, str(err)) from err
    return Response(png, media_type="image/png")
