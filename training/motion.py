"""Motion fields of the training windows' inputs, computed once per event and cached on disk.

A window in the dense Lagrangian frame (``advection="dense"``) needs the motion of its input
frames. Lucas-Kanade on the whole event grid takes from a fraction of a second (a 128 x 128
tile) to about ten seconds (the CONUS grid), so every (event, frame stride, start frame) that
any window uses is computed once, on the event's whole coarse grid (no-data masked), and kept
as float16 at a quarter of the grid's resolution (means of 4 x 4 cells: Lucas-Kanade's dense
fields are interpolated from tracked features tens of km apart, so little is lost, memory is 16
times smaller and a cache fits the 64 MiB a lent GPU machine is sent) in memory and in
``cache_dir`` (``runs/cache/motion`` by default), keyed by the event's content and the cut, so a
resumed or repeated run reads it back. A window's field is interpolated back (bilinear) to its
cells.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model.lagrangian import dense_motion
from radar.events import EventPixels

logger = logging.getLogger(__name__)

CACHE_DIR = Path("runs/cache/motion")
SUBSAMPLE = 4  # cells per side of a stored motion value


def subsample(field: np.ndarray, factor: int = SUBSAMPLE) -> np.ndarray:
    """(2, H, W) -> (2, ceil(H / f), ceil(W / f)) means of f x f blocks (edges padded by their values)."""
    _, h, w = field.shape
    hp, wp = -(-h // factor) * factor, -(-w // factor) * factor
    padded = np.pad(field, ((0, 0), (0, hp - h), (0, wp - w)), mode="edge")
    return padded.reshape(2, hp // factor, factor, wp // factor, factor).mean(axis=(2, 4))


def upsample(coarse: np.ndarray, rows: slice, cols: slice, factor: int = SUBSAMPLE) -> np.ndarray:
    """The (2, len(rows), len(cols)) field at cells ``rows, cols`` of the full grid, bilinear
    between the block centres of ``coarse`` (a block's mean sits at its centre cell, (f - 1) / 2)."""
    from scipy.ndimage import map_coordinates

    r = (np.arange(rows.start, rows.stop) - (factor - 1) / 2) / factor
    c = (np.arange(cols.start, cols.stop) - (factor - 1) / 2) / factor
    rr, cc = np.meshgrid(r, c, indexing="ij")
    return np.stack([map_coordinates(coarse[k].astype(np.float32), [rr, cc], order=1, mode="nearest")
                     for k in range(2)])


def event_key(event: EventPixels, stride: int, t_in: int) -> str:
    """A short hash of the event's pixels, validity, times and the cut."""
    digest = hashlib.blake2b(digest_size=10)
    for part in (event.pixels, event.valid, event.times.astype("int64")):
        digest.update(np.ascontiguousarray(part).tobytes())
    digest.update(f"{event.source}:{stride}:{t_in}:{event.cell_km}:sub{SUBSAMPLE}".encode())
    return digest.hexdigest()


class MotionFields:
    """Motion of the ``t_in`` inputs of every window start used, per event and frame stride.

    Parameters
    ----------
    events : sequence of EventPixels
    windows : np.ndarray
        (N, 6) int ``(event, start, n_frames, y0, x0, stride)`` of all splits.
    t_in : int
    cache_dir : Path, optional
        Where the fields are kept between runs; None keeps them in memory only.
    """

    def __init__(self, events: Sequence[EventPixels], windows: np.ndarray, *, t_in: int,
                 cache_dir: Path | None = CACHE_DIR) -> None:
        self.events, self.t_in = list(events), t_in
        self.fields: dict[tuple[int, int], dict[int, np.ndarray]] = {}
        started, computed = time.monotonic(), 0
        for e, stride in sorted({(int(w[0]), int(w[5])) for w in windows}):
            starts = sorted({int(w[1]) for w in windows if w[0] == e and w[5] == stride})
            fields, fresh = self._load_or_compute(e, stride, starts, cache_dir)
            self.fields[(e, stride)] = fields
            computed += fresh
        logger.info("motion fields: %d computed, %d from the cache, in %.0f s", computed,
                    sum(len(f) for f in self.fields.values()) - computed, time.monotonic() - started)

    def _load_or_compute(self, e: int, stride: int, starts: list[int],
                         cache_dir: Path | None) -> tuple[dict[int, np.ndarray], int]:
        event = self.events[e]
        key = event_key(event, stride, self.t_in)
        path = None if cache_dir is None else cache_dir / f"{event.source}-{key}.npz"
        fields: dict[int, np.ndarray] = {}
        if path is not None and path.is_file():
            with np.load(path) as stored:
                fields = {int(k): stored[k] for k in stored.files}
        missing = [s for s in starts if s not in fields]
        for start in missing:
            index = start + stride * np.arange(self.t_in)
            frames = np.where(event.valid[index], event.pixels[index], np.nan)
            fields[start] = subsample(dense_motion(frames)).astype(np.float16)
        if missing and path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez_compressed(tmp, **{str(k): v for k, v in fields.items()})
            tmp.rename(path)
        return fields, len(missing)

    def crop(self, event: int, stride: int, start: int, rows: slice, cols: slice) -> np.ndarray:
        """(2, h, w) float32 (x, y) cells per step of the window's inputs at the cells ``rows, cols``."""
        return upsample(self.fields[(event, stride)][start], rows, cols)


def main(argv: list[str] | None = None) -> int:
    """``python -m training.motion --data DIR --cache DIR``: compute the motion fields of every
    window the recipe trains and validates on (64-cell windows 32 apart at the small preset's
    steps), so that a machine without pysteps (a lent GPU) can train in the dense frame."""
    import argparse
    import logging

    from model.config import STLDMConfig
    from training.data import build_splits
    from training.train import event_files

    parser = argparse.ArgumentParser(prog="python -m training.motion", description=main.__doc__)
    parser.add_argument("--data", type=Path, nargs="+", default=[Path("data/packed")])
    parser.add_argument("--cache", type=Path, default=Path("data/packed/motion"))
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = STLDMConfig.small()
    build_splits(event_files(tuple(map(str, args.data))), t_in=config.t_in, t_out=config.t_out,
                 steps=config.step_minutes, size=args.size, stride=args.size // 2, cell_km=4.0,
                 transform=config.transform, min_rain_fraction=0.02, advection="dense",
                 which=("train", "val"), motion_cache=args.cache)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
