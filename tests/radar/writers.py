"""Small radar files in the real formats, written by the tests themselves (no network, no data).

Each writer takes (T, H, W) values on a 4 km grid and the frames' times, and writes what an
operational producer would: CF-netCDF with a grid mapping, ODIM_H5 composites (one file per
time, raw uint8 with gain/offset/nodata/undetect), GRIB2 (hand-encoded: sections 0-8, grid
template 3.0, product template 4.0, simple packing 5.0, as MRMS ships PrecipRate) and GeoTIFF.
"""

from __future__ import annotations

import datetime as dt
import struct
from pathlib import Path

import numpy as np

T0 = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
CELL_M = 4000.0
# a 4 km grid in EPSG:3067 (Finland); cell centres of row 0 / column 0:
X0, Y0 = 300000.0, 7000000.0


def times(n: int, step_minutes: int = 5) -> list[dt.datetime]:
    return [T0 + dt.timedelta(minutes=step_minutes * i) for i in range(n)]


def blob(n: int = 6, h: int = 24, w: int = 32) -> np.ndarray:
    """(n, h, w) reflectivity in dBZ: a rain blob moving east on a dry (-32 dBZ) background."""
    yy, xx = np.mgrid[:h, :w]
    frames = [45 * np.exp(-((yy - h / 2) ** 2 + (xx - w / 4 - 2 * i) ** 2) / 30) - 10 for i in range(n)]
    values = np.stack(frames).astype(np.float32)
    return np.where(values < 5, -32.0, values).astype(np.float32)


def write_cf(path: Path, values: np.ndarray, *, name: str = "dbz_composite",
             standard_name: str = "equivalent_reflectivity_factor", units: str = "dBZ",
             step_minutes: int = 5, xy_units: str = "m", cell_m: float = CELL_M) -> Path:
    """CF-1.8 netCDF: ``name`` (time, y, x) with ``standard_name``, a grid mapping from pyproj
    (EPSG:3067) and projection coordinates in ``xy_units`` (m or km)."""
    import xarray as xr
    from pyproj import CRS

    t, h, w = values.shape
    scale = 1000.0 if xy_units == "km" else 1.0
    stamps = np.array([np.datetime64(x.replace(tzinfo=None), "ns") for x in times(t, step_minutes)])
    ds = xr.Dataset(
        {name: (("time", "y", "x"), values, {"standard_name": standard_name, "units": units,
                                              "grid_mapping": "crs"}),
         "crs": ((), np.int32(0), CRS.from_epsg(3067).to_cf())},
        coords={"time": ("time", stamps, {"standard_name": "time"}),
                "y": ("y", (Y0 - cell_m * np.arange(h)) / scale,
                      {"standard_name": "projection_y_coordinate", "units": xy_units}),
                "x": ("x", (X0 + cell_m * np.arange(w)) / scale,
                      {"standard_name": "projection_x_coordinate", "units": xy_units})},
        attrs={"Conventions": "CF-1.8"})
    ds.to_netcdf(path, engine="netcdf4")
    return path


def write_odim(folder: Path, values: np.ndarray, *, step_minutes: int = 5) -> list[Path]:
    """One ODIM_H5 composite (object COMP, quantity DBZH) per frame, as OPERA distributes them.

    Raw = (dBZ + 32) / 0.5 in uint8; -32 dBZ is written as ``undetect`` (0); NaN as ``nodata`` (255).
    """
    import h5py
    from pyproj import Transformer

    t, h, w = values.shape
    projdef = "+proj=utm +zone=35 +ellps=GRS80 +units=m +no_defs"  # EPSG:3067's projection
    to_lonlat = Transformer.from_crs(projdef, "EPSG:4326", always_xy=True)
    left, top = X0 - CELL_M / 2, Y0 + CELL_M / 2
    right, bottom = left + w * CELL_M, top - h * CELL_M
    corners = {"UL": (left, top), "UR": (right, top), "LL": (left, bottom), "LR": (right, bottom)}
    paths = []
    for i, time in enumerate(times(t, step_minutes)):
        path = folder / f"comp_{time:%Y%m%d%H%M}.h5"
        with h5py.File(path, "w") as f:
            f.attrs["Conventions"] = np.bytes_("ODIM_H5/V2_2")
            what = f.create_group("what").attrs
            what.update({"object": np.bytes_("COMP"), "version": np.bytes_("H5rad 2.2"),
                         "date": np.bytes_(f"{time:%Y%m%d}"), "time": np.bytes_(f"{time:%H%M%S}"),
                         "source": np.bytes_("ORG:86,CMT:test composite")})
            where = f.create_group("where").attrs
            where.update({"projdef": np.bytes_(projdef), "xsize": np.int64(w), "ysize": np.int64(h),
                          "xscale": CELL_M, "yscale": CELL_M})
            for corner, (x, y) in corners.items():
                lon, lat = to_lonlat.transform(x, y)
                where.update({f"{corner}_lon": lon, f"{corner}_lat": lat})
            start = time - dt.timedelta(minutes=step_minutes)
            dataset = f.create_group("dataset1")
            dataset.create_group("what").attrs.update({
                "product": np.bytes_("COMP"), "startdate": np.bytes_(f"{start:%Y%m%d}"),
                "starttime": np.bytes_(f"{start:%H%M%S}"), "enddate": np.bytes_(f"{time:%Y%m%d}"),
                "endtime": np.bytes_(f"{time:%H%M%S}")})
            data = dataset.create_group("data1")
            data.create_group("what").attrs.update({"quantity": np.bytes_("DBZH"), "gain": 0.5,
                                                    "offset": -32.0, "nodata": 255.0, "undetect": 0.0})
            frame = values[i]
            raw = np.clip(np.rint((np.nan_to_num(frame, nan=0.0) + 32) / 0.5), 1, 254).astype(np.uint8)
            raw[frame <= -32] = 0
            raw[np.isnan(frame)] = 255
            data.create_dataset("data", data=raw, compression="gzip")
        paths.append(path)
    return paths


