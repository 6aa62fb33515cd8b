"""Shared fixtures: tiny STLDM configurations and models, and the reference vectors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from model.config import DenoiserConfig, STLDMConfig, TranslatorConfig, VAEConfig
from model.stldm import STLDM

# /work/main/tests/conftest.py -> /work/shared/design/reference_vectors
REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "design" / "reference_vectors"
OFFICIAL_KEYS_TSV = REFERENCE_DIR.parent / "official_checkpoint_keys_hko_5to20.tsv"


@pytest.fixture(scope="session", autouse=True)
def single_cpu_thread():
    """Run torch on one CPU thread during the tests.

    The tests are many small ops; on a 2-core machine with any other busy process, two
    OpenMP threads wait on each other and run up to 100x slower than one thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_config() -> STLDMConfig:
    """The ``small`` preset for 3 -> 4 frames of 64 x 64 (latent 8 x 8 x 8), 1.36 M parameters."""
    return STLDMConfig.small(t_in=3, t_out=4, size=64)


@pytest.fixture
def tiny_model(tiny_config: STLDMConfig) -> STLDM:
    """A seeded, untrained STLDM of ``tiny_config`` in eval mode."""
    torch.manual_seed(0)
    return STLDM(tiny_config).eval()


@pytest.fixture
def micro_config() -> STLDMConfig:
    """A 63 k-parameter STLDM, 2 -> 2 frames of 32 x 32, cheap enough to train in a test."""
    return dataclasses.replace(
        STLDMConfig.small(t_in=2, t_out=2, size=64),
        size=32,
        vae=VAEConfig(channels=4, num_layers=4),
        translator=TranslatorConfig(hidden=32, num_blocks=2, mlp_ratio=2.0),
        denoiser=DenoiserConfig(base_channels=8, channel_mults=(1, 2), groups=4, heads=1,
                                head_dim=8, patch_size=4, temporal_norm="channel"),
    )


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The reference-vector folder; skips the test when the shared design folder is absent."""
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"reference vectors not found at {REFERENCE_DIR}")
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def official_keys_tsv() -> Path:
    """The key/shape/dtype listing of the published HKO-7 5 -> 20 checkpoint."""
    if not OFFICIAL_KEYS_TSV.is_file():
        pytest.skip(f"official key listing not found at {OFFICIAL_KEYS_TSV}")
    return OFFICIAL_KEYS_TSV


@pytest.fixture
def write_event():
    """``write_event(path, values, *, unit, step_minutes, start, times, spacing_m, spacing_deg)``:
    a tiny CF-netCDF event in the shared events' format (``tests/events.py``)."""
    from tests.events import write_event as write

    return write
