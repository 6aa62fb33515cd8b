"""Radar events packed for a machine that has neither the shared data nor a netCDF library.

A lent GPU machine reaches no registry and sees only the working tree it is sent (64 MiB in
all); the shared events are 70 MB of netCDF and it has no netCDF4. ``python -m radar.pack --data
../shared/radar/events --out data/packed`` writes, per event file, ``<file name>.npz``: the event
on the model's coarse grid (``--cell-km``) as uint8 pixels (255 = no data, else
``round(254 * pixel)``: steps of 0.28 dBZ), its times, coarse coordinates and header (compressed,
about 10 MB for all the shared events at 4 km). :func:`radar.events.read_header` and
:func:`radar.events.load_event` read a packed file as they read the netCDF one; it keeps the
original file name as its source, so split rules and held-out regions apply unchanged.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from model.transform import PixelTransform
from radar.events import EventHeader, EventPixels, load_event, read_header

log = logging.getLogger(__name__)

SUFFIX = ".npz"
NO_DATA = 255


def pack_event(event: EventPixels, header: EventHeader, transform: PixelTransform, path: Path) -> Path:
    """Write ``event`` (coarse pixels of ``header``'s file) as a packed file at ``path``."""
    pixels = np.where(event.valid, np.round(np.clip(event.pixels, 0, 1) * 254), NO_DATA).astype(np.uint8)
    meta = {"source": event.source, "quantity": header.quantity, "unit": header.unit,
            "step_minutes": event.step_minutes, "native_km": header.native_km, "cell_km": event.cell_km,
            "coarsen": event.coarsen, "crs": event.crs, "transform": vars(transform)}
    arrays: dict[str, np.ndarray] = {"pixels": pixels,
                                     "times": event.times.astype("datetime64[ns]").astype(np.int64),
                                     "meta": np.array(json.dumps(meta))}
    if event.y is not None and event.x is not None:
        arrays.update(y=event.y, x=event.x)
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]  # numpy's stub: allow_pickle
    return path


def read_packed_header(path: Path) -> EventHeader:
    """The :class:`EventHeader` of a packed file (its original file name as source)."""
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        n_frames = int(data["times"].shape[0])
    return EventHeader(path, meta["source"], meta["quantity"], meta["unit"], int(meta["step_minutes"]),
                       float(meta["native_km"]), n_frames)


def load_packed(header: EventHeader, *, cell_km: float, transform: PixelTransform) -> EventPixels:
    """The :class:`EventPixels` of a packed file; ``ValueError`` unless it was packed at ``cell_km``
    with ``transform``."""
    with np.load(header.path) as data:
        meta = json.loads(str(data["meta"]))
        packed = data["pixels"]
        times = data["times"].astype("datetime64[ns]")
        y = data["y"] if "y" in data.files else None
        x = data["x"] if "x" in data.files else None
    if abs(meta["cell_km"] - cell_km) > 0.5 * meta["native_km"] or meta["transform"] != vars(transform):
        raise ValueError(f"{header.path.name} was packed at {meta['cell_km']:g} km cells with the "
                         f"transform {meta['transform']}; it cannot serve cell_km={cell_km:g} with "
                         f"{vars(transform)}")
    valid = packed != NO_DATA
    pixels = np.where(valid, packed.astype(np.float32) / 254.0, 0.0).astype(np.float32)
    return EventPixels(meta["source"], pixels, valid, times, int(meta["step_minutes"]),
                       float(meta["cell_km"]), int(meta["coarsen"]), y=y, x=x, crs=meta["crs"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m radar.pack", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/radar/events"))
    parser.add_argument("--out", type=Path, default=Path("data/packed"))
    parser.add_argument("--cell-km", type=float, default=4.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    transform = PixelTransform()
    args.out.mkdir(parents=True, exist_ok=True)
    for path in sorted(args.data.glob("*.nc")):
        header = read_header(path)
        event = load_event(header, cell_km=args.cell_km, transform=transform)
        written = pack_event(event, header, transform, args.out / f"{path.name}{SUFFIX}")
        log.info("%s: %s, %.1f MB", path.name, "x".join(map(str, event.pixels.shape)),
                 written.stat().st_size / 2**20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
