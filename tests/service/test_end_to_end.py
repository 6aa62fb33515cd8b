"""HTTP POST -> real worker with the default checkpoint -> result, over a real Redis."""

from __future__ import annotations

import base64
import datetime as dt
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from service.worker import Worker

CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "default"

pytestmark = pytest.mark.slow


@pytest.fixture
def e2e_settings(redis_url: str) -> Settings:
    return Settings(redis={"url": redis_url}, queue={"prefix": "e2e", "batch_wait_ms": 0},
                    model={"checkpoint": str(CHECKPOINT), "steps": 2, "device": "cpu"},
                    worker={"metrics_port": 0})


@pytest.fixture
def running_worker(redis, e2e_settings):
    """The real STLDM worker serving in a thread until the test ends."""
    worker = Worker(e2e_settings, name="e2e-worker")
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    yield worker
    stop.set()
    thread.join(timeout=60)


def test_nowcast_through_http_and_the_real_model(running_worker, e2e_settings, tmp_path):
    import xarray as xr

    with TestClient(create_app(e2e_settings)) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:  # the worker's first heartbeat
            assert time.monotonic() < deadline, "worker never became ready"
            time.sleep(0.2)
        t0 = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)  # inputs must be recent
        yy, xx = np.mgrid[:64, :64]
        dbz = (50 * np.exp(-((yy - 32) ** 2 + (xx - 20) ** 2) / 200) - 10).astype(np.float32)
        frames = np.repeat(dbz[None], 5, axis=0)
        frames[:, :4, :4] = np.nan
        body = {"frames": {"data": base64.b64encode(frames.tobytes()).decode(), "shape": [5, 64, 64],
                           "dtype": "float32"},
                "unit": "dBZ",
                "timestamps": [f"{t0 + dt.timedelta(minutes=m):%Y-%m-%dT%H:%M}Z" for m in range(0, 25, 5)],
                "members": 2, "thresholds": [0.1, 1.0], "grid_spacing_km": 4.0}
        submitted = client.post("/v1/nowcasts", json=body)
        assert submitted.status_code == 202, submitted.text
        status_url = submitted.json()["status_url"]
        deadline = time.monotonic() + 300
        while (status := client.get(status_url).json())["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline, f"job not done: {status}"
            time.sleep(0.5)
        assert status["status"] == "done", status
        assert status["model_version"] == running_worker.model_version
        result = client.get(submitted.json()["result_url"], params={"format": "netcdf"})
    path = tmp_path / "nowcast.nc"
    path.write_bytes(result.content)
    ds = xr.load_dataset(path, engine="netcdf4")
    members = ds["precipitation_rate"].values
    assert members.shape == (2, 20, 64, 64)
    assert np.isnan(members[:, :, :4, :4]).all()  # no-data corner stays no data
    finite = members[np.isfinite(members)]
    assert finite.size and (finite >= 0).all()
    assert list(ds["forecast_period"].values[:2]) == [300, 600]
    prob = ds["probability_of_lwe_precipitation_rate_above_threshold"]
    assert prob.sizes["threshold"] == 2 and float(np.nanmax(prob.values)) <= 1.0


README = Path(__file__).resolve().parents[2] / "README.md"
EVENTS = Path(__file__).resolve().parents[3] / "shared" / "radar" / "events"


def readme_python_example() -> str:
    """The first Python block of the README's "Python API" section."""
    text = README.read_text()
    section = text[text.index("## Python API"):]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.skipif(not (EVENTS / "fmi_20160928.nc").is_file(), reason="needs the shared FMI event")
def test_the_readme_python_example_returns_what_the_service_returns(redis, redis_url, monkeypatch):
    monkeypatch.chdir(README.parent)  # the example's paths are relative to the repository root
    namespace: dict = {}
    exec(compile(readme_python_example(), "README.md", "exec"), namespace)
    frames, nowcast = namespace["frames"], namespace["nowcast"]
    # the service, with the checkpoint's defaults (no DDIM step override), on the same frames
    settings = Settings(redis={"url": redis_url}, queue={"prefix": "readme", "batch_wait_ms": 0},
                        model={"checkpoint": str(CHECKPOINT), "device": "cpu"}, worker={"metrics_port": 0},
                        limits={"max_past_hours": 1_000_000})  # the FMI event is from 2016
    worker = Worker(settings, name="readme-worker")
    values = np.ascontiguousarray(frames.values, dtype="<f4")
    body = {"frames": {"data": base64.b64encode(values.tobytes()).decode(), "shape": list(values.shape),
                       "dtype": "float32"},
            "unit": frames.unit, "timestamps": [f"{t}Z" for t in frames.times.astype("datetime64[s]")],
            "members": 4, "seed": 7}
    with TestClient(create_app(settings)) as client:
        submitted = client.post("/v1/nowcasts", json=body)
        assert submitted.status_code == 202, submitted.text
        assert worker.step(block_ms=1000) == 1
        result = client.get(submitted.json()["result_url"], params={"members": True})
        assert result.status_code == 200, result.text
        result = result.json()
    array = result["members"]  # base64 float32, NaN where no data
    served = np.frombuffer(base64.b64decode(array["data"]), dtype="<f4").reshape(array["shape"])
    assert served.shape == nowcast.members.shape
    np.testing.assert_array_equal(np.isnan(served), np.isnan(nowcast.members))
    np.testing.assert_allclose(served, nowcast.members, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert result["metadata"]["model_version"] == nowcast.model_version
