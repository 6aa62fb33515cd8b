"""What the sampler does at short leads (model/sampler.py): ``detail_lifetime`` adds back the
input's detail that the VAE does not reproduce, ``extrapolation_lifetime`` blends the members with
the extrapolated last frame; both fade with lead time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.nowcast import Nowcaster
from model.options import NowcastDefaults

ROOT = Path(__file__).resolve().parents[2]


def lead_weight(t_out: int, lifetime: float) -> torch.Tensor:
    """exp(-lead / lifetime) at 5-minute leads (the tiny model has no step embedding), shaped for
    (B, K, T, H, W) members: written out here, not taken from the sampler it checks."""
    leads = 5.0 * torch.arange(1, t_out + 1)
    return torch.exp(-leads / lifetime)[None, None, :, None, None]


@torch.inference_mode()
def test_members_gain_the_last_frames_unreproduced_detail_weighted_by_lead(tiny_model) -> None:
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(2, tiny_model.config.t_in, 64, 64, generator=gen)
    plain = tiny_model.forecast(x, members=2, steps=2, seed=[1, 2])
    detailed = tiny_model.forecast(x, members=2, steps=2, seed=[1, 2], detail_lifetime=10.0)
    mean, _ = tiny_model.vae.encode(x[:, -1:].reshape(-1, 1, 64, 64))
    detail = x[:, -1] - tiny_model.vae.decode(mean)[:, 0]  # what the VAE does not give back
    weight = lead_weight(tiny_model.config.t_out, 10.0)
    expected = (plain.members + weight * detail[:, None, None]).clamp(0, 1)
    torch.testing.assert_close(detailed.members, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(detailed.first_estimate, plain.first_estimate, atol=0, rtol=0)
    assert detail.abs().mean() > 0.01  # the check is not vacuous: an untrained VAE loses a lot


def test_detail_follows_the_frame_and_the_step(tiny_model) -> None:
    """In the dense frame the detail moves with the rain: it is the plain forecast of the moved
    inputs with the detail, moved back; and the lead is in minutes, so a 2-minute step keeps more."""
    from model.lagrangian import displacements, from_lagrangian, to_lagrangian

    gen = torch.Generator().manual_seed(5)
    x = torch.rand(1, tiny_model.config.t_in, 64, 64, generator=gen)
    motion = torch.full((1, 2, 64, 64), 0.6)
    moved = tiny_model.forecast(x, members=2, steps=2, seed=3, advection="dense", motion=motion,
                                detail_lifetime=30.0)
    plain = tiny_model.forecast(to_lagrangian(x, motion), members=2, steps=2, seed=3, detail_lifetime=30.0)
    t_out = tiny_model.config.t_out
    moves = displacements(motion, t_out)[:, None].expand(1, 2, t_out, 2, 64, 64)
    back = from_lagrangian(plain.members, moves)
    torch.testing.assert_close(moved.members, back)
    with pytest.raises(ValueError, match="detail_lifetime must be >= 0"):
        tiny_model.forecast(x, members=2, steps=1, detail_lifetime=-1.0)


def test_checkpoint_default_and_range_checks(tiny_config) -> None:
    config = tiny_config
    defaults = NowcastDefaults.from_manifest({"nowcast": {"detail_lifetime": 120}}, config)
    assert defaults.detail_lifetime == 120.0
    assert defaults.resolve().detail_lifetime == 120.0
    assert defaults.resolve(detail_lifetime=0).detail_lifetime == 0
    assert NowcastDefaults.from_manifest({}, config).detail_lifetime == 0.0  # older checkpoints: none
    for bad in (-1.0, 1e5):
        with pytest.raises(ValueError, match=r"detail_lifetime must be in \[0, 10000\] minutes"):
            defaults.resolve(detail_lifetime=bad)


def test_shipped_model_keeps_small_cells_of_the_input_at_the_first_leads() -> None:
    """On real radar, the cells the VAE loses are back in the members' first lead."""
    from radar.read import cut_window, read_event

    event = ROOT.parent / "shared" / "radar" / "events" / "fmi_20160928.nc"
    if not event.is_file():
        pytest.skip(f"{event} not found")
    window = cut_window(read_event(event), start=20, n_frames=5, size=128, coarsen=4)
    frames = np.nan_to_num(window.values)
    nowcaster = Nowcaster.from_checkpoint(ROOT / "checkpoints" / "default")
    scores = {}
    for lifetime in (0.0, 60.0):
        result = nowcaster.nowcast(frames, step_minutes=5, members=2, steps=2, detail_lifetime=lifetime,
                                   extrapolation_lifetime=0.0, advection="none", matching="none",
                                   guidance=1.0)  # the detail is what is measured, at fixed guidance
        assert result.options.detail_lifetime == lifetime
        hits = (result.members[:, 0] >= 1.0) & (frames[-1] >= 1.0)
        either = (result.members[:, 0] >= 1.0) | (frames[-1] >= 1.0)
        scores[lifetime] = hits.sum() / either.sum()  # CSI of lead 5 min against the last frame
    assert (frames[-1] >= 1.0).mean() > 0.01  # the window rains
    assert scores[60.0] > scores[0.0] + 0.03, scores  # measured 0.457 -> 0.499


