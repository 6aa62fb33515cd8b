"""Antithetic members (model/pairs.py): member 2j + 1 mirrors member 2j's draws."""

from __future__ import annotations

import pytest
import torch

import model.detail
import model.sampler
from model.options import NowcastDefaults
from model.pairs import mirrored


def test_mirrored_negates_normal_draws_and_reflects_uniform_ones_pair_by_pair() -> None:
    draws = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
    out = mirrored(draws.clone())
    torch.testing.assert_close(out[:, 0::2], draws[:, 0::2], rtol=0, atol=0)  # 0, 2, 4 keep theirs
    torch.testing.assert_close(out[:, 1], -draws[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(out[:, 3], -draws[:, 2], rtol=0, atol=0)  # an odd last member (4): its own
    assert out[:, :4].sum(dim=1).abs().max() == 0  # every pair sums to zero
    uniform = torch.rand(1, 4, 2, generator=torch.Generator().manual_seed(1))
    reflected = mirrored(uniform.clone(), centre=0.5)
    torch.testing.assert_close(reflected[:, 1::2], 1 - uniform[:, 0::2], rtol=0, atol=0)
    laplace = model.sampler.laplace_from_uniform(reflected)
    torch.testing.assert_close(laplace[:, 1::2], -laplace[:, 0::2], rtol=0, atol=1e-6)  # opposite pushes


def _options() -> dict:
    motion = torch.full((2, 2, 64, 64), 0.7)
    return {"steps": 2, "advection": "dense", "motion": motion, "step_minutes": 5, "cell_km": 4.0,
            "motion_spread": 1.0, "detail_lifetime": 30.0, "detail": "renew",
            "extrapolation_lifetime": 60.0, "blend_spread": 0.5}


@torch.inference_mode()
def test_antithetic_members_start_from_mirrored_noise_motion_and_detail(tiny_model, monkeypatch) -> None:
    """Every random draw of member 1 is member 0's mirror image; member 2 (odd, last) keeps its own."""
    seen: dict[str, list[torch.Tensor]] = {"noise": [], "motion": [], "white": []}
    sample_latents, laplace, shaped = (model.sampler.sample_latents, model.sampler.laplace_from_uniform,
                                       model.detail.shaped_noise)

    def spy_sample(denoiser, scheduler, cond, noise, **kwargs):
        seen["noise"].append(noise.clone())
        return sample_latents(denoiser, scheduler, cond, noise, **kwargs)

    def spy_laplace(u):
        out = laplace(u)
        seen["motion"].append(out.clone())
        return out

    def spy_shaped(spectrum, amplitude, white):
        seen["white"].append(white.clone())
        return shaped(spectrum, amplitude, white)

    monkeypatch.setattr(model.sampler, "sample_latents", spy_sample)
    monkeypatch.setattr(model.sampler, "laplace_from_uniform", spy_laplace)
    monkeypatch.setattr(model.detail, "shaped_noise", spy_shaped)
    x = torch.rand(2, tiny_model.config.t_in, 64, 64, generator=torch.Generator().manual_seed(5))
    tiny_model.forecast(x, members=3, seed=[4, 9], antithetic=True, **_options())
    noise = seen["noise"][0].reshape(2, 3, *seen["noise"][0].shape[1:])  # (B * K, ...) -> (B, K, ...)
    torch.testing.assert_close(noise[:, 1], -noise[:, 0], rtol=0, atol=0)
    assert not torch.allclose(noise[:, 2], -noise[:, 0]) and not torch.allclose(noise[:, 2], noise[:, 0])
    motion = seen["motion"][0]  # (B, K, 2)
    torch.testing.assert_close(motion[:, 1], -motion[:, 0], rtol=0, atol=1e-6)
    assert len(seen["white"]) == tiny_model.config.t_out  # one draw per lead
    for white in seen["white"]:  # (B, K, H, W)
        torch.testing.assert_close(white[:, 1], -white[:, 0], rtol=0, atol=0)


@torch.inference_mode()
def test_antithetic_pairs_depend_only_on_their_own_seed_and_members(tiny_model) -> None:
    x = torch.rand(2, tiny_model.config.t_in, 64, 64, generator=torch.Generator().manual_seed(6))
    options = {**_options(), "blend_spread": 0.0}  # blend_spread shares the ensemble mean among members
    own = tiny_model.forecast(x, members=3, seed=[4, 9], **options)
    paired = tiny_model.forecast(x, members=3, seed=[4, 9], antithetic=True, **options)
    torch.testing.assert_close(paired.members[:, 0::2], own.members[:, 0::2], rtol=0, atol=1e-5)
    assert not torch.allclose(paired.members[:, 1], own.members[:, 1])  # member 1 mirrors member 0
    two = tiny_model.forecast(x, members=2, seed=[4, 9], antithetic=True, **options)
    torch.testing.assert_close(two.members, paired.members[:, :2], rtol=0, atol=1e-5)  # whatever K is
    alone = tiny_model.forecast(x[1:], members=3, seed=9, antithetic=True,
                                **{**options, "motion": options["motion"][1:]})
    torch.testing.assert_close(alone.members[0], paired.members[1], rtol=0, atol=1e-5)  # not its batch-mates
    torch.testing.assert_close(paired.first_estimate, own.first_estimate, rtol=0, atol=0)


def test_antithetic_default_reads_the_manifest_and_the_words_of_a_form(tiny_config) -> None:
    defaults = NowcastDefaults.from_manifest({"nowcast": {"antithetic": True}}, tiny_config)
    assert defaults.resolve().antithetic is True
    assert defaults.resolve(antithetic="false").antithetic is False
    assert defaults.resolve(antithetic=0).antithetic is False
    assert NowcastDefaults.from_manifest({}, tiny_config).antithetic is False  # older: independent draws
    with pytest.raises(ValueError, match="must be true or false, got 'maybe'"):
        defaults.resolve(antithetic="maybe")
    with pytest.raises(ValueError, match="must be true or false, got 2"):
        defaults.resolve(antithetic=2)
