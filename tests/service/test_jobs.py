"""The Redis Streams job queue (``service.jobs``) against a real redis-server."""

from __future__ import annotations

import time

import numpy as np
import pytest

from service import jobs


def frames(value: float = 0.5, shape: tuple[int, int, int] = (3, 64, 64)) -> np.ndarray:
    return np.full(shape, value, dtype=np.float32)


def test_submit_claim_complete_round_trip(redis, queue_settings, submit_job, call_async):
    job_id, created = submit_job(frames(0.25), members=3, seed=7)
    assert created
    job = call_async(jobs.get_job, queue_settings, job_id)
    assert job["status"] == jobs.QUEUED and job["attempts"] == "0" and float(job["created"]) > 0
    assert call_async(jobs.queue_depth, queue_settings) == 1
    assert call_async(jobs.queue_position, queue_settings, job_id) == 0

    [claim] = jobs.claim_new(redis, queue_settings, "w1", 4, block_ms=100)
    assert (claim.job_id, claim.deliveries) == (job_id, 1)
    request, stored = jobs.load_job(redis, queue_settings, job_id)
    assert request["members"] == 3 and request["seed"] == 7
    np.testing.assert_array_equal(stored, frames(0.25))
    jobs.mark_running(redis, queue_settings, claim, model_version="v1")
    assert call_async(jobs.get_job, queue_settings, job_id)["status"] == jobs.RUNNING
    assert call_async(jobs.queue_position, queue_settings, job_id) is None

    arrays = {"mean": np.ones((2, 4, 4)), "percentiles": np.ones((3, 2, 4, 4)),
              "probability": np.zeros((1, 2, 4, 4)), "thresholds": np.array([1.0]),
              "members": np.ones((3, 2, 4, 4)), "lead_minutes": np.array([5, 10])}
    jobs.complete(redis, queue_settings, claim, jobs.encode_result(arrays, {"model_version": "v1"}),
                  model_version="v1")
    job = call_async(jobs.get_job, queue_settings, job_id)
    assert job["status"] == jobs.DONE and job["model_version"] == "v1" and float(job["finished"]) > 0
    result = jobs.decode_result(call_async(jobs.get_result, queue_settings, job_id))
    assert result["meta"] == {"model_version": "v1"}
    assert result["members"].shape == (3, 2, 4, 4) and list(result["lead_minutes"]) == [5, 10]
    assert call_async(jobs.queue_depth, queue_settings) == 0  # acked and deleted
    keys = jobs.Keys(queue_settings.prefix)
    assert 0 < redis.ttl(keys.result(job_id)) <= queue_settings.result_ttl_seconds
    assert 0 < redis.ttl(keys.job(job_id)) <= queue_settings.result_ttl_seconds
    assert redis.exists(keys.input(job_id)) == 0


def test_submit_raises_queue_full_at_max_queued(redis, queue_settings, submit_job, call_async):
    qs = queue_settings.model_copy(update={"max_queued": 2})
    submit_job(frames(), qs=qs)
    submit_job(frames(), qs=qs)
    with pytest.raises(jobs.QueueFull):
        submit_job(frames(), qs=qs, idempotency_key="third")
    assert call_async(jobs.queue_depth, qs) == 2
    # the refused submission left nothing behind: its key can be used once there is room
    [claim] = jobs.claim_new(redis, qs, "w1", 1, block_ms=100)
    jobs.fail(redis, qs, claim, "gave up", retry=False)
    job_id, created = submit_job(frames(), qs=qs, idempotency_key="third")
    assert created and call_async(jobs.get_job, qs, job_id)["status"] == jobs.QUEUED


def test_resubmission_with_the_same_idempotency_key_returns_the_first_job(queue_settings, submit_job,
                                                                          call_async):
    first, created = submit_job(frames(), idempotency_key="radar-2024-06-01T12:00")
    again, created_again = submit_job(frames(0.9), idempotency_key="radar-2024-06-01T12:00")
    other, _ = submit_job(frames(), idempotency_key="radar-2024-06-01T12:05")
    assert created and not created_again and again == first and other != first
    assert call_async(jobs.queue_depth, queue_settings) == 2


