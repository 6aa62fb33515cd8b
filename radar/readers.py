"""The one radar reader: files as they come, for ``nowcast forecast``, ``nowcast submit`` and the
upload endpoint alike.

:func:`read_radar` takes one or more files (paths, or names with bytes), recognises each by its
first bytes, reads it with the reader of its format and puts all frames together, sorted by
time, into a :class:`~radar.read.RadarSequence`:

===============  ============================  =============================================
format           recognised by                 reader
===============  ============================  =============================================
CF-netCDF        ``CDF`` or HDF5 magic (not     :func:`radar.cf_reader.read_cf` (by standard_name)
                 ODIM)
ODIM_H5          HDF5 magic, ``Conventions``    :func:`radar.odim.read_odim` (h5py)
                 ``ODIM_H5/...``
GRIB2 (MRMS)     ``GRIB``                       :func:`radar.grib.read_grib` (pygrib / ecCodes)
GeoTIFF          ``II*`` / ``MM*``              :func:`radar.geotiff.read_geotiff` (rasterio)
===============  ============================  =============================================

gzip-compressed files (MRMS ships ``.grib2.gz``) are unpacked first. Anything else, and every
problem inside a file, is a ``ValueError`` naming it: the API answers 422 and the CLI exits 2.
:func:`last_frames` then takes the frames a model needs from a sequence.
"""

from __future__ import annotations

import gzip
import logging
import math
import tempfile
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

from radar.frames import Frames
from radar.read import RadarSequence, coarsen_coordinates, frame_stride, serving_step

log = logging.getLogger(__name__)

FORMATS = ("CF-netCDF", "ODIM_H5", "GRIB2", "GeoTIFF")
MAX_UNPACKED_BYTES = 1 << 30  # a gzip member may not unpack to more than 1 GiB
Source = str | Path | tuple[str, bytes]


def sniff(head: bytes) -> str:
    """The container of a file from its first bytes: netcdf3, hdf5, grib, tiff or gzip."""
    if head[:3] == b"CDF":
        return "netcdf3"
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return "hdf5"
    if head[:4] == b"GRIB":
        return "grib"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    raise ValueError(f"not a radar file this service reads (it starts with {head[:8]!r}); readable "
                     f"formats: {', '.join(FORMATS)} (gzip-compressed or not)")


def _is_odim(path: Path) -> bool:
    import h5py

    with h5py.File(path, "r") as f:
        conventions = f.attrs.get("Conventions", b"")
    text = conventions.decode("ascii", "replace") if isinstance(conventions, bytes) else str(conventions)
    return text.startswith("ODIM_H5")


@contextmanager
def _local(source: Source):
    """A path to read ``source`` from, and its name for messages."""
    if isinstance(source, tuple):
        name, content = source
        with tempfile.NamedTemporaryFile(suffix=Path(name).suffix or ".bin") as tmp:
            tmp.write(content)
            tmp.flush()
            yield Path(tmp.name), Path(name).name
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        yield path, path.name


def _gunzip(path: Path, source: str) -> bytes:
    with gzip.open(path, "rb") as f:
        content = f.read(MAX_UNPACKED_BYTES + 1)
    if len(content) > MAX_UNPACKED_BYTES:
        raise ValueError(f"{source}: unpacks to more than {MAX_UNPACKED_BYTES >> 20} MiB")
    return content


def read_file(source: Source) -> Frames:
    """The radar frames of one file (any format of the module docstring)."""
    from radar.cf_reader import read_cf
    from radar.geotiff import read_geotiff
    from radar.grib import read_grib
    from radar.odim import read_odim

    with _local(source) as (path, name):
        with path.open("rb") as f:
            head = f.read(8)
        try:
            kind = sniff(head)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
        if kind == "gzip":
            inner = name[:-3] if name.endswith(".gz") else name
            return read_file((inner, _gunzip(path, name)))
        if kind == "hdf5" and _is_odim(path):
            return read_odim(path, name)
        reader = {"netcdf3": read_cf, "hdf5": read_cf, "grib": read_grib, "tiff": read_geotiff}[kind]
        return reader(path, name)


def _same_grid(a: Frames, b: Frames) -> bool:
    if a.values.shape[1:] != b.values.shape[1:] or a.crs != b.crs:
        return False
    return all((p is None and q is None) or (p is not None and q is not None and np.allclose(p, q))
               for p, q in ((a.y, b.y), (a.x, b.x)))


