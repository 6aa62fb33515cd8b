"""The one factory of Redis clients (bytes in, bytes out: results and frames are binary)."""

from __future__ import annotations

import redis
import redis.asyncio

# Fail fast when Redis is down instead of hanging a request or a worker loop. Blocking stream
# reads (XREADGROUP BLOCK) must block for less than the socket timeout.
SOCKET_TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 5.0


def sync_client(url: str) -> redis.Redis:
    """A blocking client for ``url`` (the worker); thread-safe through its connection pool."""
    return redis.Redis.from_url(url, decode_responses=False, socket_timeout=SOCKET_TIMEOUT_SECONDS,
                                socket_connect_timeout=CONNECT_TIMEOUT_SECONDS, health_check_interval=30)


def async_client(url: str) -> redis.asyncio.Redis:
    """An asyncio client for ``url`` (the API); close it with ``await client.aclose()``."""
    return redis.asyncio.Redis.from_url(url, decode_responses=False, socket_timeout=SOCKET_TIMEOUT_SECONDS,
                                        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                                        health_check_interval=30)
