"""pysteps baselines: STEPS ensemble and Lagrangian extrapolation nowcasts.

pysteps is an optional dependency (``pip install 'nowcast[eval]'``) imported inside the
functions. The recipe follows the pysteps STEPS example: rain rates are transformed to dB
(``10 log10 R`` with R < 0.1 mm/h set to -15 dB), no-data cells get that zero value before
motion estimation, motion is dense Lucas-Kanade, and the forecast is transformed back.
"""

from __future__ import annotations

import contextlib
import io
import logging
from types import ModuleType

import numpy as np

from model.lagrangian import import_pysteps

logger = logging.getLogger(__name__)

RAIN_THRESHOLD_MMH = 0.1  # below this a cell is dry
ZERO_VALUE_DB = -15.0  # dB value given to dry and no-data cells


def _import_pysteps() -> ModuleType:
    return import_pysteps()


def _check_frames(frames_mmh: np.ndarray, min_frames: int) -> np.ndarray:
    frames = np.asarray(frames_mmh, dtype=np.float64)
    if frames.ndim != 3 or frames.shape[0] < min_frames:
        raise ValueError(
            f"frames_mmh must have shape (T_in, H, W) with T_in >= {min_frames}, got {frames.shape}"
        )
    return frames


def _db_and_motion(pysteps: ModuleType, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T_in, H, W) mm/h -> (T_in, H, W) dB with NaN filled, and (2, H, W) motion in px/step."""
    from pysteps.utils.transformation import dB_transform

    with np.errstate(invalid="ignore", divide="ignore"):
        frames_db, _ = dB_transform(
            frames.copy(), threshold=RAIN_THRESHOLD_MMH, zerovalue=ZERO_VALUE_DB
        )
    frames_db[~np.isfinite(frames_db)] = ZERO_VALUE_DB
    with contextlib.redirect_stdout(io.StringIO()):
        velocity = pysteps.motion.get_method("LK")(frames_db)
    return frames_db, velocity


def steps_nowcast(
    frames_mmh: np.ndarray,
    *,
    n_members: int,
    n_leadtimes: int,
    timestep_minutes: int,
    km_per_pixel: float = 4.0,
    seed: int | None = None,
) -> np.ndarray:
    """STEPS ensemble nowcast (Bowler et al. 2006; Seed et al. 2013) with pysteps.

    Parameters
    ----------
    frames_mmh : np.ndarray
        (T_in, H, W) rain rate in mm/h, oldest first, T_in >= 3; NaN = no data.
    n_members, n_leadtimes : int
        Ensemble size and number of forecast steps of ``timestep_minutes``.
    timestep_minutes : int
        Time between input frames, also the forecast step.
    km_per_pixel : float
        Grid spacing in km.
    seed : int, optional
        Seed of the noise and velocity perturbations.

    Returns
    -------
    np.ndarray
        (n_members, n_leadtimes, H, W) float32 rain rate in mm/h, 0 below 0.1 mm/h; NaN
        where the advection brings in values from outside the domain.
    """
    pysteps = _import_pysteps()
    frames = _check_frames(frames_mmh, 3)
    if n_members < 1 or n_leadtimes < 1:
        raise ValueError("n_members and n_leadtimes must be >= 1")
    frames_db, velocity = _db_and_motion(pysteps, frames)
    threshold_db = 10.0 * np.log10(RAIN_THRESHOLD_MMH)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):  # pysteps reports its settings with print
        forecast_db = pysteps.nowcasts.get_method("steps")(
            frames_db[-3:],  # ar_order 2 needs 3 frames
            velocity,
            n_leadtimes,
            n_ens_members=n_members,
            n_cascade_levels=6,
            precip_thr=threshold_db,
            kmperpixel=km_per_pixel,
            timestep=timestep_minutes,
            noise_method="nonparametric",
            vel_pert_method="bps",
            mask_method="incremental",
            probmatching_method="cdf",
            seed=seed,
            num_workers=1,
        )
    logger.debug("pysteps STEPS output:\n%s", stdout.getvalue())
    forecast = 10.0 ** (forecast_db / 10.0)
    forecast[forecast < RAIN_THRESHOLD_MMH] = 0.0  # NaN compares False and stays NaN
    return forecast.astype(np.float32)


def extrapolation_nowcast(frames_mmh: np.ndarray, *, n_leadtimes: int) -> np.ndarray:
    """Lagrangian persistence: Lucas-Kanade motion + semi-Lagrangian advection of the last frame.

    Parameters
    ----------
    frames_mmh : np.ndarray
        (T_in, H, W) rain rate in mm/h, oldest first, T_in >= 2; NaN = no data.
    n_leadtimes : int
        Number of forecast steps (each the input frame spacing).

    Returns
    -------
    np.ndarray
        (n_leadtimes, H, W) float32 rain rate in mm/h; NaN for no data and for cells
        advected in from outside the domain.
    """
    pysteps = _import_pysteps()
    frames = _check_frames(frames_mmh, 2)
    if n_leadtimes < 1:
        raise ValueError("n_leadtimes must be >= 1")
    _, velocity = _db_and_motion(pysteps, frames)
    forecast = pysteps.nowcasts.get_method("extrapolation")(
        frames[-1],
        velocity,
        n_leadtimes,
        extrap_kwargs={"allow_nonfinite_values": True},
    )
    return np.asarray(forecast, dtype=np.float32)
