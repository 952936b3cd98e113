"""
Keypoint-guided DDIM steps as pure tensor functions, for compilation and graph capture.

Every quantity that changes between steps (timestep, Adam moments and step count,
early-stopping state, cached outputs) is a tensor argument and result, and nothing
reads a value back to Python. One step is then a fixed graph: ``torch.compile`` fuses
it on CPU, and on a GPU the same functions can be captured and replayed as CUDA graphs
(no host synchronisation inside the loop).

Scope: keypoint guidance (the single-frame fitting of the paper) with the folded
denoiser and joints-only kinematics; the refiner uses the general loop for multi-view
and temporal guidance. Results equal the general fast path to ~1e-6.

Letters: N rows, D state dimension.
"""

import copy
from typing import NamedTuple

import torch

from scorehmr_ros.body.kinematics import JointsOnlyBody, RestState
from scorehmr_ros.diffusion.folded import FoldedDenoiser
from scorehmr_ros.diffusion.schedule import CosineSchedule
from scorehmr_ros.guidance.compiled import KeypointGradient

RULE_CODES = {'none': 0, 'relative': 1, 'threshold': 2}


class LoopState(NamedTuple):
    """
    Everything a guided step reads and writes.

    :param x_t: [N, D] state.
    :param trans: [N, 3] camera translation.
    :param exp_avg: [N, 3] Adam first moment.
    :param exp_avg_sq: [N, 3] Adam second moment.
    :param adam_step: [] Adam step count (float).
    :param prev_loss: [N] keypoint loss of the previous guided step.
    :param has_prev: [] bool, whether ``prev_loss`` is set.
    :param stopped: [N] bool, early-stopped rows.
    :param stop_step: [N] int64 guided step of the stop, -1 if none.
    :param cached_x0: [N, D] outputs frozen at the stop.
    :param cached_trans: [N, 3] translations frozen at the stop.
    :param x0: [N, D] last one-step estimate.
    :param loss: [N] last keypoint loss.
    :param step: [] int64 guided-step counter.
    """

    x_t: torch.Tensor
    trans: torch.Tensor
    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    adam_step: torch.Tensor
    prev_loss: torch.Tensor
    has_prev: torch.Tensor
    stopped: torch.Tensor
    stop_step: torch.Tensor
    cached_x0: torch.Tensor
    cached_trans: torch.Tensor
    x0: torch.Tensor
    loss: torch.Tensor
    step: torch.Tensor


def initial_state(x_t: torch.Tensor, trans: torch.Tensor) -> LoopState:
    """
    State before the first step.

    :param x_t: [N, D] start state.
    :param trans: [N, 3] start translation.
    :return: the state.
    """
    n = x_t.shape[0]
    zeros_n = x_t.new_zeros(n)
    return LoopState(
        x_t=x_t, trans=trans.clone(), exp_avg=torch.zeros_like(trans),
        exp_avg_sq=torch.zeros_like(trans), adam_step=x_t.new_zeros(()),
        prev_loss=zeros_n, has_prev=torch.zeros((), dtype=torch.bool, device=x_t.device),
        stopped=torch.zeros(n, dtype=torch.bool, device=x_t.device),
        stop_step=torch.full((n,), -1, dtype=torch.long, device=x_t.device),
        cached_x0=torch.zeros_like(x_t), cached_trans=torch.zeros_like(trans), x0=x_t,
        loss=zeros_n, step=torch.zeros((), dtype=torch.long, device=x_t.device))


