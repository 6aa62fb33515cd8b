"""The STLDM model: VAE + gSTA translator + latent denoiser, with the ensemble entry point."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from model.config import STLDMConfig
from model.denoiser import Denoiser
from model.scheduler import DDIMScheduler
from model.translator import Translator
from model.vae import VAE

if TYPE_CHECKING:
    from collections.abc import Sequence

    from model.sampler import Forecast


class STLDM(nn.Module):
    """Holds the three networks and the diffusion schedule; see :func:`model.sampler.forecast`."""

    def __init__(self, config: STLDMConfig) -> None:
        super().__init__()
        self.config = config
        self.vae = VAE(config.vae)
        self.translator = Translator(
            config.translator, t_in=config.t_in, t_out=config.t_out, channels=config.vae.channels
        )
        self.denoiser = Denoiser(config.denoiser, channels=config.vae.channels)
        self.scheduler = DDIMScheduler(config.diffusion)

    def forecast(self, x: torch.Tensor, *, members: int = 10, steps: int = 20,
                 guidance: float = 1.0, seed: int | Sequence[int] = 0, encoding: str = "mean",
                 autocast_dtype: torch.dtype | None = None, matching: str = "none") -> Forecast:
        """Ensemble nowcast; see :func:`model.sampler.forecast` for the arguments."""
        from model.sampler import forecast

        return forecast(self, x, members=members, steps=steps, guidance=guidance, seed=seed,
                        encoding=encoding, autocast_dtype=autocast_dtype, matching=matching)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
