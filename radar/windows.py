"""Where the samples are: spatial tiles, time windows and the seeded train/validation split.

A window is ``n_frames`` frames ``frame_stride`` native frames apart (it spans
``span = frame_stride * (n_frames - 1) + 1`` native frames) on one ``size x size`` tile.

Tiles
    The coarse grid is tiled with ``size x size`` tiles ``stride`` cells apart (default
    ``size``: no overlap), the tile grid centred in the domain, so that a centred radar disc
    (KNMI) is not cut by a tile edge.

Coverage and rain
    A window is kept when the fraction of its cells with data (over all its frames) is at
    least ``min_coverage``, and when the fraction of those cells with rain (pixel at or above
    the transform's ``rain_min`` mm/h) is at least ``min_rain_fraction`` (0: keep dry windows).

Split
    Time is cut into blocks of one window span (the remainder joins the last block), on one
    axis for all events that overlap in time (:func:`time_blocks`). The validation blocks are
    drawn with the seed from the pool of all events' blocks until they hold about
    ``val_fraction`` of the candidate windows (pooling keeps that fraction sensible with few
    short events, where a per-event draw would often give no validation at all). A window is
    kept only when all of its frames lie in blocks of one split without a gap in its event's
    times, so no frame, and no instant of time, is in both splits: the time ranges of training
    and validation windows never overlap, even across files.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TRAIN, VAL = 0, 1
_CHUNK_FRAMES = 8  # frames per summed-area table


def tile_origins(height: int, width: int, size: int, stride: int) -> np.ndarray:
    """(K, 2) int64 ``(y0, x0)`` of ``size x size`` tiles ``stride`` apart, centred in the grid."""
    if size < 1 or stride < 1:
        raise ValueError(f"size and stride must be >= 1, got {size}, {stride}")

    def axis(n: int) -> np.ndarray:
        if n < size:
            return np.empty(0, dtype=np.int64)
        count = (n - size) // stride + 1
        offset = (n - (count - 1) * stride - size) // 2
        return offset + stride * np.arange(count, dtype=np.int64)

    ys, xs = np.meshgrid(axis(height), axis(width), indexing="ij")
    return np.stack([ys.ravel(), xs.ravel()], axis=1)


def tile_counts(mask: np.ndarray, origins: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W) bool, (K, 2) origins -> (T, K) int64 count of True cells per frame and tile.

    Summed-area tables of a few frames at a time keep the memory at a few frames of int32.
    """
    t, h, w = mask.shape
    y0, x0 = origins[:, 0], origins[:, 1]
    y1, x1 = y0 + size, x0 + size
    counts = np.empty((t, len(origins)), dtype=np.int64)
    integral = np.zeros((min(t, _CHUNK_FRAMES), h + 1, w + 1), dtype=np.int32)
    for i in range(0, t, _CHUNK_FRAMES):
        n = min(_CHUNK_FRAMES, t - i)
        table = integral[:n]
        np.cumsum(mask[i : i + n], axis=1, dtype=np.int32, out=table[:, 1:, 1:])
        np.cumsum(table[:, 1:, 1:], axis=2, out=table[:, 1:, 1:])
        counts[i : i + n] = table[:, y1, x1] - table[:, y0, x1] - table[:, y1, x0] + table[:, y0, x0]
    return counts


def candidate_windows(
    pixels: np.ndarray,
    valid: np.ndarray,
    *,
    n_frames: int,
    frame_stride: int,
    size: int,
    stride: int,
    min_coverage: float,
    min_rain_fraction: float,
    rain_pixel: float,
) -> np.ndarray:
    """Windows of one event that pass the coverage and rain rules, before the split.

    Parameters
    ----------
    pixels : np.ndarray
        (T, H, W) float32 model pixels, 0 where ``valid`` is False.
    valid : np.ndarray
        (T, H, W) bool, True where there is data.
    n_frames, frame_stride : int
        Frames per window and native frames between them.
    size, stride : int
        Tile side and tile spacing in cells.
    min_coverage, min_rain_fraction : float
        See the module docstring.
    rain_pixel : float
        Pixel value of the rain threshold.

    Returns
    -------
    np.ndarray
        (N, 3) int64 ``(start, y0, x0)``; ``start`` is a native frame index.
    """
    t = pixels.shape[0]
    span = frame_stride * (n_frames - 1) + 1
    origins = tile_origins(pixels.shape[1], pixels.shape[2], size, stride)
    if t < span or len(origins) == 0:
        return np.empty((0, 3), dtype=np.int64)
    starts = np.arange(t - span + 1)
    frames = starts[:, None] + frame_stride * np.arange(n_frames)  # (S, n_frames)
    valid_count = tile_counts(valid, origins, size)[frames].sum(axis=1)  # (S, K)
    rain_count = tile_counts(valid & (pixels >= rain_pixel), origins, size)[frames].sum(axis=1)
    coverage = valid_count / float(n_frames * size * size)
    rain = rain_count / np.maximum(valid_count, 1)
    s, k = np.nonzero((coverage >= min_coverage) & (rain >= min_rain_fraction))
    return np.column_stack([starts[s], origins[k]]).astype(np.int64)


