"""The ensemble objective (training/ensemble.py): the score it computes and what it trains."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from model.lagrangian import displacements, member_displacements
from model.transform import PixelTransform
from training.config import TrainConfig
from training.ensemble import (
    ensemble_crps,
    fair_crps,
    member_shifts,
    pixels_to_rain,
    random_shifts,
    sampled_members,
)
from verification.ensemble_metrics import fair_crps as reference_crps


@pytest.mark.parametrize("members", [2, 3, 5])
def test_fair_crps_is_the_one_nowcast_evaluate_reports(members):
    rng = np.random.default_rng(members)
    ensemble, truth = rng.gamma(0.5, 2.0, (members, 6, 7)), rng.gamma(0.5, 2.0, (6, 7))
    ours = fair_crps(torch.from_numpy(ensemble), torch.from_numpy(truth)).numpy()
    np.testing.assert_allclose(ours, reference_crps(ensemble, truth), rtol=1e-10, atol=1e-12)


def test_fair_crps_is_zero_for_members_on_the_truth_and_refuses_one_member():
    truth = torch.rand(4, 4)
    assert fair_crps(truth.expand(3, 4, 4), truth).abs().max() == 0
    with pytest.raises(ValueError, match="at least 2 members"):
        fair_crps(truth[None], truth)


def test_pixels_to_rain_follows_the_checkpoint_transform_above_its_dry_cut_off():
    transform = PixelTransform()
    pixels = np.linspace(0.3, 1.0, 15, dtype=np.float32)
    expected = transform.from_pixel(pixels, "mm/h")
    np.testing.assert_allclose(pixels_to_rain(torch.from_numpy(pixels), transform).numpy(), expected,
                               rtol=1e-4)
    dry = pixels_to_rain(torch.zeros(()), transform)
    assert 0 < float(dry) < transform.rain_min  # below the cut-off, yet not flat: it has a gradient


def test_ensemble_crps_trains_the_translator_and_the_denoiser_through_the_sampler(tiny_model):
    model = tiny_model.train()
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 64, 64) * 0.6, torch.rand(2, 4, 64, 64) * 0.6
    step = torch.full((2,), 5.0)
    score = ensemble_crps(model, x, y, valid=None, step=step, members=3, steps=2, pixel_frames=2)
    assert score.ndim == 0 and torch.isfinite(score) and score > 0
    score.backward()
    for part in ("translator", "denoiser"):
        grads = [p.grad for p in getattr(model, part).parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), part


def test_ensemble_crps_scores_only_cells_with_data(tiny_model):
    torch.manual_seed(0)
    x, y = torch.rand(1, 3, 64, 64) * 0.6, torch.rand(1, 4, 64, 64) * 0.6
    valid = torch.zeros(1, 7, 64, 64, dtype=torch.bool)
    storm = y.clone()
    storm[..., 32:] = 1.0  # a storm where there is no data
    scores = []
    with torch.no_grad():
        assert ensemble_crps(tiny_model, x, y, valid=valid, step=None, steps=1) == 0
        valid[:, 3:, :, :32] = True
        for truth in (y, storm):
            torch.manual_seed(1)  # the same members both times
            scores.append(float(ensemble_crps(tiny_model, x, truth, valid=valid, step=None, steps=1,
                                              pixel_frames=0)))
    assert scores[0] > 0 and scores[1] == pytest.approx(scores[0], rel=1e-6)


def test_the_members_blend_as_the_service_blends_them(tiny_model):
    """The blend with the last frame: linear, keeping the members' spread, and towards the first
    estimate, as the service's extrapolation_lifetime, blend_spread and estimate_lifetime."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64) * 0.6
    common = {"step": None, "members": 3, "steps": 1, "detail_minutes": 0.0, "pixel_frames": 0}

    def members(**blend):
        torch.manual_seed(1)  # the same starting noise every time
        with torch.no_grad():
            return sampled_members(tiny_model, x, **common, **blend)

    raw, leads = members(blend_minutes=0.0)
    weight = torch.exp(-5.0 * (leads.float() + 1) / 30.0)[None, None, :, None, None]
    last = x[:, -1][:, None, None]
    linear, _ = members(blend_minutes=30.0, blend_spread=0.0, estimate_minutes=0.0)
    torch.testing.assert_close(linear, weight * last + (1 - weight) * raw)

    kept, _ = members(blend_minutes=30.0, blend_spread=0.5, estimate_minutes=0.0)
    torch.testing.assert_close(kept.mean(dim=1), linear.mean(dim=1))
    keep = torch.maximum(1 - weight, 0.5 * (1 - weight.square()).sqrt())
    torch.testing.assert_close(kept - kept.mean(dim=1, keepdim=True),
                               keep * (raw - raw.mean(dim=1, keepdim=True)))
    assert (keep > 1 - weight).any()  # wider than the linear blend at some lead

    towards, _ = members(blend_minutes=30.0, blend_spread=0.0, estimate_minutes=60.0)
    with torch.no_grad():
        mean, _ = tiny_model.vae.encode(x.reshape(-1, 1, 64, 64))
        mu, _ = tiny_model.translator(mean.reshape(2, 3, *mean.shape[1:]), None)
        first = tiny_model.vae.decode(mu.flatten(0, 1))[:, 0].reshape(2, 1, -1, 64, 64)[:, :, leads]
    v = torch.exp(-5.0 * (leads.float() + 1) / 60.0)[None, None, :, None, None]
    torch.testing.assert_close(towards, linear + weight * (1 - v) * (first - last), atol=1e-5, rtol=1e-5)


