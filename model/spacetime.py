"""Parameter-free and tiny space-time helpers of the SSLDM-ISI options (docs/OPTIONS.md).

:func:`temporal_shift` is the TSM-style shift of SSLDM-ISI's STC ResBlocks;
:class:`RelativePositionBias` gives temporal attention a notion of frame order, which
STLDM's temporal attention lacks (STLDM.md section 3: "no positional code").
"""

from __future__ import annotations

import torch
from torch import nn

SHIFT_DIVISOR = 8  # 1/8 of the channels look one frame ahead, another 1/8 one frame back


def temporal_shift(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Shift channel groups along time, zeros at the ends (parameter-free).

    With ``f = C // 8``: channels ``[0, f)`` of frame t take the values of frame t+1 (zeros at
    the last frame), channels ``[f, 2f)`` those of frame t-1 (zeros at the first frame); the
    other channels are untouched.

    Parameters
    ----------
    x : (B*T, C, H, W) features with frames folded into the batch, frame-major per sample.
    frames : T.

    Returns
    -------
    (B*T, C, H, W) shifted features (a new tensor).
    """
    n, c, h, w = x.shape
    fold = c // SHIFT_DIVISOR
    if fold == 0 or frames < 2:
        return x
    video = x.reshape(n // frames, frames, c, h, w)
    zeros = video.new_zeros(n // frames, 1, fold, h, w)
    ahead = torch.cat((video[:, 1:, :fold], zeros), dim=1)  # frame t <- frame t+1
    behind = torch.cat((zeros, video[:, :-1, fold : 2 * fold]), dim=1)  # frame t <- frame t-1
    return torch.cat((ahead, behind, video[:, :, 2 * fold :]), dim=2).reshape(n, c, h, w)


class RelativePositionBias(nn.Module):
    """Continuous relative-position bias of attention logits (a small MLP of the frame offset).

    The offset ``d = i - j`` of query frame i and key frame j enters as
    ``sign(d) log(1 + |d|)`` (log-spaced, as Swin v2's continuous bias), so the MLP
    extrapolates to more frames than it was trained on. The output layer starts at zero:
    the bias is neutral until trained.
    """

    def __init__(self, heads: int, hidden: int = 32) -> None:
        super().__init__()
        self.linear1 = nn.Linear(1, hidden)
        self.linear2 = nn.Linear(hidden, heads)
        nn.init.zeros_(self.linear2.weight)
        nn.init.zeros_(self.linear2.bias)

    def forward(self, frames: int) -> torch.Tensor:
        """(heads, T, T) additive logits for T = ``frames``."""
        index = torch.arange(frames, device=self.linear1.weight.device, dtype=self.linear1.weight.dtype)
        offset = index[:, None] - index[None, :]  # (T, T), query minus key
        feature = torch.sign(offset) * torch.log1p(offset.abs())
        bias = self.linear2(torch.nn.functional.silu(self.linear1(feature[..., None])))  # (T, T, heads)
        return bias.permute(2, 0, 1)
