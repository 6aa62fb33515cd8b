"""Antithetic members: perturbations drawn in mirrored pairs.

With ``antithetic`` on, member ``2j + 1`` of a request takes the mirror image of member ``2j``'s
draws: the negated starting noise of the denoiser and innovations of the renewed detail, and
the opposite motion perturbation. Each pair is centred on what the unperturbed forecast would
give, so ten members spread around it without the chance offset of ten independent draws, as
ECMWF's ensemble pairs its initial perturbations with their negatives (``+/-``). The draws still
come from member ``2j``'s own generators, so a member does not depend on its batch-mates; an
odd last member keeps its own draws.
"""

from __future__ import annotations

import torch


def mirrored(draws: torch.Tensor, centre: float = 0.0) -> torch.Tensor:
    """Member ``2j + 1`` of ``draws`` replaced, in place, by the mirror image of member ``2j``.

    Parameters
    ----------
    draws : (B, K, ...) draws per request and member.
    centre : the point they are mirrored about: 0 for standard normal draws (``-e``), 0.5 for
        uniform ones in (0, 1) (``1 - u``, which mirrors the Laplace draws made from them).

    Returns
    -------
    ``draws`` itself.
    """
    members = draws.shape[1]
    draws[:, 1::2] = 2 * centre - draws[:, 0:members - members % 2:2]
    return draws
