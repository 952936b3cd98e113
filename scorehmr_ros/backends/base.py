"""
How the denoiser runs: one small interface for every runtime.

A backend is prepared once per refinement call with the rows' features (the features
do not change between DDIM steps, so runtimes may fold them into constants or keep
them bound on the device) and then evaluates the noise for ``(x_t, t)`` as often as
the sampler asks. Backends only return eps: no gradient ever flows through them.

Letters: N rows, D state dimension, C features.
"""

import abc
from typing import Any

import torch


class DenoiserBackend(abc.ABC):
    """
    Evaluate eps_phi(x_t, t, c) for a batch of rows sharing the timestep.

    Use as a context manager or call :meth:`close` to release runtime resources.
    """

    #: short name used in configs, logs and benchmark tables
    name = 'abstract'

    @property
    @abc.abstractmethod
    def diffusion_dim(self) -> int:
        """D of the state."""

    @property
    @abc.abstractmethod
    def cond_dim(self) -> int:
        """C the network expects."""

    def prepare(self, cond: torch.Tensor) -> Any:
        """
        Bind the features of the rows for the following :meth:`eps` calls.

        :param cond: [N, C] features.
        :return: an opaque handle passed back to :meth:`eps`.
        """
        if cond.dim() != 2 or cond.shape[1] != self.cond_dim:
            raise ValueError(f'{self.name} backend: cond must be [N, {self.cond_dim}], '
                             f'got {list(cond.shape)}')
        return self._prepare_impl(cond)

    def eps(self, x_t: torch.Tensor, t: int, prepared: Any) -> torch.Tensor:
        """
        Predict noise.

        :param x_t: [N, D] states.
        :param t: integer timestep shared by the rows.
        :param prepared: :meth:`prepare` of the same rows.
        :return: [N, D] predicted noise (a fresh tensor; never modified by the caller).
        """
        return self._eps_impl(x_t, int(t), prepared)

    @abc.abstractmethod
    def _prepare_impl(self, cond: torch.Tensor) -> Any:
        """Backend-specific :meth:`prepare`."""

    @abc.abstractmethod
    def _eps_impl(self, x_t: torch.Tensor, t: int, prepared: Any) -> torch.Tensor:
        """Backend-specific :meth:`eps`."""

    def close(self) -> None:
        """Release runtime resources (sessions, engines, device buffers)."""

    def __enter__(self) -> 'DenoiserBackend':
        return self

    def __exit__(self, *exc) -> None:
        self.close()
