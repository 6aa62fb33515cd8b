"""The job queue on Redis Streams: the one module that knows Redis key names and job states.

Keys, all under ``QueueSettings.prefix`` (``p``):

==========================  ==================================================================
``p:job:{id}``              hash: id, status, created, started, finished (unix seconds), attempts,
                            worker (consumer of the current attempt), model_version, error,
                            request (JSON), shape (JSON ``[T, H, W]``), entry (stream entry id)
``p:input:{id}``            input frames, little-endian float32 model pixels, shape ``shape``
``p:result:{id}``           :func:`encode_result` bytes (TTL ``result_ttl_seconds``)
``p:stream``                one entry ``{id: job id}`` per unfinished job (queued or running)
``p:workers``               the stream's consumer group
``p:dead``                  dead-letter stream: id, entry, attempts, error
``p:idem:{scope}:{key}``    idempotency key of one client (scope: a digest of its API key) ->
                            "job_id fingerprint" (TTL ``result_ttl_seconds``)
``p:alive``                 sorted set of worker names, score = heartbeat expiry (ms, Redis clock)
``p:worker:{name}``         worker heartbeat details, JSON (TTL ``heartbeat_ttl_seconds``)
==========================  ==================================================================

Life of a job: ``submit`` writes the hash and the frames and adds a stream entry, refusing
with :class:`QueueFull` when ``max_queued`` entries exist. A worker claims entries with
XREADGROUP (delivery 1) or takes over entries idle longer than ``lease_seconds`` with XAUTOCLAIM
(delivery n + 1); while it samples, it extends the lease of its entries (XCLAIM JUSTID). A
finished job's entry is acknowledged *and deleted*, so the stream length is the number of
unfinished jobs. A failed attempt leaves its entry pending: it is retried once its lease has
run out (which doubles as back-off), and dead-lettered on the ``max_attempts``-th delivery.
The result and the finished job's hash expire after ``result_ttl_seconds``.

Every state write of a claimed job (running, done, retry, dead letter, result) is fenced: a
Lua script (``service.queue_scripts``) first checks that the writer still owns the delivery it
claimed, and raises :class:`LeaseLost` otherwise, so a worker that stalled past its lease and
lost the job to another changes nothing. Heartbeats live in one sorted set (readiness is one
ZCOUNT, whatever the size of the key space), and consumers that are dead and hold nothing are
removed from the group (:func:`sweep_consumers`).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import redis
import redis.asyncio

from service import queue_scripts as lua
from service.settings import QueueSettings

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
STATES = (QUEUED, RUNNING, DONE, FAILED)
RESULT_ARRAYS = ("mean", "percentiles", "probability", "thresholds", "members", "lead_minutes")
OPTIONAL_RESULT_ARRAYS = ("observed",)  # (H, W) mm/h, the last input frame (shown beside the forecast)
DEAD_LETTER_MAXLEN = 10_000

class QueueFull(Exception):
    """``max_queued`` jobs are waiting or running; the API answers 429."""


class JobDataError(ValueError):
    """A claimed job whose stored record or frames are missing or malformed."""


class LeaseLost(Exception):
    """The writer no longer owns the delivery (another worker took the job over, or it finished):
    nothing was written; the worker drops the job."""


class IdempotencyConflict(Exception):
    """An idempotency key reused with a different request; ``job_id`` is the key's job."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"idempotency key already used for job {job_id} with a different request")
        self.job_id = job_id


@dataclass(frozen=True)
class Keys:
    """Redis key names under one prefix."""

    prefix: str

    @property
    def stream(self) -> str:
        return f"{self.prefix}:stream"

    @property
    def group(self) -> str:
        return f"{self.prefix}:workers"

    @property
    def dead(self) -> str:
        return f"{self.prefix}:dead"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def input(self, job_id: str) -> str:
        return f"{self.prefix}:input:{job_id}"

    def result(self, job_id: str) -> str:
        return f"{self.prefix}:result:{job_id}"

    def idem(self, key: str, scope: str = "") -> str:
        return f"{self.prefix}:idem:{scope}:{key}"

    @property
    def alive(self) -> str:
        return f"{self.prefix}:alive"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"


@dataclass(frozen=True)
class Claim:
    """A stream entry held by one worker: ``deliveries`` counts this one (1 = first attempt)."""

    entry: str
    job_id: str
    deliveries: int


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entry_key(entry: str) -> tuple[int, int]:
    ms, seq = entry.split("-")
    return int(ms), int(seq)


# --------------------------------------------------------------------------- API side (async)

