"""The end-to-end STLDM objective (STLDM.md section 5) and the training strategies.

Loss = L_VAE (MSE of decoded samples + 1e-6 KL) + L_C (MSE of the decoded first estimate)
     + L_diffusion (gamma(t)-weighted v-MSE) + L_prior (KL of x_T given x_0 against N(0, I)).

Option ``intensity_loss`` (a proposed reading of SSLDM-ISI, docs/OPTIONS.md) replaces the VAE's
MSE by an intensity-weighted MSE plus per-threshold soft-BCE structure terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.vae import reparameterise

# what each training strategy keeps fixed (submodules of STLDM); :func:`apply_strategy` says why
FROZEN_PARTS = {"end_to_end": (), "frozen_vae": ("vae",), "frozen_vae_translator": ("vae", "translator"),
                "translator": ("vae", "denoiser"), "vae": ("translator", "denoiser"),
                "decoder": ("vae.encoder", "translator", "denoiser")}
STRATEGIES = tuple(FROZEN_PARTS)
RECONSTRUCTION_ONLY = ("vae", "decoder")  # strategies that skip the translator and the denoiser
COND_DROPS = ("sample", "batch")
KL_WEIGHT = 1e-6
# intensity_loss (proposal): w(x) = 1 + sum_k a_k [x >= tau_k] with every a_k = INTENSITY_GAIN;
# structure: STRUCTURE_WEIGHT x mean over k of BCE(sigmoid((x_hat - tau_k) / s), [x >= tau_k]).
INTENSITY_GAIN = 1.0
STRUCTURE_SCALE = 0.02  # s in pixels (1.4 dBZ on the default transform)
STRUCTURE_WEIGHT = 0.01  # a BCE of ~0.7 against reconstruction MSEs of ~0.01 at the start


@dataclass
class LossTerms:
    """Scalar tensors; ``total`` sums the terms that train something under the strategy."""

    total: torch.Tensor
    vae: torch.Tensor
    constraint: torch.Tensor
    diffusion: torch.Tensor
    prior: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {k: float(v.detach()) for k, v in self.__dict__.items()}


def kl_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Mean over elements of KL(N(mean, exp(logvar)) || N(0, 1))."""
    return (0.5 * (logvar.exp() + mean.square() - 1.0 - logvar)).mean()


