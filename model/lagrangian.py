"""The dense Lagrangian frame: a motion field per request, semi-Lagrangian warps around the model.

With ``advection="dense"`` the network forecasts in the frame that moves with the rain, as
L-CNN does (Ritvanen et al. 2023, IEEE JSTARS 16): one motion field ``V`` is estimated from the
input frames (pysteps' dense Lucas-Kanade, the field's standard optical flow); every input frame
is advected forward along ``V`` to the time of the last one, so the rain stands still; the
network forecasts growth, decay and departures from the motion; lead ``l`` is advected forward
``l`` steps along ``V``. Training windows are cut into the same frame by the same functions: the
targets are advected back along ``-V`` (:func:`to_lagrangian_targets`).

The scheme is pysteps' ``extrapolation.semilagrangian.extrapolate`` (backward trajectories, one
midpoint iteration per step, ``V`` bilinear with its edge values beyond the grid, fields
bilinear and ``outval`` beyond the grid), written in torch for whole batches; the tests check
it against pysteps. Notation: ``V`` (2, H, W) is (x, y) = (column, row) cells per step, as in
pysteps; a displacement ``D_l`` (2, H, W) sends the field ``F`` to ``F(p + D_l(p))`` after ``l``
steps.

Member-wise motion perturbations (``motion_spread``) follow STEPS' ``bps`` scheme (Bowler, Pierce
and Seed 2006; pysteps ``noise.motion``): member ``k`` adds to ``V`` a perturbation along and
across the local motion whose size grows with lead time, ``f(t) = a t^b + c`` km/h with
pysteps' parameters, scaled by ``motion_spread`` (1.0: pysteps' STEPS), drawn from the member's
own generator.
"""

from __future__ import annotations

import contextlib
import io
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F

BPS_PARALLEL = (10.88, 0.23, -7.68)  # pysteps get_default_params_bps_par (km/h, t in minutes)
BPS_PERPENDICULAR = (5.76, 0.31, -2.72)


def import_pysteps() -> ModuleType:
    """pysteps, imported without its start-up message on stdout (it prints its config path)."""
    with contextlib.redirect_stdout(io.StringIO()):
        import pysteps
    return pysteps


def dense_motion(frames: np.ndarray) -> np.ndarray:
    """Motion field of radar frames by pysteps' dense Lucas-Kanade.

    Parameters
    ----------
    frames : (T, H, W) float pixels (linear in dBZ), oldest first, T >= 2; NaN = no data.

    Returns
    -------
    (2, H, W) float32 (x, y) cells per frame step; zeros when the frames hold no trackable
    structure (all dry, say).
    """
    import_pysteps()
    from pysteps.motion.lucaskanade import dense_lucaskanade

    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim != 3 or frames.shape[0] < 2:
        raise ValueError(f"frames must be (T, H, W) with T >= 2, got {frames.shape}")
    if np.nanmax(np.nan_to_num(frames, nan=0.0)) <= 0:
        return np.zeros((2, *frames.shape[1:]), dtype=np.float32)
    velocity = dense_lucaskanade(np.ma.masked_invalid(frames), verbose=False)
    return np.nan_to_num(np.asarray(velocity, dtype=np.float32), nan=0.0)


def _base(shape: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """grid_sample coordinates of every cell, (1, H, W, 2) (x, y) in [-1, 1], and the (2,) scale
    from cells to those coordinates."""
    h, w = shape
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=device)
    y, x = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                          torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    return torch.stack((x, y), dim=-1)[None] * scale - 1, scale


def _sample(fields: torch.Tensor, grid: torch.Tensor, outval: float | None) -> torch.Tensor:
    """Bilinear ``fields`` (N, C, H, W) at ``grid`` (N, H, W, 2) coordinates in [-1, 1]; points
    beyond the grid get ``outval``, or the nearest edge value when it is None."""
    out = F.grid_sample(fields, grid.to(fields.dtype), mode="bilinear", padding_mode="border",
                        align_corners=True)
    if outval is not None:
        outside = (grid.abs() > 1 + 1e-6).any(dim=-1)
        out = out.masked_fill(outside[:, None], outval)
    return out


