"""
Keypoint-guided DDIM steps as pure tensor functions, for compilation and graph capture.

Every quantity that changes between steps (timestep, Adam moments and step count,
early-stopping state, cached outputs) is a tensor argument and result, and nothing
reads a value back to Python. One step is then a fixed graph: ``torch.compile`` fuses
it on CPU, and on a GPU the same functions can be captured and replayed as CUDA graphs
(no host synchronisation inside the loop).

Scope: keypoint guidance (the single-frame fitting of the paper) and calibrated
multi-view keypoint guidance (one state per person, reprojected into every view: see
guidance/calibrated.py) with the folded denoiser and joints-only kinematics, optionally
with the temporal terms (L_temp along ``prev_row`` chains, as the online window mode runs
it, and the pull toward frozen targets of the online frozen mode); the refiner uses the
general loop for the paper's multi-view consistency loss. Results equal the general fast
path to ~1e-6 (single view) and ~1e-5 (calibrated multi-view).

Letters: N states (rows of the diffusion batch), R observation rows (N, or the view rows
of calibrated multi-view guidance), D state dimension.
"""

import copy
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch

from scorehmr_ros.body.kinematics import JointsOnlyBody, RestState
from scorehmr_ros.diffusion.denoiser import POSE_DIM
from scorehmr_ros.diffusion.folded import FoldedDenoiser
from scorehmr_ros.diffusion.schedule import CosineSchedule
from scorehmr_ros.guidance.compiled import KeypointGradient, MultiViewKeypointGradient
from scorehmr_ros.guidance.losses import temporal_smoothness_loss, temporal_target_loss

RULE_CODES = {'none': 0, 'relative': 1, 'threshold': 2}
#: Compiled variants per step function (loop instances x row counts x terms).
RECOMPILE_LIMIT = 64
#: keypoint-dict entries that switch a guided step to calibrated multi-view guidance
MULTIVIEW_KEYS = ('row_state', 'rel_rot', 'rel_t', 'views')


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
    :param row_loss: [R] last keypoint loss per observation row (``loss`` itself for
        single-view guidance); stopped states' rows are zero, as in ``loss``.
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
    row_loss: torch.Tensor


def initial_state(x_t: torch.Tensor, trans: torch.Tensor,
                  num_rows: Optional[int] = None) -> LoopState:
    """
    State before the first step.

    :param x_t: [N, D] start state.
    :param trans: [N, 3] start translation.
    :param num_rows: R observation rows (default N).
    :return: the state.
    """
    n = x_t.shape[0]
    rows = n if num_rows is None else int(num_rows)
    zeros_n = x_t.new_zeros(n)
    return LoopState(
        x_t=x_t, trans=trans.clone(), exp_avg=torch.zeros_like(trans),
        exp_avg_sq=torch.zeros_like(trans), adam_step=x_t.new_zeros(()),
        prev_loss=zeros_n, has_prev=torch.zeros((), dtype=torch.bool, device=x_t.device),
        stopped=torch.zeros(n, dtype=torch.bool, device=x_t.device),
        stop_step=torch.full((n,), -1, dtype=torch.long, device=x_t.device),
        cached_x0=torch.zeros_like(x_t), cached_trans=torch.zeros_like(trans), x0=x_t,
        loss=zeros_n, step=torch.zeros((), dtype=torch.long, device=x_t.device),
        row_loss=x_t.new_zeros(rows))


