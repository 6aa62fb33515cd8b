"""Health, metrics and model facts: ``/livez``, ``/readyz``, ``/metrics``, ``/v1/model``.

Readiness is Redis answering a ping *and* at least one worker heartbeat key alive (a worker
process that is up but stuck stops renewing its heartbeat and the service goes unready).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from redis.exceptions import RedisError

from model.transform import UNITS
from service import jobs
from service.deps import ModelInfoDep, RedisDep, SettingsDep, require_api_key
from service.problems import problem_response, responses

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


class ApiMetrics:
    """Prometheus metrics of one API app, in their own registry (one per ``create_app``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("nowcast_api_requests", "HTTP requests by route and status",
                                ["method", "endpoint", "status"], registry=self.registry)
        self.submissions = Counter("nowcast_api_submissions", "nowcast submissions by outcome",
                                   ["outcome"], registry=self.registry)
        self.queue_depth = Gauge("nowcast_api_queue_depth", "unfinished jobs (waiting or running)",
                                 registry=self.registry)
        self.workers_alive = Gauge("nowcast_api_workers_alive", "workers with a live heartbeat",
                                   registry=self.registry)


@router.get("/livez")
async def livez() -> dict[str, str]:
    """The process answers (never touches Redis)."""
    return {"status": "alive"}


def _unready(request: Request, reason: str) -> JSONResponse:
    return problem_response(503, reason, instance=request.url.path, kind="not-ready", title="Not ready",
                            headers={"Retry-After": "5"})


@router.get("/readyz", responses=responses(503, descriptions={503: "Redis down or no live worker"}))
async def readyz(request: Request, redis: RedisDep, settings: SettingsDep) -> JSONResponse:
    """200 when Redis answers and a worker heartbeat is alive, else 503 naming why. Where Redis
    is stays in the log."""
    try:
        await redis.ping()
        workers = await jobs.workers_alive(redis, settings.queue)
        depth = await jobs.queue_depth(redis, settings.queue)
    except (RedisError, OSError) as err:
        log.warning("readyz: redis unavailable (%s: %s)", type(err).__name__, err)
        return _unready(request, "redis unavailable")
    if workers == 0:
        return _unready(request, f"no live worker (no heartbeat); {depth} jobs waiting or running")
    return JSONResponse({"status": "ready", "workers": workers, "queue_depth": depth})


@router.get("/v1/model", dependencies=[Depends(require_api_key)], responses=responses(401))
async def model_info(info: ModelInfoDep, settings: SettingsDep) -> dict[str, Any]:
    """The served model: what a request must look like (clients cut their input to this)."""
    return {"model_version": info.model_version, "t_in": info.t_in, "t_out": info.t_out,
            "step_minutes": list(info.step_minutes), "cell_km": info.defaults.cell_km, "size": info.size,
            "size_multiple": info.size_multiple, "max_side": settings.model.max_side,
            "max_members": settings.model.max_members, "units": list(UNITS),
            "defaults": info.defaults.to_dict()}


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, redis: RedisDep, settings: SettingsDep) -> Response:
    """Prometheus text format: request and submission counters, queue depth, live workers."""
    api: ApiMetrics = request.app.state.metrics
    try:
        api.queue_depth.set(await jobs.queue_depth(redis, settings.queue))
        api.workers_alive.set(await jobs.workers_alive(redis, settings.queue))
    except (RedisError, OSError) as err:
        log.warning("metrics: redis unavailable (%s)", err)
    return Response(generate_latest(api.registry), media_type=CONTENT_TYPE_LATEST)