# ------------------------------------------------------------ extrapolation_lifetime

@torch.inference_mode()
def test_members_start_from_the_last_frame_and_go_over_to_the_model_by_lead(tiny_model) -> None:
    gen = torch.Generator().manual_seed(6)
    x = torch.rand(2, tiny_model.config.t_in, 64, 64, generator=gen)
    plain = tiny_model.forecast(x, members=3, steps=2, seed=[1, 2])
    blended = tiny_model.forecast(x, members=3, steps=2, seed=[1, 2], extrapolation_lifetime=10.0)
    weight = lead_weight(tiny_model.config.t_out, 10.0)
    expected = weight * x[:, -1][:, None, None] + (1 - weight) * plain.members
    torch.testing.assert_close(blended.members, expected, atol=1e-5, rtol=1e-5)
    held = tiny_model.forecast(x, members=3, steps=2, seed=[1, 2], extrapolation_lifetime=10000.0)
    assert (held.members[:, :, 0] - x[:, -1][:, None]).abs().max() < 0.01  # the last frame, nearly
    with pytest.raises(ValueError, match="extrapolation_lifetime must be >= 0"):
        tiny_model.forecast(x, members=2, steps=1, extrapolation_lifetime=-1.0)


def test_extrapolation_lifetime_range_and_default(tiny_config) -> None:
    defaults = NowcastDefaults.from_manifest({"nowcast": {"extrapolation_lifetime": 10}}, tiny_config)
    assert defaults.resolve().extrapolation_lifetime == 10.0
    assert NowcastDefaults.from_manifest({}, tiny_config).extrapolation_lifetime == 0.0
    with pytest.raises(ValueError, match=r"extrapolation_lifetime must be in \[0, 10000\] minutes"):
        defaults.resolve(extrapolation_lifetime=-5)


def test_shipped_model_is_closer_to_the_observed_rain_at_the_first_leads() -> None:
    """On real radar the first leads of the blended members err less than the model's alone."""
    from radar.read import cut_window, read_event

    event = ROOT.parent / "shared" / "radar" / "events" / "fmi_20160928.nc"
    if not event.is_file():
        pytest.skip(f"{event} not found")
    window = np.nan_to_num(cut_window(read_event(event), start=30, n_frames=7, size=128, coarsen=4).values)
    frames, truth = window[:5], window[5:7]
    nowcaster = Nowcaster.from_checkpoint(ROOT / "checkpoints" / "default")
    errors = {}
    for lifetime in (0.0, 10.0):
        result = nowcaster.nowcast(frames, step_minutes=5, members=4, steps=2,
                                   extrapolation_lifetime=lifetime)
        errors[lifetime] = np.abs(result.members[:, :2] - truth[None]).mean()  # 5 and 10 minutes
    assert (truth >= 1.0).mean() > 0.01  # the window rains
    assert errors[10.0] < 0.9 * errors[0.0], errors


# ------------------------------------------------------------ blend_spread

