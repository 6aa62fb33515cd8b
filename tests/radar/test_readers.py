"""The one radar reader (radar/readers.py) on small files written in the real formats."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from radar.readers import last_frames, read_radar, sequence_cell_km
from tests.radar import writers

SHARED_EVENT = Path(__file__).resolve().parents[2].parent / "shared" / "radar" / "events" / "mch_20160711.nc"


@pytest.fixture
def dbz() -> np.ndarray:
    """(6, 24, 32) dBZ on the 4 km test grid, a no-data corner."""
    values = writers.blob()
    values[:, :2, :2] = np.nan
    return values


@pytest.fixture
def rain(dbz) -> np.ndarray:
    """The same frames as rain rate (Marshall-Palmer), mm/h."""
    with np.errstate(invalid="ignore"):
        rate = np.where(dbz > -32, (10 ** (dbz / 10) / 200) ** (1 / 1.6), 0.0)
    return np.where(np.isnan(dbz), np.nan, rate).astype(np.float32)


def check_grid(seq, *, crs_has: str = "") -> None:
    assert seq.values.shape == (6, 24, 32) and seq.timestep_minutes == 5
    assert str(seq.times[-1]).startswith("2024-06-01T12:25")
    assert sequence_cell_km(seq) == pytest.approx(4.0, rel=1e-3)
    np.testing.assert_allclose(seq.y[:2], [writers.Y0, writers.Y0 - 4000], atol=0.5)  # row 0 northernmost
    np.testing.assert_allclose(seq.x[:2], [writers.X0, writers.X0 + 4000], atol=0.5)
    assert crs_has in seq.crs
    assert np.isnan(seq.values[:, :2, :2]).all()  # no data stays no data, never dry


def test_cf_variable_is_found_by_standard_name_whatever_its_name(tmp_path, dbz):
    seq = read_radar(writers.write_cf(tmp_path / "radar.nc", dbz, name="DBZH_composite_lowest"))
    check_grid(seq, crs_has="EPSG:3067")
    assert seq.unit == "dBZ"
    np.testing.assert_allclose(seq.values, dbz, atol=1e-4)


def test_cf_coordinates_in_km_are_read_in_metres(tmp_path, dbz):
    check_grid(read_radar(writers.write_cf(tmp_path / "radar.nc", dbz, xy_units="km")), crs_has="EPSG:3067")


def test_cf_rates_in_other_units_and_accumulations_become_mm_per_hour(tmp_path, rain):
    per_second = writers.write_cf(tmp_path / "flux.nc", rain / 3600, name="pr", units="kg m-2 s-1",
                                  standard_name="precipitation_flux")
    np.testing.assert_allclose(read_radar(per_second).values, rain, rtol=1e-5, atol=1e-6)
    amount = writers.write_cf(tmp_path / "acc.nc", rain / 12, name="rr5", units="mm",
                              standard_name="lwe_thickness_of_precipitation_amount")
    seq = read_radar(amount)  # 5-min amounts: x 12 per hour
    assert seq.unit == "mm/h"
    np.testing.assert_allclose(seq.values, rain, rtol=1e-5, atol=1e-6)


def test_odim_h5_composites_one_file_per_time(tmp_path, dbz):
    paths = writers.write_odim(tmp_path, dbz)
    seq = read_radar(list(reversed(paths)))  # any order: sorted by time
    check_grid(seq, crs_has="+proj=utm")
    assert seq.unit == "dBZ"
    assert seq.values[0, -1, -1] == -32.0  # undetect is dry
    wet = np.isfinite(dbz) & (dbz > -32)
    np.testing.assert_allclose(seq.values[wet], dbz[wet], atol=0.26)  # 0.5 dBZ steps


def test_mrms_grib2_precip_rate(tmp_path, rain):
    seq = read_radar(writers.write_grib(tmp_path / "PrecipRate.grib2", rain))
    assert seq.values.shape == (6, 24, 32) and seq.unit == "mm/h" and seq.crs == "EPSG:4326"
    assert seq.x[0] == pytest.approx(-87.0) and seq.y[0] == pytest.approx(47.0)  # 273 E -> -87
    assert np.isnan(seq.values[:, :2, :2]).all()  # MRMS -3: outside coverage
    np.testing.assert_allclose(seq.values[:, 2:, 2:], np.round(rain[:, 2:, 2:], 1), atol=1e-4)
    assert sequence_cell_km(seq) == pytest.approx(3.69, abs=0.02)  # 0.04 deg at 47 N


def test_gzip_compressed_grib2_as_mrms_ships_it(tmp_path, rain):
    raw = writers.write_grib(tmp_path / "PrecipRate.grib2", rain).read_bytes()
    packed = tmp_path / "PrecipRate.grib2.gz"
    packed.write_bytes(gzip.compress(raw))
    assert read_radar(packed).values.shape == (6, 24, 32)
    assert read_radar(("upload.grib2.gz", packed.read_bytes())).timestep_minutes == 5


def test_geotiff_bands_with_unit_and_time(tmp_path, rain):
    seq = read_radar(writers.write_geotiff(tmp_path / "rain.tif", rain))
    check_grid(seq, crs_has="TM35FIN")
    np.testing.assert_allclose(seq.values, rain, atol=1e-5)


@pytest.mark.parametrize(("content", "message"), [
    (b"PK\x03\x04 a zip file", "readable formats: CF-netCDF, ODIM_H5, GRIB2, GeoTIFF"),
    (b"", "not a radar file"),
])
def test_other_files_are_refused_naming_the_formats(content, message):
    with pytest.raises(ValueError, match=message):
        read_radar(("radar.zip", content))


def test_a_cf_file_without_radar_variable_names_what_it_has(tmp_path, dbz):
    path = writers.write_cf(tmp_path / "t.nc", dbz + 300, name="air_temp", standard_name="air_temperature",
                            units="K")
    with pytest.raises(ValueError, match="no radar variable.*air_temp.*air_temperature"):
        read_radar(path)


def test_a_geotiff_without_time_says_which_tag_to_set(tmp_path, rain):
    import rasterio

    path = writers.write_geotiff(tmp_path / "rain.tif", rain[:2])
    with rasterio.open(path, "r+") as dst:
        for band in (1, 2):
            dst.update_tags(band, time="")
    with pytest.raises(ValueError, match="TIFFTAG_DATETIME"):
        read_radar(path)


def test_one_frame_or_uneven_steps_are_refused(tmp_path, dbz):
    with pytest.raises(ValueError, match="one frame only"):
        read_radar(writers.write_odim(tmp_path, dbz[:1]))
    paths = writers.write_odim(tmp_path, dbz)
    with pytest.raises(ValueError, match="evenly spaced"):
        read_radar([paths[0], paths[1], paths[3]])


def test_last_frames_resample_a_fine_grid_or_refuse_it(tmp_path):
    fine = np.repeat(np.repeat(writers.blob(n=6, h=24, w=32), 4, axis=1), 4, axis=2)  # 1 km cells
    seq = read_radar(writers.write_cf(tmp_path / "fine.nc", fine, cell_m=1000.0))
    assert sequence_cell_km(seq) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="far from the model's 4 km cells.*resample=true"):
        last_frames(seq, t_in=5, steps=(5,), cell_km=4.0)
    window, coarsen = last_frames(seq, t_in=5, steps=(5,), cell_km=4.0, resample=True)
    assert coarsen == 4 and window.values.shape == (5, 24, 32)
    assert sequence_cell_km(window) == pytest.approx(4.0)
    assert str(window.times[0]).startswith("2024-06-01T12:05")  # the last 5 of 6 frames
    # the area mean is taken in Z, not dBZ: a block of equal values keeps its value
    np.testing.assert_allclose(window.values, writers.blob(n=6, h=24, w=32)[1:], atol=1e-3)


@pytest.mark.skipif(not SHARED_EVENT.is_file(), reason=f"{SHARED_EVENT} not found")
def test_a_shared_event_file_is_read_with_its_projection():
    seq = read_radar(SHARED_EVENT)
    assert seq.unit == "dBZ" and seq.crs.startswith("+proj=somerc") and seq.timestep_minutes == 5
    assert sequence_cell_km(seq) == pytest.approx(1.0)
