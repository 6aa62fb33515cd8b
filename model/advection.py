"""Forecasting in a frame that moves with the rain: bulk motion from the inputs, shifts around the model.

The small model learns too little motion from two training events: on the validation windows
it moved rain about a third as fast as the radar showed it (``README.md``, Training). Classical
nowcasting gets most of its skill from advection, so the product lets the network forecast in
a Lagrangian frame, as L-CNN does (Ritvanen et al. 2023, IEEE JSTARS 16, "Advection-free
convolutional neural network for convective rainfall nowcasting"), here with one uniform
velocity per request:

1. :func:`bulk_motion` estimates the mean displacement per step from the first to the last
   input frame (peak of their cross-correlation, refined to sub-cell precision);
2. input frame ``k`` is shifted by ``(t_in - 1 - k) * v`` cells, so the rain stands still;
3. the model forecasts in that frame;
4. lead ``l`` (1-based) of every member and of the first estimate is shifted by ``l * v``.

Shifts are whole cells (rounded), so no field is smoothed by interpolation. Cells shifted in
from beyond the grid are dry (0), as in an extrapolation nowcast, which has no information
there either. The last input frame is never moved, so probability matching to it is unchanged.
"""

from __future__ import annotations

import torch

from model.options import ADVECTIONS  # noqa: F401  (re-exported: the choices live with the options)


def bulk_motion(x: torch.Tensor) -> torch.Tensor:
    """Uniform motion of the rain in ``x``, cells per step.

    Parameters
    ----------
    x : (B, T, H, W) frames (pixels, no data as 0), oldest first, T >= 2.

    Returns
    -------
    (B, 2) float32 ``(dy, dx)`` per step: the displacement of the last frame relative to the
    first (the peak of their circular cross-correlation after removing each frame's mean, with a
    parabolic sub-cell refinement per axis), divided by ``T - 1``. A request with no structure
    (all dry, or uniform) gets 0. Displacements are found within half the grid side.
    """
    if x.ndim != 4 or x.shape[1] < 2:
        raise ValueError(f"x must be (B, T, H, W) with T >= 2, got {tuple(x.shape)}")
    b, t, h, w = x.shape
    first, last = (f.double() - f.double().mean((-2, -1), keepdim=True) for f in (x[:, 0], x[:, -1]))
    corr = torch.fft.irfft2(torch.conj(torch.fft.rfft2(first)) * torch.fft.rfft2(last), s=(h, w))
    peak = corr.flatten(1).argmax(1)
    iy, ix = peak // w, peak % w
    rows = torch.arange(b, device=x.device)

    def refine(minus: torch.Tensor, centre: torch.Tensor, plus: torch.Tensor) -> torch.Tensor:
        curve = minus - 2 * centre + plus
        return torch.where(curve < 0, 0.5 * (minus - plus) / torch.where(curve < 0, curve, -1.0), 0.0)

    dy = refine(corr[rows, (iy - 1) % h, ix], corr[rows, iy, ix], corr[rows, (iy + 1) % h, ix])
    dx = refine(corr[rows, iy, (ix - 1) % w], corr[rows, iy, ix], corr[rows, iy, (ix + 1) % w])
    shift_y = (iy + h // 2) % h - h // 2 + dy
    shift_x = (ix + w // 2) % w - w // 2 + dx
    flat = corr.flatten(1)
    structureless = (flat.max(1).values - flat.min(1).values) <= 1e-12
    motion = torch.stack([shift_y, shift_x], dim=1) / (t - 1)
    return torch.where(structureless[:, None], 0.0, motion).float()


def shift_fields(fields: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Move fields by whole cells: ``out[..., i, j] = fields[..., i - dy, j - dx]``, 0 off the grid.

    Parameters
    ----------
    fields : (..., H, W)
    cells : (..., 2) integer ``(dy, dx)`` per field (same leading shape as ``fields``).
    """
    if cells.shape != (*fields.shape[:-2], 2):
        raise ValueError(f"cells must be {(*fields.shape[:-2], 2)}, got {tuple(cells.shape)}")
    h, w = fields.shape[-2:]
    out = torch.zeros_like(fields)
    flat_in, flat_out = fields.reshape(-1, h, w), out.view(-1, h, w)
    for i, (dy, dx) in enumerate(cells.reshape(-1, 2).tolist()):
        if abs(dy) < h and abs(dx) < w:
            flat_out[i, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
                flat_in[i, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def frame_offsets(motion: torch.Tensor, first: int, last: int) -> torch.Tensor:
    """(B, last - first + 1, 2) whole cells the moving frame has travelled at steps ``first`` ..
    ``last`` from the last input frame (step 0; inputs are steps <= 0, lead l is step l), for
    ``motion`` (B, 2) cells per step. Training cuts its windows at these offsets
    (:class:`training.data.RadarWindows`) and :func:`to_moving_frame` / :func:`from_moving_frame`
    shift by them, so both round alike."""
    steps = torch.arange(first, last + 1, dtype=torch.float64, device=motion.device)
    return torch.round(steps[None, :, None] * motion.double()[:, None]).long()


def to_moving_frame(x: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
    """(B, T, H, W) inputs seen from a frame moving at ``motion`` (B, 2): the last one stays."""
    return shift_fields(x, -frame_offsets(motion, 1 - x.shape[1], 0))


def from_moving_frame(leads: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
    """(B, ..., T_out, H, W) forecasts in the moving frame back on the ground: lead l moves l * v."""
    t_out = leads.shape[-3]
    cells = frame_offsets(motion, 1, t_out)  # (B, T_out, 2)
    cells = cells.reshape(cells.shape[0], *([1] * (leads.ndim - 4)), t_out, 2)
    return shift_fields(leads, cells.expand(*leads.shape[:-2], 2))