def test_queue_position_counts_the_jobs_ahead(redis, queue_settings, submit_job, call_async):
    ids = [submit_job(frames())[0] for _ in range(3)]
    assert [call_async(jobs.queue_position, queue_settings, i) for i in ids] == [0, 1, 2]
    jobs.claim_new(redis, queue_settings, "w1", 1, block_ms=100)
    assert call_async(jobs.queue_position, queue_settings, ids[2]) == 1
    assert call_async(jobs.queue_position, queue_settings, "no-such-job") is None


def test_a_claim_without_ack_is_taken_over_after_the_lease(redis, queue_settings, submit_job):
    job_id, _ = submit_job(frames())
    [claim] = jobs.claim_new(redis, queue_settings, "dies", 4, block_ms=100)
    assert jobs.reclaim_stale(redis, queue_settings, "rescuer", 4) == []  # lease still running
    time.sleep(queue_settings.lease_seconds + 0.1)
    [taken] = jobs.reclaim_stale(redis, queue_settings, "rescuer", 4)
    assert (taken.job_id, taken.entry, taken.deliveries) == (job_id, claim.entry, 2)
    assert jobs.extend_leases(redis, queue_settings, "dies", [claim]) == 0  # no stealing back


def test_extending_the_lease_keeps_a_long_job(redis, queue_settings, submit_job):
    submit_job(frames())
    [claim] = jobs.claim_new(redis, queue_settings, "busy", 4, block_ms=100)
    for _ in range(4):  # 4 x 0.15 s = twice the lease, extended every half lease
        time.sleep(queue_settings.lease_seconds / 2)
        assert jobs.extend_leases(redis, queue_settings, "busy", [claim]) == 1
    assert jobs.reclaim_stale(redis, queue_settings, "thief", 4) == []


def test_failed_attempts_are_retried_then_dead_lettered(redis, queue_settings, submit_job, call_async):
    job_id, _ = submit_job(frames())
    [claim] = jobs.claim_new(redis, queue_settings, "w1", 4, block_ms=100)
    assert not jobs.fail(redis, queue_settings, claim, "RuntimeError: boom")
    job = call_async(jobs.get_job, queue_settings, job_id)
    assert job["status"] == jobs.QUEUED and "boom" in job["error"]
    time.sleep(queue_settings.lease_seconds + 0.1)
    [retry] = jobs.reclaim_stale(redis, queue_settings, "w2", 4)
    assert retry.deliveries == queue_settings.max_attempts == 2
    assert jobs.fail(redis, queue_settings, retry, "RuntimeError: boom again")
    job = call_async(jobs.get_job, queue_settings, job_id)
    assert job["status"] == jobs.FAILED and "boom again" in job["error"]
    [dead] = jobs.dead_letters(redis, queue_settings)
    assert dead["id"] == job_id and dead["error"] == "RuntimeError: boom again" and dead["attempts"] == "2"
    assert call_async(jobs.queue_depth, queue_settings) == 0
    assert call_async(jobs.get_result, queue_settings, job_id) is None


def test_workers_alive_counts_fresh_heartbeats(redis, queue_settings, call_async):
    qs = queue_settings.model_copy(update={"heartbeat_ttl_seconds": 0.2})
    jobs.heartbeat(redis, qs, "a", {"pid": 1})
    jobs.heartbeat(redis, qs, "b", {"pid": 2})
    assert call_async(jobs.workers_alive, qs) == 2
    jobs.remove_heartbeat(redis, qs, "b")
    assert call_async(jobs.workers_alive, qs) == 1
    time.sleep(0.3)
    assert call_async(jobs.workers_alive, qs) == 0


def test_load_job_rejects_frames_that_do_not_match_their_shape(redis, queue_settings, submit_job):
    job_id, _ = submit_job(frames())
    redis.set(jobs.Keys(queue_settings.prefix).input(job_id), b"\x00" * 10)
    with pytest.raises(jobs.JobDataError, match="do not match shape"):
        jobs.load_job(redis, queue_settings, job_id)
    with pytest.raises(jobs.JobDataError, match="missing"):
        jobs.load_job(redis, queue_settings, "no-such-job")
