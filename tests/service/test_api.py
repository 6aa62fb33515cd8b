"""The HTTP API against a real Redis (fixture ``redis_url``); no model is loaded.

Jobs are completed by writing a result with ``service.jobs`` directly, as a worker would.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from fastapi.testclient import TestClient

from model.products import DEFAULT_THRESHOLDS, PERCENTILES, exceedance_probability
from service import jobs
from service.app import create_app
from service.settings import Settings

CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "default"
T_IN, SIDE, STEP = 5, 64, 5  # the default checkpoint: 5 frames in, sides multiple of 64, 5 min
# Inputs must be recent (limits.max_past_hours, default 24 h): the frames start an hour ago.
T0 = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0) - dt.timedelta(hours=1)
LAST = T0 + dt.timedelta(minutes=STEP * (T_IN - 1))  # the time of the last input frame


# EPSG:3067 (Finland, metres): the first cell's centre and the spacing
GRID = {"crs": "EPSG:3067", "x0": 300000.0, "y0": 7.0e6, "dx": 4000.0, "dy": -4000.0}


def make_settings(redis_url: str, **queue) -> Settings:
    return Settings(redis={"url": redis_url}, queue=queue,
                    model={"checkpoint": str(CHECKPOINT), "max_side": 256})


@pytest.fixture
def client(redis, redis_url):
    with TestClient(create_app(make_settings(redis_url))) as client:
        yield client


def frames(t: int = T_IN, h: int = SIDE, w: int = SIDE) -> np.ndarray:
    """(t, h, w) reflectivity in dBZ: a rain blob on a dry background, one no-data corner."""
    yy, xx = np.mgrid[:h, :w]
    blob = 45 * np.exp(-((yy - h / 2) ** 2 + (xx - w / 3) ** 2) / (2 * (h / 6) ** 2))
    values = np.broadcast_to(blob - 10, (t, h, w)).astype(np.float32).copy()
    values[:, :4, :4] = np.nan
    return values


def encode(values: np.ndarray, dtype: str = "float32") -> dict:
    return {"data": base64.b64encode(np.ascontiguousarray(values).tobytes()).decode(),
            "shape": list(values.shape), "dtype": dtype}


def times(n: int = T_IN, step: int = STEP) -> list[str]:
    return [(T0 + dt.timedelta(minutes=step * i)).isoformat() for i in range(n)]


def payload(**overrides) -> dict:
    body = {"frames": encode(frames()), "unit": "dBZ", "timestamps": times(), "grid_spacing_km": 4.0,
            "members": 2}
    return {**body, **overrides}


def test_base64_submission_is_accepted_with_location(client):
    response = client.post("/v1/nowcasts", json=payload())
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued"
    assert response.headers["location"] == body["status_url"]
    assert body["status_url"].endswith(f"/v1/nowcasts/{body['id']}")
    assert body["result_url"].endswith(f"/v1/nowcasts/{body['id']}/result")


def test_nested_list_submission_with_null_as_no_data_is_accepted(client):
    values = frames().astype(object)
    values[np.isnan(frames())] = None
    response = client.post("/v1/nowcasts", json=payload(frames=values.tolist(), unit="dBZ"))
    assert response.status_code == 202, response.text


def test_submission_is_queued_as_model_pixels_with_its_options(client, redis, redis_url):
    values = frames(h=96, w=80)  # any side in [16, max_side]: the worker pads to the model grid
    job_id = client.post("/v1/nowcasts", json=payload(frames=encode(values), unit="dBZ", members=3,
                                                      seed=11, grid=GRID)).json()["id"]
    status = client.get(f"/v1/nowcasts/{job_id}").json()
    assert status["status"] == "queued" and status["queue_position"] == 0
    assert status["created"] is not None
    request, pixels = jobs.load_job(redis, make_settings(redis_url).queue, job_id)
    assert request["members"] == 3 and request["seed"] == 11 and request["crs"] == "EPSG:3067"
    assert request["y"][:2] == [7.0e6, 6.996e6] and request["xy_units"] == "m"
    # options left out are queued as None: the worker resolves them with the checkpoint's defaults,
    # which /v1/model states (members probability-matched, forecast in a frame moving with the rain)
    assert request["matching"] is None and request["advection"] is None
    defaults = client.get("/v1/model").json()["defaults"]
    assert defaults["matching"] == "cdf" and defaults["advection"] in ("bulk", "dense")
    sizes = json.loads((CHECKPOINT / "manifest.json").read_text())["nowcast"].get("motion_spread_by_step", {})
    assert defaults["motion_spread_by_step"] == sizes  # what a request of each step gets, told to clients
    assert request["timestamps"][-1] == f"{LAST:%Y-%m-%dT%H:%M:%S}Z" and request["step_minutes"] == 5
    expected = np.clip((values + 10) / 70, 0, 1)  # HKO-7 pixels of the default checkpoint
    np.testing.assert_allclose(pixels, expected, atol=1e-6)
    assert np.isnan(pixels[:, :4, :4]).all()  # no data stays no data


BAD_PAYLOADS = {
    "frame count": (payload(frames=encode(frames(t=3)), timestamps=times(3)), "t_in=5"),
    "not 3-D": (payload(frames=encode(frames()[0])), "3-D"),
    "dtype": (payload(frames=encode(frames().astype(np.float64), dtype="float64")), "dtype"),
    "data length": (payload(frames={**encode(frames()), "shape": [T_IN, SIDE, SIDE + 1]}), "bytes"),
    "side too large": (payload(frames=encode(frames(h=320, w=64))), "max_side=256"),
    "side too small": (payload(frames=encode(frames(h=8, w=64))), "between 16"),
    "unit": (payload(unit="inch/h"), "unit"),
    "infinite": (payload(frames=encode(np.where(frames() > 20, np.inf, frames()))), "infinite"),
    "all NaN": (payload(frames=encode(np.full((T_IN, SIDE, SIDE), np.nan, np.float32))), "all NaN"),
    "too many members": (payload(members=51), "max_members=50"),
    "zero members": (payload(members=0), "members"),
    "timestep": (payload(timestamps=times(step=7)), "one of the model's time steps, [2, 5, 6] min"),
    "timestamps count": (payload(timestamps=times(4)), "one time per frame"),
    "guidance": (payload(guidance=11), "guidance"),
    "guidance share": (payload(guidance_share=1.5), "guidance_share"),
    "thresholds": (payload(thresholds=[-1.0]), "thresholds"),
    "matching": (payload(matching="quantile"), "matching"),
    "advection": (payload(advection="optical_flow"), "advection"),
    "detail": (payload(detail="sideways"), "detail"),
    "unknown field": (payload(member=3), "member"),
    "bad base64": (payload(frames={**encode(frames()), "data": "%%%"}), "base64"),
}


@pytest.mark.parametrize("case", list(BAD_PAYLOADS))
def test_invalid_submission_is_refused_naming_the_problem(client, case):
    body, message = BAD_PAYLOADS[case]
    response = client.post("/v1/nowcasts", json=body)
    assert response.status_code == 422, response.text
    assert message in response.text


def test_stale_input_is_refused_when_max_age_is_set(redis, redis_url):
    with TestClient(create_app(make_settings(redis_url, max_age_minutes=30))) as client:
        response = client.post("/v1/nowcasts", json=payload())  # the last frame is 40 min old
        assert response.status_code == 422 and "max_age_minutes=30" in response.text
        now = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
        fresh = [(now - dt.timedelta(minutes=STEP * (T_IN - 1 - i))).isoformat() for i in range(T_IN)]
        assert client.post("/v1/nowcasts", json=payload(timestamps=fresh)).status_code == 202


def test_idempotency_key_returns_the_same_job(client):
    first = client.post("/v1/nowcasts", json=payload(), headers={"Idempotency-Key": "radar-1200"})
    again = client.post("/v1/nowcasts", json=payload(idempotency_key="radar-1200"))
    other = client.post("/v1/nowcasts", json=payload(idempotency_key="radar-1205"))
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] != other.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    clash = client.post("/v1/nowcasts", json=payload(idempotency_key="a"), headers={"Idempotency-Key": "b"})
    assert clash.status_code == 422 and "differ" in clash.text


def test_full_queue_answers_429_with_retry_after(redis, redis_url):
    with TestClient(create_app(make_settings(redis_url, max_queued=1))) as client:
        assert client.post("/v1/nowcasts", json=payload()).status_code == 202
        response = client.post("/v1/nowcasts", json=payload())
    assert response.status_code == 429 and int(response.headers["retry-after"]) > 0


def test_status_etag_gives_304_until_the_job_changes(client):
    job_id = client.post("/v1/nowcasts", json=payload()).json()["id"]
    first = client.get(f"/v1/nowcasts/{job_id}")
    etag = first.headers["etag"]
    unchanged = client.get(f"/v1/nowcasts/{job_id}", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.headers["etag"] == etag


def finish_next_job(redis, settings: Settings) -> str:
    """Act as a worker: claim the next job and store a synthetic result for it."""
    qs = settings.queue
    (claim,) = jobs.claim_new(redis, qs, "test-worker", 1, block_ms=0)
    request, pixels = jobs.load_job(redis, qs, claim.job_id)
    jobs.mark_running(redis, qs, claim, "test-worker", model_version="stldm-test")
    k, t, (h, w) = request["members"], 3, pixels.shape[1:]
    members = np.random.default_rng(0).gamma(0.5, 2.0, size=(k, t, h, w)).astype(np.float32)
    arrays = {"members": members, "mean": members.mean(axis=0),
              "percentiles": np.percentile(members, PERCENTILES, axis=0).astype(np.float32),
              "probability": exceedance_probability(members, request["thresholds"] or DEFAULT_THRESHOLDS),
              "thresholds": np.asarray(request["thresholds"] or DEFAULT_THRESHOLDS, np.float32),
              "lead_minutes": np.arange(1, t + 1) * STEP}
    meta = {"model_version": "stldm-test", "timestep_minutes": STEP, "members": k, "guidance": 1.0,
            "seed": request["seed"], "timings": {"sample_seconds": 0.5}, "request": request}
    jobs.complete(redis, qs, claim, "test-worker", jobs.encode_result(arrays, meta),
                  model_version="stldm-test")
    return claim.job_id


def test_finished_job_renders_json_netcdf_and_png(client, redis, redis_url, tmp_path):
    job_id = client.post("/v1/nowcasts", json=payload(grid=GRID)).json()["id"]
    assert finish_next_job(redis, make_settings(redis_url)) == job_id
    status = client.get(f"/v1/nowcasts/{job_id}").json()
    assert status["status"] == "done" and status["model_version"] == "stldm-test"
    assert status["run_seconds"] >= 0 and status["result_url"].endswith("/result")

    body = client.get(f"/v1/nowcasts/{job_id}/result").json()
    meta = body["metadata"]
    assert meta["unit"] == "mm/h" and meta["leadtimes"] == [5, 10, 15] and meta["n_members"] == 2
    assert meta["forecast_reference_time"].startswith(f"{LAST:%Y-%m-%dT%H:%M}")
    assert meta["grid_spacing_km"] == 4.0 and meta["crs"] == "EPSG:3067"
    assert meta["threshold"] == 0.1 and meta["zr_relation"] == "Z = 200 R^1.6"
    assert body["probability"]["shape"] == [6, 3, SIDE, SIDE] and body["members"] is None
    listed = client.get(f"/v1/nowcasts/{job_id}/result", params={"members": True, "encoding": "list"}).json()
    assert np.asarray(listed["members"]).shape == (2, 3, SIDE, SIDE)

    response = client.get(f"/v1/nowcasts/{job_id}/result", params={"format": "netcdf"})
    assert response.headers["content-type"] == "application/x-netcdf"
    (tmp_path / "r.nc").write_bytes(response.content)
    ds = xr.load_dataset(tmp_path / "r.nc", engine="netcdf4")
    assert ds["probability_of_lwe_precipitation_rate_above_threshold"].sizes["threshold"] == 6
    assert str(ds["forecast_reference_time"].values).startswith(f"{LAST:%Y-%m-%dT%H:%M}")

    png = client.get(f"/v1/nowcasts/{job_id}/png", params={"lead": 10, "product": "probability"})
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    bad = client.get(f"/v1/nowcasts/{job_id}/png", params={"lead": 7})
    assert bad.status_code == 422 and "valid leads" in bad.text


def test_readyz_needs_a_worker_heartbeat(client, redis, redis_url):
    response = client.get("/readyz")
    assert response.status_code == 503 and "no live worker" in response.json()["detail"]
    jobs.heartbeat(redis, make_settings(redis_url).queue, "w1", {"model_version": "stldm-test"})
    response = client.get("/readyz")
    assert response.status_code == 200 and response.json()["workers"] == 1


def test_unknown_job_is_404(client):
    assert client.get("/v1/nowcasts/nope").status_code == 404
    assert client.get("/v1/nowcasts/nope/result").status_code == 404


def test_result_before_done_is_409_with_status(client):
    job_id = client.post("/v1/nowcasts", json=payload()).json()["id"]
    response = client.get(f"/v1/nowcasts/{job_id}/result")
    assert response.status_code == 409 and response.json()["job_status"] == "queued"


def test_netcdf_upload_takes_the_last_t_in_frames(client, tmp_path):
    n = T_IN + 2
    values = frames(t=n)
    ds = xr.Dataset(
        {"dbz": (("time", "y", "x"), values,
                 {"standard_name": "equivalent_reflectivity_factor", "units": "dBZ"})},
        coords={"time": np.array([np.datetime64(T0.replace(tzinfo=None), "ns") + np.timedelta64(5 * i, "m")
                                  for i in range(n)]),
                "y": ("y", np.arange(SIDE)[::-1] * 4000.0, {"units": "m"}),
                "x": ("x", np.arange(SIDE) * 4000.0, {"units": "m"})},
        attrs={"projection_proj4": "+proj=stere +lat_0=90"})
    path = tmp_path / "radar.nc"
    ds.to_netcdf(path, engine="netcdf4")
    with path.open("rb") as f:
        response = client.post("/v1/nowcasts", files={"file": ("radar.nc", f, "application/x-netcdf")},
                               data={"members": "3", "thresholds": "0.5,2"})
    assert response.status_code == 202, response.text
    with path.open("rb") as f:
        bad = client.post("/v1/nowcasts", files={"file": ("radar.nc", f)}, data={"members": "99"})
    assert bad.status_code == 422 and "max_members" in bad.text
    garbage = client.post("/v1/nowcasts", files={"file": ("x.nc", b"not netcdf")})
    assert garbage.status_code == 422 and "netCDF" in garbage.text


def test_other_content_types_are_415(client):
    response = client.post("/v1/nowcasts", content=b"x", headers={"content-type": "text/plain"})
    assert response.status_code == 415


def test_api_keys_guard_the_nowcasts_but_not_health(redis, redis_url):
    settings = make_settings(redis_url)
    settings.auth.api_keys = ["s3cret"]
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/nowcasts", json=payload()).status_code == 401
        assert client.post("/v1/nowcasts", json=payload(), headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.post("/v1/nowcasts", json=payload(), headers={"X-API-Key": "s3cret"}).status_code == 202
        assert client.get("/livez").status_code == 200


def test_redis_down_gives_503_but_livez_stays_up():
    from service.serve import free_port

    with TestClient(create_app(make_settings(f"redis://127.0.0.1:{free_port()}/0"))) as client:
        assert client.get("/livez").status_code == 200
        assert client.post("/v1/nowcasts", json=payload()).status_code == 503
        ready = client.get("/readyz")
    assert ready.status_code == 503 and "redis" in ready.json()["detail"]


def test_metrics_count_requests_and_submissions(client):
    client.post("/v1/nowcasts", json=payload())
    client.post("/v1/nowcasts", json=payload(members=0))
    text = client.get("/metrics").text
    assert 'nowcast_api_submissions_total{outcome="queued"} 1.0' in text
    assert 'endpoint="/v1/nowcasts",method="POST",status="422"' in text
    assert "nowcast_api_queue_depth 1.0" in text


def test_model_facts_and_openapi_docs(client):
    model = client.get("/v1/model").json()
    assert model["t_in"] == T_IN and STEP in model["step_minutes"] and model["size_multiple"] == SIDE
    schema = client.get("/openapi.json").json()
    assert {"/v1/nowcasts", "/v1/nowcasts/{job_id}", "/v1/nowcasts/{job_id}/result", "/readyz"} <= set(
        schema["paths"])
    assert client.get("/docs").status_code == 200


def test_cors_origins_are_allowed(redis, redis_url):
    settings = make_settings(redis_url)
    settings.cors_origins = ["https://radar.example"]
    with TestClient(create_app(settings)) as client:
        response = client.get("/livez", headers={"Origin": "https://radar.example"})
    assert response.headers["access-control-allow-origin"] == "https://radar.example"


def test_the_api_process_never_loads_torch_or_the_weights(redis, redis_url):
    """The API serves submissions and results with no model in memory (workers hold it)."""
    script = f"""
import sys
from fastapi.testclient import TestClient
from service.app import create_app
from service.settings import Settings
settings = Settings(redis={{"url": {redis_url!r}}}, model={{"checkpoint": {str(CHECKPOINT)!r}}})
with TestClient(create_app(settings)) as client:
    assert client.get("/v1/model").status_code == 200
    assert client.post("/v1/nowcasts", json={payload()!r}).status_code == 202
print("torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
