"""Shape contracts, parameter counts and configuration of the STLDM networks."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from model.config import DenoiserConfig, STLDMConfig
from model.stldm import STLDM


@pytest.fixture(scope="module")
def paper_model() -> STLDM:
    """The paper's 81 M-parameter network on CPU, untrained; only small inputs go through it."""
    torch.manual_seed(0)
    return STLDM(STLDMConfig.paper()).eval()


def meta_model(config: STLDMConfig) -> STLDM:
    with torch.device("meta"):
        return STLDM(config)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- shapes


@torch.inference_mode()
@pytest.mark.parametrize("preset", ["small", "paper"])
def test_vae_encodes_frames_to_latents_and_decodes_back_to_pixels(preset):
    torch.manual_seed(0)
    config = STLDMConfig.preset_named(preset, t_in=2, t_out=2, size=64)
    vae = STLDM(config).vae.eval()
    f = config.vae.downsample
    x = torch.rand(3, 1, 64, 64)
    mean, logvar = vae.encode(x)
    assert mean.shape == logvar.shape == (3, config.latent_channels, 64 // f, 64 // f)
    decoded = vae.decode(mean)
    assert decoded.shape == (3, 1, 64, 64)
    assert decoded.min() >= 0 and decoded.max() <= 1


def test_vae_downsample_follows_the_number_of_layers():
    assert STLDMConfig.paper().vae.downsample == 4  # 32 x 32 latent for 128 x 128 (STLDM.md 1)
    assert STLDMConfig.small().vae.downsample == 8


@torch.inference_mode()
def test_translator_maps_input_latents_to_mean_and_logvar_of_output_latents(tiny_model, tiny_config):
    c, h = tiny_config.latent_channels, 64 // tiny_config.vae.downsample
    z = torch.randn(2, tiny_config.t_in, c, h, h)
    mu, logvar = tiny_model.translator(z)
    assert mu.shape == logvar.shape == (2, tiny_config.t_out, c, h, h)
    assert not torch.equal(mu, logvar)


@torch.inference_mode()
def test_denoiser_output_has_the_input_shape(tiny_model, tiny_config):
    c = tiny_config.latent_channels
    x = torch.randn(2, tiny_config.t_out, c, 8, 8)
    v = tiny_model.denoiser(x, torch.tensor([3, 40]), torch.randn_like(x))
    assert v.shape == x.shape
    assert torch.isfinite(v).all()


@torch.inference_mode()
def test_denoiser_null_rows_equal_the_unconditional_prediction(tiny_model, tiny_config):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, tiny_config.t_out, tiny_config.latent_channels, 8, 8, generator=gen)
    cond = torch.randn(x.shape, generator=gen)
    t = torch.tensor([10, 30])
    mixed = tiny_model.denoiser(x, t, cond, null=torch.tensor([True, False]))
    torch.testing.assert_close(mixed[0], tiny_model.denoiser(x, t, None)[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(mixed[1], tiny_model.denoiser(x, t, cond)[1], rtol=0, atol=1e-5)
    assert (mixed[0] - mixed[1]).abs().max() > 0  # the condition does change the prediction


@torch.inference_mode()
def test_denoiser_rows_do_not_depend_on_the_rest_of_the_batch(tiny_model, tiny_config):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, tiny_config.t_out, tiny_config.latent_channels, 8, 8, generator=gen)
    cond = torch.randn(x.shape, generator=gen)
    t = torch.tensor([5, 25, 45])
    batched = tiny_model.denoiser(x, t, cond)
    alone = tiny_model.denoiser(x[1:2], t[1:2], cond[1:2])
    torch.testing.assert_close(batched[1:2], alone, rtol=0, atol=1e-5)


@torch.inference_mode()
@pytest.mark.parametrize("size", [64, 128])
def test_small_preset_is_fully_convolutional(size):
    torch.manual_seed(0)
    model = STLDM(STLDMConfig.small(t_in=2, t_out=2, size=64)).eval()
    out = model.forecast(torch.rand(1, 2, size, size), members=1, steps=2)
    assert out.members.shape == (1, 1, 2, size, size)
    assert out.first_estimate.shape == (1, 2, size, size)
    assert torch.isfinite(out.members).all()


@torch.inference_mode()
@pytest.mark.parametrize("size", [64, 128, 256])
def test_paper_vae_and_denoiser_run_at_several_frame_sizes(paper_model, size):
    x = torch.rand(2, 1, size, size)
    mean, _ = paper_model.vae.encode(x)
    latent = size // 4
    assert mean.shape == (2, 32, latent, latent)
    z = mean.reshape(1, 2, 32, latent, latent)  # two frames of one sample
    v = paper_model.denoiser(z, torch.tensor([49]), z)
    assert v.shape == z.shape
    assert torch.isfinite(v).all()
    assert paper_model.vae.decode(v.flatten(0, 1)).shape == (2, 1, size, size)


@torch.inference_mode()
def test_paper_translator_shapes_on_meta_device():
    model = meta_model(STLDMConfig.paper())
    mu, logvar = model.translator(torch.empty(2, 5, 32, 32, 32, device="meta"))
    assert mu.shape == logvar.shape == (2, 20, 32, 32, 32)


# ---------------------------------------------------------------- parameter counts


@pytest.mark.parametrize(
    ("t_in", "t_out", "expected"),
    [(5, 20, 80_980_769), (13, 12, 83_843_105)],  # HKO-7 / MeteoNet, SEVIR protocols
)
def test_paper_parameter_count(t_in, t_out, expected):
    assert meta_model(STLDMConfig.paper(t_in, t_out)).num_parameters() == expected


def test_paper_part_sizes_match_the_design():
    model = meta_model(STLDMConfig.paper())
    assert count(model.denoiser) == 42_280_992
    assert count(model.translator) == pytest.approx(38.6e6, abs=0.05e6)
    assert count(model.vae) == pytest.approx(93e3, abs=1e3)


def test_spatial_only_denoiser_drops_exactly_the_temporal_attention():
    config = STLDMConfig.paper()
    full = meta_model(config)
    spatial = meta_model(dataclasses.replace(
        config, denoiser=dataclasses.replace(config.denoiser, temporal_attention=False)))
    temporal = sum(p.numel() for n, p in full.denoiser.named_parameters() if "temporal_attn" in n)
    assert temporal > 0
    assert not any("temporal_attn" in n for n, _ in spatial.named_parameters())
    assert count(spatial.denoiser) == count(full.denoiser) - temporal
    assert count(spatial.denoiser) == pytest.approx(41.3e6, abs=0.05e6)


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "build",
    [lambda: STLDMConfig.paper(size=100), lambda: STLDMConfig.small(size=96)],
    ids=["paper-100", "small-96"],
)
def test_size_not_a_multiple_of_size_multiple_raises(build):
    with pytest.raises(ValueError, match="multiple of"):
        build()


