"""
Per-sample early stopping of the guided sampler.

Two rules:

* ``'relative'`` (the authors' code, default): a sample stops once the relative change
  of its keypoint loss between consecutive guided steps,
  ``|prev - cur| / max(prev, cur, 1)``, falls below ``tol``.
* ``'threshold'`` (the supplement's pseudo-code): a sample stops once its guidance loss
  falls below ``tol``.

A stopped sample's output is frozen at the step where it stopped: that step's guidance
gradient is zeroed for it and its one-step estimate (and camera) are kept.
"""

from typing import Optional

import torch

RULES = ('relative', 'threshold', 'none')


class EarlyStopper:
    """
    Tracks which rows have stopped and what they stopped at.

    :param num_rows: N.
    :param rule: one of :data:`RULES`.
    :param tol: threshold of the rule.
    """

    def __init__(self, num_rows: int, rule: str = 'relative', tol: float = 1e-5,
                 device: Optional[torch.device] = None):
        if rule not in RULES:
            raise ValueError(f'early stopping rule must be one of {RULES}, got {rule!r}')
        self.rule = rule
        self.tol = float(tol)
        self.prev_loss: Optional[torch.Tensor] = None
        self.stopped = torch.zeros(num_rows, dtype=torch.bool, device=device)
        self.stop_step = torch.full((num_rows,), -1, dtype=torch.long, device=device)
        self.x0: Optional[torch.Tensor] = None
        self.translation: Optional[torch.Tensor] = None

    @property
    def active(self) -> bool:
        """Whether this stopper can stop anything."""
        return self.rule != 'none'

    def converged(self, loss: torch.Tensor) -> torch.Tensor:
        """
        Rows whose loss meets the rule at this step (stopped or not).

        :param loss: [N] keypoint loss of this step (detached).
        :return: [N] bool.
        """
        loss = loss.detach()
        if self.rule == 'threshold':
            return loss < self.tol
        if self.rule == 'none' or self.prev_loss is None:
            self.prev_loss = loss.clone()
            return torch.zeros_like(loss, dtype=torch.bool)
        rel = (self.prev_loss - loss).abs() / torch.maximum(
            torch.maximum(self.prev_loss, loss), torch.ones_like(loss))
        self.prev_loss = loss.clone()
        return rel < self.tol

    def record(self, mask: torch.Tensor, x0: torch.Tensor,
               translation: Optional[torch.Tensor], step: int) -> None:
        """
        Freeze the outputs of rows that converge now for the first time.

        :param mask: [N] bool from :meth:`converged`.
        :param x0: [N, D] this step's one-step estimate.
        :param translation: [N, 3] camera translation after this step's update, or None.
        :param step: guided-step counter (for diagnostics).
        """
        if self.x0 is None:
            self.x0 = torch.zeros_like(x0)
            self.translation = None if translation is None else torch.zeros_like(translation)
        new = mask & ~self.stopped
        self.x0 = torch.where(new[:, None], x0.detach(), self.x0)
        if translation is not None:
            self.translation = torch.where(new[:, None], translation.detach(), self.translation)
        self.stop_step = torch.where(new, torch.full_like(self.stop_step, step), self.stop_step)
        self.stopped = self.stopped | new

    def finalize(self, x0: torch.Tensor, translation: Optional[torch.Tensor]):
        """
        Return the outputs: frozen rows keep their stop-time values, others the final ones.

        :param x0: [N, D] final one-step estimate.
        :param translation: [N, 3] final translation or None.
        :return: ``(x0 [N, D], translation [N, 3] or None)``.
        """
        if self.x0 is None:
            return x0, translation
        x0_out = torch.where(self.stopped[:, None], self.x0, x0)
        if translation is None:
            return x0_out, None
        return x0_out, torch.where(self.stopped[:, None], self.translation, translation)
