"""Validation during training: loss terms and a cheap ensemble skill check on validation windows.

The skill check scores with the verification package (``verification.ensemble_metrics``), in
model pixels and in the frame the model was trained in: the fair CRPS of the ensemble, and the
mean absolute error of the first estimate and of persistence (the CRPS of a one-member forecast).

Only the validation split of ``training.data`` comes here, never test windows. Every call
draws the same diffusion steps, noise and latents (a fixed seed inside a forked RNG), so
successive validations compare the weights and not the draws, and training's own random
streams are left untouched.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from training.objective import stldm_loss
from verification.ensemble_metrics import CRPSAccumulator


@torch.no_grad()
def validate(model, batches: Iterable[dict], *, strategy: str, max_batches: int, members: int,
             steps: int, seed: int, device: torch.device, autocast: bool,
             skill_batches: int = 1) -> dict[str, float]:
    """Mean validation metrics of ``model`` (left in eval mode; the caller restores training mode).

    Parameters
    ----------
    batches : loader of dicts with "x" (B, T_in, H, W), "y" (B, T_out, H, W), pixels in [0, 1],
        and "valid" (B, T_in + T_out, H, W) bool.
    max_batches : number of batches for the loss terms.
    members, steps : ensemble size and DDIM steps of the skill check (``members = 0`` skips it).
    skill_batches : the skill check runs on this many first batches (at most ``max_batches``)
        and reports the mean of their scores.

    Returns
    -------
    ``loss_<term>`` means over the batches and, averaged over the first ``skill_batches`` batches,
    the fair CRPS in pixels of the ensemble (``crps_ensemble``), of the decoded first estimate
    (``crps_first_estimate``) and of persistence, the last input frame (``crps_persistence``).
    Empty when there are no batches.
    """
    model.eval()
    sums: dict[str, float] = {}
    count = checked = 0
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for batch in batches:
            if count >= max_batches:
                break
            x, y, valid = (batch[k].to(device) for k in ("x", "y", "valid"))
            step = batch["step_minutes"].to(device).float() if "step_minutes" in batch else None
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                terms = stldm_loss(model, x, y, strategy=strategy, valid=valid, step=step).as_floats()
            for name, value in terms.items():
                sums[f"loss_{name}"] = sums.get(f"loss_{name}", 0.0) + value
            if checked < skill_batches and members > 0:
                for name, value in skill(model, x, y, valid[:, x.shape[1]:], step, members=members,
                                         steps=steps, seed=seed, autocast=autocast).items():
                    sums[name] = sums.get(name, 0.0) + value
                checked += 1
            count += 1
    return {k: v / (count if k.startswith("loss_") else checked) for k, v in sums.items()}


def skill(model, x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, step: torch.Tensor | None, *,
          members: int, steps: int, seed: int, autocast: bool) -> dict[str, float]:
    """Fair CRPS of the ensemble, and of the first estimate and persistence (their MAE), in model
    pixels against ``y`` (B, T_out, H, W) where ``valid``; ``step`` (B,) minutes between frames,
    optional (windows of one step are forecast together)."""
    dtype = torch.bfloat16 if autocast else None
    first = torch.empty_like(y)
    ensemble = torch.empty(members, *y.shape, dtype=y.dtype, device=y.device)
    step = torch.zeros(len(x)) if step is None else step
    for value in step.unique().tolist():
        rows = step == value
        minutes = int(value) if model.config.step_minutes and value else None
        forecast = model.forecast(x[rows], members=members, steps=steps, seed=seed, autocast_dtype=dtype,
                                  step_minutes=minutes)
        first[rows], ensemble[:, rows] = forecast.first_estimate, forecast.members.transpose(0, 1)
    persistence = x[:, -1:].expand_as(y)
    scores = {}
    for name, forecast_members in (("crps_ensemble", ensemble), ("crps_first_estimate", first[None]),
                                   ("crps_persistence", persistence[None])):
        accumulator = CRPSAccumulator(y.shape[1])
        for b in range(len(y)):
            accumulator.add(forecast_members[:, b].float().cpu().numpy(), y[b].float().cpu().numpy(),
                            valid[b].cpu().numpy())
        scores[name] = float(accumulator.scores(over_leads=True))
    return scores
