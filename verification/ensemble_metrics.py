"""Ensemble verification scores, accumulated over many forecasts (cf. pysteps ``ensscores``,
``probscores``).

Arrays
    ``members`` is ``(K, T, H, W)`` rain rate in mm/h (K members, T lead times), ``truth``
    ``(T, H, W)`` mm/h, ``valid`` ``(T, H, W)`` bool, False where the truth has no data;
    invalid cells are left out of every sum. A deterministic forecast is an ensemble of one
    (its CRPS is its MAE, its probabilities are 0 or 1).

Every accumulator keeps sums per lead time (and threshold) and divides only in ``scores()``;
undefined scores (nothing counted, a base rate of 0 or 1 for the Brier skill) are NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from verification.metrics import Threshold, check_shapes


def fair_crps(members: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Fair (ensemble-size-unbiased) CRPS of every cell (Ferro et al. 2008).

    ``CRPS = mean_i |X_i - y| - sum_ij |X_i - X_j| / (2 K (K - 1))``; the pair sum is taken
    from the sorted members, ``sum_ij |X_i - X_j| = 2 sum_i (2 i - K + 1) X_(i)`` (i from 0).

    Parameters
    ----------
    members : np.ndarray
        (K, ...) in any unit (mm/h here).
    truth : np.ndarray
        (...) in the same unit.

    Returns
    -------
    np.ndarray
        (...) float64 CRPS in that unit; for K = 1 the absolute error.
    """
    k = members.shape[0]
    x = members.astype(np.float64)
    skill = np.abs(x - truth).mean(axis=0)
    if k == 1:
        return skill
    ranks = (2.0 * np.arange(k) - k + 1).reshape(-1, *([1] * (x.ndim - 1)))
    pair_sum = 2.0 * (ranks * np.sort(x, axis=0)).sum(axis=0)
    return skill - pair_sum / (2.0 * k * (k - 1))


class CRPSAccumulator:
    """Mean fair CRPS per lead time over the cells with data, mm/h."""

    def __init__(self, n_leads: int) -> None:
        self.n_leads = n_leads
        self.sum, self.count = np.zeros(n_leads), np.zeros(n_leads)

    def add(self, members: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> None:
        """Count one ensemble: (K, T, H, W) and (T, H, W) mm/h, ``valid`` (T, H, W) bool."""
        check_shapes(members, truth, valid, self.n_leads)
        crps = fair_crps(members, np.where(valid, truth, 0.0))
        self.sum += np.where(valid, crps, 0.0).sum(axis=(1, 2))
        self.count += valid.sum(axis=(1, 2))

    def scores(self, *, over_leads: bool = False) -> np.ndarray:
        """(T,) mean CRPS in mm/h, or a scalar with ``over_leads``."""
        s, n = (self.sum.sum(), self.count.sum()) if over_leads else (self.sum, self.count)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, s / n, np.nan)


