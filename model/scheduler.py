"""Diffusion schedule and DDIM sampler step of STLDM (STLDM.md section 4), stateless.

Notation (paper symbol -> name here):
    alpha_bar_t                  -> ``alphas_cumprod[t]``
    x_0 (clean latents)          -> ``x0``
    epsilon (Gaussian noise)     -> ``noise``
    x_t = sqrt(a) x_0 + sqrt(1 - a) eps                -> :meth:`add_noise`
    v   = sqrt(a) eps - sqrt(1 - a) x_0                -> :meth:`v_target`
    x_0 = sqrt(a) x_t - sqrt(1 - a) v                  -> :meth:`predict_x0`
    gamma(t) = SNR / (SNR + 1) = a                     -> :meth:`loss_weight`
Training and sampling use these same functions: one source of truth.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from model.config import DiffusionConfig


def sigmoid_alphas_cumprod(steps: int, start: float, end: float, tau: float) -> torch.Tensor:
    """(steps,) float64 cumulative alphas of the sigmoid schedule, betas clipped to 0.999."""
    t = torch.linspace(0, steps, steps + 1, dtype=torch.float64) / steps
    v_start = torch.tensor(start / tau, dtype=torch.float64).sigmoid()
    v_end = torch.tensor(end / tau, dtype=torch.float64).sigmoid()
    curve = (-((t * (end - start) + start) / tau).sigmoid() + v_end) / (v_end - v_start)
    curve = curve / curve[0]
    betas = torch.clip(1 - curve[1:] / curve[:-1], 0, 0.999)
    return torch.cumprod(1 - betas, dim=0)


class DDIMScheduler:
    """Sigmoid-schedule v-prediction diffusion with a deterministic (eta = 0) DDIM sampler."""

    def __init__(self, config: DiffusionConfig) -> None:
        self.config = config
        self.num_train_steps = config.train_steps
        a64 = sigmoid_alphas_cumprod(
            config.train_steps, config.schedule_start, config.schedule_end, config.schedule_tau
        )
        # float32 tables computed in float64, as the reference registers them
        self.alphas_cumprod = a64.float()
        self.sqrt_a = a64.sqrt().float()
        self.sqrt_1ma = (1 - a64).sqrt().float()
        self.sqrt_recip_a = (1 / a64).sqrt().float()
        self.sqrt_recipm1_a = (1 / a64 - 1).sqrt().float()
        self._on_device: dict[torch.device, dict[int, torch.Tensor]] = {}

    def timesteps(self, num_steps: int) -> list[tuple[int, int]]:
        """Pairs (t, t_prev) of the DDIM grid, t_prev = -1 meaning "return x0".

        The grid truncates ``linspace(-1, T - 1, num_steps + 1)`` toward zero; for 20 of 50
        steps it is 49, 46, 44, 41, ..., 4, 1.
        """
        if not 1 <= num_steps <= self.num_train_steps:
            raise ValueError(f"num_steps must be in [1, {self.num_train_steps}], got {num_steps}")
        span = Fraction(self.num_train_steps, num_steps)
        grid = [math.trunc(-1 + k * span) for k in range(num_steps + 1)][::-1]
        return list(zip(grid[:-1], grid[1:], strict=True))

    def _table(self, table: torch.Tensor, device: torch.device) -> torch.Tensor:
        """``table`` on ``device``, copied there once (the scheduler is not a module)."""
        if device.type == "cpu":
            return table
        cache = self._on_device.setdefault(device, {})
        if id(table) not in cache:
            cache[id(table)] = table.to(device)
        return cache[id(table)]

    def _at(self, table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        values = self._table(table, like.device)[t.to(like.device)]
        return values.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x0, noise (B, ...) and t (B,) -> x_t (B, ...)."""
        return self._at(self.sqrt_a, t, x0) * x0 + self._at(self.sqrt_1ma, t, x0) * noise

    def v_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The v-prediction target (B, ...) for x0, noise (B, ...) at steps t (B,)."""
        return self._at(self.sqrt_a, t, x0) * noise - self._at(self.sqrt_1ma, t, x0) * x0

    def predict_x0(self, sample: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._at(self.sqrt_a, t, sample) * sample - self._at(self.sqrt_1ma, t, sample) * v

    def predict_noise(self, sample: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        recip = self._at(self.sqrt_recip_a, t, sample)
        return (recip * sample - x0) / self._at(self.sqrt_recipm1_a, t, sample)

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) weights gamma(t) = SNR / (SNR + 1) = alpha_bar_t of the v-loss."""
        return self._table(self.alphas_cumprod, t.device)[t]

    def step_coefficients(self, t: int, t_prev: int) -> tuple[float, float]:
        """(a, b) such that the eta = 0 :meth:`step` from t to t_prev is ``a * sample + b * v``.

        With x0 = sqrt(a_t) x_t - sqrt(1 - a_t) v and eps = sqrt(1 - a_t) x_t + sqrt(a_t) v,
        x_{t_prev} = sqrt(a') x0 + sqrt(1 - a') eps, a' = alpha_bar_{t_prev}; for t_prev < 0
        the step returns x0. Computed in float64 from the float32 tables, so a sampler can fuse
        the step (and the guidance) into two passes over the latents without a table lookup.
        """
        sqrt_a, sqrt_1ma = float(self.sqrt_a[t]), float(self.sqrt_1ma[t])
        if t_prev < 0:
            return sqrt_a, -sqrt_1ma
        a_prev = float(self.alphas_cumprod[t_prev])
        root, root_1m = math.sqrt(a_prev), math.sqrt(1 - a_prev)
        return root * sqrt_a + root_1m * sqrt_1ma, root_1m * sqrt_a - root * sqrt_1ma

    def step(self, v: torch.Tensor, t: int, t_prev: int, sample: torch.Tensor, *,
             eta: float = 0.0, noise: torch.Tensor | None = None) -> torch.Tensor:
        """One DDIM step from x_t to x_{t_prev} (or to the predicted x0 when ``t_prev < 0``).

        ``eta > 0`` adds ``sigma * noise`` (DDPM-like); ``noise`` is then required.
        """
        steps = torch.full((sample.shape[0],), t, dtype=torch.long)
        x0 = self.predict_x0(sample, v, steps)
        if t_prev < 0:
            return x0
        eps = self.predict_noise(sample, x0, steps)
        a, a_prev = self.alphas_cumprod[t], self.alphas_cumprod[t_prev]
        sigma = eta * ((1 - a / a_prev) * (1 - a_prev) / (1 - a)).sqrt()
        c = (1 - a_prev - sigma**2).sqrt()
        out = x0 * a_prev.sqrt().item() + c.item() * eps
        if eta > 0:
            if noise is None:
                raise ValueError("step() with eta > 0 needs noise")
            out = out + sigma.item() * noise
        return out
