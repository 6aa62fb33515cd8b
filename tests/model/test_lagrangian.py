"""The dense Lagrangian frame: pysteps' semi-Lagrangian scheme in torch, motion perturbations,
and the forecast in the moving frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.lagrangian import (
    bps_perturbation,
    dense_motion,
    displacements,
    from_lagrangian,
    laplace_from_uniform,
    member_displacements,
    to_lagrangian,
    to_lagrangian_targets,
    warp,
)

pysteps = pytest.importorskip("pysteps")


def blobs(h: int = 40, w: int = 50) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (np.exp(-((yy - 20) ** 2 + (xx - 18) ** 2) / 30.0)
            + 0.3 * np.exp(-((yy - 10) ** 2 + (xx - 35) ** 2) / 10.0))


def swirl(h: int = 40, w: int = 50) -> np.ndarray:
    """(2, H, W) (x, y) motion that turns and converges: no single velocity describes it."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([0.8 + 0.3 * np.sin(yy / 7.0), -0.4 + 0.2 * np.cos(xx / 9.0)])


def test_warping_by_the_displacements_is_pysteps_semilagrangian_extrapolation() -> None:
    from pysteps.extrapolation.semilagrangian import extrapolate

    field, velocity = blobs(), swirl()
    expected, expected_moves = extrapolate(field, velocity, 6, outval=0.0, return_displacement=True)
    moves = displacements(torch.from_numpy(velocity).float()[None], 6)
    fields = torch.from_numpy(field).float().expand(1, 6, *field.shape)
    got = warp(fields, moves, outval=0.0)[0].numpy()
    np.testing.assert_allclose(got, expected, atol=2e-6)
    np.testing.assert_allclose(moves[0, -1].numpy(), expected_moves, atol=1e-5)


def test_cells_whose_trajectories_leave_the_grid_get_the_outside_value() -> None:
    field = torch.ones(1, 1, 10, 10)
    velocity = torch.zeros(1, 2, 10, 10)
    velocity[:, 0] = 3.0  # 3 cells per step to the right: the first 3 columns come from outside
    moved = warp(field, displacements(velocity, 1), outval=-1.0)[0, 0]
    assert torch.all(moved[:, :3] == -1.0) and torch.all(moved[:, 3:] == 1.0)


def test_inputs_in_the_moving_frame_stand_still_where_the_last_one_is() -> None:
    from pysteps.extrapolation.semilagrangian import extrapolate

    velocity = swirl()
    first = blobs()
    frames = np.concatenate([[first], extrapolate(first, velocity, 3, outval=0.0)])  # 4 frames in time
    x = torch.from_numpy(frames).float()[None]
    still = to_lagrangian(x, torch.from_numpy(velocity).float()[None])[0]
    interior = (slice(8, 32), slice(8, 30))
    for k in range(4):
        np.testing.assert_allclose(still[k][interior].numpy(), frames[-1][interior], atol=0.03)


def test_targets_taken_back_and_forecast_forward_return_where_they_were() -> None:
    velocity = torch.from_numpy(swirl()).float()[None]
    y = torch.from_numpy(np.stack([blobs()] * 5)).float()[None]
    back = to_lagrangian_targets(y, velocity)
    again = from_lagrangian(back[:, None], displacements(velocity, 5)[:, None])[:, 0]
    interior = (slice(None), slice(None), slice(10, 30), slice(12, 34))
    # two bilinear interpolations flatten the peak of the 3-cell blob by a few per cent
    np.testing.assert_allclose(again[interior].numpy(), y[interior].numpy(), atol=0.05)


def test_bps_perturbations_are_pysteps_sizes_along_and_across_the_motion() -> None:
    from pysteps.noise.motion import generate_bps, initialize_bps

    velocity = swirl()
    perturbator = initialize_bps(velocity, pixelsperkm=1 / 4.0, timestep=5, seed=3)
    eps = torch.tensor([[[perturbator["eps_par"], perturbator["eps_perp"]]]], dtype=torch.float32)
    ours = bps_perturbation(torch.from_numpy(velocity).float()[None], eps, steps=4, step_minutes=5,
                            cell_km=4.0, spread=1.0)
    for lead in range(4):
        expected = generate_bps(perturbator, 5 * (lead + 1))
        np.testing.assert_allclose(ours[0, 0, lead].numpy(), expected, rtol=1e-4, atol=1e-6)


