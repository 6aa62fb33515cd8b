"""The HTTP API: ``create_app()`` and its lifespan.

Run it with ``uvicorn service.app:create_app --factory`` (``nowcast serve`` does, with Redis
and a worker). The API process reads the checkpoint's config and manifest but never loads the
networks; the worker (``python -m service.worker``) does the sampling.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service import routes_health, routes_maps, routes_nowcasts, routes_ui
from service.deps import require_api_key
from service.inputs import InputError, read_model_info
from service.maps import ResultCache
from service.redis_client import async_client
from service.settings import Settings, get_settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for ``settings`` (default: ``get_settings()``, i.e. the environment)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.model_info = read_model_info(settings.model.checkpoint)
        app.state.redis = async_client(settings.redis.url)
        try:
            await app.state.redis.ping()
            log.info("API up: redis %s, model %s", settings.redis.url, app.state.model_info.model_version)
        except (RedisError, OSError) as err:  # stay up: /readyz says 503 until Redis answers
            log.error("redis at %s does not answer (%s); the API is not ready", settings.redis.url, err)
        try:
            yield
        finally:
            await app.state.redis.aclose()

    app = FastAPI(title="STLDM precipitation nowcasting", version="1", lifespan=lifespan,
                  description="Probabilistic radar nowcasts from a spatio-temporal latent diffusion "
                              "model. Submit frames, poll the job, fetch JSON, CF-netCDF or PNG.")
    app.state.settings = settings
    app.state.metrics = routes_health.ApiMetrics()
    app.state.result_cache = ResultCache()
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["*"], expose_headers=["Location", "ETag", "Retry-After"])

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        app.state.metrics.requests.labels(request.method, endpoint, str(response.status_code)).inc()
        return response

    @app.exception_handler(InputError)
    async def input_error(request: Request, err: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=422)

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def redis_down(request: Request, err: RedisError) -> JSONResponse:
        log.error("redis unavailable: %s", err)
        return JSONResponse({"detail": "queue backend (Redis) unavailable; retry later"}, status_code=503,
                            headers={"Retry-After": "5"})

    app.include_router(routes_nowcasts.router, dependencies=[Depends(require_api_key)])
    app.include_router(routes_maps.router, dependencies=[Depends(require_api_key)])
    app.include_router(routes_health.router)
    routes_ui.mount(app)
    return app
