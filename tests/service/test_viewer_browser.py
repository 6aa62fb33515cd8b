"""The viewer in a real browser against a real running service.

Debian's Chromium (headless), driven by Playwright for Python with the system browser as its
executable (nothing downloaded), against the API (uvicorn) and a worker with the default
checkpoint, each in its own process, over a real ``redis-server``. A forecaster's session:
enter the API key, upload a real radar event, watch the job go through its states, step the
lead-time slider, play, switch products and thresholds, click a point for the plume, open a
failed job. Any console error or page error fails the test. Screenshots go to the test's tmp
folder (and to ``$NOWCAST_UI_SCREENSHOTS`` when set, e.g. docs/screenshots).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from service import jobs
from service.settings import QueueSettings
from tests.radar.compliance import cf_failures

ROOT = Path(__file__).resolve().parents[2]
EVENT = ROOT.parent / "shared" / "radar" / "events" / "mch_20160711.nc"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
API_KEY = "forecaster-key"
PREFIX = "ui"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian package 'chromium'; "
                       ".ci/run installs it)"),
    pytest.mark.skipif(not EVENT.is_file(), reason=f"{EVENT} not found"),
]


def _wait(url: str, *, timeout: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert process.poll() is None, f"service exited with {process.returncode}"
        assert time.monotonic() < deadline, f"{url} not ready after {timeout:.0f} s"
        time.sleep(0.5)


@pytest.fixture
def service(redis, redis_url, tmp_path):
    """The API on a free port and one worker with the default checkpoint, as ``nowcast serve``
    runs them; the base URL."""
    from service.serve import free_port

    port = free_port()
    env = {**os.environ, "NOWCAST_REDIS__URL": redis_url, "NOWCAST_QUEUE__PREFIX": PREFIX,
           "NOWCAST_QUEUE__MAX_ATTEMPTS": "1", "NOWCAST_AUTH__API_KEYS": f'["{API_KEY}"]',
           "NOWCAST_MODEL__CHECKPOINT": str(ROOT / "checkpoints" / "default"), "NOWCAST_MODEL__STEPS": "2",
           "NOWCAST_MODEL__DEVICE": "cpu", "NOWCAST_MODEL__THREADS": "2", "NOWCAST_WORKER__METRICS_PORT": "0",
           "NOWCAST_LIMITS__MAX_PAST_HOURS": "1000000"}  # the shared events are from 2015-2019
    logs = {name: (tmp_path / f"{name}.log").open("w") for name in ("api", "worker")}
    api = subprocess.Popen([sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
                            "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env,
                           stdout=logs["api"], stderr=subprocess.STDOUT)
    worker = subprocess.Popen([sys.executable, "-m", "service.worker"], cwd=ROOT, env=env,
                              stdout=logs["worker"], stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(f"{base}/readyz", timeout=180, process=api)  # ready = Redis and a worker heartbeat
        yield base
    finally:
        for process in (worker, api):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        for log in logs.values():
            log.close()


@pytest.fixture
def page(tmp_path):
    """A Chromium page that records console and page errors in ``page.errors``."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1150})
        page.errors = []
        page.on("console", lambda m: page.errors.append(f"console.{m.type}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda err: page.errors.append(f"page error: {err}"))
        try:
            yield page
        finally:
            browser.close()


def shoot(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    target = os.environ.get("NOWCAST_UI_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)


def test_a_forecaster_uploads_an_event_and_explores_the_nowcast(service, page, redis, redis_url, tmp_path):
    page.goto(f"{service}/ui")
    assert "needs an API key" in page.inner_text("#job-banner")  # nothing asked before the key
    page.fill("#api-key", API_KEY)
    page.click("#key-form button")
    page.wait_for_function("document.getElementById('model-info').textContent.includes('cells of 4')")

    # a refused upload is explained, not a failure of the page
    page.set_input_files("#file", {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"no radar"})
    page.click("#submit")
    page.wait_for_function("document.getElementById('submit-status').textContent.startsWith('Refused')")
    assert "readable formats" in page.inner_text("#submit-status")
    # Chromium logs every 4xx response; this one was asked for, and is the only error so far
    assert page.errors == ["console.error: Failed to load resource: the server responded with a status of "
                           "422 (Unprocessable Entity)"]
    page.errors.clear()

    # the real event (MeteoSwiss, 1 km): resampled to the model's 4 km cells
    page.set_input_files("#file", str(EVENT))
    page.fill("#members", "4")
    page.click("#submit")
    seen, deadline = set(), time.monotonic() + 400
    while (status := page.get_attribute("#job-banner", "data-status")) not in ("done", "failed"):
        seen.add(status)
        assert time.monotonic() < deadline, f"job not done: {page.inner_text('#job-banner')}"
        page.wait_for_timeout(200)
    assert status == "done", page.inner_text("#job-banner")
    assert seen & {"queued", "running"}, seen
    page.wait_for_selector("#map-fc img.leaflet-image-layer")
    page.wait_for_selector("#map-obs img.leaflet-image-layer")
    page.wait_for_timeout(500)
    assert "Old input" in page.inner_text("#stale-warning")  # a 2016 event is not a nowcast of now
    assert "area mean of 4 x 4 cells" in page.inner_text("#fc-caption")
    assert page.inner_text("#issue-time") == "2016-07-12 00:00 UTC"
    assert page.inner_text("#valid-time") == "2016-07-12 00:05 UTC"
    assert "done" in page.inner_text("#job-list")
    shoot(page, tmp_path, "viewer-mean")

    # the lead-time slider and play
    page.focus("#lead")
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    page.wait_for_function("document.getElementById('lead-time').textContent === '+30 min'")
    assert page.inner_text("#valid-time") == "2016-07-12 00:30 UTC"
    page.click("#play")
    page.wait_for_function("document.getElementById('lead-time').textContent !== '+30 min'", timeout=10000)
    page.click("#play")
    page.focus("#lead")
    page.keyboard.press("Home")
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    page.wait_for_function("document.getElementById('lead-time').textContent === '+30 min'")

    # products: probability classes at two thresholds, then a percentile
    page.select_option("#product", "probability")
    page.wait_for_function("document.getElementById('legend').textContent.includes('≥ 1 mm/h')")
    page.select_option("#threshold", "5")
    page.wait_for_function("document.getElementById('legend').textContent.includes('≥ 5 mm/h')")
    assert "0 %: transparent" in page.inner_text("#legend")
    page.select_option("#threshold", "1")
    page.wait_for_timeout(500)

    # a click: the members' plume and the exceedance probabilities there
    box = page.locator("#map-fc").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.55, box["y"] + box["height"] * 0.45)
    page.wait_for_selector("#plume path.member")
    assert page.locator("#plume path.member").count() == 4
    assert page.locator("#exceedance tbody tr").count() == 6  # the default thresholds
    page.wait_for_timeout(300)
    shoot(page, tmp_path, "viewer-probability-plume")
    page.select_option("#product", "p90")
    page.wait_for_function("document.getElementById('legend').textContent.includes('rain rate (mm/h)')")
    page.wait_for_timeout(500)
    shoot(page, tmp_path, "viewer-p90")

    # the result's netCDF, as the viewer's user would download it, is CF-1.8 clean
    job_id = page.evaluate("location.hash.slice(1)")
    result = httpx.get(f"{service}/v1/nowcasts/{job_id}/result", params={"format": "netcdf"},
                       headers={"X-API-Key": API_KEY}, timeout=60)
    (tmp_path / "result.nc").write_bytes(result.content)
    assert cf_failures(tmp_path / "result.nc") == []

    # a job that fails shows its error
    qs = QueueSettings(prefix=PREFIX)
    bad = np.zeros((3, 32, 32), np.float32)  # 3 frames: the model takes 5
    failed_id, _ = _submit_raw(redis_url, qs, bad)
    page.goto(f"{service}/ui#{failed_id}")
    page.wait_for_selector("#job-banner[data-status=failed]", timeout=60000)
    assert "needs 5 input frames" in page.inner_text("#job-banner")
    shoot(page, tmp_path, "viewer-failed-job")
    assert page.errors == []


def _submit_raw(redis_url: str, qs: QueueSettings, frames: np.ndarray) -> tuple[str, bool]:
    """Queue a job straight into Redis, past the API's checks (as a broken client could not);
    in a thread of its own, as Playwright's sync API holds this thread's event loop."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from service.redis_client import async_client

    request = {"shape": list(frames.shape), "unit": "pixel", "step_minutes": 5,
               "timestamps": [f"2024-06-01T12:{5 * i:02d}:00Z" for i in range(len(frames))]}

    async def go():
        client = async_client(redis_url)
        try:
            return await jobs.submit(client, qs, request=request, frames=frames, idempotency_key=None)
        finally:
            await client.aclose()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result()
