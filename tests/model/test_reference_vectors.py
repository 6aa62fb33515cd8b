"""The port against the authors' reference code, part by part, on the tiny reference config.

The vectors (shared/design/reference_vectors, see its README) were computed with the reference
implementation in float32 on CPU; a faithful port matches every output to about 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.official import convert_state_dict, load_reference_config, read_state_dict
from model.sampler import sample_latents
from model.stldm import STLDM

ATOL = 2e-5


@pytest.fixture(scope="module")
def reference_model(reference_dir: Path) -> STLDM:
    config = load_reference_config(reference_dir / "tiny_reference_config.json")
    official = read_state_dict(reference_dir / "tiny_reference_state_dict.safetensors")
    model = STLDM(config)
    model.load_state_dict(convert_state_dict(official, config), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def cases(reference_dir: Path) -> dict[str, torch.Tensor]:
    with np.load(reference_dir / "tiny_reference_cases.npz") as data:
        return {key: torch.from_numpy(data[key]) for key in data.files}


def assert_matches(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=0, atol=ATOL)


def test_reference_config_builds_the_published_parameter_count(reference_model, reference_dir):
    assert reference_model.num_parameters() == 2_921_833
    official = read_state_dict(reference_dir / "tiny_reference_state_dict.safetensors")
    assert len(official) == 499


def test_reference_config_reads_the_tiny_layout(reference_model):
    config = reference_model.config
    assert (config.t_in, config.t_out, config.size) == (5, 6, 64)
    assert config.vae.channels == 8 and config.vae.downsample == 4
    assert config.denoiser.temporal_norm == "time"  # the reference code's quirk (STLDM.md 7.1)


@torch.inference_mode()
def test_encoder_matches_reference(reference_model, cases):
    mean, logvar = reference_model.vae.encode(cases["x"].reshape(10, 1, 64, 64))
    assert_matches(mean, cases["vae_mean"])
    assert_matches(logvar, cases["vae_logvar"])


@torch.inference_mode()
def test_decoder_matches_reference(reference_model, cases):
    assert_matches(reference_model.vae.decode(cases["z"]), cases["vae_decoded"])


@torch.inference_mode()
def test_translator_matches_reference(reference_model, cases):
    mu, logvar = reference_model.translator(cases["vae_mean"].reshape(2, 5, 8, 16, 16))
    assert_matches(mu, cases["translator_mu"])
    assert_matches(logvar, cases["translator_logvar"])


@torch.inference_mode()
def test_denoiser_with_condition_matches_reference(reference_model, cases):
    v = reference_model.denoiser(cases["x_t"], cases["t"], cases["translator_mu"])
    assert_matches(v, cases["v_cond"])


@torch.inference_mode()
def test_denoiser_without_condition_matches_reference_null(reference_model, cases):
    assert_matches(reference_model.denoiser(cases["x_t"], cases["t"], None), cases["v_null"])


@torch.inference_mode()
def test_denoiser_null_mask_matches_reference_null(reference_model, cases):
    v = reference_model.denoiser(cases["x_t"], cases["t"], cases["translator_mu"],
                                 null=torch.tensor([True, True]))
    assert_matches(v, cases["v_null"])


@torch.inference_mode()
def test_guided_ddim_loop_matches_reference(reference_model, cases):
    x0 = sample_latents(reference_model.denoiser, reference_model.scheduler, cases["translator_mu"],
                        cases["x_T"], steps=20, guidance=1.0)
    assert_matches(x0, cases["ddim_cfg_x0"])
    frames = reference_model.vae.decode(x0.flatten(0, 1)).reshape(2, 6, 1, 64, 64)
    assert_matches(frames, cases["ddim_cfg_frames"])


def test_schedule_matches_reference(reference_model, cases):
    assert_matches(reference_model.scheduler.alphas_cumprod, cases["alphas_cumprod"])
