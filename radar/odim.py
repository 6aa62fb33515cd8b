"""ODIM_H5 Cartesian products (OPERA and most European services' composites), read with h5py.

The layout (EUMETNET OPERA, ODIM_H5 v2.x): root ``what`` (``object`` COMP or IMAGE, ``date``,
``time``), root ``where`` (``projdef`` proj4, ``xsize``, ``ysize``, ``xscale``, ``yscale`` in
metres, corner longitudes/latitudes ``UL_lon``, ``UL_lat``, ...), then ``datasetN/dataM`` with
``what`` (``quantity``, ``gain``, ``offset``, ``nodata``, ``undetect``, ``startdate`` ...
``enddate``, ``endtime``) and the raw array ``data`` (row 0 northernmost).

Physical value = offset + gain x raw. ``nodata`` (outside coverage) becomes NaN and
``undetect`` (measured, below detection) becomes dry (-32 dBZ or 0 mm/h): no data is not dry
(OPERATIONS.md). Quantities: DBZH, DBZ, TH (dBZ), RATE (mm/h), ACRR (mm over the dataset's
start-end period). Polar volumes (object PVOL, SCAN) are refused: send a composite.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np

from radar.frames import ACCUMULATION, RATE, REFLECTIVITY, Frames, to_unit

QUANTITIES = {"DBZH": (REFLECTIVITY, "dBZ"), "DBZ": (REFLECTIVITY, "dBZ"), "TH": (REFLECTIVITY, "dBZ"),
              "RATE": (RATE, "mm/h"), "ACRR": (ACCUMULATION, "mm")}
OBJECTS = ("COMP", "IMAGE", "CVOL")
DRY = {"dBZ": -32.0, "mm/h": 0.0}


def _text(value) -> str:
    if isinstance(value, bytes | np.bytes_):
        return value.decode("ascii", "replace").strip("\x00 ")
    if isinstance(value, np.ndarray) and value.size == 1:
        return _text(value.item())
    return str(value).strip()


def _attrs(*groups) -> dict:
    """Attributes of ``groups``, later groups overriding earlier ones (ODIM's inheritance)."""
    merged: dict = {}
    for group in groups:
        if group is not None and "what" in group:
            merged.update(dict(group["what"].attrs))
    return merged


def _time(date, time) -> dt.datetime:
    stamp = _text(date) + _text(time)
    try:
        return dt.datetime.strptime(stamp[:14], "%Y%m%d%H%M%S").replace(tzinfo=dt.timezone.utc)
    except ValueError as err:
        raise ValueError(f"ODIM date/time {stamp!r} is not YYYYMMDD + HHMMSS") from err


def _grid(where) -> tuple[str, np.ndarray, np.ndarray, tuple[int, int]]:
    from pyproj import Transformer

    from radar.georef import crs_text, parse_crs

    missing = [k for k in ("projdef", "xsize", "ysize", "xscale", "yscale", "UL_lon", "UL_lat")
               if k not in where]
    if missing:
        raise ValueError(f"ODIM_H5 'where' lacks {missing} (needed to place the grid)")
    crs = parse_crs(_text(where["projdef"]))
    h, w = int(where["ysize"]), int(where["xsize"])
    to_grid = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    x_ul, y_ul = to_grid.transform(float(where["UL_lon"]), float(where["UL_lat"]))
    dx, dy = float(where["xscale"]), float(where["yscale"])
    x = x_ul + (np.arange(w) + 0.5) * dx
    y = y_ul - (np.arange(h) + 0.5) * dy
    return crs_text(crs), y, x, (h, w)


def _pick_data(dataset) -> tuple[str, Any]:
    """The preferred (quantity, data group) of a dataset, by :data:`QUANTITIES` order."""
    found: dict[str, Any] = {}
    for name in sorted(k for k in dataset if k.startswith("data")):
        quantity = _text(_attrs(dataset, dataset[name]).get("quantity", ""))
        found.setdefault(quantity, dataset[name])
    for quantity in QUANTITIES:
        if quantity in found:
            return quantity, found[quantity]
    raise ValueError(f"ODIM_H5 dataset holds quantities {sorted(found)}; readable: {list(QUANTITIES)}")


def read_odim(path: str | Path, source: str) -> Frames:
    """The frames of an ODIM_H5 Cartesian product (module docstring); one frame per dataset."""
    import h5py

    with h5py.File(path, "r") as f:
        conventions = _text(f.attrs.get("Conventions", ""))
        if not conventions.startswith("ODIM_H5"):
            raise ValueError(f"{source}: HDF5 file with Conventions {conventions!r}: neither ODIM_H5 "
                             "nor netCDF")
        root = _attrs(f)
        kind = _text(root.get("object", ""))
        if kind not in OBJECTS:
            raise ValueError(f"{source}: ODIM object {kind!r} is not a Cartesian product; readable: "
                             f"{list(OBJECTS)} (polar volumes must be composited first)")
        crs, y, x, shape = _grid(dict(f["where"].attrs))
        frames, times, units = [], [], set()
        for name in sorted((k for k in f if k.startswith("dataset")), key=lambda k: int(k[7:] or 0)):
            dataset = f[name]
            quantity, data = _pick_data(dataset)
            what = {**root, **_attrs(dataset, data)}
            raw = np.asarray(data["data"][()])
            if raw.shape != shape:
                raise ValueError(f"{source}: {name} is {raw.shape}, where says {shape}")
            values = (float(what.get("offset", 0.0)) + float(what.get("gain", 1.0)) * raw).astype(np.float32)
            kind_of, _ = QUANTITIES[quantity]
            start = _time(what.get("startdate", what.get("date")), what.get("starttime", what.get("time")))
            end = _time(what.get("enddate", what.get("date")), what.get("endtime", what.get("time")))
            native_unit = QUANTITIES[quantity][1]
            values, unit = to_unit(values, kind_of, native_unit, what=f"{source}: {name} {quantity}",
                                   accumulation_minutes=(end - start).total_seconds() / 60)
            if "undetect" in what:
                values[raw == what["undetect"]] = DRY[unit]
            if "nodata" in what:
                values[raw == what["nodata"]] = np.nan
            frames.append(values)
            times.append(end)
            units.add((unit, quantity))
    if not frames:
        raise ValueError(f"{source}: ODIM_H5 file without any dataset")
    if len(units) > 1:
        raise ValueError(f"{source}: datasets hold different quantities {sorted(units)}")
    unit, quantity = units.pop()
    return Frames(values=np.stack(frames), times=times, unit=unit, crs=crs, y=y, x=x, quantity=quantity)
