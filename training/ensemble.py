"""An ensemble objective: the fair CRPS, in mm/h, of the members the sampler makes.

The diffusion loss teaches the denoiser one noise level at a time; nothing in it scores the
ensemble the service returns, and on the CPU runs lower diffusion loss stopped meaning better
members (README, Training). This term does: for every window it samples ``members`` members with
the service's few-step DDIM loop (:func:`model.sampler.ddim_latents`, guidance ``guidance`` on
the first ``GUIDANCE_SHARE`` of the steps, gradients through every step and the translator's
condition), decodes some leads, blends them with the last input frame as the service does at
short leads (``w = exp(-lead / blend_minutes)``, in the window's frame: under ``--advection
dense`` that is extrapolation; the members keep ``blend_spread`` of their departures from their
mean as the service's ``blend_spread`` does, :func:`model.sampler.blend_members`, and the blend
goes more and more to the translator's decoded first estimate as its ``estimate_lifetime``
does), adds the last frame's detail renewed member by member as the service's
``detail="renew"`` does (:func:`model.detail.renewed_detail`, the blend then going to the last
frame's decoding), moves each member by its own motion perturbation as the service's
``motion_spread`` does under ``--advection dense`` (:func:`random_shifts`), and scores them
against the truth with the fair CRPS (Ferro et al. 2008), the score
``nowcast evaluate`` reports, in mm/h through the checkpoint's own transform. A proper score
of an ensemble rewards members that are each close to the truth and different from one
another in the way the truth is uncertain: placement and spread together.
"""

from __future__ import annotations

from typing import Any

import torch

from model.detail import renewed_detail
from model.lagrangian import bps_perturbation, laplace_from_uniform, warp
from model.sampler import blend_members, ddim_latents
from model.transform import PixelTransform
from training.objective import frame_subset

GUIDANCE_SHARE = 0.4  # the shipped defaults: guidance on the first 40 % of the steps


def pixels_to_rain(pixels: torch.Tensor, transform: PixelTransform) -> torch.Tensor:
    """(...) pixels -> (...) mm/h by the transform's linear dBZ map and Z-R relation, without the
    dry cut-off (so that a dry member still gets a gradient towards rain)."""
    dbz = pixels * (transform.dbz_max - transform.dbz_min) + transform.dbz_min
    return torch.pow(torch.pow(10.0, dbz / 10.0) / transform.zr_a, 1.0 / transform.zr_b)


