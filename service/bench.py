"""``nowcast bench-service`` (``make bench-service``): load test of the whole service on loopback.

Starts ``nowcast serve`` (Redis, API, one worker with the checkpoint) on free ports, unless
``--url`` names a running service. For each client count in ``--clients`` (default 1, 4, 16),
that many threads each submit ``--requests`` nowcasts one after another: POST the last frames
of ``--event`` (JSON, base64), poll the status with ``If-None-Match`` every ``--poll`` seconds,
then GET the JSON result. A request's latency runs from the POST to the result in hand.

Printed per client count: requests per second (requests / wall time of the level), p50 and
p99 latency, the median sampling seconds the worker reports for those jobs (one batched
``model.forecast`` call) and the median jobs per batch; then the overhead ratio: median
end-to-end latency at one client / median pure sampling time at one client. A warm-up
request (not counted) goes first. ``--out FILE`` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import httpx

from service.cli import DEFAULT_URL, SubmitError, _check, cut_input, wait_for_job
from service.serve import EXAMPLE_EVENT, free_port, http_answers, stop, wait_until

log = logging.getLogger("nowcast.bench")


def one_request(client: httpx.Client, body: dict[str, Any], *, poll: float,
                timeout: float) -> dict[str, float]:
    """Submit ``body``, wait for the job, fetch its JSON result; latency and worker timings."""
    start = time.perf_counter()
    job = _check(client.post("/v1/nowcasts", json=body)).json()
    wait_for_job(client, job["status_url"], timeout=timeout, poll=poll)
    meta = _check(client.get(job["result_url"], params={"format": "json"})).json()["metadata"]
    latency = time.perf_counter() - start
    return {"latency": latency, "sampling": float(meta["timings"].get("sampling_seconds", np.nan)),
            "batch_jobs": float(meta.get("batch_jobs") or np.nan)}


def run_level(url: str, body: dict[str, Any], *, clients: int, requests: int, poll: float,
              timeout: float, seed0: int) -> dict[str, Any]:
    """``clients`` threads x ``requests`` sequential nowcasts; the level's figures."""
    import httpx

    records: list[dict[str, float]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client_loop(c: int) -> None:
        with httpx.Client(base_url=url, timeout=60.0) as client:
            for r in range(requests):
                try:
                    rec = one_request(client, {**body, "seed": seed0 + c * requests + r}, poll=poll,
                                      timeout=timeout)
                except (httpx.HTTPError, SubmitError) as err:
                    with lock:
                        errors.append(str(err))
                    continue
                with lock:
                    records.append(rec)

    threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = np.array([r["latency"] for r in records])
    return {
        "clients": clients, "requests": len(records), "errors": errors, "wall_seconds": round(wall, 2),
        "requests_per_second": round(len(records) / wall, 3),
        "latency_p50": round(float(np.percentile(lat, 50)), 3) if len(lat) else None,
        "latency_p99": round(float(np.percentile(lat, 99)), 3) if len(lat) else None,
        "sampling_median": round(float(np.nanmedian([r["sampling"] for r in records])), 3),
        "batch_jobs_median": float(np.nanmedian([r["batch_jobs"] for r in records])),
    }


def table(levels: list[dict[str, Any]], overhead: float) -> str:
    lines = ["| clients | requests | req/s | p50 s | p99 s | sampling s (median) | jobs per batch |",
             "|---|---|---|---|---|---|---|"]
    for lv in levels:
        lines.append(f"| {lv['clients']} | {lv['requests']} | {lv['requests_per_second']:.3f} | "
                     f"{lv['latency_p50']:.2f} | {lv['latency_p99']:.2f} | {lv['sampling_median']:.2f} | "
                     f"{lv['batch_jobs_median']:g} |")
    lines.append(f"\noverhead ratio (p50 end-to-end at 1 client / median sampling at 1 client): "
                 f"{overhead:.3f}")
    return "\n".join(lines)


def start_stack(tmp: Path, *, workers: int) -> tuple[str, list[tuple[str, subprocess.Popen[bytes]]]]:
    """``nowcast serve`` on free ports; its URL and process once a worker is ready."""
    port = free_port()
    env = {**os.environ, "NOWCAST_WORKER__METRICS_PORT": str(free_port())}
    env.pop("NOWCAST_REDIS__URL", None)
    log_path = tmp / "serve.log"
    with log_path.open("wb") as log_file:  # the child keeps its own descriptor
        serve = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port),
                                  "--data-dir", str(tmp / "redis"), "--workers", str(workers)],
                                 env=env, start_new_session=True, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    log.info("starting the service on %s (log: %s)", url, log_path)
    try:
        wait_until(lambda: http_answers(f"{url}/readyz"), what="the service", timeout=180, process=serve)
    except RuntimeError:
        stop([("nowcast serve", serve)])
        sys.stderr.write(log_path.read_text(errors="replace")[-3000:])
        raise
    return url, [("nowcast serve", serve)]


def bench(args: argparse.Namespace) -> int:
    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("nowcast.submit").setLevel(logging.WARNING)  # a line per job state is noise here
    with tempfile.TemporaryDirectory() as tmp:
        url, processes = (args.url, []) if args.url else start_stack(Path(tmp), workers=args.workers)
        try:
            with httpx.Client(base_url=url, timeout=60.0) as client:
                model = _check(client.get("/v1/model")).json()
                body = {**cut_input(args.event, model, coarsen=args.coarsen), "members": args.members}
                log.info("warm-up request (%s, %d members)", model["model_version"], args.members)
                one_request(client, body, poll=args.poll, timeout=args.timeout)
            levels = []
            for n in args.clients:
                log.info("%d concurrent client(s) x %d request(s)", n, args.requests)
                levels.append(run_level(url, body, clients=n, requests=args.requests, poll=args.poll,
                                        timeout=args.timeout, seed0=1000 * n))
        finally:
            stop(processes)
    one = next((lv for lv in levels if lv["clients"] == 1), levels[0])
    overhead = one["latency_p50"] / one["sampling_median"]
    print(f"service benchmark: {model['model_version']}, {args.members} members, {model['t_out']} leads, "
          f"{model['size']}x{model['size']}, {args.workers if not args.url else '?'} worker(s), "
          f"poll {args.poll} s, torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}")
    print(table(levels, overhead))
    failed = sum(len(lv["errors"]) for lv in levels)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model_version": model["model_version"], "members": args.members,
                                        "levels": levels, "overhead_ratio": overhead}, indent=2))
    if failed:
        log.error("%d request(s) failed, e.g. %s", failed,
                  next(e for lv in levels for e in lv["errors"]))
    return 1 if failed else 0


def add_bench_service_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``nowcast bench-service`` on the ``nowcast`` sub-parsers ``sub``."""
    p = sub.add_parser("bench-service", help="load-test the service: req/s, p50/p99 latency, overhead")
    p.add_argument("--url", default=None,
                   help=f"a running service (e.g. {DEFAULT_URL}); default: start one on free ports")
    p.add_argument("--event", type=Path, default=Path(EXAMPLE_EVENT))
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--requests", type=int, default=2, help="sequential requests per client")
    p.add_argument("--members", type=int, default=10)
    p.add_argument("--workers", type=int, default=1, help="worker processes of the started service")
    p.add_argument("--coarsen", type=int, default=4)
    p.add_argument("--poll", type=float, default=0.1, help="seconds between status polls")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for one job")
    p.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    p.set_defaults(func=bench)