def _grib_message(values: np.ndarray, time: dt.datetime, *, lat1: float, lon1: float, step_deg: float,
                  parameter: tuple[int, int, int]) -> bytes:
    """One GRIB2 message: regular lat/lon grid north to south, simple packing, 0.1 units, 16 bits."""
    discipline, category, number = parameter
    h, w = values.shape
    micro = 1_000_000
    section1 = struct.pack(">IBHHBBBHBBBBBBB", 21, 1, 161, 0, 2, 1, 0, time.year, time.month, time.day,
                           time.hour, time.minute, time.second, 0, 0)
    lat2, lon2 = lat1 - (h - 1) * step_deg, lon1 + (w - 1) * step_deg
    template3 = struct.pack(">BBIBIBIIIIIIIBIIIIB", 6, 0, 0, 0, 0, 0, 0, w, h, 0, 0,
                            round(lat1 * micro), round(lon1 * micro), 48, round(lat2 * micro),
                            round(lon2 * micro), round(step_deg * micro), round(step_deg * micro), 0)
    section3 = struct.pack(">IBBIBBH", 14 + len(template3), 3, 0, h * w, 0, 0, 0) + template3
    template4 = struct.pack(">BBBBBHBBIBBIBBI", category, number, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 255, 0, 0)
    section4 = struct.pack(">IBHH", 9 + len(template4), 4, 0, 0) + template4
    scaled = np.rint(values.astype(np.float64) * 10).astype(np.int64)  # decimal scale D = 1
    reference = int(scaled.min())
    packed = (scaled - reference).astype(">u2").tobytes()
    template5 = struct.pack(">fHHBB", float(reference), 0, 1, 16, 0)
    section5 = struct.pack(">IBIH", 11 + len(template5), 5, h * w, 0) + template5
    section6 = struct.pack(">IBB", 6, 6, 255)
    section7 = struct.pack(">IB", 5 + len(packed), 7) + packed
    body = section1 + section3 + section4 + section5 + section6 + section7 + b"7777"
    return b"GRIB" + struct.pack(">HBBQ", 0, discipline, 2, 16 + len(body)) + body


def write_grib(path: Path, rain: np.ndarray, *, step_minutes: int = 5, lat1: float = 47.0,
               lon1: float = 273.0, step_deg: float = 0.04) -> Path:
    """MRMS-style GRIB2 ``PrecipRate`` (discipline 209, category 6, number 1; mm/h; -3 = no
    coverage), one message per frame; longitudes 0-360 as MRMS writes them."""
    values = np.where(np.isnan(rain), -3.0, rain)
    with path.open("wb") as f:
        for frame, time in zip(values, times(len(values), step_minutes), strict=True):
            f.write(_grib_message(frame, time, lat1=lat1, lon1=lon1, step_deg=step_deg,
                                  parameter=(209, 6, 1)))
    return path


def write_geotiff(path: Path, rain: np.ndarray, *, step_minutes: int = 5) -> Path:
    """Float32 GeoTIFF in EPSG:3067, one band per frame with unit type ``mm/h`` and a ``time`` tag;
    NaN written as the nodata value -9999."""
    import rasterio
    from rasterio.transform import from_origin

    t, h, w = rain.shape
    transform = from_origin(X0 - CELL_M / 2, Y0 + CELL_M / 2, CELL_M, CELL_M)
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=t, dtype="float32",
                       crs="EPSG:3067", transform=transform, nodata=-9999.0) as dst:
        for band, (frame, time) in enumerate(zip(rain, times(t, step_minutes), strict=True), start=1):
            dst.write(np.where(np.isnan(frame), -9999.0, frame).astype(np.float32), band)
            dst.set_band_unit(band, "mm/h")
            dst.update_tags(band, time=time.isoformat())
    return path
