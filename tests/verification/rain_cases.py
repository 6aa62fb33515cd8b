"""Seeded rain-like forecast cases for the tests that compare the scores with pysteps.

A case is a truth and an ensemble of the same kind as ``nowcast evaluate`` scores: rain areas
that are smooth in space with gamma-distributed rates inside and exact zeros outside, values
quantised to 0.1 mm/h (so values exactly on a threshold occur, as in radar products stored on
a grid of levels), several lead times, and a ``valid`` mask that is False outside a radar's
range circle and on a missing block that moves from lead to lead. Where the truth has no data
it is NaN; the members there are NaN or a large false rain rate, which no score may count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter


@dataclass(frozen=True)
class RainCase:
    """One forecast window.

    Attributes
    ----------
    members : np.ndarray
        (K, T, H, W) float32 rain rate in mm/h; NaN or 50 mm/h where ``valid`` is False.
    truth : np.ndarray
        (T, H, W) float32 rain rate in mm/h; NaN where ``valid`` is False.
    valid : np.ndarray
        (T, H, W) bool, False where the truth has no data.
    """

    members: np.ndarray
    truth: np.ndarray
    valid: np.ndarray


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """(T, H, W) Gaussian noise smoothed over 3 cells in space, rescaled to unit variance."""
    x = gaussian_filter(rng.normal(size=shape), (0.0, 3.0, 3.0))
    return x / x.std()


def rain_case(seed: int, *, n_members: int = 8, n_leads: int = 4, size: int = 48,
              drizzle: bool = False) -> RainCase:
    """A seeded rain-like case (see the module docstring).

    Parameters
    ----------
    seed : int
    n_members, n_leads, size : int
        K, T and H = W.
    drizzle : bool
        Give 30 % of the dry truth cells a rate below 0.1 mm/h (0.02, 0.05 or 0.08 mm/h), as a
        radar archive that keeps its weakest echoes, while the members stay exactly 0 there
        (forecasts are cut at 0.1 mm/h).
    """
    rng = np.random.default_rng(seed)
    shape = (n_leads, size, size)
    # rain areas: a smooth latent field above its 55 % quantile (about 45 % wet cells)
    latent = smooth_noise(rng, shape)
    level = np.quantile(latent, 0.55)
    rate = rng.gamma(0.8, 2.5, shape)
    truth = np.where(latent > level, rate, 0.0)
    # members: the same areas moved by their own smooth error, rates off by a lognormal factor
    errors = np.stack([smooth_noise(rng, shape) for _ in range(n_members)])
    member_latent = (latent + 0.6 * errors) / np.hypot(1.0, 0.6)
    members = np.where(member_latent > level,
                       rate * np.exp(0.5 * rng.normal(size=(n_members, *shape))), 0.0)
    truth, members = np.round(truth, 1), np.round(members, 1)
    if drizzle:
        weak = (truth == 0) & (rng.random(shape) < 0.3)
        truth[weak] = rng.choice([0.02, 0.05, 0.08], size=int(weak.sum()))

    rows, cols = np.mgrid[:size, :size]
    in_range = np.hypot(rows - (size - 1) / 2, cols - (size - 1) / 2) <= 0.52 * size
    valid = np.broadcast_to(in_range, shape).copy()
    for t in range(n_leads):  # a 10 x 10 block of missing data, somewhere else at every lead
        r, c = rng.integers(0, size - 10, 2)
        valid[t, r:r + 10, c:c + 10] = False
    truth[~valid] = np.nan
    members[:, ~valid] = np.where(rng.random((n_members, int((~valid).sum()))) < 0.5, np.nan, 50.0)
    return RainCase(members.astype(np.float32), truth.astype(np.float32), valid)
