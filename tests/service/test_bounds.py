"""The issue-16 reproductions against the API: each gets a 4xx problem or the right behaviour.

Real Redis (fixture ``redis_url``), no model: results are written as a worker would
(``test_api.finish_next_job``).
"""

from __future__ import annotations

import datetime as dt
import json
import math

import netCDF4
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service import jobs
from service.app import create_app
from service.problems import PROBLEM_JSON
from service.settings import Settings
from tests.service.test_api import CHECKPOINT, SIDE, STEP, T_IN, encode, finish_next_job, frames, payload

NOW = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)


def settings_for(redis_url: str, *, keys: tuple[str, ...] = (), **limits) -> Settings:
    return Settings(redis={"url": redis_url}, model={"checkpoint": str(CHECKPOINT), "max_side": 256},
                    auth={"api_keys": list(keys)}, limits=limits)


@pytest.fixture
def client(redis, redis_url):
    with TestClient(create_app(settings_for(redis_url))) as client:
        yield client


def stamps(last: str, n: int = T_IN) -> list[str]:
    """``n`` ISO times 5 min apart, the last one spelt ``last`` (the earlier ones as offsets of it)."""
    end = dt.datetime.fromisoformat(last)
    return [(end - dt.timedelta(minutes=STEP * (n - 1 - i))).isoformat() for i in range(n - 1)] + [last]


