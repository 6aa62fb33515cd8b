"""The API's OpenAPI schema: FastAPI's, plus the problem details and a request that works.

:func:`openapi_schema` adds the :class:`~service.problems.Problem` schemas every error refers to,
and a request-body example for ``POST /v1/nowcasts`` built from the served checkpoint (its
``t_in`` and time step) with times ending now, so that "Try it out" in ``/docs`` and schema-driven
testers (schemathesis' examples and stateful phases) start from a job the API accepts. The
example's times move with the clock, so the schema is built per request (it takes milliseconds).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service import problems
from service.inputs import MIN_SIDE, ModelInfo
from service.schemas import Array

EXAMPLE_DBZ = 25.0  # moderate rain everywhere


def submit_example(info: ModelInfo, *, now: dt.datetime) -> dict[str, Any]:
    """A JSON nowcast request the served model accepts: ``t_in`` frames of the smallest side,
    ``step`` minutes apart, the last one at ``now`` rounded down to the step."""
    step = info.step_minutes[0]
    last = now.replace(second=0, microsecond=0) - dt.timedelta(minutes=now.minute % step)
    times = [(last - dt.timedelta(minutes=step * (info.t_in - 1 - i))).isoformat() for i in range(info.t_in)]
    frames = np.full((info.t_in, MIN_SIDE, MIN_SIDE), EXAMPLE_DBZ, np.float32)
    return {"frames": Array.from_numpy(frames).model_dump(), "unit": "dBZ", "timestamps": times, "members": 2,
            "thresholds": [0.1, 1.0, 5.0], "grid_spacing_km": 4.0}


def openapi_schema(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI schema of ``app`` (see the module docstring)."""
    schema = problems.add_problem_schemas(get_openapi(title=app.title, version=app.version,
                                                      description=app.description, routes=app.routes))
    info: ModelInfo | None = getattr(app.state, "model_info", None)
    submit = schema["paths"].get("/v1/nowcasts", {}).get("post")
    if info is not None and submit is not None:
        body = submit["requestBody"]["content"]["application/json"]
        body["example"] = submit_example(info, now=dt.datetime.now(dt.timezone.utc))
    return schema
