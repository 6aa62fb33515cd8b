"""Ensemble scores on synthetic ensembles with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from verification.ensemble_metrics import (
    CRPSAccumulator,
    ProbabilityAccumulator,
    RankHistogram,
    SpreadSkillAccumulator,
    fair_crps,
)
from verification.metrics import Threshold

ONE = Threshold("1 mm/h", 1.0)


def test_identical_perfect_members_have_zero_crps():
    rng = np.random.default_rng(0)
    truth = rng.gamma(0.5, 2.0, (4, 16, 16))
    members = np.repeat(truth[None], 5, axis=0)
    acc = CRPSAccumulator(4)
    acc.add(members, truth, np.ones(truth.shape, bool))
    np.testing.assert_allclose(acc.scores(), 0.0, atol=1e-12)


def test_fair_crps_matches_the_pairwise_formula():
    rng = np.random.default_rng(1)
    members, truth = rng.normal(size=(7, 50)), rng.normal(size=50)
    k = members.shape[0]
    direct = (np.abs(members - truth).mean(0)
              - np.abs(members[:, None] - members[None]).sum((0, 1)) / (2 * k * (k - 1)))
    np.testing.assert_allclose(fair_crps(members, truth), direct)
    np.testing.assert_allclose(fair_crps(members[:1], truth), np.abs(members[0] - truth))


def test_climatological_probability_has_zero_brier_skill_and_is_reliable():
    rng = np.random.default_rng(2)
    event = rng.random((3, 40, 40)) < 0.3
    valid = np.ones(event.shape, bool)
    valid[:, :5] = False
    base = event[valid].mean()
    acc = ProbabilityAccumulator([ONE], 3, n_levels=11)
    acc.add_probability(0, np.full(event.shape, base), event, valid)
    s = acc.scores(over_leads=True)
    assert s["base_rate"][0] == pytest.approx(base)
    assert s["bss"][0] == pytest.approx(0.0, abs=1e-12)
    assert s["roc_auc"][0] == pytest.approx(0.5)
    rel = acc.reliability()
    used = rel["count"][0] > 0
    assert used.sum() == 1
    np.testing.assert_allclose(rel["forecast"][0][used], rel["observed"][0][used])


def test_perfect_ensemble_probabilities():
    rng = np.random.default_rng(3)
    truth = rng.gamma(0.5, 2.0, (2, 16, 16))
    members = np.repeat(truth[None], 4, axis=0)
    acc = ProbabilityAccumulator([ONE], 2, n_levels=5)
    acc.add(members, truth, np.ones(truth.shape, bool))
    s = acc.scores()
    np.testing.assert_allclose(s["brier"], 0.0)
    np.testing.assert_allclose(s["bss"], 1.0)
    np.testing.assert_allclose(s["roc_auc"], 1.0)


def test_rank_histogram_is_flat_for_exchangeable_members():
    rng = np.random.default_rng(4)
    k = 9
    # draws from a discrete distribution: many ties, broken at random
    values = rng.integers(0, 4, (k + 1, 5, 40, 40)).astype(np.float64)
    hist = RankHistogram(k, 5, dry_mmh=None, seed=0)
    hist.add(values[1:], values[0], np.ones(values.shape[1:], bool))
    counts = hist.counts.sum(0)
    expected = counts.sum() / (k + 1)
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 27.9  # 99.9 % quantile of chi-square with 9 degrees of freedom
    np.testing.assert_allclose(hist.scores(), 1 / (k + 1), atol=0.01)


def test_rank_histogram_of_an_underdispersive_ensemble_is_u_shaped():
    rng = np.random.default_rng(5)
    truth = rng.normal(size=(1, 30, 30))
    members = 0.1 * rng.normal(size=(5, 1, 30, 30))
    hist = RankHistogram(5, 1, dry_mmh=None, seed=0)
    hist.add(members, truth, np.ones(truth.shape, bool))
    h = hist.scores()
    assert h[0] > 2 * h[3] and h[-1] > 2 * h[3]


def test_spread_skill_is_one_for_a_calibrated_ensemble():
    rng = np.random.default_rng(6)
    k = 5
    centre = rng.normal(0.0, 3.0, (4, 64, 64))
    truth = centre + rng.normal(size=centre.shape)
    members = centre + rng.normal(size=(k, *centre.shape))
    acc = SpreadSkillAccumulator(4)
    acc.add(members, truth, np.ones(truth.shape, bool))
    assert acc.scores(over_leads=True)["ratio"] == pytest.approx(1.0, abs=0.03)
    narrow = SpreadSkillAccumulator(4)
    narrow.add(centre + 0.3 * (members - centre), truth, np.ones(truth.shape, bool))
    assert narrow.scores(over_leads=True)["ratio"] < 0.5


def test_rank_histogram_takes_every_value_below_dry_mmh_as_equal():
    # truth 0.3 mm/h, members 0, 0.4 and 2 mm/h, dry_mmh 0.5: the truth ties with the two dry
    # members (ranks 0, 1 and 2 equally likely, as in pysteps), never ranks above the wet one,
    # and is not placed between 0 and 0.4 mm/h (rank 1 every time, before this was fixed)
    members = np.broadcast_to(np.array([0.0, 0.4, 2.0]).reshape(3, 1, 1, 1), (3, 1, 30, 30))
    truth = np.full((1, 30, 30), 0.3)
    hist = RankHistogram(3, 1, dry_mmh=0.5, seed=0)
    hist.add(members, truth, np.ones(truth.shape, bool))
    h = hist.scores()
    assert h[3] == 0.0
    np.testing.assert_allclose(h[:3], 1 / 3, atol=0.05)


def test_an_ensembles_mae_counts_every_member_and_its_mean_mae_scores_the_mean():
    """Members 2 mm/h above and below the truth: each errs by 2 mm/h, their mean not at all."""
    from model.transform import PixelTransform
    from verification.metrics import threshold_to_mmh
    from verification.scores import MethodScores

    transform = PixelTransform()
    thresholds = [threshold_to_mmh(1.0, "mm/h", transform)]
    rng = np.random.default_rng(0)
    truth = rng.uniform(3.0, 10.0, (4, 32, 32)).astype(np.float32)  # 4 leads
    valid = np.ones(truth.shape, bool)
    valid[:, :4] = False  # no data there: left out of both
    members = np.stack([truth + 2.0, truth - 2.0, truth + 2.0, truth - 2.0])
    members[:, :, :4] = 50.0
    ensemble = MethodScores(thresholds, 4, 4, True, seed=0)
    ensemble.add(members, truth, valid, transform)
    scores = ensemble.to_dict()
    np.testing.assert_allclose(scores["mae"], 2.0, rtol=1e-6)
    np.testing.assert_allclose(scores["ensemble_mean_mae"], 0.0, atol=1e-6)
    np.testing.assert_allclose(scores["ensemble_mean_mse_all_leads"], 0.0, atol=1e-10)
    single = MethodScores(thresholds, 4, 1, False, seed=0)
    single.add(members[:1], truth, valid, transform)
    assert "ensemble_mean_mae" not in single.to_dict()