class FusedKeypointLoop:
    """
    Inversion and keypoint-guided sampling steps of Algorithm 1 as pure functions.

    :param schedule: noise schedule.
    :param folded: folded denoiser (pose only).
    :param body: joints-only kinematics.
    :param layout: keypoint layout of the observations.
    :param guidance: :class:`~scorehmr_ros.config.GuidanceConfig`.
    :param rule: early-stopping rule name; ``tol`` its threshold.
    :param compile: wrap both step functions in ``torch.compile``.
    """

    def __init__(self, schedule: CosineSchedule, folded: FoldedDenoiser, body: JointsOnlyBody,
                 layout: str, guidance, rule: str, tol: float, compile: bool = True):
        if folded.shape is not None:
            raise ValueError('the fused loop covers pose-only denoisers')
        self.schedule = schedule
        self.folded = folded
        self.kp_grad = KeypointGradient(schedule, body, layout, guidance.gmof_sigma_px,
                                        compile=False)
        self.kp_grad.body = copy.copy(body)
        self.kp_grad.body.elementwise = compile
        self.guidance = guidance
        self.rule = RULE_CODES[rule]
        self.tol = float(tol)
        wrap = (lambda f: torch.compile(f, dynamic=False)) if compile else (lambda f: f)
        self.invert = wrap(self._invert)
        self.guided = wrap(self._guided)

    def _invert(self, x_t: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, prep):
        """One DDIM inversion step ``t -> t_next`` (no guidance); t: [1] int64."""
        s = self.schedule
        eps = self.folded(x_t, t, prep)
        x0 = _at(s.sqrt_recip_alphas_cumprod, t) * x_t - \
            _at(s.sqrt_recipm1_alphas_cumprod, t) * eps
        return x0 * _at(s.move_sqrt_alphas_cumprod, t_next) + \
            eps * _at(s.move_sqrt_one_minus_alphas_cumprod, t_next)

    def _guided(self, state: LoopState, t: torch.Tensor, t_next: torch.Tensor, prep,
                rest: RestState, kp) -> LoopState:
        """One guided DDIM step ``t -> t_next`` with camera Adam and early stopping."""
        s, g = self.schedule, self.guidance
        x_t = state.x_t
        eps = self.folded(x_t, t, prep)
        c_x = _at(s.sqrt_recip_alphas_cumprod, t)
        c_e = _at(s.sqrt_recipm1_alphas_cumprod, t)
        (grad_x, grad_t), (_, raw_loss) = self.kp_grad._fn(
            x_t, state.trans, eps, c_x, c_e, rest.joints, rest.bones, rest.vertices,
            kp['target'], kp['conf'], kp['focal'], kp['center'], kp['size'])
        # Early stopping on this step's loss (see guidance.early_stopping for the rules).
        if self.rule == RULE_CODES['relative']:
            rel = (state.prev_loss - raw_loss).abs() / torch.maximum(
                torch.maximum(state.prev_loss, raw_loss), torch.ones_like(raw_loss))
            mask = state.has_prev & (rel < self.tol)
        elif self.rule == RULE_CODES['threshold']:
            mask = raw_loss < self.tol
        else:
            mask = torch.zeros_like(state.stopped)
        keep = (~mask).to(x_t.dtype)
        grad_x = grad_x * keep[:, None]
        loss = raw_loss * keep
        trans, exp_avg, exp_avg_sq, adam_step = (state.trans, state.exp_avg, state.exp_avg_sq,
                                                 state.adam_step)
        if g.optimize_camera:
            grad_t = grad_t * keep[:, None]
            trans, exp_avg, exp_avg_sq, adam_step = _adam(
                trans, exp_avg, exp_avg_sq, adam_step, grad_t, g.camera_lr)
        eps = eps + _at(s.sqrt_one_minus_alphas_cumprod, t) * (
            g.grad_scale * g.rho_keypoints * grad_x)
        x0 = c_x * x_t - c_e * eps
        new = mask & ~state.stopped
        return LoopState(
            x_t=x0 * _at(s.move_sqrt_alphas_cumprod, t_next)
            + eps * _at(s.move_sqrt_one_minus_alphas_cumprod, t_next),
            trans=trans, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq, adam_step=adam_step,
            prev_loss=raw_loss,
            has_prev=torch.ones_like(state.has_prev),
            stopped=state.stopped | new,
            stop_step=torch.where(new, state.step, state.stop_step),
            cached_x0=torch.where(new[:, None], x0, state.cached_x0),
            cached_trans=torch.where(new[:, None], trans, state.cached_trans),
            x0=x0, loss=loss, step=state.step + 1)


def _at(table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """[1] entry of a [T] table at a [1] int64 timestep (a gather, no host read)."""
    return table.index_select(0, t)


def _adam(param, exp_avg, exp_avg_sq, step, grad, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """torch.optim.Adam's update as a pure function (same operation order)."""
    step = step + 1
    exp_avg = exp_avg + (1 - beta1) * (grad - exp_avg)
    exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * grad * grad
    bias_correction1 = 1 - beta1 ** step
    bias_correction2_sqrt = torch.sqrt(1 - beta2 ** step)
    denom = torch.sqrt(exp_avg_sq) / bias_correction2_sqrt + eps
    return param - (lr / bias_correction1) * exp_avg / denom, exp_avg, exp_avg_sq, step
