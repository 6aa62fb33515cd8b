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
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import problems, routes_health, routes_maps, routes_nowcasts, routes_ui
from service.bounds import BodyLimit, BodyTooLarge
from service.deps import require_api_key
from service.inputs import read_model_info
from service.maps import ResultCache
from service.openapi import openapi_schema
from service.redis_client import async_client
from service.secrets import install_secret_filter, mask_url
from service.settings import Settings, get_settings

log = logging.getLogger(__name__)


class CountRequests:
    """ASGI middleware counting requests by method, route and status (a plain ASGI wrapper: the
    request body reaches the route unchanged, and errors raised while reading it reach the
    exception handlers)."""

    def __init__(self, app: ASGIApp, *, metrics: routes_health.ApiMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            endpoint = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], endpoint, str(status)).inc()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for ``settings`` (default: ``get_settings()``, i.e. the environment)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        install_secret_filter(settings)
        app.state.model_info = read_model_info(settings.model.checkpoint)
        app.state.redis = async_client(settings.redis.url)
        redis_at = mask_url(settings.redis.url)
        try:
            await app.state.redis.ping()
            log.info("API up: redis %s, model %s", redis_at, app.state.model_info.model_version)
        except (RedisError, OSError) as err:  # stay up: /readyz says 503 until Redis answers
            log.error("redis at %s does not answer (%s); the API is not ready", redis_at, err)
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

    app.add_middleware(CountRequests, metrics=app.state.metrics)
    problems.install(app)

    @app.exception_handler(BodyTooLarge)
    async def body_too_large(request: Request, err: BodyTooLarge) -> JSONResponse:
        return problems.problem_response(413, str(err), instance=request.url.path)

    # Outermost: a body over the limit is refused before anything reads it.
    app.add_middleware(BodyLimit, max_bytes=settings.limits.max_body_bytes)

    app.include_router(routes_nowcasts.router, dependencies=[Depends(require_api_key)])
    app.include_router(routes_maps.router, dependencies=[Depends(require_api_key)])
    app.include_router(routes_health.router)
    routes_ui.mount(app)

    app.openapi = lambda: openapi_schema(app)  # type: ignore[method-assign]
    return app
