"""Checkpoint folders: ``config.json`` + ``model.safetensors`` + ``manifest.json``.

The folder is the only contract between training and serving. Loading verifies the weights'
SHA-256 against the manifest and every tensor's name and shape against the config, and reads
nothing through pickle.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.config import STLDMConfig

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

FORMAT = "stldm-checkpoint"
FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, MANIFEST_FILE = "config.json", "model.safetensors", "manifest.json"


class CheckpointError(ValueError):
    """A checkpoint folder that is missing, corrupt, or does not match its config."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(model, path: str | Path, *, model_version: str | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (an STLDM, unwrapped and uncompiled) into the folder ``path``.

    ``extra`` goes into the manifest (training data, steps, scores, ...).
    """
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config: STLDMConfig = model.config
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = path / WEIGHTS_FILE
    tmp = weights.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"format": FORMAT})
    tmp.replace(weights)
    sha = file_sha256(weights)
    (path / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_version": model_version or f"stldm-{config.preset}-{sha[:12]}",
        "preset": config.preset,
        "t_in": config.t_in,
        "t_out": config.t_out,
        "size": config.size,
        "data_transform": config.to_dict()["transform"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_sha256": sha,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        **(extra or {}),
    }
    write_manifest(path, manifest)
    return path


def write_manifest(path: str | Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest`` as the manifest of checkpoint folder ``path`` (indented JSON)."""
    (Path(path) / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of checkpoint folder ``path``; raises CheckpointError when unreadable."""
    file = Path(path) / MANIFEST_FILE
    try:
        manifest = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{file}: unreadable manifest ({err})") from err
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{file}: not a {FORMAT} v{FORMAT_VERSION} manifest (format={manifest.get('format')!r}, "
            f"version={manifest.get('format_version')!r})"
        )
    return manifest


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu"):
    """Load an STLDM in eval mode from checkpoint folder ``path``.

    Raises
    ------
    CheckpointError
        Missing files, a SHA-256 mismatch (corrupt or altered weights), an invalid config,
        or weights whose names or shapes differ from what the config builds.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from model.stldm import STLDM

    path = Path(path)
    for name in (CONFIG_FILE, WEIGHTS_FILE, MANIFEST_FILE):
        if not (path / name).is_file():
            raise CheckpointError(f"{path} is not a checkpoint folder: {name} is missing")
    manifest = read_manifest(path)
    weights = path / WEIGHTS_FILE
    if file_sha256(weights) != manifest.get("weights_sha256"):
        raise CheckpointError(f"{weights}: SHA-256 differs from the manifest (corrupt or altered)")
    try:
        config = STLDMConfig.from_dict(json.loads((path / CONFIG_FILE).read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path / CONFIG_FILE}: invalid config ({err})") from err
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{weights}: unreadable weights ({err})") from err
    model = STLDM(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{path}: weights do not match config.json ({len(missing)} missing, e.g. {missing[:3]}; "
            f"{len(unexpected)} unexpected, e.g. {unexpected[:3]}; mis-shaped: {shapes[:3]})"
        )
    model.load_state_dict(state)
    model.model_version = manifest["model_version"]
    log.info("loaded checkpoint %s (%s)", path, manifest["model_version"])
    return model.to(device).eval()
