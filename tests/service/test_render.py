"""Rendering of a decoded result as JSON, CF-netCDF and PNG (no model, no Redis)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import xarray as xr
from PIL import Image

from model.products import PERCENTILES, exceedance_probability
from service import render

THRESHOLDS = (0.1, 1.0, 5.0)


@pytest.fixture
def result() -> dict:
    """A decoded result: 4 members x 3 lead times x 32 x 48 cells, one no-data corner."""
    rng = np.random.default_rng(0)
    members = rng.gamma(0.5, 2.0, size=(4, 3, 32, 48)).astype(np.float32)
    members[:, :, :4, :4] = np.nan
    return {
        "members": members,
        "mean": members.mean(axis=0),
        "percentiles": np.percentile(members, PERCENTILES, axis=0).astype(np.float32),
        "probability": exceedance_probability(members, THRESHOLDS),
        "thresholds": np.asarray(THRESHOLDS, np.float32),
        "lead_minutes": np.asarray([5, 10, 15]),
        "meta": {
            "model_version": "stldm-test", "timestep_minutes": 5, "members": 4, "guidance": 1.0,
            "seed": 7, "timings": {"sample_seconds": 1.5},
            "request": {"timestamps": ["2016-09-28T16:00:00+00:00", "2016-09-28T16:05:00+00:00"],
                        "grid_spacing_km": 4.0, "crs": "+proj=stere +lat_0=90 +lon_0=25 +lat_ts=60",
                        "y": list(np.arange(32.0)[::-1] * 4000 - 3.6e6), "x": list(np.arange(48.0) * 4000),
                        "xy_units": "m"},
        },
    }


def test_json_metadata_is_pysteps_style_and_arrays_round_trip(result):
    body = render.result_json("job1", result)
    meta = body["metadata"]
    assert meta["unit"] == "mm/h" and meta["zerovalue"] == 0.0 and meta["timestep"] == 5
    assert meta["leadtimes"] == [5, 10, 15] and meta["n_members"] == 4 and meta["shape"] == [32, 48]
    assert meta["thresholds"] == pytest.approx(THRESHOLDS)
    assert meta["forecast_reference_time"].startswith("2016-09-28T16:05")
    assert meta["valid_times"][0].startswith("2016-09-28T16:10")
    assert meta["crs"].startswith("+proj=stere") and meta["model_version"] == "stldm-test"
    (south, west), (north, east) = meta["bounds"]
    assert 50 < south < north < 60 and 20 < west < east < 30  # the cells lie in Europe
    assert body["members"] is None
    prob = body["probability"]
    decoded = np.frombuffer(base64.b64decode(prob["data"]), "<f4").reshape(prob["shape"])
    np.testing.assert_array_equal(decoded, result["probability"])


def test_json_lists_carry_nan_as_null_and_members_on_request(result):
    body = render.result_json("job1", result, members=True, encoding="list")
    assert body["mean"][0][0][0] is None
    assert np.asarray(body["members"], dtype=float).shape == (4, 3, 32, 48)


def test_netcdf_is_cf_with_improver_probabilities(result, tmp_path):
    path = tmp_path / "nowcast.nc"
    path.write_bytes(render.result_netcdf(result))
    ds = xr.load_dataset(path, engine="netcdf4")
    prob = ds["probability_of_lwe_precipitation_rate_above_threshold"]
    assert prob.dims == ("threshold", "time", "y", "x") and prob.attrs["units"] == "1"
    assert ds["threshold"].attrs["spp__relative_to_threshold"] == "greater_than_or_equal_to"
    assert ds["threshold"].attrs["standard_name"] == "lwe_precipitation_rate"
    np.testing.assert_allclose(prob.values, result["probability"])
    np.testing.assert_allclose(ds["precipitation_rate_mean"].values, result["mean"])
    assert ds["precipitation_rate"].attrs["units"] == "mm h-1"
    assert list(ds["forecast_period"].values) == [300, 600, 900]
    assert str(ds["forecast_reference_time"].values).startswith("2016-09-28T16:05")
    assert str(ds["time"].values[0]).startswith("2016-09-28T16:10")
    assert ds["x"].attrs["standard_name"] == "projection_x_coordinate" and ds["x"].values[1] == 4000
    assert ds["x"].attrs["units"] == "m"
    assert ds["precipitation_rate"].attrs["grid_mapping"] == "projection"
    assert ds["projection"].attrs["grid_mapping_name"] == "polar_stereographic"
    assert ds["lat"].dims == ("y", "x") and ds["lat"].attrs["units"] == "degrees_north"
    for key in ("Conventions", "title", "institution", "source", "history", "references"):
        assert ds.attrs[key], key
    assert "stldm-test" in ds.attrs["source"]
    assert "detail lifetime" in ds.attrs["history"] and "extrapolation lifetime" in ds.attrs["history"]


@pytest.mark.parametrize(("product", "threshold"), [("mean", 1.0), ("probability", 5.0)])
def test_png_is_an_image(result, product, threshold):
    png = render.result_png(result, lead=10, product=product, threshold=threshold)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size[0] > 100


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"lead": 7}, "valid leads"),
    ({"lead": 5, "product": "median"}, "valid products"),
    ({"lead": 5, "product": "probability", "threshold": 2.0}, "valid thresholds"),
])
def test_png_rejects_unknown_choices_naming_the_valid_ones(result, kwargs, message):
    with pytest.raises(ValueError, match=message):
        render.result_png(result, **kwargs)
