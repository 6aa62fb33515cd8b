"""Padding to the model grid and back (model/padding.py), and the ensemble products (model/products.py)."""

from __future__ import annotations

import numpy as np
import pytest

from model.padding import from_model_grid, padded_shape, to_model_grid
from model.products import ensemble_products


def test_pad_and_crop_round_trip_a_100_by_130_frame():
    rng = np.random.default_rng(0)
    values = rng.random((5, 100, 130), dtype=np.float32)
    values[-1, :10, :20] = np.nan  # no data in the last frame
    values[0, 50, 50] = np.nan  # no data in an earlier frame only
    grid, undo = to_model_grid(values, 64)
    assert grid.shape == (5, 128, 192) == (5, *padded_shape(100, 130, 64))
    assert not np.isnan(grid).any() and grid[0, 50, 50] == 0 and (grid[:, 100:, :] == 0).all()
    back = from_model_grid(np.stack([grid, grid]), undo)  # any leading dims
    assert back.shape == (2, 5, 100, 130)
    assert np.isnan(back[:, :, :10, :20]).all()
    valid = ~np.isnan(values[-1])
    np.testing.assert_array_equal(back[0][1:][:, valid], values[1:][:, valid])
    with pytest.raises(ValueError, match="max_side"):
        to_model_grid(values, 64, max_side=120)


def test_ensemble_products_follow_pysteps_semantics():
    members = np.stack([np.full((2, 3, 3), v, np.float32) for v in (0.0, 1.0, 2.0, 10.0)])
    members[:, :, 0, 0] = np.nan
    products = ensemble_products(members, [1.0, 5.0])
    assert products["mean"][0, 1, 1] == pytest.approx(3.25)
    np.testing.assert_allclose(products["probability"][:, 0, 1, 1], [0.75, 0.25])
    assert products["percentiles"].shape == (3, 2, 3, 3)
    assert np.isnan(products["probability"][:, :, 0, 0]).all() and np.isnan(products["mean"][:, 0, 0]).all()
