"""``nowcast submit``: send a radar file to a running service and save the nowcast.

By default the files are read locally by the service's own reader (``radar.readers``: CF-netCDF,
ODIM_H5, GRIB2, GeoTIFF), the last ``t_in`` frames at the model's timestep are area-averaged to
its cell size and cut around the wettest area (``size x size`` cells), and sent as JSON (base64
float32, with the grid's CRS and coordinates): event files are tens of MB. ``--raw`` uploads the
files unchanged (multipart); the service reads them with the same reader.
The command then polls the job with ``If-None-Match`` and saves the result.
"""

from __future__ import annotations

import argparse
import base64
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("nowcast.submit")

DEFAULT_URL = "http://127.0.0.1:8000"


class SubmitError(RuntimeError):
    """The service refused the request or the job failed."""


def _check(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise SubmitError(f"{response.request.method} {response.request.url} -> "
                          f"{response.status_code}: {response.text[:500]}")
    return response


def cut_input(paths: Path | list[Path], model: dict[str, Any], *,
              coarsen: int | None = None) -> dict[str, Any]:
    """JSON request body of the last ``t_in`` frames of radar file(s) ``paths`` on the model grid.

    The files are read by the service's own reader (``radar.readers.read_radar``: CF-netCDF,
    ODIM_H5, GRIB2, GeoTIFF), the last frames taken at a step the model serves, area-averaged to
    the model's cell size (``coarsen`` cells per side, default: as many as ``cell_km`` of
    ``GET /v1/model`` asks) and cut to the wettest ``size x size`` window. The body carries the
    grid (CRS and coordinates) when the files have one.
    """
    import numpy as np

    from radar.read import cut_window
    from radar.readers import last_frames, read_radar, sequence_cell_km

    seq = read_radar(paths)
    window, _ = last_frames(seq, t_in=model["t_in"], steps=model["step_minutes"],
                            cell_km=model.get("cell_km"), resample=True, coarsen=coarsen)
    if min(window.values.shape[1:]) > model["size"]:
        window = cut_window(window, start=0, n_frames=model["t_in"], size=model["size"])
    values = np.ascontiguousarray(window.values, dtype="<f4")
    body: dict[str, Any] = {
        "frames": {"data": base64.b64encode(values.tobytes()).decode("ascii"),
                   "shape": list(values.shape), "dtype": "float32"},
        "unit": window.unit,
        "timestamps": [str(np.datetime_as_string(t, unit="s")) + "Z" for t in window.times],
        "grid_spacing_km": sequence_cell_km(window),
    }
    if window.crs and window.y is not None and window.x is not None:
        body["grid"] = {"crs": window.crs, "y": [float(v) for v in window.y],
                        "x": [float(v) for v in window.x]}
    return body


def wait_for_job(client: httpx.Client, status_url: str, *, timeout: float, poll: float) -> dict[str, Any]:
    """Poll ``status_url`` (conditional GET with the last ETag) until the job is done or failed."""
    deadline = time.monotonic() + timeout
    etag, status = None, {}
    while True:
        response = client.get(status_url, headers={"If-None-Match": etag} if etag else {})
        if response.status_code != 304:
            status = _check(response).json()
            etag = response.headers.get("ETag")
            log.info("job %s: %s%s", status["id"], status["status"],
                     f" (position {status['queue_position']})" if status.get("queue_position") is not None
                     else "")
        if status.get("status") == "done":
            return status
        if status.get("status") == "failed":
            raise SubmitError(f"job {status['id']} failed: {status.get('error')}")
        if time.monotonic() > deadline:
            raise SubmitError(f"job {status.get('id')} not done after {timeout:.0f} s "
                              f"(status {status.get('status')}); poll {status_url} later")
        time.sleep(poll)


def summary(path: Path, fmt: str, status: dict[str, Any]) -> str:
    """One line about the saved result: job, model, ensemble, peak mean rain, timings."""
    import json

    import numpy as np

    if fmt == "netcdf":
        import xarray as xr

        with xr.open_dataset(path) as ds:
            mean = ds["precipitation_rate_mean"].values
            k, t = ds.sizes["realization"], ds.sizes["time"]
    else:
        body = json.loads(path.read_text())
        shape = body["mean"]["shape"]
        mean = np.frombuffer(base64.b64decode(body["mean"]["data"]), "<f4").reshape(shape)
        k, t = body["metadata"]["n_members"], shape[0]
    run = status.get("run_seconds")
    return (f"{path}: job {status['id']} by {status.get('model_version')}, {k} members x {t} lead times, "
            f"peak ensemble-mean rain {float(np.nanmax(mean)):.1f} mm/h"
            + (f", sampled in {run:.1f} s" if run is not None else ""))


def request_options(args: argparse.Namespace) -> dict[str, Any]:
    """The nowcast options of a ``submit`` command line; those not given are left out, so the
    service applies the model's defaults (GET /v1/model)."""
    options = {"members": args.members, "guidance": args.guidance, "seed": args.seed,
               "matching": args.matching, "advection": args.advection}
    return {key: value for key, value in options.items() if value is not None}


def submit(args: argparse.Namespace) -> int:
    """Submit ``args.file``, wait for the job and save its result; the exit code."""
    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll is noise
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    output = args.output or Path(f"out/result.{'nc' if args.format == 'netcdf' else 'json'}")
    try:
        with httpx.Client(base_url=args.url, headers=headers, timeout=120.0) as client:
            options = request_options(args)
            upload_options = {**options, "resample": True}
            if args.raw:
                files = [("file", (path.name, path.read_bytes(), "application/octet-stream"))
                         for path in args.file]
                form = {k: str(v) for k, v in upload_options.items()}
                response = client.post("/v1/nowcasts", data=form, files=files)
            else:
                model = _check(client.get("/v1/model")).json()
                body = cut_input(args.file, model, coarsen=args.coarsen)
                response = client.post("/v1/nowcasts", json={**body, **options})
            job = _check(response).json()
            log.info("submitted %s as job %s", ", ".join(map(str, args.file)), job["id"])
            status = wait_for_job(client, job["status_url"], timeout=args.timeout, poll=args.poll)
            result = _check(client.get(job["result_url"], params={"format": args.format}))
    except (httpx.HTTPError, SubmitError, ValueError, OSError) as err:
        log.error("%s", err)
        return 1
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(result.content)
    print(summary(output, args.format, status))
    return 0


def add_submit_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``nowcast submit`` on the ``nowcast`` sub-parsers ``sub``."""
    p = sub.add_parser("submit", help="send a radar file to a running service and save the nowcast")
    p.add_argument("file", type=Path, nargs="+",
                   help="radar file(s): CF-netCDF, ODIM_H5, GRIB2 or GeoTIFF (one file per frame, or one "
                   "with them all), e.g. ../shared/radar/events/fmi_20160928.nc")
    p.add_argument("--url", default=DEFAULT_URL, help=f"service base URL (default {DEFAULT_URL})")
    p.add_argument("--members", type=int, default=10)
    p.add_argument("--guidance", type=float, default=None, help="default: the model's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--matching", choices=("cdf", "none"), default=None,
                   help="probability-match members to the last frame (default: the model's, cdf)")
    p.add_argument("--advection", choices=("dense", "bulk", "none"), default=None,
                   help="the forecast frame: moving with a motion field (dense), with one velocity (bulk) "
                   "or on the ground (default: the model's, dense for the shipped one)")
    p.add_argument("--format", choices=("netcdf", "json"), default="netcdf")
    p.add_argument("--output", type=Path, default=None, help="default out/result.nc (or .json)")
    p.add_argument("--api-key", default=None, help="X-API-Key, when the service requires one")
    p.add_argument("--coarsen", type=int, default=None,
                   help="area-mean this many cells per side before cutting (default: as many as bring "
                        "the cells near the model's, GET /v1/model cell_km)")
    p.add_argument("--raw", action="store_true",
                   help="upload the file(s) unchanged (multipart) with resample=true: the service reads "
                        "them with the same reader")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the job")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between status polls")
    p.set_defaults(func=submit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nowcast")
    add_submit_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["submit", *(argv if argv is not None else sys.argv[1:])])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
