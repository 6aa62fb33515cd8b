"""HKO-7 radar PNGs (Shi et al., 2017) as 5 -> 20 windows at 6 min.

Layout of the released data: ``root/radarPNG/YYYY/MM/DD/RADyymmddHHMM00.png``, one 480 x 480
grayscale PNG per 6-min frame (times as in the file names), with
``pixel / 255 = (dBZ + 10) / 70``; day lists such as ``hko7_rainy_train_days.txt`` hold one
day per line as ``YYYYMMDD`` (anything after a comma is ignored). Frames are converted with
the model config's ``PixelTransform`` (identity for the default HKO-7 transform). Missing
frames break a run: no window spans them. An optional ``exclude_mask`` (H, W) bool marks
pixels without data (e.g. HKO-7's clutter mask), False in ``valid``.

Needs ``Pillow`` (optional dependency), imported when an item is read.
"""

from __future__ import annotations

import logging
import re
from datetime import date
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from model.transform import PixelTransform
from training.adapters.common import consecutive_runs, make_item, window_starts

logger = logging.getLogger(__name__)

STEP_MINUTES = 6
_NAME = re.compile(r"RAD(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})00\.png")


def frame_path(root: str | Path, time: np.datetime64) -> Path:
    """Path of the frame at ``time`` under ``root`` (the folder holding ``radarPNG``)."""
    t = np.datetime64(time, "m").item()
    return (Path(root) / "radarPNG" / f"{t.year:04d}" / f"{t.month:02d}" / f"{t.day:02d}"
            / f"RAD{t.year - 2000:02d}{t.month:02d}{t.day:02d}{t.hour:02d}{t.minute:02d}00.png")


def read_day_list(path: str | Path) -> list[date]:
    """Days of an HKO-7 day list: one ``YYYYMMDD`` per line, extra comma fields ignored."""
    days = []
    for line in Path(path).read_text().splitlines():
        field = line.split(",")[0].strip()
        if not field:
            continue
        if not re.fullmatch(r"\d{8}", field):
            raise ValueError(f"{Path(path).name}: expected YYYYMMDD per line, got {field!r}")
        days.append(date(int(field[:4]), int(field[4:6]), int(field[6:])))
    return days


def _pillow_image():
    try:
        from PIL import Image
    except ImportError as err:  # an optional dependency: say which
        raise ImportError("reading HKO-7 PNGs needs Pillow: pip install pillow") from err
    return Image


def read_png(path: Path) -> np.ndarray:
    """(H, W) uint8 of a grayscale (mode ``L``) PNG."""
    with _pillow_image().open(path) as image:
        if image.mode != "L":
            raise ValueError(f"{path.name}: HKO-7 frames are grayscale (mode 'L'), got mode {image.mode!r}")
        return np.asarray(image, dtype=np.uint8)


class HKO7(Dataset):
    """Windows of ``t_in + t_out`` consecutive 6-min HKO-7 frames of the listed days.

    Parameters
    ----------
    root : str or Path
        Folder holding ``radarPNG/``.
    days : str or Path
        Day list file (e.g. ``hko7_rainy_train_days.txt``).
    t_in, t_out : int
        5 and 20 in the HKO-7 benchmark.
    stride : int
        Frames between window starts (5 in the benchmark).
    size : int, optional
        Area-average the 480 x 480 frames to ``size x size`` (e.g. 128); None keeps 480.
    transform : PixelTransform
        The model config's transform.
    exclude_mask : np.ndarray, optional
        (H, W) bool, True where pixels have no data.
    """

    def __init__(
        self,
        root: str | Path,
        days: str | Path,
        *,
        t_in: int = 5,
        t_out: int = 20,
        stride: int = 5,
        size: int | None = None,
        transform: PixelTransform | None = None,
        exclude_mask: np.ndarray | None = None,
    ) -> None:
        self.root = Path(root)
        self.t_in, self.t_out, self.size = t_in, t_out, size
        self.transform = PixelTransform() if transform is None else transform
        self.exclude_mask = None if exclude_mask is None else np.asarray(exclude_mask, dtype=bool)
        times = []
        for day in read_day_list(days):
            folder = self.root / "radarPNG" / f"{day.year:04d}" / f"{day.month:02d}" / f"{day.day:02d}"
            for path in sorted(folder.glob("RAD*.png")):
                match = _NAME.fullmatch(path.name)
                if match:
                    yy, mm, dd, hh, mi = (int(g) for g in match.groups())
                    times.append(np.datetime64(f"{2000 + yy:04d}-{mm:02d}-{dd:02d}T{hh:02d}:{mi:02d}", "ns"))
        self.times = np.array(sorted(times), dtype="datetime64[ns]")
        runs = consecutive_runs(self.times, STEP_MINUTES)
        self.starts = window_starts(runs, t_in + t_out, stride)
        logger.info("HKO-7: %d windows from %d frames of %s", len(self.starts), len(self.times),
                    Path(days).name)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict:
        start = int(self.starts[i])
        times = self.times[start : start + self.t_in + self.t_out]
        codes = np.stack([read_png(frame_path(self.root, t)) for t in times])  # (T, H, W) uint8
        dbz = codes.astype(np.float32) / np.float32(255.0) * 70.0 - 10.0  # the files' encoding
        pixels = self.transform.to_pixel(dbz, "dBZ")
        valid = np.ones(codes.shape, dtype=bool)
        if self.exclude_mask is not None:
            if self.exclude_mask.shape != codes.shape[1:]:
                raise ValueError(f"exclude_mask has shape {self.exclude_mask.shape}, "
                                 f"frames have {codes.shape[1:]}")
            valid &= ~self.exclude_mask
        return make_item(pixels, valid, t_in=self.t_in, size=self.size, source="hko7", start=times[0])
