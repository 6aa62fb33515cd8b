"""The one CF-1.8 writer (radar/cf.py) serves ``nowcast forecast`` and the service; both outputs
pass compliance-checker's cf:1.8 check without a single failure."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from cli.main import main
from model.products import PERCENTILES, exceedance_probability
from radar.readers import last_frames, read_radar
from service import render
from service.inputs import _grid_fields
from tests.radar import writers
from tests.radar.compliance import cf_failures

pytest.importorskip("compliance_checker")
CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "default"


@pytest.mark.slow
def test_nowcast_forecast_reads_any_variable_name_and_writes_cf(tmp_path, capsys):
    values = writers.blob(n=6, h=40, w=48)
    source = writers.write_cf(tmp_path / "radar.nc", values, name="composite_dbzh")  # not 'reflectivity'
    out = tmp_path / "nowcast.nc"
    code = main(["forecast", "--input", str(source), "--checkpoint", str(CHECKPOINT), "--members", "2",
                 "--steps", "1", "--size", "0", "--output", str(out)])
    assert code == 0, capsys.readouterr()
    assert cf_failures(out) == []
    ds = xr.load_dataset(out)
    assert ds["precipitation_rate"].dims == ("realization", "time", "y", "x")
    assert ds["projection"].attrs["grid_mapping_name"] == "transverse_mercator"  # EPSG:3067
    assert ds["lat"].shape == (40, 48) and 60 < float(ds["lat"].mean()) < 70  # Finland
    assert str(ds["forecast_reference_time"].values).startswith("2024-06-01T12:25")
    assert list(ds["forecast_period"].values[:2]) == [300, 600]


def test_nowcast_forecast_exits_2_naming_an_unreadable_file(tmp_path, caplog):
    path = tmp_path / "radar.zip"
    path.write_bytes(b"PK\x03\x04 not radar")
    assert main(["forecast", "--input", str(path), "--checkpoint", str(CHECKPOINT)]) == 2
    assert "readable formats" in caplog.text


def stored_result(seq) -> dict:
    """A service result (as the worker stores it) on the grid of ``seq``."""
    window, coarsen = last_frames(seq, t_in=5, steps=(5,), cell_km=4.0, resample=True)
    h, w = window.values.shape[1:]
    members = np.random.default_rng(0).gamma(0.5, 2.0, size=(3, 4, h, w)).astype(np.float32)
    members[:, :, :2, :2] = np.nan
    thresholds = (0.1, 1.0, 5.0)
    stamps = [str(np.datetime_as_string(t, unit="s")) + "Z" for t in window.times]
    return {"members": members, "mean": members.mean(axis=0),
            "percentiles": np.percentile(members, PERCENTILES, axis=0).astype(np.float32),
            "probability": exceedance_probability(members, thresholds),
            "thresholds": np.asarray(thresholds, np.float32), "lead_minutes": np.asarray([5, 10, 15, 20]),
            "meta": {"model_version": "stldm-test", "timestep_minutes": 5, "members": 3, "guidance": 1.0,
                     "seed": 0, "matching": "cdf", "advection": "bulk", "steps": 2, "timings": {},
                     "request": {"timestamps": stamps, "source": "test", "rain_min": 0.1,
                                 "zr_relation": "Z = 200 R^1.6", **_grid_fields(window, coarsen)}}}


@pytest.mark.parametrize("fmt", ["odim", "grib"])
def test_the_service_netcdf_is_cf_on_projected_and_lat_lon_grids(tmp_path, fmt):
    values = writers.blob()
    if fmt == "odim":
        seq = read_radar(writers.write_odim(tmp_path, values))
    else:
        seq = read_radar(writers.write_grib(tmp_path / "r.grib2", np.maximum(values, 0) / 10))
    path = tmp_path / "result.nc"
    path.write_bytes(render.result_netcdf(stored_result(seq)))
    assert cf_failures(path) == []
    ds = xr.load_dataset(path)
    assert ds["threshold"].attrs["spp__relative_to_threshold"] == "greater_than_or_equal_to"
    assert ds.attrs["zr_relation"] == "Z = 200 R^1.6" and ds.attrs["Conventions"] == "CF-1.8"
    assert ("lat" in ds.coords) == (fmt == "odim")  # lat/lon grids carry their latitudes as y


def test_grid_without_crs_is_written_without_a_map_but_still_cf(tmp_path):
    result = stored_result(read_radar(writers.write_odim(tmp_path, writers.blob())))
    for key in ("crs", "y", "x", "xy_units"):
        result["meta"]["request"][key] = None
    path = tmp_path / "plain.nc"
    path.write_bytes(render.result_netcdf(result))
    assert cf_failures(path) == []
    ds = xr.load_dataset(path)
    assert "projection" not in ds and ds["x"].attrs["units"] == "m"  # 4 km cells from the corner
    assert str(ds["time"].values[0]).startswith(str(dt.date(2024, 6, 1)))
