"""The batched ensemble worker (``service.worker``) against a real redis-server."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint, read_manifest
from model.nowcast import Nowcaster
from model.options import NowcastDefaults
from model.precision import bfloat16_supported
from service import jobs
from service.worker import Worker
from tests.service.helpers import nowcaster_of

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "checkpoints" / "default"


def frames(value: float, shape: tuple[int, int, int] = (3, 100, 130)) -> np.ndarray:
    return np.full(shape, value, dtype=np.float32)


def result_of(call_async, qs, job_id: str) -> dict:
    return jobs.decode_result(call_async(jobs.get_result, qs, job_id))


def status_of(call_async, qs, job_id: str) -> dict[str, str]:
    return call_async(jobs.get_job, qs, job_id)


def test_compatible_jobs_are_sampled_in_one_forecast_call(settings, fake_model, submit_job, call_async):
    values = (0.3, 0.5)
    same = [submit_job(frames(v), members=2, seed=10 + i, thresholds=[0.1, 1.0])[0]
            for i, v in enumerate(values)]
    other = submit_job(frames(0.4), members=3, seed=99)[0]
    unmatched = submit_job(frames(0.4), members=2, seed=50, matching="none")[0]
    grounded = submit_job(frames(0.4), members=2, seed=60, advection="none")[0]
    worker = Worker(settings, nowcaster=nowcaster_of(fake_model), name="w1")
    assert worker.step(block_ms=100) + worker.step(block_ms=100) == 5  # batch_max_jobs is 4
    assert sorted(fake_model.batch_sizes) == [1, 1, 1, 2]
    # members, guidance, matching and advection are per call: jobs that differ in any are sampled apart
    assert sorted((call[2], call[3], call[4]) for call in fake_model.calls) == [
        ([10, 11], "cdf", "bulk"), ([50], "none", "bulk"), ([60], "cdf", "none"), ([99], "cdf", "bulk")]
    assert result_of(call_async, settings.queue, unmatched)["meta"]["matching"] == "none"
    assert result_of(call_async, settings.queue, grounded)["meta"]["advection"] == "none"
    transform = fake_model.config.transform
    for job_id, value in zip(same, values, strict=True):
        job = status_of(call_async, settings.queue, job_id)
        assert job["status"] == jobs.DONE and job["model_version"] == "fake-1" and job["attempts"] == "1"
        result = result_of(call_async, settings.queue, job_id)
        assert result["members"].shape == (2, 4, 100, 130) and result["mean"].shape == (4, 100, 130)
        assert result["percentiles"].shape == (3, 4, 100, 130)
        assert result["probability"].shape == (2, 4, 100, 130)
        assert list(result["lead_minutes"]) == [5, 10, 15, 20]
        expected = transform.from_pixel(np.array([value, value + 0.01], np.float32), "mm/h").mean()
        np.testing.assert_allclose(result["mean"], expected, rtol=1e-5)  # its own input, not a batch-mate's
        meta = result["meta"]
        assert meta["batch_jobs"] == 2 and meta["timestep_minutes"] == 5
        assert meta["request"]["seed"] == meta["seed"]
        assert set(meta["timings"]) >= {"queued_seconds", "sampling_seconds"}
    assert result_of(call_async, settings.queue, other)["members"].shape[0] == 3
    assert call_async(jobs.queue_depth, settings.queue) == 0


def test_guidance_share_reaches_the_model_and_the_result(settings, fake_model, submit_job, call_async):
    default = submit_job(frames(0.4), seed=1)[0]
    share = submit_job(frames(0.4), seed=2, guidance_share=0.4)[0]
    worker = Worker(settings, nowcaster=nowcaster_of(fake_model), name="w1")
    assert worker.step(block_ms=100) == 2
    # a different share is a different call: the denoiser runs another number of passes
    assert sorted((call[2], call[5]) for call in fake_model.calls) == [([1], 1.0), ([2], 0.4)]
    assert result_of(call_async, settings.queue, default)["meta"]["guidance_share"] == 1.0
    assert result_of(call_async, settings.queue, share)["meta"]["guidance_share"] == 0.4



def test_a_job_gets_the_motion_spread_of_its_time_step(settings, fake_model, submit_job, call_async):
    defaults = NowcastDefaults(step_minutes=(2, 5), cell_km=4.0, advection="dense", motion_spread=1.25,
                               motion_spread_by_step=((2, 1.0), (5, 1.25)))
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(minutes=10)
    two = [start + dt.timedelta(minutes=2 * i) for i in range(3)]
    five = submit_job(frames(0.4), seed=1)[0]
    short = submit_job(frames(0.4), seed=2, timestamps=two, step_minutes=2)[0]
    asked = submit_job(frames(0.4), seed=3, timestamps=two, step_minutes=2, motion_spread=0.5)[0]
    worker = Worker(settings, nowcaster=Nowcaster(fake_model, defaults, model_version="fake-1"), name="w1")
    assert worker.step(block_ms=100) == 3
    metas = [result_of(call_async, settings.queue, job)["meta"] for job in (five, short, asked)]
    assert [(m["timestep_minutes"], m["motion_spread"]) for m in metas] == [(5, 1.25), (2, 1.0), (2, 0.5)]


def test_detail_reaches_the_model_and_the_result(settings, fake_model, submit_job, call_async):
    default = submit_job(frames(0.4), seed=1)[0]
    renewed = submit_job(frames(0.4), seed=2, detail="renew")[0]
    worker = Worker(settings, nowcaster=nowcaster_of(fake_model), name="w1")
    assert worker.step(block_ms=100) == 2
    assert sorted((call[2], call[6]) for call in fake_model.calls) == [([1], "fade"), ([2], "renew")]
    assert result_of(call_async, settings.queue, default)["meta"]["detail"] == "fade"
    assert result_of(call_async, settings.queue, renewed)["meta"]["detail"] == "renew"

def test_a_job_held_by_a_dead_worker_is_taken_over_after_the_lease(settings, redis, fake_model, submit_job,
                                                                   call_async):
    job_id, _ = submit_job(frames(0.5))
    jobs.claim_new(redis, settings.queue, "crashed-worker", 4, block_ms=100)  # claims, never acks
    worker = Worker(settings, nowcaster=nowcaster_of(fake_model), name="rescuer")
    assert worker.step(block_ms=10) == 0  # the lease is still running
    time.sleep(settings.queue.lease_seconds + 0.1)
    assert worker.step(block_ms=10) == 1
    job = status_of(call_async, settings.queue, job_id)
    assert job["status"] == jobs.DONE and job["attempts"] == "2"
    assert result_of(call_async, settings.queue, job_id)["meta"]["worker"] == "rescuer"


def test_a_failing_job_is_retried_then_dead_lettered_and_the_worker_goes_on(settings, redis, make_fake_model,
                                                                            submit_job, call_async):
    model = make_fake_model(fail_seeds=(13,))
    bad, _ = submit_job(frames(0.5), seed=13)
    good, _ = submit_job(frames(0.5), seed=1)
    worker = Worker(settings, nowcaster=nowcaster_of(model), name="w1")
    assert worker.step(block_ms=100) == 2
    assert model.batch_sizes == [2, 1, 1]  # the failed batch re-run job by job
    assert status_of(call_async, settings.queue, good)["status"] == jobs.DONE
    job = status_of(call_async, settings.queue, bad)
    assert job["status"] == jobs.QUEUED and "boom" in job["error"]

    time.sleep(settings.queue.lease_seconds + 0.1)
    assert worker.step(block_ms=10) == 1  # second and last attempt
    job = status_of(call_async, settings.queue, bad)
    assert job["status"] == jobs.FAILED and "RuntimeError: boom" in job["error"] and job["attempts"] == "2"
    [dead] = jobs.dead_letters(redis, settings.queue)
    assert dead["id"] == bad and "boom" in dead["error"]

    after, _ = submit_job(frames(0.5), seed=2)
    assert worker.step(block_ms=100) == 1
    assert status_of(call_async, settings.queue, after)["status"] == jobs.DONE


def test_a_job_delivered_more_than_max_attempts_is_dead_lettered_unrun(settings, redis, fake_model,
                                                                       submit_job, call_async):
    job_id, _ = submit_job(frames(0.5))
    jobs.claim_new(redis, settings.queue, "crash-1", 1, block_ms=100)
    time.sleep(settings.queue.lease_seconds + 0.1)
    jobs.reclaim_stale(redis, settings.queue, "crash-2", 1)
    time.sleep(settings.queue.lease_seconds + 0.1)
    worker = Worker(settings, nowcaster=nowcaster_of(fake_model), name="w3")
    assert worker.step(block_ms=10) == 1
    assert fake_model.calls == []
    job = status_of(call_async, settings.queue, job_id)
    assert job["status"] == jobs.FAILED and "delivered 3 times" in job["error"]


def test_bad_stored_frames_and_stale_inputs_fail_with_their_message(settings, redis, fake_model, submit_job,
                                                                   call_async):
    corrupt, _ = submit_job(frames(0.5))
    redis.set(jobs.Keys(settings.queue.prefix).input(corrupt), b"garbage")
    wrong_t, _ = submit_job(frames(0.5, (2, 64, 64)))
    now = dt.datetime.now(dt.timezone.utc)
    old = [now - dt.timedelta(hours=2, minutes=5 * k) for k in (2, 1, 0)]
    stale, _ = submit_job(frames(0.5), timestamps=old)
    fresh, _ = submit_job(frames(0.5), timestamps=[now - dt.timedelta(minutes=5 * k) for k in (2, 1, 0)])
    qs = settings.queue.model_copy(update={"max_age_minutes": 30.0})
    worker = Worker(settings.model_copy(update={"queue": qs}), nowcaster=nowcaster_of(fake_model))
    assert worker.step(block_ms=100) == 4
    assert "do not match shape" in status_of(call_async, qs, corrupt)["error"]
    assert "needs 3 input frames" in status_of(call_async, qs, wrong_t)["error"]
    job = status_of(call_async, qs, stale)
    assert job["status"] == jobs.FAILED and "max_age_minutes" in job["error"]  # no retry for stale input
    assert status_of(call_async, qs, fresh)["status"] == jobs.DONE


def test_run_keeps_a_heartbeat_and_stops_on_request(settings, fake_model, submit_job, call_async):
    worker = Worker(settings, nowcaster=nowcaster_of(fake_model), name="looping")
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        job_id, _ = submit_job(frames(0.5))
        deadline = time.monotonic() + 10
        while status_of(call_async, settings.queue, job_id)["status"] != jobs.DONE:
            assert time.monotonic() < deadline, "the worker loop did not finish the job"
            time.sleep(0.05)
        assert call_async(jobs.workers_alive, settings.queue) == 1
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert call_async(jobs.workers_alive, settings.queue) == 0
    assert worker.metrics.registry.get_sample_value("nowcast_jobs_done_total") == 1


@pytest.mark.slow
def test_the_real_checkpoint_serves_a_job_end_to_end(settings, submit_job, call_async):
    model = load_checkpoint(CHECKPOINT)
    t_in = model.config.t_in
    rng = np.random.default_rng(0)
    pixels = (rng.random((t_in, 100, 130)) * 0.6).astype(np.float32)
    pixels[:, :8, :8] = np.nan
    job_id, _ = submit_job(pixels, members=2, seed=3, thresholds=[0.1, 1.0, 5.0], detail_lifetime=30.0,
                           extrapolation_lifetime=8.0, blend_spread=0.5, estimate_lifetime=30.0,
                           antithetic=False)
    worker = Worker(settings, nowcaster=Nowcaster.from_checkpoint(CHECKPOINT))  # steps=2 from the settings
    assert worker.step(block_ms=100) == 1
    job = status_of(call_async, settings.queue, job_id)
    assert job["status"] == jobs.DONE, job["error"]
    result = result_of(call_async, settings.queue, job_id)
    t_out = model.config.t_out
    assert result["members"].shape == (2, t_out, 100, 130)
    assert result["mean"].shape == (t_out, 100, 130) and result["percentiles"].shape == (3, t_out, 100, 130)
    assert result["probability"].shape == (3, t_out, 100, 130)
    valid = result["members"][..., 8:, 8:]
    assert np.isfinite(valid).all() and (valid >= 0).all()
    assert np.isnan(result["mean"][:, :8, :8]).all()
    probability = result["probability"][..., 8:, 8:]
    assert ((probability >= 0) & (probability <= 1)).all()
    assert result["meta"]["model_version"] == read_manifest(CHECKPOINT)["model_version"]
    assert list(result["lead_minutes"][:2]) == [5, 10]
    assert result["meta"]["detail_lifetime"] == 30.0  # the request's options, as sampled
    assert result["meta"]["extrapolation_lifetime"] == 8.0
    assert result["meta"]["blend_spread"] == 0.5
    assert result["meta"]["estimate_lifetime"] == 30.0
    assert result["meta"]["antithetic"] is False  # the checkpoint's default is True


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_a_member_does_not_depend_on_the_jobs_batched_with_it(settings, submit_job, call_async, precision):
    """Same input and seed -> the same nowcast, alone or sampled in one call with another job:
    to float rounding in float32; in bfloat16 (the worker's ``auto`` on CPUs with native
    kernels), to bfloat16 rounding, which batched kernels do differently."""
    if precision == "bfloat16" and not bfloat16_supported(torch.device("cpu")):
        pytest.skip("this CPU has no native bfloat16 kernels")
    model = load_checkpoint(CHECKPOINT)
    rng = np.random.default_rng(1)
    pixels = (rng.random((model.config.t_in, 64, 64)) * 0.7).astype(np.float32)
    worker = Worker(settings, nowcaster=Nowcaster.from_checkpoint(CHECKPOINT, precision=precision),
                    name="w-batch")
    alone, _ = submit_job(pixels, members=2, seed=5)
    assert worker.step(block_ms=100) == 1
    batched, _ = submit_job(pixels, members=2, seed=5)
    other, _ = submit_job(pixels[::-1].copy(), members=2, seed=9)
    assert worker.step(block_ms=100) == 2
    first, second = (result_of(call_async, settings.queue, job) for job in (alone, batched))
    assert first["meta"]["batch_jobs"] == 1 and second["meta"]["batch_jobs"] == 2
    batched_members, alone_members = second["members"], first["members"]
    assert np.array_equal(np.isnan(batched_members), np.isnan(alone_members))
    difference = np.abs(batched_members - alone_members)
    if precision == "float32":
        # batched kernels round differently (about 1e-6); cdf matching may then swap the matched
        # values of two near-tied cells, so a few cells differ, but each field has the same values
        assert np.nanmean(difference <= 1e-3) > 0.999
        k, t = alone_members.shape[:2]
        np.testing.assert_allclose(np.sort(batched_members.reshape(k, t, -1)),
                                   np.sort(alone_members.reshape(k, t, -1)), atol=1e-3)
    else:  # measured: mean 0.006 mm/h on 1.4 mm/h (0.4 %), 99th percentile 0.06 mm/h
        assert np.nanmean(difference) < 0.01 * np.nanmean(alone_members)
        assert np.nanpercentile(difference, 99) < 0.1 * np.nanmax(alone_members)
    other_members = result_of(call_async, settings.queue, other)["members"]
    assert np.nanmean(np.abs(other_members - alone_members)) > 10 * np.nanmean(difference)


def _start_worker(settings, name: str, log_path: Path, **env) -> subprocess.Popen:
    """``python -m service.worker`` on the test queue; its log goes to ``log_path``."""
    environment = {**os.environ, "NOWCAST_REDIS__URL": settings.redis.url,
                   "NOWCAST_QUEUE__PREFIX": settings.queue.prefix, "NOWCAST_WORKER__NAME": name,
                   "NOWCAST_WORKER__METRICS_PORT": "0", "NOWCAST_MODEL__THREADS": "1",
                   "NOWCAST_MODEL__CHECKPOINT": str(CHECKPOINT), **env}
    with open(log_path, "wb") as log:  # a file, not a pipe nobody reads, which could fill and block
        return subprocess.Popen([sys.executable, "-m", "service.worker"], cwd=ROOT, env=environment,
                                stdout=subprocess.DEVNULL, stderr=log)


def _wait(condition, seconds: float, what: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"worker exited ({process.returncode}) before {what}:\n{log_path.read_text()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{log_path.read_text()}"
        time.sleep(0.1)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)


@pytest.mark.slow
def test_a_killed_worker_process_loses_no_job(settings, redis, submit_job, call_async, tmp_path):
    keys = jobs.Keys(settings.queue.prefix)
    log_path = tmp_path / "doomed.log"
    process = _start_worker(settings, "doomed", log_path, NOWCAST_MODEL__STEPS="50")
    try:
        _wait(lambda: redis.exists(keys.worker("doomed")), 120, "the worker heartbeat", process, log_path)
        pixels = np.full((5, 128, 128), 0.4, np.float32)
        job_id, _ = submit_job(pixels, members=8)  # 8 members x 50 steps: many seconds of sampling
        _wait(lambda: status_of(call_async, settings.queue, job_id)["status"] == jobs.RUNNING, 60,
              "the job to start", process, log_path)
        running = status_of(call_async, settings.queue, job_id)
    finally:
        _stop(process)
    doomed_log = log_path.read_text()
    assert running["attempts"] == "1", f"the first attempt did not reach sampling:\n{doomed_log}"
    worker = Worker(settings, nowcaster=Nowcaster.from_checkpoint(CHECKPOINT), name="rescuer")
    deadline = time.monotonic() + 30
    while worker.step(block_ms=100) == 0:
        assert time.monotonic() < deadline, "the orphaned job was not taken over"
    job = status_of(call_async, settings.queue, job_id)
    assert job["status"] == jobs.DONE and job["attempts"] == "2", f"{job}\nfirst worker's log:\n{doomed_log}"


@pytest.mark.slow
def test_sigterm_stops_an_idle_worker_process_cleanly(settings, redis, tmp_path):
    keys = jobs.Keys(settings.queue.prefix)
    log_path = tmp_path / "polite.log"
    process = _start_worker(settings, "polite", log_path)
    try:
        _wait(lambda: redis.exists(keys.worker("polite")), 120, "the worker heartbeat", process, log_path)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log_path.read_text()
    finally:
        _stop(process)
    assert not redis.exists(keys.worker("polite"))


def test_a_worker_started_before_any_submission_creates_the_group(settings, redis, fake_model, submit_job,
                                                                   call_async):
    worker = Worker(settings, nowcaster=nowcaster_of(fake_model))
    assert worker.step(block_ms=10) == 0  # no stream and no group yet
    redis.flushall()  # Redis restarted without persistence: the group is gone again
    assert worker.step(block_ms=10) == 0
    job_id, _ = submit_job(frames(0.5))
    assert worker.step(block_ms=100) == 1
    assert status_of(call_async, settings.queue, job_id)["status"] == jobs.DONE


def test_a_worker_refuses_more_ddim_steps_than_the_checkpoint_has(settings, fake_model):
    too_many = settings.model_copy(update={"model": settings.model.model_copy(update={"steps": 500})})
    with pytest.raises(ValueError, match=r"NOWCAST_MODEL__STEPS\) must be in \[1, 50\].*got 500"):
        Worker(too_many, nowcaster=nowcaster_of(fake_model))


def test_the_worker_touches_its_liveness_file_at_every_heartbeat(settings, fake_model, tmp_path):
    alive = tmp_path / "worker-alive"
    with_file = settings.model_copy(update={"worker": settings.worker.model_copy(
        update={"liveness_file": str(alive)})})
    worker = Worker(with_file, nowcaster=nowcaster_of(fake_model), name="probed")
    assert worker.step(block_ms=10) == 0
    first = alive.stat().st_mtime
    time.sleep(0.05)
    worker.step(block_ms=10)
    assert alive.stat().st_mtime > first