def sample(fields: torch.Tensor, points: torch.Tensor, *, outval: float | None = 0.0) -> torch.Tensor:
    """Bilinear values of ``fields`` at ``points``.

    Parameters
    ----------
    fields : (N, C, H, W)
    points : (N, 2, H, W) (x, y) cell coordinates.
    outval : value of points beyond the grid (scipy ``map_coordinates`` mode "constant");
        None takes the nearest edge value (mode "nearest").

    Returns
    -------
    (N, C, H, W)
    """
    base, scale = _base((int(fields.shape[-2]), int(fields.shape[-1])), fields.device)
    return _sample(fields, points.permute(0, 2, 3, 1) * scale - 1, outval)


def displacements(velocity: torch.Tensor, steps: int,
                  perturbation: torch.Tensor | None = None) -> torch.Tensor:
    """Displacements ``D_1 .. D_steps`` along ``velocity`` (pysteps' scheme, one midpoint
    iteration per step).

    Parameters
    ----------
    velocity : (N, 2, H, W) (x, y) cells per step.
    steps : number of steps.
    perturbation : (N, steps, 2, H, W), optional; added to ``velocity`` at each step (the
        member's motion perturbation at that lead).

    Returns
    -------
    (N, steps, 2, H, W) float32 displacements in cells: the field after ``l`` steps is the
    field at ``p + D_l(p)``.
    """
    velocity = velocity.float()
    n, _, h, w = velocity.shape
    base, scale = _base((h, w), velocity.device)
    # everything below in grid_sample coordinates, (N, H, W, 2)
    displacement = torch.zeros(n, h, w, 2, device=velocity.device)
    out = []
    increment = None
    for step in range(steps):
        v = velocity if perturbation is None else velocity + perturbation[:, step].float()
        if increment is None:
            increment = v.permute(0, 2, 3, 1) * scale  # the motion at the starting points
        elif perturbation is not None:  # the motion has changed: restart from the current point
            increment = _sample(v, base + displacement, None).permute(0, 2, 3, 1) * scale
        increment = _sample(v, base + displacement - increment / 2, None).permute(0, 2, 3, 1) * scale
        displacement = displacement - increment
        increment = _sample(v, base + displacement, None).permute(0, 2, 3, 1) * scale
        out.append(displacement)
    if not out:
        return velocity.new_zeros(n, 0, 2, h, w)
    return (torch.stack(out, dim=1) / scale).permute(0, 1, 4, 2, 3).contiguous()


def warp(fields: torch.Tensor, displacement: torch.Tensor, *, outval: float | None = 0.0) -> torch.Tensor:
    """``fields`` moved by ``displacement``: ``out[..., p] = fields[..., p + D(p)]``, bilinear.

    Parameters
    ----------
    fields : (..., H, W) or (..., C, H, W) when ``displacement`` has one leading axis fewer
        (C fields moved alike).
    displacement : (..., 2, H, W); zero rows move nothing.
    outval : value of cells whose departure point lies beyond the grid (None: the nearest edge value).
    """
    h, w = fields.shape[-2:]
    lead = displacement.shape[:-3]
    if displacement.shape[-3:] != (2, h, w) or fields.shape[:len(lead)] != lead:
        raise ValueError(f"displacement must be (..., 2, {h}, {w}) with the leading shape of fields "
                         f"{tuple(fields.shape)}, got {tuple(displacement.shape)}")
    channels = int(np.prod(fields.shape[len(lead):-2], dtype=np.int64))
    base, scale = _base((h, w), fields.device)
    grid = base + displacement.reshape(-1, 2, h, w).float().permute(0, 2, 3, 1) * scale
    flat = fields.reshape(-1, channels, h, w).float()
    return _sample(flat, grid, outval).to(fields.dtype).reshape(fields.shape)


def input_displacements(velocity: torch.Tensor, t_in: int) -> torch.Tensor:
    """(N, t_in, 2, H, W): input frame ``i`` is advected ``t_in - 1 - i`` steps (the last not at all)."""
    forward = displacements(velocity, t_in - 1)
    zero = torch.zeros_like(velocity)[:, None]
    return torch.cat((forward.flip(1), zero), dim=1)


