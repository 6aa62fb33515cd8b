"""Bounds on what one request may cost: body size, times, values, job size, response size.

Each check raises :class:`~service.inputs.InputError` (422) naming the value, the bound and the
setting that moves it (``service.settings.LimitSettings``, ``NOWCAST_LIMITS__*``), except the body
size: :class:`BodyLimit` answers 413 from ``Content-Length`` before the body is read, and while
a body without one streams in.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

import numpy as np
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.inputs import InputError
from service.problems import ProblemError, problem_response

# Physically sensible ranges of the input units; outside them the input is not what its unit says.
VALUE_RANGES = {"dBZ": (-100.0, 100.0), "mm/h": (0.0, 1000.0), "pixel": (0.0, 1.0)}
# Radar-era times: also keeps every valid time inside numpy's datetime64[ns] (1677 to 2262).
EARLIEST = dt.datetime(1900, 1, 1, tzinfo=dt.timezone.utc)
LATEST = dt.datetime(2200, 1, 1, tzinfo=dt.timezone.utc)
# Bytes per float32 value in a JSON result: base64 (4 bytes * 4/3), or a list item (worst case
# "-0.0012345678901234567," as Python writes float32 values).
JSON_BYTES_PER_VALUE = {"base64": 4 * 4 / 3, "list": 24}
# An uploaded netCDF file: the largest variable read whole (as float32), the longest 1-D
# coordinate (xarray reads those whole when it opens a file) and the largest compressed chunk.
# The FMI event file's reflectivity (40 x 1226 x 760) takes 149 MB.
MAX_DECODED_BYTES = 256 * 2**20
MAX_COORDINATE_LENGTH = 100_000
MAX_CHUNK_BYTES = 64 * 2**20


class BodyTooLarge(Exception):
    """The request body grew past ``max_body_bytes`` while it was being read."""


class BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes``, from ``Content-Length`` before any of it
    is read, or as soon as a streamed body (no ``Content-Length``) passes it."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _detail(self) -> str:
        return (f"the request body is larger than max_body_bytes={self.max_bytes} "
                "(NOWCAST_LIMITS__MAX_BODY_BYTES); send base64 frames, or cut the input to the model grid")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        try:
            declared = int(length) if length is not None else None
        except ValueError:
            declared = None
        if declared is not None and declared > self.max_bytes:
            response = problem_response(413, self._detail(), instance=scope.get("path"))
            await response(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self._detail())
            return message

        await self.app(scope, limited_receive, send)


def check_times(timestamps: Sequence[dt.datetime], *, now: dt.datetime, max_past_hours: float,
                max_future_hours: float) -> list[dt.datetime]:
    """``timestamps`` as aware UTC datetimes, each within ``[now - max_past_hours, now +
    max_future_hours]`` (and within 1900 to 2200); naive times are UTC.

    Only comparisons touch the client's times before they are known to be in range: converting
    ``9999-12-31T23:35-01:00`` to UTC, or adding a lead time to it, would overflow.
    """
    earliest = max(EARLIEST, now - dt.timedelta(hours=max_past_hours))
    latest = min(LATEST, now + dt.timedelta(hours=max_future_hours))
    times = []
    for i, t in enumerate(timestamps):
        aware = t if t.tzinfo is not None and t.utcoffset() is not None else t.replace(tzinfo=dt.timezone.utc)
        if not earliest <= aware <= latest:
            raise InputError(
                f"timestamps[{i}]={t.isoformat()} is outside the accepted window "
                f"{earliest:%Y-%m-%dT%H:%MZ} to {latest:%Y-%m-%dT%H:%MZ} (max_past_hours={max_past_hours:g}, "
                f"max_future_hours={max_future_hours:g}; NOWCAST_LIMITS__MAX_PAST_HOURS, "
                "NOWCAST_LIMITS__MAX_FUTURE_HOURS)")
        times.append(aware.astimezone(dt.timezone.utc))
    return times


def check_values(values: np.ndarray, unit: str) -> None:
    """Finite values of ``values`` within the range of ``unit`` (:data:`VALUE_RANGES`)."""
    if unit not in VALUE_RANGES:
        raise InputError(f"unknown unit {unit!r}; valid units: {list(VALUE_RANGES)}")
    low, high = VALUE_RANGES[unit]
    finite = values[np.isfinite(values)]
    if finite.size and (float(finite.min()) < low or float(finite.max()) > high):
        raise InputError(f"values in {unit} must lie in [{low:g}, {high:g}], got {float(finite.min()):g} to "
                         f"{float(finite.max()):g}; mark no data with NaN (null in lists)")


def check_member_cells(height: int, width: int, members: int, *, max_member_cells: int) -> None:
    """``height x width x members`` of one job within ``max_member_cells``."""
    cells = height * width * members
    if cells > max_member_cells:
        raise InputError(f"{height} x {width} cells x {members} members = {cells} exceeds max_member_cells="
                         f"{max_member_cells} (NOWCAST_LIMITS__MAX_MEMBER_CELLS); ask for fewer members "
                         "or send a smaller grid")


def check_result_size(height: int, width: int, *, t_out: int, members: int, thresholds: int,
                      max_result_bytes: int) -> None:
    """The float32 bytes of a job's result (members, mean, 3 percentiles, one probability per
    threshold, at ``t_out`` lead times) within ``max_result_bytes``."""
    fields = members + 1 + 3 + thresholds
    size = 4 * t_out * height * width * fields
    if size > max_result_bytes:
        raise InputError(f"the result of {height} x {width} cells x {t_out} lead times x {fields} fields "
                         f"({members} members, mean, 3 percentiles, {thresholds} probabilities) would take "
                         f"{size // 2**20} MiB, over max_result_bytes={max_result_bytes} "
                         "(NOWCAST_LIMITS__MAX_RESULT_BYTES); ask for fewer members or thresholds, or send a "
                         "smaller grid")


def check_finite(name: str, value: float | None, *, low: float, high: float) -> None:
    """``value`` (None allowed) finite and within ``(low, high]``."""
    if value is not None and not (math.isfinite(value) and low < value <= high):
        raise InputError(f"{name} must be a finite number in ({low:g}, {high:g}], got {value!r}")


def json_result_bytes(array_bytes: dict[str, int], *, members: bool, encoding: str) -> int:
    """An upper bound of the size of a result's JSON body from the float32 bytes of each of its
    arrays (``service.jobs.result_sizes``); the arrays dominate."""
    names = ["mean", "percentiles", "probability"] + (["members"] if members else [])
    values = sum(array_bytes[name] // 4 for name in names)
    return int(values * JSON_BYTES_PER_VALUE[encoding]) + 64 * 1024


def check_response_size(size: int, *, max_response_bytes: int, members: bool, encoding: str) -> None:
    """Refuse (422, ``response-too-large``) a JSON result larger than ``max_response_bytes``,
    naming the smaller choices."""
    if size <= max_response_bytes:
        return
    smaller = [choice for choice, applies in (("members=false", members),
                                              ("encoding=base64", encoding == "list")) if applies]
    raise ProblemError(422, f"this result as JSON would take about {size // 2**20} MiB, over "
                       f"max_response_bytes={max_response_bytes} (NOWCAST_LIMITS__MAX_RESPONSE_BYTES); "
                       "ask for " + ", ".join(smaller + ["format=netcdf (compressed)", "or /png maps"]),
                       kind="response-too-large", title="Response too large")


def check_netcdf_layout(content: bytes, *, name: str) -> None:
    """Check an uploaded netCDF file from its metadata alone, before any array is read.

    ``radar.readers`` reads a CF-netCDF radar variable whole (every frame) and opens coordinates
    whole, so a small file declaring a large, well-compressed array would be inflated in full.
    Refused here: a variable of more than ``MAX_DECODED_BYTES`` as float32, compressed chunks of
    more than ``MAX_CHUNK_BYTES``, a dimension coordinate longer than ``MAX_COORDINATE_LENGTH``,
    and a gzip-compressed file that unpacks to more than ``MAX_DECODED_BYTES`` (checked inside
    too). Other formats (ODIM_H5, GRIB2, GeoTIFF) and files netCDF cannot open are left to
    their readers.
    """
    import gzip
    import io

    import netCDF4

    if content[:2] == b"\x1f\x8b":
        with gzip.GzipFile(fileobj=io.BytesIO(content)) as packed:
            try:
                inner = packed.read(MAX_DECODED_BYTES + 1)
            except (OSError, EOFError) as err:
                raise InputError(f"{name}: not a readable gzip file ({err})") from err
        if len(inner) > MAX_DECODED_BYTES:
            raise InputError(f"{name}: unpacks to more than {MAX_DECODED_BYTES // 2**20} MiB")
        return check_netcdf_layout(inner, name=name)
    if content[:3] != b"CDF" and content[:8] != b"\x89HDF\r\n\x1a\n":
        return
    try:
        ds = netCDF4.Dataset("upload.nc", mode="r", memory=content)
    except (OSError, ValueError, RuntimeError):
        return  # not netCDF after all (ODIM_H5, say): its reader decides
    try:
        for var_name, var in ds.variables.items():
            size = int(np.prod(var.shape, dtype=np.int64))
            if var.ndim == 1 and var.dimensions == (var_name,) and size > MAX_COORDINATE_LENGTH:
                raise InputError(f"{name}: coordinate {var_name!r} has {size} values; at most "
                                 f"{MAX_COORDINATE_LENGTH} are read")
            if var.ndim < 2:
                continue
            if 4 * size > MAX_DECODED_BYTES:
                shape = " x ".join(map(str, var.shape))
                raise InputError(f"{name}: variable {var_name!r} is {shape} ({4 * size // 2**20} MiB as "
                                 f"float32), over the {MAX_DECODED_BYTES // 2**20} MiB read from one upload; "
                                 "send fewer frames or a smaller grid")
            chunks = var.chunking()
            itemsize = np.dtype(var.dtype).itemsize if var.dtype is not str else 8
            if chunks != "contiguous" and int(np.prod(chunks, dtype=np.int64)) * itemsize > MAX_CHUNK_BYTES:
                raise InputError(f"{name}: variable {var_name!r} is stored in chunks of {chunks}: over "
                                 f"{MAX_CHUNK_BYTES // 2**20} MiB to inflate per chunk")
    finally:
        ds.close()
