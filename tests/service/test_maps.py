"""The viewer's API: job list, uploads in any format, the cell-size check, map layers, the point
plume and the PNG maps, against a real Redis (no model: jobs are finished as a worker would)."""

from __future__ import annotations

import datetime as dt
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from model.products import ensemble_products
from service import jobs
from service.app import create_app
from service.settings import LimitSettings
from tests.radar import writers
from tests.service.test_api import GRID, LAST, encode, make_settings, payload


@pytest.fixture
def client(redis, redis_url):
    # the radar file writers stamp their frames in 2024: accept archived inputs here
    settings = make_settings(redis_url).model_copy(update={"limits": LimitSettings(max_past_hours=1_000_000)})
    with TestClient(create_app(settings)) as client:
        yield client


def finish(redis, redis_url, *, members: int = 3) -> str:
    """Act as the worker on the next job: a result of ``members`` members and the observation."""
    qs = make_settings(redis_url).queue
    (claim,) = jobs.claim_new(redis, qs, "test-worker", 1, block_ms=0)
    request, pixels = jobs.load_job(redis, qs, claim.job_id)
    jobs.mark_running(redis, qs, claim, "test-worker", model_version="stldm-test")
    h, w = pixels.shape[1:]
    rng = np.random.default_rng(1)
    ramp = np.linspace(0, 12, w, dtype=np.float32)[None, None, None, :]  # rain grows eastwards
    members = (ramp * rng.uniform(0.5, 1.5, size=(members, 4, h, w))).astype(np.float32)
    members[:, :, :4, :4] = np.nan
    products = ensemble_products(members, (0.1, 1.0, 5.0))  # as the worker's: NaN where no data
    arrays = {"members": members, "mean": products["mean"], "percentiles": products["percentiles"],
              "probability": products["probability"], "thresholds": products["thresholds"],
              "lead_minutes": np.arange(1, 5) * 5, "observed": members[0, 0]}
    meta = {"model_version": "stldm-test", "timestep_minutes": 5, "members": len(members), "guidance": 1.0,
            "seed": 0, "matching": "cdf", "advection": "bulk", "steps": 2, "timings": {}, "request": request}
    jobs.complete(redis, qs, claim, "test-worker", jobs.encode_result(arrays, meta),
                  model_version="stldm-test")
    return claim.job_id


def test_jobs_are_listed_newest_first_by_status_with_an_etag(client, redis, redis_url):
    first = client.post("/v1/nowcasts", json=payload()).json()["id"]
    assert finish(redis, redis_url) == first
    second = client.post("/v1/nowcasts", json=payload()).json()["id"]
    listed = client.get("/v1/nowcasts")
    assert listed.status_code == 200
    assert [(j["id"], j["status"]) for j in listed.json()["jobs"]] == [(second, "queued"), (first, "done")]
    job = listed.json()["jobs"][1]
    assert job["source"] == "json" and job["forecast_reference_time"].startswith(f"{LAST:%Y-%m-%dT%H:%M}")
    assert [j["id"] for j in client.get("/v1/nowcasts", params={"status": "done"}).json()["jobs"]] == [first]
    assert len(client.get("/v1/nowcasts", params={"limit": 1}).json()["jobs"]) == 1
    again = client.get("/v1/nowcasts", headers={"If-None-Match": listed.headers["etag"]})
    assert again.status_code == 304
    assert client.get("/v1/nowcasts", params={"status": "lost"}).status_code == 422


def test_the_job_list_needs_the_api_key(redis, redis_url):
    settings = make_settings(redis_url)
    settings.auth.api_keys = ["k"]
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/nowcasts").status_code == 401
        assert client.get("/v1/nowcasts", headers={"X-API-Key": "k"}).status_code == 200
        assert client.get("/ui").status_code == 200  # the page is public, its data is not
        assert client.get("/ui/config.json").json()["api_key_required"] is True


