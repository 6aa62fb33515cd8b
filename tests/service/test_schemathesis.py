"""schemathesis, all checks, 50 examples per operation, against the running API (issue 16).

The API (uvicorn) and a stand-in worker (``tests.service.stand_in_worker``, so that jobs finish
and the result operations answer 200) run as processes on the test Redis; schemathesis runs its
examples, coverage, fuzzing and stateful phases (following the OpenAPI links from a submission
to its status and result) with ``schemathesis.toml``. A fixed seed keeps the run reproducible.

The operations that draw maps with matplotlib (``/png``, the viewer's ``/map``, ``/overlay``,
``/point``) are left to ``make fuzz``, which runs every operation against ``make serve``: they
take the run from about a minute to about ten on two cores.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import httpx
import pytest

from service.serve import free_port
from tests.service.processes import ROOT, start_worker, wait_for

pytestmark = pytest.mark.slow

KEY = "fuzz-key-for-the-test-suite-0123456789"
SEED = 20261201
MAP_OPERATIONS = "/(png|map|overlay|point)$"


def test_schemathesis_finds_no_failure(redis, redis_url, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOWCAST_")}
    settings = {"NOWCAST_REDIS__URL": redis_url, "NOWCAST_QUEUE__PREFIX": "fuzz",
                "NOWCAST_QUEUE__MAX_QUEUED": "100000", "NOWCAST_AUTH__API_KEYS": f'["{KEY}"]',
                "NOWCAST_MODEL__CHECKPOINT": str(ROOT / "checkpoints" / "default")}
    api_log = tmp_path / "api.log"
    with open(api_log, "wb") as log:
        api = subprocess.Popen([sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
                                "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT,
                               env={**env, **settings}, stdout=log, stderr=subprocess.STDOUT)
    queue = {k: v for k, v in settings.items() if k != "NOWCAST_REDIS__URL"}
    worker = start_worker("fuzz-worker", redis_url, tmp_path, sample_log=tmp_path / "samples.log",
                          sample_seconds=0.0, **queue)

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, 120, "the API and a worker", [worker])
        before = len(api_log.read_text())  # the 503s of /readyz while the worker started are not the run's
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "--config-file", str(ROOT / "schemathesis.toml"),
             "run", f"{base}/openapi.json", "--checks", "all", "--max-examples", "50", "--seed", str(SEED),
             "--header", f"X-API-Key: {KEY}", "--no-color", "--generation-database", "none",
             "--exclude-path-regex", MAP_OPERATIONS],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    finally:
        api.terminate()
        worker.stop()
        api.wait(timeout=30)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-6000:]
    cases = re.search(r"(\d+) generated, (\d+) passed", report)
    assert cases and cases[1] == cases[2], report[-3000:]
    statuses = re.findall(r'HTTP/1.1" (\d{3})', api_log.read_text()[before:])
    assert statuses and not [s for s in statuses if s.startswith("5")]
    assert {"200", "202"} <= set(statuses)  # it got past the validation: jobs were accepted and fetched
    print(f"\nschemathesis: {cases[1]} cases, 0 failures; API answers {sorted(set(statuses))}")
