"""Import of the authors' published checkpoint layout (sqfoo/stldm_official).

The published state dict has prefixes ``backbone.vae.*``, ``backbone.hid.*``, ``diff_unet.*``
and 13 diffusion buffers (STLDM.md 7.6). :func:`convert_state_dict` renames every entry to
this project's module names, checks the diffusion schedule against ours, and refuses any
entry it does not know, so a partial or foreign file fails loudly.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from model.config import DenoiserConfig, STLDMConfig, TranslatorConfig, VAEConfig
from model.scheduler import DDIMScheduler

DIFFUSION_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2", "loss_weight",
)

# (pattern, replacement) applied in order to each official key; the denoiser part first
# renames the level containers, then the parts inside them.
_RENAMES = [
    (r"^diff_unet\.", "denoiser."),
    (r"^denoiser\.time_mlp\.mlp\.1\.", "denoiser.time_embed.linear1."),
    (r"^denoiser\.time_mlp\.mlp\.3\.", "denoiser.time_embed.linear2."),
    (r"^denoiser\.downs\.", "denoiser.down."),
    (r"^denoiser\.ups\.", "denoiser.up."),
    (r"^denoiser\.conditions\.", "denoiser.cond_down."),
    (r"\.last\.", ".downsample."),
    (r"(denoiser\.up\.\d+)\.up\.", r"\1.upsample."),
    (r"\.block(\d)\.mlp\.1\.", r".res\1.time_proj."),
    (r"\.block(\d)\.block(\d)\.proj\.", r".res\1.conv\2."),
    (r"\.block(\d)\.block(\d)\.norm\.", r".res\1.norm\2."),
    (r"\.block(\d)\.res_conv\.", r".res\1.skip."),
    (r"\.(q?attn_spatial)\.fn\.fn\.to_out\.0\.", ".spatial_attn.to_out."),
    (r"\.(q?attn_spatial)\.fn\.fn\.to_out\.1\.", ".spatial_attn.out_norm."),
    (r"\.(q?attn_spatial)\.fn\.fn\.", ".spatial_attn."),
    (r"\.(q?attn_spatial)\.fn\.norm\.", ".spatial_attn.norm."),
    (r"\.(attn_temporal|qattn_time)\.fn\.fn\.", ".temporal_attn."),
    (r"\.(attn_temporal|qattn_time)\.fn\.norm\.", ".temporal_attn.norm."),
    (r"^backbone\.hid\.enc\.(\d+)\.block\.", r"translator.blocks.\1."),
    (r"^backbone\.hid\.enc\.(\d+)\.reduction\.", r"translator.blocks.\1.reduction."),
    (r"\.spatial_gating_unit\.", ".gate."),
    (r"\.mlp\.dwconv\.dwconv\.", ".mlp.dwconv."),
    (r"^backbone\.vae\.encoder\.enc\.(\d+)\.conv\.(conv|norm)\.", r"vae.encoder.blocks.\1.\2."),
    (r"^backbone\.vae\.decoder\.dec\.0\.", "vae.decoder.proj_in."),
    (r"^backbone\.vae\.decoder\.readout\.", "vae.decoder.readout."),
]


def rename_key(key: str, vae_layers: int) -> str:
    """Official key -> this project's key (the VAE's layer numbering needs ``vae_layers``)."""
    match = re.match(r"^backbone\.vae\.decoder\.dec\.(\d+)\.conv\.(conv|norm)\.(.*)$", key)
    if match:  # dec.1.. are the ConvSC blocks after proj_in
        return f"vae.decoder.blocks.{int(match[1]) - 1}.{match[2]}.{match[3]}"
    if re.match(rf"^backbone\.vae\.encoder\.enc\.{vae_layers}\.(weight|bias)$", key):
        return key.replace(f"backbone.vae.encoder.enc.{vae_layers}.", "vae.encoder.moments.")
    for pattern, replacement in _RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def convert_state_dict(official: dict[str, torch.Tensor], config: STLDMConfig) -> dict[str, torch.Tensor]:
    """Rename an official state dict for ``config`` and check every entry's shape.

    Raises ``ValueError`` naming missing, unexpected or mis-shaped entries, or a diffusion
    schedule that differs from ``config.diffusion``.
    """
    from model.stldm import STLDM

    with torch.device("meta"):
        target = STLDM(config).state_dict()
    converted: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, value in official.items():
        if key in DIFFUSION_BUFFERS:
            continue
        new = rename_key(key, config.vae.num_layers)
        if new not in target:
            unexpected.append(key)
            continue
        if tuple(value.shape) != tuple(target[new].shape):
            raise ValueError(
                f"{key}: shape {tuple(value.shape)} does not fit {new} {tuple(target[new].shape)}"
                f" of preset {config.preset!r} ({config.t_in} -> {config.t_out})"
            )
        converted[new] = value
    missing = sorted(set(target) - set(converted))
    if unexpected or missing:
        raise ValueError(
            f"state dict does not match the {config.preset!r} layout: "
            f"{len(unexpected)} unexpected entries (e.g. {unexpected[:3]}), "
            f"{len(missing)} missing (e.g. {missing[:3]})"
        )
    if "alphas_cumprod" in official:
        ours = DDIMScheduler(config.diffusion).alphas_cumprod
        theirs = official["alphas_cumprod"].float()
        if theirs.shape != ours.shape or not torch.allclose(theirs, ours, atol=1e-6):
            raise ValueError("the checkpoint's diffusion schedule differs from the configured one")
    return converted


def config_from_reference(data: dict) -> STLDMConfig:
    """STLDMConfig from the reference code's ``vp_param`` / ``stldm_param`` / ``param`` dicts."""
    vp, ldm, param = data["vp_param"], data["stldm_param"], data["param"]
    t_in, _, size, _ = vp["shape_in"]
    base = STLDMConfig()
    return STLDMConfig(
        t_in=t_in,
        t_out=vp["shape_out"][0],
        size=size,
        preset="reference",
        vae=VAEConfig(in_channels=vp["shape_in"][1], channels=vp["hid_S"], num_layers=vp["N_S"]),
        translator=TranslatorConfig(hidden=vp["hid_T"], num_blocks=vp["N_T"]),
        denoiser=DenoiserConfig(
            base_channels=ldm["base_ch"], channel_mults=tuple(ldm["chs_mult"]),
            groups=ldm["num_groups"], heads=ldm["heads"], head_dim=ldm["dim_head"],
            patch_size=ldm["patch_size"],
        ),
        diffusion=type(base.diffusion)(train_steps=param["timesteps"],
                                       sample_steps=param["sampling_timesteps"]),
    )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file, or a ``.pt``/``.pth``/``.ckpt`` with ``weights_only=True``.

    A ``.pt`` file that wraps the state dict (``{"state_dict": ...}`` or ``{"model": ...}``)
    is unwrapped. Nothing is unpickled beyond tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors of many kinds
        raise ValueError(f"{path} is not a readable weights-only torch state dict: {err}") from err
    for wrapper in ("state_dict", "model", "ema"):
        if isinstance(data, dict) and wrapper in data and isinstance(data[wrapper], dict):
            data = data[wrapper]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"{path} does not hold a flat state dict of tensors")
    return data


def load_reference_config(path: str | Path) -> STLDMConfig:
    """The config of ``tiny_reference_config.json`` (or any file with a ``reference_config``)."""
    data = json.loads(Path(path).read_text())
    return config_from_reference(data.get("reference_config", data))
