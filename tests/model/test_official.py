"""Import of the authors' published checkpoint layout (model/official.py, STLDM.md 7.6).

The published HKO-7 5 -> 20 weights are not in the repository; a synthetic state dict with
exactly their keys, shapes and dtypes (from ``official_checkpoint_keys_hko_5to20.tsv``)
stands in for them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from model.checkpoint import load_checkpoint
from model.config import STLDMConfig
from model.official import DIFFUSION_BUFFERS, convert_state_dict, read_state_dict, rename_key
from model.scheduler import DDIMScheduler
from model.stldm import STLDM

PAPER_ENTRIES, PAPER_PARAMETERS = 611, 80_980_769


def read_key_listing(path: Path) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """(key, shape, dtype) rows of the tab-separated listing; '#' lines are comments."""
    dtypes = {"float32": torch.float32, "int64": torch.int64}
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape, dtype = line.split("\t")
        dims = tuple(int(d) for d in re.findall(r"\d+", shape))
        rows.append((key, dims, dtypes[dtype]))
    return rows


@pytest.fixture(scope="module")
def official_state_dict(official_keys_tsv) -> dict[str, torch.Tensor]:
    """A synthetic published checkpoint: random weights, zero BatchNorm counters and the
    true diffusion schedule."""
    gen = torch.Generator().manual_seed(0)
    schedule = DDIMScheduler(STLDMConfig.paper().diffusion).alphas_cumprod
    state = {}
    for key, shape, dtype in read_key_listing(official_keys_tsv):
        if dtype == torch.int64:
            state[key] = torch.zeros(shape, dtype=dtype)
        elif key == "alphas_cumprod":
            state[key] = schedule.clone()
        else:
            state[key] = torch.randn(shape, generator=gen) * 0.02
    return state


@pytest.fixture
def official_copy(official_state_dict) -> dict[str, torch.Tensor]:
    """A shallow copy that a test may edit (tensors are shared, never modify them in place)."""
    return dict(official_state_dict)


def test_key_listing_has_the_published_size(official_state_dict):
    assert len(official_state_dict) == PAPER_ENTRIES
    assert all(name in official_state_dict for name in DIFFUSION_BUFFERS)
    assert sum(1 for k in official_state_dict if k.endswith("num_batches_tracked")) == 16


def test_converted_state_dict_loads_strictly_into_the_paper_model(official_state_dict):
    config = STLDMConfig.paper()
    converted = convert_state_dict(official_state_dict, config)
    with torch.device("meta"):
        model = STLDM(config)
    result = model.load_state_dict(converted, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert model.num_parameters() == PAPER_PARAMETERS
    assert not any(p.is_meta for p in model.parameters())


def test_every_official_entry_maps_to_its_own_project_entry(official_state_dict):
    converted = convert_state_dict(official_state_dict, STLDMConfig.paper())
    weights = {k: v for k, v in official_state_dict.items() if k not in DIFFUSION_BUFFERS}
    renamed = {key: rename_key(key, vae_layers=4) for key in weights}
    assert len(set(renamed.values())) == len(weights) == PAPER_ENTRIES - len(DIFFUSION_BUFFERS)
    assert set(renamed.values()) == set(converted)
    for key, new in renamed.items():
        assert torch.equal(converted[new], weights[key]), (key, new)


@pytest.mark.parametrize(
    ("official", "project"),
    [
        ("backbone.vae.encoder.enc.0.conv.conv.weight", "vae.encoder.blocks.0.conv.weight"),
        ("backbone.vae.encoder.enc.4.weight", "vae.encoder.moments.weight"),
        ("backbone.vae.decoder.dec.0.weight", "vae.decoder.proj_in.weight"),
        ("backbone.vae.decoder.dec.1.conv.norm.bias", "vae.decoder.blocks.0.norm.bias"),
        ("backbone.hid.enc.0.block.norm1.running_var", "translator.blocks.0.norm1.running_var"),
        ("backbone.hid.enc.7.reduction.weight", "translator.blocks.7.reduction.weight"),
    ],
)
def test_rename_key_maps_known_entries(official, project):
    assert rename_key(official, vae_layers=4) == project


@pytest.mark.parametrize(
    "key",
    [
        "backbone.vae.encoder.enc.0.conv.conv.weight",
        "backbone.hid.enc.3.block.attn.proj_1.weight",
        "backbone.hid.enc.0.block.norm1.num_batches_tracked",
    ],
)
def test_missing_entry_is_named(official_copy, key):
    assert key in official_copy
    del official_copy[key]
    with pytest.raises(ValueError, match=re.escape(rename_key(key, vae_layers=4))):
        convert_state_dict(official_copy, STLDMConfig.paper())


def test_denoiser_entry_missing_is_named(official_copy):
    key = next(k for k in official_copy if k.startswith("diff_unet.") and "mid" in k)
    del official_copy[key]
    with pytest.raises(ValueError, match=re.escape(rename_key(key, vae_layers=4))):
        convert_state_dict(official_copy, STLDMConfig.paper())


def test_unexpected_entry_is_named(official_copy):
    official_copy["diff_unet.final_conv.weight"] = torch.zeros(32, 32, 1, 1)
    with pytest.raises(ValueError, match=re.escape("diff_unet.final_conv.weight")):
        convert_state_dict(official_copy, STLDMConfig.paper())


def test_mis_shaped_entry_is_named(official_copy):
    key = "backbone.vae.encoder.enc.0.conv.conv.weight"
    official_copy[key] = torch.zeros(32, 1, 5, 5)
    with pytest.raises(ValueError, match=re.escape(key)):
        convert_state_dict(official_copy, STLDMConfig.paper())


def test_weights_for_another_protocol_are_refused(official_state_dict):
    """The 5 -> 20 translator does not fit a 13 -> 12 model."""
    with pytest.raises(ValueError, match="does not fit"):
        convert_state_dict(official_state_dict, STLDMConfig.paper(13, 12))


def test_different_diffusion_schedule_is_refused(official_copy):
    official_copy["alphas_cumprod"] = torch.linspace(0.99, 0.01, 50)
    with pytest.raises(ValueError, match="schedule"):
        convert_state_dict(official_copy, STLDMConfig.paper())


def test_read_state_dict_reads_a_weights_only_torch_file(tmp_path):
    state = {"a.weight": torch.randn(3, 2), "a.num_batches_tracked": torch.tensor(4)}
    plain, wrapped = tmp_path / "plain.pt", tmp_path / "wrapped.ckpt"
    torch.save(state, plain)
    torch.save({"state_dict": state, "epoch": 3}, wrapped)
    for path in (plain, wrapped):
        loaded = read_state_dict(path)
        assert loaded.keys() == state.keys()
        assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_read_state_dict_reads_safetensors(tmp_path):
    from safetensors.torch import save_file

    state = {"a.weight": torch.randn(3, 2)}
    save_file(state, str(tmp_path / "w.safetensors"))
    assert torch.equal(read_state_dict(tmp_path / "w.safetensors")["a.weight"], state["a.weight"])


def leave_marker(path: str) -> str:
    """Would run if the unpickler executed the payload below."""
    Path(path).write_text("executed")
    return path


class Payload:
    """A custom object whose unpickling calls ``leave_marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (leave_marker, (str(self.marker),))


