"""Synthetic rain: deterministic per seed, moving cells, plausible rain rates, item format."""

from __future__ import annotations

import numpy as np
import torch

from training.synthetic import SyntheticRain, synthetic_rain


def centroid(frame: np.ndarray) -> np.ndarray:
    weight = frame / frame.sum()
    rows, cols = np.indices(frame.shape)
    return np.array([(weight * rows).sum(), (weight * cols).sum()])


def test_same_seed_same_sequence_other_seed_other_sequence() -> None:
    a = synthetic_rain(3, n_frames=6, size=32)
    assert np.array_equal(a, synthetic_rain(3, n_frames=6, size=32))
    assert not np.array_equal(a, synthetic_rain(4, n_frames=6, size=32))


def test_rain_rates_are_in_a_sane_range() -> None:
    for seed in range(3):
        rain = synthetic_rain(seed, n_frames=12, size=48)
        assert rain.shape == (12, 48, 48) and rain.dtype == np.float32
        assert np.isfinite(rain).all() and rain.min() == 0.0 and rain.max() <= 150.0
        assert 1.0 < rain.max()
        wet = (rain > 0).mean()
        assert 0.01 < wet < 0.95
        assert np.all((rain == 0) | (rain >= 0.1))


def test_cells_move_with_the_wind() -> None:
    for seed in range(3):
        rain = synthetic_rain(seed, n_frames=25, size=48)
        assert np.linalg.norm(centroid(rain[-1]) - centroid(rain[0])) > 3.0
        assert not np.array_equal(rain[0], rain[1])


def test_dataset_items_have_the_radar_window_format() -> None:
    data = SyntheticRain(3, t_in=2, t_out=3, size=32, seed=7)
    item = data[1]
    assert item["x"].shape == (2, 32, 32) and item["y"].shape == (3, 32, 32)
    assert item["x"].dtype == torch.float32 and item["valid"].dtype == torch.bool
    assert item["valid"].shape == (5, 32, 32) and bool(item["valid"].all())
    frames = torch.cat([item["x"], item["y"]])
    assert 0.0 <= float(frames.min()) and float(frames.max()) <= 1.0
    assert item["source"] == "synthetic" and item["start"].endswith("Z")
    assert torch.equal(data[1]["x"], item["x"])
    assert not torch.equal(data[0]["x"], item["x"])
    assert len(data) == 3
