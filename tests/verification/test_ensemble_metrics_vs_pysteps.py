"""The ensemble scores of ``verification.ensemble_metrics`` against pysteps' ``verification``.

The cases are seeded rain-like ensembles (``rain_cases``) of 10 members, the size
``nowcast evaluate`` scores, over 4 lead times, with no-data cells where the truth is NaN and
the members NaN or a false 50 mm/h. The reliability diagram and ROC area are compared with
pysteps ``probscores``, the Brier score and its skill with ``detcontscores`` (the MSE and the
reduction of variance of a probability against a 0/1 event), the rank histogram with
``ensscores``; the fair CRPS, which pysteps does not have, with the O(K^2) pair formula, itself
checked against pysteps' (not fair) ``CRPS``.
"""

from __future__ import annotations

import numpy as np
import pytest
from pysteps.verification.detcontscores import det_cont_fct_accum, det_cont_fct_compute, det_cont_fct_init
from pysteps.verification.ensscores import rankhist_accum, rankhist_init
from pysteps.verification.probscores import (
    CRPS_accum,
    CRPS_compute,
    CRPS_init,
    ROC_curve_accum,
    ROC_curve_compute,
    ROC_curve_init,
    reldiag_accum,
    reldiag_compute,
    reldiag_init,
)
from scipy.stats import chi2

from tests.verification.rain_cases import RainCase, rain_case
from verification.ensemble_metrics import (
    CRPSAccumulator,
    ProbabilityAccumulator,
    RankHistogram,
    SpreadSkillAccumulator,
)
from verification.metrics import Threshold

THRESHOLDS = [Threshold(f"{v:g} mm/h", v) for v in (0.5, 1.0, 2.0, 5.0, 10.0)]
K, N_LEADS = 10, 4


@pytest.fixture(scope="module")
def cases() -> list[RainCase]:
    return [rain_case(seed, n_members=K) for seed in range(3)]


