"""Ensemble products in physical units (their CF-netCDF layout: ``radar.cf``).

Members are converted to rain rate; exceedance probabilities follow pysteps ``excprob``
semantics (fraction of members at or above the threshold).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_THRESHOLDS = (0.1, 1.0, 5.0, 10.0, 20.0, 50.0)
PERCENTILES = (10, 50, 90)


def exceedance_probability(members: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """(K, T, H, W) rain rate mm/h -> (len(thresholds), T, H, W) P(R >= threshold) in [0, 1]."""
    return np.stack([(members >= thr).mean(axis=0) for thr in thresholds]).astype(np.float32)


def ensemble_products(members: np.ndarray, thresholds: Sequence[float]) -> dict[str, np.ndarray]:
    """Ensemble mean, percentiles and exceedance probabilities of rain-rate members.

    Parameters
    ----------
    members : (K, T, H, W) rain rate in mm/h; NaN cells give NaN products.
    thresholds : mm/h thresholds of P(R >= threshold) (pysteps ``excprob`` semantics).

    Returns
    -------
    ``mean`` (T, H, W) mm/h; ``percentiles`` (len(PERCENTILES), T, H, W) mm/h for
    :data:`PERCENTILES`; ``probability`` (len(thresholds), T, H, W) in [0, 1];
    ``thresholds`` (len(thresholds),) mm/h. All float32.
    """
    members = np.asarray(members, dtype=np.float32)
    if members.ndim != 4:
        raise ValueError(f"members must be (K, T, H, W), got shape {members.shape}")
    if len(thresholds) == 0:
        raise ValueError("thresholds must hold at least one rain rate in mm/h")
    nodata = np.isnan(members).any(axis=0)
    probability = exceedance_probability(members, thresholds)
    probability[:, nodata] = np.nan
    return {
        "mean": members.mean(axis=0).astype(np.float32),
        "percentiles": np.percentile(members, PERCENTILES, axis=0).astype(np.float32),
        "probability": probability,
        "thresholds": np.asarray(thresholds, dtype=np.float32),
    }


def to_rain_rate(members: np.ndarray, transform) -> np.ndarray:
    """(...) model pixels in [0, 1] -> (...) rain rate in mm/h through the checkpoint's
    :class:`model.transform.PixelTransform`; pixels are clipped to [0, 1] first (decoder
    overshoot is not rain)."""
    return transform.from_pixel(np.clip(members, 0.0, 1.0), "mm/h")