def time_blocks(
    times: Sequence[np.ndarray], native_minutes: Sequence[int], duration_minutes: int
) -> list[np.ndarray]:
    """Block number of every frame of every event, blocks shared by events that overlap in time.

    Events whose time ranges overlap form a group with one time axis (the MRMS crops and the
    CONUS file of the same hour are one group, so that no instant is in both splits). A group's
    axis, from its first to its last frame, is cut into blocks of ``duration_minutes`` plus the
    group's largest native step (one window span); the remainder joins the last block.

    Parameters
    ----------
    times : sequence of np.ndarray
        Per event, (T,) datetime64, increasing.
    native_minutes : sequence of int
        Per event, the native step.
    duration_minutes : int
        First to last frame of a window, ``(n_frames - 1) * step_minutes``.

    Returns
    -------
    list of np.ndarray
        Per event, (T,) int64 block number, numbered over all events (every group has at least
        one block).
    """
    minute = np.timedelta64(1, "m")
    first = np.array([t[0] for t in times])
    last = np.array([t[-1] for t in times])
    blocks: list[np.ndarray] = [np.full(len(t), -1, dtype=np.int64) for t in times]
    order = np.argsort(first, kind="stable")
    groups: list[list[int]] = []
    group_end = None
    for e in order:
        if group_end is None or first[e] > group_end:
            groups.append([])
            group_end = last[e]
        groups[-1].append(int(e))
        group_end = max(group_end, last[e])
    offset = 0
    for group in groups:
        step = max(native_minutes[e] for e in group)
        length = duration_minutes + step
        origin = min(first[e] for e in group)
        extent = int((max(last[e] for e in group) - origin) // minute) + step
        count = max(extent // length, 1)  # a shorter group still is one block: no window is lost
        for e in group:
            elapsed = (times[e] - origin) // minute
            blocks[e] = offset + np.minimum(elapsed // length, count - 1).astype(np.int64)
        offset += count
    return blocks


def block_weights(blocks: np.ndarray, starts: np.ndarray, span: int, n_blocks: int) -> np.ndarray:
    """(n_blocks,) int64 number of windows lying wholly inside each block.

    Parameters
    ----------
    blocks : np.ndarray
        (T,) int64 block per frame (global numbering), -1 for frames in no block.
    starts : np.ndarray
        (N,) int native start frames of the candidate windows.
    span : int
        Native frames per window.
    n_blocks : int
        Number of blocks over all events.
    """
    first, last = blocks[starts], blocks[starts + span - 1]
    inside = (first == last) & (first >= 0)
    return np.bincount(first[inside], minlength=n_blocks).astype(np.int64)


def choose_validation(weights: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """Seeded choice of validation blocks holding about ``val_fraction`` of the windows.

    Parameters
    ----------
    weights : np.ndarray
        (B,) candidate windows per block (:func:`block_weights`), over all events.
    val_fraction : float
        In [0, 1).
    seed : int

    Returns
    -------
    np.ndarray
        (B,) bool, True for validation blocks. Blocks are visited in a seeded order and taken
        while that brings the validation weight closer to the target. When ``val_fraction > 0``
        and two or more blocks hold windows, at least one of them is taken and one is left.
    """
    n = len(weights)
    chosen = np.zeros(n, dtype=bool)
    if n == 0 or val_fraction <= 0:
        return chosen
    order = np.random.default_rng(seed).permutation(n)
    order = order[weights[order] > 0]  # blocks without windows would only shrink validation
    target, total = val_fraction * float(np.sum(weights)), 0.0
    for b in order:
        if total + weights[b] / 2.0 <= target:
            chosen[b] = True
            total += weights[b]
    if len(order) >= 2 and not chosen.any():
        chosen[order[0]] = True
    if len(order) >= 2 and chosen[order].all():
        chosen[order[-1]] = False
    return chosen


def window_split(starts: np.ndarray, frame_split: np.ndarray, span: int) -> np.ndarray:
    """Split of each window, or -1 when it straddles a split boundary or a gap.

    Parameters
    ----------
    starts : np.ndarray
        (N,) int native start frames.
    frame_split : np.ndarray
        (T,) int per frame: ``TRAIN``, ``VAL``, or a negative number for frames in no block;
        gaps must already be encoded as a change of value (see :func:`frame_labels`).
    span : int
        Native frames per window.

    Returns
    -------
    np.ndarray
        (N,) int64 ``TRAIN``, ``VAL`` or -1.
    """
    changes = np.concatenate([[0], np.cumsum(frame_split[1:] != frame_split[:-1])])
    ends = starts + span - 1
    same = changes[ends] == changes[starts]
    label = frame_split[starts]
    return np.where(same & (label >= 0), label % 2, -1).astype(np.int64)


def frame_labels(
    blocks: np.ndarray, is_val: np.ndarray, times: np.ndarray, native_minutes: int
) -> np.ndarray:
    """(T,) labels for :func:`window_split`: ``2 * run + split``, -1 for frames in no block.

    ``run`` counts gaps in ``times``, so a window across a gap sees a change of label even
    when both sides are in the same split.
    """
    step = np.timedelta64(native_minutes, "m")
    run = np.concatenate([[0], np.cumsum(np.diff(times) != step)])
    split = np.where(is_val[np.maximum(blocks, 0)], VAL, TRAIN)
    return np.where(blocks >= 0, 2 * run + split, -1).astype(np.int64)
