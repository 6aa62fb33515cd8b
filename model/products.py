"""Ensemble products in physical units and their CF-netCDF layout (OPERATIONS.md).

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


def ensemble_dataset(members: np.ndarray, *, timestep_minutes: int,
                     reference_time: np.datetime64 | None = None,
                     thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                     model_version: str = "unknown", y: np.ndarray | None = None,
                     x: np.ndarray | None = None):
    """CF-netCDF-ready ``xarray.Dataset`` of an ensemble nowcast.

    Parameters
    ----------
    members : (K, T, H, W) rain rate in mm/h.
    timestep_minutes : lead-time step; lead times are ``timestep_minutes * (1..T)``.
    reference_time : forecast reference time (time of the last input frame), UTC.
    thresholds : mm/h thresholds of the probability variable.
    y, x : (H,), (W,) projection coordinates; cell indices when None.
    """
    import xarray as xr

    k, t, h, w = members.shape
    lead = np.arange(1, t + 1) * timestep_minutes * 60
    ref = np.datetime64(reference_time or "1970-01-01T00:00", "ns")
    valid = ref + lead.astype("timedelta64[s]")
    rate = {"standard_name": "lwe_precipitation_rate", "units": "mm h-1"}
    coords = {
        "realization": np.arange(k),
        "time": ("time", valid),
        "forecast_period": ("time", lead.astype(np.int32), {"units": "s"}),
        "forecast_reference_time": ref,
        "y": ("y", np.arange(h) if y is None else y),
        "x": ("x", np.arange(w) if x is None else x),
        "threshold": ("threshold", np.asarray(thresholds, np.float32),
                      {**rate, "spp__relative_to_threshold": "greater_than_or_equal_to"}),
        "percentile": ("percentile", np.asarray(PERCENTILES, np.float32)),
    }
    dims = ("time", "y", "x")
    data = {
        "precipitation_rate": (("realization", *dims), members.astype(np.float32), rate),
        "precipitation_rate_mean": (dims, members.mean(axis=0).astype(np.float32), rate),
        "precipitation_rate_percentile": (
            ("percentile", *dims),
            np.percentile(members, PERCENTILES, axis=0).astype(np.float32), rate),
        "probability_of_lwe_precipitation_rate_above_threshold": (
            ("threshold", *dims), exceedance_probability(members, thresholds), {"units": "1"}),
    }
    return xr.Dataset(data, coords=coords, attrs={
        "Conventions": "CF-1.8",
        "title": "STLDM ensemble precipitation nowcast",
        "source": f"STLDM {model_version}",
        "references": "Foo et al., STLDM, TMLR (arXiv 2512.21118)",
    })