class FusedKeypointLoop:
    """
    Inversion and keypoint-guided sampling steps of Algorithm 1 as pure functions.

    :param schedule: noise schedule.
    :param folded: folded denoiser (pose only).
    :param body: joints-only kinematics.
    :param layout: keypoint layout of the observations.
    :param guidance: :class:`~scorehmr_ros.config.GuidanceConfig`.
    :param rule: early-stopping rule name; ``tol`` its threshold.
    :param compile: wrap the step functions in ``torch.compile``.
    :param steps_per_call: DDIM steps per compiled call in :meth:`invert_sweep` and
        :meth:`guided_sweep`. At batch 1 a call's fixed cost (argument handling, kernel
        launches, ~0.3 ms here) is comparable to its arithmetic, so running K steps per
        call cuts the time per step; the price is a K times larger graph to compile once.
    :param invert_steps_per_call: the same for the inversion sweep (default
        ``steps_per_call``). Inversion steps carry no gradient, so their graphs compile
        several times faster than guided ones: a larger K there is cheap.
    :param cpp_wrapper: generate the compiled graphs' host code in C++ instead of
        Python (inductor's ``cpp_wrapper``): less fixed cost per kernel, slower compiling.
    :param cuda_graphs: record each compiled call as a CUDA graph and replay it (inductor's
        CUDA graph trees; the steps have no host synchronisation, so a whole call is one
        replay). Only for a CUDA device.
    """

    def __init__(self, schedule: CosineSchedule, folded: FoldedDenoiser, body: JointsOnlyBody,
                 layout: str, guidance, rule: str, tol: float, compile: bool = True,
                 steps_per_call: int = 1, invert_steps_per_call: Optional[int] = None,
                 cpp_wrapper: bool = False, cuda_graphs: bool = False):
        if folded.shape is not None:
            raise ValueError('the fused loop covers pose-only denoisers')
        if invert_steps_per_call is None:
            invert_steps_per_call = steps_per_call
        for name, value in (('steps_per_call', steps_per_call),
                            ('invert_steps_per_call', invert_steps_per_call)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} must be an integer >= 1, got {value!r}')
        self.schedule = schedule
        self.folded = folded
        self.kp_grad = KeypointGradient(schedule, body, layout, guidance.gmof_sigma_px,
                                        compile=False)
        self.kp_grad.body = copy.copy(body)
        self.kp_grad.body.elementwise = compile
        self.mv_grad = MultiViewKeypointGradient(body, layout, guidance.gmof_sigma_px,
                                                 elementwise=compile)
        self.guidance = guidance
        self.rule = RULE_CODES[rule]
        self.tol = float(tol)
        # Inputs keep their shapes and strides between calls (the refiner builds them the
        # same way every time), so inductor's per-call size/stride asserts on every graph
        # input are dropped: ~50 checks per guided step, a measurable share at batch 1.
        options = {'size_asserts': False, 'cpp_wrapper': bool(cpp_wrapper)}
        if cuda_graphs:
            options['triton.cudagraphs'] = True
        if compile:
            # Dynamo keeps a few variants per function (8 by default) and runs further ones
            # uncompiled; every loop instance (single view, calibrated, each online engine)
            # and row count is one variant of the same functions, so a node with a few
            # tracks would fall off the compiled path. Raise the limit (process-wide).
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit,
                                                       RECOMPILE_LIMIT)
        wrap = ((lambda f: torch.compile(f, dynamic=False, options=options)) if compile
                else (lambda f: f))
        self.invert = wrap(self._invert)
        self.guided = wrap(self._guided)
        self.steps_per_call = steps_per_call
        self.invert_steps_per_call = invert_steps_per_call
        self._invert_chunk = wrap(self._invert_many) if invert_steps_per_call > 1 else None
        self._guided_chunk = wrap(self._guided_many) if steps_per_call > 1 else None
        self._plans = {}
        #: input signatures whose graphs ran once with full guard evaluation (the refiner
        #: skips the guards that do not tell compiled variants apart on later calls)
        self.checked_signatures = set()

    def invert_sweep(self, x_t: torch.Tensor, pairs: Sequence[Tuple[int, int]], prep
                     ) -> torch.Tensor:
        """
        DDIM inversion over consecutive ``(t, t_next)`` pairs.

        :param x_t: [N, D] state at the first pair's ``t``.
        :param pairs: consecutive timestep pairs (each ``t_next`` is the next ``t``).
        :param prep: the folded denoiser's per-frame preparation.
        :return: [N, D] state at the last ``t_next``.
        """
        for many, ts in self._plan(pairs, x_t.device, self.invert_steps_per_call):
            x_t = (self._invert_chunk(x_t, ts, prep) if many
                   else self.invert(x_t, ts[0:1], ts[1:2], prep))
        return x_t

    def guided_sweep(self, state: LoopState, pairs: Sequence[Tuple[int, int]], prep,
                     rest: RestState, kp, temporal: Optional[Dict[str, torch.Tensor]] = None
                     ) -> LoopState:
        """
        Guided DDIM steps over consecutive ``(t, t_next)`` pairs.

        :param state: loop state at the first pair's ``t``.
        :param pairs: consecutive timestep pairs.
        :param prep: the folded denoiser's per-frame preparation.
        :param rest: rest state of the rows' shapes.
        :param kp: keypoint tensors of the R observation rows (target [R, K, 2], conf
            [R, K], focal [R, 2], center [R, 2], size [R, 2]); for calibrated multi-view
            guidance also ``row_state`` [R] int64 (state of each row), ``rel_rot`` [R, 3, 3]
            and ``rel_t`` [R, 3] (anchor-to-row camera transform) and ``views`` [N] (each
            state's loss divisor: its view count for the view mean, ones for the sum).
        :param temporal: temporal terms, weighted by ``guidance.rho_temporal``, or None:
            ``prev_row`` [N] int64 (L_temp along the chains, -1 for a first frame) and/or
            ``target`` [N, 144] with ``weight`` [N] (the pull toward frozen targets).
        :return: the state after the last step.
        """
        temporal = _checked_temporal(temporal)
        present = [key for key in MULTIVIEW_KEYS if kp.get(key) is not None]
        if present and len(present) != len(MULTIVIEW_KEYS):
            raise ValueError(f'kp: multi-view guidance needs all of {list(MULTIVIEW_KEYS)}, '
                             f'got {present}')
        for many, ts in self._plan(pairs, state.x_t.device, self.steps_per_call):
            state = (self._guided_chunk(state, ts, prep, rest, kp, temporal) if many
                     else self.guided(state, ts[0:1], ts[1:2], prep, rest, kp, temporal))
        return state

    def _plan(self, pairs: Sequence[Tuple[int, int]], device, k: int
              ) -> List[Tuple[bool, torch.Tensor]]:
        """
        Split a sweep into calls of ``k`` steps, made once per sweep, device and ``k``.

        :return: ``(True, [K+1] timesteps)`` for a call of K steps, ``(False, [2]
            timesteps)`` for a single step.
        """
        key = (tuple(pairs), str(device), k)
        plan = self._plans.get(key)
        if plan is None:
            times = [t for t, _ in pairs] + [pairs[-1][1]] if pairs else []
            for (_, t_next), (t, _) in zip(pairs, pairs[1:]):
                if t_next != t:
                    raise ValueError(f'timestep pairs are not consecutive: {list(pairs)}')
            plan, start = [], 0
            while start < len(pairs):
                many = k > 1 and len(pairs) - start >= k
                size = k if many else 1
                plan.append((many, torch.tensor(times[start:start + size + 1], device=device)))
                start += size
            self._plans[key] = plan
        return plan

    def _invert_many(self, x_t: torch.Tensor, ts: torch.Tensor, prep) -> torch.Tensor:
        """``invert_steps_per_call`` inversion steps along ts ([K+1] int64), one graph."""
        for i in range(self.invert_steps_per_call):
            x_t = self._invert(x_t, ts[i:i + 1], ts[i + 1:i + 2], prep)
        return x_t

    def _guided_many(self, state: LoopState, ts: torch.Tensor, prep, rest: RestState,
                     kp, temporal) -> LoopState:
        """``steps_per_call`` guided steps along ts ([K+1] int64), one graph."""
        for i in range(self.steps_per_call):
            state = self._guided(state, ts[i:i + 1], ts[i + 1:i + 2], prep, rest, kp,
                                 temporal)
        return state

    def _invert(self, x_t: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, prep):
        """One DDIM inversion step ``t -> t_next`` (no guidance); t: [1] int64."""
        s = self.schedule
        eps = self.folded(x_t, t, prep)
        x0 = _at(s.sqrt_recip_alphas_cumprod, t) * x_t - \
            _at(s.sqrt_recipm1_alphas_cumprod, t) * eps
        return x0 * _at(s.move_sqrt_alphas_cumprod, t_next) + \
            eps * _at(s.move_sqrt_one_minus_alphas_cumprod, t_next)

    def _guided(self, state: LoopState, t: torch.Tensor, t_next: torch.Tensor, prep,
                rest: RestState, kp, temporal=None) -> LoopState:
        """One guided DDIM step ``t -> t_next`` with camera Adam and early stopping."""
        s, g = self.schedule, self.guidance
        x_t = state.x_t
        eps = self.folded(x_t, t, prep)
        c_x = _at(s.sqrt_recip_alphas_cumprod, t)
        c_e = _at(s.sqrt_recipm1_alphas_cumprod, t)
        multiview = kp.get('row_state') is not None
        if multiview:
            (grad_x, grad_t), (_, (raw_loss, raw_row_loss)) = self.mv_grad._fn(
                x_t, state.trans, eps, c_x, c_e, rest.joints, rest.bones, rest.vertices,
                kp['row_state'], kp['rel_rot'], kp['rel_t'], kp['views'], kp['target'],
                kp['conf'], kp['focal'], kp['center'], kp['size'])
        else:
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
        row_loss = (raw_row_loss * keep.index_select(0, kp['row_state']) if multiview
                    else loss)
        trans, exp_avg, exp_avg_sq, adam_step = (state.trans, state.exp_avg, state.exp_avg_sq,
                                                 state.adam_step)
        if g.optimize_camera:
            grad_t = grad_t * keep[:, None]
            trans, exp_avg, exp_avg_sq, adam_step = _adam(
                trans, exp_avg, exp_avg_sq, adam_step, grad_t, g.camera_lr)
        if temporal:
            # The temporal terms are not early-stopped (the general loop's rule): stopped
            # rows keep following their neighbours; their output is frozen all the same.
            grad_temp = _TEMPORAL_GRAD(x_t, eps, c_x, c_e, g.rho_temporal,
                                       temporal.get('prev_row'), temporal.get('target'),
                                       temporal.get('weight'))
            eps = eps + _at(s.sqrt_one_minus_alphas_cumprod, t) * (
                g.grad_scale * (g.rho_keypoints * grad_x + grad_temp))
        else:
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
            x0=x0, loss=loss, step=state.step + 1, row_loss=row_loss)