def test_model_states_its_cell_size_and_a_far_grid_gets_a_422_saying_so(client):
    assert client.get("/v1/model").json()["cell_km"] == 4.0
    fine = client.post("/v1/nowcasts", json=payload(grid_spacing_km=1.0))
    assert fine.status_code == 422
    assert "1.00 km, far from the model's 4 km cells" in fine.text and "resample=true" in fine.text
    grid = {**GRID, "dx": 1000.0, "dy": -1000.0}
    assert client.post("/v1/nowcasts", json=payload(grid=grid)).status_code == 422
    coarse = client.post("/v1/nowcasts", json=payload(grid_spacing_km=10.0))
    assert coarse.status_code == 422 and "never splits cells" in coarse.text


def test_a_fine_grid_is_resampled_on_request_and_the_result_says_so(client, redis, redis_url):
    values = np.repeat(np.repeat(np.full((5, 32, 32), 30.0, np.float32), 4, axis=1), 4, axis=2)
    grid = {**GRID, "dx": 1000.0, "dy": -1000.0}
    job_id = client.post("/v1/nowcasts", json=payload(frames=encode(values), grid=grid, grid_spacing_km=None,
                                                      resample=True)).json()["id"]
    request, pixels = jobs.load_job(redis, make_settings(redis_url).queue, job_id)
    assert pixels.shape == (5, 32, 32) and request["grid_spacing_km"] == pytest.approx(4.0)
    assert request["resampled"] == "area mean of 4 x 4 cells"
    assert request["x"][:2] == [301500.0, 305500.0]  # block centres
    finish(redis, redis_url)
    meta = client.get(f"/v1/nowcasts/{job_id}/result").json()["metadata"]
    assert meta["resampled"] == "area mean of 4 x 4 cells" and meta["crs"] == "EPSG:3067"


def test_a_grid_must_fit_the_frames(client):
    grid = {"crs": "EPSG:3067", "x": [0.0, 4000.0], "y": [0.0, -4000.0]}
    response = client.post("/v1/nowcasts", json=payload(grid=grid))
    assert response.status_code == 422 and "H=64 and W=64" in response.text
    bad_crs = client.post("/v1/nowcasts", json=payload(grid={**GRID, "crs": "EPSG:999999"}))
    assert bad_crs.status_code == 422 and "EPSG:999999" in bad_crs.text


@pytest.mark.parametrize("fmt", ["odim", "grib", "geotiff", "cf"])
def test_uploads_in_every_format_are_queued_with_their_grid(client, redis, redis_url, tmp_path, fmt):
    dbz = writers.blob(n=6, h=24, w=32)
    rain = np.where(dbz > -32, (10 ** (dbz / 10) / 200) ** (1 / 1.6), 0.0).astype(np.float32)
    paths = {"odim": lambda: writers.write_odim(tmp_path, dbz),
             "grib": lambda: [writers.write_grib(tmp_path / "r.grib2", rain)],
             "geotiff": lambda: [writers.write_geotiff(tmp_path / "r.tif", rain)],
             "cf": lambda: [writers.write_cf(tmp_path / "r.nc", dbz, name="radar_dbz")]}[fmt]()
    files = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]
    response = client.post("/v1/nowcasts", files=files, data={"members": "2"})
    assert response.status_code == 202, response.text
    request, pixels = jobs.load_job(redis, make_settings(redis_url).queue, response.json()["id"])
    assert pixels.shape == (5, 24, 32) and request["timestamps"][-1] == "2024-06-01T12:25:00Z"
    assert request["crs"] and len(request["x"]) == 32 and request["xy_units"] in ("m", "degrees")


def test_an_upload_in_no_known_format_is_a_422_naming_the_formats(client):
    response = client.post("/v1/nowcasts", files={"file": ("radar.zip", b"PK\x03\x04")})
    assert response.status_code == 422 and "ODIM_H5, GRIB2, GeoTIFF" in response.text


