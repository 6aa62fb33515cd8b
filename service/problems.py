"""Every error of the API as RFC 9457 problem details (``application/problem+json``).

One shape for all: ``type`` (a URI naming the kind of problem), ``title`` (the same for every
problem of a type), ``status``, ``detail`` (this occurrence, naming the value and the valid
choices) and ``instance`` (the request path), plus two extension members: ``errors`` (the
fields a 422 refuses: ``loc``, ``msg``, ``type``) and ``job_status`` (the state of a job that is
not done, 409). :func:`install` maps every exception to it, including FastAPI's own validation
errors and Starlette's 404 and 405; :func:`responses` documents it in the OpenAPI schema, with an
example per status.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from service.inputs import InputError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
PROBLEM_SCHEMA_REF = "#/components/schemas/Problem"
TYPE_PREFIX = "urn:nowcast:problem:"
# Redis replies that mean "not now" (out of memory under noeviction, loading its file, a replica).
TRANSIENT_REDIS_REPLIES = ("OOM", "LOADING", "READONLY", "MASTERDOWN", "BUSY", "TRYAGAIN", "CLUSTERDOWN")

# status -> (type slug, title, example detail). Types without a slug are "about:blank".
KINDS: dict[int, tuple[str, str, str]] = {
    400: ("bad-request", "Bad request", "the request could not be read"),
    401: ("unauthorized", "Missing or invalid API key", "missing or invalid X-API-Key header"),
    404: ("not-found", "Not found", "unknown or expired job 'c0ffee'"),
    405: ("", "Method not allowed", "method DELETE is not allowed here"),
    409: ("job-not-done", "Job not done", "job c0ffee is queued"),
    413: ("request-too-large", "Request too large",
          "the request body is larger than max_body_bytes=33554432 (NOWCAST_LIMITS__MAX_BODY_BYTES)"),
    415: ("unsupported-media-type", "Unsupported media type",
          "content type 'text/plain': send application/json or multipart/form-data"),
    422: ("invalid-input", "Invalid input",
          "frames must hold t_in=5 frames (the model's input length), got 3"),
    429: ("queue-full", "Queue full", "100 jobs waiting or running (max_queued); retry later"),
    500: ("internal-error", "Internal error", "an unexpected error; it has been logged"),
    503: ("backend-unavailable", "Service unavailable", "queue backend (Redis) unavailable; retry later"),
}


class ValidationIssue(BaseModel):
    """One refused field of a request."""

    loc: list[str | int] = Field(description="where: ('body' | 'query' | 'path' | 'header' | 'form', ...)")
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field("about:blank", description="URI naming the kind of problem")
    title: str = Field(description="short summary of the kind of problem")
    status: int = Field(description="the HTTP status code")
    detail: str | None = Field(None, description="this occurrence: the value and the valid choices")
    instance: str | None = Field(None, description="the request path")
    errors: list[ValidationIssue] | None = Field(None, description="the fields refused (422)")
    job_status: str | None = Field(None, description="the job's status when it is not done (409)")


class ProblemError(Exception):
    """Raise to answer with a problem: ``status``, ``detail`` and optional ``kind`` (a type slug,
    default that of the status), ``title``, ``headers`` and extension members."""

    def __init__(self, status: int, detail: str, *, kind: str | None = None, title: str | None = None,
                 headers: dict[str, str] | None = None, **extensions: Any) -> None:
        super().__init__(detail)
        self.status, self.detail, self.kind, self.title = status, detail, kind, title
        self.headers, self.extensions = headers or {}, extensions


def problem_response(status: int, detail: str | None, *, instance: str | None = None, kind: str | None = None,
                     title: str | None = None, headers: dict[str, str] | None = None,
                     **extensions: Any) -> JSONResponse:
    """A ``application/problem+json`` response."""
    slug, default_title, _ = KINDS.get(status, ("", "Error", ""))
    slug = slug if kind is None else kind
    body = Problem(type=TYPE_PREFIX + slug if slug else "about:blank", title=title or default_title,
                   status=status, detail=detail, instance=instance, **extensions)
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=status,
                        headers=headers, media_type=PROBLEM_JSON)


def _issues(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validation errors without the input values or the exception objects they may carry."""
    return [{"loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
             "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))} for e in errors]


def allowed_methods(request: Request) -> list[str]:
    """Every method the app's OpenAPI schema documents at the request's path."""
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        regex, _, _ = compile_path(template)
        if regex.match(request.url.path):
            methods |= {method.upper() for method in operations}
    return sorted(methods)


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` with a problem."""

    @app.exception_handler(ProblemError)
    async def problem(request: Request, err: ProblemError) -> JSONResponse:
        return problem_response(err.status, err.detail, instance=request.url.path, kind=err.kind,
                                title=err.title, headers=err.headers, **err.extensions)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        headers = dict(err.headers or {})
        if err.status_code == 405:  # Starlette names one route's methods; the path may have several
            headers["Allow"] = ", ".join(allowed_methods(request))
        return problem_response(err.status_code, str(err.detail), instance=request.url.path, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
        issues = _issues(list(err.errors()))
        detail = "; ".join(f"{'.'.join(map(str, i['loc']))}: {i['msg']}" for i in issues[:5])
        return problem_response(422, detail or "invalid request", instance=request.url.path,
                                errors=issues)

    @app.exception_handler(InputError)
    async def invalid_input(request: Request, err: InputError) -> JSONResponse:
        return problem_response(422, str(err), instance=request.url.path)

    @app.exception_handler(RedisError)
    async def redis_down(request: Request, err: RedisError) -> JSONResponse:
        transient = isinstance(err, RedisConnectionError | RedisTimeoutError) or (
            isinstance(err, ResponseError) and str(err).startswith(TRANSIENT_REDIS_REPLIES))
        if not transient:  # a bug (a script error, a wrong type): a 500 with its traceback logged
            return await internal(request, err)
        log.error("redis unavailable: %s: %s", type(err).__name__, err)  # the details stay in the log
        return problem_response(503, KINDS[503][2], instance=request.url.path, headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def internal(request: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem_response(500, KINDS[500][2], instance=request.url.path)


def responses(*statuses: int, descriptions: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route: a problem with an example for each status."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        slug, title, example = KINDS[status]
        documented[status] = {
            "description": (descriptions or {}).get(status, title),
            "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_SCHEMA_REF}, "example": {
                "type": TYPE_PREFIX + slug if slug else "about:blank", "title": title, "status": status,
                "detail": example}}},
        }
    return documented


def add_problem_schemas(openapi: dict[str, Any]) -> dict[str, Any]:
    """Put :class:`Problem` (and :class:`ValidationIssue`) into ``components.schemas``."""
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(schema.pop("$defs", {}))
    schemas["Problem"] = schema
    return openapi
