"""SEVIR vertically integrated liquid (VIL) events as 13 -> 12 training windows.

Layout (Veillette et al., 2020): a catalog CSV with one row per event and image type
(columns ``id, file_name, file_index, img_type, time_utc, minute_offsets, ...``) and HDF5
files ``root/file_name`` holding datasets ``id`` (N,) event ids and ``vil`` (N, 384, 384, 49)
uint8, 49 frames 5 min apart (``minute_offsets``, colon-separated minutes relative to
``time_utc``). Pixels are ``vil / 255``, the SEVIR protocol of the paper: these are VIL code
units, not the dBZ scale of ``PixelTransform``, so a SEVIR model's outputs are VIL / 255 too.
SEVIR VIL has no no-data code: ``valid`` is all True.

Needs ``h5py`` (optional dependency), imported when an item is read.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from training.adapters.common import consecutive_runs, make_item, window_starts

logger = logging.getLogger(__name__)

STEP_MINUTES = 5
CATALOG_COLUMNS = ("id", "file_name", "file_index", "img_type", "time_utc", "minute_offsets")


@dataclass(frozen=True)
class SevirEvent:
    """One catalog row.

    Attributes
    ----------
    id : str
    file_name : str
        HDF5 path relative to the data root.
    file_index : int
        Row of the event in the file's datasets.
    times : np.ndarray
        (T,) datetime64[ns] UTC time of each frame (``time_utc + minute_offsets``).
    """

    id: str
    file_name: str
    file_index: int
    times: np.ndarray


def read_catalog(path: str | Path, *, img_type: str = "vil") -> list[SevirEvent]:
    """Rows of the SEVIR catalog CSV with ``img_type``, in file order."""
    events = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CATALOG_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{Path(path).name}: missing catalog columns {missing}; need {CATALOG_COLUMNS}")
        for row in reader:
            if row["img_type"] != img_type:
                continue
            offsets = np.array([int(m) for m in row["minute_offsets"].split(":")], dtype=np.int64)
            time_utc = np.datetime64(row["time_utc"].strip().replace(" ", "T"), "ns")
            times = time_utc + offsets * np.timedelta64(1, "m")
            events.append(SevirEvent(row["id"], row["file_name"], int(row["file_index"]), times))
    return events


def _h5py():
    try:
        import h5py
    except ImportError as err:  # an optional dependency: say which
        raise ImportError("reading SEVIR needs h5py: pip install h5py") from err
    return h5py


class SevirVIL(Dataset):
    """Windows of ``t_in + t_out`` VIL frames, ``stride`` frames apart within each event.

    Parameters
    ----------
    catalog : str or Path
        The SEVIR catalog CSV.
    root : str or Path
        Folder that ``file_name`` paths are relative to.
    t_in, t_out : int
        13 and 12 in the SEVIR protocol (49 frames give windows at 0, 12 and 24 with
        ``stride=12``).
    stride : int
        Frames between window starts.
    size : int, optional
        Area-average the 384 x 384 frames to ``size x size`` (e.g. 128); None keeps 384.
    event_ids : iterable of str, optional
        Keep only these events (e.g. a published train/test list).
    """

    def __init__(
        self,
        catalog: str | Path,
        root: str | Path,
        *,
        t_in: int = 13,
        t_out: int = 12,
        stride: int = 12,
        size: int | None = None,
        event_ids: Iterable[str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.t_in, self.t_out, self.size = t_in, t_out, size
        events = read_catalog(catalog)
        if event_ids is not None:
            wanted = set(event_ids)
            events = [e for e in events if e.id in wanted]
        self.events = events
        self.windows = [
            (e, int(s)) for e, ev in enumerate(events)
            for s in window_starts(consecutive_runs(ev.times, STEP_MINUTES), t_in + t_out, stride)
        ]
        logger.info("SEVIR: %d windows from %d VIL events", len(self.windows), len(events))

    def __len__(self) -> int:
        return len(self.windows)

    def read_frames(self, event: SevirEvent, start: int, n_frames: int) -> np.ndarray:
        """(n_frames, 384, 384) uint8 VIL codes of ``event`` from frame ``start``."""
        path = self.root / event.file_name
        with _h5py().File(path, "r") as f:
            stored = f["id"][event.file_index]
            stored = stored.decode() if isinstance(stored, bytes) else str(stored)
            if stored != event.id:
                raise ValueError(f"{path.name}[{event.file_index}] holds event {stored!r}, "
                                 f"catalog says {event.id!r}")
            vil = f["vil"][event.file_index, :, :, start : start + n_frames]  # (H, W, T)
        return np.moveaxis(vil, -1, 0)

    def __getitem__(self, i: int) -> dict:
        e, start = self.windows[i]
        event = self.events[e]
        n_frames = self.t_in + self.t_out
        pixels = self.read_frames(event, start, n_frames).astype(np.float32) / np.float32(255.0)
        return make_item(pixels, np.ones(pixels.shape, dtype=bool), t_in=self.t_in, size=self.size,
                         source=f"sevir:{event.id}", start=event.times[start])
