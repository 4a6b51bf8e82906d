import numpy as np
import pytest
import torch

from midiffusion.io import InputError
from midiffusion.diffusion.schedule import DDPMSchedule


@pytest.fixture
def schedule():
    return DDPMSchedule()


def test_linear_betas_and_alpha_bar(schedule):
    assert schedule.betas[0].item() == pytest.approx(1e-4)
    assert schedule.betas[-1].item() == pytest.approx(0.02)
    assert (schedule.alpha_bar.diff() < 0).all()
    assert schedule.alpha_bar[0].item() == pytest.approx(1 - 1e-4)
    expected_last = np.prod(1 - np.linspace(1e-4, 0.02, 1000))
    assert schedule.alpha_bar[-1].item() == pytest.approx(expected_last, rel=1e-4)
    assert expected_last < 1e-4  # x_{T-1} is almost pure noise


def test_buffers_follow_to():
    schedule = DDPMSchedule(timesteps=10).to(torch.float64)
    assert schedule.alpha_bar.dtype == torch.float64
    assert schedule.state_dict() == {}  # derived from the config, not saved with weights


def test_bad_schedule_arguments():
    with pytest.raises(InputError, match="timesteps"):
        DDPMSchedule(timesteps=0)
    with pytest.raises(InputError, match="beta_start"):
        DDPMSchedule(beta_start=0.1, beta_end=0.01)


def test_add_noise_statistics(schedule):
    generator = torch.Generator().manual_seed(0)
    x0 = torch.full((64, 1, 32, 32), 0.5)
    t = torch.full((64,), 500)
    x_t = schedule.add_noise(x0, torch.randn(x0.shape, generator=generator), t)
    alpha_bar = schedule.alpha_bar[500].item()
    assert x_t.mean().item() == pytest.approx(0.5 * alpha_bar**0.5, abs=0.01)
    assert x_t.std().item() == pytest.approx((1 - alpha_bar) ** 0.5, abs=0.01)


def test_add_noise_uses_each_samples_timestep(schedule):
    x0, noise = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    x_t = schedule.add_noise(x0, noise, torch.tensor([0, 999]))
    assert torch.allclose(x_t[:, 0, 0, 0], schedule.alpha_bar[[0, 999]].sqrt())


def _noisy(schedule, t, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x0 = torch.rand(4, 1, 8, 8, generator=generator) * 2 - 1
    eps = torch.randn(x0.shape, generator=generator)
    return x0, eps, schedule.add_noise(x0, eps, torch.full((4,), t))


@pytest.mark.parametrize("t, t_prev", [(999, 500), (300, 299), (40, -1)])
def test_ddim_eta0_with_true_noise_is_exact(schedule, t, t_prev):
    x0, eps, x_t = _noisy(schedule, t)
    out = schedule.ddim_step(eps, t, t_prev, x_t, eta=0.0)
    expected = x0 if t_prev < 0 else schedule.add_noise(x0, eps, torch.full((4,), t_prev))
    assert torch.allclose(out.pred_x0, x0, atol=1e-3)
    assert torch.allclose(out.prev_sample, expected, atol=1e-3)


def test_ddim_eta1_one_step_equals_ddpm(schedule):
    x0, eps, x_t = _noisy(schedule, 200)
    noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(1))
    ddim = schedule.ddim_step(eps, 200, 199, x_t, eta=1.0, noise=noise)
    ddpm = schedule.ddpm_step(eps, 200, x_t, noise)
    assert torch.allclose(ddim.prev_sample, ddpm.prev_sample, atol=1e-4)


def test_ddpm_posterior_matches_forward_marginal(schedule):
    """x_t ~ q(x_t | x0) then x_{t-1} ~ posterior gives x_{t-1} ~ q(x_{t-1} | x0)."""
    generator = torch.Generator().manual_seed(0)
    t = 100
    x0 = torch.full((200_000, 1, 1, 1), 0.3)
    eps = torch.randn(x0.shape, generator=generator)
    x_t = schedule.add_noise(x0, eps, torch.full((len(x0),), t))
    prev = schedule.ddpm_step(eps, t, x_t, torch.randn(x0.shape, generator=generator)).prev_sample
    alpha_bar_prev = schedule.alpha_bar[t - 1].item()
    assert prev.mean().item() == pytest.approx(0.3 * alpha_bar_prev**0.5, abs=0.005)
    assert prev.std().item() == pytest.approx((1 - alpha_bar_prev) ** 0.5, abs=0.005)


def test_ddpm_last_step_returns_x0(schedule):
    x0, eps, x_t = _noisy(schedule, 0)
    out = schedule.ddpm_step(eps, 0, x_t, None)
    assert torch.allclose(out.prev_sample, x0, atol=1e-4)


def test_pred_x0_is_clipped(schedule):
    x_t = torch.zeros(1, 1, 4, 4)
    eps = torch.full_like(x_t, -50.0)
    assert schedule.ddpm_step(eps, 500, x_t, torch.zeros_like(x_t)).pred_x0.max().item() == 1.0
    assert schedule.ddim_step(-eps, 500, 100, x_t).pred_x0.min().item() == -1.0


def test_noise_required_when_stochastic(schedule):
    x_t = torch.zeros(1, 1, 4, 4)
    with pytest.raises(InputError, match="noise"):
        schedule.ddpm_step(x_t, 5, x_t, None)
    with pytest.raises(InputError, match="noise"):
        schedule.ddim_step(x_t, 5, 2, x_t, eta=0.5)


@pytest.mark.parametrize("n", [1, 7, 50, 1000])
def test_ddim_timesteps(schedule, n):
    steps = schedule.ddim_timesteps(n)
    assert steps.dtype == torch.long and len(steps) == n
    assert steps[0].item() == 999
    assert (steps.diff() < 0).all()
    if n > 1:
        assert steps[-1].item() == 0


@pytest.mark.parametrize("n", [0, 1001])
def test_ddim_timesteps_out_of_range(schedule, n):
    with pytest.raises(InputError, match="steps"):
        schedule.ddim_timesteps(n)
