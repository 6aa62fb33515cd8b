"""Training and validation samples cut from radar event files, as a torch ``Dataset``.

``build_datasets`` reads CF-netCDF event files (``../shared/radar/README.md``), averages them
to ``cell_km`` cells, converts them to model pixels with the model config's
``PixelTransform`` and cuts windows of ``t_in + t_out`` frames ``step_minutes`` apart on
``size x size`` tiles. See :mod:`training.events` (quantity, area mean, cell size) and
:mod:`training.windows` (tiles, coverage, split) for the rules; in short:

Time step
    A model has one ``step_minutes``. Files whose native step divides it are subsampled
    (every ``step_minutes // native`` frame); the others are skipped with a logged warning,
    and ``ValueError`` is raised when no file is usable. With the shared events, step 5 uses
    FMI and KNMI (the 2-min MRMS files are skipped: 5 is no multiple of 2); step 10 would
    accept all files, but a 5 -> 20 window at 10 min spans 240 min, which only KNMI (455 min)
    holds. The 70-min MRMS files hold a 25-frame window only at step 2.

No data
    NaN (outside radar coverage) is not dry. Windows whose fraction of cells with data is
    below ``min_coverage`` (default 0.5) are skipped. In the remaining ones no-data cells are
    pixel 0 in ``x``/``y`` and False in ``valid``; pass ``valid`` to
    ``model.objective.stldm_loss`` so that the reconstruction terms ignore them.

Dry windows
    ``min_rain_fraction`` (default 0.0: keep all) skips windows in which less than that
    fraction of the cells with data has rain at or above the transform's ``rain_min`` mm/h.

Split and augmentation
    Seeded split by time blocks with no frame in both splits (:mod:`training.windows`).
    Training items are randomly rotated by ``k * 90`` degrees and horizontally flipped, the
    same way for ``x``, ``y`` and ``valid``; validation items never are. With ``motion_kmh``
    they are also cut along a frame that moves at a random uniform velocity (a change of
    reference frame), so that two events' worth of motion teaches more than two motions.

Memory
    The pixel arrays of all usable events are held in memory (float32 pixels + bool mask,
    5 bytes per coarse cell and frame: the shared FMI and KNMI events take 27 MB at 4 km).
    Files are read one at a time; the peak is about twice the largest native file in float32.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from model.advection import ADVECTIONS, bulk_motion, frame_offsets
from model.radar_sample import frame_stride
from model.transform import PixelTransform
from training.events import EventPixels, load_event, read_header
from training.windows import (
    TRAIN,
    VAL,
    block_weights,
    candidate_windows,
    choose_validation,
    frame_labels,
    time_blocks,
    window_split,
)

logger = logging.getLogger(__name__)


def iso_time(time: np.datetime64) -> str:
    """datetime64 (UTC) -> ``"YYYY-MM-DDTHH:MM:SSZ"``."""
    return f"{np.datetime_as_string(time, unit='s')}Z"


def rotate_flip(
    frames: torch.Tensor, valid: torch.Tensor, *, k: int, flip: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate by ``k * 90`` degrees, then flip horizontally if ``flip``, both tensors alike.

    Parameters
    ----------
    frames : torch.Tensor
        (T, H, W) pixels in [0, 1].
    valid : torch.Tensor
        (T, H, W) bool.
    k : int
        Quarter turns, one of 0, 1, 2, 3.
    flip : bool

    Returns
    -------
    tuple of torch.Tensor
        The transformed ``(frames, valid)``, contiguous, same shapes (windows are square).
    """
    if k not in (0, 1, 2, 3):
        raise ValueError(f"k must be one of (0, 1, 2, 3), got {k!r}")
    out = []
    for tensor in (frames, valid):
        tensor = torch.rot90(tensor, k, dims=(-2, -1))
        if flip:
            tensor = torch.flip(tensor, dims=(-1,))
        out.append(tensor.contiguous())
    return out[0], out[1]