def test_size_multiple_of_the_presets():
    assert STLDMConfig.paper().size_multiple == 64
    assert STLDMConfig.small().size_multiple == 64


@pytest.mark.parametrize("t_in", [0, -1])
def test_non_positive_frame_counts_raise(t_in):
    with pytest.raises(ValueError, match="positive"):
        STLDMConfig.paper(t_in=t_in)


def test_unknown_temporal_norm_raises_naming_the_choices():
    with pytest.raises(ValueError, match=r"temporal_norm.*'time'.*'channel'.*'bogus'"):
        DenoiserConfig(temporal_norm="bogus")


def test_unknown_preset_raises_naming_the_presets():
    with pytest.raises(ValueError, match=r"paper.*small"):
        STLDMConfig.preset_named("huge")


@pytest.mark.parametrize("preset", ["paper", "small"])
def test_config_round_trips_through_json(preset):
    config = STLDMConfig.preset_named(preset, t_in=13, t_out=12, size=256)
    restored = STLDMConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert isinstance(restored.denoiser.channel_mults, tuple)


def test_config_from_dict_rejects_an_unknown_top_level_key():
    data = STLDMConfig.small().to_dict() | {"learning_rate": 1e-4}
    with pytest.raises(ValueError, match="learning_rate"):
        STLDMConfig.from_dict(data)


def test_config_from_dict_rejects_an_unknown_nested_key():
    data = STLDMConfig.small().to_dict()
    data["denoiser"]["dropout"] = 0.1
    with pytest.raises(ValueError, match="dropout"):
        STLDMConfig.from_dict(data)


@torch.inference_mode()
def test_temporal_norm_over_time_and_over_channels_differ_on_the_same_weights(tiny_config):
    """The reference's time-axis pre-norm (STLDM.md 7.1) is a real difference, not a rename."""
    by_channel = dataclasses.replace(
        tiny_config, denoiser=dataclasses.replace(tiny_config.denoiser, temporal_norm="channel"))
    by_time = dataclasses.replace(
        tiny_config, denoiser=dataclasses.replace(tiny_config.denoiser, temporal_norm="time"))
    torch.manual_seed(0)
    model_channel = STLDM(by_channel).eval()
    model_time = STLDM(by_time).eval()
    model_time.load_state_dict(model_channel.state_dict(), strict=True)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, tiny_config.t_out, tiny_config.latent_channels, 8, 8, generator=gen)
    t = torch.tensor([20])
    v_channel = model_channel.denoiser(x, t, x)
    v_time = model_time.denoiser(x, t, x)
    assert (v_channel - v_time).abs().max() > 1e-3