def fair_crps(members: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Fair CRPS per cell: members (M, ...) with M >= 2, truth (...) -> (...).

    ``mean_i |x_i - y| - sum_{i<j} |x_i - x_j| / (M (M - 1))``, unbiased for the CRPS of the
    distribution the members are drawn from (what ``verification.ensemble_metrics`` reports).
    """
    m = members.shape[0]
    if m < 2:
        raise ValueError(f"the fair CRPS needs at least 2 members, got {m}")
    error = (members - truth).abs().mean(dim=0)
    pairs = sum((members[i] - members[j]).abs() for i in range(m) for j in range(i + 1, m))
    return error - pairs / (m * (m - 1))


def member_shifts(direction: torch.Tensor, eps: torch.Tensor, t_out: int, *, minutes: list[float],
                  cell_km: float, spread: float) -> torch.Tensor:
    """(B, M, t_out, 2) cells: how far the service's motion perturbations (STEPS' ``bps``,
    :func:`model.lagrangian.bps_perturbation`, ``spread`` times pysteps' sizes) move each member's
    leads from where the unperturbed motion puts them, for rain moving along ``direction``, as
    displacements of :func:`model.lagrangian.warp` (lead ``l`` of the member is its field at
    ``p + D_l``: rain moving along ``+v`` comes from ``p - v``).

    Parameters
    ----------
    direction : (B, 2) unit (x, y) vectors, the rain's direction of motion per window.
    eps : (B, M, 2) per member the parallel and perpendicular draws (Laplace, unit variance).
    minutes : (B,) minutes per step of each window.
    """
    unit = direction[:, :, None, None]  # a uniform field per window
    per_step = torch.cat([bps_perturbation(unit[i:i + 1], eps[i:i + 1], steps=t_out, step_minutes=minutes[i],
                                           cell_km=cell_km, spread=spread) for i in range(len(minutes))])
    return -per_step[..., 0, 0].cumsum(dim=2)  # the drift adds up step by step


def random_shifts(b: int, members: int, t_out: int, *, minutes: list[float], cell_km: float,
                  spread: float) -> torch.Tensor:
    """:func:`member_shifts` of Laplace draws in a random direction per window, from torch's
    global RNG (as the members' starting noise). The service perturbs along the rain's own
    motion, which a window in the moving frame no longer shows; the training windows are rotated
    at random anyway, and the size of the drift, growing with lead time, is what spreads the
    members."""
    angle = 2 * torch.pi * torch.rand(b, 1)
    direction = torch.cat((angle.cos(), angle.sin()), dim=1)
    eps = laplace_from_uniform(torch.rand(b, members, 2, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)).float()
    return member_shifts(direction, eps, t_out, minutes=minutes, cell_km=cell_km, spread=spread)


def sampled_members(model, x: torch.Tensor, *, step: torch.Tensor | None, members: int = 2, steps: int = 5,
                    blend_minutes: float = 90.0, detail_minutes: float = 60.0, pixel_frames: int = 6,
                    guidance: float = 2.0, blend_spread: float = 0.5, estimate_minutes: float = 180.0,
                    motion_spread: float = 0.0, cell_km: float = 4.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``members`` members per window as the service makes them (module docstring), with gradients.

    Parameters
    ----------
    model : STLDM; its VAE is used as it is (train it with another term, or freeze it).
    x : (B, T_in, H, W) input frames, pixels in [0, 1], in the frame the model forecasts in.
    step : (B,) minutes between frames, optional (a model with a step embedding); without it
        leads count 5 minutes each for the blend.
    members, steps : ensemble size (>= 2) and DDIM steps per member.
    blend_minutes : e-folding lead time of the blend with the last input frame (0: none).
    detail_minutes : lifetime of the renewed detail of the last input frame (0: none, and the
        blend goes to the last frame itself). Its noise comes from generators seeded by torch's
        global RNG, as the members' starting noise does.
    pixel_frames : decode only this many leads, drawn at random (0: all).
    guidance : CFG scale of the guided steps (the shipped default 2).
    blend_spread : the share of their departures from the ensemble mean the members keep in the
        blend (:func:`model.sampler.blend_members`; 0: the linear blend).
    estimate_minutes : with the blend, the e-folding lead time of the last frame in what the blend
        goes to, the rest being the translator's decoded first estimate (0: the last frame alone).
    motion_spread : size of the members' motion perturbations (:func:`random_shifts`; 1.0:
        pysteps' sizes, 0: none), as the service's option of that name; ``cell_km`` the grid spacing.

    Returns
    -------
    (B, members, L, H, W) pixels, not clipped to [0, 1], and the (L,) indices of their leads.
    """
    b, t_in, height, width = x.shape
    mean, _ = model.vae.encode(x.reshape(-1, 1, height, width))
    z = mean.reshape(b, t_in, *mean.shape[1:])
    mu, _ = model.translator(z, step)
    t_out = mu.shape[1]
    cond = mu.repeat_interleave(members, dim=0)
    extra = model.extra_condition(x, z)
    latents = ddim_latents(
        model.denoiser, model.scheduler, cond, torch.randn_like(cond), steps=steps, guidance=guidance,
        guidance_share=GUIDANCE_SHARE, step=None if step is None else step.repeat_interleave(members),
        extra=None if extra is None else extra.repeat_interleave(members, dim=0))
    leads = frame_subset(t_out, pixel_frames, x.device)
    picked = latents.reshape(b, members, t_out, *mu.shape[2:])[:, :, leads]
    out = model.vae.decode(picked.flatten(0, 2))[:, 0].reshape(b, members, len(leads), height, width)
    minutes = [5.0] * b if step is None else step.float().tolist()
    anchor = x[:, -1]  # what the blend goes to
    if detail_minutes > 0:
        with torch.no_grad():
            anchor = model.vae.decode(z[:, -1])[:, 0]
            seeds = torch.randint(2**62, (b * members,)).tolist()
            generators = [torch.Generator().manual_seed(seed) for seed in seeds]
            detail = torch.cat([
                renewed_detail((x[i, -1] - anchor[i])[None], generators[i * members:(i + 1) * members],
                               leads=t_out, step_minutes=minutes[i], lifetime=detail_minutes)
                for i in range(b)])[:, :, leads]
    if blend_minutes > 0:
        lead_minutes = torch.tensor(minutes, device=x.device)[:, None] * (leads[None].float() + 1)
        lead_minutes = lead_minutes[:, None, :, None, None]  # (B, 1, L, 1, 1)
        target = anchor[:, None, None]
        if estimate_minutes > 0:  # towards the first estimate as the lead grows
            first = model.vae.decode(mu[:, leads].flatten(0, 1))[:, 0]
            first = first.reshape(b, 1, len(leads), height, width)
            target = torch.lerp(first, target, torch.exp(-lead_minutes / estimate_minutes))
        weight = torch.exp(-lead_minutes / blend_minutes)
        if blend_spread > 0:
            out = blend_members(out, target, weight, blend_spread)
        else:
            out = torch.lerp(out, target.expand_as(out), weight)
    if detail_minutes > 0:
        out = out + detail
    if motion_spread > 0:  # each member drifts by its own perturbation, as the service moves it back
        shift = random_shifts(b, members, t_out, minutes=minutes, cell_km=cell_km, spread=motion_spread)
        shift = shift[:, :, leads].to(out)[..., None, None].expand(*out.shape[:3], 2, height, width)
        out = warp(out, shift, outval=None)  # the edge value beyond the window, not dry cells
    return out, leads


def ensemble_crps(model, x: torch.Tensor, y: torch.Tensor, *, valid: torch.Tensor | None,
                  step: torch.Tensor | None, **sampling: Any) -> torch.Tensor:
    """Mean fair CRPS in mm/h of the :func:`sampled_members` over valid cells of their leads.

    Parameters
    ----------
    model, x, step : as :func:`sampled_members`.
    y : (B, T_out, H, W) truth, pixels in [0, 1], in the frame the model forecasts in.
    valid : (B, T_in + T_out, H, W) bool, optional; cells with data.
    sampling : keyword arguments of :func:`sampled_members` (members, steps, blend_minutes, ...).
    """
    out, leads = sampled_members(model, x, step=step, **sampling)
    transform = model.config.transform
    t_in = x.shape[1]
    rain = pixels_to_rain(out.clamp(0.0, 1.0), transform).transpose(0, 1)  # (M, B, L, H, W)
    score = fair_crps(rain, pixels_to_rain(y[:, leads], transform))
    if valid is None:
        return score.mean()
    weight = valid[:, t_in:][:, leads].to(score.dtype)
    return (score * weight).sum() / weight.sum().clamp(min=1.0)