def test_member_displacements_without_spread_are_the_plain_ones_and_with_spread_differ() -> None:
    velocity = torch.from_numpy(swirl()).float()[None]
    plain = member_displacements(velocity, 3)
    assert plain.shape == (1, 1, 3, 2, 40, 50)
    assert torch.equal(plain[:, 0], displacements(velocity, 3))
    eps = laplace_from_uniform(torch.tensor([[[0.2, 0.7], [0.9, 0.4]]]))
    moved = member_displacements(velocity, 3, eps=eps, step_minutes=5, cell_km=4.0, spread=1.0)
    assert moved.shape == (1, 2, 3, 2, 40, 50)
    assert not torch.allclose(moved[0, 0], moved[0, 1]) and not torch.allclose(moved[0, 0], plain[0, 0])
    with pytest.raises(ValueError, match="need step_minutes and cell_km"):
        member_displacements(velocity, 3, eps=eps, spread=1.0)


def test_laplace_draws_have_unit_variance() -> None:
    draws = laplace_from_uniform(torch.rand(200_000, generator=torch.Generator().manual_seed(0)))
    assert draws.mean().abs() < 0.01 and draws.var() == pytest.approx(1.0, rel=0.02)


def test_dense_motion_follows_a_moving_pattern_and_is_zero_without_rain() -> None:
    from pysteps.extrapolation.semilagrangian import extrapolate

    uniform = np.stack([np.full((64, 64), 1.5), np.full((64, 64), -1.0)])
    yy, xx = np.mgrid[0:64, 0:64]
    first = 0.6 * (np.sin(xx / 3.0) * np.cos(yy / 4.0) > 0.3)
    frames = np.concatenate([[first], extrapolate(first, uniform, 3, outval=0.0)])
    motion = dense_motion(frames)
    assert motion.shape == (2, 64, 64) and motion.dtype == np.float32
    np.testing.assert_allclose(np.median(motion[:, 16:48, 16:48], axis=(1, 2)), [1.5, -1.0], atol=0.2)
    assert not dense_motion(np.zeros((4, 32, 32))).any()


def test_forecast_in_the_dense_frame_is_the_plain_forecast_in_the_moving_frame_moved_back(tiny_model) -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(2, tiny_model.config.t_in, 64, 64, generator=gen)
    motion = torch.randn(2, 2, 64, 64, generator=gen) * 0.5
    moved = tiny_model.forecast(x, members=2, steps=3, seed=5, advection="dense", motion=motion)
    plain = tiny_model.forecast(to_lagrangian(x, motion), members=2, steps=3, seed=5, advection="none")
    t_out = tiny_model.config.t_out
    moves = displacements(motion, t_out)[:, None].expand(2, 2, t_out, 2, 64, 64)
    back = from_lagrangian(plain.members, moves)
    torch.testing.assert_close(moved.members, back)
    first = from_lagrangian(plain.first_estimate[:, None], displacements(motion, t_out)[:, None])[:, 0]
    torch.testing.assert_close(moved.first_estimate, first)


def test_motion_spread_perturbs_each_member_reproducibly_and_alone(tiny_model) -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, tiny_model.config.t_in, 64, 64, generator=gen)
    motion = torch.full((2, 2, 64, 64), 0.7)
    options = {"steps": 2, "advection": "dense", "motion": motion, "step_minutes": 5, "cell_km": 4.0}
    spread = tiny_model.forecast(x, members=3, seed=[4, 9], motion_spread=1.0, **options)
    again = tiny_model.forecast(x, members=3, seed=[4, 9], motion_spread=1.0, **options)
    assert torch.equal(spread.members, again.members)
    alone = tiny_model.forecast(x[1:], members=3, seed=9, motion_spread=1.0, motion=motion[1:],
                                **{k: v for k, v in options.items() if k != "motion"})
    torch.testing.assert_close(alone.members[0], spread.members[1], atol=1e-5, rtol=1e-5)
    still = tiny_model.forecast(x, members=3, seed=[4, 9], **options)
    assert not torch.allclose(spread.members, still.members)
    with pytest.raises(ValueError, match="motion_spread must be >= 0"):
        tiny_model.forecast(x, members=3, motion_spread=-1.0, **options)
