"""The deterministic scores of ``verification.metrics`` against pysteps' ``verification``.

Every test accumulates three seeded rain-like windows (``rain_cases``: 8 members, 4 lead
times, 48 x 48, no-data outside a range circle and on a block that moves from lead to lead)
with the project's accumulator and the same forecast-observation pairs with pysteps' own
``*_init`` / ``*_accum`` / ``*_compute``, per lead time and over all lead times. Where the two
conventions differ, the test's docstring says how, and pysteps is configured (or given data)
so that they coincide. SSIM has no pysteps counterpart: it is checked against a direct
window-by-window computation of Wang et al. (2004).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from pysteps.verification.detcatscores import det_cat_fct_accum, det_cat_fct_compute, det_cat_fct_init
from pysteps.verification.detcontscores import det_cont_fct_accum, det_cont_fct_compute, det_cont_fct_init
from pysteps.verification.spatialscores import fss, fss_accum, fss_compute, fss_init
from scipy.ndimage import binary_dilation

from model.transform import PixelTransform
from tests.verification.rain_cases import RainCase, rain_case
from verification.metrics import (
    ContingencyAccumulator,
    ErrorAccumulator,
    FSSAccumulator,
    SSIMAccumulator,
    Threshold,
)

THRESHOLDS = [Threshold(f"{v:g} mm/h", v) for v in (0.5, 1.0, 2.0, 5.0, 10.0)]
N_LEADS = 4
CATEGORICAL = ("csi", "pod", "far", "hss")


@pytest.fixture(scope="module")
def cases() -> list[RainCase]:
    return [rain_case(seed) for seed in range(3)]


def below(threshold: float) -> np.float32:
    """The next float32 under ``threshold``: on float32 data ``x > below(t)`` is ``x >= t``."""
    return np.nextafter(np.float32(threshold), np.float32(-np.inf))


def test_contingency_scores_match_pysteps_det_cat_fct(cases):
    """CSI, POD, FAR and HSS (no pooling) and the four counts equal pysteps ``detcatscores``.

    Conventions that differ, and how the test lines them up:

    - Events: the project counts ``rain >= threshold`` (the paper's convention, and pysteps'
      own FSS), ``det_cat_fct`` counts ``pred > thr``. pysteps gets the next float32 below the
      threshold. The cases hold values exactly on every threshold (the 0.1 mm/h grid), so this
      difference is exercised, not assumed away.
    - No data: ``det_cat_fct_accum`` counts a NaN cell as a correct negative (``NaN > thr`` is
      False; its ``nansum`` of integers ignores nothing), although its docstring says NaNs are
      ignored. pysteps gets the cells with data only, which is what the project counts.
    - Members: the project counts every member against the truth; pysteps accumulates every
      member into the same table.
    """
    for thr in THRESHOLDS[:4]:
        assert any((case.truth == np.float32(thr.mmh)).any() for case in cases), thr
    acc = ContingencyAccumulator(THRESHOLDS, N_LEADS, pools=(1,))
    for case in cases:
        acc.add(case.members, case.truth, case.valid)
    per_lead, all_leads = acc.scores(), acc.scores(over_leads=True)
    for j, thr in enumerate(THRESHOLDS):
        table_all = det_cat_fct_init(below(thr.mmh))
        for t in range(N_LEADS):
            table = det_cat_fct_init(below(thr.mmh))
            for case in cases:
                v = case.valid[t]
                for member in case.members[:, t]:
                    det_cat_fct_accum(table, member[v], case.truth[t][v])
                    det_cat_fct_accum(table_all, member[v], case.truth[t][v])
            assert (acc.hits[0, j, t], acc.misses[0, j, t], acc.false_alarms[0, j, t],
                    acc.correct_negatives[0, j, t]) == (table["hits"], table["misses"],
                                                       table["false_alarms"], table["correct_negatives"])
            with np.errstate(divide="ignore", invalid="ignore"):
                ref = det_cat_fct_compute(table, [s.upper() for s in CATEGORICAL])
            for name in CATEGORICAL:
                np.testing.assert_allclose(per_lead[name][0, j, t], ref[name.upper()], rtol=1e-12,
                                           err_msg=f"{name} {thr.label} lead {t}")
        with np.errstate(divide="ignore", invalid="ignore"):
            ref = det_cat_fct_compute(table_all, [s.upper() for s in CATEGORICAL])
        for name in CATEGORICAL:
            np.testing.assert_allclose(all_leads[name][0, j], ref[name.upper()], rtol=1e-12)


def test_pooled_contingency_matches_torch_max_pool_then_pysteps(cases):
    """CSI_4 / CSI_16 equal pysteps ``detcatscores`` on fields pooled by torch ``max_pool2d``.

    pysteps has no pooled CSI. The paper's code binarises, max-pools with
    ``torch.nn.functional.max_pool2d`` (kernel k, stride k // 4, no padding) and counts; the
    test does that with torch, pools the ``valid`` mask the same way (a pooled cell has data
    when any of its cells has), and counts the pooled cells with data with ``det_cat_fct``.
    Events are set False where the truth has no data before pooling, in both.
    """
    thresholds = THRESHOLDS[1:4]
    acc = ContingencyAccumulator(thresholds, N_LEADS, pools=(4, 16))
    for case in cases:
        acc.add(case.members, case.truth, case.valid)
    scores = acc.scores()
    for i, kernel in enumerate((4, 16)):
        def pool(event: np.ndarray, kernel: int = kernel) -> np.ndarray:
            x = torch.from_numpy(event.astype(np.float32))
            return torch.nn.functional.max_pool2d(x, kernel, stride=kernel // 4).numpy()

        for j, thr in enumerate(thresholds):
            tables = [det_cat_fct_init(0.5) for _ in range(N_LEADS)]
            for case in cases:
                f = pool((case.members >= thr.mmh) & case.valid)  # (K, T, h, w) as (N, C, H, W)
                o, v = pool((case.truth >= thr.mmh) & case.valid), pool(case.valid) > 0
                for t in range(N_LEADS):
                    for member in f[:, t]:
                        det_cat_fct_accum(tables[t], member[v[t]], o[t][v[t]])
            for t in range(N_LEADS):
                assert acc.correct_negatives[i, j, t] == tables[t]["correct_negatives"]
                with np.errstate(divide="ignore", invalid="ignore"):
                    ref = det_cat_fct_compute(tables[t], [s.upper() for s in CATEGORICAL])
                for name in CATEGORICAL:
                    np.testing.assert_allclose(scores[name][i, j, t], ref[name.upper()], rtol=1e-12,
                                               err_msg=f"{name} pool {kernel} {thr.label} lead {t}")


def pysteps_fss(cases: list[RainCase], thr: float, scale: int, *, masked: bool) -> np.ndarray:
    """(T,) FSS from pysteps' ``fss_accum`` of every member; no-data cells NaN if ``masked``."""
    out = []
    for t in range(N_LEADS):
        obj = fss_init(thr, scale)
        for case in cases:
            v = case.valid[t] if masked else np.ones_like(case.valid[t])
            for member in case.members[:, t]:
                fss_accum(obj, np.where(v, member, np.nan), np.where(v, case.truth[t], np.nan))
        out.append(fss_compute(obj))
    return np.array(out)


def assert_fss_matches_pysteps(cases: list[RainCase], scales: tuple[int, ...], *, masked: bool) -> None:
    """The project's FSS of ``cases`` equals pysteps' at every scale and threshold."""
    acc = FSSAccumulator(THRESHOLDS, N_LEADS, scales=scales)
    for case in cases:
        acc.add(case.members, case.truth, case.valid)
    scores = acc.scores()
    for i, scale in enumerate(scales):
        for j, thr in enumerate(THRESHOLDS):
            ref = pysteps_fss(cases, thr.mmh, scale, masked=masked)
            np.testing.assert_allclose(scores[i, j], ref, rtol=1e-10, err_msg=f"{scale} {thr.label}")


def test_fss_matches_pysteps_where_every_cell_has_data(cases):
    """FSS equals pysteps ``fss`` when every cell has data: the same ``>=`` events, the same
    ``uniform_filter`` fractions with zeros outside the domain (``mode="constant"``), the same
    sums. The even scale 4 is included: both use scipy's off-centre even window alike."""
    full = [RainCase(np.nan_to_num(c.members), np.nan_to_num(c.truth), np.ones_like(c.valid)) for c in cases]
    scales = (1, 4, 5, 17)
    assert_fss_matches_pysteps(full, scales, masked=False)


def test_fss_with_no_data_matches_pysteps_where_the_conventions_coincide(cases):
    """With no-data cells, FSS equals pysteps' on fields dry within half a window of no data.

    Both treat a no-data cell as a non-event inside the neighbourhood fractions (pysteps sets
    NaN to ``thr - 1``; the project sets events False where ``valid`` is False). They differ
    in what is summed: the project sums ``(Pf - Po)^2`` and ``Pf^2 + Po^2`` over the cells
    with data only, pysteps over every cell, so the fractions that rain spills into no-data
    cells count in pysteps, not in the project (its choice: a score over the cells that were
    observed). Where the rain is at least ``scale // 2`` cells from any no-data cell these
    spilled fractions are 0 and the two agree; the test checks that, with the false 50 mm/h
    and NaN the members hold at no-data cells. The next test shows the difference by hand.
    """
    scales = (1, 5, 17)
    dried = []
    for case in cases:
        near = binary_dilation(~case.valid, np.ones((1, 17, 17), bool))
        dry_band = near & case.valid
        dried.append(RainCase(np.where(dry_band, 0.0, case.members), np.where(dry_band, 0.0, case.truth),
                              case.valid))
        assert (np.nan_to_num(dried[-1].truth) >= 1.0).sum() > 100  # rain is left
    assert_fss_matches_pysteps(dried, scales, masked=True)


def test_fss_next_to_no_data_sums_the_cells_with_data_where_pysteps_sums_all():
    """The one FSS convention that differs from pysteps, on a hand example (scale 3, 5 x 5).

    Forecast event at (2, 2), observed event at (2, 3), column 4 without data. The fractions
    are 1/9 on the 3 x 3 block around each event. Over the cells with data (the project):
    ``sum (Pf - Po)^2 = 3/81`` (column 1), ``sum Pf^2 + Po^2 = 9/81 + 6/81``, FSS 0.8. Over
    every cell (pysteps, with NaN at no data): 6/81 and 18/81, FSS 2/3.
    """
    truth, forecast = np.zeros((1, 5, 5), np.float32), np.zeros((1, 5, 5), np.float32)
    forecast[0, 2, 2] = truth[0, 2, 3] = 2.0
    valid = np.ones((1, 5, 5), bool)
    valid[0, :, 4] = False
    acc = FSSAccumulator([THRESHOLDS[1]], 1, scales=(3,))
    acc.add(forecast, np.where(valid, truth, np.nan), valid)
    assert acc.scores().item() == pytest.approx(0.8)
    assert fss(forecast[0], np.where(valid, truth, np.nan)[0], 1.0, 3) == pytest.approx(2 / 3)


def test_mae_and_mse_match_pysteps_det_cont_fct(cases):
    """MAE and MSE equal pysteps ``det_cont_fct`` (which ignores NaN pairs) per lead time and
    over all lead times; every member is one forecast, as in the project. pysteps gets float64
    fields: it averages in the input's precision, the project sums in float64."""
    acc = ErrorAccumulator(N_LEADS)
    for case in cases:
        acc.add(case.members, case.truth, case.valid)
    err_all = det_cont_fct_init()
    for t in range(N_LEADS):
        err = det_cont_fct_init()
        for case in cases:
            truth = np.where(case.valid[t], case.truth[t], np.nan).astype(np.float64)
            for member in case.members[:, t].astype(np.float64):
                det_cont_fct_accum(err, member, truth)
                det_cont_fct_accum(err_all, member, truth)
        ref = det_cont_fct_compute(err, ["MAE", "MSE"])
        assert acc.scores()["mae"][t] == pytest.approx(ref["MAE"], rel=1e-10)
        assert acc.scores()["mse"][t] == pytest.approx(ref["MSE"], rel=1e-10)
    ref = det_cont_fct_compute(err_all, ["MAE", "MSE"])
    assert acc.scores(over_leads=True)["mae"] == pytest.approx(ref["MAE"], rel=1e-10)
    assert acc.scores(over_leads=True)["mse"] == pytest.approx(ref["MSE"], rel=1e-10)


def ssim_by_windows(x: np.ndarray, y: np.ndarray, data_range: float) -> np.ndarray:
    """(..., H - 10, W - 10) SSIM of Wang et al. (2004), eq. 13 with the weighted statistics of
    section III.C, computed window by window: 11 x 11 Gaussian weights, sigma 1.5, summing to 1."""
    g = np.exp(-0.5 * (np.arange(-5, 6) / 1.5) ** 2)
    w = np.outer(g, g) / np.outer(g, g).sum()
    xw = sliding_window_view(x.astype(np.float64), (11, 11), axis=(-2, -1))
    yw = sliding_window_view(y.astype(np.float64), (11, 11), axis=(-2, -1))
    mx, my = (xw * w).sum((-2, -1)), (yw * w).sum((-2, -1))
    dx, dy = xw - mx[..., None, None], yw - my[..., None, None]
    vx, vy, cxy = (dx * dx * w).sum((-2, -1)), (dy * dy * w).sum((-2, -1)), (dx * dy * w).sum((-2, -1))
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def test_ssim_matches_a_window_by_window_computation(cases):
    """SSIM (no pysteps counterpart) equals the window-by-window SSIM of every window centred
    on a cell with data, after zeroing no-data cells in both fields, on model pixels."""
    transform = PixelTransform()
    acc = SSIMAccumulator(N_LEADS, data_range=1.0)
    total, count = np.zeros(N_LEADS), np.zeros(N_LEADS)
    for case in cases:
        f, o = transform.to_pixel(case.members, "mm/h"), transform.to_pixel(case.truth, "mm/h")
        acc.add(f, o, case.valid)
        s = ssim_by_windows(np.where(case.valid, f, 0.0), np.where(case.valid, o, 0.0), 1.0)
        centre = np.broadcast_to(case.valid[:, 5:-5, 5:-5], s.shape)
        total += np.where(centre, s, 0.0).sum(axis=(0, 2, 3))
        count += centre.sum(axis=(0, 2, 3))
    np.testing.assert_allclose(acc.scores(), total / count, rtol=1e-10)
    assert acc.scores(over_leads=True) == pytest.approx(total.sum() / count.sum(), rel=1e-10)
