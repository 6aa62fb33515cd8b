"""Golden numbers and identities of the DDIM scheduler (model/scheduler.py, STLDM.md section 4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.config import DiffusionConfig
from model.scheduler import DDIMScheduler

# STLDM.md section 4: the paper's 20-step DDIM grid over 50 training steps.
PAPER_GRID_20 = [49, 46, 44, 41, 39, 36, 34, 31, 29, 26, 24, 21, 19, 16, 14, 11, 9, 6, 4, 1]


def numpy_sigmoid_alphas_cumprod(steps: int = 50) -> np.ndarray:
    """Independent float64 implementation of the sigmoid schedule (start -3, end 3, tau 1)."""

    def sigmoid(z):
        return 1.0 / (1.0 + np.exp(-z))

    t = np.linspace(0.0, 1.0, steps + 1)
    f = (-sigmoid(t * 6 - 3) + sigmoid(3)) / (sigmoid(3) - sigmoid(-3))
    f = f / f[0]
    betas = np.clip(1 - f[1:] / f[:-1], 0, 0.999)
    return np.cumprod(1 - betas)


@pytest.fixture
def scheduler() -> DDIMScheduler:
    return DDIMScheduler(DiffusionConfig())


def test_paper_grid_of_20_steps_is_the_published_one(scheduler):
    pairs = scheduler.timesteps(20)
    assert [t for t, _ in pairs] == PAPER_GRID_20
    assert [t_prev for _, t_prev in pairs] == PAPER_GRID_20[1:] + [-1]


def test_grid_with_every_training_step_visits_49_down_to_0(scheduler):
    pairs = scheduler.timesteps(50)
    assert pairs == [(t, t - 1) for t in range(49, -1, -1)]


def test_single_step_grid_jumps_from_the_last_step_to_x0(scheduler):
    assert scheduler.timesteps(1) == [(49, -1)]


@pytest.mark.parametrize("num_steps", [0, -1, 51])
def test_timesteps_outside_one_to_train_steps_raise(scheduler, num_steps):
    with pytest.raises(ValueError, match=r"\[1, 50\]"):
        scheduler.timesteps(num_steps)


def test_alphas_cumprod_matches_an_independent_float64_implementation(scheduler):
    expected = numpy_sigmoid_alphas_cumprod()
    assert scheduler.alphas_cumprod.dtype == torch.float32
    assert scheduler.alphas_cumprod.shape == (50,)
    np.testing.assert_allclose(scheduler.alphas_cumprod.numpy(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("t", "golden"),
    [
        (0, 0.9936747784714357),
        (1, 0.9866336892876759),
        (24, 0.5),  # the sigmoid schedule is symmetric: half signal at the middle step
        (25, 0.46689597351161877),
        (48, 0.006325221528564594),
        (49, 6.325221528564599e-06),  # the last beta is clipped to 0.999
    ],
)
def test_alphas_cumprod_golden_spot_values(scheduler, t, golden):
    assert scheduler.alphas_cumprod[t].item() == pytest.approx(golden, rel=1e-6, abs=1e-9)


def test_alphas_cumprod_matches_the_reference_code(scheduler, reference_dir):
    reference = np.load(reference_dir / "tiny_reference_cases.npz")["alphas_cumprod"]
    np.testing.assert_allclose(scheduler.alphas_cumprod.numpy(), reference, rtol=0, atol=1e-6)


def test_alphas_cumprod_decreases_strictly_and_stays_positive(scheduler):
    a = scheduler.alphas_cumprod
    assert torch.all(a[1:] < a[:-1])
    assert torch.all(a > 0) and torch.all(a < 1)


def test_loss_weight_is_snr_over_snr_plus_one(scheduler):
    t = torch.arange(50)
    a = scheduler.alphas_cumprod.double()
    snr = a / (1 - a)
    torch.testing.assert_close(scheduler.loss_weight(t), scheduler.alphas_cumprod)
    torch.testing.assert_close(scheduler.loss_weight(t).double(), snr / (snr + 1), rtol=1e-6, atol=1e-7)


def test_v_target_and_add_noise_invert_through_predict_x0(scheduler):
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 4, 3, 8, 8, generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.tensor([0, 1, 17, 24, 48, 49])
    x_t = scheduler.add_noise(x0, noise, t)
    v = scheduler.v_target(x0, noise, t)
    torch.testing.assert_close(scheduler.predict_x0(x_t, v, t), x0, rtol=0, atol=1e-5)
    torch.testing.assert_close(scheduler.predict_noise(x_t, x0, t), noise, rtol=0, atol=1e-4)


def test_add_noise_follows_the_forward_process_formula(scheduler):
    x0, noise = torch.ones(2, 3), torch.full((2, 3), 2.0)
    t = torch.tensor([24, 49])
    a = scheduler.alphas_cumprod[t].double()[:, None]
    expected = (a.sqrt() * 1.0 + (1 - a).sqrt() * 2.0).float().expand(2, 3)
    torch.testing.assert_close(scheduler.add_noise(x0, noise, t), expected)


def test_step_with_eta_zero_is_deterministic_and_pure(scheduler):
    gen = torch.Generator().manual_seed(1)
    sample = torch.randn(2, 4, 3, 8, 8, generator=gen)
    v = torch.randn(sample.shape, generator=gen)
    sample_copy, v_copy = sample.clone(), v.clone()
    first = scheduler.step(v, 41, 39, sample, eta=0.0)
    second = scheduler.step(v, 41, 39, sample, eta=0.0)
    assert torch.equal(first, second)
    assert torch.equal(sample, sample_copy) and torch.equal(v, v_copy)


def test_step_with_the_exact_v_moves_to_x_t_prev_on_the_same_noise(scheduler):
    """DDIM (eta 0) keeps the noise direction: x_t -> sqrt(a') x0 + sqrt(1 - a') eps."""
    gen = torch.Generator().manual_seed(2)
    x0 = torch.randn(3, 2, 4, 8, 8, generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    for t, t_prev in scheduler.timesteps(20)[:-1]:
        steps = torch.full((3,), t)
        x_t = scheduler.add_noise(x0, noise, steps)
        out = scheduler.step(scheduler.v_target(x0, noise, steps), t, t_prev, x_t)
        expected = scheduler.add_noise(x0, noise, torch.full((3,), t_prev))
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-4)


def test_last_step_returns_the_predicted_x0(scheduler):
    gen = torch.Generator().manual_seed(3)
    sample = torch.randn(2, 5, 3, 4, 4, generator=gen)
    v = torch.randn(sample.shape, generator=gen)
    out = scheduler.step(v, 1, -1, sample)
    assert torch.equal(out, scheduler.predict_x0(sample, v, torch.full((2,), 1)))


def test_full_ddim_loop_with_an_oracle_v_recovers_x0(scheduler):
    """Golden full loop: from x_T = add_noise(x0, eps, 49), 20 steps of the exact v give x0."""
    gen = torch.Generator().manual_seed(4)
    x0 = torch.randn(2, 3, 4, 8, 8, generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    x = scheduler.add_noise(x0, noise, torch.full((2,), 49))
    for t, t_prev in scheduler.timesteps(20):
        steps = torch.full((2,), t)
        # the oracle knows x0 and reads eps off the current sample
        eps = (x - scheduler.add_noise(x0, torch.zeros_like(x0), steps)) / scheduler.sqrt_1ma[t]
        x = scheduler.step(scheduler.v_target(x0, eps, steps), t, t_prev, x)
    torch.testing.assert_close(x, x0, rtol=0, atol=1e-4)


def test_step_with_positive_eta_needs_noise(scheduler):
    sample = torch.zeros(1, 2, 3, 4, 4)
    with pytest.raises(ValueError, match="noise"):
        scheduler.step(sample, 41, 39, sample, eta=1.0)


def test_step_with_positive_eta_adds_the_given_noise(scheduler):
    sample, v = torch.zeros(1, 2, 3, 4, 4), torch.zeros(1, 2, 3, 4, 4)
    noise = torch.ones_like(sample)
    a, a_prev = scheduler.alphas_cumprod[41].double(), scheduler.alphas_cumprod[39].double()
    sigma = ((1 - a / a_prev) * (1 - a_prev) / (1 - a)).sqrt().item()
    out = scheduler.step(v, 41, 39, sample, eta=1.0, noise=noise)
    torch.testing.assert_close(out, torch.full_like(sample, sigma), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_steps", [1, 5, 20, 50])
def test_step_coefficients_give_the_eta_zero_step(scheduler, num_steps):
    gen = torch.Generator().manual_seed(5)
    sample = torch.randn(2, 3, 4, 8, 8, generator=gen)
    v = torch.randn(sample.shape, generator=gen)
    for t, t_prev in scheduler.timesteps(num_steps):
        a, b = scheduler.step_coefficients(t, t_prev)
        torch.testing.assert_close(a * sample + b * v, scheduler.step(v, t, t_prev, sample),
                                   rtol=0, atol=2e-6)
