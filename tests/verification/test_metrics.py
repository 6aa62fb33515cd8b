"""Deterministic scores on fields with answers known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from model.transform import PixelTransform
from verification.metrics import (
    ContingencyAccumulator,
    ErrorAccumulator,
    FSSAccumulator,
    SSIMAccumulator,
    Threshold,
    max_pool,
    ssim_map,
    threshold_to_mmh,
)

ONE = Threshold("1 mm/h", 1.0)


def rain_field(t: int = 3, size: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.gamma(0.6, 3.0, (t, size, size)) * (rng.random((t, size, size)) < 0.5)).astype(np.float32)


def all_valid(x: np.ndarray) -> np.ndarray:
    return np.ones(x.shape[-3:], dtype=bool)


def test_perfect_forecast_scores_are_ideal():
    truth = rain_field()
    valid = all_valid(truth)
    thresholds = [Threshold("0.5", 0.5), ONE, Threshold("5", 5.0)]
    counts = ContingencyAccumulator(thresholds, 3, pools=(1, 4, 16))
    fss = FSSAccumulator(thresholds, 3, scales=(1, 3, 9))
    err = ErrorAccumulator(3)
    ssim = SSIMAccumulator(3, data_range=1.0)
    for acc in (counts, fss, err):
        acc.add(truth, truth, valid)
    pixels = PixelTransform().to_pixel(truth, "mm/h")
    ssim.add(pixels, pixels, valid)
    s = counts.scores()
    np.testing.assert_allclose(s["csi"], 1.0)
    np.testing.assert_allclose(s["pod"], 1.0)
    np.testing.assert_allclose(s["far"], 0.0)
    np.testing.assert_allclose(s["hss"][0], 1.0)
    # pooled to 16 cells nearly every pooled cell is wet: HSS is 1 or, without a single
    # correct negative and no error, undefined (0 / 0)
    hss = s["hss"][1:]
    assert np.all((hss == 1.0) | np.isnan(hss))
    np.testing.assert_allclose(fss.scores(), 1.0)
    np.testing.assert_allclose(err.scores()["mae"], 0.0)
    np.testing.assert_allclose(err.scores()["mse"], 0.0)
    np.testing.assert_allclose(ssim.scores(), 1.0, atol=1e-12)


def test_shifted_block_gives_hand_computed_scores():
    # truth: 2 x 2 block at rows 2-3, cols 2-3; forecast one column east (cols 3-4) on 8 x 8:
    # hits 2, misses 2, false alarms 2, correct negatives 58.
    truth = np.zeros((1, 8, 8), dtype=np.float32)
    truth[0, 2:4, 2:4] = 5.0
    forecast = np.roll(truth, 1, axis=-1)
    counts = ContingencyAccumulator([ONE], 1, pools=(1,))
    counts.add(forecast, truth, all_valid(truth))
    assert (counts.hits.item(), counts.misses.item(), counts.false_alarms.item(),
            counts.correct_negatives.item()) == (2, 2, 2, 58)
    s = counts.scores()
    assert s["csi"].item() == pytest.approx(1 / 3)
    assert s["pod"].item() == pytest.approx(0.5)
    assert s["far"].item() == pytest.approx(0.5)
    assert s["hss"].item() == pytest.approx(2 * (2 * 58 - 2 * 2) / (4 * 60 + 4 * 60))
    err = ErrorAccumulator(1)
    err.add(forecast, truth, all_valid(truth))
    assert err.scores()["mae"].item() == pytest.approx(4 * 5.0 / 64)


def test_pooled_csi_on_a_tiny_example():
    # One event at (0, 0) in the truth, one at (1, 1) in the forecast. Kernel 4, stride 1 on
    # 8 x 8 gives 5 x 5 pooled cells: the truth covers (0, 0), the forecast (0..1, 0..1):
    # 1 hit, 3 false alarms, CSI 1/4 (plain CSI 0). Kernel 8, stride 2: one cell, CSI 1.
    truth = np.zeros((1, 8, 8), dtype=np.float32)
    forecast = truth.copy()
    truth[0, 0, 0] = forecast[0, 1, 1] = 2.0
    assert max_pool(forecast >= 1, 4).shape == (1, 5, 5)
    counts = ContingencyAccumulator([ONE], 1, pools=(1, 4, 8))
    counts.add(forecast, truth, all_valid(truth))
    np.testing.assert_allclose(counts.scores()["csi"][:, 0, 0], [0.0, 0.25, 1.0])
    assert counts.false_alarms[1, 0, 0] == 3 and counts.correct_negatives[1, 0, 0] == 21


def test_max_pool_matches_a_direct_loop():
    rng = np.random.default_rng(1)
    x = rng.random((2, 37, 40)) > 0.97
    for kernel in (4, 16):
        stride = kernel // 4
        out = max_pool(x, kernel)
        ref = np.array([[[x[b, i:i + kernel, j:j + kernel].any()
                          for j in range(0, 40 - kernel + 1, stride)]
                         for i in range(0, 37 - kernel + 1, stride)] for b in range(2)])
        np.testing.assert_array_equal(out, ref)


def test_all_dry_forecast_gives_nan_not_division_errors():
    dry = np.zeros((2, 16, 16), dtype=np.float32)
    counts = ContingencyAccumulator([ONE], 2, pools=(1, 4))
    fss = FSSAccumulator([ONE], 2, scales=(1, 5))
    with np.errstate(all="raise"):
        counts.add(dry, dry, all_valid(dry))
        fss.add(dry, dry, all_valid(dry))
        s = counts.scores()
        f = fss.scores()
    for name in ("csi", "pod", "far", "hss"):
        assert np.isnan(s[name]).all(), name
    assert np.isnan(f).all()


def test_invalid_cells_are_ignored():
    truth = rain_field(2, 16)
    forecast = truth.copy()
    valid = all_valid(truth)
    valid[:, :4] = False
    truth[:, :4] = np.nan
    forecast[:, :4] = 50.0  # wrong where there is no truth: must not count
    counts = ContingencyAccumulator([ONE], 2, pools=(1, 4))
    err = ErrorAccumulator(2)
    counts.add(forecast, truth, valid)
    err.add(forecast, truth, valid)
    np.testing.assert_allclose(counts.scores()["csi"], 1.0)
    np.testing.assert_allclose(err.scores()["mae"], 0.0)
    assert err.count.sum() == valid.sum()


def test_members_are_counted_one_by_one():
    truth = np.zeros((1, 8, 8), dtype=np.float32)
    truth[0, 2:4, 2:4] = 5.0
    members = np.stack([truth, np.roll(truth, 1, axis=-1)])
    counts = ContingencyAccumulator([ONE], 1, pools=(1,))
    counts.add(members, truth, all_valid(truth))
    assert counts.hits.item() == 4 + 2 and counts.misses.item() == 2
    assert counts.false_alarms.item() == 2
    assert counts.scores()["csi"].item() == pytest.approx(6 / 10)


def test_fss_of_shifted_block_grows_with_scale():
    truth = np.zeros((1, 32, 32), dtype=np.float32)
    truth[0, 10:14, 10:14] = 3.0
    forecast = np.roll(truth, 3, axis=-1)
    fss = FSSAccumulator([ONE], 1, scales=(1, 5, 15))
    fss.add(forecast, truth, all_valid(truth))
    f = fss.scores()[:, 0, 0]
    assert f[0] == pytest.approx(1 - 2 * 12 / (2 * 16))  # 12 cells differ, 16 events each
    assert f[0] < f[1] < f[2] < 1.0


def test_ssim_of_a_shifted_field_is_below_one_and_symmetric():
    x = PixelTransform().to_pixel(rain_field(1, 32), "mm/h")
    y = np.roll(x, 2, axis=-1)
    s_xy = ssim_map(x, y, data_range=1.0)
    assert s_xy.shape == (1, 22, 22)
    np.testing.assert_allclose(s_xy, ssim_map(y, x, data_range=1.0))
    assert s_xy.mean() < 0.9


def test_thresholds_convert_through_the_transform():
    transform = PixelTransform()
    assert threshold_to_mmh(1.0, "mm/h", transform).mmh == 1.0
    # 23 dBZ with Z = 200 R^1.6 is about 1 mm/h
    assert threshold_to_mmh(23.0, "dBZ", transform).mmh == pytest.approx(0.9985, abs=1e-3)
    # HKO-7's 185 on 0-255: (185 / 255) * 70 - 10 = 40.78 dBZ
    assert threshold_to_mmh(185, "pixel255", transform).mmh == pytest.approx(
        threshold_to_mmh(185 / 255 * 70 - 10, "dBZ", transform).mmh, rel=1e-5)
    with pytest.raises(ValueError, match="valid units"):
        threshold_to_mmh(1.0, "inch", transform)