async def _ensure_group_async(r: redis.asyncio.Redis, k: Keys) -> None:
    try:
        await r.xgroup_create(k.stream, k.group, id="0", mkstream=True)
    except redis.ResponseError as err:
        if "BUSYGROUP" not in str(err):
            raise


def fingerprint(request: dict[str, Any], frames: np.ndarray) -> str:
    """Digest of a job's request and frames: what an idempotency key promises not to change."""
    digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(frames, dtype="<f4").tobytes())
    return digest.hexdigest()


async def submit(r: redis.asyncio.Redis, qs: QueueSettings, *, request: dict[str, Any],
                 frames: np.ndarray, idempotency_key: str | None, scope: str = "") -> tuple[str, bool]:
    """Queue a nowcast job; returns ``(job_id, created)``.

    Parameters
    ----------
    request : JSON-able :class:`~service.contract.JobRequest` fields.
    frames : (T_in, H, W) model pixels in [0, 1], NaN = no data.
    idempotency_key : a key seen within ``result_ttl_seconds`` for the same request returns that
        job, ``created=False``.
    scope : the namespace of ``idempotency_key`` (a digest of the client's API key), so that two
        clients never share a key.

    Raises
    ------
    QueueFull
        ``max_queued`` jobs are waiting or running.
    IdempotencyConflict
        ``idempotency_key`` was used for a different request (other options or frames).
    """
    frames = np.asarray(frames, dtype="<f4")
    if frames.ndim != 3:
        raise ValueError(f"frames must be (T_in, H, W), got shape {frames.shape}")
    k = Keys(qs.prefix)
    job_id = uuid.uuid4().hex
    idem = None if idempotency_key is None else k.idem(idempotency_key, scope)
    if idem is not None:
        mine = fingerprint(request, frames)
        existing = await r.eval(lua.IDEMPOTENT, 1, idem, f"{job_id} {mine}", qs.result_ttl_seconds)
        if existing is not None:
            other, _, theirs = _str(existing).partition(" ")
            if theirs != mine:
                raise IdempotencyConflict(other)
            return other, False
    await _ensure_group_async(r, k)
    record: dict[Any, Any] = {"id": job_id, "status": QUEUED, "created": repr(time.time()), "started": "",
                              "finished": "", "attempts": "0", "worker": "", "model_version": "",
                              "error": "", "request": json.dumps(request),
                              "shape": json.dumps(list(frames.shape))}
    async with r.pipeline(transaction=True) as pipe:
        pipe.hset(k.job(job_id), mapping=record)
        pipe.set(k.input(job_id), frames.tobytes())
        await pipe.execute()
    entry = await r.eval(lua.ENQUEUE, 2, k.stream, k.job(job_id), qs.max_queued, job_id)
    if entry is None:
        stale = [k.job(job_id), k.input(job_id)] + ([idem] if idem is not None else [])
        await r.delete(*stale)
        raise QueueFull(f"{qs.max_queued} jobs waiting or running (max_queued)")
    return job_id, True


async def get_job(r: redis.asyncio.Redis, qs: QueueSettings, job_id: str) -> dict[str, str] | None:
    """The job's hash as strings, or None when unknown or expired."""
    fields = await r.hgetall(Keys(qs.prefix).job(job_id))
    return {_str(key): _str(value) for key, value in fields.items()} or None


LIST_FIELDS = ("id", "status", "created", "started", "finished", "attempts", "model_version", "error",
               "request")


async def list_jobs(r: redis.asyncio.Redis, qs: QueueSettings, *, status: str | None = None,
                    limit: int = 20) -> list[dict[str, str]]:
    """The newest ``limit`` jobs (their hashes as strings, ``request`` JSON included), newest first,
    only those in ``status`` when given. Jobs are found by scanning ``p:job:*``: finished ones
    expire after ``result_ttl_seconds``, so the scan stays as small as the recent work."""
    k = Keys(qs.prefix)
    keys = [key async for key in r.scan_iter(match=k.job("*"), count=500)]
    if not keys:
        return []
    async with r.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hmget(key, list(LIST_FIELDS))
        rows = await pipe.execute()
    found = []
    for row in rows:
        job = {name: _str(value) for name, value in zip(LIST_FIELDS, row, strict=True) if value is not None}
        if job.get("id") and (status is None or job.get("status") == status):
            found.append(job)
    found.sort(key=lambda job: float(job.get("created") or 0), reverse=True)
    return found[:limit]