def test_map_layers_sit_at_the_grid_true_place(client, redis, redis_url):
    job_id = client.post("/v1/nowcasts", json=payload(grid=GRID)).json()["id"]
    finish(redis, redis_url)
    info = client.get(f"/v1/nowcasts/{job_id}/map").json()
    (south, west), (north, east) = info["bounds"]
    assert info["georeferenced"] and 60 < south < north < 64 and 20 < west < east < 29  # southern Finland
    assert info["lead_minutes"] == [5, 10, 15, 20] and info["stale"] is True  # input 40 min old
    first_valid = LAST + dt.timedelta(minutes=5)
    assert info["valid_times"][0].startswith(f"{first_valid:%Y-%m-%dT%H:%M}")
    assert "observed" in info["products"]
    assert info["legends"]["rain"]["entries"][0]["label"] == "0.1-0.5"
    png = client.get(f"/v1/nowcasts/{job_id}/overlay", params={"product": "probability", "lead": 10,
                                                              "threshold": 5})
    image = np.asarray(Image.open(io.BytesIO(png.content)))
    assert png.status_code == 200 and image.shape[2] == 4
    assert (image[..., 3] == 0).any() and (image[..., 3] > 0).any()  # 0 % transparent, the rest painted
    for params, message in (({"lead": 7}, "valid leads"), ({"product": "p10", "threshold": 2}, None),
                            ({"product": "probability", "threshold": 2}, "valid thresholds")):
        response = client.get(f"/v1/nowcasts/{job_id}/overlay", params=params)
        assert (response.status_code == 200) if message is None else (message in response.text)


def test_a_click_gives_the_members_plume_and_exceedance_probabilities(client, redis, redis_url):
    job_id = client.post("/v1/nowcasts", json=payload(grid=GRID)).json()["id"]
    finish(redis, redis_url, members=3)
    info = client.get(f"/v1/nowcasts/{job_id}/map").json()
    (south, west), (north, east) = info["bounds"]
    point = client.get(f"/v1/nowcasts/{job_id}/point",
                       params={"lat": (south + north) / 2, "lon": (west + east) / 2}).json()
    assert 20 < point["row"] < 44 and 20 < point["col"] < 44
    assert len(point["members"]) == 3 and len(point["members"][0]) == 4
    assert point["thresholds"] == [0.1, 1.0, 5.0] and len(point["probability"]) == 3
    assert 0 <= point["probability"][1][0] <= 1 and point["observed"] is not None
    corner = client.get(f"/v1/nowcasts/{job_id}/point", params={"row": 0, "col": 0}).json()
    assert corner["members"][0][0] is None and corner["probability"][0][0] is None  # no data
    outside = client.get(f"/v1/nowcasts/{job_id}/point", params={"lat": 10.0, "lon": 10.0})
    assert outside.status_code == 422 and "outside the grid" in outside.text


def test_png_maps_by_product_and_animated_over_the_leads(client, redis, redis_url):
    job_id = client.post("/v1/nowcasts", json=payload(grid=GRID)).json()["id"]
    finish(redis, redis_url)
    for product in ("mean", "p90", "probability", "observed"):
        response = client.get(f"/v1/nowcasts/{job_id}/png", params={"product": product, "lead": 10})
        assert response.status_code == 200 and Image.open(io.BytesIO(response.content)).mode == "RGBA"
    animated = client.get(f"/v1/nowcasts/{job_id}/png", params={"product": "mean", "animated": True})
    image = Image.open(io.BytesIO(animated.content))
    assert animated.status_code == 200 and getattr(image, "n_frames", 1) == 4


def test_nowcast_submit_reads_with_the_same_reader_and_sends_the_grid(client, tmp_path):
    from service.cli import cut_input

    fine = np.repeat(np.repeat(writers.blob(n=6, h=24, w=32), 4, axis=1), 4, axis=2)  # 1 km cells
    path = writers.write_cf(tmp_path / "fine.nc", fine, name="any_name", cell_m=1000.0)
    body = cut_input(path, client.get("/v1/model").json())  # averaged to the model's 4 km cells
    assert body["frames"]["shape"] == [5, 24, 32] and body["grid"]["crs"] == "EPSG:3067"
    assert body["grid_spacing_km"] == pytest.approx(4.0)
    assert client.post("/v1/nowcasts", json={**body, "members": 2}).status_code == 202
