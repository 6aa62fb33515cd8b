"""The STLDM model: VAE + gSTA translator + latent denoiser, with the ensemble entry point."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from model.condition import ContextCondition
from model.config import STLDMConfig
from model.denoiser import Denoiser
from model.scheduler import DDIMScheduler
from model.stc import STCTranslator
from model.translator import Translator
from model.vae import VAE

if TYPE_CHECKING:
    from model.sampler import Forecast


class STLDM(nn.Module):
    """Holds the three networks and the diffusion schedule; see :func:`model.sampler.forecast`."""

    def __init__(self, config: STLDMConfig) -> None:
        super().__init__()
        self.config = config
        options = config.options
        self.vae = VAE(config.vae)
        kind = STCTranslator if options.translator_kind == "stc" else Translator
        self.translator = kind(
            config.translator, t_in=config.t_in, t_out=config.t_out, channels=config.latent_channels,
            step_minutes=bool(config.step_minutes), residual=options.translator_residual
        )
        context = ContextCondition(config)
        # None unless an option asks for extra condition channels: the default layout is STLDM's
        self.context = context if context.channels else None
        self.denoiser = Denoiser(config.denoiser, channels=config.latent_channels, options=options,
                                 step_minutes=bool(config.step_minutes),
                                 extra_channels=context.channels)
        self.scheduler = DDIMScheduler(config.diffusion)

    def extra_condition(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor | None:
        """Extra denoiser condition (B, E, h, w) from the context frames x (B, T_in, H, W) in
        [0, 1] and their latents z (B, T_in, C, h, w); None under the default options."""
        return None if self.context is None else self.context(x, z)

    def forecast(self, x: torch.Tensor, **options: Any) -> Forecast:
        """Ensemble nowcast; see :func:`model.sampler.forecast` for the options."""
        from model.sampler import forecast

        return forecast(self, x, **options)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
