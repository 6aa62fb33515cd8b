"""Bulk advection: the motion estimate, whole-cell shifts, and the moving frame around the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.advection import bulk_motion, from_moving_frame, shift_fields, to_moving_frame


def moving_texture(velocity: tuple[float, float], frames: int = 5, side: int = 64,
                   seed: int = 0) -> torch.Tensor:
    """(1, frames, side, side) smooth random rain moving ``velocity`` cells per step (bilinear)."""
    rng = np.random.default_rng(seed)
    big = torch.from_numpy(rng.random((1, 1, side * 2, side * 2))).float()
    big = torch.nn.functional.avg_pool2d(big, 9, stride=1, padding=4)  # cells of a few pixels
    big = (big - big.mean()).clamp(min=0) * 10
    grid_y, grid_x = torch.meshgrid(torch.arange(side).float(), torch.arange(side).float(), indexing="ij")
    out = []
    for k in range(frames):
        y = grid_y + side / 2 - velocity[0] * k  # content moves +velocity: sample from behind
        x = grid_x + side / 2 - velocity[1] * k
        grid = torch.stack([x / (2 * side - 1) * 2 - 1, y / (2 * side - 1) * 2 - 1], dim=-1)[None]
        out.append(torch.nn.functional.grid_sample(big, grid, align_corners=True)[0, 0])
    return torch.stack(out)[None]


@pytest.mark.parametrize("velocity", [(0.0, 0.0), (0.75, -1.5), (-2.0, 0.5), (1.25, 2.25)])
def test_bulk_motion_recovers_a_uniform_motion_to_a_fraction_of_a_cell(velocity):
    x = moving_texture(velocity)
    np.testing.assert_allclose(bulk_motion(x)[0].numpy(), velocity, atol=0.15)


def test_bulk_motion_is_per_request_and_zero_without_structure():
    x = torch.cat([moving_texture((1.0, 0.0)), moving_texture((0.0, -1.0), seed=1),
                   torch.zeros(1, 5, 64, 64), torch.full((1, 5, 64, 64), 0.4)])
    motion = bulk_motion(x)
    np.testing.assert_allclose(motion.numpy(), [[1, 0], [0, -1], [0, 0], [0, 0]], atol=0.15)
    with pytest.raises(ValueError, match="T >= 2"):
        bulk_motion(x[:, :1])


def test_shift_fields_moves_by_whole_cells_and_leaves_no_data_dry():
    fields = torch.arange(2 * 4 * 5, dtype=torch.float32).reshape(2, 4, 5) + 1
    out = shift_fields(fields, torch.tensor([[1, -2], [0, 0]]))
    assert torch.equal(out[1], fields[1])
    assert torch.equal(out[0, 1:, :3], fields[0, :3, 2:])  # out[i, j] = in[i - 1, j + 2]
    assert torch.all(out[0, 0] == 0) and torch.all(out[0, :, 3:] == 0)  # shifted in from off the grid
    assert torch.all(shift_fields(fields, torch.tensor([[4, 0], [0, -9]])) == 0)
    with pytest.raises(ValueError, match="cells must be"):
        shift_fields(fields, torch.tensor([1, 2]))


def test_persistence_in_the_moving_frame_is_extrapolation_on_the_ground():
    side, t_in, t_out, v = 48, 3, 4, (1, -2)
    truth = torch.zeros(1, t_in + t_out, side, side)
    for k in range(t_in + t_out):  # a 6 x 8 block moving (1, -2) cells per step
        truth[0, k, 10 + v[0] * k:16 + v[0] * k, 30 + v[1] * k:38 + v[1] * k] = 0.7
    x = truth[:, :t_in]
    motion = bulk_motion(x)
    np.testing.assert_allclose(motion[0].numpy(), v, atol=0.05)
    still = to_moving_frame(x, motion)
    assert torch.equal(still[:, -1], x[:, -1])  # the last input frame is the anchor
    assert torch.equal(still[:, 0], x[:, -1]) and torch.equal(still[:, 1], x[:, -1])  # rain stands still
    persisted = still[:, -1:].expand(1, t_out, side, side)
    assert torch.equal(from_moving_frame(persisted, motion), truth[:, t_in:])
    members = persisted[:, None].expand(1, 3, t_out, side, side)  # (B, K, T, H, W) alike
    assert torch.equal(from_moving_frame(members, motion)[:, 2], truth[:, t_in:])


def test_forecast_with_bulk_advection_is_the_plain_forecast_in_the_moving_frame(tiny_model):
    x = moving_texture((1.0, -1.0), frames=tiny_model.config.t_in).clamp(0, 1)
    motion = bulk_motion(x)
    moved = tiny_model.forecast(x, members=2, steps=3, seed=5, advection="bulk")
    plain = tiny_model.forecast(to_moving_frame(x, motion), members=2, steps=3, seed=5, advection="none")
    assert torch.equal(moved.members, from_moving_frame(plain.members, motion))
    assert torch.equal(moved.first_estimate, from_moving_frame(plain.first_estimate, motion))
    matched = tiny_model.forecast(x, members=2, steps=3, seed=5, advection="bulk", matching="cdf")
    target = torch.sort(x[0, -1].flatten()).values  # matched to the observed last frame
    assert torch.allclose(torch.sort(matched.members[0, 1, 2].flatten()).values, target)
    with pytest.raises(ValueError, match="advection must be one of"):
        tiny_model.forecast(x, members=1, steps=2, advection="optical_flow")