def test_member_shifts_are_how_far_the_service_moves_a_perturbed_member():
    """For rain moving uniformly, the service's perturbed displacements (model.lagrangian) differ
    from the unperturbed ones by exactly the shifts the objective gives its members."""
    torch.manual_seed(0)
    direction = torch.tensor([[0.6, 0.8]])
    eps = torch.randn(1, 3, 2)
    velocity = (1.5 * direction)[:, :, None, None].expand(1, 2, 16, 16)
    for minutes in (2.0, 5.0, 6.0):
        service = member_displacements(velocity, 12, eps=eps, step_minutes=minutes, cell_km=1.0, spread=1.5)
        drift = service - displacements(velocity, 12)[:, None]  # (1, 3, 12, 2, 16, 16)
        shifts = member_shifts(direction, eps, 12, minutes=[minutes], cell_km=1.0, spread=1.5)
        torch.testing.assert_close(drift[..., 8, 8], shifts, atol=1e-4, rtol=1e-4)
    wider = member_shifts(direction, eps, 12, minutes=[6.0], cell_km=1.0, spread=3.0)
    torch.testing.assert_close(wider, 2 * shifts, atol=1e-5, rtol=1e-5)  # linear in the spread


def test_motion_perturbations_move_each_member_by_its_own_drift(tiny_model, monkeypatch):
    import training.ensemble as ensemble

    x = torch.rand(2, 3, 64, 64) * 0.6
    common = {"step": torch.tensor([5.0, 2.0]), "members": 3, "steps": 1, "detail_minutes": 0.0,
              "pixel_frames": 0, "blend_minutes": 30.0}
    calls = []

    def whole_cells(b, members, t_out, *, minutes, cell_km, spread):  # member k: k cells along x
        calls.append((b, members, t_out, minutes, cell_km, spread))
        shifts = torch.zeros(b, members, t_out, 2)
        shifts[..., 0] = torch.arange(members, dtype=torch.float32)[None, :, None]
        return shifts

    monkeypatch.setattr(ensemble, "random_shifts", whole_cells)

    def members(**options):
        torch.manual_seed(1)  # the same starting noise every time
        with torch.no_grad():
            return sampled_members(tiny_model, x, **common, **options)[0]

    still, moved = members(), members(motion_spread=1.5, cell_km=2.0)
    assert calls == [(2, 3, tiny_model.config.t_out, [5.0, 2.0], 2.0, 1.5)]
    for k in range(3):  # out[p] = member[p + shift]: member k read k cells to the right
        torch.testing.assert_close(moved[:, k, ..., : 64 - k], still[:, k, ..., k:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(moved[:, 2, ..., -1], still[:, 2, ..., -1])  # the edge value beyond it
    torch.testing.assert_close(members(motion_spread=0.0), still)  # no option, no drift
    assert len(calls) == 1


def test_random_shifts_draw_laplace_sizes_in_every_direction():
    torch.manual_seed(0)
    shifts = random_shifts(2000, 2, 12, minutes=[5.0] * 2000, cell_km=1.0, spread=1.0)[:, :, -1]
    angles = torch.atan2(shifts[..., 1], shifts[..., 0]).flatten()
    counts = torch.histc(angles, bins=4, min=-torch.pi, max=torch.pi)
    assert counts.min() > 0.2 * counts.sum()  # no preferred direction
    expected = member_shifts(torch.tensor([[1.0, 0.0]]), torch.tensor([[[1.0, 0.0]]]), 12, minutes=[5.0],
                             cell_km=1.0, spread=1.0)[0, 0, -1, 0]  # a parallel draw of size 1
    rms = shifts.norm(dim=-1).square().mean().sqrt()
    perpendicular = member_shifts(torch.tensor([[1.0, 0.0]]), torch.tensor([[[0.0, 1.0]]]), 12, minutes=[5.0],
                                  cell_km=1.0, spread=1.0)[0, 0, -1, 1]
    assert float(rms) == pytest.approx(float((expected**2 + perpendicular**2).sqrt()), rel=0.1)


def test_the_ensemble_objective_refuses_what_it_cannot_score():
    with pytest.raises(ValueError, match="ensemble_members >= 2"):
        TrainConfig(ensemble_weight=1.0, ensemble_members=1)
    for strategy in ("vae", "decoder"):
        with pytest.raises(ValueError, match=f"'{strategy}' trains on the reconstruction alone"):
            TrainConfig(ensemble_weight=1.0, strategy=strategy)
    with pytest.raises(ValueError, match="must be >= 0"):
        dataclasses.replace(TrainConfig(), ensemble_blend=-1.0)
    with pytest.raises(ValueError, match="must be >= 0"):
        dataclasses.replace(TrainConfig(), ensemble_estimate=-1.0)
    with pytest.raises(ValueError, match="ensemble_motion_spread must be >= 0"):
        dataclasses.replace(TrainConfig(), ensemble_motion_spread=-0.5)
    with pytest.raises(ValueError, match=r"ensemble_blend_spread must be in \[0, 1\]"):
        dataclasses.replace(TrainConfig(), ensemble_blend_spread=1.5)
