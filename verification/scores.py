"""The scores of one method on a set of windows: all accumulators of ``nowcast evaluate``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.transform import PixelTransform
from verification.ensemble_metrics import (
    CRPSAccumulator,
    ProbabilityAccumulator,
    RankHistogram,
    SpreadSkillAccumulator,
)
from verification.metrics import (
    ContingencyAccumulator,
    ErrorAccumulator,
    FSSAccumulator,
    SSIMAccumulator,
    Threshold,
)

POOLS = (1, 4, 16)
FSS_SCALES = (1, 5, 17)  # cells: 4, 20 and 68 km at 4 km


class MethodScores:
    """All accumulators of one method (ensemble scores only for ensembles).

    The deterministic scores of an ensemble (contingency, FSS, ``mae``/``mse``, SSIM) count every
    member against the truth, the paper's protocol; ``ensemble_mean_mae``/``_mse`` score the
    members' mean, the field the service returns as ``mean``.
    """

    def __init__(self, thresholds: list[Threshold], n_leads: int, n_members: int, ensemble: bool,
                 seed: int) -> None:
        self.contingency = ContingencyAccumulator(thresholds, n_leads, pools=POOLS)
        self.fss = FSSAccumulator(thresholds, n_leads, scales=FSS_SCALES)
        self.errors = ErrorAccumulator(n_leads)
        self.ssim = SSIMAccumulator(n_leads, data_range=1.0)
        self.crps = CRPSAccumulator(n_leads)
        self.prob = ProbabilityAccumulator(thresholds, n_leads, n_levels=n_members + 1)
        self.rank = RankHistogram(n_members, n_leads, seed=seed) if ensemble else None
        self.spread = SpreadSkillAccumulator(n_leads) if ensemble else None
        self.mean_errors = ErrorAccumulator(n_leads) if ensemble else None
        self.nan_filled, self.cells = 0, 0

    def add(self, forecast: np.ndarray, truth: np.ndarray, valid: np.ndarray,
            transform: PixelTransform) -> None:
        """forecast (K, T, H, W) mm/h (NaN = 0), truth (T, H, W) mm/h, valid (T, H, W)."""
        self.nan_filled += int(np.isnan(forecast).sum())
        self.cells += forecast.size
        forecast = np.nan_to_num(forecast, nan=0.0)
        for acc in (self.contingency, self.fss, self.errors, self.crps, self.prob, self.rank, self.spread):
            if acc is not None:
                acc.add(forecast, truth, valid)
        if self.mean_errors is not None:
            self.mean_errors.add(forecast.mean(axis=0, keepdims=True), truth, valid)
        self.ssim.add(transform.to_pixel(forecast, "mm/h"), transform.to_pixel(truth, "mm/h"), valid)

    def to_dict(self) -> dict:
        """Per lead and over all leads (counts summed first), NaN as None."""
        out: dict = {}
        for suffix, over in (("", False), ("_all_leads", True)):
            out.update({f"{k}{suffix}": v for k, v in self.contingency.scores(over_leads=over).items()})
            out[f"fss{suffix}"] = self.fss.scores(over_leads=over)
            out.update({f"{k}{suffix}": v for k, v in self.errors.scores(over_leads=over).items()})
            out[f"ssim{suffix}"] = self.ssim.scores(over_leads=over)
            out[f"crps{suffix}"] = self.crps.scores(over_leads=over)
            out.update({f"{k}{suffix}": v for k, v in self.prob.scores(over_leads=over).items()})
            if self.spread is not None:
                out.update({f"spread_skill_{k}{suffix}": v
                            for k, v in self.spread.scores(over_leads=over).items()})
            if self.mean_errors is not None:
                out.update({f"ensemble_mean_{k}{suffix}": v
                            for k, v in self.mean_errors.scores(over_leads=over).items()})
        out["reliability"] = self.prob.reliability()
        if self.rank is not None:
            out["rank_histogram"] = self.rank.scores()
        out["nan_filled_fraction"] = self.nan_filled / max(self.cells, 1)
        return jsonable(out)


def jsonable(x):
    """numpy arrays and scalars -> lists and floats, NaN -> None."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, float | np.floating):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, Path):
        return str(x)
    return x


