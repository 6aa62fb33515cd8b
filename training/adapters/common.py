"""Pieces shared by the dataset adapters: runs of consecutive frames and the item format.

Every adapter returns the items of :class:`training.data.RadarWindows`: ``"x"`` (T_in, H, W)
float32 pixels in [0, 1], ``"y"`` (T_out, H, W), ``"valid"`` (T_in + T_out, H, W) bool
(no-data pixels are False and 0), ``"source"`` and ``"start"`` (ISO UTC time of frame 0).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from training.data import iso_time

MIN_CELL_COVERAGE = 0.5  # as radar.events: a resized pixel needs half its area with data


def consecutive_runs(times: np.ndarray, step_minutes: int) -> list[tuple[int, int]]:
    """``(first index, length)`` of the runs of frames exactly ``step_minutes`` apart.

    Parameters
    ----------
    times : np.ndarray
        (T,) datetime64, strictly increasing.
    step_minutes : int
    """
    if len(times) == 0:
        return []
    times = np.asarray(times, dtype="datetime64[ns]")
    if np.any(np.diff(times) <= np.timedelta64(0, "ns")):
        raise ValueError("frame times must be strictly increasing")
    breaks = np.flatnonzero(np.diff(times) != np.timedelta64(step_minutes, "m")) + 1
    bounds = np.concatenate([[0], breaks, [len(times)]])
    return [(int(a), int(b - a)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def window_starts(runs: list[tuple[int, int]], n_frames: int, stride: int) -> np.ndarray:
    """(N,) int64 first indices of ``n_frames``-frame windows, ``stride`` apart within each run."""
    if n_frames < 1 or stride < 1:
        raise ValueError(f"n_frames and stride must be >= 1, got {n_frames}, {stride}")
    starts = [first + np.arange(0, length - n_frames + 1, stride) for first, length in runs]
    return np.concatenate(starts).astype(np.int64) if starts else np.empty(0, dtype=np.int64)


def resize(pixels: torch.Tensor, valid: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Area-average (T, H, W) frames to (T, size, size), ignoring no-data pixels.

    Parameters
    ----------
    pixels : torch.Tensor
        (T, H, W) float32 pixels in [0, 1] (any value where ``valid`` is False).
    valid : torch.Tensor
        (T, H, W) bool.
    size : int
        Output side; any ratio (adaptive average pooling, an exact block mean when ``H`` and
        ``W`` are multiples of ``size``).

    Returns
    -------
    tuple of torch.Tensor
        (T, size, size) float32 pixels (0 where not valid) and bool ``valid``: True where at
        least half of the pooled area has data.
    """
    weight = valid.to(torch.float32)[:, None]
    area = F.adaptive_avg_pool2d(weight, size)
    total = F.adaptive_avg_pool2d(torch.where(valid, pixels, 0.0)[:, None], size)
    out_valid = area[:, 0] >= MIN_CELL_COVERAGE
    out = torch.where(out_valid, total[:, 0] / area[:, 0].clamp_min(1e-6), 0.0)
    return out.to(torch.float32), out_valid


def make_item(
    pixels: np.ndarray,
    valid: np.ndarray,
    *,
    t_in: int,
    size: int | None,
    source: str,
    start: np.datetime64,
) -> dict[str, torch.Tensor | str]:
    """Build an item from one window.

    Parameters
    ----------
    pixels : np.ndarray
        (T_in + T_out, H, W) float32 model pixels in [0, 1]; ignored where ``valid`` is False.
    valid : np.ndarray
        (T_in + T_out, H, W) bool.
    t_in : int
    size : int or None
        Resize to ``size x size`` with :func:`resize`; None keeps the native grid.
    source : str
    start : np.datetime64
        UTC time of the first frame.
    """
    frames = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
    mask = torch.from_numpy(np.ascontiguousarray(valid, dtype=bool))
    if size is not None:
        frames, mask = resize(frames, mask, size)
    frames = torch.where(mask, frames, 0.0).clamp(0.0, 1.0)
    return {
        "x": frames[:t_in],
        "y": frames[t_in:],
        "valid": mask,
        "source": source,
        "start": iso_time(start),
    }
