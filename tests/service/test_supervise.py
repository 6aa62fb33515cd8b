"""``nowcast serve`` keeps its children running: back-off, and a killed worker whose jobs finish."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis as redis_lib

from service import jobs
from service.serve import free_port
from service.supervise import Supervisor
from tests.service.test_api import payload

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "sup"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def quick_exit() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])


def test_a_child_that_keeps_dying_is_restarted_ever_more_slowly():
    clock = Clock()
    supervisor = Supervisor(initial_backoff=1.0, max_backoff=4.0, stable_seconds=10.0, clock=clock)
    child = supervisor.add("flaky", quick_exit)
    waits = []
    for _ in range(4):
        child.process.wait()
        supervisor.poll()  # notices the exit, schedules the restart
        waits.append(child.restart_at - clock.now)
        clock.now = child.restart_at - 0.01
        supervisor.poll()
        assert child.restart_at is not None, "restarted before its back-off ran out"
        clock.now += 0.01
        supervisor.poll()
        assert child.restart_at is None
    assert waits == [1.0, 2.0, 4.0, 4.0] and child.restarts == 4
    child.process.wait()
    clock.now += 10.0  # it ran for the stable time before exiting: back to the first back-off
    supervisor.poll()
    assert child.restart_at - clock.now == 1.0
    with pytest.raises(ValueError, match="initial_backoff"):
        Supervisor(initial_backoff=0)


def wait_for(condition, seconds: float, what: str, log_path: Path):
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{log_path.read_text()[-4000:]}"
        time.sleep(0.1)


@pytest.mark.slow
def test_serve_restarts_a_killed_worker_and_its_jobs_finish(tmp_path):
    port, redis_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOWCAST_")}
    env.update(NOWCAST_QUEUE__PREFIX=PREFIX, NOWCAST_QUEUE__LEASE_SECONDS="1",
               NOWCAST_QUEUE__HEARTBEAT_TTL_SECONDS="2", NOWCAST_WORKER__METRICS_PORT="0",
               NOWCAST_TEST_SAMPLE_SECONDS="1.5", NOWCAST_MODEL__CHECKPOINT=str(ROOT / "checkpoints/default"))
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        serve = subprocess.Popen([sys.executable, "-m", "tests.service.stand_in_serve", str(port),
                                  str(redis_port), str(tmp_path / "redis")], cwd=ROOT, env=env, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    r = redis_lib.Redis(port=redis_port)
    base = f"http://127.0.0.1:{port}"
    keys = jobs.Keys(PREFIX)

    def worker_pid() -> int | None:
        try:
            names = [m.decode() for m in r.zrangebyscore(keys.alive, time.time() * 1000, "+inf")]
            infos = [r.get(keys.worker(name)) for name in names]
        except redis_lib.RedisError:
            return None
        pids = [json.loads(i)["pid"] for i in infos if i]
        return pids[0] if len(pids) == 1 else None

    def status(job_id: str) -> dict:
        return httpx.get(f"{base}/v1/nowcasts/{job_id}").json()

    try:
        def ready() -> bool:
            if serve.poll() is not None:
                pytest.fail(f"serve exited:\n{log_path.read_text()}")
            try:
                return httpx.get(f"{base}/readyz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 120, "the service", log_path)
        first = worker_pid()
        # 1. killed mid-job: the restarted worker takes the job over once its lease runs out
        running = httpx.post(f"{base}/v1/nowcasts", json=payload()).json()["id"]
        wait_for(lambda: status(running)["status"] == "running", 30, "the job to run", log_path)
        killed = time.monotonic()
        os.kill(first, signal.SIGKILL)
        second = wait_for(lambda: (pid := worker_pid()) != first and pid, 60, "a new worker", log_path)
        restarted = time.monotonic() - killed
        done = wait_for(lambda: (s := status(running))["status"] == "done" and s, 60, "the job", log_path)
        assert done["attempts"] == 2
        # 2. killed idle: a job queued while no worker lives finishes once one is back
        os.kill(second, signal.SIGKILL)
        wait_for(lambda: worker_pid() is None, 10, "the heartbeat to lapse", log_path)
        queued = httpx.post(f"{base}/v1/nowcasts", json=payload(seed=2))
        assert queued.status_code == 202  # the API and Redis stayed up
        done = wait_for(lambda: (s := status(queued.json()["id"]))["status"] == "done" and s, 60,
                        "the queued job", log_path)
        assert done["attempts"] == 1
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
    text = log_path.read_text()
    assert text.count("worker-0 exited (code -9)") == 2 and "worker-0 restarted" in text, text[-3000:]
    print(f"worker restarted and beating {restarted:.1f} s after SIGKILL")