def shifted_crop(
    pixels: np.ndarray, valid: np.ndarray, index: np.ndarray, y0: int, x0: int, size: int,
    offsets: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Crop frame ``index[k]`` at ``(y0, x0) + offsets[k]``; cells off the grid get no data.

    Parameters
    ----------
    pixels, valid : np.ndarray
        (T, H, W) event pixels and no-data mask.
    index : np.ndarray
        (F,) native frame indices.
    y0, x0, size : int
        Tile origin and side in cells.
    offsets : np.ndarray
        (F, 2) int cell offsets (dy, dx) per frame.

    Returns
    -------
    (F, size, size) float32 pixels (0 off the grid) and bool mask (False off the grid).
    """
    height, width = pixels.shape[1:]
    frames = np.zeros((len(index), size, size), dtype=pixels.dtype)
    mask = np.zeros((len(index), size, size), dtype=bool)
    span = np.arange(size)
    for k, (t, (dy, dx)) in enumerate(zip(index, offsets, strict=True)):
        rows, cols = y0 + dy + span, x0 + dx + span
        r, c = (rows >= 0) & (rows < height), (cols >= 0) & (cols < width)
        box = np.ix_(rows[r], cols[c])
        frames[k][np.ix_(r, c)] = pixels[t][box]
        mask[k][np.ix_(r, c)] = valid[t][box]
    return frames, mask


class RadarWindows(Dataset):
    """Windows of ``t_in + t_out`` frames of ``size x size`` cells out of in-memory events.

    Items are dicts: ``"x"`` (T_in, H, W) float32 pixels in [0, 1], ``"y"`` (T_out, H, W)
    float32, ``"valid"`` (T_in + T_out, H, W) bool (False = no data, pixel 0 there),
    ``"source"`` (file name) and ``"start"`` (ISO UTC time of the first input frame).

    Parameters
    ----------
    events : sequence of EventPixels
    windows : np.ndarray
        (N, 4) int ``(event, start, y0, x0)``: index into ``events``, native start frame and
        tile origin in coarse cells.
    frame_strides : sequence of int
        Native frames per model step, one per event.
    t_in, t_out, size : int
    augment : bool
        Random rotation and flip per item (torch's global RNG, so ``DataLoader`` workers draw
        differently), for training only.
    motion_kmh : float
        With ``augment``: every item also gets a uniform velocity drawn uniformly from the disc
        of this radius in km/h, added to the rain's own motion (a change of reference frame:
        frame ``k`` is cut ``v * (k - t_in + 1)`` cells away, rounded to whole cells, so the last
        input frame stays on the tile). Cells cut off the grid have no data. 0: off.
    advection : str
        "bulk": every item (training and validation) is cut along a frame that moves with the
        bulk motion of its own input frames (:func:`model.advection.bulk_motion`), the frame in
        which the model forecasts under ``forecast(advection="bulk")``; "none": on the ground.
    """

    def __init__(
        self,
        events: Sequence[EventPixels],
        windows: np.ndarray,
        frame_strides: Sequence[int],
        *,
        t_in: int,
        t_out: int,
        size: int,
        augment: bool = False,
        motion_kmh: float = 0.0,
        advection: str = "none",
    ) -> None:
        windows = np.asarray(windows, dtype=np.int64).reshape(-1, 4)
        if advection not in ADVECTIONS:
            raise ValueError(f"advection must be one of {ADVECTIONS}, got {advection!r}")
        self.advection = advection
        if motion_kmh < 0:
            raise ValueError(f"motion_kmh must be >= 0, got {motion_kmh}")
        if len(frame_strides) != len(events):
            raise ValueError(f"need one frame stride per event, got {len(frame_strides)} for {len(events)}")
        self.events = list(events)
        self.windows = windows
        self.frame_strides = [int(s) for s in frame_strides]
        self.t_in, self.t_out, self.size = t_in, t_out, size
        self.augment = augment
        # cells per model step at motion_kmh, per event
        self.motion_cells = [motion_kmh * s * e.step_minutes / 60.0 / e.cell_km
                             for s, e in zip(self.frame_strides, self.events, strict=True)]

    def __len__(self) -> int:
        return len(self.windows)

    def frame_index(self, i: int) -> tuple[int, np.ndarray]:
        """Event number and (T_in + T_out,) native frame indices of window ``i``."""
        event, start = int(self.windows[i, 0]), int(self.windows[i, 1])
        return event, start + self.frame_strides[event] * np.arange(self.t_in + self.t_out)

    def frame_times(self, i: int) -> np.ndarray:
        """(T_in + T_out,) datetime64[ns] UTC times of window ``i``'s frames."""
        event, index = self.frame_index(i)
        return self.events[event].times[index]

    def counts(self) -> dict[str, int]:
        """Number of windows per source file."""
        return dict(Counter(self.events[e].source for e in self.windows[:, 0]))

    def random_velocity(self, event: int) -> np.ndarray:
        """(2,) cells per step drawn uniformly from the disc of ``motion_kmh`` (torch's global RNG)."""
        angle, radius = torch.rand(2).tolist()
        speed = self.motion_cells[event] * radius ** 0.5  # uniform over the disc
        return speed * np.array([np.sin(2 * np.pi * angle), np.cos(2 * np.pi * angle)])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | str]:
        event, index = self.frame_index(i)
        y0, x0 = int(self.windows[i, 2]), int(self.windows[i, 3])
        ev = self.events[event]
        box = (index, slice(y0, y0 + self.size), slice(x0, x0 + self.size))
        frames = torch.from_numpy(ev.pixels[box])  # fancy index: a copy, safe to hand out
        valid = torch.from_numpy(ev.valid[box])
        velocity = torch.zeros(2, dtype=torch.float64)
        if self.advection == "bulk":
            velocity += bulk_motion(frames[None, :self.t_in])[0].double()
        if self.augment and self.motion_cells[event] > 0:
            velocity += torch.from_numpy(self.random_velocity(event))
        if velocity.any():  # cut every frame where a frame moving at velocity has got to
            offsets = frame_offsets(velocity[None], 1 - self.t_in, self.t_out)[0].numpy()
            frames, valid = map(torch.from_numpy, shifted_crop(ev.pixels, ev.valid, index, y0, x0,
                                                               self.size, offsets))
        if self.augment:
            k = int(torch.randint(4, (1,)))
            flip = bool(torch.randint(2, (1,)))
            frames, valid = rotate_flip(frames, valid, k=k, flip=flip)
        return {
            "x": frames[: self.t_in],
            "y": frames[self.t_in :],
            "valid": valid,
            "source": ev.source,
            "start": iso_time(ev.times[index[0]]),
        }


