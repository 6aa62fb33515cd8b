"""Service settings: one ``Settings`` read from ``NOWCAST_*`` environment variables.

Nested groups use ``__``: ``NOWCAST_REDIS__URL``, ``NOWCAST_QUEUE__MAX_QUEUED``,
``NOWCAST_MODEL__STEPS``, ``NOWCAST_AUTH__API_KEYS='["key-1"]'`` (lists are JSON).
The API and the worker read the same settings, so a knob has one name everywhere.
"""

from __future__ import annotations

import math
from collections import Counter
from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENVIRONMENTS = ("development", "test", "staging", "production")
DEVICES = ("auto", "cpu", "cuda")
# A production API key: at least this long, and this many bits of (empirical) entropy, which a
# random token passes (``secrets.token_urlsafe(32)``: ~200 bits, ``secrets.token_hex(16)``: 94 to 125
# bits) and a word repeated to length (``"password" * 4``: 88 bits) does not.
MIN_KEY_LENGTH = 32
MIN_KEY_BITS = 90


def key_bits(key: str) -> float:
    """Empirical entropy of ``key`` in bits: its length times the Shannon entropy of its characters."""
    counts = Counter(key)
    return -sum(n * math.log2(n / len(key)) for n in counts.values())


class RedisSettings(BaseModel):
    """Where the job queue lives; run Redis with ``maxmemory-policy noeviction``."""

    model_config = ConfigDict(hide_input_in_errors=True)

    url: str = "redis://localhost:6379/0"


class QueueSettings(BaseModel):
    """The Redis Streams job queue (all keys under ``prefix``, see ``service.jobs``)."""

    prefix: str = Field(default="nowcast", min_length=1)
    max_queued: int = Field(default=100, ge=1, description="jobs waiting or running before submit gives 429")
    lease_seconds: float = Field(default=30.0, gt=0,
                                 description="a claimed job not extended this long is re-claimed")
    max_attempts: int = Field(default=3, ge=1, description="deliveries of a job before it is dead-lettered")
    result_ttl_seconds: int = Field(default=3600, ge=1,
                                    description="lifetime of results, finished jobs, idempotency keys")
    batch_max_jobs: int = Field(default=4, ge=1, description="jobs sampled together in one forecast call")
    batch_wait_ms: int = Field(default=50, ge=0, description="wait after the first job for more to batch")
    heartbeat_ttl_seconds: float = Field(default=15.0, gt=0,
                                         description="a worker without heartbeat this long is dead")
    max_age_minutes: float | None = Field(
        default=None, gt=0, description="fail jobs whose last input frame is older than this when claimed")

    @model_validator(mode="after")
    def _batch_wait_within_the_lease(self) -> QueueSettings:
        """A worker does not extend its leases while it waits to fill a batch."""
        if self.batch_wait_ms >= self.lease_seconds * 1000 / 2:
            raise ValueError(f"queue.batch_wait_ms={self.batch_wait_ms} must be under half of "
                             f"queue.lease_seconds={self.lease_seconds:g} s, or jobs are taken over while "
                             "a batch fills")
        return self


class ModelSettings(BaseModel):
    """The checkpoint the worker serves and how it samples."""

    checkpoint: str = "checkpoints/default"
    device: str = Field(default="auto", description=f"one of {DEVICES}; auto = cuda when available")
    threads: int = Field(default=0, ge=0, description="torch CPU threads; 0 = torch's default")
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto", description="the denoiser's number format (model.precision): bfloat16 "
        "is faster on CPUs with AVX512-BF16 or AMX and on GPUs, with the same skill; the worker "
        "refuses it elsewhere. auto = bfloat16 where the device runs it natively, else float32")
    steps: int | None = Field(default=None, ge=1, description="DDIM steps per forecast; "
                              "None = the checkpoint's default (its manifest)")
    max_members: int = Field(default=50, ge=1)
    max_side: int = Field(default=1024, ge=16, description="largest accepted frame side in pixels")

    @model_validator(mode="after")
    def _known_device(self) -> ModelSettings:
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ValueError(f"model.device must be one of {DEVICES} or 'cuda:N', got {self.device!r}")
        return self