def to_lagrangian(x: torch.Tensor, velocity: torch.Tensor, *, outval: float = 0.0) -> torch.Tensor:
    """(B, T_in, H, W) inputs advected to the time of the last one along ``velocity`` (B, 2, H, W)."""
    return warp(x, input_displacements(velocity, x.shape[1]), outval=outval)


def to_lagrangian_targets(y: torch.Tensor, velocity: torch.Tensor, *, outval: float = 0.0) -> torch.Tensor:
    """(B, T_out, H, W) future frames advected back to the time of the last input (along ``-V``)."""
    return warp(y, displacements(-velocity, y.shape[1]), outval=outval)


def from_lagrangian(leads: torch.Tensor, displacement: torch.Tensor, *, outval: float = 0.0) -> torch.Tensor:
    """(B, K, T_out, H, W) forecasts in the moving frame back on the ground, member ``k`` lead ``l``
    moved by ``displacement`` (B, K, T_out, 2, H, W) (:func:`member_displacements`)."""
    return warp(leads, displacement, outval=outval)


def bps_perturbation(velocity: torch.Tensor, eps: torch.Tensor, *, steps: int, step_minutes: float,
                     cell_km: float, spread: float) -> torch.Tensor:
    """STEPS' ``bps`` motion perturbations of each member at each lead.

    Parameters
    ----------
    velocity : (B, 2, H, W) cells per step.
    eps : (B, K, 2) per member the parallel and perpendicular draws (Laplace, unit variance).
    steps : leads.
    step_minutes, cell_km : time step and cell size (cells per step <-> km/h).
    spread : scale of pysteps' perturbation sizes (1.0: pysteps; 0: none).

    Returns
    -------
    (B, K, steps, 2, H, W) cells per step.
    """
    norm = velocity.norm(dim=1, keepdim=True)
    unit = torch.where(norm > 1e-12, velocity / norm.clamp(min=1e-12), torch.zeros_like(velocity))
    across = torch.stack((-unit[:, 1], unit[:, 0]), dim=1)
    t = step_minutes * torch.arange(1, steps + 1, dtype=torch.float32, device=velocity.device)
    size = [a * t**b + c for a, b, c in (BPS_PARALLEL, BPS_PERPENDICULAR)]  # km/h per lead
    kmh_to_cells = step_minutes / (60.0 * cell_km)
    par = spread * kmh_to_cells * size[0][None, None, :] * eps[:, :, None, 0]  # (B, K, steps)
    perp = spread * kmh_to_cells * size[1][None, None, :] * eps[:, :, None, 1]
    return (par[..., None, None, None] * unit[:, None, None]
            + perp[..., None, None, None] * across[:, None, None])


def laplace_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """Unit-variance Laplace draws from uniform ones in (0, 1) (scale 1 / sqrt 2, as pysteps)."""
    centred = u - 0.5
    return -torch.sign(centred) * torch.log1p(-2 * centred.abs()) / 2**0.5


def member_displacements(velocity: torch.Tensor, steps: int, *, eps: torch.Tensor | None = None,
                         step_minutes: float | None = None, cell_km: float | None = None,
                         spread: float = 0.0) -> torch.Tensor:
    """(B, K, steps, 2, H, W) displacements of every member's leads; without perturbations
    (``spread`` 0 or no ``eps``) all members share the unperturbed ones (K = 1 then)."""
    if spread <= 0 or eps is None:
        return displacements(velocity, steps)[:, None]
    if step_minutes is None or cell_km is None:
        raise ValueError("motion perturbations need step_minutes and cell_km")
    b, k = eps.shape[:2]
    perturbation = bps_perturbation(velocity, eps, steps=steps, step_minutes=step_minutes,
                                    cell_km=cell_km, spread=spread)
    repeated = velocity[:, None].expand(b, k, *velocity.shape[1:]).reshape(b * k, *velocity.shape[1:])
    out = displacements(repeated, steps, perturbation.reshape(b * k, steps, *velocity.shape[1:]))
    return out.reshape(b, k, steps, *velocity.shape[1:])
