"""Exponential moving average of model weights (off in the paper's recipe; ``ema_decay`` > 0)."""

from __future__ import annotations

import copy

import torch


class EMA:
    """A frozen copy of a model whose floating-point weights trail the live ones.

    ``decay`` ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates so that the
    average is not dominated by the random initialisation early on. Buffers (BatchNorm
    statistics, counters) are copied, not averaged.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for average, live in zip(self.module.parameters(), model.parameters(), strict=True):
            if live.dtype.is_floating_point:
                average.lerp_(live.detach(), 1.0 - decay)
            else:
                average.copy_(live)
        for average, live in zip(self.module.buffers(), model.buffers(), strict=True):
            average.copy_(live)

    def state_dict(self) -> dict:
        """Plain tensors and ints only, loadable with ``torch.load(weights_only=True)``."""
        return {"updates": self.updates, "decay": self.decay, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["module"])
