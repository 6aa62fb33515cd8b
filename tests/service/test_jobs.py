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
    jobs.mark_running(redis, queue_settings, claim, "w1", model_version="v1")
    assert call_async(jobs.get_job, queue_settings, job_id)["status"] == jobs.RUNNING
    assert call_async(jobs.queue_position, queue_settings, job_id) is None

    arrays = {"mean": np.ones((2, 4, 4)), "percentiles": np.ones((3, 2, 4, 4)),
              "probability": np.zeros((1, 2, 4, 4)), "thresholds": np.array([1.0]),
              "members": np.ones((3, 2, 4, 4)), "lead_minutes": np.array([5, 10])}
    jobs.complete(redis, queue_settings, claim, "w1", jobs.encode_result(arrays, {"model_version": "v1"}),
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
    jobs.fail(redis, qs, claim, "w1", "gave up", retry=False)
    job_id, created = submit_job(frames(), qs=qs, idempotency_key="third")
    assert created and call_async(jobs.get_job, qs, job_id)["status"] == jobs.QUEUED


def test_resubmission_with_the_same_idempotency_key_returns_the_first_job(queue_settings, submit_job,
                                                                          call_async):
    first, created = submit_job(frames(), idempotency_key="radar-2024-06-01T12:00")
    again, created_again = submit_job(frames(), idempotency_key="radar-2024-06-01T12:00")
    other, _ = submit_job(frames(), idempotency_key="radar-2024-06-01T12:05")
    assert created and not created_again and again == first and other != first
    assert call_async(jobs.queue_depth, queue_settings) == 2


def test_an_idempotency_key_reused_with_another_request_is_refused(queue_settings, submit_job):
    first, _ = submit_job(frames(0.5), idempotency_key="k1")
    with pytest.raises(jobs.IdempotencyConflict) as refused:
        submit_job(frames(0.9), idempotency_key="k1")  # other frames
    assert refused.value.job_id == first
    with pytest.raises(jobs.IdempotencyConflict):
        submit_job(frames(0.5), idempotency_key="k1", members=3)  # other options


def test_idempotency_keys_of_two_clients_do_not_meet(call_async, queue_settings):
    request = {"members": 2}
    mine, _ = call_async(jobs.submit, queue_settings, request=request, frames=frames(), idempotency_key="k",
                         scope="client-a")
    theirs, created = call_async(jobs.submit, queue_settings, request=request, frames=frames(),
                                 idempotency_key="k", scope="client-b")
    assert created and theirs != mine


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
    assert jobs.extend_leases(redis, queue_settings, "dies", [claim]) == []  # no stealing back


def test_extending_the_lease_keeps_a_long_job(redis, queue_settings, submit_job):
    submit_job(frames())
    [claim] = jobs.claim_new(redis, queue_settings, "busy", 4, block_ms=100)
    for _ in range(4):  # 4 x 0.15 s = twice the lease, extended every half lease
        time.sleep(queue_settings.lease_seconds / 2)
        assert jobs.extend_leases(redis, queue_settings, "busy", [claim]) == [claim]
    assert jobs.reclaim_stale(redis, queue_settings, "thief", 4) == []


def test_failed_attempts_are_retried_then_dead_lettered(redis, queue_settings, submit_job, call_async):
    job_id, _ = submit_job(frames())
    [claim] = jobs.claim_new(redis, queue_settings, "w1", 4, block_ms=100)
    assert not jobs.fail(redis, queue_settings, claim, "w1", "RuntimeError: boom")
    job = call_async(jobs.get_job, queue_settings, job_id)
    assert job["status"] == jobs.QUEUED and "boom" in job["error"]
    time.sleep(queue_settings.lease_seconds + 0.1)
    [retry] = jobs.reclaim_stale(redis, queue_settings, "w2", 4)
    assert retry.deliveries == queue_settings.max_attempts == 2
    assert jobs.fail(redis, queue_settings, retry, "w2", "RuntimeError: boom again")
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


def _arrays() -> dict:
    return {"mean": np.ones((2, 4, 4)), "percentiles": np.ones((3, 2, 4, 4)),
            "probability": np.zeros((1, 2, 4, 4)), "thresholds": np.array([1.0]),
            "members": np.ones((3, 2, 4, 4)), "lead_minutes": np.array([5, 10])}


def test_a_worker_that_lost_its_lease_writes_nothing(redis, queue_settings, submit_job, call_async):
    """The SIGSTOP case, step by step: 'slow' claims, stalls past its lease, 'fast' takes the job
    over and finishes it; every write 'slow' then tries is refused and changes nothing."""
    qs = queue_settings
    job_id, _ = submit_job(frames())
    [stale] = jobs.claim_new(redis, qs, "slow", 1, block_ms=100)
    jobs.mark_running(redis, qs, stale, "slow", model_version="v1")
    time.sleep(qs.lease_seconds + 0.1)
    [fresh] = jobs.reclaim_stale(redis, qs, "fast", 1)
    assert fresh.deliveries == 2
    with pytest.raises(jobs.LeaseLost):  # the stalled worker resumes mid-batch: too late
        jobs.complete(redis, qs, stale, "slow", jobs.encode_result(_arrays(), {"by": "slow"}),
                      model_version="v1")
    jobs.mark_running(redis, qs, fresh, "fast", model_version="v1")
    jobs.complete(redis, qs, fresh, "fast", jobs.encode_result(_arrays(), {"by": "fast"}), model_version="v1")
    done = call_async(jobs.get_job, qs, job_id)
    assert done["status"] == jobs.DONE and done["attempts"] == "2" and done["worker"] == "fast"
    for write in (lambda: jobs.mark_running(redis, qs, stale, "slow", model_version="v1"),
                  lambda: jobs.complete(redis, qs, stale, "slow", b"again", model_version="v1"),
                  lambda: jobs.fail(redis, qs, stale, "slow", "boom"),
                  lambda: jobs.fail(redis, qs, stale, "slow", "boom", retry=False),
                  lambda: jobs.fail(redis, qs, fresh, "fast", "boom")):  # a finished job, by its owner
        with pytest.raises(jobs.LeaseLost):
            write()
    assert call_async(jobs.get_job, qs, job_id) == done  # nothing went backwards
    assert jobs.decode_result(call_async(jobs.get_result, qs, job_id))["meta"] == {"by": "fast"}
    assert jobs.dead_letters(redis, qs) == []


def test_the_same_consumer_cannot_write_for_an_earlier_delivery(redis, queue_settings, submit_job):
    submit_job(frames())
    [first] = jobs.claim_new(redis, queue_settings, "w1", 1, block_ms=100)
    time.sleep(queue_settings.lease_seconds + 0.1)
    [second] = jobs.reclaim_stale(redis, queue_settings, "w1", 1)  # w1 restarted under the same name
    with pytest.raises(jobs.LeaseLost):
        jobs.mark_running(redis, queue_settings, first, "w1", model_version="v1")
    jobs.mark_running(redis, queue_settings, second, "w1", model_version="v1")


def test_heartbeats_are_one_sorted_set_and_expired_ones_are_dropped(redis, queue_settings, call_async):
    qs = queue_settings.model_copy(update={"heartbeat_ttl_seconds": 0.5})
    keys = jobs.Keys(qs.prefix)
    jobs.heartbeat(redis, qs, "gone", {"pid": 1})
    time.sleep(0.6)
    qs = qs.model_copy(update={"heartbeat_ttl_seconds": 30.0})  # 'here' stays alive on a slow machine
    jobs.heartbeat(redis, qs, "here", {"pid": 2})
    assert call_async(jobs.workers_alive, qs) == 1
    assert [m.decode() for m in redis.zrange(keys.alive, 0, -1)] == ["here"]  # 'gone' removed
    redis.mset({f"{qs.prefix}:noise:{i}": b"x" for i in range(5000)})  # readiness does not scan keys
    assert call_async(jobs.workers_alive, qs) == 1


def test_dead_consumers_holding_nothing_leave_the_group(redis, queue_settings, submit_job):
    qs = queue_settings
    keys = jobs.Keys(qs.prefix)
    for _ in range(3):
        submit_job(frames())
    jobs.heartbeat(redis, qs, "alive-idle", {})
    for name in ("alive-idle", "dead-idle"):  # each finishes one job: registered, holding nothing
        [claim] = jobs.claim_new(redis, qs, name, 1, block_ms=100)
        jobs.fail(redis, qs, claim, name, "gave up", retry=False)
    jobs.claim_new(redis, qs, "dead-holding", 1, block_ms=100)
    assert jobs.sweep_consumers(redis, qs) == ["dead-idle"]
    names = {c["name"].decode() for c in redis.xinfo_consumers(keys.stream, keys.group)}
    assert names == {"alive-idle", "dead-holding"}  # a dead consumer's jobs are not dropped
    time.sleep(qs.lease_seconds + 0.1)
    [taken] = jobs.reclaim_stale(redis, qs, "alive-idle", 4)
    assert jobs.sweep_consumers(redis, qs) == ["dead-holding"]
    redis.delete(keys.stream)
    assert jobs.sweep_consumers(redis, qs) == []  # no stream (Redis flushed): nothing to sweep