def assert_problem(response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text[:1000]
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["status"] == status and body["title"] and body["type"]
    assert isinstance(body.get("detail", ""), str)
    for word in words:
        assert word in response.text, (word, response.text)
    return body


# --- 2. timestamps: no overflow, a window around now ---------------------------------------------

@pytest.mark.parametrize("last", ["9999-12-31T23:35:00-01:00", "0001-01-01T00:20:00+01:00",
                                  "9999-12-31T23:35:00+00:00", "2300-01-01T00:00:00+00:00",
                                  "2016-09-28T18:00:00+00:00"])
def test_timestamps_out_of_the_window_are_422_not_500(client, last):
    try:
        times = stamps(last)
    except OverflowError:  # 0001-01-01 minus 20 min does not exist: send the same minute five times
        times = [last] * T_IN
    assert_problem(client.post("/v1/nowcasts", json=payload(timestamps=times)), 422,
                   "outside the accepted window", "NOWCAST_LIMITS__MAX_PAST_HOURS")


def test_the_window_is_configurable_and_recent_inputs_pass(redis, redis_url):
    recent = stamps((NOW - dt.timedelta(minutes=10)).isoformat())
    ahead = stamps((NOW + dt.timedelta(minutes=90)).isoformat())
    with TestClient(create_app(settings_for(redis_url, max_past_hours=0.05))) as client:
        refused = client.post("/v1/nowcasts", json=payload(timestamps=recent))
        assert_problem(refused, 422, "max_past_hours=0.05")
        assert_problem(client.post("/v1/nowcasts", json=payload(timestamps=ahead)), 422, "max_future_hours=1")
    with TestClient(create_app(settings_for(redis_url))) as client:
        assert client.post("/v1/nowcasts", json=payload(timestamps=recent)).status_code == 202


# --- 2. numbers: finite, in range, strict JSON ---------------------------------------------------

def raw_post(client, body: str):
    return client.post("/v1/nowcasts", content=body.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize("field, token", [("thresholds", "[1e308]"), ("thresholds", "[5000]"),
                                          ("grid_spacing_km", "1e309"), ("grid_spacing_km", "Infinity"),
                                          ("guidance", "NaN"), ("motion_spread", "-Infinity"),
                                          ("detail_lifetime", "-1"), ("detail_lifetime", "1e9"),
                                          ("extrapolation_lifetime", "-0.5"), ("blend_spread", "1.5"),
                                          ("estimate_lifetime", "-1"), ("estimate_lifetime", "1e9")])
def test_huge_or_non_finite_numbers_are_refused(client, field, token):
    body = json.dumps(payload())[:-1] + f', "{field}": {token}}}'
    problem = assert_problem(raw_post(client, body), 422, field)
    assert problem["errors"][0]["loc"][:2] == ["body", field]


@pytest.mark.parametrize("token", ['"maybe"', "2", "[true]"])
def test_antithetic_is_true_or_false(client, token):
    body = json.dumps(payload())[:-1] + f', "antithetic": {token}}}'
    problem = assert_problem(raw_post(client, body), 422, "antithetic")
    assert problem["errors"][0]["loc"][:2] == ["body", "antithetic"]


def test_nan_tokens_in_nested_frames_are_refused_null_is_no_data(client):
    values = frames().astype(object)
    values[np.isnan(frames())] = None
    body = json.dumps(payload(frames=values.tolist()))
    assert raw_post(client, body).status_code == 202
    assert_problem(raw_post(client, body.replace("null", "NaN", 1)), 422, "frames")


@pytest.mark.parametrize("unit, value", [("dBZ", 500.0), ("mm/h", -1.0), ("pixel", 1.5)])
def test_values_outside_the_range_of_their_unit_are_refused(client, unit, value):
    values = np.full((T_IN, SIDE, SIDE), value if unit != "dBZ" else 20.0, np.float32)
    values[0, 0, 0] = value
    assert_problem(client.post("/v1/nowcasts", json=payload(frames=encode(values), unit=unit)), 422,
                   f"values in {unit} must lie in")


# --- 2. netCDF uploads: types, units, shapes from metadata ---------------------------------------

def netcdf(path, *, side: tuple[int, int] = (SIDE, SIDE), times: int = T_IN, dtype="f4", units="dBZ",
           y_type="f8", write: bool = True, chunks=None) -> bytes:
    """A radar file; ``write=False`` declares the variable and writes no data (a tiny file)."""
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("time", times)
        ds.createDimension("y", side[0])
        ds.createDimension("x", side[1])
        t = ds.createVariable("time", "f8", ("time",))
        t.units = "seconds since 1970-01-01"
        start = (NOW - dt.timedelta(minutes=STEP * times)).timestamp()
        t[:] = start + 60 * STEP * np.arange(times)
        y = ds.createVariable("y", y_type, ("y",))
        y[:] = (np.arange(side[0]) * 4000.0) if y_type == "f8" else np.array(
            [f"row{i}" for i in range(side[0])], dtype=object)
        x = ds.createVariable("x", "f8", ("x",))
        x.units, y.units = "m", "m"
        x[:] = np.arange(side[1]) * 4000.0
        kwargs = {"zlib": True, "chunksizes": chunks} if chunks else {"zlib": True}
        if dtype is str:
            var = ds.createVariable("reflectivity", str, ("time", "y", "x"))
        else:
            var = ds.createVariable("reflectivity", dtype, ("time", "y", "x"), **kwargs)
        var.units = units
        if write:
            fill = "heavy" if dtype is str else 20.0
            var[:] = np.full((times, *side), fill, object if dtype is str else np.float32)
    return path.read_bytes()


def upload(client, content: bytes):
    return client.post("/v1/nowcasts", files={"file": ("radar.nc", content, "application/x-netcdf")})


def test_a_valid_upload_passes(client, tmp_path):
    assert upload(client, netcdf(tmp_path / "ok.nc")).status_code == 202


@pytest.mark.parametrize("case, kwargs, words", [
    ("string rain", {"dtype": str}, ("heavy",)),
    ("string y", {"y_type": str}, ("row0",)),
    ("kelvin", {"units": "K"}, ("must be in dBZ", "units 'K'")),
    ("no units", {"units": ""}, ("must be in dBZ",)),
    ("huge declared", {"side": (8192, 8192), "write": False}, ("5 x 8192 x 8192", "256 MiB read")),
    ("huge chunk", {"times": 2000, "side": (128, 128), "chunks": (2000, 128, 128), "write": False},
     ("chunks", "MiB")),
])
def test_bad_uploads_are_refused_from_their_metadata(client, tmp_path, case, kwargs, words):
    assert_problem(upload(client, netcdf(tmp_path / "bad.nc", **kwargs)), 422, *words)


# --- 3. memory: body, job and response sizes -----------------------------------------------------

def test_a_body_over_the_limit_is_413_from_content_length_and_while_streaming(redis, redis_url):
    with TestClient(create_app(settings_for(redis_url, max_body_bytes=4096))) as client:
        big = json.dumps(payload()).encode()
        assert len(big) > 4096
        assert_problem(client.post("/v1/nowcasts", content=big, headers={"content-type": "application/json"}),
                       413, "max_body_bytes=4096")

        def chunks():  # no Content-Length: Transfer-Encoding chunked
            for start in range(0, len(big), 1000):
                yield big[start:start + 1000]

        streamed = client.post("/v1/nowcasts", content=chunks(), headers={"content-type": "application/json"})
        assert_problem(streamed, 413, "NOWCAST_LIMITS__MAX_BODY_BYTES")


def test_side_times_side_times_members_is_capped(redis, redis_url):
    with TestClient(create_app(settings_for(redis_url, max_member_cells=SIDE * SIDE * 4))) as client:
        assert client.post("/v1/nowcasts", json=payload(members=4)).status_code == 202
        assert_problem(client.post("/v1/nowcasts", json=payload(members=5)), 422, "max_member_cells")


def test_a_json_result_over_the_response_cap_is_refused_naming_smaller_choices(redis, redis_url):
    settings = settings_for(redis_url, max_response_bytes=1_000_000)
    with TestClient(create_app(settings)) as client:
        job_id = client.post("/v1/nowcasts", json=payload(members=4)).json()["id"]
        finish_next_job(redis, settings)
        url = f"/v1/nowcasts/{job_id}/result"
        assert client.get(url).status_code == 200  # mean, percentiles, probabilities: 0.7 MB in base64
        problem = assert_problem(client.get(url, params={"members": True, "encoding": "list"}), 422,
                                 "members=false", "encoding=base64", "format=netcdf")
        assert problem["type"].endswith("response-too-large")
        assert client.get(url, params={"format": "netcdf"}).status_code == 200


def strict_loads(text: str):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


def test_result_json_is_strict_with_null_for_no_data(client, redis, redis_url):
    job_id = client.post("/v1/nowcasts", json=payload()).json()["id"]
    finish_next_job(redis, settings_for(redis_url))
    key = jobs.Keys("nowcast").result(job_id)
    blob = jobs.decode_result(redis.get(key))
    for name in ("mean", "percentiles", "probability", "members"):  # a no-data corner, as a worker writes it
        blob[name][..., :4, :4] = np.nan
    redis.set(key, jobs.encode_result({n: blob[n] for n in jobs.RESULT_ARRAYS}, blob["meta"]))
    listed = strict_loads(client.get(f"/v1/nowcasts/{job_id}/result",
                                     params={"encoding": "list", "members": True}).text)
    for name in ("mean", "percentiles", "probability", "members"):
        expected = np.asarray(blob[name], np.float32)
        got = np.array([[np.nan if v is None else v for v in row] for row in
                        np.asarray(listed[name], dtype=object).reshape(-1, expected.shape[-1])], np.float32)
        np.testing.assert_array_equal(got.reshape(expected.shape), expected)  # NaN where no data
    assert any(v is None for v in np.asarray(listed["mean"], dtype=object).ravel())  # the no-data corner
    based = strict_loads(client.get(f"/v1/nowcasts/{job_id}/result").text)
    assert based["members"] is None and based["mean"]["shape"] == list(blob["mean"].shape)
    assert all(math.isfinite(v) for v in based["metadata"]["thresholds"])


# --- 6. access ------------------------------------------------------------------------------------

KEY_A, KEY_B = "a" * 3 + "-key-of-client-a", "b" * 3 + "-key-of-client-b"


def test_model_facts_need_the_key_and_idempotency_keys_are_per_client(redis, redis_url):
    with TestClient(create_app(settings_for(redis_url, keys=(KEY_A, KEY_B)))) as client:
        assert_problem(client.get("/v1/model"), 401, "X-API-Key")
        assert client.get("/v1/model", headers={"X-API-Key": KEY_A}).status_code == 200
        same = {"Idempotency-Key": "radar-1200"}
        first = client.post("/v1/nowcasts", json=payload(), headers={**same, "X-API-Key": KEY_A})
        again = client.post("/v1/nowcasts", json=payload(), headers={**same, "X-API-Key": KEY_A})
        other = client.post("/v1/nowcasts", json=payload(), headers={**same, "X-API-Key": KEY_B})
        assert first.json()["id"] == again.json()["id"] != other.json()["id"]
        changed = client.post("/v1/nowcasts", json=payload(members=3), headers={**same, "X-API-Key": KEY_A})
        problem = assert_problem(changed, 422, "different request", first.json()["id"])
        assert problem["type"].endswith("idempotency-key-reused")


def test_no_password_or_redis_address_in_answers(redis_url):
    secret_url = "redis://:hunter2-redis-pass@127.0.0.1:1/0"  # nothing listens on port 1
    with TestClient(create_app(settings_for(secret_url))) as client:
        submitted = client.post("/v1/nowcasts", json=payload())
        ready = client.get("/readyz")
    assert_problem(submitted, 503, "unavailable")
    assert_problem(ready, 503, "redis unavailable")
    for response in (submitted, ready):
        assert "hunter2" not in response.text and "127.0.0.1" not in response.text


# --- 7. one error shape ---------------------------------------------------------------------------

def test_every_error_is_a_problem(client, redis, redis_url):
    job_id = client.post("/v1/nowcasts", json=payload()).json()["id"]
    assert_problem(client.get("/v1/nowcasts/nope"), 404)
    assert_problem(client.get(f"/v1/nowcasts/{job_id}/png"), 409, "queued")
    assert_problem(client.delete("/v1/nowcasts"), 405)
    assert_problem(client.post("/v1/nowcasts", content=b"x", headers={"content-type": "text/plain"}), 415)
    assert_problem(client.get(f"/v1/nowcasts/{job_id}/result", params={"format": "xml"}), 422, "format")
    finish_next_job(redis, settings_for(redis_url))
    problem = assert_problem(client.get(f"/v1/nowcasts/{job_id}/png", params={"lead": 7}), 422, "valid leads")
    assert isinstance(problem["detail"], str)


def test_a_job_whose_result_would_be_too_large_is_refused(redis, redis_url):
    # the default checkpoint: 20 lead times; 64 x 64 cells x (2 members + mean + 3 percentiles + 3)
    size = 4 * 20 * SIDE * SIDE * (2 + 4 + 3)
    with TestClient(create_app(settings_for(redis_url, max_result_bytes=size))) as client:
        assert client.post("/v1/nowcasts", json=payload(thresholds=[0.1, 1, 5])).status_code == 202
        assert_problem(client.post("/v1/nowcasts", json=payload(thresholds=[0.1, 1, 5, 10])), 422,
                       "max_result_bytes", "NOWCAST_LIMITS__MAX_RESULT_BYTES")


def test_a_405_lists_every_method_of_the_path(client):
    refused = assert_problem(client.request("OPTIONS", "/v1/nowcasts"), 405)
    assert refused["status"] == 405
    allow = client.request("PUT", "/v1/nowcasts").headers["allow"]
    assert {"GET", "POST"} <= {m.strip() for m in allow.split(",")}
