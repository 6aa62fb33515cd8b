"""Probability matching of members to the last observation (model/matching.py)."""

from __future__ import annotations

import pytest
import torch

from model.matching import match_cdf


def test_matched_field_has_the_target_values_in_the_forecast_order():
    gen = torch.Generator().manual_seed(0)
    fields = torch.rand(1, 3, 8, 8, generator=gen)
    target = torch.rand(1, 8, 8, generator=gen) ** 3
    out = match_cdf(fields, target)
    for n in range(3):
        assert torch.equal(out[0, n].flatten().sort().values, target.flatten().sort().values)
        # same ranking as the raw member: its spatial structure is kept
        assert torch.equal(out[0, n].flatten().argsort(), fields[0, n].flatten().argsort())


def test_tied_forecast_pixels_take_the_target_values_in_pixel_order():
    """A dry forecast area (all ties) gets the target's smallest values in reading order,
    whatever the sort's algorithm: the result is reproducible across machines."""
    fields = torch.zeros(1, 1, 2, 3)
    fields[0, 0, 1, 2] = 1.0  # one wet pixel, five tied dry ones
    target = torch.tensor([[[0.5, 0.1, 0.9], [0.3, 0.2, 0.4]]])
    out = match_cdf(fields, target)
    assert out[0, 0].flatten().tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.9])


def test_matching_restores_intensity_lost_by_a_smoothed_forecast():
    target = torch.zeros(1, 16, 16)
    target[0, 4:8, 4:8] = 0.8  # a strong cell
    weak = torch.zeros(1, 1, 16, 16)
    weak[0, 0, 5:9, 5:9] = 0.2  # the forecast moved and weakened it
    out = match_cdf(weak, target)
    assert out.max() == pytest.approx(0.8)
    assert (out[0, 0, 5:9, 5:9] == 0.8).all()
    assert (out[0, 0] > 0).sum() == 16


def test_nan_no_data_in_the_target_is_ignored_and_all_nan_leaves_the_field_unchanged():
    fields = torch.linspace(0, 1, 16).reshape(1, 1, 4, 4).repeat(2, 1, 1, 1)
    target = torch.full((2, 4, 4), float("nan"))
    target[0, :2] = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]).reshape(2, 4)
    out = match_cdf(fields, target)
    assert torch.isfinite(out).all()
    assert out[0].min() == pytest.approx(0.1) and out[0].max() == pytest.approx(0.8)
    assert torch.equal(out[1], fields[1])


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="must agree"):
        match_cdf(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 5))


def test_forecast_with_cdf_matching_gives_members_the_last_frames_distribution(tiny_model, tiny_config):
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, tiny_config.t_in, 64, 64, generator=gen)
    raw = tiny_model.forecast(x, members=2, steps=2, seed=[1, 2])
    matched = tiny_model.forecast(x, members=2, steps=2, seed=[1, 2], matching="cdf")
    last = x[:, -1].flatten(1).sort().values
    for b in range(2):
        for k in range(2):
            for t in (0, tiny_config.t_out - 1):
                torch.testing.assert_close(matched.members[b, k, t].flatten().sort().values, last[b])
    torch.testing.assert_close(matched.first_estimate, raw.first_estimate)
    # matching is per request: a request's members do not depend on its batch neighbours (up to
    # rank swaps of near-ties, which move a pixel to the neighbouring quantile)
    alone = tiny_model.forecast(x[1:], members=2, steps=2, seed=[2], matching="cdf")
    torch.testing.assert_close(alone.members[0], matched.members[1], atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="matching"):
        tiny_model.forecast(x, members=1, steps=1, matching="quantile")