async def get_result(r: redis.asyncio.Redis, qs: QueueSettings, job_id: str) -> bytes | None:
    """The :func:`encode_result` bytes of a finished job, or None (not done, or expired)."""
    return cast("bytes | None", await r.get(Keys(qs.prefix).result(job_id)))


async def queue_position(r: redis.asyncio.Redis, qs: QueueSettings, job_id: str) -> int | None:
    """Jobs to be claimed before this one (0 = next); None when the job is not queued.

    A queued job whose entry was already delivered (claimed, or waiting for a retry) is 0.
    """
    k = Keys(qs.prefix)
    status, entry = await r.hmget(k.job(job_id), ["status", "entry"])
    if status is None or _str(status) != QUEUED or entry is None:
        return None
    entry = _str(entry)
    try:
        groups = await r.xinfo_groups(k.stream)
    except redis.ResponseError:  # the stream is gone
        return None
    last = next((_str(g["last-delivered-id"]) for g in groups if _str(g["name"]) == k.group), "0-0")
    if _entry_key(entry) <= _entry_key(last):
        return 0
    return len(await r.xrange(k.stream, min=f"({last}", max=f"({entry}") or [])


async def queue_depth(r: redis.asyncio.Redis, qs: QueueSettings) -> int:
    """Unfinished jobs (waiting or running): the number that ``max_queued`` bounds."""
    return await r.xlen(Keys(qs.prefix).stream)


async def workers_alive(r: redis.asyncio.Redis, qs: QueueSettings) -> int:
    """Workers whose heartbeat has not expired (one ZCOUNT: O(log n))."""
    return int(await r.eval(lua.ALIVE, 1, Keys(qs.prefix).alive))


# --------------------------------------------------------------------------- worker side (sync)

def ensure_group(r: redis.Redis, qs: QueueSettings) -> None:
    """Create the stream and its consumer group when absent (delivering from the start)."""
    k = Keys(qs.prefix)
    try:
        r.xgroup_create(k.stream, k.group, id="0", mkstream=True)
    except redis.ResponseError as err:
        if "BUSYGROUP" not in str(err):
            raise


def _claims(r: redis.Redis, qs: QueueSettings, entries: list[Any], *, deliveries: int | None) -> list[Claim]:
    k = Keys(qs.prefix)
    claims = []
    for entry_id, fields in entries:
        entry = _str(entry_id)
        job_id = (fields or {}).get(b"id")
        if job_id is None:  # deleted from the stream while pending: nothing left to run
            r.xack(k.stream, k.group, entry)
            continue
        count = deliveries
        if count is None:
            pending = r.xpending_range(k.stream, k.group, min=entry, max=entry, count=1)
            count = int(pending[0]["times_delivered"]) if pending else 1
        claims.append(Claim(entry=entry, job_id=_str(job_id), deliveries=count))
    return claims


def claim_new(r: redis.Redis, qs: QueueSettings, consumer: str, count: int, *,
              block_ms: int) -> list[Claim]:
    """Claim up to ``count`` never-delivered jobs, waiting up to ``block_ms`` (0: no wait)."""
    k = Keys(qs.prefix)
    block = block_ms if block_ms > 0 else None  # BLOCK 0 would wait forever
    try:
        reply: Any = r.xreadgroup(k.group, consumer, {k.stream: ">"}, count=count, block=block)
    except redis.ResponseError as err:
        if "NOGROUP" not in str(err):
            raise
        ensure_group(r, qs)
        return []
    entries = [entry for _, stream_entries in reply or [] for entry in stream_entries]
    return _claims(r, qs, entries, deliveries=1)


def reclaim_stale(r: redis.Redis, qs: QueueSettings, consumer: str, count: int) -> list[Claim]:
    """Take over up to ``count`` jobs whose lease ran out (dead worker, or a failed attempt)."""
    k = Keys(qs.prefix)
    try:
        reply = r.xautoclaim(k.stream, k.group, consumer, min_idle_time=int(qs.lease_seconds * 1000),
                             start_id="0-0", count=count)
    except redis.ResponseError as err:
        if "NOGROUP" not in str(err):
            raise
        ensure_group(r, qs)
        return []
    return _claims(r, qs, reply[1], deliveries=None)


def extend_leases(r: redis.Redis, qs: QueueSettings, consumer: str, claims: list[Claim]) -> list[Claim]:
    """Reset the idle time of the ``claims`` that ``consumer`` still holds; returns those (the
    others were taken over by another worker, or finished)."""
    if not claims:
        return []
    k = Keys(qs.prefix)
    args = [a for c in claims for a in (c.entry, c.deliveries)]
    held = {_str(entry) for entry in r.eval(lua.EXTEND, 1, k.stream, k.group, consumer, *args)}
    return [c for c in claims if c.entry in held]


