"""Frozen configurations of the STLDM networks, with the paper and CPU presets.

Every number here is a fact of ``shared/design/STLDM.md`` unless its comment says otherwise.
A configuration is saved as ``config.json`` in each checkpoint, so it is the single source of
truth for the shapes of the networks and for the data transform.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.transform import PixelTransform

TEMPORAL_NORMS = ("time", "channel")
VAE_NORMS = ("group", "none")
ENCODINGS = ("mean", "sample")
ATTENTION_ORDERS = ("st", "sts")
TRANSLATOR_KINDS = ("gsta", "stc")


@dataclass(frozen=True)
class VAEConfig:
    """Per-frame VAE (section 1): ``num_layers`` ConvSC layers with strides 1, 2, 1, 2, ...

    ``norm="group"`` is the paper's GroupNorm(2) in every ConvSC layer; ``"none"`` leaves it out:
    a per-frame norm standardises each frame's features, so that a frame of uniform light rain
    and one of uniform heavy rain look alike to the layers after it, and intensities must be
    recovered from the rest of the frame (the small preset, trained for hours not days, keeps
    the absolute levels instead).
    The encoder's ConvSC layers are ``hidden`` channels wide (None: ``channels``, as the paper)
    and its latent has ``channels`` channels at ``2 ** (num_layers // 2)`` times fewer pixels per
    side. ``pack`` > 1 folds ``pack x pack`` latent pixels into channels (space-to-depth, as
    ``pixel_unshuffle``), so the translator and the denoiser see ``channels * pack ** 2``
    channels at ``pack`` times fewer pixels: the VAE keeps a fine grid for small rain cells while
    the networks that run 20 times per member keep a coarse one.
    """

    in_channels: int = 1
    channels: int = 32
    num_layers: int = 4
    hidden: int | None = None
    pack: int = 1
    norm: str = "group"

    def __post_init__(self) -> None:
        if self.pack < 1 or (self.hidden is not None and self.hidden < 1):
            raise ValueError(f"vae.pack must be >= 1 and vae.hidden >= 1 or None, got {self.pack}, "
                             f"{self.hidden}")
        if self.norm not in VAE_NORMS:
            raise ValueError(f"vae.norm must be one of {VAE_NORMS}, got {self.norm!r}")

    @property
    def width(self) -> int:
        """Channels of the encoder's and decoder's hidden layers."""
        return self.hidden or self.channels

    @property
    def downsample(self) -> int:
        """Frame pixels per latent pixel along each side, packing included."""
        return 2 ** (self.num_layers // 2) * self.pack

    @property
    def latent_channels(self) -> int:
        """Channels of the latent the translator and the denoiser see."""
        return self.channels * self.pack**2


@dataclass(frozen=True)
class TranslatorConfig:
    """gSTA translator (section 2): ``num_blocks`` blocks at ``hidden`` channels."""

    hidden: int = 512
    num_blocks: int = 8
    mlp_ratio: float = 8.0
    drop_path: float = 0.0  # the last block's rate; the first block's is 0.01 (linear in between)


@dataclass(frozen=True)
class DenoiserConfig:
    """Spatio-temporal latent U-Net (section 3).

    Channels are ``[latent, base * m for m in channel_mults]``; level ``n`` uses linear
    attention in patches of ``patch_size // 2 ** n`` pixels (``None``: full attention).
    ``temporal_norm="time"`` reproduces the reference code's pre-norm over the time axis
    (section 7.1); ``"channel"`` is the usual channel-wise norm.
    """

    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 4, 8)
    groups: int = 8
    heads: int = 4
    head_dim: int = 32
    patch_size: int | None = 16
    temporal_attention: bool = True
    temporal_norm: str = "time"

    def __post_init__(self) -> None:
        if self.temporal_norm not in TEMPORAL_NORMS:
            raise ValueError(f"temporal_norm must be one of {TEMPORAL_NORMS}, got {self.temporal_norm!r}")


@dataclass(frozen=True)
class DiffusionConfig:
    """Sigmoid schedule, v-prediction, DDIM (section 4)."""

    train_steps: int = 50
    sample_steps: int = 20
    schedule_start: float = -3.0
    schedule_end: float = 3.0
    schedule_tau: float = 1.0
    cond_drop_prob: float = 0.15


@dataclass(frozen=True)
class OptionsConfig:
    """Switches for the SSLDM-ISI ideas (docs/OPTIONS.md); the defaults are STLDM exactly.

    ``intensity_thresholds`` are rain rates in mm/h, converted to pixels through the model's
    :class:`~model.transform.PixelTransform`; they serve ``intensity_loss`` and
    ``exceedance_condition``.
    """

    temporal_shift: bool = False
    attention_order: str = "st"
    temporal_position_bias: bool = False
    translator_kind: str = "gsta"
    dual_condition: bool = False
    translator_residual: bool = False
    intensity_loss: bool = False
    exceedance_condition: bool = False
    intensity_thresholds: tuple[float, ...] = (1.0, 4.0, 8.0)

    def __post_init__(self) -> None:
        for name in ("temporal_shift", "temporal_position_bias", "dual_condition", "translator_residual",
                     "intensity_loss", "exceedance_condition"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"option {name} must be true or false, got {getattr(self, name)!r}")
        if self.attention_order not in ATTENTION_ORDERS:
            raise ValueError(f"option attention_order must be one of {ATTENTION_ORDERS}, "
                             f"got {self.attention_order!r}")
        if self.translator_kind not in TRANSLATOR_KINDS:
            raise ValueError(f"option translator_kind must be one of {TRANSLATOR_KINDS}, "
                             f"got {self.translator_kind!r}")
        taus = self.intensity_thresholds
        if (not isinstance(taus, tuple) or not taus
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in taus)
                or list(taus) != sorted(set(taus))):
            raise ValueError("option intensity_thresholds must be a non-empty, strictly increasing "
                             f"tuple of positive rain rates in mm/h, got {taus!r}")


@dataclass(frozen=True)
class STLDMConfig:
    """Whole model: ``t_in`` frames of ``size x size`` pixels in, ``t_out`` frames out.

    ``size`` is the frame size the model was built and trained for; the networks are fully
    convolutional and accept any multiple of :attr:`size_multiple`.
    """

    t_in: int = 5
    t_out: int = 20
    size: int = 128
    preset: str = "paper"
    vae: VAEConfig = field(default_factory=VAEConfig)
    translator: TranslatorConfig = field(default_factory=TranslatorConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    transform: PixelTransform = field(default_factory=PixelTransform)
    options: OptionsConfig = field(default_factory=OptionsConfig)
    step_minutes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in self.step_minutes) \
                or list(self.step_minutes) != sorted(set(self.step_minutes)):
            raise ValueError("step_minutes must be strictly increasing positive whole minutes, got "
                             f"{self.step_minutes!r}")
        if self.t_in < 1 or self.t_out < 1:
            raise ValueError(f"t_in and t_out must be positive, got {self.t_in}, {self.t_out}")
        if self.size % self.size_multiple:
            raise ValueError(f"size must be a multiple of {self.size_multiple}, got {self.size}")
        if self.options.temporal_position_bias and not self.denoiser.temporal_attention:
            raise ValueError("option temporal_position_bias needs denoiser.temporal_attention=True")

    @property
    def size_multiple(self) -> int:
        """Frame sides must be multiples of this (VAE stride x U-Net strides x patch grid)."""
        levels = len(self.denoiser.channel_mults)
        unet = 2 ** (levels - 1)
        patch = self.denoiser.patch_size or 1
        return self.vae.downsample * max(unet, patch)

    @property
    def latent_channels(self) -> int:
        return self.vae.latent_channels

    def check_step(self, step_minutes: int | None) -> None:
        """``ValueError`` unless ``step_minutes`` is None or one of the steps this model serves.

        A model with no ``step_minutes`` (the paper's, and checkpoints older than the step
        embedding) serves one step, recorded in its manifest; it takes only ``None``. For a
        model with a step embedding, ``None`` runs the networks without the step signal (what
        they compute before any training on steps); pass the step for real radar.
        """
        if step_minutes is None:
            return
        if not self.step_minutes:
            raise ValueError(f"this model has no step embedding; call it without step_minutes "
                             f"(got {step_minutes!r})")
        if step_minutes not in self.step_minutes:
            raise ValueError(f"step_minutes must be one of the steps this model serves, "
                             f"{list(self.step_minutes)} min; got {step_minutes!r}")

    def intensity_pixels(self) -> tuple[float, ...]:
        """``options.intensity_thresholds`` (mm/h) as pixels in [0, 1] of :attr:`transform`."""
        values = self.transform.to_pixel(np.asarray(self.options.intensity_thresholds), "mm/h")
        return tuple(float(v) for v in values)

    @classmethod
    def paper(cls, t_in: int = 5, t_out: int = 20, size: int = 128) -> STLDMConfig:
        """The authors' configuration (80,980,769 parameters for 5 -> 20)."""
        return cls(t_in=t_in, t_out=t_out, size=size, preset="paper")

    @classmethod
    def small(cls, t_in: int = 5, t_out: int = 20, size: int = 128) -> STLDMConfig:
        """CPU serving and training: the same architecture, narrower, on a packed latent.

        A 4x VAE as the paper's (16 hidden channels, 8 latent channels: 32 x 32 x 8 for 128 x 128
        frames, so that cells of one or two pixels survive; no GroupNorm, which measured better
        reconstruction of 1 and 5 mm/h), packed 2 x 2 into 16 x 16 x 32 for
        a 4-block translator at 128 channels and a 3-level denoiser at 16/32/64 channels with
        single-head attention. It serves the 2-, 5- and 6-minute radar steps through a step
        embedding. (Until 2026-12 the preset was an 8x VAE of 8 channels, 16 x 16 x 8, whose
        reconstruction lost most cells under 30 km: checkpoints record their own config.)
        """
        return cls(
            t_in=t_in,
            t_out=t_out,
            size=size,
            preset="small",
            step_minutes=(2, 5, 6),
            vae=VAEConfig(channels=8, num_layers=4, hidden=16, pack=2, norm="none"),
            translator=TranslatorConfig(hidden=128, num_blocks=4, mlp_ratio=4.0),
            denoiser=DenoiserConfig(
                base_channels=16,
                channel_mults=(1, 2, 4),
                heads=1,
                head_dim=16,
                patch_size=8,
                temporal_norm="channel",
            ),
        )

    @classmethod
    def preset_named(cls, name: str, *, t_in: int = 5, t_out: int = 20, size: int = 128) -> STLDMConfig:
        presets = {"paper": cls.paper, "small": cls.small}
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; valid presets: {sorted(presets)}")
        return presets[name](t_in=t_in, t_out=t_out, size=size)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> STLDMConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        parts = {
            "vae": VAEConfig,
            "translator": TranslatorConfig,
            "denoiser": DenoiserConfig,
            "diffusion": DiffusionConfig,
            "transform": PixelTransform,
            "options": OptionsConfig,  # absent in checkpoints older than the options: defaults
        }
        kwargs: dict[str, Any] = {}
        top = {f.name for f in dataclasses.fields(cls)}
        for key, value in data.items():
            if key not in top:
                raise ValueError(f"unknown config key {key!r}; valid keys: {sorted(top)}")
            if key == "step_minutes":
                value = tuple(value)
            if key in parts:
                sub = parts[key]
                names = {f.name for f in dataclasses.fields(sub)}
                extra = set(value) - names
                if extra:
                    raise ValueError(f"unknown {key} config keys {sorted(extra)}; valid: {sorted(names)}")
                value = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
                kwargs[key] = sub(**value)
            else:
                kwargs[key] = value
        return cls(**kwargs)
