"""gSTA translator of STLDM (STLDM.md section 2), after SimVP v2.

Maps the latents of the input frames to the mean and log-variance of the latents of the
output frames: the first estimate and the condition of the denoiser. With ``residual`` (option
``translator_residual``) the mean is the last input latent plus the network's output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.blocks import StepEmbedding
from model.config import TranslatorConfig


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero a sample's residual branch with probability ``rate``."""
    if rate == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - rate)
    return x * keep / (1.0 - rate)


class GatedKernel(nn.Module):
    """Depthwise 5x5 -> depthwise 7x7 dilation 3 -> 1x1 to 2C -> sigmoid(g) * f (21x21 field)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, 7, padding=9, groups=dim, dilation=3)
        self.conv1 = nn.Conv2d(dim, 2 * dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f, g = self.conv1(self.conv_spatial(self.conv0(x))).chunk(2, dim=1)
        return torch.sigmoid(g) * f


class GatedAttention(nn.Module):
    """u + 1x1 conv(Gate(GELU(1x1 conv(u))))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.gate = GatedKernel(dim)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_2(self.gate(F.gelu(self.proj_1(x)))) + x


class ConvMLP(nn.Module):
    """1x1 conv C -> rC, depthwise 3x3, GELU, 1x1 conv rC -> C."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.dwconv(self.fc1(x))))


class GSTABlock(nn.Module):
    """x += ls1 * Attn(BN(x)); x += ls2 * MLP(BN(x)); then an optional 1x1 channel change."""

    def __init__(self, dim: int, dim_out: int, *, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.drop_path = drop_path
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = GatedAttention(dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvMLP(dim, int(dim * mlp_ratio))
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), 0.01))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), 0.01))
        self.reduction = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ls1 = self.layer_scale_1[:, None, None]
        ls2 = self.layer_scale_2[:, None, None]
        x = x + drop_path(ls1 * self.attn(self.norm1(x)), self.drop_path, self.training)
        x = x + drop_path(ls2 * self.mlp(self.norm2(x)), self.drop_path, self.training)
        return self.reduction(x) if self.reduction is not None else x


class Translator(nn.Module):
    """Latents of ``t_in`` frames -> (mean, logvar) of the latents of ``t_out`` frames."""

    def __init__(self, config: TranslatorConfig, *, t_in: int, t_out: int, channels: int,
                 step_minutes: bool = False, residual: bool = False) -> None:
        super().__init__()
        if config.num_blocks < 2:
            raise ValueError(f"the translator needs at least 2 blocks, got {config.num_blocks}")
        self.t_out, self.residual = t_out, residual
        n = config.num_blocks
        rates = [0.01 + (config.drop_path - 0.01) * i / (n - 1) for i in range(n)]
        dims = [t_in * channels] + [config.hidden] * (n - 1) + [2 * t_out * channels]
        self.blocks = nn.ModuleList(
            GSTABlock(
                dims[i],
                dims[i + 1] if i in (0, n - 1) else dims[i],
                mlp_ratio=config.mlp_ratio,
                drop_path=config.drop_path if i == n - 1 else rates[i],
            )
            for i in range(n)
        )
        # a bias per hidden channel after the first block, from the radar step (zero at first)
        self.step_embed = StepEmbedding(config.hidden) if step_minutes else None

    def forward(self, z: torch.Tensor, step: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, t_in, C, h, w) -> mean, logvar, each (B, t_out, C, h, w).

        ``step`` (B,) minutes between frames; used when the model has a step embedding.
        """
        b, t, c, h, w = z.shape
        x = z.reshape(b, t * c, h, w)  # frame-major channels
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == 0 and self.step_embed is not None and step is not None:
                x = x + self.step_embed(step).to(x.dtype)[:, :, None, None]
        x = x.reshape(b, 2 * self.t_out, c, h, w)
        mean = x[:, : self.t_out] + z[:, -1:] if self.residual else x[:, : self.t_out]
        return mean, x[:, self.t_out :]

    def zero_mean_output(self) -> None:
        """Zero the rows of the last layer that give the mean: with ``residual`` the first
        estimate then starts as the last context latent (persistence in the forecast's frame)."""
        block = self.blocks[-1]
        assert isinstance(block, GSTABlock) and isinstance(block.reduction, nn.Conv2d)
        last = block.reduction  # the last block always maps hidden -> 2 t_out C
        rows = last.out_channels // 2
        with torch.no_grad():
            last.weight[:rows].zero_()
            if last.bias is not None:
                last.bias[:rows].zero_()
