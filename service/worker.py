"""The sampling worker: load the checkpoint once, then claim, batch, sample, post-process, ack.

Run it with ``python -m service.worker`` (settings from ``NOWCAST_*``, see ``service.settings``).

One loop iteration (:meth:`Worker.step`): refresh the heartbeat; take over jobs whose lease
ran out, then claim new ones, waiting ``batch_wait_ms`` after the first for more, up to
``batch_max_jobs``; group the jobs by (members, guidance, matching, advection, padded height and width) and
sample each group in ONE ``model.forecast`` call with one seed per job (a member does not
depend on its batch-mates); convert members to mm/h, crop them to the request's grid, compute
the products, store the results, acknowledge. While a batch samples, a thread keeps the
heartbeat and the jobs' leases fresh, so a long batch is not taken over.

A job that raises fails alone (a failing batch is re-run job by job): it is retried after its
lease, and dead-lettered after ``max_attempts`` deliveries; the worker keeps serving. SIGTERM
or SIGINT finish the current batch and exit; a worker killed mid-batch loses nothing, its jobs
are taken over once their leases run out.

A worker that stalled past its lease (SIGSTOP, a long pause) may find its jobs taken over when
it resumes. Every write it makes is fenced (``service.jobs``: :class:`~service.jobs.LeaseLost`),
and it checks that it still holds its jobs right before sampling them, so it drops a lost job:
no state goes backwards, no second result is stored, and a job it lost before sampling is not
sampled again. (A sampling already running when the worker stalled finishes, and its result is
dropped.)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

import numpy as np
import redis
import torch
from pydantic import ValidationError

from model.grid import Grid
from model.nowcast import EnsembleNowcast, Nowcaster, NowcastInput
from model.options import REQUEST_OPTIONS, NowcastOptions, utc
from model.precision import resolve_precision
from service import jobs
from service.contract import JobRequest, ResultMeta
from service.metrics import WorkerMetrics
from service.redis_client import sync_client
from service.secrets import install_secret_filter
from service.settings import Settings, get_settings

log = logging.getLogger(__name__)

IDLE_POLL_MS = 1000  # how long an idle worker blocks on the stream before re-checking its stop flag
T = TypeVar("T")
SWEEP_SECONDS = 60.0  # how often a worker removes dead consumers from the group
WRITE_RETRY_LEASES, WRITE_RETRY_SECONDS = 4, 0.25  # how long and how often to retry a write Redis missed


class StaleJob(Exception):
    """The job's input is older than ``queue.max_age_minutes``: failed without retry."""


@dataclass
class PreparedJob:
    """A claimed job ready to sample: its request, resolved options and model-grid input."""

    claim: jobs.Claim
    request: JobRequest
    options: NowcastOptions
    input: NowcastInput
    created: float
    started: float
    observed: np.ndarray  # (H, W) the last input frame in mm/h, NaN = no data

    @property
    def group_key(self) -> tuple[Any, ...]:
        """Jobs with equal keys share one model call: options but the seed, padded shape, step."""
        return self.options.group_key(), self.input.pixels.shape, self.input.step_minutes


def request_grid(request: JobRequest, shape: tuple[int, int]) -> Grid:
    """The :class:`~model.grid.Grid` a job's request describes."""
    return Grid(shape=(int(shape[0]), int(shape[1])), cell_km=request.grid_spacing_km, crs=request.crs,
                y=None if request.y is None else np.asarray(request.y, dtype=np.float64),
                x=None if request.x is None else np.asarray(request.x, dtype=np.float64),
                xy_units=request.xy_units)