class ProbabilityAccumulator:
    """Brier score, reliability diagram and ROC of exceedance probabilities.

    The probability of ``rain >= threshold`` is the fraction of members above it. Sums of
    ``(p - o)^2`` give the Brier score exactly; for the reliability diagram and the ROC the
    probabilities are binned on ``n_levels`` levels ``0, 1/(n-1), ..., 1`` (bin edges halfway
    between levels, so an ensemble of ``n_levels - 1`` members is binned exactly), keeping per
    bin the count, the sum of ``p`` and the count of observed events.

    Parameters
    ----------
    thresholds : sequence of Threshold
    n_leads : int
    n_levels : int
        Probability levels, K + 1 for a K-member ensemble (11 for 10 members).
    """

    def __init__(self, thresholds: Sequence[Threshold], n_leads: int, *, n_levels: int = 11) -> None:
        if n_levels < 2:
            raise ValueError(f"n_levels must be >= 2, got {n_levels}")
        self.thresholds, self.n_leads, self.n_levels = list(thresholds), n_leads, n_levels
        shape = (len(self.thresholds), n_leads)
        self.sum_sq, self.sum_obs, self.count = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        self.bin_count = np.zeros((*shape, n_levels))
        self.bin_prob = np.zeros((*shape, n_levels))
        self.bin_obs = np.zeros((*shape, n_levels))

    def add(self, members: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> None:
        """Count one ensemble: (K, T, H, W) and (T, H, W) mm/h, ``valid`` (T, H, W) bool."""
        check_shapes(members, truth, valid, self.n_leads)
        for j, thr in enumerate(self.thresholds):
            self.add_probability(j, (members >= thr.mmh).mean(axis=0), truth >= thr.mmh, valid)

    def add_probability(self, index: int, prob: np.ndarray, event: np.ndarray, valid: np.ndarray) -> None:
        """Count probabilities for threshold number ``index``.

        Parameters
        ----------
        index : int
            Position of the threshold in ``thresholds``.
        prob : np.ndarray
            (T, H, W) forecast probability in [0, 1].
        event : np.ndarray
            (T, H, W) bool, observed event.
        valid : np.ndarray
            (T, H, W) bool.
        """
        p, o = prob.astype(np.float64), event.astype(np.float64)
        w = valid.astype(np.float64)
        self.sum_sq[index] += (w * (p - o) ** 2).sum(axis=(1, 2))
        self.sum_obs[index] += (w * o).sum(axis=(1, 2))
        self.count[index] += w.sum(axis=(1, 2))
        level = np.clip(np.rint(p * (self.n_levels - 1)).astype(np.int64), 0, self.n_levels - 1)
        for t in range(self.n_leads):
            v = valid[t]
            lv = level[t][v]
            self.bin_count[index, t] += np.bincount(lv, minlength=self.n_levels)
            self.bin_prob[index, t] += np.bincount(lv, weights=p[t][v], minlength=self.n_levels)
            self.bin_obs[index, t] += np.bincount(lv, weights=o[t][v], minlength=self.n_levels)

    def scores(self, *, over_leads: bool = False) -> dict[str, np.ndarray]:
        """Brier score, its skill against the sample climatology, and the ROC area.

        Returns
        -------
        dict
            ``brier``, ``base_rate`` (observed frequency), ``bss`` (``1 - BS / (o (1 - o))``,
            climatology of the truth over the same samples) and ``roc_auc`` (trapezoid over
            the probability levels plus (0, 0)): each (n_thresholds, T), or (n_thresholds,)
            with ``over_leads``.
        """
        s, o, n = self.sum_sq, self.sum_obs, self.count
        ev, cnt = self.bin_obs, self.bin_count
        if over_leads:
            s, o, n, ev, cnt = s.sum(1), o.sum(1), n.sum(1), ev.sum(1), cnt.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            brier = np.where(n > 0, s / n, np.nan)
            base = np.where(n > 0, o / n, np.nan)
            ref = base * (1.0 - base)
            bss = np.where(ref > 0, 1.0 - brier / ref, np.nan)
            # events / non-events forecast at level >= j, for j = n_levels - 1 ... 0
            hits = np.cumsum(ev[..., ::-1], axis=-1)
            false = np.cumsum((cnt - ev)[..., ::-1], axis=-1)
            pod = hits / hits[..., -1:]
            pofd = false / false[..., -1:]
            zero = np.zeros((*pod.shape[:-1], 1))
            pod, pofd = np.concatenate([zero, pod], -1), np.concatenate([zero, pofd], -1)
            auc = np.sum(np.diff(pofd, axis=-1) * (pod[..., 1:] + pod[..., :-1]) / 2.0, axis=-1)
        return {"brier": brier, "base_rate": base, "bss": bss, "roc_auc": auc}

    def reliability(self, *, over_leads: bool = True) -> dict[str, np.ndarray]:
        """Reliability diagram: per bin the mean forecast probability, observed frequency, count.

        Returns (n_thresholds, n_levels) arrays with ``over_leads`` (the default), else
        (n_thresholds, T, n_levels); NaN for empty bins.
        """
        cnt, p, o = self.bin_count, self.bin_prob, self.bin_obs
        if over_leads:
            cnt, p, o = cnt.sum(1), p.sum(1), o.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"forecast": np.where(cnt > 0, p / cnt, np.nan),
                    "observed": np.where(cnt > 0, o / cnt, np.nan), "count": cnt}


