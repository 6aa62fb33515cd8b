"""Training and validation samples cut from radar event files, as a torch ``Dataset``.

``build_datasets`` reads CF-netCDF event files (``../shared/radar/README.md``), averages them
to ``cell_km`` cells, converts them to model pixels with the model config's
``PixelTransform`` and cuts windows of ``t_in`` inputs and up to ``t_out`` leads on
``size x size`` tiles, at every model step a file can serve. See :mod:`radar.events`
(quantity, area mean, cell size) and :mod:`radar.split` (tiles, coverage, the three splits);
in short:

Time steps
    A model serves one or more ``steps`` (minutes). A file serves each step its native step
    divides, with frames every ``step // native`` native frames: the 5-minute files serve 5,
    the 2-minute MRMS files 2 and 6. Each window records its step (``"step_minutes"``), which
    the model embeds. A file that serves none of the steps is skipped with a warning.

Short windows
    Windows are cut as long as their split's time allows, up to ``t_out`` leads and at least
    ``min_leads``; the missing leads are zero pixels with ``valid`` False, which every loss
    term ignores.

No data
    NaN (outside radar coverage) is not dry. Windows whose fraction of cells with data is
    below ``min_coverage`` (default 0.5) are skipped. In the remaining ones no-data cells are
    pixel 0 in ``x``/``y`` and False in ``valid``; pass ``valid`` to
    ``training.objective.stldm_loss`` so that the reconstruction terms ignore them.

Dry windows
    ``min_rain_fraction`` (default 0.0: keep all) skips windows in which less than that
    fraction of the cells with data has rain at or above the transform's ``rain_min`` mm/h.

Split and augmentation
    :mod:`radar.split`: a held-out time block per network and held-out regions go to ``TEST``
    (never loaded here for training), seeded validation blocks per network to ``VAL``.
    Training items are randomly rotated by ``k * 90`` degrees and horizontally flipped, the
    same way for ``x``, ``y`` and ``valid``; validation items never are. With ``motion_kmh``
    they are also cut along a frame that moves at a random uniform velocity (a change of
    reference frame).

Memory
    The pixel arrays of all usable events are held in memory (float32 pixels + bool mask,
    5 bytes per coarse cell and frame: all the shared events take about 400 MB at 4 km).
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
from model.lagrangian import displacements, input_displacements, warp
from radar.events import EventPixels, load_events
from radar.split import SPLITS, SplitRule, WindowShape, split_windows
from training.motion import CACHE_DIR, MotionFields

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
    """Windows of ``t_in`` inputs and up to ``t_out`` leads of ``size x size`` cells out of
    in-memory events.

    Items are dicts: ``"x"`` (T_in, H, W) float32 pixels in [0, 1], ``"y"`` (T_out, H, W)
    float32, ``"valid"`` (T_in + T_out, H, W) bool (False = no data, pixel 0 there; leads past
    the end of a short window are all False), ``"step_minutes"`` (int64 scalar tensor, minutes
    between the frames), ``"source"`` (file name) and ``"start"`` (ISO UTC time of the first
    input frame).

    Parameters
    ----------
    events : sequence of EventPixels
    windows : np.ndarray
        (N, 6) int ``(event, start, n_frames, y0, x0, stride)``: index into ``events``, native
        start frame, frames in the window, tile origin in coarse cells, native frames between
        frames (:func:`radar.split.split_windows`).
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
        "dense": every item is cut into the frame moving with the motion field of its own input
        frames (:mod:`model.lagrangian`, fields from ``motion``): inputs advected forward to the
        last input's time, leads advected back along the field, from the event's grid around the
        tile (cells whose trajectories leave the event's grid have no data); the frame in which
        the model forecasts under ``forecast(advection="dense")``. "bulk": cut along a frame that
        moves with the bulk motion of its own input frames (:func:`model.advection.bulk_motion`);
        "none": on the ground.
    motion : MotionFields, optional
        The motion fields of the windows' inputs; needed by ``advection="dense"``.
    """

    margin = 48  # cells of the event's grid around a tile that dense trajectories may reach

    def __init__(
        self,
        events: Sequence[EventPixels],
        windows: np.ndarray,
        *,
        t_in: int,
        t_out: int,
        size: int,
        augment: bool = False,
        motion_kmh: float = 0.0,
        advection: str = "none",
        motion: MotionFields | None = None,
    ) -> None:
        windows = np.asarray(windows, dtype=np.int64).reshape(-1, 6)
        if advection not in ADVECTIONS:
            raise ValueError(f"advection must be one of {ADVECTIONS}, got {advection!r}")
        if advection == "dense" and motion is None:
            raise ValueError("advection='dense' needs the windows' motion fields (motion=MotionFields(...))")
        self.motion = motion
        self.advection = advection
        if motion_kmh < 0:
            raise ValueError(f"motion_kmh must be >= 0, got {motion_kmh}")
        self.events = list(events)
        self.windows = windows
        self.t_in, self.t_out, self.size = t_in, t_out, size
        self.augment = augment
        self.motion_kmh = motion_kmh

    def __len__(self) -> int:
        return len(self.windows)

    def frame_index(self, i: int) -> tuple[int, np.ndarray]:
        """Event number and (n_frames,) native frame indices of window ``i``."""
        event, start, n_frames, _, _, stride = (int(v) for v in self.windows[i])
        return event, start + stride * np.arange(n_frames)

    def step_minutes(self, i: int) -> int:
        """Minutes between the frames of window ``i``."""
        event, stride = int(self.windows[i, 0]), int(self.windows[i, 5])
        return stride * self.events[event].step_minutes

    def frame_times(self, i: int) -> np.ndarray:
        """(n_frames,) datetime64[ns] UTC times of window ``i``'s frames."""
        event, index = self.frame_index(i)
        return self.events[event].times[index]

    def counts(self) -> dict[str, int]:
        """Number of windows per source file."""
        return dict(Counter(self.events[e].source for e in self.windows[:, 0]))

    def step_counts(self) -> dict[str, int]:
        """Number of windows per step, keys like ``"5 min"``."""
        return {f"{step} min": n for step, n in sorted(Counter(
            self.step_minutes(i) for i in range(len(self))).items())}

    def balance_weights(self) -> np.ndarray:
        """(N,) sampling weights that give every (network, step) the same share of the draws
        (the CONUS file alone holds most windows; each network should teach as much)."""
        keys = [(self.events[int(e)].network, self.step_minutes(i)) for i, e in enumerate(self.windows[:, 0])]
        counts = Counter(keys)
        return np.array([1.0 / counts[k] for k in keys])

    def lagrangian(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(n_frames, size, size) pixels and validity of window ``i`` in the frame moving with the
        motion field of its inputs (:mod:`model.lagrangian`), cut from the event's grid around it."""
        event, index = self.frame_index(i)
        start, y0, x0, stride = (int(self.windows[i, k]) for k in (1, 3, 4, 5))
        ev, m = self.events[event], self.margin
        height, width = ev.pixels.shape[1:]
        rows = slice(max(y0 - m, 0), min(y0 + self.size + m, height))
        cols = slice(max(x0 - m, 0), min(x0 + self.size + m, width))
        pixels = torch.from_numpy(ev.pixels[index][:, rows, cols])
        valid = torch.from_numpy(ev.valid[index][:, rows, cols]).float()
        velocity = torch.from_numpy(self.motion.crop(event, stride, start, rows, cols))[None]  # type: ignore[union-attr]
        moves = torch.cat((input_displacements(velocity, self.t_in)[0],
                           displacements(-velocity, len(index) - self.t_in)[0]))
        moved = warp(torch.stack((pixels, valid), dim=1), moves)  # both fields, one interpolation
        inside = moved[:, 1] >= 0.999  # every cell the interpolation touches has data
        frames = torch.where(inside, moved[:, 0], 0.0)
        cut = (slice(None), slice(y0 - rows.start, y0 - rows.start + self.size),
               slice(x0 - cols.start, x0 - cols.start + self.size))
        return frames[cut].contiguous(), inside[cut].contiguous()

    def random_velocity(self, event: int, step_minutes: int) -> np.ndarray:
        """(2,) cells per step drawn uniformly from the disc of ``motion_kmh`` (torch's global RNG)."""
        angle, radius = torch.rand(2).tolist()
        cells = self.motion_kmh * step_minutes / 60.0 / self.events[event].cell_km
        speed = cells * radius ** 0.5  # uniform over the disc
        return speed * np.array([np.sin(2 * np.pi * angle), np.cos(2 * np.pi * angle)])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | str]:
        event, index = self.frame_index(i)
        y0, x0 = int(self.windows[i, 3]), int(self.windows[i, 4])
        ev = self.events[event]
        step = self.step_minutes(i)
        box = (index, slice(y0, y0 + self.size), slice(x0, x0 + self.size))
        if self.advection == "dense":
            frames, valid = self.lagrangian(i)
        else:
            frames = torch.from_numpy(ev.pixels[box])  # fancy index: a copy, safe to hand out
            valid = torch.from_numpy(ev.valid[box])
        velocity = torch.zeros(2, dtype=torch.float64)
        if self.advection == "bulk":
            velocity += bulk_motion(frames[None, :self.t_in])[0].double()
        if self.augment and self.motion_kmh > 0:
            velocity += torch.from_numpy(self.random_velocity(event, step))
        if velocity.any():  # cut every frame where a frame moving at velocity has got to
            offsets = frame_offsets(velocity[None], 1 - self.t_in, len(index) - self.t_in)[0].numpy()
            frames, valid = map(torch.from_numpy, shifted_crop(ev.pixels, ev.valid, index, y0, x0,
                                                               self.size, offsets))
        missing = self.t_in + self.t_out - len(index)
        if missing:  # a short window: the leads past its end have no data
            frames = torch.cat((frames, frames.new_zeros(missing, self.size, self.size)))
            valid = torch.cat((valid, valid.new_zeros(missing, self.size, self.size)))
        if self.augment:
            k = int(torch.randint(4, (1,)))
            flip = bool(torch.randint(2, (1,)))
            frames, valid = rotate_flip(frames, valid, k=k, flip=flip)
        return {
            "x": frames[: self.t_in],
            "y": frames[self.t_in :],
            "valid": valid,
            "step_minutes": torch.tensor(step),
            "source": ev.source,
            "start": iso_time(ev.times[index[0]]),
        }


def build_splits(
    paths: Iterable[str | Path],
    *,
    t_in: int,
    t_out: int,
    steps: Sequence[int],
    size: int,
    cell_km: float,
    transform,
    rule: SplitRule | None = None,
    min_leads: int = 6,
    min_coverage: float = 0.5,
    min_rain_fraction: float = 0.0,
    stride: int | None = None,
    augment: bool = True,
    motion_kmh: float = 0.0,
    advection: str = "none",
    which: Sequence[str] = ("train", "val"),
    motion_cache: Path | None = CACHE_DIR,
) -> dict[str, RadarWindows]:
    """The windows of radar event files, split (rules in the module docstring and :mod:`radar.split`).

    Parameters
    ----------
    paths : iterable of str or Path
        CF-netCDF event files; file names must be unique.
    t_in, t_out : int
        Inputs and largest number of leads per window (``config.t_in``, ``config.t_out``).
    steps : sequence of int
        Model steps in minutes (``config.step_minutes``).
    size : int
        Window side in coarse cells.
    cell_km : float
        Coarse cell size in km.
    transform : PixelTransform
        The model config's transform (``config.transform``).
    rule : SplitRule, optional
        The hold-out rule (default ``SplitRule()``).
    min_leads : int
        Shortest window kept, in leads.
    min_coverage, min_rain_fraction : float
        Fractions in [0, 1]: windows with less data, or less rain among the data, are skipped.
    stride : int, optional
        Tile spacing in coarse cells (default ``size``: non-overlapping tiles).
    augment : bool
        Random rotations and flips of the training items (never of the others).
    motion_kmh : float
        Largest random velocity added to training items (:class:`RadarWindows`); 0: off.
    advection : str
        "dense" or "bulk": items in the frame moving with their rain (:class:`RadarWindows`);
        "none": on the ground.
    which : sequence of str
        The splits to return, among "train", "val", "test".
    motion_cache : Path, optional
        Folder of the motion fields of ``advection="dense"`` (:mod:`training.motion`).

    Returns
    -------
    dict of RadarWindows
        One per name in ``which``; a split may be empty (logged as a warning).
    """
    rule = rule or SplitRule()
    unknown = set(which) - set(SPLITS)
    if unknown:
        raise ValueError(f"which must name splits among {sorted(SPLITS)}, got {sorted(unknown)}")
    if not steps or min(steps) < 1:
        raise ValueError(f"steps must hold at least one step of >= 1 min, got {list(steps)}")
    shape = WindowShape(t_in=t_in, t_out=t_out, size=size, stride=stride or size, min_leads=min_leads,
                        min_coverage=min_coverage, min_rain_fraction=min_rain_fraction)
    paths = list(paths)
    events, strides = load_events(paths, steps=steps, n_min=t_in + min_leads, cell_km=cell_km,
                                  transform=transform)
    if not events:
        raise ValueError(f"no file in {[Path(p).name for p in paths]} serves the steps {list(steps)} min "
                         f"with {t_in + min_leads} frames (see warnings)")
    rain_pixel = float(transform.to_pixel(np.float32(transform.rain_min), "mm/h"))
    rows, labels = split_windows(events, strides, shape, rule, rain_pixel)
    wanted = np.isin(labels, [SPLITS[name] for name in which])
    motion = (MotionFields(events, rows[wanted], t_in=t_in, cache_dir=motion_cache)
              if advection == "dense" else None)
    out = {}
    for name in which:
        chosen = rows[labels == SPLITS[name]]
        out[name] = RadarWindows(events, chosen, t_in=t_in, t_out=t_out, size=size,
                                 augment=augment and name == "train",
                                 motion_kmh=motion_kmh if name == "train" else 0.0, advection=advection,
                                 motion=motion)
        logger.info("%s: %d windows %s %s", name, len(chosen), out[name].counts(), out[name].step_counts())
        if len(chosen) == 0:
            logger.warning("no %s windows in %s", name, [e.source for e in events])
    return out