def combine(parts: Sequence[Frames], *, source: str) -> RadarSequence:
    """The frames of several files as one :class:`RadarSequence` sorted by time (a repeated time
    keeps the later file's frame); ``ValueError`` when units or grids differ, or when the frames
    are not evenly spaced in time."""
    first = parts[0]
    for other in parts[1:]:
        if other.unit != first.unit:
            raise ValueError(f"files hold different quantities ({first.unit} and {other.unit}); send one")
        if not _same_grid(first, other):
            raise ValueError("files are on different grids (shape, CRS or coordinates differ); send one grid")
    by_time = {}
    for part in parts:
        for time, frame in zip(part.times, part.values, strict=True):
            by_time[time] = frame
    times = sorted(by_time)
    if len(times) < 2:
        raise ValueError(f"{source}: one frame only (at {times[0]:%Y-%m-%d %H:%M} UTC); a nowcast needs the "
                         "last few frames: send them in one file or as several files")
    steps = sorted({(b - a).total_seconds() / 60 for a, b in zip(times[:-1], times[1:], strict=True)})
    if len(steps) != 1 or steps[0] != int(steps[0]):
        raise ValueError(f"{source}: frames must be evenly spaced in whole minutes; got steps of {steps} min")
    crs, y, x = first.crs, first.y, first.x
    spacing, spacing_unit = math.nan, ""
    if y is not None and x is not None and len(x) > 1:
        spacing = float(np.mean([abs(x[1] - x[0]), abs(y[1] - y[0])]))
        spacing_unit = "deg" if crs == "EPSG:4326" else "m"
    return RadarSequence(
        values=np.stack([by_time[t] for t in times]).astype(np.float32),
        times=np.array([np.datetime64(t.replace(tzinfo=None), "ns") for t in times]),
        unit=first.unit, timestep_minutes=int(steps[0]), grid_spacing=spacing,
        grid_spacing_unit=spacing_unit, source=source, y=y, x=x, crs=crs or "")


def read_radar(sources: Source | Sequence[Source]) -> RadarSequence:
    """Radar frames from one or more files as they come (module docstring).

    Parameters
    ----------
    sources : a path, a ``(file name, bytes)`` pair, or a sequence of them (e.g. one ODIM_H5
        composite per time).

    Returns
    -------
    RadarSequence
        ``values`` (T, H, W) float32 in dBZ (reflectivity) or mm/h (rates and accumulations),
        NaN = no data, row 0 northernmost; ``crs`` the grid's CRS as text ("" when unknown);
        ``y``, ``x`` cell centres in the CRS's units.
    """
    if isinstance(sources, str | Path | tuple):
        sources = [sources]
    if not sources:
        raise ValueError("no radar file given")
    parts = [read_file(s) for s in sources]
    names = [Path(s[0] if isinstance(s, tuple) else s).name for s in sources]
    source = names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1} files)"
    seq = combine(parts, source=source)
    log.info("%s: %d frames of %s, %s at %d min, %s", source, len(seq.times), parts[0].quantity,
             "x".join(map(str, seq.values.shape[1:])), seq.timestep_minutes, seq.crs or "no CRS")
    return seq


def sequence_cell_km(seq: RadarSequence) -> float | None:
    """Cell size in km of a sequence's grid, None when it has no coordinates (or CRS)."""
    from radar.georef import cell_km, parse_crs

    if seq.crs and seq.y is not None and seq.x is not None:
        return cell_km(parse_crs(seq.crs), seq.y, seq.x)
    if seq.grid_spacing_unit == "m" and math.isfinite(seq.grid_spacing):
        return seq.grid_spacing / 1000
    return None


def last_frames(seq: RadarSequence, *, t_in: int, steps: Sequence[int], cell_km: float | None,
                resample: bool = False, coarsen: int | None = None) -> tuple[RadarSequence, int]:
    """The last ``t_in`` frames of ``seq`` at the step a model serves, near its cell size.

    Parameters
    ----------
    seq : frames as :func:`read_radar` gives them, (T, H, W).
    t_in : frames the model takes.
    steps : time steps the model serves (minutes); the file's own step when served, else the
        smallest served multiple of it (:func:`radar.read.serving_step`).
    cell_km : the model's cell size (None: not checked).
    resample : area-mean blocks of cells (in rain rate, or Z for dBZ) to come near ``cell_km``
        when the grid is finer; otherwise a grid far from ``cell_km`` is refused.
    coarsen : cells per side to area-mean, instead of the number ``resample`` would choose.

    Returns
    -------
    (sequence of ``t_in`` frames, cells per side averaged: 1 when not resampled)
    """
    from radar.events import coarsen_values
    from radar.georef import check_cell_size, resample_factor

    step = serving_step(seq.timestep_minutes, tuple(steps), source=seq.source)
    stride = frame_stride(seq.timestep_minutes, step, source=seq.source)
    start = seq.values.shape[0] - 1 - stride * (t_in - 1)
    if start < 0:
        raise ValueError(f"{seq.source}: {seq.values.shape[0]} frames at {seq.timestep_minutes} min are too "
                         f"few for {t_in} frames at {step} min")
    index = start + stride * np.arange(t_in)
    window = replace(seq, values=seq.values[index], times=seq.times[index], timestep_minutes=step)
    actual = sequence_cell_km(window)
    factor = 1 if coarsen is None else coarsen
    if coarsen is None and resample and actual is not None and cell_km is not None:
        factor = resample_factor(actual, cell_km)
    if factor < 1:
        raise ValueError(f"coarsen must be >= 1, got {factor}")
    if factor > 1:
        window = replace(
            window, values=coarsen_values(window.values, factor, window.unit),
            grid_spacing=window.grid_spacing * factor,
            y=None if window.y is None else coarsen_coordinates(window.y, factor),
            x=None if window.x is None else coarsen_coordinates(window.x, factor))
        actual = actual * factor if actual is not None else None
    if actual is not None:
        check_cell_size(actual, cell_km)
    return window, factor