def _temporal_objective(x_t, eps, c_x, c_e, rho, prev_row, target, weight):
    """
    ``rho * (L_temp + L_target)`` of the one-step estimate, as the general loop sums it.

    :param x_t: [N, D] state (the differentiated argument).
    :param eps: [N, D] noise prediction (held constant).
    :param c_x: [1] ``sqrt(1 / abar_t)``; ``c_e``: [1] ``sqrt(1 / abar_t - 1)``.
    :param rho: the temporal step size ``rho_temporal``.
    :param prev_row: [N] int64 previous-frame row (-1: none) or None.
    :param target: [N, 144] frozen targets or None; ``weight``: [N] their weights.
    :return: [] the weighted loss.
    """
    pose_6d = (c_x * x_t - c_e * eps)[:, :POSE_DIM]
    total = pose_6d.new_zeros(())
    if prev_row is not None:
        total = total + rho * temporal_smoothness_loss(pose_6d, prev_row).sum()
    if target is not None:
        total = total + rho * temporal_target_loss(pose_6d, target, weight).sum()
    return total


#: [N, D] gradient of :func:`_temporal_objective` w.r.t. ``x_t``.
_TEMPORAL_GRAD = torch.func.grad(_temporal_objective, argnums=0)


def _checked_temporal(temporal: Optional[Dict[str, torch.Tensor]]
                      ) -> Optional[Dict[str, torch.Tensor]]:
    """Return the temporal terms with only the known keys, None if there are none."""
    terms = {key: value for key, value in (temporal or {}).items() if value is not None}
    unknown = set(terms) - {'prev_row', 'target', 'weight'}
    if unknown:
        raise ValueError(f'temporal: unknown terms {sorted(unknown)} (expected prev_row, '
                         f'target, weight)')
    if ('target' in terms) != ('weight' in terms):
        raise ValueError('temporal: target and weight come together')
    return terms or None


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
