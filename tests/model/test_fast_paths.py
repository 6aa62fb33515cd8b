"""The fast denoiser and DDIM loop (issue 14) compute what the plain code computed.

Every rewritten block is compared with the pre-speed code kept in ``eager_oracle`` on the same
weights, within 1e-5, for both memory layouts, the presets' shapes, the options and null rows.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from model.blocks import (
    FullSpatialAttention,
    PatchLinearAttention,
    ResBlock,
    TemporalAttention,
    group_norm,
)
from model.config import DenoiserConfig, OptionsConfig, STLDMConfig
from model.sampler import sample_latents
from model.stldm import STLDM
from tests.model import eager_oracle as oracle

ATOL = 1e-5
CHANNELS_LAST = [False, True]


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float = ATOL) -> None:
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=0, atol=atol)


def images(n: int, c: int, size: int, *, channels_last: bool, seed: int = 0) -> torch.Tensor:
    x = torch.randn(n, c, size, size, generator=torch.Generator().manual_seed(seed))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def randomise(module: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Trained-like values where the initialisation is trivial: norm gains and biases near 1
    and 0 instead of exactly, zero-initialised outputs (step embedding, options) small."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            noise = torch.randn(p.shape, generator=gen)
            if not p.any():
                p.copy_(0.05 * noise)
            elif p.ndim == 1 or (p == 1).all():
                p.add_(0.1 * noise)
    return module.eval()


# ---------------------------------------------------------------- blocks


@pytest.mark.parametrize("channels_last", CHANNELS_LAST)
@pytest.mark.parametrize(("channels", "groups"), [(32, 8), (16, 8), (64, 8), (16, 2), (12, 4)])
@pytest.mark.parametrize("modulated", [False, True])
@torch.inference_mode()
def test_group_norm_equals_torch_group_norm_then_the_modulation(channels_last, channels, groups, modulated):
    norm = randomise(torch.nn.GroupNorm(groups, channels))
    x = 3.0 * images(6, channels, 8, channels_last=channels_last) + 1.5  # a mean far from zero
    gen = torch.Generator().manual_seed(4)
    scale, shift = (torch.randn(6, channels, 1, 1, generator=gen) if modulated else None for _ in range(2))
    expected = norm(x) if scale is None else norm(x) * (scale + 1) + shift
    close(group_norm(x, norm, scale, shift), expected)


@pytest.mark.parametrize("channels_last", CHANNELS_LAST)
@pytest.mark.parametrize("time", [True, False])
@torch.inference_mode()
def test_resblock_matches_the_plain_code(channels_last, time):
    block = randomise(ResBlock(24, 16, time_dim=32 if time else None, groups=8))
    x = images(6, 24, 8, channels_last=channels_last)
    temb = torch.randn(6, 32) if time else None
    close(block(x, temb), oracle.resblock(block, x, temb))


@pytest.mark.parametrize("channels_last", CHANNELS_LAST)
@torch.inference_mode()
def test_resblock_with_a_precomputed_constant_input_equals_the_concatenation(channels_last):
    block = randomise(ResBlock(40, 16, time_dim=32, groups=8))
    x = images(6, 16, 8, channels_last=channels_last)
    const = images(6, 24, 8, channels_last=channels_last, seed=3)
    temb = torch.randn(6, 32)
    expected = oracle.resblock(block, torch.cat((x, const), dim=1), temb)
    close(block(x, temb, const=block.constant_terms(const)), expected)


@pytest.mark.parametrize("channels_last", CHANNELS_LAST)
@pytest.mark.parametrize(("heads", "head_dim", "patch", "size"), [(1, 16, 8, 16), (4, 8, 4, 8), (2, 8, 2, 2)])
@torch.inference_mode()
def test_patch_linear_attention_matches_the_plain_code(channels_last, heads, head_dim, patch, size):
    m = randomise(PatchLinearAttention(32, patch=patch, heads=heads, head_dim=head_dim))
    x = images(5, 32, size, channels_last=channels_last)
    close(m(x), oracle.patch_attention(m, x))


@pytest.mark.parametrize("channels_last", CHANNELS_LAST)
@pytest.mark.parametrize("heads", [1, 4])
@torch.inference_mode()
def test_full_spatial_attention_matches_the_plain_code(channels_last, heads):
    m = randomise(FullSpatialAttention(32, heads=heads, head_dim=8))
    x = images(5, 32, 4, channels_last=channels_last)
    close(m(x), oracle.full_attention(m, x))


@pytest.mark.parametrize("channels_last", CHANNELS_LAST)
@pytest.mark.parametrize(("norm", "heads", "bias", "causal"), [
    ("channel", 1, False, False), ("time", 4, False, False), ("channel", 2, True, False),
    ("time", 1, False, True), ("channel", 2, True, True)])
@torch.inference_mode()
def test_temporal_attention_matches_the_plain_code(channels_last, norm, heads, bias, causal):
    m = randomise(TemporalAttention(16, heads=heads, head_dim=8, norm=norm, position_bias=bias,
                                    causal=causal))
    b, t = 3, 7
    x = images(b * t, 16, 4, channels_last=channels_last).reshape(b, t, 16, 4, 4)
    close(m(x), oracle.temporal_attention(m, x))


# ---------------------------------------------------------------- whole denoiser and loop


def small_latent_config(**options) -> STLDMConfig:
    """The small preset for 2 -> 3 frames of 128 x 128 (16 x 16 x 32 latents), as served."""
    return dataclasses.replace(STLDMConfig.small(t_in=2, t_out=3), options=OptionsConfig(**options))


def paper_like_config() -> STLDMConfig:
    """The paper's structure (norm over time, 4 heads, full attention at the deepest level) at
    toy widths."""
    config = STLDMConfig.small(t_in=2, t_out=3, size=64)
    return dataclasses.replace(
        config, step_minutes=(),
        denoiser=DenoiserConfig(base_channels=8, channel_mults=(1, 2), groups=4, heads=4, head_dim=8,
                                patch_size=4, temporal_norm="time"))


OPTIONS = {"temporal_shift": True, "attention_order": "sts", "temporal_position_bias": True,
           "dual_condition": True, "exceedance_condition": True}
CONFIGS = {
    "small": small_latent_config,
    "paper-like": paper_like_config,
    "all-options": lambda: dataclasses.replace(small_latent_config(**OPTIONS), size=64),
}


def denoiser_inputs(config: STLDMConfig, batch: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    c, h = config.latent_channels, config.size // config.vae.downsample
    x = torch.randn(batch, config.t_out, c, h, h, generator=gen)
    cond = torch.randn(batch, config.t_out, c, h, h, generator=gen)
    t = torch.tensor([49, 21, 3, 0])[:batch]
    null = torch.tensor([False, True, False, True])[:batch]
    step = torch.full((batch,), 5.0) if config.step_minutes else None
    return x, t, cond, null, step


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("with_null", [False, True])
@torch.inference_mode()
def test_denoiser_matches_the_plain_code(name, with_null):
    config = CONFIGS[name]()
    torch.manual_seed(0)
    model = randomise(STLDM(config))
    x, t, cond, null, step = denoiser_inputs(config)
    null = null if with_null else None
    extra = None
    if model.denoiser.extra_channels:
        extra = torch.randn(x.shape[0], model.denoiser.extra_channels, *x.shape[-2:])
    expected = oracle.denoiser_forward(model.denoiser, x, t, cond, null=null, extra=extra, step=step)
    close(model.denoiser(x, t, cond, null=null, extra=extra, step=step), expected)


@pytest.mark.parametrize("name", list(CONFIGS))
@torch.inference_mode()
def test_denoiser_without_condition_matches_the_plain_code(name):
    config = CONFIGS[name]()
    torch.manual_seed(0)
    model = randomise(STLDM(config))
    x, t, _, _, step = denoiser_inputs(config)
    close(model.denoiser(x, t, None, step=step),
          oracle.denoiser_forward(model.denoiser, x, t, None, step=step))


@pytest.mark.parametrize("guidance", [0.0, 1.0])
@torch.inference_mode()
def test_sampling_loop_matches_the_plain_loop(guidance):
    config = small_latent_config()
    torch.manual_seed(0)
    model = STLDM(config).eval()  # the loop's numerics at trained-like (initial) weights
    x, _, cond, _, step = denoiser_inputs(config, batch=2)
    args = {"steps": 4, "guidance": guidance, "step": step}
    expected = oracle.sample_latents(model.denoiser, model.scheduler, cond, x, **args)
    close(sample_latents(model.denoiser, model.scheduler, cond, x, **args), expected)
