"""The small scales the latent model cannot carry: persisted, or renewed member by member.

The VAE of the ``small`` preset (4x in space) does not give back everything; what it misses (small
cells, sharp edges) is the *detail* of the last input frame, its pixels minus the decoding of
its latent. Persisting that detail unchanged in every member keeps the members' texture but
makes it an error they all share. As pysteps' STEPS does with the small cascade levels, the
detail can instead decorrelate with lead time: member ``k`` carries the AR(1) process

    d_k(0) = detail,    d_k(l) = phi * d_k(l - 1) + sqrt(1 - phi^2) * e_k(l),
    phi = exp(-dt / lifetime),

whose innovations ``e_k(l)`` are noise with the detail's power spectrum (white noise filtered
by it, as pysteps' nonparametric noise generator does) and its local amplitude, drawn by the
member's own generator. Its correlation
with the observed detail is ``exp(-l / lifetime)`` and its variance stays that of the detail.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from model.options import DETAILS  # noqa: F401  (re-exported: the choices live with the options)
from model.pairs import mirrored

ENVELOPE_CELLS = 9  # side of the box over which the detail's local amplitude is measured


def local_amplitude(detail: torch.Tensor, cells: int = ENVELOPE_CELLS) -> torch.Tensor:
    """(B, H, W) -> (B, H, W): root mean square of the detail over a ``cells`` box around each cell."""
    power = F.avg_pool2d(detail.square()[:, None], cells, stride=1, padding=cells // 2,
                         count_include_pad=False)
    return power[:, 0].sqrt()


def noise_filter(detail: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What :func:`shaped_noise` needs of the detail, computed once for all members and leads.

    Parameters
    ----------
    detail : (B, H, W) pixels.

    Returns
    -------
    (B, H, W // 2 + 1) the amplitude spectrum without its mean, scaled so that it turns unit
    white noise into unit-variance noise (Parseval: the filtered noise has variance ``H W var``
    of the detail), and (B, H, W) the detail's local amplitude.
    """
    spectrum = torch.fft.rfft2(detail).abs()
    spectrum[..., 0, 0] = 0  # no mean
    scale = detail.shape[-1] * detail.shape[-2] * detail.var(dim=(-2, -1), unbiased=False)
    spectrum = spectrum / scale.sqrt().clamp(min=1e-12)[:, None, None]
    return spectrum, local_amplitude(detail)


def shaped_noise(spectrum: torch.Tensor, amplitude: torch.Tensor, white: torch.Tensor) -> torch.Tensor:
    """Noise shaped like the detail: its power spectrum, then its local amplitude.

    Parameters
    ----------
    spectrum, amplitude : :func:`noise_filter` of the detail, (B, H, W // 2 + 1) and (B, H, W).
    white : (B, K, H, W) standard normal draws.

    Returns
    -------
    (B, K, H, W) pixels, zero mean, of the detail's local amplitude.
    """
    shaped = torch.fft.irfft2(torch.fft.rfft2(white) * spectrum[:, None], s=white.shape[-2:])
    return shaped * amplitude[:, None]


def renewed_detail(detail: torch.Tensor, generators: Sequence[torch.Generator], *, leads: int,
                   step_minutes: float, lifetime: float, antithetic: bool = False) -> torch.Tensor:
    """Every member's detail at every lead: the AR(1) process of the module docstring.

    Parameters
    ----------
    detail : (B, H, W) the last input frame's detail, pixels.
    generators : B * K CPU generators, request-major (member ``k`` of request ``b`` is
        ``b * K + k``); each draws its member's innovations, lead after lead.
    leads : number of lead times T.
    step_minutes : minutes between leads.
    lifetime : minutes, > 0; the e-folding time of the correlation with the observed detail.
    antithetic : member ``2j + 1`` takes the negated innovations of member ``2j``
        (:mod:`model.pairs`); the draws of its own generator are discarded.

    Returns
    -------
    (B, K, T, H, W) pixels.
    """
    if lifetime <= 0:
        raise ValueError(f"lifetime must be > 0 minutes, got {lifetime}")
    b, height, width = detail.shape
    if len(generators) % b:
        raise ValueError(f"generators must be K per request, got {len(generators)} for {b} requests")
    members = len(generators) // b
    phi = math.exp(-step_minutes / lifetime)
    detail = detail.float()
    out = detail.new_empty((b, members, leads, height, width))
    spectrum, amplitude = noise_filter(detail)
    previous = detail[:, None].expand(b, members, height, width)
    for lead in range(leads):  # members stay batched; one draw per member and lead keeps memory flat
        white = torch.stack([torch.randn((height, width), generator=g) for g in generators])
        white = white.reshape(b, members, height, width)
        if antithetic:
            white = mirrored(white)
        white = white.to(detail.device)
        innovation = shaped_noise(spectrum, amplitude, white)
        previous = phi * previous + math.sqrt(1 - phi**2) * innovation
        out[:, :, lead] = previous
    return out