class WorkerSettings(BaseModel):
    """The sampling worker process (``python -m service.worker``)."""

    name: str = Field(default="", description="consumer name in the group; empty = host-pid")
    metrics_port: int = Field(default=9101, ge=0, le=65535,
                              description="Prometheus port; 0 = no metrics server")
    metrics_host: str = Field(default="127.0.0.1", description="address the metrics server binds; "
                              "loopback unless set (0.0.0.0 in a container that Prometheus scrapes)")
    liveness_file: str | None = Field(default=None, description="a file the worker touches at every "
                                      "heartbeat, for a liveness probe that does not need Redis")
    log_level: str = Field(default="INFO", description="logging level name of the worker process")


class UiSettings(BaseModel):
    """The viewer at ``/ui``. No base map unless an operator names a tile server it may use."""

    tile_url: str | None = Field(default=None, description="XYZ tile URL template of a base map, e.g. "
                                 "'https://tiles.example/{z}/{x}/{y}.png'; None = graticule only")
    tile_attribution: str = Field(default="", description="attribution shown with the base map")
    stale_minutes: float = Field(default=15.0, gt=0, description="the viewer warns when the last input "
                                 "frame is older than this")


class LimitSettings(BaseModel):
    """Bounds on what a request may ask of the service (``service.bounds``)."""

    max_body_bytes: int = Field(default=32 * 2**20, ge=1024, description="largest request body "
                                "(JSON or upload); base64 frames of 5 x 1024 x 1024 take 28 MB")
    max_member_cells: int = Field(default=2**22, ge=1, description="largest H x W x members of "
                                  "one job (1024 x 1024 x 4, 512 x 512 x 16)")
    max_result_bytes: int = Field(default=256 * 2**20, ge=1024, description="largest result of one "
                                  "job, float32 bytes of members, mean, percentiles and probabilities at "
                                  "every lead time: what the worker stores and the API decodes (writing it "
                                  "as netCDF peaks near 3.5 times this; the API's limit is 2 GiB)")
    max_response_bytes: int = Field(default=256 * 2**20, ge=1024,
                                     description="largest JSON result; bigger ones are refused "
                                     "naming smaller choices (format=netcdf, members=false)")
    max_past_hours: float = Field(default=24.0, gt=0, le=1_000_000,
                                  description="oldest accepted input frame, hours before now")
    max_future_hours: float = Field(default=1.0, ge=0, le=24,
                                    description="newest accepted input frame, hours after now")


class AuthSettings(BaseModel):
    """API keys accepted in the ``X-API-Key`` header; empty = no authentication."""

    model_config = ConfigDict(hide_input_in_errors=True)

    api_keys: list[str] = Field(default_factory=list)


class Settings(BaseSettings):
    """Everything the API and the worker can be configured with."""

    # hide_input_in_errors: a refused setting must not print the keys or the Redis URL it holds.
    model_config = SettingsConfigDict(env_prefix="NOWCAST_", env_nested_delimiter="__",
                                      extra="ignore", hide_input_in_errors=True)

    redis: RedisSettings = Field(default_factory=RedisSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    ui: UiSettings = Field(default_factory=UiSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    cors_origins: list[str] = Field(default_factory=list)
    environment: str = "development"

    @model_validator(mode="after")
    def _safe_for_production(self) -> Settings:
        """Refuse an unknown environment; in production, weak or missing API keys and a Redis
        without a password. Messages never repeat a key."""
        if self.environment not in ENVIRONMENTS:
            raise ValueError(f"environment must be one of {ENVIRONMENTS}, got {self.environment!r}")
        if self.environment != "production":
            return self
        keys = self.auth.api_keys
        if not keys:
            raise ValueError("environment=production needs at least one key in auth.api_keys "
                             "(NOWCAST_AUTH__API_KEYS='[\"...\"]')")
        for i, key in enumerate(keys):
            if len(key) < MIN_KEY_LENGTH or key_bits(key) < MIN_KEY_BITS or key != key.strip():
                raise ValueError(
                    f"auth.api_keys[{i}] is too weak for environment=production: it needs at least "
                    f"{MIN_KEY_LENGTH} characters, {MIN_KEY_BITS} bits of entropy and no surrounding "
                    "blanks (make one with: python -c \"import secrets; print(secrets.token_urlsafe(32))\")")
        if len(set(keys)) != len(keys):
            raise ValueError("auth.api_keys has duplicates")
        if urlsplit(self.redis.url).scheme in ("redis", "rediss") and not urlsplit(self.redis.url).password:
            raise ValueError("environment=production needs a Redis password in redis.url "
                             "(NOWCAST_REDIS__URL=redis://:PASSWORD@host:6379/0; Redis requirepass)")
        return self


@lru_cache
def get_settings() -> Settings:
    """The settings of this process, read once from the environment."""
    return Settings()
