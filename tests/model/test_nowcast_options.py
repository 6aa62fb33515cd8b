"""A nowcast's options and a checkpoint's defaults for them (model/options.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.config import STLDMConfig
from model.options import OPTIONS, REQUEST_OPTIONS, NowcastDefaults

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def config() -> STLDMConfig:
    return STLDMConfig.small()


def test_every_option_has_a_default_and_a_request_cannot_set_the_steps(config):
    defaults = NowcastDefaults.from_manifest({}, config)
    assert set(OPTIONS) - set(REQUEST_OPTIONS) == {"steps"}
    opts = defaults.resolve(seed=3)
    for name in OPTIONS:
        assert getattr(opts, name) == getattr(defaults, name), name
    assert opts.seed == 3


def test_older_manifests_guide_every_step_and_a_block_sets_the_share(config):
    assert NowcastDefaults.from_manifest({}, config).guidance_share == 1.0
    defaults = NowcastDefaults.from_manifest({"nowcast": {"guidance_share": 0.4, "steps": 5}}, config)
    assert (defaults.guidance_share, defaults.steps) == (0.4, 5)
    assert defaults.resolve().guidance_share == 0.4
    assert defaults.resolve(guidance_share=None).guidance_share == 0.4  # None: the default
    assert defaults.resolve(guidance_share=1).guidance_share == 1.0


@pytest.mark.parametrize("bad", [-0.1, 1.01])
def test_a_share_outside_0_1_is_refused_naming_the_option(config, bad):
    with pytest.raises(ValueError, match=r"guidance_share must be in \[0, 1\]"):
        NowcastDefaults.from_manifest({}, config).resolve(guidance_share=bad)


def test_an_unknown_option_name_is_refused_listing_the_options(config):
    with pytest.raises(TypeError, match="guidance_scale"):
        NowcastDefaults.from_manifest({}, config).resolve(guidance_scale=2.0)


def test_the_shipped_checkpoint_names_every_option():
    block = json.loads((ROOT / "checkpoints" / "default" / "manifest.json").read_text())["nowcast"]
    assert set(OPTIONS) <= set(block)


def test_detail_defaults_to_fade_for_older_checkpoints_and_a_bad_one_is_refused(config):
    assert NowcastDefaults.from_manifest({}, config).detail == "fade"
    defaults = NowcastDefaults.from_manifest({"nowcast": {"detail": "renew"}}, config)
    assert defaults.resolve().detail == "renew"
    assert defaults.resolve(detail="fade").detail == "fade"
    with pytest.raises(ValueError, match=r"detail must be one of \('fade', 'renew'\)"):
        defaults.resolve(detail="sideways")