def load_job(r: redis.Redis, qs: QueueSettings, job_id: str) -> tuple[dict[str, Any], np.ndarray]:
    """The job's request dict and its (T_in, H, W) float32 pixel frames.

    Raises
    ------
    JobDataError
        The hash or the frames are missing (expired, deleted) or do not match their shape.
    """
    k = Keys(qs.prefix)
    with r.pipeline(transaction=False) as pipe:
        pipe.hmget(k.job(job_id), ["request", "shape"])
        pipe.get(k.input(job_id))
        replies: list[Any] = pipe.execute()
    (request, shape), blob = replies[0], replies[1]
    if request is None or shape is None:
        raise JobDataError(f"job {job_id}: record is missing or incomplete")
    if blob is None:
        raise JobDataError(f"job {job_id}: input frames are missing")
    try:
        request_dict, shape_list = json.loads(request), [int(n) for n in json.loads(shape)]
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        raise JobDataError(f"job {job_id}: unreadable request or shape ({err})") from err
    if len(shape_list) != 3 or len(blob) != 4 * int(np.prod(shape_list)):
        raise JobDataError(f"job {job_id}: {len(blob)} bytes of frames do not match shape {shape_list}")
    return request_dict, np.frombuffer(blob, dtype="<f4").reshape(shape_list).astype(np.float32)


def _fence(qs: QueueSettings, claim: Claim, consumer: str) -> list[Any]:
    return [Keys(qs.prefix).group, claim.entry, consumer, claim.deliveries, repr(time.time())]


def mark_running(r: redis.Redis, qs: QueueSettings, claim: Claim, consumer: str, *,
                 model_version: str) -> float:
    """Record the start of ``consumer``'s attempt; returns the job's ``created`` time (unix s).

    Raises
    ------
    LeaseLost
        ``consumer`` no longer owns this delivery of the job.
    JobDataError
        The job's record is gone (expired or deleted).
    """
    k = Keys(qs.prefix)
    reply = r.eval(lua.MARK_RUNNING, 2, k.stream, k.job(claim.job_id), *_fence(qs, claim, consumer),
                   model_version)
    if int(reply[0]) == 0:
        raise LeaseLost(f"job {claim.job_id}: delivery {claim.deliveries} is no longer {consumer}'s")
    if int(reply[0]) < 0:
        raise JobDataError(f"job {claim.job_id}: record is missing")
    created = _str(reply[1])
    return float(created) if created else time.time()


def _finish(r: redis.Redis, qs: QueueSettings, claim: Claim, consumer: str, *, status: str, error: str = "",
            cause: str = "", model_version: str = "", result: bytes = b"") -> None:
    k, j = Keys(qs.prefix), claim.job_id
    done = r.eval(lua.FINISH, 5, k.stream, k.job(j), k.input(j), k.result(j), k.dead,
                  *_fence(qs, claim, consumer), qs.result_ttl_seconds, status, error, model_version, result,
                  DEAD_LETTER_MAXLEN, cause)
    if not int(done):
        raise LeaseLost(f"job {j}: delivery {claim.deliveries} is no longer {consumer}'s; nothing stored")


def complete(r: redis.Redis, qs: QueueSettings, claim: Claim, consumer: str, result: bytes, *,
             model_version: str) -> None:
    """Store ``result`` (TTL ``result_ttl_seconds``), mark the job done, acknowledge its entry, in
    one fenced script: a result is stored at most once.

    Raises
    ------
    LeaseLost
        ``consumer`` no longer owns this delivery (another worker took the job over).
    """
    _finish(r, qs, claim, consumer, status=DONE, model_version=model_version, result=result)


def fail(r: redis.Redis, qs: QueueSettings, claim: Claim, consumer: str, error: str, *,
         retry: bool = True) -> bool:
    """Record a failed attempt; returns True when the job was dead-lettered (status failed).

    With ``retry`` and fewer than ``max_attempts`` deliveries, the job goes back to queued and
    its entry stays pending, to be re-claimed once its lease has run out.

    Raises
    ------
    LeaseLost
        ``consumer`` no longer owns this delivery: the attempt's outcome is not its to record.
    """
    k = Keys(qs.prefix)
    message = f"attempt {claim.deliveries}/{qs.max_attempts}: {error}"
    if retry and claim.deliveries < qs.max_attempts:
        if not int(r.eval(lua.RETRY, 2, k.stream, k.job(claim.job_id), *_fence(qs, claim, consumer)[:4],
                          message)):
            raise LeaseLost(f"job {claim.job_id}: delivery {claim.deliveries} is no longer {consumer}'s")
        return False
    _finish(r, qs, claim, consumer, status=FAILED, error=message, cause=error)
    return True


