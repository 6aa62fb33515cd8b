"""The SSLDM-ISI options (docs/OPTIONS.md): each builds, trains, samples and round-trips; the
default is STLDM exactly; shifts, position bias, null rows and partial init behave as designed."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch.utils.data import Dataset

from model.blocks import TemporalAttention
from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import OptionsConfig, STLDMConfig
from model.spacetime import temporal_shift
from model.stldm import STLDM
from training.config import TrainConfig, config_from_args, parse_options
from training.objective import stldm_loss
from training.state import load_partial
from training.train import train

ALL = {"temporal_shift": True, "attention_order": "sts", "temporal_position_bias": True,
       "translator_kind": "stc", "dual_condition": True, "translator_residual": True,
       "intensity_loss": True, "exceedance_condition": True}
SINGLE = [{key: value} for key, value in ALL.items()]
# options whose new parts start as identity (zero-initialised outputs, zeroed new input slices)
IDENTITY_AT_START = {"attention_order": "sts", "temporal_position_bias": True,
                     "dual_condition": True, "exceedance_condition": True}


@pytest.fixture
def base_config(micro_config) -> STLDMConfig:
    """The micro model (32 x 32 frames, 8 x 8 x 4 latents) for 3 -> 3 frames."""
    return dataclasses.replace(micro_config, t_in=3, t_out=3)


def with_options(config: STLDMConfig, **options) -> STLDMConfig:
    return dataclasses.replace(config, options=OptionsConfig(**options))


def frames(config: STLDMConfig, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (config.size, config.size)
    x = torch.rand(batch, config.t_in, *shape, generator=g)
    return x, torch.rand(batch, config.t_out, *shape, generator=g)


@pytest.mark.parametrize("options", [*SINGLE, ALL], ids=[*ALL, "all"])
def test_option_trains_samples_and_round_trips_through_a_checkpoint(base_config, options, tmp_path):
    config = with_options(base_config, **options)
    torch.manual_seed(0)
    model = STLDM(config).train()
    x, y = frames(config)
    terms = stldm_loss(model, x, y)
    terms.total.backward()
    assert torch.isfinite(terms.total)
    grads = [p.grad for p in model.denoiser.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    model.eval()
    first = model.forecast(x, members=2, steps=2, seed=[1, 2])
    assert first.members.shape == (2, 2, config.t_out, config.size, config.size)
    assert torch.isfinite(first.members).all()
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "ckpt"))
    assert loaded.config == config
    again = loaded.forecast(x, members=2, steps=2, seed=[1, 2])
    assert torch.equal(first.members, again.members)
    assert torch.equal(first.first_estimate, again.first_estimate)


def test_temporal_shift_moves_an_eighth_of_the_channels_each_way_with_zeros_at_the_ends():
    b, t, c = 2, 4, 16
    x = torch.randn(b * t, c, 3, 3)
    out = temporal_shift(x, t).reshape(b, t, c, 3, 3)
    video = x.reshape(b, t, c, 3, 3)
    torch.testing.assert_close(out[:, :-1, :2], video[:, 1:, :2], rtol=0, atol=0)  # from t+1
    assert (out[:, -1, :2] == 0).all()
    torch.testing.assert_close(out[:, 1:, 2:4], video[:, :-1, 2:4], rtol=0, atol=0)  # from t-1
    assert (out[:, 0, 2:4] == 0).all()
    torch.testing.assert_close(out[:, :, 4:], video[:, :, 4:], rtol=0, atol=0)  # untouched


def test_position_bias_makes_temporal_attention_sensitive_to_frame_order():
    torch.manual_seed(0)
    plain = TemporalAttention(8, heads=2, head_dim=4, norm="channel")
    biased = TemporalAttention(8, heads=2, head_dim=4, norm="channel", position_bias=True)
    biased.load_state_dict(plain.state_dict(), strict=False)
    x, perm = torch.randn(1, 5, 8, 2, 2), torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        torch.testing.assert_close(biased(x), plain(x))  # zero-initialised: neutral at first
        torch.testing.assert_close(plain(x[:, perm]), plain(x)[:, perm])  # permutation-equivariant
        torch.nn.init.normal_(biased.position_bias.linear2.weight)
        assert not torch.allclose(biased(x[:, perm]), biased(x)[:, perm], atol=1e-4)


def test_default_options_add_no_parameters_and_old_configs_load_as_defaults(base_config):
    with torch.device("meta"):
        assert STLDM(STLDMConfig.paper(5, 20)).num_parameters() == 80_980_769
    assert STLDMConfig.paper().options == OptionsConfig()
    data = base_config.to_dict()
    del data["options"]
    assert STLDMConfig.from_dict(data) == base_config
    config = with_options(base_config, **ALL, intensity_thresholds=(0.5, 2.0))
    assert STLDMConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert STLDM(base_config).context is None


@pytest.mark.parametrize("bad", [{"attention_order": "ts"}, {"translator_kind": "unet"},
                                 {"intensity_thresholds": (4.0, 1.0)}, {"dual_condition": "yes"}])
def test_invalid_option_values_raise_naming_the_option(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        OptionsConfig(**bad)


@torch.no_grad()
def test_null_rows_drop_the_dual_condition_together_with_the_translator_condition(base_config):
    config = with_options(base_config, dual_condition=True, exceedance_condition=True)
    torch.manual_seed(0)
    model = STLDM(config).eval()
    torch.nn.init.normal_(model.context.encoder.head.weight)  # a trained, non-silent encoder
    x, _ = frames(config)
    z = model.vae.encode(x.reshape(-1, 1, config.size, config.size))[0].reshape(2, config.t_in, -1, 8, 8)
    extra = model.extra_condition(x, z)
    assert extra.shape == (2, model.denoiser.extra_channels, 8, 8)
    x_t = torch.randn(2, config.t_out, config.latent_channels, 8, 8)
    cond, t = torch.randn_like(x_t), torch.tensor([5, 30])
    mixed = model.denoiser(x_t, t, cond, null=torch.tensor([True, False]), extra=extra)
    torch.testing.assert_close(mixed[0], model.denoiser(x_t, t, None)[0])  # both dropped
    torch.testing.assert_close(mixed[1], model.denoiser(x_t, t, cond, extra=extra)[1])
    assert not torch.allclose(mixed[1], model.denoiser(x_t, t, cond)[1])  # extra does matter


def test_partial_init_copies_matching_tensors_and_identity_options_start_as_the_plain_model(
        base_config):
    torch.manual_seed(0)
    plain = STLDM(base_config).eval()
    torch.manual_seed(1)
    model = STLDM(with_options(base_config, **IDENTITY_AT_START)).eval()
    counts = load_partial(model, plain.state_dict())
    assert counts["widened"] == 2  # down[0].res1: conv1 and skip see the extra channels
    assert counts["dropped"] == 0 and counts["new"] > 0
    assert counts["copied"] == len(plain.state_dict()) - 2
    x, _ = frames(base_config)
    a = plain.forecast(x, members=2, steps=3, seed=7)
    b = model.forecast(x, members=2, steps=3, seed=7)
    torch.testing.assert_close(b.first_estimate, a.first_estimate, rtol=0, atol=0)
    torch.testing.assert_close(b.members, a.members, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["gsta", "stc"])
def test_residual_translator_from_a_plain_checkpoint_starts_at_persistence_of_the_last_latent(
        base_config, kind):
    torch.manual_seed(0)
    plain = STLDM(with_options(base_config, translator_kind=kind)).eval()
    model = STLDM(with_options(base_config, translator_kind=kind, translator_residual=True)).eval()
    assert load_partial(model, plain.state_dict())["copied"] == len(plain.state_dict())
    z = torch.randn(2, base_config.t_in, base_config.latent_channels, 8, 8)
    mean, logvar = model.translator(z)
    # copied weights: the old prediction plus the last latent
    torch.testing.assert_close(mean, plain.translator(z)[0] + z[:, -1:])
    model.translator.zero_mean_output()
    mean, logvar_after = model.translator(z)
    torch.testing.assert_close(mean, z[:, -1:].expand_as(mean), rtol=0, atol=0)
    torch.testing.assert_close(logvar_after, logvar)  # the variance head is kept
    x, _ = frames(base_config)
    first = model.forecast(x, members=1, steps=1).first_estimate
    # every lead of the first estimate is the same frame: the decoded last context latent
    torch.testing.assert_close(first, first[:, :1].expand_as(first), rtol=0, atol=1e-6)


def test_options_flag_parses_key_values_and_names_bad_ones():
    options = parse_options("temporal_shift=true, attention_order=sts,intensity_thresholds=1:4:8")
    assert options == OptionsConfig(temporal_shift=True, attention_order="sts")
    assert parse_options("") == OptionsConfig()
    assert config_from_args(["--options", "dual_condition=1"]).options == "dual_condition=1"
    with pytest.raises(ValueError, match="bogus"):
        TrainConfig(options="bogus=1")
    with pytest.raises(ValueError, match="temporal_shift"):
        parse_options("temporal_shift=maybe")
    with pytest.raises(ValueError, match="intensity_thresholds"):
        parse_options("intensity_thresholds=1:x")
    with pytest.raises(ValueError, match="attention_order"):
        parse_options("attention_order=ts")


class RandomWindows(Dataset):
    def __init__(self, n: int, config: STLDMConfig) -> None:
        self.n, self.config = n, config

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        x, y = frames(self.config, batch=1, seed=i)
        valid = torch.ones(self.config.t_in + self.config.t_out, self.config.size, self.config.size,
                           dtype=torch.bool)
        return {"x": x[0], "y": y[0], "valid": valid}


def test_fine_tuning_with_options_from_a_plain_checkpoint_records_them(base_config, tmp_path, caplog):
    caplog.set_level("INFO", logger="training.train")
    torch.manual_seed(0)
    init = save_checkpoint(STLDM(base_config), tmp_path / "init")
    run = TrainConfig(init=str(init), t_in=base_config.t_in, t_out=base_config.t_out,
                      size=base_config.size, out=str(tmp_path / "run"), batch_size=2, steps=2,
                      warmup_steps=1, eval_every=100, val_batches=1, val_members=0, device="cpu",
                      max_minutes=0, log_every=1, options="exceedance_condition=true,temporal_shift=true")
    out = train(run, datasets=(RandomWindows(4, base_config), RandomWindows(2, base_config)))
    model = load_checkpoint(out / "last")
    assert model.config.options == OptionsConfig(exceedance_condition=True, temporal_shift=True)
    residual = train(dataclasses.replace(run, out=str(tmp_path / "residual"),
                                         options="translator_residual=true"),
                     datasets=(RandomWindows(4, base_config), RandomWindows(2, base_config)))
    assert load_checkpoint(residual / "last").config.options == OptionsConfig(translator_residual=True)
    assert "mean head starts at zero" in caplog.text
    with pytest.raises(ValueError, match="resumed run"):
        train(dataclasses.replace(run, resume=True, options="dual_condition=true"),
              datasets=(RandomWindows(4, base_config), RandomWindows(2, base_config)))
