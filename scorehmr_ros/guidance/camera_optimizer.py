"""
Adam on the camera translation, one step per guided DDIM step.

A functional copy of ``torch.optim.Adam``'s update (same operation order, defaults
betas (0.9, 0.999), eps 1e-8) so that the state lives in plain tensors that the refiner
can batch, mask and later capture in a CUDA graph.
"""

import math

import torch


class CameraTranslationAdam:
    """
    Element-wise Adam state for ``[N, 3]`` translations.

    :param translation: [N, 3] initial translation (copied).
    :param lr: learning rate (0.01 in ScoreHMR).
    """

    def __init__(self, translation: torch.Tensor, lr: float = 0.01,
                 betas=(0.9, 0.999), eps: float = 1e-8):
        self.translation = translation.detach().clone()
        self.lr = float(lr)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = float(eps)
        self.exp_avg = torch.zeros_like(self.translation)
        self.exp_avg_sq = torch.zeros_like(self.translation)
        self.steps = 0

    def step(self, grad: torch.Tensor) -> None:
        """
        Apply one Adam update.

        :param grad: [N, 3] gradient of the (unweighted) keypoint loss.
        """
        self.steps += 1
        self.exp_avg.lerp_(grad, 1 - self.beta1)
        self.exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        bias_correction1 = 1 - self.beta1 ** self.steps
        bias_correction2_sqrt = math.sqrt(1 - self.beta2 ** self.steps)
        denom = (self.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
        self.translation.addcdiv_(self.exp_avg, denom, value=-self.lr / bias_correction1)
