"""Motion fields of the training windows' inputs, computed once per event and cached on disk.

A window in the dense Lagrangian frame (``advection="dense"``) needs the motion of its input
frames. Lucas-Kanade on the whole event grid takes from a fraction of a second (a 128 x 128
tile) to about ten seconds (the CONUS grid), so every (event, frame stride, start frame) that
any window uses is computed once, on the event's whole coarse grid (no-data masked), stored as
float16 in memory and in ``cache_dir`` (``runs/cache/motion`` by default), keyed by the event's
content and the cut, so a resumed or repeated run reads it back.
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


def event_key(event: EventPixels, stride: int, t_in: int) -> str:
    """A short hash of the event's pixels, validity, times and the cut."""
    digest = hashlib.blake2b(digest_size=10)
    for part in (event.pixels, event.valid, event.times.astype("int64")):
        digest.update(np.ascontiguousarray(part).tobytes())
    digest.update(f"{event.source}:{stride}:{t_in}:{event.cell_km}".encode())
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
            fields[start] = dense_motion(frames).astype(np.float16)
        if missing and path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, **{str(k): v for k, v in fields.items()})
            tmp.rename(path)
        return fields, len(missing)

    def crop(self, event: int, stride: int, start: int, rows: slice, cols: slice) -> np.ndarray:
        """(2, h, w) float32 (x, y) cells per step of the window's inputs, cut to ``rows, cols``."""
        return self.fields[(event, stride)][start][:, rows, cols].astype(np.float32)
