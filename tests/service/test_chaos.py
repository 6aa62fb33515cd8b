"""Chaos: two real workers and a real Redis on its append-only file, hurt while they work.

Clients submit through the API (with an idempotency key, retrying 503s as a client should);
meanwhile one worker is SIGSTOPped mid-batch past its lease (then resumed), the other SIGKILLed
mid-batch (and a new one started), and Redis SIGKILLed mid-batch and restarted on its AOF.
Every accepted job must be done, with one stored result; a job may be sampled more than once
only if a worker holding it was killed or stopped, or Redis died while it was held.
"""

from __future__ import annotations

import datetime as dt
import signal
import threading
import time
import uuid

import httpx
import pytest
import redis as redis_lib
from fastapi.testclient import TestClient

from service import jobs
from service.app import create_app
from service.serve import free_port
from service.settings import Settings
from tests.service.processes import StateWatch, held_by, samplings, start_redis, start_worker, wait_for
from tests.service.test_api import CHECKPOINT, encode, frames

pytestmark = pytest.mark.slow

JOBS = 40
QUEUE = {"prefix": "chaos", "lease_seconds": 1.5, "batch_wait_ms": 100, "heartbeat_ttl_seconds": 3.0,
         "batch_max_jobs": 4, "max_attempts": 5, "max_queued": 1000}
SAMPLE_SECONDS = 0.6
REDIS_DOWN_SECONDS = 2.0


def body(seed: int) -> dict:
    now = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
    stamps = [(now - dt.timedelta(minutes=5 * (4 - i))).isoformat() for i in range(5)]
    return {"frames": encode(frames()), "unit": "dBZ", "timestamps": stamps, "members": 2, "seed": seed,
            "thresholds": [0.1, 1.0]}