def resolve_device(name: str) -> torch.device:
    """``"auto"``: cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _input_age_minutes(request: JobRequest, created: float) -> float:
    if request.timestamps:
        last = utc(request.timestamps[-1])
        return (dt.datetime.now(dt.timezone.utc) - last).total_seconds() / 60
    return (time.time() - created) / 60


class Worker:
    """One consumer of the job stream, holding one model.

    Parameters
    ----------
    settings : the service settings (queue, model, worker groups).
    nowcaster : the nowcast pipeline of a loaded model; default: the checkpoint
        ``settings.model.checkpoint`` on ``settings.model.device``.
    redis_client : default ``sync_client(settings.redis.url)``.
    name : consumer name; default ``settings.worker.name`` or ``host-pid``.
    """

    def __init__(self, settings: Settings, *, nowcaster: Nowcaster | None = None,
                 redis_client: redis.Redis | None = None, name: str | None = None) -> None:
        self.settings = settings
        self.queue = settings.queue
        if settings.model.threads > 0:
            torch.set_num_threads(settings.model.threads)
        device = resolve_device(settings.model.device)
        self.precision = resolve_precision(settings.model.precision, device)
        if nowcaster is None:
            nowcaster = Nowcaster.from_checkpoint(settings.model.checkpoint, device=device,
                                                  precision=self.precision)
        if settings.model.steps is not None:  # the operator's choice of DDIM steps
            train_steps = nowcaster.config.diffusion.train_steps
            if not 1 <= settings.model.steps <= train_steps:
                raise ValueError(f"model.steps (NOWCAST_MODEL__STEPS) must be in [1, {train_steps}] "
                                 f"for this checkpoint, got {settings.model.steps}")
            nowcaster.defaults = dataclasses.replace(nowcaster.defaults, steps=settings.model.steps)
        self.nowcaster = nowcaster
        self.model_version = nowcaster.model_version
        self.redis = redis_client or sync_client(settings.redis.url)
        self.name = name or settings.worker.name or f"{socket.gethostname()}-{os.getpid()}"
        self.metrics = WorkerMetrics()
        self.metrics.model.info({"model_version": self.model_version, "worker": self.name,
                                 "checkpoint": settings.model.checkpoint,
                                 "precision": self.precision})
        self.jobs_done = 0
        self._since = time.time()
        self._held: dict[str, jobs.Claim] = {}
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    # ------------------------------------------------------------------ loop

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set; Redis outages are logged and waited out."""
        log.info("worker %s serving %s, denoiser in %s (defaults %s)", self.name, self.model_version,
                 self.precision, self.nowcaster.defaults.to_dict())
        try:
            while not stop.is_set():
                try:
                    self.step()
                except redis.RedisError as err:
                    log.error("worker %s: redis error (%s); retrying in 1 s", self.name, err)
                    stop.wait(1.0)
                except Exception:  # a bug outside any one job: log it and keep serving
                    log.exception("worker %s: unexpected error in the loop; retrying in 1 s", self.name)
                    stop.wait(1.0)
        finally:
            try:
                jobs.remove_heartbeat(self.redis, self.queue, self.name)
            except redis.RedisError:
                pass
            log.info("worker %s stopped after %d jobs", self.name, self.jobs_done)

    def step(self, *, block_ms: int = IDLE_POLL_MS) -> int:
        """Claim one batch (waiting up to ``block_ms`` for a first job) and process it.

        Returns the number of jobs claimed.
        """
        self._heartbeat()
        self._sweep()
        self.metrics.queue_depth.set(jobs.sync_queue_depth(self.redis, self.queue))
        claims = self._claim_batch(block_ms)
        if claims:
            self._process(claims)
        return len(claims)

    def _claim_batch(self, block_ms: int) -> list[jobs.Claim]:
        r, qs, n = self.redis, self.queue, self.queue.batch_max_jobs
        claims = jobs.reclaim_stale(r, qs, self.name, n)
        for claim in claims:
            log.warning("job %s: taken over after its lease ran out (delivery %d)", claim.job_id,
                        claim.deliveries)
        if len(claims) < n:
            claims += jobs.claim_new(r, qs, self.name, n - len(claims), block_ms=0 if claims else block_ms)
        deadline = time.monotonic() + qs.batch_wait_ms / 1000
        while claims and len(claims) < n:
            left_ms = int((deadline - time.monotonic()) * 1000)
            more = jobs.claim_new(r, qs, self.name, n - len(claims), block_ms=left_ms) if left_ms > 0 else []
            if not more:
                break
            claims += more
        return claims

    def _process(self, claims: list[jobs.Claim]) -> None:
        with self._keep_alive(claims):
            ready = []
            for claim in claims:
                if claim.deliveries > self.queue.max_attempts:
                    self._fail(claim, RuntimeError(
                        f"delivered {claim.deliveries} times without a result (did a worker crash on it?)"),
                        retry=False)
                    continue
                try:
                    ready.append(self._prepare(claim))
                except jobs.LeaseLost as err:
                    self._drop(claim, err)
                except Exception as err:  # bad stored data must not stop the worker
                    self._fail(claim, err, retry=not isinstance(err, StaleJob))
            groups: dict[tuple[Any, ...], list[PreparedJob]] = {}
            for job in ready:
                groups.setdefault(job.group_key, []).append(job)
            for group in groups.values():
                group = self._still_held(group)
                if group:
                    self._sample(group)

    # ------------------------------------------------------------------ one job / one group

    def _prepare(self, claim: jobs.Claim) -> PreparedJob:
        config = self.nowcaster.config
        stored, frames = jobs.load_job(self.redis, self.queue, claim.job_id)
        created = jobs.mark_running(self.redis, self.queue, claim, self.name,
                                    model_version=self.model_version)
        log.info("job %s: running (delivery %d, frames %s)", claim.job_id, claim.deliveries,
                 "x".join(map(str, frames.shape)))
        try:
            request = JobRequest.model_validate(stored)
        except ValidationError as err:
            raise jobs.JobDataError(f"job {claim.job_id}: unreadable request ({err})") from err
        if self.queue.max_age_minutes is not None:
            age = _input_age_minutes(request, created)
            if age > self.queue.max_age_minutes:
                raise StaleJob(f"input is {age:.1f} min old, over "
                               f"max_age_minutes={self.queue.max_age_minutes}")
        if frames.shape[0] != config.t_in:
            raise jobs.JobDataError(f"the model needs {config.t_in} input frames, "
                                    f"the job has {frames.shape[0]}")
        if request.members is not None and not 1 <= request.members <= self.settings.model.max_members:
            raise ValueError(f"members must be in 1..{self.settings.model.max_members}, "
                             f"got {request.members}")
        options = self.nowcaster.options(seed=request.seed,
                                         **request.model_dump(include=set(REQUEST_OPTIONS)))
        prepared = self.nowcaster.prepare(
            frames, unit="pixel", timestamps=request.timestamps or None, step_minutes=request.step_minutes,
            grid=request_grid(request, frames.shape[1:]), seed=request.seed, advection=options.advection,
            max_side=self.settings.model.max_side)
        observed = config.transform.from_pixel(frames[-1], "mm/h").astype(np.float32)
        return PreparedJob(claim=claim, request=request, options=options, input=prepared, created=created,
                           started=time.time(), observed=observed)

    def _sample(self, group: list[PreparedJob]) -> None:
        """One model call for ``group``; a failing batch is re-run job by job."""
        ids = [job.claim.job_id for job in group]
        first = group[0]
        try:
            nowcasts = self.nowcaster.sample([job.input for job in group], first.options)
        except Exception as err:
            if len(group) > 1:
                log.warning("jobs %s: batched forecast failed (%s); running them one by one", ids, err)
                for job in group:
                    self._sample([job])
            else:
                self._fail(first.claim, err)
            return
        sampling = nowcasts[0].timings["sampling_seconds"]
        self.metrics.batch_size.observe(len(group))
        self.metrics.sampling_seconds.observe(sampling)
        log.info("jobs %s: sampled %d x %d members in %.2f s", ids, len(group), first.options.members,
                 sampling)
        for job, nowcast in zip(group, nowcasts, strict=True):
            try:
                self._finish(job, nowcast)
            except jobs.LeaseLost as err:
                self._drop(job.claim, err)
            except Exception as err:
                self._fail(job.claim, err)

    def _finish(self, job: PreparedJob, nowcast: EnsembleNowcast) -> None:
        """Store ``nowcast``'s products and acknowledge the job."""
        opts = nowcast.options
        meta = ResultMeta(
            model_version=self.model_version, timestep_minutes=nowcast.step_minutes, seed=opts.seed,
            **opts.model_arguments(),
            batch_jobs=nowcast.batch_jobs,
            worker=self.name, attempts=job.claim.deliveries,
            timings={"queued_seconds": round(job.started - job.created, 3), **nowcast.timings},
            request=job.request)
        arrays = {"mean": nowcast.mean, "percentiles": nowcast.percentiles,
                  "probability": nowcast.probability, "thresholds": nowcast.thresholds,
                  "members": nowcast.members, "lead_minutes": nowcast.lead_minutes, "observed": job.observed}
        blob = jobs.encode_result(arrays, meta.model_dump(mode="json"))
        self._until_redis_answers(job.claim, lambda: jobs.complete(
            self.redis, self.queue, job.claim, self.name, blob, model_version=self.model_version))
        self._release(job.claim)
        self.jobs_done += 1
        latency = time.time() - job.created
        self.metrics.jobs_done.inc()
        self.metrics.latency_seconds.observe(latency)
        log.info("job %s: done in %.2f s after submission (%d kB)", job.claim.job_id, latency,
                 len(blob) // 1024)

    def _until_redis_answers(self, claim: jobs.Claim, write: Callable[[], T]) -> T:
        """``write()`` (a fenced write of ``claim``'s outcome), retried while Redis is unreachable
        for up to ``WRITE_RETRY_LEASES`` leases: a result sampled during a Redis outage is stored
        when Redis is back, unless another worker has taken the job over meanwhile (LeaseLost)."""
        deadline = time.monotonic() + WRITE_RETRY_LEASES * self.queue.lease_seconds
        while True:
            try:
                return write()
            except (redis.ConnectionError, redis.TimeoutError) as err:
                if time.monotonic() > deadline:
                    raise
                log.warning("job %s: redis unreachable (%s); retrying its write", claim.job_id, err)
                time.sleep(WRITE_RETRY_SECONDS)

    def _still_held(self, group: list[PreparedJob]) -> list[PreparedJob]:
        """The jobs of ``group`` this worker still holds (leases extended); the others are dropped."""
        held = {c.entry for c in jobs.extend_leases(self.redis, self.queue, self.name,
                                                    [job.claim for job in group])}
        for job in group:
            if job.claim.entry not in held:
                self._drop(job.claim, jobs.LeaseLost("taken over by another worker before sampling"))
        return [job for job in group if job.claim.entry in held]

    def _drop(self, claim: jobs.Claim, err: BaseException) -> None:
        """Forget a job this worker lost: another worker owns it now; write nothing."""
        self._release(claim)
        self.metrics.failures.labels(outcome="lease_lost").inc()
        log.warning("job %s: lease of delivery %d lost (%s); dropped", claim.job_id, claim.deliveries, err)

    def _fail(self, claim: jobs.Claim, err: BaseException, *, retry: bool = True) -> None:
        self._release(claim)
        message = f"{type(err).__name__}: {err}"
        try:
            dead = self._until_redis_answers(
                claim, lambda: jobs.fail(self.redis, self.queue, claim, self.name, message, retry=retry))
        except jobs.LeaseLost as lost:
            self._drop(claim, lost)
            return
        self.metrics.failures.labels(outcome="dead_letter" if dead else "retry").inc()
        # A traceback only for what is not a plain data problem.
        trace = None if isinstance(err, ValueError | StaleJob) else err
        if dead:
            log.error("job %s: failed on delivery %d, dead-lettered: %s", claim.job_id, claim.deliveries,
                      message, exc_info=trace)
        else:
            log.warning("job %s: attempt %d/%d failed, retried after the lease: %s", claim.job_id,
                        claim.deliveries, self.queue.max_attempts, message, exc_info=trace)

    # ------------------------------------------------------------------ liveness

    def _heartbeat(self, *, busy: bool = False) -> None:
        liveness = self.settings.worker.liveness_file
        if liveness:  # for a liveness probe: the loop or the lease thread is alive, Redis or not
            with open(liveness, "a"):
                os.utime(liveness)
        jobs.heartbeat(self.redis, self.queue, self.name, {
            "name": self.name, "host": socket.gethostname(), "pid": os.getpid(),
            "model_version": self.model_version, "since": self._since, "jobs_done": self.jobs_done,
            "busy": busy})

    def _sweep(self) -> None:
        """Every ``SWEEP_SECONDS``: remove dead consumers that hold no job from the group."""
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + SWEEP_SECONDS
        removed = jobs.sweep_consumers(self.redis, self.queue)
        if removed:
            log.info("worker %s: removed dead consumers %s from the group", self.name, removed)

    def _release(self, claim: jobs.Claim) -> None:
        with self._lock:
            self._held.pop(claim.entry, None)

    @contextmanager
    def _keep_alive(self, claims: list[jobs.Claim]) -> Iterator[None]:
        """Refresh the heartbeat and extend the leases of the held claims from a thread."""
        with self._lock:
            self._held = {claim.entry: claim for claim in claims}
        stop = threading.Event()
        interval = min(self.queue.lease_seconds, self.queue.heartbeat_ttl_seconds) / 3

        def beat() -> None:
            while not stop.wait(interval):
                with self._lock:
                    held = list(self._held.values())
                try:
                    self._heartbeat(busy=True)
                    kept = jobs.extend_leases(self.redis, self.queue, self.name, held)
                except redis.RedisError as err:
                    log.warning("jobs %s: could not extend leases (%s)", [c.job_id for c in held], err)
                    continue
                lost = [c.job_id for c in held if c not in kept]
                if lost:  # its writes are fenced; it is dropped before sampling or when it finishes
                    log.warning("jobs %s: lease lost to another worker", lost)

        thread = threading.Thread(target=beat, name=f"lease-{self.name}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            with self._lock:
                self._held = {}


def main(*, nowcaster: Nowcaster | None = None) -> None:
    """``python -m service.worker``: serve until SIGTERM or SIGINT.

    ``nowcaster`` replaces the checkpoint's pipeline (tests run a stand-in model this way).
    """
    from prometheus_client import start_http_server

    from model.allocator import keep_freed_memory

    settings = get_settings()
    logging.basicConfig(level=settings.worker.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_secret_filter(settings)
    keep_freed_memory()  # before the model's first buffers: they stay in the process (issue 14)
    worker = Worker(settings, nowcaster=nowcaster)
    if settings.worker.metrics_port:
        start_http_server(settings.worker.metrics_port, addr=settings.worker.metrics_host,
                          registry=worker.metrics.registry)
        log.info("worker %s: metrics on %s:%d/metrics", worker.name, settings.worker.metrics_host,
                 settings.worker.metrics_port)
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("worker %s: signal %d, finishing the current batch", worker.name, signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    worker.run(stop)


if __name__ == "__main__":
    main()
