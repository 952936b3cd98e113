r"""
Cosine noise schedule and the DDIM update rules of ScoreHMR.

Symbols (ScoreHMR / DDIM papers):

==========================  ==========================================
code                        math
==========================  ==========================================
``alphas_cumprod[t]``       :math:`\bar\alpha_t`
``predict_x0(x_t, t, eps)``  :math:`\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\epsilon)/
                            \sqrt{\bar\alpha_t}`
``ddim_move(x0, eps, t')``  :math:`\sqrt{\bar\alpha_{t'}}\,\hat x_0 +
                            \sqrt{1-\bar\alpha_{t'}}\,\epsilon` (eta = 0, both directions)
==========================  ==========================================

The schedule is computed in float64 and stored as float32 tensors, as the reference
implementation does, so that the same float32 coefficients enter every step.
"""

import math
from typing import List, Tuple

import torch


class CosineSchedule(torch.nn.Module):
    r"""
    Improved-DDPM cosine schedule (Nichol & Dhariwal 2021) with T steps.

    Buffers are [T] float32 tensors indexed by the integer timestep ``t`` in ``[0, T)``.
    Note that ``alphas_cumprod[0] < 1``: the last DDIM step goes to ``t' = 0`` and uses
    :math:`\bar\alpha_0`, not 1.
    """

    def __init__(self, num_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999):
        super().__init__()
        if num_timesteps < 2:
            raise ValueError(f'num_timesteps must be >= 2, got {num_timesteps}')
        self.num_timesteps = int(num_timesteps)
        self.s = float(s)
        self.max_beta = float(max_beta)
        steps = torch.linspace(0, num_timesteps, num_timesteps + 1, dtype=torch.float64)
        f = torch.cos(((steps / num_timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2
        f = f / f[0]
        betas = torch.clip(1 - (f[1:] / f[:-1]), 0, max_beta)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        for name, value in (
            ('betas', betas),
            ('alphas_cumprod', alphas_cumprod),
            ('sqrt_alphas_cumprod', torch.sqrt(alphas_cumprod)),
            ('sqrt_one_minus_alphas_cumprod', torch.sqrt(1.0 - alphas_cumprod)),
            ('sqrt_recip_alphas_cumprod', torch.sqrt(1.0 / alphas_cumprod)),
            ('sqrt_recipm1_alphas_cumprod', torch.sqrt(1.0 / alphas_cumprod - 1)),
        ):
            self.register_buffer(name, value.to(torch.float32), persistent=False)
        # The reference implementation's DDIM moves take sqrt(abar) and sqrt(1 - abar) of
        # the float32 abar in float32. Near t = 0, 1 - abar loses most of its digits that
        # way (about 1e-3 relative at t = 2), and matching that arithmetic is what makes
        # outputs (and early-stopping decisions) agree with it.
        abar32 = alphas_cumprod.to(torch.float32)
        self.register_buffer('move_sqrt_alphas_cumprod', abar32.sqrt(), persistent=False)
        self.register_buffer('move_sqrt_one_minus_alphas_cumprod', (1 - abar32).sqrt(),
                             persistent=False)

    def predict_x0(self, x_t: torch.Tensor, t: int, eps: torch.Tensor) -> torch.Tensor:
        """
        One-step denoised estimate (ScoreHMR eq. 9).

        :param x_t: [N, D] noisy state at timestep ``t``.
        :param t: integer timestep.
        :param eps: [N, D] noise prediction.
        :return: [N, D] estimate of x_0.
        """
        # Written as sqrt(1/a) x - sqrt(1/a - 1) eps, the reference code's arithmetic.
        return self.sqrt_recip_alphas_cumprod[t] * x_t - self.sqrt_recipm1_alphas_cumprod[t] * eps

    def ddim_move(self, x0: torch.Tensor, eps: torch.Tensor, t_to: int) -> torch.Tensor:
        """
        Deterministic DDIM move (eta = 0) of ``(x0, eps)`` to timestep ``t_to``.

        The same rule serves inversion (``t_to > t``) and sampling (``t_to < t``).

        :param x0: [N, D] clean-state estimate.
        :param eps: [N, D] noise estimate.
        :param t_to: integer target timestep.
        :return: [N, D] state at ``t_to``.
        """
        return (x0 * self.move_sqrt_alphas_cumprod[t_to]
                + eps * self.move_sqrt_one_minus_alphas_cumprod[t_to])

    def q_sample(self, x0: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
        """
        Forward diffusion :math:`q(x_t | x_0)`.

        :param x0: [N, D] clean state.
        :param t: integer timestep.
        :param noise: [N, D] standard normal noise.
        :return: [N, D] noisy state.
        """
        return x0 * self.sqrt_alphas_cumprod[t] + noise * self.sqrt_one_minus_alphas_cumprod[t]


def timestep_grid(tau: int, step: int) -> List[int]:
    """
    Timesteps ``0, step, 2*step, ...`` up to ``tau`` (inclusive when divisible).

    :param tau: largest noise level to reach.
    :param step: DDIM step size (Delta t).
    :return: the grid, ascending, starting at 0.
    """
    if step < 1:
        raise ValueError(f'ddim step must be >= 1, got {step}')
    if tau < step:
        raise ValueError(f'tau ({tau}) must be >= the DDIM step ({step})')
    return list(range(0, tau + 1, step))


def inversion_pairs(grid: List[int]) -> List[Tuple[int, int]]:
    """
    ``(t, t_next)`` pairs for DDIM inversion: ``[(0, dt), (dt, 2dt), ..., (., tau)]``.

    :param grid: ascending timestep grid from :func:`timestep_grid`.
    :return: consecutive pairs going up in noise.
    """
    return list(zip(grid[:-1], grid[1:]))


def sampling_pairs(grid: List[int]) -> List[Tuple[int, int]]:
    """
    ``(t, t_next)`` pairs for DDIM sampling: ``[(tau, tau-dt), ..., (dt, 0)]``.

    :param grid: ascending timestep grid from :func:`timestep_grid`.
    :return: consecutive pairs going down in noise.
    """
    return [(b, a) for a, b in reversed(inversion_pairs(grid))]