class Plain:
    """An ordinary custom class: not a tensor, not allowed in a weights-only file."""

    def __init__(self) -> None:
        self.value = 1


def test_read_state_dict_refuses_a_pickled_payload_without_running_it(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "x": Payload(marker)}, path)
    with pytest.raises(ValueError, match="weights-only"):
        read_state_dict(path)
    assert not marker.exists()


def test_read_state_dict_refuses_a_custom_object(tmp_path):
    path = tmp_path / "custom.pt"
    torch.save({"w": torch.zeros(2), "obj": Plain()}, path)
    with pytest.raises(ValueError):
        read_state_dict(path)


def test_read_state_dict_refuses_non_tensor_values(tmp_path):
    path = tmp_path / "mixed.pt"
    torch.save({"w": torch.zeros(2), "lr": 0.1}, path)
    with pytest.raises(ValueError, match="flat state dict"):
        read_state_dict(path)


def test_read_state_dict_refuses_a_missing_file(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        read_state_dict(tmp_path / "absent.pt")


# ---------------------------------------------------------------- the nowcast CLI


def test_cli_import_official_writes_a_loadable_checkpoint(official_state_dict, tmp_path):
    from cli.main import main

    source = tmp_path / "stldm_hko.pt"
    torch.save({"state_dict": official_state_dict}, source)
    out = tmp_path / "imported"
    assert main(["import-official", str(source), str(out), "--model-version", "stldm-hko-test"]) == 0
    model = load_checkpoint(out)
    assert model.model_version == "stldm-hko-test"
    assert model.config == STLDMConfig.paper()
    assert model.num_parameters() == PAPER_PARAMETERS
    state = model.state_dict()
    for key, value in official_state_dict.items():
        if key not in DIFFUSION_BUFFERS:
            assert torch.equal(state[rename_key(key, vae_layers=4)], value), key


def test_cli_import_official_reports_a_bad_file_without_writing(tmp_path):
    from cli.main import main

    source = tmp_path / "evil.pt"
    torch.save({"obj": Plain()}, source)
    out = tmp_path / "imported"
    assert main(["import-official", str(source), str(out)]) == 2
    assert not out.exists()
