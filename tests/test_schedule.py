"""Cosine schedule against its closed form and the DDIM step rules."""

import math

import pytest
import torch

from scorehmr_ros.diffusion.schedule import (
    CosineSchedule, inversion_pairs, sampling_pairs, timestep_grid)


def closed_form_alphas_cumprod(t, T=1000, s=0.008):
    f = lambda k: math.cos((k / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    prod = 1.0
    for k in range(t + 1):
        prod *= 1.0 - min(1.0 - f(k + 1) / f(k), 0.999)
    return prod


@pytest.mark.parametrize('t', [0, 1, 2, 10, 50, 100, 500, 999])
def test_alphas_cumprod_closed_form(t):
    sched = CosineSchedule()
    want = closed_form_alphas_cumprod(t)
    assert sched.alphas_cumprod[t].item() == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_schedule_properties():
    sched = CosineSchedule()
    ac = sched.alphas_cumprod.double()
    assert sched.alphas_cumprod.dtype == torch.float32
    assert (ac[1:] < ac[:-1]).all()
    assert ac[0] < 1.0  # t' = 0 uses abar_0, not 1
    assert sched.betas.max().item() == pytest.approx(0.999)
    assert torch.allclose(sched.sqrt_alphas_cumprod.double() ** 2, ac, rtol=1e-6)
    # Derived buffers come from the float64 schedule, not from the float32 abar.
    for t in (0, 1, 25, 400):
        exact = closed_form_alphas_cumprod(t)
        assert sched.sqrt_recipm1_alphas_cumprod[t].item() == pytest.approx(
            math.sqrt(1 / exact - 1), rel=1e-6)
        assert sched.sqrt_recip_alphas_cumprod[t].item() == pytest.approx(
            math.sqrt(1 / exact), rel=1e-6)


def test_predict_x0_inverts_q_sample():
    sched = CosineSchedule()
    x0 = torch.randn(4, 144)
    noise = torch.randn(4, 144)
    for t in (0, 2, 50, 400):
        x_t = sched.q_sample(x0, t, noise)
        assert torch.allclose(sched.predict_x0(x_t, t, noise), x0, atol=1e-4)


def test_grids():
    grid = timestep_grid(50, 2)
    assert grid[0] == 0 and grid[-1] == 50 and len(grid) == 26
    assert inversion_pairs(grid)[:2] == [(0, 2), (2, 4)]
    assert inversion_pairs(grid)[-1] == (48, 50)
    assert sampling_pairs(grid)[0] == (50, 48)
    assert sampling_pairs(grid)[-1] == (2, 0)
    # Not divisible: the grid stops at the largest multiple below tau.
    assert timestep_grid(50, 4)[-1] == 48
    with pytest.raises(ValueError):
        timestep_grid(5, 10)
    with pytest.raises(ValueError):
        timestep_grid(50, 0)