def masked(truth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The truth in float64 with NaN where it has no data (how pysteps is told of no data)."""
    return np.where(valid, truth, np.nan).astype(np.float64)


def crps_terms_by_pairs(members: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``mean_i |x_i - y|`` and ``sum_ij |x_i - x_j|`` over ordered pairs, member by member.

    Parameters
    ----------
    members : np.ndarray
        (K, ...) mm/h.
    truth : np.ndarray
        (...) mm/h.
    """
    k = len(members)
    skill = sum(np.abs(x - truth) for x in members) / k
    pairs = sum(np.abs(members[i] - members[j]) for i in range(k) for j in range(k))
    return skill, pairs


@pytest.mark.parametrize("n_members", [K, 2, 1])
def test_fair_crps_matches_the_pair_formula_with_no_data(cases, n_members):
    """The CRPS accumulator equals the fair CRPS of Ferro et al. (2008),
    ``mean_i |x_i - y| - sum_ij |x_i - x_j| / (2 K (K - 1))``, summed pair by pair, averaged
    over the cells with data per lead time and over all lead times (the absolute error for
    K = 1). The members' NaN and 50 mm/h at no-data cells must not leak in."""
    acc = CRPSAccumulator(N_LEADS)
    total, count = np.zeros(N_LEADS), np.zeros(N_LEADS)
    for case in cases:
        members = case.members[:n_members]
        acc.add(members, case.truth, case.valid)
        skill, pairs = crps_terms_by_pairs(members.astype(np.float64), case.truth.astype(np.float64))
        crps = skill - pairs / (2 * n_members * (n_members - 1)) if n_members > 1 else skill
        total += np.where(case.valid, crps, 0.0).sum(axis=(1, 2))
        count += case.valid.sum(axis=(1, 2))
    assert np.isfinite(acc.scores()).all()
    np.testing.assert_allclose(acc.scores(), total / count, rtol=1e-10)
    assert acc.scores(over_leads=True) == pytest.approx(total.sum() / count.sum(), rel=1e-10)


def test_pair_formula_without_the_fair_correction_is_pysteps_crps(cases):
    """pysteps ``CRPS`` integrates the ensemble's step CDF (Hersbach 2000), the CRPS that is
    not fair: ``mean_i |x_i - y| - sum_ij |x_i - x_j| / (2 K^2)``. The pair terms above give
    it on the same cells (pysteps leaves out pairs with a NaN), which ties the brute-force
    reference to pysteps; the project's fair CRPS is lower by ``sum_ij / (2 K^2 (K - 1))``.

    Only cells where the truth equals no member are compared: pysteps 1.21's ``CRPS_accum``
    drops the two CDF steps next to an observation that equals a member (its three cases use
    strict inequalities), e.g. members (0, 0, 1) and truth 0 give 0 instead of 1/9. Rain data
    are full of such ties (0 mm/h), where pysteps' CRPS comes out about 20 % low here.
    """
    acc = CRPSAccumulator(N_LEADS)
    for case in cases:
        acc.add(case.members, case.truth, case.valid)
    for t in range(N_LEADS):
        crps, total, count = CRPS_init(), 0.0, 0
        for case in cases:
            members = case.members[:, t].astype(np.float64)
            keep = case.valid[t] & ~(members == case.truth[t]).any(axis=0)
            truth = masked(case.truth[t], keep)
            CRPS_accum(crps, members, truth)
            skill, pairs = crps_terms_by_pairs(members, truth)
            total += (skill - pairs / (2 * K**2))[keep].sum()
            count += keep.sum()
        assert count > 500
        assert CRPS_compute(crps) == pytest.approx(total / count, rel=1e-10)
        assert acc.scores()[t] < CRPS_compute(crps)


def probabilities(case: RainCase, thr: Threshold) -> np.ndarray:
    """(T, H, W) fraction of members at or above ``thr``, nudged up by 1e-9 for pysteps.

    pysteps' probability levels are ``linspace(0, 1, K + 1)``, that is ``i * (1 / K)`` in
    floating point: ``3 * 0.1 = 0.30000000000000004 > 3 / 10``, so a probability of exactly
    3 / 10 would fall under its own level in ``ROC_curve_accum`` (``P_f >= p``). The nudge is
    far below the spacing of the levels and moves nothing else.
    """
    return (case.members >= thr.mmh).mean(axis=0) + 1e-9


def test_reliability_diagram_and_brier_score_match_pysteps(cases):
    """The reliability diagram equals pysteps ``reldiag`` with ``n_bins = K + 1`` and the Brier
    score and its skill equal pysteps ``det_cont_fct``'s MSE and reduction of variance.

    Bins: the project centres one bin on each of the K + 1 levels ``j / K``; pysteps' equal
    bins over ``[-1e-6, 1 + 1e-6]`` then hold one level each (``j / K`` lies in
    ``(j / (K + 1), (j + 1) / (K + 1)]``), so the same cells fall in the same bins.
    ``min_count=1``: pysteps drops, in each ``reldiag_accum`` call, a bin with fewer samples
    than ``min_count`` (default 10), even when the accumulated bin is large; with 1 only empty
    bins are left out, and both give NaN for a bin without samples. The skill is against the
    observed frequency of the same cells, ``1 - BS / (o (1 - o))`` = ``1 - MSE / var(event)``.
    """
    acc = ProbabilityAccumulator(THRESHOLDS, N_LEADS, n_levels=K + 1)
    for case in cases:
        acc.add(case.members, case.truth, case.valid)
    rel, per_lead, all_leads = acc.reliability(), acc.scores(), acc.scores(over_leads=True)
    for j, thr in enumerate(THRESHOLDS):
        diagram = reldiag_init(thr.mmh, n_bins=K + 1, min_count=1)
        errors, errors_all = [det_cont_fct_init() for _ in range(N_LEADS)], det_cont_fct_init()
        for case in cases:
            prob = probabilities(case, thr)
            for t in range(N_LEADS):
                truth = masked(case.truth[t], case.valid[t])
                reldiag_accum(diagram, prob[t], truth)
                event = np.where(np.isnan(truth), np.nan, truth >= thr.mmh)
                det_cont_fct_accum(errors[t], prob[t] - 1e-9, event)
                det_cont_fct_accum(errors_all, prob[t] - 1e-9, event)
        with np.errstate(divide="ignore", invalid="ignore"):
            forecast, observed = reldiag_compute(diagram)
        np.testing.assert_array_equal(rel["count"][j], diagram["sample_size"])
        np.testing.assert_allclose(rel["forecast"][j], forecast - 1e-9, rtol=1e-12, atol=1e-12,
                                   err_msg=thr.label)
        np.testing.assert_allclose(rel["observed"][j], observed, rtol=1e-12, err_msg=thr.label)
        for t in range(N_LEADS):
            ref = det_cont_fct_compute(errors[t], ["MSE", "RV"])
            assert per_lead["brier"][j, t] == pytest.approx(ref["MSE"], rel=1e-10)
            assert per_lead["bss"][j, t] == pytest.approx(ref["RV"], rel=1e-9)
        ref = det_cont_fct_compute(errors_all, ["MSE", "RV"])
        assert all_leads["brier"][j] == pytest.approx(ref["MSE"], rel=1e-10)
        assert all_leads["bss"][j] == pytest.approx(ref["RV"], rel=1e-9)


def test_roc_area_matches_pysteps(cases):
    """The ROC area equals pysteps ``ROC_curve`` with ``n_prob_thrs = K + 1`` levels.

    pysteps integrates by trapezoids from (POFD, POD) = (1, 1) at ``p >= 0`` through every
    level to (0, 0); the project from (0, 0) through the same points (forecast "yes" at
    level ``>= j``), the same polygon. pysteps gets the probabilities nudged by 1e-9 (see
    ``probabilities``), without which it misplaces the levels 3/10, 6/10 and 7/10.
    """
    acc = ProbabilityAccumulator(THRESHOLDS, N_LEADS, n_levels=K + 1)
    for case in cases:
        acc.add(case.members, case.truth, case.valid)
    per_lead, all_leads = acc.scores()["roc_auc"], acc.scores(over_leads=True)["roc_auc"]
    for j, thr in enumerate(THRESHOLDS):
        rocs = [ROC_curve_init(thr.mmh, n_prob_thrs=K + 1) for _ in range(N_LEADS)]
        roc_all = ROC_curve_init(thr.mmh, n_prob_thrs=K + 1)
        for case in cases:
            prob = probabilities(case, thr)
            for t in range(N_LEADS):
                truth = masked(case.truth[t], case.valid[t])
                ROC_curve_accum(rocs[t], prob[t], truth)
                ROC_curve_accum(roc_all, prob[t], truth)
        for t in range(N_LEADS):
            assert per_lead[j, t] == pytest.approx(ROC_curve_compute(rocs[t], True)[2], rel=1e-12)
        assert all_leads[j] == pytest.approx(ROC_curve_compute(roc_all, True)[2], rel=1e-12)
        assert 0.5 < all_leads[j] < 1.0


def dry_as_equal(x: np.ndarray, dry_mmh: float | None) -> np.ndarray:
    return x if dry_mmh is None else np.where(x < dry_mmh, -np.inf, x)


@pytest.mark.parametrize("dry_mmh", [None, 0.1, 0.5])
def test_rank_histogram_matches_pysteps_rankhist(dry_mmh):
    """The rank histogram equals pysteps ``rankhist`` with ``X_min = dry_mmh``.

    Both leave out the cells where the truth and every member are below ``dry_mmh`` and take
    every value below it as dry, equal to the other dry values (pysteps sets them all to
    ``X_min - 1``); with 0.5 mm/h the cases' 0.1-0.4 mm/h values are dry. Both give a truth
    tied with members a rank drawn uniformly among the tied positions, but from different
    random generators, so:

    - over the cells without a tie the counts are equal, per lead time;
    - over the cells with a tie (3 x 10^4 here) the two histograms agree as two samples of one
      distribution: the homogeneity statistic ``sum (a - b)^2 / (a + b)`` is under the 99.9 %
      quantile of chi-square with K degrees of freedom (conservative: both draw on the same
      cells, so they differ less than independent samples).
    """
    cases = [rain_case(seed, n_members=K) for seed in range(10)]
    np.random.seed(0)  # pysteps breaks ties with numpy's global generator
    for part in ("untied", "tied"):
        hist = RankHistogram(K, N_LEADS, dry_mmh=dry_mmh, seed=0)
        ref = [rankhist_init(K, dry_mmh) for _ in range(N_LEADS)]
        for case in cases:
            tie = (dry_as_equal(case.members, dry_mmh) == dry_as_equal(case.truth, dry_mmh)).any(axis=0)
            keep = case.valid & (tie if part == "tied" else ~tie)
            hist.add(case.members, case.truth, keep)
            for t in range(N_LEADS):
                # float32 like the members: pysteps' dry value X_min - 1 must be the same number in both
                truth = masked(case.truth[t], keep[t]).astype(np.float32)
                rankhist_accum(ref[t], case.members[:, t], truth)
        counts = np.array([r["n"] for r in ref])
        if part == "untied":
            np.testing.assert_array_equal(hist.counts, counts)
        else:
            ours, theirs = hist.counts.sum(axis=0), counts.sum(axis=0)
            assert ours.sum() == theirs.sum() > 2e4
            statistic = ((ours - theirs) ** 2 / np.maximum(ours + theirs, 1)).sum()
            assert statistic < chi2.ppf(0.999, K)


def test_spread_skill_matches_a_direct_computation(cases):
    """Spread, RMSE and their ratio equal the formula of Fortin et al. (2014) computed on the
    cells with data gathered from every window (pysteps' ``ensemble_spread`` is a mean skill
    score between member pairs, another quantity, so there is nothing to compare it with)."""
    acc = SpreadSkillAccumulator(N_LEADS)
    for case in cases:
        acc.add(case.members, case.truth, case.valid)
    for t in range(N_LEADS):
        x = np.concatenate([c.members[:, t][:, c.valid[t]] for c in cases], axis=1).astype(np.float64)
        y = np.concatenate([c.truth[t][c.valid[t]] for c in cases]).astype(np.float64)
        spread = np.sqrt(x.var(axis=0, ddof=1).mean() * (K + 1) / K)
        rmse = np.sqrt(((x.mean(axis=0) - y) ** 2).mean())
        s = acc.scores()
        assert (s["spread"][t], s["rmse"][t]) == pytest.approx((spread, rmse), rel=1e-10)
        assert s["ratio"][t] == pytest.approx(spread / rmse, rel=1e-10)
