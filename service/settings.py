"""Service settings: one ``Settings`` read from ``NOWCAST_*`` environment variables.

Nested groups use ``__``: ``NOWCAST_REDIS__URL``, ``NOWCAST_QUEUE__MAX_QUEUED``,
``NOWCAST_MODEL__STEPS``, ``NOWCAST_AUTH__API_KEYS='["key-1"]'`` (lists are JSON).
The API and the worker read the same settings, so a knob has one name everywhere.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENVIRONMENTS = ("development", "test", "staging", "production")
DEVICES = ("auto", "cpu", "cuda")


class RedisSettings(BaseModel):
    """Where the job queue lives; run Redis with ``maxmemory-policy noeviction``."""

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


class ModelSettings(BaseModel):
    """The checkpoint the worker serves and how it samples."""

    checkpoint: str = "checkpoints/default"
    device: str = Field(default="auto", description=f"one of {DEVICES}; auto = cuda when available")
    threads: int = Field(default=0, ge=0, description="torch CPU threads; 0 = torch's default")
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
    log_level: str = Field(default="INFO", description="logging level name of the worker process")


class UiSettings(BaseModel):
    """The viewer at ``/ui``. No base map unless an operator names a tile server it may use."""

    tile_url: str | None = Field(default=None, description="XYZ tile URL template of a base map, e.g. "
                                 "'https://tiles.example/{z}/{x}/{y}.png'; None = graticule only")
    tile_attribution: str = Field(default="", description="attribution shown with the base map")
    stale_minutes: float = Field(default=15.0, gt=0, description="the viewer warns when the last input "
                                 "frame is older than this")


class AuthSettings(BaseModel):
    """API keys accepted in the ``X-API-Key`` header; empty = no authentication."""

    api_keys: list[str] = Field(default_factory=list)


class Settings(BaseSettings):
    """Everything the API and the worker can be configured with."""

    model_config = SettingsConfigDict(env_prefix="NOWCAST_", env_nested_delimiter="__",
                                      extra="ignore")

    redis: RedisSettings = Field(default_factory=RedisSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    ui: UiSettings = Field(default_factory=UiSettings)
    cors_origins: list[str] = Field(default_factory=list)
    environment: str = "development"

    @model_validator(mode="after")
    def _safe_for_production(self) -> Settings:
        """Refuse an unknown environment, and a production API open to anyone (no API keys)."""
        if self.environment not in ENVIRONMENTS:
            raise ValueError(f"environment must be one of {ENVIRONMENTS}, got {self.environment!r}")
        if self.environment == "production" and not self.auth.api_keys:
            raise ValueError("environment=production needs at least one key in auth.api_keys "
                             "(NOWCAST_AUTH__API_KEYS='[\"...\"]')")
        return self


@lru_cache
def get_settings() -> Settings:
    """The settings of this process, read once from the environment."""
    return Settings()