def _check_args(t_in: int, t_out: int, step_minutes: int, size: int, stride: int, val_fraction: float,
                min_coverage: float, min_rain_fraction: float) -> None:
    if t_in < 1 or t_out < 1 or size < 1 or stride < 1 or step_minutes < 1:
        raise ValueError("t_in, t_out, size, stride and step_minutes must be >= 1, got "
                         f"{t_in}, {t_out}, {size}, {stride}, {step_minutes}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    for name, value in (("min_coverage", min_coverage), ("min_rain_fraction", min_rain_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")


def build_datasets(
    paths: Iterable[str | Path],
    *,
    t_in: int,
    t_out: int,
    step_minutes: int,
    size: int,
    cell_km: float,
    transform: PixelTransform,
    val_fraction: float = 0.2,
    seed: int = 0,
    min_coverage: float = 0.5,
    min_rain_fraction: float = 0.0,
    stride: int | None = None,
    augment: bool = True,
    motion_kmh: float = 0.0,
    advection: str = "none",
) -> tuple[RadarWindows, RadarWindows]:
    """Training and validation windows from radar event files (rules in the module docstring).

    Parameters
    ----------
    paths : iterable of str or Path
        CF-netCDF event files; processed in order of file name, which must be unique.
    t_in, t_out : int
        Input and output frames per window (e.g. ``config.t_in``, ``config.t_out``).
    step_minutes : int
        Minutes between the frames of a window.
    size : int
        Window side in coarse cells (e.g. ``config.size``).
    cell_km : float
        Coarse cell size in km (e.g. 4.0 for 128 x 128 cells covering 512 km).
    transform : PixelTransform
        The model config's transform (``config.transform``).
    val_fraction : float
        About this fraction of the windows go to validation, in [0, 1).
    seed : int
        Seed of the choice of validation blocks.
    min_coverage, min_rain_fraction : float
        Fractions in [0, 1]: windows with less data, or less rain among the data, are skipped.
    stride : int, optional
        Tile spacing in coarse cells (default ``size``: non-overlapping tiles).
    augment : bool
        Random rotations and flips of the training items (never of the validation ones).
    motion_kmh : float
        Largest random velocity added to training items (:class:`RadarWindows`); 0: off.
    advection : str
        "bulk": training and validation items in the frame moving with their rain
        (:class:`RadarWindows`); "none": on the ground.

    Returns
    -------
    (RadarWindows, RadarWindows)
        Training and validation windows; validation may be empty (logged as a warning).
    """
    stride = size if stride is None else stride
    _check_args(t_in, t_out, step_minutes, size, stride, val_fraction, min_coverage, min_rain_fraction)
    n_frames = t_in + t_out
    headers = sorted((read_header(p) for p in paths), key=lambda h: h.source)
    names = [h.source for h in headers]
    if len(set(names)) != len(names):
        raise ValueError(f"file names must be unique, got {names}")
    rain_pixel = float(transform.to_pixel(np.float32(transform.rain_min), "mm/h"))

    events, strides, tables = [], [], []
    for header in headers:
        try:
            stride_t = frame_stride(header.step_minutes, step_minutes, source=header.source)
        except ValueError as err:
            logger.warning("skipping %s: %s", header.source, err)
            continue
        span = stride_t * (n_frames - 1) + 1
        if header.n_frames < span:
            logger.warning("skipping %s: it spans %d min, a window of %d frames at %d min needs %d min",
                           header.source, (header.n_frames - 1) * header.step_minutes, n_frames, step_minutes,
                           (n_frames - 1) * step_minutes)
            continue
        try:
            event = load_event(header, cell_km=cell_km, transform=transform)
        except ValueError as err:
            logger.warning("skipping %s: %s", header.source, err)
            continue
        table = candidate_windows(event.pixels, event.valid, n_frames=n_frames, frame_stride=stride_t,
                                  size=size, stride=stride, min_coverage=min_coverage,
                                  min_rain_fraction=min_rain_fraction, rain_pixel=rain_pixel)
        if len(table) == 0:
            logger.warning("skipping %s: no %d x %d window with coverage >= %g and rain fraction >= %g "
                           "(grid %dx%d at %.2f km)", header.source, size, size, min_coverage,
                           min_rain_fraction, *event.pixels.shape[1:], event.cell_km)
            continue
        events.append(event)
        strides.append(stride_t)
        tables.append(table)
    if not events:
        raise ValueError(f"no usable windows in {names} for {n_frames} frames at "
                         f"step_minutes={step_minutes}, size={size}, cell_km={cell_km}, "
                         f"min_coverage={min_coverage} (see warnings)")

    spans = [s * (n_frames - 1) + 1 for s in strides]
    blocks = time_blocks([e.times for e in events], [e.step_minutes for e in events],
                         (n_frames - 1) * step_minutes)
    n_blocks = max(int(b.max()) for b in blocks) + 1
    weights = sum(block_weights(b, table[:, 0], span, n_blocks)
                  for b, table, span in zip(blocks, tables, spans, strict=True))
    is_val = choose_validation(weights, val_fraction, seed)

    parts: dict[int, list[np.ndarray]] = {TRAIN: [], VAL: []}
    for e, (event, table) in enumerate(zip(events, tables, strict=True)):
        labels = frame_labels(blocks[e], is_val, event.times, event.step_minutes)
        split = window_split(table[:, 0], labels, spans[e])
        for which in (TRAIN, VAL):
            rows = table[split == which]
            parts[which].append(np.column_stack([np.full(len(rows), e), rows]))
        logger.info("%s: %d train / %d val windows (%d candidates, %d min step, %.2f km cells)", event.source,
                    int(np.sum(split == TRAIN)), int(np.sum(split == VAL)), len(table), step_minutes,
                    event.cell_km)
    train = RadarWindows(events, np.concatenate(parts[TRAIN]), strides, t_in=t_in, t_out=t_out, size=size,
                         augment=augment, motion_kmh=motion_kmh, advection=advection)
    val = RadarWindows(events, np.concatenate(parts[VAL]), strides, t_in=t_in, t_out=t_out, size=size,
                       advection=advection)
    logger.info("%d train / %d val windows from %d files", len(train), len(val), len(events))
    if len(val) == 0 and val_fraction > 0:
        logger.warning("no validation windows: too few blocks of %d frames at %d min", n_frames, step_minutes)
    if len(train) == 0:
        raise ValueError("no training windows left after the split; lower val_fraction or add events")
    return train, val