def dead_letters(r: redis.Redis, qs: QueueSettings, count: int = 100) -> list[dict[str, str]]:
    """The newest ``count`` dead-lettered jobs (id, entry, attempts, error), newest first."""
    entries = r.xrevrange(Keys(qs.prefix).dead, count=count) or []
    return [{_str(a): _str(b) for a, b in (fields or {}).items()} for _, fields in entries]


def heartbeat(r: redis.Redis, qs: QueueSettings, name: str, info: dict[str, Any]) -> None:
    """Mark worker ``name`` alive for ``heartbeat_ttl_seconds`` (and forget expired workers)."""
    k = Keys(qs.prefix)
    r.eval(lua.HEARTBEAT, 2, k.alive, k.worker(name), name, int(qs.heartbeat_ttl_seconds * 1000),
           json.dumps(info))


def remove_heartbeat(r: redis.Redis, qs: QueueSettings, name: str) -> None:
    """Worker ``name`` stops: not alive any more."""
    k = Keys(qs.prefix)
    with r.pipeline(transaction=True) as pipe:
        pipe.zrem(k.alive, name)
        pipe.delete(k.worker(name))
        pipe.execute()


def sweep_consumers(r: redis.Redis, qs: QueueSettings) -> list[str]:
    """Remove from the consumer group the consumers without a live heartbeat that hold no job;
    returns their names. (One that holds jobs stays until live workers take them over.)"""
    k = Keys(qs.prefix)
    try:
        return [_str(name) for name in r.eval(lua.SWEEP_CONSUMERS, 2, k.stream, k.alive, k.group)]
    except redis.ResponseError as err:
        if "no such key" in str(err).lower() or "NOGROUP" in str(err):
            return []
        raise


def sync_queue_depth(r: redis.Redis, qs: QueueSettings) -> int:
    """:func:`queue_depth` for the worker."""
    return r.xlen(Keys(qs.prefix).stream)


# --------------------------------------------------------------------------- result bytes

def encode_result(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> bytes:
    """Compressed npz of the :data:`RESULT_ARRAYS` plus ``meta`` as a JSON string.

    Parameters
    ----------
    arrays : ``mean`` (T, H, W), ``percentiles`` (3, T, H, W), ``members`` (K, T, H, W) rain
        rate in mm/h; ``probability`` (n_thresholds, T, H, W) in [0, 1]; ``thresholds``
        (n_thresholds,) mm/h; ``lead_minutes`` (T,); optionally ``observed`` (H, W) mm/h, the
        last input frame. NaN = no data.
    meta : JSON-able: model_version, timestep_minutes, members, guidance, seed, timings, request.
    """
    missing = [name for name in RESULT_ARRAYS if name not in arrays]
    if missing:
        raise ValueError(f"result arrays {missing} are missing; needed: {RESULT_ARRAYS}")
    names = RESULT_ARRAYS + tuple(n for n in OPTIONAL_RESULT_ARRAYS if n in arrays)
    payload: dict[str, Any] = {name: np.asarray(arrays[name]) for name in names}
    payload["meta"] = np.array(json.dumps(meta))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **payload)
    return buffer.getvalue()


def result_sizes(blob: bytes) -> dict[str, int]:
    """Uncompressed bytes of each array of an :func:`encode_result` blob, read from the zip
    directory without inflating anything."""
    import zipfile

    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        return {info.filename.removesuffix(".npy"): info.file_size for info in archive.infolist()}


def decode_result(blob: bytes, names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Inverse of :func:`encode_result`: the arrays ``names`` (default: every array stored) and
    ``meta`` as a dict. Arrays left out are not decompressed (the members are the largest)."""
    known = RESULT_ARRAYS + OPTIONAL_RESULT_ARRAYS
    unknown = sorted(set(names or ()) - set(known))
    if unknown:
        raise ValueError(f"unknown result arrays {unknown}; valid: {known}")
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        wanted = known if names is None else names
        result: dict[str, Any] = {name: data[name] for name in wanted
                                  if name in RESULT_ARRAYS or name in data.files}
        result["meta"] = json.loads(str(data["meta"]))
    return result
