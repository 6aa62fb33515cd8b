"""Checkpoint folders: save, verified load, and refusal of corrupt or mismatched folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model.checkpoint import CheckpointError, load_checkpoint, read_manifest, save_checkpoint
from model.config import STLDMConfig


@pytest.fixture
def checkpoint(tiny_model, tmp_path) -> Path:
    return save_checkpoint(tiny_model, tmp_path / "ckpt", extra={"train_steps": 12})


def rewrite_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_folder_holds_config_weights_and_manifest(checkpoint):
    assert {p.name for p in checkpoint.iterdir()} == {"config.json", "model.safetensors",
                                                       "manifest.json"}


def test_round_trip_restores_identical_weights_and_config(tiny_model, checkpoint):
    loaded = load_checkpoint(checkpoint)
    assert loaded.config == tiny_model.config
    assert not loaded.training
    original, restored = tiny_model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for key in original:
        assert torch.equal(original[key], restored[key]), key


def test_round_trip_gives_the_same_forecast_for_the_same_seed(tiny_model, checkpoint, tiny_config):
    x = torch.rand(1, tiny_config.t_in, 64, 64, generator=torch.Generator().manual_seed(0))
    loaded = load_checkpoint(checkpoint)
    expected = tiny_model.forecast(x, members=2, steps=3, seed=9)
    actual = loaded.forecast(x, members=2, steps=3, seed=9)
    assert torch.equal(actual.members, expected.members)
    assert torch.equal(actual.first_estimate, expected.first_estimate)


def test_manifest_names_version_preset_transform_and_weights_hash(tiny_model, checkpoint):
    manifest = read_manifest(checkpoint)
    assert manifest["preset"] == "small"
    assert manifest["model_version"].startswith("stldm-small-")
    assert manifest["data_transform"] == tiny_model.config.to_dict()["transform"]
    assert len(manifest["weights_sha256"]) == 64
    assert manifest["parameters"] == tiny_model.num_parameters()
    assert manifest["train_steps"] == 12  # extra fields travel with the checkpoint
    assert load_checkpoint(checkpoint).model_version == manifest["model_version"]


def test_explicit_model_version_is_kept(tiny_model, tmp_path):
    path = save_checkpoint(tiny_model, tmp_path / "v", model_version="stldm-test-1")
    assert read_manifest(path)["model_version"] == "stldm-test-1"
    assert load_checkpoint(path).model_version == "stldm-test-1"


def test_config_file_is_the_full_model_config(tiny_model, checkpoint):
    data = json.loads((checkpoint / "config.json").read_text())
    assert STLDMConfig.from_dict(data) == tiny_model.config


def test_flipped_byte_in_the_weights_is_refused(checkpoint):
    weights = checkpoint / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="SHA-256.*corrupt"):
        load_checkpoint(checkpoint)


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "manifest.json"])
def test_missing_file_is_refused(checkpoint, name):
    (checkpoint / name).unlink()
    with pytest.raises(CheckpointError, match=name):
        load_checkpoint(checkpoint)


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / "nowhere")


def test_config_of_a_different_network_size_is_refused(checkpoint):
    """The manifest hash still holds; the weights do not fit what the edited config builds."""
    rewrite_json(checkpoint / "config.json",
                 lambda data: data["denoiser"].update(base_channels=32))
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(checkpoint)


def test_config_with_an_unknown_key_is_refused(checkpoint):
    rewrite_json(checkpoint / "config.json", lambda data: data.update(dropout=0.1))
    with pytest.raises(CheckpointError, match="invalid config"):
        load_checkpoint(checkpoint)


def test_manifest_of_another_format_is_refused(checkpoint):
    rewrite_json(checkpoint / "manifest.json", lambda data: data.update(format_version=99))
    with pytest.raises(CheckpointError, match="manifest"):
        load_checkpoint(checkpoint)


def test_unreadable_manifest_is_refused(checkpoint):
    (checkpoint / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable manifest"):
        load_checkpoint(checkpoint)


def test_saving_over_an_existing_checkpoint_replaces_it(tiny_model, checkpoint):
    with torch.no_grad():
        next(tiny_model.parameters()).add_(1.0)
    save_checkpoint(tiny_model, checkpoint)
    loaded = load_checkpoint(checkpoint)
    assert torch.equal(next(loaded.parameters()), next(tiny_model.parameters()))
