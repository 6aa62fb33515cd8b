"""``nowcast submit``: send a radar file to a running service and save the nowcast.

By default the file is read locally (``radar.read.read_event``: the layout of the
shared event files), the last ``t_in`` frames at the model's timestep are cut to the model's
grid around the wettest area (``cut_window``: ``--coarsen`` area mean, ``size x size`` cells)
and sent as JSON (base64 float32): event files are tens of MB and rarely on the model grid.
``--raw`` uploads the file unchanged (multipart) for files already on the model grid.
The command then polls the job with ``If-None-Match`` and saves the result.
"""

from __future__ import annotations

import argparse
import base64
import logging
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("nowcast.submit")

DEFAULT_URL = "http://127.0.0.1:8000"


class SubmitError(RuntimeError):
    """The service refused the request or the job failed."""


def _check(response) -> Any:
    if response.status_code >= 400:
        raise SubmitError(f"{response.request.method} {response.request.url} -> "
                          f"{response.status_code}: {response.text[:500]}")
    return response


def cut_input(path: Path, model: dict[str, Any], *, coarsen: int) -> dict[str, Any]:
    """JSON request body of the last ``t_in`` frames of event file ``path`` on the model grid.

    Reflectivity is sent when the file has it (the model's pixels are linear in dBZ, so no
    Z-R relation is involved), rain rate otherwise.
    """
    import numpy as np
    import xarray as xr

    from radar.read import cut_window, frame_stride, read_event, serving_step

    with xr.open_dataset(path, engine="netcdf4") as ds:
        quantity = "reflectivity" if "reflectivity" in ds.data_vars else "rain_rate"
    seq = read_event(path, quantity=quantity)
    step = serving_step(seq.timestep_minutes, model["step_minutes"], source=seq.source)
    stride = frame_stride(seq.timestep_minutes, step, source=seq.source)
    start = seq.values.shape[0] - 1 - stride * (model["t_in"] - 1)
    if start < 0:
        raise ValueError(f"{seq.source} has too few frames for {model['t_in']} inputs at {step} min")
    window = cut_window(seq, start=start, n_frames=model["t_in"], size=model["size"], coarsen=coarsen,
                        step_minutes=step)
    values = np.ascontiguousarray(window.values, dtype="<f4")
    spacing = window.grid_spacing / 1000 if window.grid_spacing_unit == "m" else None
    return {
        "frames": {"data": base64.b64encode(values.tobytes()).decode("ascii"),
                   "shape": list(values.shape), "dtype": "float32"},
        "unit": window.unit,
        "timestamps": [str(np.datetime_as_string(t, unit="s")) + "Z" for t in window.times],
        "grid_spacing_km": spacing,
    }


def wait_for_job(client, status_url: str, *, timeout: float, poll: float) -> dict[str, Any]:
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


def submit(args: argparse.Namespace) -> int:
    """Submit ``args.file``, wait for the job and save its result; the exit code."""
    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll is noise
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    output = args.output or Path(f"out/result.{'nc' if args.format == 'netcdf' else 'json'}")
    try:
        with httpx.Client(base_url=args.url, headers=headers, timeout=120.0) as client:
            options = {"members": args.members, "guidance": args.guidance, "seed": args.seed,
                       "matching": args.matching, "advection": args.advection}
            if args.raw:
                with args.file.open("rb") as f:
                    response = client.post("/v1/nowcasts", data={k: str(v) for k, v in options.items()},
                                           files={"file": (args.file.name, f, "application/x-netcdf")})
            else:
                model = _check(client.get("/v1/model")).json()
                body = cut_input(args.file, model, coarsen=args.coarsen)
                response = client.post("/v1/nowcasts", json={**body, **options})
            job = _check(response).json()
            log.info("submitted %s as job %s", args.file, job["id"])
            status = wait_for_job(client, job["status_url"], timeout=args.timeout, poll=args.poll)
            result = _check(client.get(job["result_url"], params={"format": args.format}))
    except (httpx.HTTPError, SubmitError, ValueError, OSError) as err:
        log.error("%s", err)
        return 1
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(result.content)
    print(summary(output, args.format, status))
    return 0


def add_submit_parser(sub) -> None:
    """Register ``nowcast submit`` on the ``nowcast`` sub-parsers ``sub``."""
    p = sub.add_parser("submit", help="send a radar file to a running service and save the nowcast")
    p.add_argument("file", type=Path,
                   help="CF-netCDF radar file, e.g. ../shared/radar/events/fmi_20160928.nc")
    p.add_argument("--url", default=DEFAULT_URL, help=f"service base URL (default {DEFAULT_URL})")
    p.add_argument("--members", type=int, default=10)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--matching", choices=("cdf", "none"), default="cdf",
                   help="probability-match members to the last frame (default cdf)")
    p.add_argument("--advection", choices=("bulk", "none"), default="bulk",
                   help="forecast in a frame moving with the rain (default bulk) or on the ground")
    p.add_argument("--format", choices=("netcdf", "json"), default="netcdf")
    p.add_argument("--output", type=Path, default=None, help="default out/result.nc (or .json)")
    p.add_argument("--api-key", default=None, help="X-API-Key, when the service requires one")
    p.add_argument("--coarsen", type=int, default=4,
                   help="area-mean this many cells per side before cutting (the default model "
                        "was trained on 4 km cells)")
    p.add_argument("--raw", action="store_true", help="upload the file unchanged (multipart)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the job")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between status polls")
    p.set_defaults(func=submit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nowcast")
    add_submit_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["submit", *(argv if argv is not None else sys.argv[1:])])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
