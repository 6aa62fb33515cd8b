"""Fit request frames to the model's grid and back.

Grid rule (:func:`to_model_grid`): the networks need sides that are multiples of
``size_multiple``. Frames are padded at the bottom and on the right up to the next multiple
with dry pixels (0), and NaN (no data) pixels are set to dry as well. Padding is "outside the
radar's coverage", so it gets the no-data treatment; reflect or edge padding was rejected
because mirrored or smeared echoes would advect into the real domain as invented rain.
:func:`from_model_grid` crops the padding off and sets every output cell that had no data in
the *last* input frame to NaN: the model saw dry there, so its forecast is not a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GridUndo:
    """How to map model-grid fields back to the request's grid.

    ``shape`` is the request's (H, W); ``nodata`` the (H, W) mask of NaN cells of the last
    input frame, or None when it had none.
    """

    shape: tuple[int, int]
    nodata: np.ndarray | None


def padded_shape(height: int, width: int, multiple: int) -> tuple[int, int]:
    """(H, W) rounded up to multiples of ``multiple``."""
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def to_model_grid(frames: np.ndarray, multiple: int, *,
                  max_side: int | None = None) -> tuple[np.ndarray, GridUndo]:
    """Pad (T, H, W) frames to the model's grid; see the module docstring for the rule.

    Parameters
    ----------
    frames : (T, H, W) model pixels in [0, 1], NaN = no data.
    multiple : the model's ``config.size_multiple``.
    max_side : refuse frames with a side above this (pixels).

    Returns
    -------
    (T, H2, W2) float32 pixels without NaN, H2 and W2 the next multiples of ``multiple``;
    and the :class:`GridUndo` for :func:`from_model_grid`.
    """
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim != 3:
        raise ValueError(f"frames must be (T, H, W), got shape {frames.shape}")
    t, h, w = frames.shape
    if t < 1 or h < 1 or w < 1:
        raise ValueError(f"frames must not be empty, got shape {frames.shape}")
    if max_side is not None and max(h, w) > max_side:
        raise ValueError(f"frame sides must be at most max_side={max_side} pixels, got {h} x {w}")
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    nodata = np.isnan(frames[-1])
    h2, w2 = padded_shape(h, w, multiple)
    grid = np.zeros((t, h2, w2), dtype=np.float32)
    grid[:, :h, :w] = np.nan_to_num(frames, nan=0.0)
    return grid, GridUndo(shape=(h, w), nodata=nodata if nodata.any() else None)


def from_model_grid(fields: np.ndarray, undo: GridUndo) -> np.ndarray:
    """(..., H2, W2) model-grid fields -> (..., H, W) request-grid float32, NaN where no data.

    ``fields`` is any product on the model grid (members, mean, probabilities ...), in any unit.
    """
    h, w = undo.shape
    if fields.shape[-2] < h or fields.shape[-1] < w:
        raise ValueError(f"fields of shape {fields.shape} are smaller than the request's {undo.shape}")
    out = np.array(fields[..., :h, :w], dtype=np.float32)
    if undo.nodata is not None:
        out[..., undo.nodata] = np.nan
    return out