def masked_mse(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """MSE over the pixels where ``valid`` is True (all pixels when None)."""
    if valid is None:
        return F.mse_loss(pred, target)
    weight = valid.to(pred.dtype)
    return ((pred - target).square() * weight).sum() / weight.sum().clamp(min=1.0)


def intensity_reconstruction(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None,
                             thresholds: tuple[float, ...]) -> torch.Tensor:
    """Intensity-weighted MSE plus soft-BCE exceedance structure (the ``intensity_loss`` option).

    Parameters
    ----------
    pred, target : (...) decoded and true pixels in [0, 1].
    valid : (...) bool, optional; pixels with data.
    thresholds : tau_k in pixels.

    Returns
    -------
    Scalar: mean_valid(w (pred - target)^2) + STRUCTURE_WEIGHT mean_k mean_valid(BCE_k).
    """
    taus = torch.tensor(thresholds, dtype=pred.dtype, device=pred.device)
    above = (target[..., None] >= taus).to(pred.dtype)  # (..., K)
    weight = 1.0 + INTENSITY_GAIN * above.sum(dim=-1)
    mask = torch.ones_like(pred) if valid is None else valid.to(pred.dtype)
    count = mask.sum().clamp(min=1.0)
    weighted = ((pred - target).square() * weight * mask).sum() / count
    logits = (pred[..., None] - taus) / STRUCTURE_SCALE
    bce = F.binary_cross_entropy_with_logits(logits, above, reduction="none").mean(dim=-1)
    return weighted + STRUCTURE_WEIGHT * (bce * mask).sum() / count


def frame_subset(frames: int, count: int, device: torch.device) -> torch.Tensor:
    """Indices of ``count`` frames out of ``frames`` drawn without replacement (all, in order,
    when ``count`` is 0 or not smaller than ``frames``)."""
    if count <= 0 or count >= frames:
        return torch.arange(frames, device=device)
    return torch.randperm(frames, device=device)[:count].sort().values


def apply_strategy(model, strategy: str) -> list[torch.nn.Parameter]:
    """Freeze the parts the strategy keeps fixed; return the parameters left to train.

    "end_to_end" trains everything (the paper's default C); "frozen_vae" freezes the VAE (B);
    "frozen_vae_translator" trains the denoiser alone on a fixed VAE and translator; "translator"
    trains the translator alone (its constraint, and the diffusion loss through the condition it
    gives the fixed denoiser), so that an ensemble-tuned denoiser is kept; "vae" trains
    the VAE alone on its reconstruction (the VAE part of the paper's A, each part trained alone);
    "decoder" trains the VAE's decoder alone on its reconstruction: the latents, and so the
    translator and the denoiser trained on them, stay valid.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    for name in ("vae", "translator", "denoiser"):
        model.get_submodule(name).requires_grad_(True)
    for name in FROZEN_PARTS[strategy]:
        model.get_submodule(name).requires_grad_(False).eval()  # fixed BatchNorm statistics too
    return [p for p in model.parameters() if p.requires_grad]


def stldm_loss(model, x: torch.Tensor, y: torch.Tensor, *, strategy: str = "end_to_end",
               valid: torch.Tensor | None = None, cond_drop: str = "sample",
               step: torch.Tensor | None = None, pixel_frames: int = 0) -> LossTerms:
    """One evaluation of the objective on a batch.

    Parameters
    ----------
    model : STLDM (training mode for the parts being trained).
    x : (B, T_in, H, W) input frames, pixels in [0, 1].
    y : (B, T_out, H, W) ground-truth future frames, pixels in [0, 1].
    strategy : one of ``STRATEGIES``; frozen parts add no term to ``total``.
    valid : (B, T_in + T_out, H, W) bool, optional; pixels with data. Reconstruction terms
        ignore the others (no-data is not dry).
    cond_drop : "sample" drops the condition per sample with probability
        ``config.diffusion.cond_drop_prob``; "batch" decides once per batch as the reference.
    step : (B,) minutes between the frames of each window, optional; for a model with a step
        embedding.
    pixel_frames : decode only this many frames, drawn at random (torch's global RNG) for the
        two pixel-space terms (the VAE reconstruction among all frames, the constraint loss
        among the future ones); 0 decodes every frame, as the paper. The draw is the same for
        the whole batch, so each term is an unbiased estimate of its full-frame value at a
        fraction of the cost: decoding at full resolution is most of a small model's step.

    Future frames without any valid pixel (a window shorter than ``T_out`` leads, padded) add
    nothing to the diffusion loss either.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if cond_drop not in COND_DROPS:
        raise ValueError(f"cond_drop must be one of {COND_DROPS}, got {cond_drop!r}")
    config, scheduler = model.config, model.scheduler
    b, t_in, height, width = x.shape
    t_out = y.shape[1]
    frames = torch.cat((x, y), dim=1)  # (B, T_in + T_out, H, W)
    valid_out = None if valid is None else valid[:, t_in:]

    # VAE: encode every frame once; the same moments serve all terms below.
    mean, logvar = model.vae.encode(frames.reshape(-1, 1, height, width))
    every = frames.shape[1]
    pick = frame_subset(every, pixel_frames, frames.device)
    latents = reparameterise(mean, logvar).reshape(b, every, *mean.shape[1:])[:, pick]
    recon = model.vae.decode(latents.flatten(0, 1)).reshape(b, len(pick), height, width)
    target = frames[:, pick]
    target_valid = None if valid is None else valid[:, pick]
    if config.options.intensity_loss:
        recon_term = intensity_reconstruction(recon, target, target_valid, config.intensity_pixels())
    else:
        recon_term = masked_mse(recon, target, target_valid)
    vae_term = recon_term + KL_WEIGHT * kl_standard_normal(mean, logvar)
    if strategy in RECONSTRUCTION_ONLY:  # nothing else trains: skip the translator and the denoiser
        zero = vae_term.new_zeros(())
        return LossTerms(total=vae_term, vae=vae_term, constraint=zero, diffusion=zero, prior=zero)
    mean = mean.reshape(b, t_in + t_out, *mean.shape[1:])
    logvar = logvar.reshape(mean.shape)

    # Translator: first estimate from sampled input latents; L_C on its decoding.
    z_in = reparameterise(mean[:, :t_in], logvar[:, :t_in])
    mu, mu_logvar = model.translator(z_in, step)
    estimate = reparameterise(mu, mu_logvar)
    leads = frame_subset(t_out, pixel_frames, x.device)
    decoded = model.vae.decode(estimate[:, leads].flatten(0, 1)).reshape(b, len(leads), height, width)
    constraint = masked_mse(decoded, y[:, leads], None if valid_out is None else valid_out[:, leads])

    # Diffusion on the encoder means of the future frames, conditioned on mu (not detached).
    x0 = mean[:, t_in:].detach()
    steps = torch.randint(0, scheduler.num_train_steps, (b,), device=x.device)
    noise = torch.randn_like(x0)
    x_t = scheduler.add_noise(x0, noise, steps)
    p = config.diffusion.cond_drop_prob
    if cond_drop == "batch":
        null = torch.full((b,), bool(torch.rand(()) < p), device=x.device)
    else:
        null = torch.rand(b, device=x.device) < p
    extra = model.extra_condition(x, z_in)  # options' extra condition, dropped with mu
    v = model.denoiser(x_t, steps, mu, null=null, extra=extra, step=step)
    per_frame = (v - scheduler.v_target(x0, noise, steps)).square().flatten(2).mean(dim=2)  # (B, T_out)
    if valid_out is None:
        per_sample = per_frame.mean(dim=1)
    else:  # frames with no data at all (past the end of a short window) are left out
        present = valid_out.flatten(2).any(dim=2).to(per_frame.dtype)
        per_sample = (per_frame * present).sum(dim=1) / present.sum(dim=1).clamp(min=1.0)
    diffusion = (per_sample * scheduler.loss_weight(steps)).mean()

    # Prior: q(x_T | x_0) against N(0, I) at the last training step.
    last = torch.full((b,), scheduler.num_train_steps - 1, dtype=torch.long, device=x.device)
    ones = torch.ones_like(x0)
    prior_mean = scheduler.add_noise(x0, torch.zeros_like(x0), last)
    prior_logvar = 2 * torch.log(scheduler.add_noise(torch.zeros_like(x0), ones, last))
    prior = kl_standard_normal(prior_mean, prior_logvar)

    total = diffusion + prior
    if strategy == "end_to_end":
        total = total + vae_term + constraint
    elif strategy in ("frozen_vae", "translator"):
        total = total + constraint
    return LossTerms(total=total, vae=vae_term, constraint=constraint, diffusion=diffusion,
                     prior=prior)
