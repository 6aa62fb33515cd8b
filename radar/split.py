"""Which windows train, which select, which are held out: the split rule, as data.

Three splits: ``TRAIN`` (gradient steps), ``VAL`` (validation loss, choice of checkpoints,
defaults and options) and ``TEST`` (held out for reporting: ``nowcast evaluate``). The rule
(:class:`SplitRule`) is recorded in every checkpoint's manifest, so evaluation rebuilds the very
windows that training never saw.

Networks
    A file's network is its name up to the first underscore (``fmi``, ``knmi``, ``mch``,
    ``mrms``). Events of one network that overlap in time form a *group* with one time axis
    (the MRMS crops and the CONUS file of the same hour).

Held-out time (``TEST``)
    In every group spanning at least ``2 * test_minutes``, the frames of its last
    ``test_minutes`` are held out.

Held-out regions (``TEST`` and ``VAL``)
    The file named ``test_region`` (``val_region``), when it is among the files, is held out at
    all times, and so is every tile of any file on the same coordinate system (same
    :attr:`~radar.events.EventPixels.crs`) that lies inside its bounding box. Tiles that
    straddle the box are used by no split, so no cell of a held-out region ever trains.

Validation blocks (``VAL``)
    The rest of each group is cut into blocks of ``block_minutes`` (the remainder joins the
    last block). Per network, blocks are drawn with the seed until they hold about
    ``val_fraction`` of that network's windows, and a network with two or more blocks keeps at
    least one for training, so every network trains.

Windows
    A window is ``t_in`` inputs and up to ``t_out`` leads ``stride`` native frames apart on one
    ``size x size`` tile. It belongs to a split when all its frames do, without a gap in time;
    near the end of a split's time it is cut short, and kept while it has at least
    ``min_leads`` leads (the missing leads are masked in training). Time ranges of windows of
    different splits never overlap on one tile; across a held-out region they do, but no cell
    is shared.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radar.events import EventPixels
from radar.windows import choose_validation, tile_counts, tile_origins

logger = logging.getLogger(__name__)

TRAIN, VAL, TEST = 0, 1, 2
SPLITS = {"train": TRAIN, "val": VAL, "test": TEST}
UNUSED = -1


@dataclass(frozen=True)
class SplitRule:
    """The hold-out rule (module docstring); every field is a ``nowcast train`` flag."""

    val_fraction: float = 0.2
    seed: int = 0
    test_minutes: int = 100
    block_minutes: int = 100
    test_region: str = "mrms_20190610_ohiovalley.nc"
    val_region: str = "mrms_20190610_greatlakes.nc"

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.test_minutes < 0 or self.block_minutes < 1:
            raise ValueError(f"test_minutes must be >= 0 and block_minutes >= 1, got "
                             f"{self.test_minutes}, {self.block_minutes}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class WindowShape:
    """Frames and tiles of the windows: ``t_in`` inputs, ``min_leads`` to ``t_out`` leads."""

    t_in: int
    t_out: int
    size: int
    stride: int
    min_leads: int
    min_coverage: float = 0.5
    min_rain_fraction: float = 0.0

    def __post_init__(self) -> None:
        if min(self.t_in, self.t_out, self.size, self.stride) < 1 or not 1 <= self.min_leads <= self.t_out:
            raise ValueError("t_in, t_out, size, stride must be >= 1 and min_leads in [1, t_out], "
                             f"got {self}")
        for name in ("min_coverage", "min_rain_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def time_groups(events: Sequence[EventPixels]) -> list[list[int]]:
    """Indices of the events of one network that overlap in time, group by group."""
    groups: list[list[int]] = []
    for network in sorted({e.network for e in events}):
        members = sorted((i for i, e in enumerate(events) if e.network == network),
                         key=lambda i: events[i].times[0])
        end = None
        for i in members:
            if end is None or events[i].times[0] > end:
                groups.append([])
                end = events[i].times[-1]
            groups[-1].append(i)
            end = max(end, events[i].times[-1])
    return groups


def frame_splits(events: Sequence[EventPixels], rule: SplitRule,
                 start_weights: Sequence[np.ndarray]) -> list[np.ndarray]:
    """(T,) split of every frame of every event by time: ``TRAIN``, ``VAL`` or ``TEST``.

    ``start_weights`` holds, per event, (T,) the number of usable windows starting at each
    frame; it weighs the validation blocks.
    """
    minute = np.timedelta64(1, "m")
    labels = [np.full(len(e.times), TRAIN, dtype=np.int64) for e in events]
    blocks = [np.full(len(e.times), -1, dtype=np.int64) for e in events]
    block_network: list[str] = []
    for group in time_groups(events):
        first = min(events[i].times[0] for i in group)
        last = max(events[i].times[-1] for i in group)
        step = max(events[i].step_minutes for i in group)
        span = int((last - first) // minute) + step
        test_from = last - rule.test_minutes * minute if span >= 2 * rule.test_minutes > 0 else None
        rest = int(((test_from if test_from is not None else last + minute) - first) // minute)
        count = max(rest // rule.block_minutes, 1)
        for i in group:
            elapsed = (events[i].times - first) // minute
            block = len(block_network) + np.minimum(elapsed // rule.block_minutes, count - 1)
            blocks[i] = block.astype(np.int64)
            if test_from is not None:
                held = events[i].times >= test_from
                labels[i][held] = TEST
                blocks[i][held] = -1
        block_network += [events[group[0]].network] * count
    weights = np.zeros(len(block_network), dtype=np.int64)
    for b, w in zip(blocks, start_weights, strict=True):
        np.add.at(weights, b[b >= 0], w[b >= 0])
    nets = np.array(block_network)
    is_val = np.zeros(len(block_network), dtype=bool)
    for network in sorted(set(block_network)):
        mine = np.flatnonzero(nets == network)
        is_val[mine] = choose_validation(weights[mine], rule.val_fraction, rule.seed)
    for lab, b in zip(labels, blocks, strict=True):
        lab[(b >= 0) & is_val[np.maximum(b, 0)]] = VAL
    return labels


def _bounds(event: EventPixels, rows: slice = slice(None), cols: slice = slice(None)):
    """(ymin, ymax, xmin, xmax) of the cells of ``event`` in ``rows, cols`` (cell edges)."""
    y, x = event.y[rows], event.x[cols]  # type: ignore[index]
    dy = abs(float(event.y[1] - event.y[0])) / 2 if len(event.y) > 1 else 0.0  # type: ignore[index]
    dx = abs(float(event.x[1] - event.x[0])) / 2 if len(event.x) > 1 else 0.0  # type: ignore[index]
    return float(y.min()) - dy, float(y.max()) + dy, float(x.min()) - dx, float(x.max()) + dx


def tile_regions(events: Sequence[EventPixels], origins: Sequence[np.ndarray], size: int,
                 rule: SplitRule) -> list[np.ndarray]:
    """(K,) per event: ``TEST``/``VAL`` for tiles inside a held-out region, ``UNUSED`` for tiles
    that straddle one, and -2 for the others (split by time)."""
    out = [np.full(len(o), -2, dtype=np.int64) for o in origins]
    by_name = {e.source: e for e in events}
    for name, label in ((rule.test_region, TEST), (rule.val_region, VAL)):
        region = by_name.get(name) if name else None
        if name and region is None:
            logger.info("held-out region %s is not among the files: not applied", name)
        if region is None or region.y is None or region.x is None:
            continue
        ry0, ry1, rx0, rx1 = _bounds(region)
        tol = 1e-6 * max(abs(ry1 - ry0), abs(rx1 - rx0))
        for e, (event, tiles) in enumerate(zip(events, origins, strict=True)):
            if event.crs != region.crs or event.y is None or event.x is None:
                continue
            if event is region:
                out[e][:] = label
                continue
            for k, (y0, x0) in enumerate(tiles):
                ty0, ty1, tx0, tx1 = _bounds(event, slice(y0, y0 + size), slice(x0, x0 + size))
                overlaps = ty0 < ry1 and ry0 < ty1 and tx0 < rx1 and rx0 < tx1
                inside = ty0 >= ry0 - tol and ty1 <= ry1 + tol and tx0 >= rx0 - tol and tx1 <= rx1 + tol
                if inside:
                    out[e][k] = label
                elif overlaps and out[e][k] == -2:
                    out[e][k] = UNUSED
    return out


def segments(labels: np.ndarray, times: np.ndarray, native_minutes: int) -> np.ndarray:
    """(T,) run number: changes wherever the label changes or the event has a gap in time."""
    step = np.timedelta64(native_minutes, "m")
    change = (labels[1:] != labels[:-1]) | (np.diff(times) != step)
    return np.concatenate([[0], np.cumsum(change)])


def window_lengths(seg: np.ndarray, stride: int, n_max: int) -> np.ndarray:
    """(T,) frames of the longest window (at most ``n_max``) starting at each frame whose frames,
    ``stride`` apart, all lie in the run of its first frame."""
    t = len(seg)
    n = np.ones(t, dtype=np.int64)
    alive = np.ones(t, dtype=bool)
    starts = np.arange(t)
    for k in range(1, n_max):
        idx = starts + stride * k
        ok = idx < t
        ok[ok] &= seg[idx[ok]] == seg[starts[ok]]
        alive &= ok
        n += alive
    return n


def event_windows(event: EventPixels, frame_split: np.ndarray, regions: np.ndarray,
                  origins: np.ndarray, stride: int, shape: WindowShape,
                  rain_pixel: float) -> tuple[np.ndarray, np.ndarray]:
    """Windows of one event at one frame ``stride``: rows ``(start, n_frames, y0, x0)`` and split.

    Returns (N, 4) int64 rows and (N,) int64 splits; only windows with at least
    ``t_in + min_leads`` frames that pass the coverage and rain rules.
    """
    n_max, n_min = shape.t_in + shape.t_out, shape.t_in + shape.min_leads
    valid_counts = tile_counts(event.valid, origins, shape.size)  # (T, K)
    rain_counts = tile_counts(event.valid & (event.pixels >= rain_pixel), origins, shape.size)
    rows, splits = [], []
    by_time = segments(frame_split, event.times, event.step_minutes)
    gaps_only = segments(np.zeros_like(frame_split), event.times, event.step_minutes)
    for label in np.unique(regions):
        if label == UNUSED:
            continue
        tiles = np.flatnonzero(regions == label)
        seg = by_time if label == -2 else gaps_only
        lengths = window_lengths(seg, stride, n_max)  # (T,)
        starts = np.flatnonzero(lengths >= n_min)
        if len(starts) == 0:
            continue
        valid_sum = np.zeros((len(starts), len(tiles)))
        rain_sum = np.zeros_like(valid_sum)
        for k in range(n_max):
            idx = starts + stride * k
            take = (k < lengths[starts])[:, None]
            idx = np.minimum(idx, len(seg) - 1)
            valid_sum += take * valid_counts[idx][:, tiles]
            rain_sum += take * rain_counts[idx][:, tiles]
        coverage = valid_sum / (lengths[starts][:, None] * shape.size**2)
        rain = rain_sum / np.maximum(valid_sum, 1)
        s, k = np.nonzero((coverage >= shape.min_coverage) & (rain >= shape.min_rain_fraction))
        start = starts[s]
        rows.append(np.column_stack([start, lengths[start], origins[tiles[k]]]))
        splits.append(frame_split[start] if label == -2 else np.full(len(start), label))
    if not rows:
        return np.empty((0, 4), dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.concatenate(rows).astype(np.int64), np.concatenate(splits).astype(np.int64)


def split_windows(events: Sequence[EventPixels], strides: Sequence[Sequence[int]], shape: WindowShape,
                  rule: SplitRule, rain_pixel: float) -> tuple[np.ndarray, np.ndarray]:
    """All windows of ``events`` with their split.

    Parameters
    ----------
    events : sequence of EventPixels
    strides : per event, the native frame strides to cut windows at (one per model step the
        event serves, e.g. (1, 3) for a 2-minute file and steps of 2 and 6 minutes).
    shape : WindowShape
    rule : SplitRule
    rain_pixel : float
        Pixel value of the rain threshold of ``shape.min_rain_fraction``.

    Returns
    -------
    rows : (N, 6) int64 ``(event, start, n_frames, y0, x0, stride)``
    splits : (N,) int64 ``TRAIN``, ``VAL`` or ``TEST``
    """
    origins = [tile_origins(*e.pixels.shape[1:], shape.size, shape.stride) for e in events]
    regions = tile_regions(events, origins, shape.size, rule)
    # weights of the validation blocks: windows of the shortest length starting at each frame
    weights = []
    for e, event in enumerate(events):
        usable = regions[e] == -2
        counts = tile_counts(event.valid, origins[e][usable], shape.size) if usable.any() else None
        n = shape.t_in + shape.min_leads
        t = len(event.times)
        w = np.zeros(t, dtype=np.int64)
        if counts is not None and t >= n:
            s = min(strides[e]) if strides[e] else 1
            span = s * (n - 1) + 1
            if t >= span:
                total = sum(counts[k * s: t - span + 1 + k * s] for k in range(n))
                w[: t - span + 1] = (total >= shape.min_coverage * n * shape.size**2).sum(axis=1)
        weights.append(w)
    labels = frame_splits(events, rule, weights)
    rows, splits = [], []
    for e, event in enumerate(events):
        for stride in strides[e]:
            r, s = event_windows(event, labels[e], regions[e], origins[e], stride, shape, rain_pixel)
            rows.append(np.column_stack([np.full(len(r), e), r, np.full(len(r), stride)]))
            splits.append(s)
    if not rows:
        return np.empty((0, 6), dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.concatenate(rows).astype(np.int64), np.concatenate(splits).astype(np.int64)


@dataclass(frozen=True, eq=False)
class Window:
    """One window of an event on the ground, as model pixels.

    Attributes
    ----------
    source, network : the event file and its network.
    step_minutes : minutes between the frames.
    times : (n_frames,) datetime64[ns] UTC.
    y0, x0 : tile origin in coarse cells.
    pixels : (n_frames, size, size) float32 model pixels, 0 where ``valid`` is False.
    valid : (n_frames, size, size) bool, True where there is data.
    """

    source: str
    network: str
    step_minutes: int
    times: np.ndarray
    y0: int
    x0: int
    pixels: np.ndarray
    valid: np.ndarray


def cut_window(events: Sequence[EventPixels], row: np.ndarray, size: int) -> Window:
    """The :class:`Window` of a row ``(event, start, n_frames, y0, x0, stride)`` of
    :func:`split_windows`."""
    e, start, n_frames, y0, x0, stride = (int(v) for v in row)
    event = events[e]
    index = start + stride * np.arange(n_frames)
    box = (index, slice(y0, y0 + size), slice(x0, x0 + size))
    return Window(event.source, event.network, stride * event.step_minutes, event.times[index], y0, x0,
                  event.pixels[box], event.valid[box])


def windows_of(paths: Sequence[str | Path], *, which: str, shape: WindowShape, rule: SplitRule,
               steps: Sequence[int], cell_km: float, transform) -> list[Window]:
    """The ground :class:`Window` s of split ``which`` ("train", "val" or "test") of event files
    ``paths`` (tiles ``shape.size`` wide, ``shape.stride`` apart), in file, step and time order."""
    from radar.events import load_events

    if which not in SPLITS:
        raise ValueError(f"which must be one of {sorted(SPLITS)}, got {which!r}")
    events, strides = load_events(paths, steps=steps, n_min=shape.t_in + shape.min_leads, cell_km=cell_km,
                                  transform=transform)
    rain_pixel = float(transform.to_pixel(np.float32(transform.rain_min), "mm/h"))
    rows, labels = split_windows(events, strides, shape, rule, rain_pixel)
    return [cut_window(events, row, shape.size) for row in rows[labels == SPLITS[which]]]
