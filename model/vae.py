"""Per-frame VAE of STLDM (STLDM.md section 1): ConvSC stacks, no skips, no attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.blocks import group_norm, in_place
from model.config import VAEConfig


class ConvSC(nn.Module):
    """3x3 conv (transposed when upsampling) -> GroupNorm(2) (unless ``norm=False``) -> LeakyReLU(0.2)."""

    def __init__(self, dim_in: int, dim_out: int, *, stride: int, transpose: bool = False,
                 norm: bool = True) -> None:
        super().__init__()
        if transpose and stride > 1:
            self.conv: nn.Module = nn.ConvTranspose2d(
                dim_in, dim_out, 3, stride=stride, padding=1, output_padding=stride // 2
            )
        else:
            self.conv = nn.Conv2d(dim_in, dim_out, 3, stride=stride, padding=1)
        self.norm = nn.GroupNorm(2, dim_out) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        if isinstance(self.norm, nn.GroupNorm):  # vae.norm="none" (the small preset) has none
            h = group_norm(h, self.norm)
        return F.leaky_relu(h, 0.2, inplace=in_place(h))


def strides(num_layers: int) -> list[int]:
    """Encoder strides 1, 2, 1, 2, ...; the decoder mirrors them."""
    return [1 + i % 2 for i in range(num_layers)]


class Encoder(nn.Module):
    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        c, width = config.channels, config.width
        dims = [config.in_channels] + [width] * config.num_layers
        self.blocks = nn.ModuleList(
            ConvSC(dims[i], dims[i + 1], stride=s, norm=config.norm == "group")
            for i, s in enumerate(strides(config.num_layers))
        )
        self.moments = nn.Conv2d(width, 2 * c, 3, padding=1)
        self.pack = config.pack

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for block in self.blocks:
            x = block(x)
        mean, logvar = self.moments(x).chunk(2, dim=1)
        if self.pack > 1:  # (N, C, h, w) -> (N, C * p * p, h / p, w / p)
            mean, logvar = F.pixel_unshuffle(mean, self.pack), F.pixel_unshuffle(logvar, self.pack)
        return mean, logvar


class Decoder(nn.Module):
    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        c, width = config.channels, config.width
        self.proj_in = nn.Conv2d(c, width, 3, padding=1)
        self.blocks = nn.ModuleList(
            ConvSC(width, width, stride=s, transpose=True, norm=config.norm == "group")
            for s in reversed(strides(config.num_layers))
        )
        self.readout = nn.Conv2d(width, config.in_channels, 1)
        self.pack = config.pack

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.pack > 1:  # (N, C * p * p, h / p, w / p) -> (N, C, h, w)
            z = F.pixel_shuffle(z, self.pack)
        # channels-last: oneDNN's few-channel convolutions at full resolution run ~2x faster
        x = self.proj_in(z.contiguous(memory_format=torch.channels_last))
        for block in self.blocks:
            x = block(x)
        return torch.sigmoid(self.readout(x))


class VAE(nn.Module):
    """Frames ``(N, 1, H, W)`` in [0, 1] <-> latents ``(N, C, H/f, W/f)``, f = ``config.downsample``,
    C = ``config.latent_channels``."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, 1, H, W) pixels -> mean, logvar, each (N, C, H/f, W/f)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, C, h, w) latents -> (N, 1, h*f, w*f) pixels in [0, 1]."""
        return self.decoder(z)


def reparameterise(
    mean: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor | None = None
) -> torch.Tensor:
    """A sample ``mean + exp(logvar / 2) * noise`` of N(mean, exp(logvar)); noise drawn if None."""
    if noise is None:
        noise = torch.randn_like(mean)
    return mean + torch.exp(0.5 * logvar) * noise
