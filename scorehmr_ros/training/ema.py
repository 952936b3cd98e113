"""
Exponential moving average of a network's weights (the weights released checkpoints ship).

After every optimiser step: ``ema = decay * ema + (1 - decay) * online`` for each
floating-point parameter and buffer (ScoreHMR trains with decay 0.995).
"""

import copy
from typing import Any, Dict

import torch
from torch import nn


class EMA:
    """
    A frozen copy of a network that follows its weights slowly.

    :param model: the online network (copied, not modified).
    :param decay: weight of the old average per update, in [0, 1).
    """

    def __init__(self, model: nn.Module, decay: float = 0.995):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f'EMA decay must be in [0, 1), got {decay!r}')
        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """
        Move the average towards the online network's current weights.

        :param model: the online network (same architecture).
        """
        online = model.state_dict()
        for name, value in self.model.state_dict().items():
            if value.is_floating_point():
                value.lerp_(online[name], 1.0 - self.decay)
            else:
                value.copy_(online[name])
        self.num_updates += 1

    def state_dict(self) -> Dict[str, Any]:
        """Plain-data state (tensors and numbers): what a resume needs."""
        return {'decay': self.decay, 'num_updates': self.num_updates,
                'model': {k: v.detach().clone() for k, v in self.model.state_dict().items()}}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """
        Restore a state written by :meth:`state_dict`.

        :param state: the state.
        """
        self.decay = float(state['decay'])
        self.num_updates = int(state['num_updates'])
        self.model.load_state_dict(state['model'])
