"""Learning-rate schedule and AdamW parameter groups of the STLDM recipe (STLDM.md section 5).

The learning rate is a pure function of the step, so resuming needs only the step counter: no
scheduler object, nothing to pickle.
"""

from __future__ import annotations

import math

import torch

WARMUP_START = 0.1  # the warm-up starts at 0.1 x the peak rate (STLDM.md section 5)


def lr_at(step: int, *, lr: float, warmup_steps: int, steps: int, min_lr: float) -> float:
    """Learning rate of optimiser step ``step`` (0-based).

    Linear warm-up from ``WARMUP_START * lr`` to ``lr`` over ``warmup_steps`` steps, then a
    half cosine from ``lr`` down to ``min_lr`` at step ``steps``; ``min_lr`` after that.
    """
    if step < warmup_steps:
        return lr * (WARMUP_START + (1.0 - WARMUP_START) * step / warmup_steps)
    progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def is_decayed(name: str, param: torch.nn.Parameter) -> bool:
    """Weight decay applies to conv and linear weights only.

    Biases, norm gains/shifts (GroupNorm, BatchNorm, the attention ``ChannelNorm.g``) and the
    translator's layer scales are left alone: decaying them pulls normalised activations
    towards zero instead of regularising the function.
    """
    return param.ndim >= 2 and "norm" not in name and "layer_scale" not in name


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups over the trainable parameters of ``model``: decayed and not."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (decay if is_decayed(name, param) else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]