class RankHistogram:
    """Rank of the truth among the members, K + 1 bins, summed over lead times (or per lead).

    Ties (several members equal to the truth, common at 0 mm/h) are broken at random with a
    seeded generator, so that an exchangeable ensemble gives a flat histogram. As pysteps
    ``rankhist`` with ``X_min``, cells where the truth and all members are below ``dry_mmh``
    are left out: they carry no information about spread and would only add uniform noise;
    and every value below ``dry_mmh`` is dry, equal to any other dry value (pysteps sets them
    all to ``X_min - 1``): a truth of 0.3 mm/h with ``dry_mmh=0.5`` ties with members at 0 and
    0.4 mm/h rather than ranking between them.

    Parameters
    ----------
    n_members : int
    n_leads : int
    dry_mmh : float or None
        None counts every valid cell.
    seed : int
    """

    def __init__(self, n_members: int, n_leads: int, *, dry_mmh: float | None = 0.1, seed: int = 0) -> None:
        self.n_members, self.n_leads, self.dry_mmh = n_members, n_leads, dry_mmh
        self.counts = np.zeros((n_leads, n_members + 1))
        self.rng = np.random.default_rng(seed)

    def add(self, members: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> None:
        """Count one ensemble: (K, T, H, W) and (T, H, W), ``valid`` (T, H, W) bool."""
        check_shapes(members, truth, valid, self.n_leads)
        if members.shape[0] != self.n_members:
            raise ValueError(f"expected {self.n_members} members, got {members.shape[0]}")
        use = valid.copy()
        if self.dry_mmh is not None:
            use &= (truth >= self.dry_mmh) | (members >= self.dry_mmh).any(axis=0)
            members = np.where(members < self.dry_mmh, -np.inf, members)  # NaN stays NaN
            truth = np.where(truth < self.dry_mmh, -np.inf, truth)
        below = (members < truth).sum(axis=0)
        ties = (members == truth).sum(axis=0)
        rank = below + np.floor(self.rng.random(truth.shape) * (ties + 1)).astype(np.int64)
        for t in range(self.n_leads):
            self.counts[t] += np.bincount(rank[t][use[t]], minlength=self.n_members + 1)

    def scores(self, *, over_leads: bool = True) -> np.ndarray:
        """Relative frequencies: (K + 1,) summed over leads, or (T, K + 1)."""
        c = self.counts.sum(0) if over_leads else self.counts
        with np.errstate(invalid="ignore", divide="ignore"):
            return c / c.sum(axis=-1, keepdims=True)


class SpreadSkillAccumulator:
    """Spread-skill ratio per lead time (Fortin et al. 2014).

    ``ratio = sqrt(mean(var) * (K + 1) / K) / RMSE(ensemble mean)`` with ``var`` the unbiased
    (ddof 1) member variance; 1 for a calibrated ensemble, < 1 under-dispersive.
    """

    def __init__(self, n_leads: int) -> None:
        self.n_leads = n_leads
        self.sum_var, self.sum_sq, self.count = np.zeros(n_leads), np.zeros(n_leads), np.zeros(n_leads)
        self.n_members = 0

    def add(self, members: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> None:
        """Count one ensemble: (K, T, H, W), K >= 2, and (T, H, W), ``valid`` (T, H, W) bool."""
        check_shapes(members, truth, valid, self.n_leads)
        k = members.shape[0]
        if k < 2 or (self.n_members and k != self.n_members):
            raise ValueError(f"need a constant ensemble size >= 2, got {k}")
        self.n_members = k
        x = members.astype(np.float64)
        var = x.var(axis=0, ddof=1)
        err = x.mean(axis=0) - np.where(valid, truth, 0.0)
        self.sum_var += np.where(valid, var, 0.0).sum(axis=(1, 2))
        self.sum_sq += np.where(valid, err**2, 0.0).sum(axis=(1, 2))
        self.count += valid.sum(axis=(1, 2))

    def scores(self, *, over_leads: bool = False) -> dict[str, np.ndarray]:
        """``spread``, ``rmse`` (mm/h) and ``ratio``: (T,) or scalars with ``over_leads``."""
        v, s, n = self.sum_var, self.sum_sq, self.count
        if over_leads:
            v, s, n = v.sum(), s.sum(), n.sum()
        k = max(self.n_members, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            spread = np.where(n > 0, np.sqrt(v / n * (k + 1) / k), np.nan)
            rmse = np.where(n > 0, np.sqrt(s / n), np.nan)
            return {"spread": spread, "rmse": rmse, "ratio": np.where(rmse > 0, spread / rmse, np.nan)}