def test_jobs_survive_killed_and_stopped_workers_and_a_redis_restart(tmp_path):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    data = tmp_path / "redis"
    redis_process = start_redis(port, data)
    r = redis_lib.Redis(port=port, socket_timeout=2)
    wait_for(lambda: _pings(r), 20, "redis")
    settings = Settings(redis={"url": url}, queue=QUEUE, model={"checkpoint": str(CHECKPOINT)})
    env = {f"NOWCAST_QUEUE__{k.upper()}": str(v) for k, v in QUEUE.items()}
    sample_log = tmp_path / "samples.log"
    workers = {name: start_worker(name, url, tmp_path, sample_log=sample_log, sample_seconds=SAMPLE_SECONDS,
                                  **env) for name in ("A", "B")}
    k = jobs.Keys(QUEUE["prefix"])
    watch = StateWatch(r, QUEUE["prefix"])
    accepted: dict[int, str] = {}  # seed -> job id, for 202 answers only
    victims: dict[str, int] = {}  # job id -> how many times a holder of it was hurt
    events: list[str] = []
    started = time.monotonic()

    def hurt(what: str, held: set[str]) -> None:
        for job_id in held:
            victims[job_id] = victims.get(job_id, 0) + 1
        events.append(f"{time.monotonic() - started:5.1f} s {what} holding {len(held)} jobs")

    def sampling_now(name: str) -> bool:  # a forecast call of `name` has started and not ended
        calls = [what for seed_calls in samplings(sample_log).values() for what, w in seed_calls if w == name]
        return calls.count("start") > calls.count("end")

    def submit_all(client: TestClient) -> None:
        for seed in range(JOBS):
            key = uuid.uuid4().hex
            while True:  # retry with the same idempotency key until the API accepts the job
                try:
                    answer = client.post("/v1/nowcasts", json=body(seed), headers={"Idempotency-Key": key})
                except httpx.HTTPError:
                    answer = None
                if answer is not None and answer.status_code == 202:
                    accepted[seed] = answer.json()["id"]
                    watch.ids.add(accepted[seed])
                    break
                assert answer is None or answer.status_code == 503, answer.text
                time.sleep(0.2)
            time.sleep(0.05)

    try:
        all_workers = list(workers.values())
        wait_for(lambda: _alive(r, k) == 2, 120, "two heartbeats", all_workers)
        with TestClient(create_app(settings)) as client:
            submitter = threading.Thread(target=submit_all, args=(client,), daemon=True)
            submitter.start()

            # SIGSTOP worker B mid-batch for longer than its lease (A takes its jobs over), resume it
            wait_for(lambda: sampling_now("B"), 30, "B sampling", all_workers)
            hurt("SIGSTOP B", held_by(r, QUEUE["prefix"], "B"))
            workers["B"].signal(signal.SIGSTOP)
            time.sleep(QUEUE["lease_seconds"] * 2.5)
            workers["B"].signal(signal.SIGCONT)

            # SIGKILL worker A mid-batch (B takes its jobs over), start a successor
            wait_for(lambda: sampling_now("A"), 30, "A sampling", all_workers)
            hurt("SIGKILL A", held_by(r, QUEUE["prefix"], "A"))
            workers["A"].signal(signal.SIGKILL)
            workers["A2"] = start_worker("A2", url, tmp_path, sample_log=sample_log,
                                         sample_seconds=SAMPLE_SECONDS, **env)

            # SIGKILL Redis while a batch is sampled, restart it on its AOF
            wait_for(lambda: any(sampling_now(n) for n in ("A2", "B")), 60, "a batch", list(workers.values()))
            in_flight = set().union(*(held_by(r, QUEUE["prefix"], n) for n in ("A2", "B")))
            hurt("SIGKILL redis", in_flight)
            redis_process.send_signal(signal.SIGKILL)
            redis_process.wait()
            down = time.monotonic()
            time.sleep(REDIS_DOWN_SECONDS)
            redis_process = start_redis(port, data)
            wait_for(lambda: _pings(r), 20, "redis to restart")
            for job_id in set().union(*(held_by(r, QUEUE["prefix"], n) for n in ("A2", "B"))) - in_flight:
                victims[job_id] = victims.get(job_id, 0) + 1  # claimed in the instant before the kill
            back = wait_for(lambda: _alive(r, k) >= 1 and time.monotonic(), 30, "a heartbeat after restart")
            events.append(f"redis down {back - down:.1f} s until a worker beat again")

            events.append(f"{time.monotonic() - started:5.1f} s redis back, waiting for submissions")
            submitter.join(timeout=120)
            events.append(f"{time.monotonic() - started:5.1f} s all {len(accepted)} accepted")
            assert not submitter.is_alive(), "submissions did not finish"
            wait_for(lambda: all(_status(r, k, i) == b"done" for i in accepted.values()), 120,
                     "every accepted job to be done", list(workers.values()))
        took = time.monotonic() - started
        watch.stop()

        assert len(accepted) == JOBS
        done = [i for i in accepted.values() if _status(r, k, i) == b"done"]
        in_redis = sum(1 for _ in r.scan_iter(match=k.job("*")))
        sampled = samplings(sample_log)
        duplicated = {seed: [w for what, w in sampled[seed] if what == "start"] for seed in accepted
                      if sum(what == "start" for what, _ in sampled[seed]) > 1}
        for seed, job_id in accepted.items():
            starts = sum(what == "start" for what, _ in sampled[seed])
            assert 1 <= starts <= 1 + victims.get(job_id, 0), (seed, sampled[seed], events)
            record = r.hgetall(k.job(job_id))
            meta = jobs.decode_result(r.get(k.result(job_id)))["meta"]
            owner = (int(record[b"attempts"]), record[b"worker"].decode())
            assert (meta["attempts"], meta["worker"]) == owner  # the stored result is the final owner's
        assert watch.backwards() == {}
        assert len(done) == len(accepted) == in_redis and jobs.dead_letters(r, settings.queue) == []
        print(f"\nchaos: {len(accepted)} accepted, {len(done)} done, {in_redis} job records, "
              f"{len(duplicated)} sampled twice {duplicated} (victims of: {events}); {took:.0f} s")
    finally:
        watch.stop()
        for worker in workers.values():
            worker.stop()
        redis_process.terminate()
        redis_process.wait(timeout=10)


def _pings(r: redis_lib.Redis) -> bool:
    try:
        return bool(r.ping())
    except redis_lib.RedisError:
        return False


def _alive(r: redis_lib.Redis, k: jobs.Keys) -> int:
    try:
        return r.zcount(k.alive, time.time() * 1000, "+inf")
    except redis_lib.RedisError:
        return 0


def _status(r: redis_lib.Redis, k: jobs.Keys, job_id: str) -> bytes | None:
    try:
        return r.hget(k.job(job_id), "status")
    except redis_lib.RedisError:
        return None