@torch.inference_mode()
def test_blend_spread_keeps_the_members_departures_as_an_ar1_process_does(tiny_model) -> None:
    """The blend's mean is the linear blend's; the members' departures from it enter with weight
    max(1 - w, c * sqrt(1 - w^2)) instead of 1 - w, so they spread from the first lead on."""
    gen = torch.Generator().manual_seed(7)
    x = torch.rand(2, tiny_model.config.t_in, 64, 64, generator=gen)
    plain = tiny_model.forecast(x, members=4, steps=2, seed=[1, 2])
    linear = tiny_model.forecast(x, members=4, steps=2, seed=[1, 2], extrapolation_lifetime=90.0)
    kept = tiny_model.forecast(x, members=4, steps=2, seed=[1, 2], extrapolation_lifetime=90.0,
                               blend_spread=0.5)
    w = lead_weight(tiny_model.config.t_out, 90.0)
    mean = plain.members.mean(dim=1, keepdim=True)
    share = torch.maximum(1 - w, 0.5 * (1 - w**2).sqrt())
    expected = w * x[:, -1][:, None, None] + (1 - w) * mean + share * (plain.members - mean)
    torch.testing.assert_close(kept.members, expected.clamp(0, 1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(kept.members.mean(dim=1), linear.members.mean(dim=1), atol=1e-5, rtol=1e-5)
    first_lead = [f.members[:, :, 0].std(dim=1).mean() for f in (linear, kept)]
    assert first_lead[1] > 2.5 * first_lead[0], first_lead  # 0.5 sqrt(1 - w^2) = 3.0 (1 - w) at 5 min
    with pytest.raises(ValueError, match=r"blend_spread must be in \[0, 1\]"):
        tiny_model.forecast(x, members=2, steps=1, extrapolation_lifetime=90.0, blend_spread=1.5)


def test_blend_spread_range_and_default(tiny_config) -> None:
    defaults = NowcastDefaults.from_manifest({"nowcast": {"blend_spread": 0.5}}, tiny_config)
    assert defaults.resolve().blend_spread == 0.5
    assert defaults.resolve(blend_spread=0).blend_spread == 0.0
    assert NowcastDefaults.from_manifest({}, tiny_config).blend_spread == 0.0  # older checkpoints: 1 - w
    with pytest.raises(ValueError, match=r"blend_spread must be in \[0, 1\]"):
        defaults.resolve(blend_spread=-0.1)


@torch.inference_mode()
def test_blend_spread_keeps_the_members_pixels_in_range(tiny_model, monkeypatch) -> None:
    """Departures kept wider than the convex blend keeps them could leave [0, 1]: the members the
    sampler returns stay pixels, with the detail renewed (clamped after it) or without it."""
    import model.sampler as sampler

    members = torch.tensor([0.0, 1.0]).reshape(1, 2, 1, 1, 1)  # mean 0.5, departures -0.5 and +0.5
    out = sampler.blend_members(members, torch.ones(1, 1, 1, 1, 1), torch.full((1, 1, 1, 1, 1), 0.9), 1.0)
    assert out.max() > 1.1  # 0.95 + sqrt(0.19) * 0.5: the case exists
    t_out, decode = tiny_model.config.t_out, sampler.decode_frames

    def members_0_and_1(vae, z, chunk=None):  # member k decodes to k % 2 everywhere: the widest spread
        frames = decode(vae, z, chunk)
        value = (torch.arange(frames.shape[0]) // t_out % 2).to(frames)
        return value[:, None, None].expand_as(frames).clone()

    monkeypatch.setattr(sampler, "decode_frames", members_0_and_1)
    x = torch.ones(1, tiny_model.config.t_in, 64, 64)
    for detail in ({}, {"detail_lifetime": 30.0, "detail": "renew"}):
        result = tiny_model.forecast(x, members=4, steps=2, seed=1, extrapolation_lifetime=30.0,
                                     blend_spread=1.0, **detail)
        assert result.members.min() >= 0 and result.members.max() <= 1, detail
        assert result.members[0, :, 0].std(dim=0).mean() > 0.1  # the departures are there


# ------------------------------------------------------------ estimate_lifetime

@torch.inference_mode()
def test_estimate_lifetime_moves_the_blend_target_towards_the_first_estimate(tiny_model) -> None:
    """Lead l of the blend goes to v * last frame + (1 - v) * first estimate, v = exp(-l / L):
    the last frame at the first leads, more and more the translator's estimate later."""
    gen = torch.Generator().manual_seed(11)
    x = torch.rand(2, tiny_model.config.t_in, 64, 64, generator=gen)
    plain = tiny_model.forecast(x, members=3, steps=2, seed=[3, 4])
    towards = tiny_model.forecast(x, members=3, steps=2, seed=[3, 4], extrapolation_lifetime=90.0,
                                  estimate_lifetime=20.0)
    w, v = (lead_weight(tiny_model.config.t_out, lifetime) for lifetime in (90.0, 20.0))
    target = v * x[:, -1][:, None, None] + (1 - v) * plain.first_estimate[:, None]
    expected = w * target + (1 - w) * plain.members
    torch.testing.assert_close(towards.members, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(towards.first_estimate, plain.first_estimate, atol=0, rtol=0)
    last = tiny_model.forecast(x, members=3, steps=2, seed=[3, 4], extrapolation_lifetime=90.0)
    gap = (plain.first_estimate - x[:, -1][:, None]).abs().mean()
    assert gap > 0.05  # the two targets differ, so the check is not vacuous
    moved = (towards.members - last.members).abs().mean(dim=(0, 1, 3, 4))  # per lead
    assert moved[0] < moved[-1] / 2, moved  # the estimate weighs more as the lead grows
    with pytest.raises(ValueError, match="estimate_lifetime must be >= 0"):
        tiny_model.forecast(x, members=2, steps=1, extrapolation_lifetime=90.0, estimate_lifetime=-1.0)


def test_estimate_lifetime_range_and_default(tiny_config) -> None:
    defaults = NowcastDefaults.from_manifest({"nowcast": {"estimate_lifetime": 120}}, tiny_config)
    assert defaults.resolve().estimate_lifetime == 120.0
    assert defaults.resolve(estimate_lifetime=0).estimate_lifetime == 0.0
    assert NowcastDefaults.from_manifest({}, tiny_config).estimate_lifetime == 0.0  # older: the last frame
    with pytest.raises(ValueError, match=r"estimate_lifetime must be in \[0, 10000\] minutes"):
        defaults.resolve(estimate_lifetime=-5)
