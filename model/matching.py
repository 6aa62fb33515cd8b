"""Probability matching of forecast fields to the latest observation (pysteps ``cdf`` method).

Diffusion and regression nowcasts alike lose intensity with lead time: their values are
smoother and weaker than radar (STLDM.md 6; the shipped small model rarely exceeds 1 mm/h).
Operational extrapolation systems correct this by matching each forecast field's empirical
distribution to the distribution of the last observed field: the forecast decides *where* it
rains (the rank of every pixel), the observation *how much* (the values). pysteps STEPS does
this by default (``probmatching_method="cdf"``, ``nonparam_match_empirical_cdf``); here it is
the same rank mapping, vectorised over requests, members and lead times.

Matching is monotone per field, so a member's spatial structure and its ordering of pixels are
unchanged, and it runs in model pixels, which map monotonically to dBZ and mm/h.
"""

from __future__ import annotations

import torch

from model.options import MATCHINGS  # noqa: F401  (re-exported: the choices live with the options)


def match_cdf(fields: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Give every field the empirical distribution of its target.

    Parameters
    ----------
    fields : (B, N, H, W) forecast fields, pixels in [0, 1] (N = members x lead times).
    target : (B, H, W) observed field per request, pixels in [0, 1]; NaN (no data) is ignored,
        and a request with no finite target pixel is returned unchanged.

    Returns
    -------
    (B, N, H, W) fields whose sorted values are the target's sorted values (resampled to H x W
    by linear interpolation of the quantiles when the target has missing pixels), in the order
    of each field's own ranks; ties keep their order.
    """
    if fields.ndim != 4 or target.ndim != 3 or fields.shape[0] != target.shape[0] \
            or fields.shape[-2:] != target.shape[-2:]:
        raise ValueError(f"fields (B, N, H, W) and target (B, H, W) must agree, got "
                         f"{tuple(fields.shape)} and {tuple(target.shape)}")
    b, n, h, w = fields.shape
    flat = fields.reshape(b, n, h * w)
    order = flat.argsort(dim=-1, stable=True)  # (B, N, HW): order[..., j] is the j-th smallest pixel
    out = flat.clone()
    for i in range(b):
        values = target[i].reshape(-1)
        values = values[torch.isfinite(values)].to(fields.dtype).sort().values
        if values.numel() == 0:
            continue
        if values.numel() != h * w:  # quantiles of the observed pixels at the forecast's ranks
            pos = torch.linspace(0, values.numel() - 1, h * w, device=values.device, dtype=values.dtype)
            lo = pos.floor().long()
            hi = (lo + 1).clamp(max=values.numel() - 1)
            frac = pos - lo.to(pos.dtype)
            values = values[lo] * (1 - frac) + values[hi] * frac
        out[i].scatter_(-1, order[i], values.expand(n, -1))  # the j-th smallest gets values[j]
    return out.reshape(b, n, h, w)
