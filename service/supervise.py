"""Keep child processes running: restart one that exits, with exponential back-off.

``nowcast serve`` supervises its Redis, API and workers with a :class:`Supervisor`: a worker
that dies (killed, out of memory, a crash) is started again while the API and Redis stay up,
and the jobs it held are taken over by the restarted worker once their leases run out. A child
that keeps dying is restarted ever more slowly (``initial_backoff`` doubling up to
``max_backoff``); one that stayed up ``stable_seconds`` starts again from ``initial_backoff``.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("nowcast.supervise")


@dataclass
class Child:
    """One supervised process and its restart record."""

    name: str
    start: Callable[[], subprocess.Popen[bytes]]
    process: subprocess.Popen[bytes]
    started: float
    restarts: int = 0  # restarts so far
    failures: int = 0  # exits in a row, each within stable_seconds of its start
    restart_at: float | None = None  # when a restart is due (None: running)


class Supervisor:
    """Start processes and restart them when they exit.

    Parameters
    ----------
    initial_backoff : seconds before the first restart of a child that exited.
    max_backoff : the longest wait between restarts.
    stable_seconds : a child that ran this long before exiting is restarted after
        ``initial_backoff`` again.
    clock : monotonic seconds (tests pass their own).
    """

    def __init__(self, *, initial_backoff: float = 1.0, max_backoff: float = 30.0,
                 stable_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < initial_backoff <= max_backoff:
            raise ValueError(f"need 0 < initial_backoff <= max_backoff, got {initial_backoff}, {max_backoff}")
        self.initial_backoff, self.max_backoff = initial_backoff, max_backoff
        self.stable_seconds, self.clock = stable_seconds, clock
        self.children: list[Child] = []

    def add(self, name: str, start: Callable[[], subprocess.Popen[bytes]]) -> Child:
        """Start ``start()`` now and keep it running under ``name``."""
        child = Child(name=name, start=start, process=start(), started=self.clock())
        self.children.append(child)
        return child

    def backoff(self, failures: int) -> float:
        """Seconds before the restart after ``failures`` quick exits in a row (1, 2, 4, ... capped)."""
        return float(min(self.max_backoff, self.initial_backoff * 2 ** max(0, failures - 1)))

    def poll(self) -> None:
        """Notice exited children and restart those whose back-off has run out (call it often)."""
        now = self.clock()
        for child in self.children:
            if child.restart_at is None:
                code = child.process.poll()
                if code is None:
                    continue
                ran = now - child.started
                child.failures = 1 if ran >= self.stable_seconds else child.failures + 1
                delay = self.backoff(child.failures)
                child.restart_at = now + delay
                log.error("%s exited (code %s) after %.0f s; restarting it in %.1f s", child.name, code, ran,
                          delay)
            elif now >= child.restart_at:
                child.process = child.start()
                child.started, child.restart_at = now, None
                child.restarts += 1
                log.info("%s restarted (pid %d, restart %d)", child.name, child.process.pid, child.restarts)

    def processes(self) -> list[tuple[str, subprocess.Popen[bytes]]]:
        """(name, process) of every child, in start order."""
        return [(child.name, child.process) for child in self.children]
