"""Issue 16, reproduction 1: a worker stopped (SIGSTOP) past its lease, then resumed, writes
nothing. Two real worker processes (the stand-in model) on a real Redis."""

from __future__ import annotations

import datetime as dt
import signal

import numpy as np
import pytest

from service import jobs
from service.contract import JobRequest
from service.settings import QueueSettings
from tests.service.processes import StateWatch, held_by, samplings, start_worker, wait_for

pytestmark = pytest.mark.slow

QUEUE = {"prefix": "fence", "lease_seconds": 1.5, "batch_wait_ms": 700, "heartbeat_ttl_seconds": 3.0,
         "batch_max_jobs": 4, "max_attempts": 3}
SAMPLE_SECONDS = 1.5


def submit(call_async, qs: QueueSettings, seed: int) -> str:
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    times = [now - dt.timedelta(minutes=5 * (4 - i)) for i in range(5)]
    request = JobRequest(shape=[5, 64, 64], unit="pixel", timestamps=times, step_minutes=5, members=2,
                         seed=seed, thresholds=[0.1, 1.0])
    job_id, _ = call_async(jobs.submit, qs, request=request.model_dump(mode="json"),
                           frames=np.full((5, 64, 64), 0.4, np.float32), idempotency_key=None)
    return job_id


def starts(sample_log, seed: int) -> list[str]:
    return [worker for what, worker in samplings(sample_log)[seed] if what == "start"]


def test_a_worker_stopped_past_its_lease_drops_its_jobs(redis, redis_url, call_async, tmp_path):
    qs = QueueSettings(**QUEUE)
    env = {f"NOWCAST_QUEUE__{k.upper()}": str(v) for k, v in QUEUE.items()}
    sample_log = tmp_path / "samples.log"
    workers = {name: start_worker(name, redis_url, tmp_path, sample_log=sample_log,
                                  sample_seconds=SAMPLE_SECONDS, **env) for name in ("A", "B")}
    k = jobs.Keys(qs.prefix)
    watch = StateWatch(redis, qs.prefix)
    all_workers = list(workers.values())

    def records(ids) -> dict:
        return {i: redis.hgetall(k.job(i)) for i in ids}

    def all_done(ids) -> bool:
        return all(redis.hget(k.job(i), "status") == b"done" for i in ids)

    try:
        wait_for(lambda: redis.zcount(k.alive, "-inf", "+inf") == 2, 120, "two heartbeats", all_workers)

        # 1. stopped after claiming, before sampling (while it waits to fill its batch)
        first = {seed: submit(call_async, qs, seed) for seed in (1, 2, 3)}
        watch.ids |= set(first.values())
        def first_holder() -> str | None:
            consumers = redis.xpending(k.stream, k.group)["consumers"]
            return next((c["name"].decode() for c in consumers if c["pending"]), None)

        holder = wait_for(first_holder, 10, "a claim", all_workers)
        workers[holder].signal(signal.SIGSTOP)
        held = held_by(redis, qs.prefix, holder)
        assert held, "the stopped worker held nothing"
        wait_for(lambda: all_done(first.values()), 60, "the other worker to finish", all_workers)
        finished = records(first.values())
        workers[holder].signal(signal.SIGCONT)
        wait_for(lambda: workers[holder].log().count("lease of delivery") >= len(held), 20,
                 "the resumed worker to drop its jobs", all_workers)
        assert records(first.values()) == finished  # nothing written by the resumed worker
        for seed, job_id in first.items():
            assert len(starts(sample_log, seed)) == 1, samplings(sample_log)  # one sampling per job
            if job_id in held:
                assert starts(sample_log, seed) != [holder] and finished[job_id][b"attempts"] == b"2"

        # 2. stopped mid-sampling (the case): its sampling ends after the takeover, unstored
        second = {seed: submit(call_async, qs, seed) for seed in (11, 12)}
        watch.ids |= set(second.values())
        sampler = wait_for(lambda: next((w for seed in second for w in starts(sample_log, seed)), None), 15,
                           "a sampling", all_workers)
        workers[sampler].signal(signal.SIGSTOP)
        held = held_by(redis, qs.prefix, sampler)
        dropped_before = workers[sampler].log().count("lease of delivery")
        wait_for(lambda: all_done(second.values()), 60, "the takeover", all_workers)
        finished = records(second.values())
        workers[sampler].signal(signal.SIGCONT)
        wait_for(lambda: workers[sampler].log().count("lease of delivery") >= dropped_before + len(held), 20,
                 "the resumed worker to drop its results", all_workers)
        assert records(second.values()) == finished
        for seed, job_id in second.items():
            if job_id in held:  # sampled by the stopped worker (in flight) and by its successor, stored once
                assert sorted(starts(sample_log, seed)) == sorted([sampler, *(set(workers) - {sampler})])
                meta = jobs.decode_result(redis.get(k.result(job_id)))["meta"]
                assert meta["worker"] != sampler and meta["attempts"] == 2
            else:
                assert len(starts(sample_log, seed)) == 1
        assert watch.backwards() == {}  # no job went from done back to running, no attempt count fell
    finally:
        watch.stop()
        for worker in workers.values():
            worker.stop()
