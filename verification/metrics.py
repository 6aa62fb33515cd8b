"""Deterministic verification scores, accumulated over many forecasts the paper's way.

Every accumulator sums raw counts or sums (per lead time, threshold, pooling or scale) over
all the forecasts it is given, and only its ``scores()`` divides: a score over many windows
is the score of the summed counts, not the mean of per-window scores (STLDM.md 6; pysteps
``verification.detcatscores.det_cat_fct_accum`` and ``spatialscores.fss_accum`` work the
same way). Members of an ensemble can be passed as a leading axis: each member is then
scored against the truth and counted, as in the paper ("no ensemble mean").

Arrays
    ``forecast`` is ``(..., T, H, W)`` and ``truth`` ``(T, H, W)``, both rain rate in mm/h
    (any leading axes of ``forecast``, e.g. members, are summed over); ``valid`` is
    ``(T, H, W)`` bool, False where the truth has no data. Invalid cells never count: they
    are removed from the counts (contingency, errors) or zeroed in both fields before any
    neighbourhood operation (pooling, FSS, SSIM) and left out of the sums.

Undefined scores
    A score whose denominator is 0 (e.g. CSI when neither forecast nor truth has an event,
    an all-dry case) is NaN, never 0 or 1; averages over lead times or thresholds ignore NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from model.transform import PixelTransform

THRESHOLD_UNITS = ("mm/h", "dBZ", "pixel", "pixel255")
# Paper thresholds on the 0-255 pixel scale (STLDM.md 6); pixel = value / 255.
PAPER_THRESHOLDS_255 = {
    "hko7": (84, 117, 140, 158, 185),
    "sevir": (16, 74, 133, 160, 181, 219),
}


@dataclass(frozen=True)
class Threshold:
    """An intensity threshold: ``label`` as given by the user, ``mmh`` in mm/h for scoring."""

    label: str
    mmh: float


def threshold_to_mmh(value: float, unit: str, transform: PixelTransform) -> Threshold:
    """Convert one threshold to mm/h through the checkpoint's transform.

    Parameters
    ----------
    value : float
        Threshold in ``unit``.
    unit : str
        ``"mm/h"``, ``"dBZ"``, ``"pixel"`` (model pixels in [0, 1]) or ``"pixel255"``
        (the paper's 0-255 scale, pixel = value / 255).
    transform : PixelTransform
        dBZ <-> pixel map and Z-R relation of the model.

    Returns
    -------
    Threshold
        Events are ``rain >= mmh``.
    """
    if unit not in THRESHOLD_UNITS:
        raise ValueError(f"unknown threshold unit {unit!r}; valid units: {THRESHOLD_UNITS}")
    if unit == "mm/h":
        mmh = float(value)
    else:
        dbz = value if unit == "dBZ" else transform.pixel_to_dbz(
            np.asarray(value / 255.0 if unit == "pixel255" else value, dtype=np.float32))
        # The Z-R relation without the dry cut-off: a threshold is a level, not a field value.
        mmh = float((10.0 ** (float(dbz) / 10.0) / transform.zr_a) ** (1.0 / transform.zr_b))
    if not np.isfinite(mmh) or mmh <= 0:
        raise ValueError(f"threshold {value} {unit} is {mmh} mm/h; thresholds must be > 0 mm/h")
    label = f"{value:g}/255" if unit == "pixel255" else f"{value:g} {unit}"
    return Threshold(label, mmh)


def max_pool(binary: np.ndarray, kernel: int) -> np.ndarray:
    """Max-pool the last two axes with kernel ``kernel`` and stride ``kernel // 4`` (min 1).

    The paper's CSI_4 / CSI_16 convention (STLDM.md 6): binarise, then max-pool (no padding,
    windows that do not fit are dropped, as ``torch.nn.functional.max_pool2d``), then count.

    Parameters
    ----------
    binary : np.ndarray
        (..., H, W) bool.
    kernel : int
        Pool size in cells; 1 returns ``binary`` unchanged.

    Returns
    -------
    np.ndarray
        (..., (H - kernel) // stride + 1, (W - kernel) // stride + 1) bool.
    """
    if kernel == 1:
        return binary
    if kernel < 1 or kernel > min(binary.shape[-2:]):
        raise ValueError(f"pool kernel must be in [1, {min(binary.shape[-2:])}], got {kernel}")
    stride = max(1, kernel // 4)
    rows = sliding_window_view(binary, kernel, axis=-2)[..., ::stride, :, :].any(axis=-1)
    return np.asarray(sliding_window_view(rows, kernel, axis=-1)[..., ::stride, :].any(axis=-1))


def _lead_sum(x: np.ndarray) -> np.ndarray:
    """(..., T, H, W) -> (T,) float64 sum over every axis but the lead time."""
    return x.reshape(-1, *x.shape[-3:]).sum(axis=(0, 2, 3), dtype=np.float64)


def check_shapes(forecast: np.ndarray, truth: np.ndarray, valid: np.ndarray, n_leads: int) -> None:
    """``ValueError`` unless forecast is (..., T, H, W) and truth, valid (T, H, W), T = n_leads."""
    if truth.ndim != 3 or truth.shape != valid.shape or forecast.shape[-3:] != truth.shape:
        raise ValueError(f"need forecast (..., T, H, W), truth and valid (T, H, W) alike; got "
                         f"{forecast.shape}, {truth.shape}, {valid.shape}")
    if truth.shape[0] != n_leads:
        raise ValueError(f"accumulator holds {n_leads} lead times, got {truth.shape[0]}")


class ContingencyAccumulator:
    """Hits, misses, false alarms and correct negatives per pool size, threshold and lead time.

    Parameters
    ----------
    thresholds : sequence of Threshold
        Events are ``rain >= threshold.mmh``.
    n_leads : int
    pools : sequence of int
        Max-pool kernels (1 = plain counts; 4 and 16 give the paper's CSI_4 and CSI_16).

    Notes
    -----
    Pooled cells: forecast and truth are binarised and set to False where the truth has no
    data, then pooled; a pooled cell counts when any of its cells has data.
    """

    def __init__(self, thresholds: Sequence[Threshold], n_leads: int, *,
                 pools: Sequence[int] = (1, 4, 16)) -> None:
        self.thresholds = list(thresholds)
        self.pools = list(pools)
        self.n_leads = n_leads
        shape = (len(self.pools), len(self.thresholds), n_leads)
        self.hits, self.misses = np.zeros(shape), np.zeros(shape)
        self.false_alarms, self.correct_negatives = np.zeros(shape), np.zeros(shape)

    def add(self, forecast: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> None:
        """Count one forecast: (..., T, H, W) and (T, H, W) mm/h, ``valid`` (T, H, W) bool."""
        check_shapes(forecast, truth, valid, self.n_leads)
        for j, thr in enumerate(self.thresholds):
            f_event = (forecast >= thr.mmh) & valid
            o_event = (truth >= thr.mmh) & valid
            for i, kernel in enumerate(self.pools):
                f, o, v = (max_pool(a, kernel) for a in (f_event, o_event, valid))
                o, v = np.broadcast_to(o, f.shape), np.broadcast_to(v, f.shape)
                self.hits[i, j] += _lead_sum(f & o)
                self.misses[i, j] += _lead_sum(~f & o)
                self.false_alarms[i, j] += _lead_sum(f & ~o & v)
                self.correct_negatives[i, j] += _lead_sum(~f & ~o & v)

    def scores(self, *, over_leads: bool = False) -> dict[str, np.ndarray]:
        """CSI, POD, FAR, HSS as (n_pools, n_thresholds, T) arrays, NaN where undefined.

        ``over_leads=True`` sums the counts over lead times first: (n_pools, n_thresholds).
        """
        h, m, f, c = self.hits, self.misses, self.false_alarms, self.correct_negatives
        if over_leads:
            h, m, f, c = (a.sum(axis=-1) for a in (h, m, f, c))
        with np.errstate(invalid="ignore", divide="ignore"):
            hss_den = (h + m) * (m + c) + (h + f) * (f + c)
            return {
                "csi": np.where(h + m + f > 0, h / (h + m + f), np.nan),
                "pod": np.where(h + m > 0, h / (h + m), np.nan),
                "far": np.where(h + f > 0, f / (h + f), np.nan),
                "hss": np.where(hss_den > 0, 2.0 * (h * c - m * f) / hss_den, np.nan),
            }


class FSSAccumulator:
    """Fractions skill score per scale, threshold and lead time (Roberts and Lean 2008).

    Accumulates, as pysteps ``fss_accum`` does, ``sum (Pf - Po)^2`` and ``sum Pf^2 + Po^2``
    of the neighbourhood fractions ``P = uniform_filter(event, scale)`` (zero outside the
    domain and at no-data cells), summed over the cells with data;
    ``FSS = 1 - sum (Pf - Po)^2 / sum (Pf^2 + Po^2)``.

    Parameters
    ----------
    thresholds : sequence of Threshold
    n_leads : int
    scales : sequence of int
        Neighbourhood sides in cells (odd sizes centre the window exactly).
    """

    def __init__(self, thresholds: Sequence[Threshold], n_leads: int, *,
                 scales: Sequence[int] = (1, 5, 17)) -> None:
        self.thresholds, self.scales, self.n_leads = list(thresholds), list(scales), n_leads
        shape = (len(self.scales), len(self.thresholds), n_leads)
        self.sum_diff_sq, self.sum_ref = np.zeros(shape), np.zeros(shape)

    def add(self, forecast: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> None:
        """Count one forecast: (..., T, H, W) and (T, H, W) mm/h, ``valid`` (T, H, W) bool."""
        from scipy.ndimage import uniform_filter

        check_shapes(forecast, truth, valid, self.n_leads)
        lead_axes = forecast.ndim - 2
        for j, thr in enumerate(self.thresholds):
            f_event = ((forecast >= thr.mmh) & valid).astype(np.float64)
            o_event = ((truth >= thr.mmh) & valid).astype(np.float64)
            for i, scale in enumerate(self.scales):
                size = (1,) * lead_axes + (scale, scale)
                pf = uniform_filter(f_event, size=size, mode="constant", cval=0.0)
                po = uniform_filter(o_event, size=size[-3:], mode="constant", cval=0.0)
                self.sum_diff_sq[i, j] += _lead_sum(np.where(valid, (pf - po) ** 2, 0.0))
                self.sum_ref[i, j] += _lead_sum(np.where(valid, pf**2 + po**2, 0.0))

    def scores(self, *, over_leads: bool = False) -> np.ndarray:
        """(n_scales, n_thresholds, T) FSS, or (n_scales, n_thresholds) with ``over_leads``."""
        d, r = self.sum_diff_sq, self.sum_ref
        if over_leads:
            d, r = d.sum(axis=-1), r.sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(r > 0, 1.0 - d / r, np.nan)


class ErrorAccumulator:
    """Mean absolute and mean squared error per lead time over the cells with data (mm/h)."""

    def __init__(self, n_leads: int) -> None:
        self.n_leads = n_leads
        self.sum_abs, self.sum_sq, self.count = np.zeros(n_leads), np.zeros(n_leads), np.zeros(n_leads)

    def add(self, forecast: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> None:
        """Count one forecast: (..., T, H, W) and (T, H, W) mm/h, ``valid`` (T, H, W) bool."""
        check_shapes(forecast, truth, valid, self.n_leads)
        err = np.where(valid, forecast.astype(np.float64) - np.where(valid, truth, 0.0), 0.0)
        self.sum_abs += _lead_sum(np.abs(err))
        self.sum_sq += _lead_sum(err**2)
        self.count += _lead_sum(np.broadcast_to(valid, forecast.shape))

    def scores(self, *, over_leads: bool = False) -> dict[str, np.ndarray]:
        """``mae`` and ``mse`` (T,) in mm/h and (mm/h)^2, or scalars with ``over_leads``."""
        a, s, n = self.sum_abs, self.sum_sq, self.count
        if over_leads:
            a, s, n = a.sum(), s.sum(), n.sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"mae": np.where(n > 0, a / n, np.nan), "mse": np.where(n > 0, s / n, np.nan)}


def ssim_map(x: np.ndarray, y: np.ndarray, *, data_range: float) -> np.ndarray:
    """Local SSIM (Wang et al. 2004) with an 11 x 11 Gaussian window, sigma 1.5.

    Parameters
    ----------
    x, y : np.ndarray
        (..., H, W) fields in the same unit.
    data_range : float
        Range of the data (1.0 for model pixels), giving C1 = (0.01 L)^2, C2 = (0.03 L)^2.

    Returns
    -------
    np.ndarray
        (..., H - 10, W - 10) SSIM of every window that fits inside the frame (the "valid"
        convolution of the paper's code; scikit-image crops the same 5-cell border).
    """
    from scipy.ndimage import gaussian_filter

    if x.shape[-2] < 11 or x.shape[-1] < 11:
        raise ValueError(f"SSIM needs frames of at least 11 x 11, got {x.shape[-2:]}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    sigma = (0,) * (x.ndim - 2) + (1.5, 1.5)

    def blur(a: np.ndarray) -> np.ndarray:  # truncate 3.5 sigma: radius 5, an 11-cell window
        return gaussian_filter(a, sigma=sigma, truncate=3.5, mode="constant")

    x, y = x.astype(np.float64), y.astype(np.float64)
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    ssim = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return ssim[..., 5:-5, 5:-5]


class SSIMAccumulator:
    """Mean SSIM per lead time, over window centres whose cell has data in the truth.

    Parameters
    ----------
    n_leads : int
    data_range : float
        Range of the fields given to ``add`` (1.0: model pixels, the paper's convention).
    """

    def __init__(self, n_leads: int, *, data_range: float = 1.0) -> None:
        self.n_leads, self.data_range = n_leads, data_range
        self.sum, self.count = np.zeros(n_leads), np.zeros(n_leads)

    def add(self, forecast: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> None:
        """Count one forecast: (..., T, H, W) and (T, H, W) in the data's unit, ``valid`` bool."""
        check_shapes(forecast, truth, valid, self.n_leads)
        f = np.where(valid, forecast, 0.0)
        o = np.broadcast_to(np.where(valid, truth, 0.0), f.shape)
        centre = np.broadcast_to(valid[..., 5:-5, 5:-5], f[..., 5:-5, 5:-5].shape)
        s = ssim_map(f, o, data_range=self.data_range)
        self.sum += _lead_sum(np.where(centre, s, 0.0))
        self.count += _lead_sum(centre)

    def scores(self, *, over_leads: bool = False) -> np.ndarray:
        """(T,) mean SSIM, or a scalar with ``over_leads``; NaN without any cell."""
        s, n = self.sum, self.count
        if over_leads:
            s, n = s.sum(), n.sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, s / n, np.nan)
