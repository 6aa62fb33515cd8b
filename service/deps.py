"""FastAPI dependencies: settings, the Redis client, model facts, API-key check.

``create_app`` puts the settings, the async Redis client and the checkpoint's
:class:`~service.inputs.ModelInfo` on ``app.state``; handlers receive them through the
``Annotated`` aliases below, which tests may override with ``app.dependency_overrides``.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated, cast

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader
from redis.asyncio import Redis

from service.inputs import ModelInfo
from service.settings import Settings


def get_app_settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


def get_redis(request: Request) -> Redis:
    return cast(Redis, request.app.state.redis)


def get_model_info(request: Request) -> ModelInfo:
    return cast(ModelInfo, request.app.state.model_info)


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
RedisDep = Annotated[Redis, Depends(get_redis)]
ModelInfoDep = Annotated[ModelInfo, Depends(get_model_info)]

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="required when the service is configured with API keys")


def require_api_key(settings: SettingsDep,
                    key: Annotated[str | None, Security(api_key_header)] = None) -> str:
    """401 unless ``X-API-Key`` is one of ``settings.auth.api_keys`` (no keys: open).

    Returns the client's scope, a digest of its key ("" when the API is open): idempotency keys
    live in it, so that two clients never share one (and no key is stored in Redis).
    """
    keys = settings.auth.api_keys
    if not keys:
        return ""
    if key is None or not any(secrets.compare_digest(key.encode(), k.encode()) for k in keys):
        raise HTTPException(status_code=401, detail="missing or invalid X-API-Key header",
                            headers={"WWW-Authenticate": "APIKey"})
    return hashlib.sha256(key.encode()).hexdigest()[:16]


ClientDep = Annotated[str, Depends(require_api_key)]
