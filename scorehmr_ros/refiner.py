"""
ScoreHMR refinement (supplement Algorithm 1, as the authors' code runs it).

For each of ``S_max`` outer iterations: DDIM inversion of the current estimate from
t = 0 up to tau without guidance, then guided DDIM (eta = 0) back to t = 0, where each
step's noise prediction is corrected by the gradient of the observation losses of the
one-step estimate (ScoreHMR eqs. 8 and 10)::

    eps' = eps + sqrt(1 - abar_t) * grad_{x_t} sum_k rho_k L_k(x0_hat(x_t, eps))

The denoiser only ever runs forward (no gradient through it); autograd runs through
6D -> rotation matrices -> body model -> camera projection.

Rows: B inputs x S samples, row ``b * S + s``. Letters: N = B * S rows, D diffusion
dimension (144, or 154 with shape), C conditioning features.
"""

import dataclasses
import logging
import time
from typing import Any, Dict, Optional

import numpy as np
import torch

from scorehmr_ros.backends.factory import make_backend
from scorehmr_ros.body.kinematics import JointsOnlyBody, keypoints_from_joints45
from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.body.rotations import matrix_to_rot6d, rot6d_to_matrix
from scorehmr_ros.config import RefinerConfig
from scorehmr_ros.diffusion.checkpoint import load_denoiser
from scorehmr_ros.diffusion.denoiser import Denoiser, DenoiserConfig, POSE_DIM
from scorehmr_ros.diffusion.folded import FoldedDenoiser
from scorehmr_ros.diffusion.schedule import (
    CosineSchedule, inversion_pairs, sampling_pairs, timestep_grid)
from scorehmr_ros.guidance import calibrated
from scorehmr_ros.guidance.camera import perspective_project
from scorehmr_ros.guidance.camera_optimizer import CameraTranslationAdam
from scorehmr_ros.guidance.compiled import KeypointGradient
from scorehmr_ros.guidance.early_stopping import EarlyStopper
from scorehmr_ros.guidance.fused_loop import FusedKeypointLoop, initial_state
from scorehmr_ros.guidance.losses import (
    keypoint_reprojection_loss, multiview_consistency_loss, temporal_smoothness_loss,
    temporal_target_loss)
from scorehmr_ros.observations import ObservationError, Observations
from scorehmr_ros.perception.keypoint_features import keypoint_features

LOG = logging.getLogger(__name__)

#: Keypoints of a layout that never guide: the 44-joint layout's last 19 joints are
#: evaluation-only, and the authors zero their confidences. They stay in the loss as
#: exact zeros so that float32 sums round like the reference.
UNGUIDED_KEYPOINTS = {'scorehmr44': slice(25, 44)}
#: Hip keypoints per layout, ignored when ``guidance.use_hips`` is false.
HIP_KEYPOINTS = {'body25': (8, 9, 12), 'scorehmr44': (8, 9, 12), 'coco17': (11, 12),
                 'smpl24': (0, 1, 2)}
#: Shape range used with a random-weight shape branch when no statistics are given.
DEFAULT_BETAS_RANGE = 3.0


@dataclasses.dataclass
class RefinementResult:
    """
    Output of :meth:`Refiner.refine` (B inputs, S samples each; sample 0 is the mode).

    :param rotmats: [B, S, 24, 3, 3] refined SMPL rotations.
    :param betas: [B, S, 10] SMPL shape (refined when the model diffuses shape).
    :param cam_t: [B, S, 3] body-to-camera translation after guidance, metres.
    :param x0: [B, S, D] refined diffusion state.
    :param refined: [B, S] False where the initial estimate was returned (no confident
        keypoint, or a non-finite result).
    :param stop_step: [B, S] guided step at which early stopping froze the sample, -1 if
        it never stopped.
    :param keypoint_loss: [B, S] keypoint loss of the last guided step (NaN without
        keypoint guidance).
    :param info: timings and counts.
    :param groups: per-person results of calibrated multi-view mode (world frame), else
        None.
    """

    rotmats: torch.Tensor
    betas: torch.Tensor
    cam_t: torch.Tensor
    x0: torch.Tensor
    refined: torch.Tensor
    stop_step: torch.Tensor
    keypoint_loss: torch.Tensor
    info: Dict[str, Any]
    groups: Optional[calibrated.GroupResult] = None


class Refiner:
    """
    Score-guided refinement of SMPL estimates.

    :param config: engine configuration.
    :param denoiser: use this network instead of the one the config names.
    :param body: use this body model instead of the one the config names.
    """

    def __init__(self, config: RefinerConfig = RefinerConfig(),
                 denoiser: Optional[Denoiser] = None, body: Optional[BodyModel] = None):
        self.config = config
        self.device = torch.device(config.device)
        self.dtype = getattr(torch, config.dtype)
        if denoiser is not None:
            self.weights_info = {'kind': 'given', 'note': 'denoiser passed by the caller'}
        else:
            denoiser, self.weights_info = _make_denoiser(config)
        self.denoiser = denoiser.to(self.device, self.dtype).eval()
        for param in self.denoiser.parameters():
            param.requires_grad_(False)
        if body is None:
            body = BodyModel.from_config(config.body.model_path, config.body.extra_regressor)
        self.body = body.to(self.device, self.dtype)
        self.schedule = CosineSchedule().to(self.device)
        self.betas_min, self.betas_max = self._betas_stats()
        engine = config.engine
        if engine.threads:
            torch.set_num_threads(engine.threads)
        self.backend = make_backend(engine.backend, self.denoiser, engine.onnx_dir,
                                    engine.threads, config.device, engine.precision)
        self.joints_body = (JointsOnlyBody(self.body).to(self.device, self.dtype)
                            if engine.body == 'joints' else None)
        #: the reference path, which reproduces the authors' arithmetic bit for bit
        self.exact = engine.backend == 'torch' and engine.body == 'mesh'
        if engine.compile and self.joints_body is None:
            raise ValueError('engine.compile needs engine.body: joints')
        self._warned_no_extrinsics = False
        #: S_max of the call in progress (``refine``'s ``outer_iters`` argument)
        self._outer_iters = config.sampler.outer_iters
        self._kp_gradients: Dict[str, KeypointGradient] = {}
        self._fused_loops: Dict[Any, FusedKeypointLoop] = {}

    @property
    def diffusion_dim(self) -> int:
        """D of the state."""
        return self.denoiser.diffusion_dim

    def describe_weights(self) -> str:
        """One line saying which denoiser weights run (shown by the CLI and the node)."""
        info = self.weights_info
        if info['kind'] == 'random':
            return (f'RANDOM denoiser weights (seed {info["seed"]}, feature size '
                    f'{info["cond_dim"]}): a plumbing check, not a trained prior')
        if info['kind'] == 'checkpoint':
            what = f'denoiser checkpoint {info["path"]} ({info["format"]})'
            description = (info.get('meta') or {}).get('description')
            return f'{description}: {what}' if description else what
        return info['note']

    @property
    def keypoint_cond_layout(self) -> Optional[str]:
        """
        Keypoint layout whose features the checkpoint is conditioned on, else None.

        Set when the checkpoint's meta says ``cond_source: keypoints`` (a prior trained
        with ``scorehmr train --cond keypoints``); :meth:`refine` then computes ``cond``
        from the observations' keypoints itself.
        """
        meta = self.weights_info.get('meta') or {}
        if meta.get('cond_source') != 'keypoints':
            return None
        return str(meta.get('keypoint_layout') or '') or None

    def keypoint_conditioning(self, obs: Observations) -> Observations:
        """
        Observations with ``cond`` replaced by the features of their 2D keypoints.

        Only for a checkpoint conditioned on keypoint features (:attr:`keypoint_cond_layout`);
        otherwise ``obs`` is returned unchanged. Whatever ``cond`` held is replaced, so
        callers may pass a placeholder such as ``torch.zeros(B, 0)``.

        :param obs: inputs with ``keypoints_2d`` [B, K, 3] in the checkpoint's layout.
        :return: the same inputs with ``cond`` [B, 3K].
        :raises ObservationError: without keypoints, or in another layout than the one the
            checkpoint was trained on.
        """
        layout = self.keypoint_cond_layout
        if layout is None:
            return obs
        if obs.keypoints_2d is None:
            raise ObservationError(
                f'keypoints_2d: required, the denoiser ({self.weights_info.get("path")}) is '
                f'conditioned on {layout} keypoint features')
        if obs.keypoint_layout != layout:
            raise ObservationError(
                f'keypoint_layout: the denoiser ({self.weights_info.get("path")}) is '
                f'conditioned on {layout} keypoint features, got {obs.keypoint_layout!r} '
                f'keypoints (convert them to {layout}, or use a checkpoint trained on '
                f'{obs.keypoint_layout})')
        cond = keypoint_features(obs.keypoints_2d).to(obs.init_rotmats.device, torch.float32)
        return dataclasses.replace(obs, cond=cond)

    def encode(self, rotmats: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
        """
        Diffusion state of SMPL parameters.

        :param rotmats: [B, 24, 3, 3] rotations.
        :param betas: [B, 10] shape.
        :return: [B, D] 6D pose (then shape scaled to [-1, 1] if the model uses shape).
        """
        x = matrix_to_rot6d(rotmats).reshape(rotmats.shape[0], POSE_DIM)
        if self.denoiser.config.use_shape:
            scaled = 2 * (betas - self.betas_min) / (self.betas_max - self.betas_min) - 1
            x = torch.cat((x, scaled), dim=1)
        return x

    def decode(self, x: torch.Tensor, betas: torch.Tensor):
        """
        SMPL parameters of diffusion states.

        :param x: [N, D] states.
        :param betas: [N, 10] shape to use when the model does not diffuse shape.
        :return: ``(rotmats [N, 24, 3, 3], betas [N, 10])``.
        """
        rotmats = rot6d_to_matrix(x[:, :POSE_DIM].reshape(-1, 24, 6))
        if self.denoiser.config.use_shape:
            betas = 0.5 * (self.betas_max - self.betas_min) * (x[:, POSE_DIM:] + 1) + \
                self.betas_min
        return rotmats, betas

    @torch.no_grad()
    def refine(self, obs: Observations, outer_iters: Optional[int] = None) -> RefinementResult:
        """
        Run Algorithm 1 on a batch.

        :param obs: inputs; see :class:`~scorehmr_ros.observations.Observations`.
        :param outer_iters: S_max of this call (default ``sampler.outer_iters``), e.g.
            fewer for warm-started online frames.
        :return: refined SMPL parameters per input and sample.
        """
        started = time.perf_counter()
        cfg, guide = self.config.sampler, self.config.guidance
        if outer_iters is not None and (not isinstance(outer_iters, int) or outer_iters < 1):
            raise ValueError(f'outer_iters must be a positive int, got {outer_iters!r}')
        self._outer_iters = outer_iters or cfg.outer_iters
        obs = self.keypoint_conditioning(obs)
        obs.validate(self.denoiser.config.total_cond_dim, need_keypoints=guide.keypoints)
        rows = _Rows(obs, cfg.num_samples, self.device, self.dtype)
        if guide.multiview and guide.multiview_mode == 'calibrated':
            if obs.world_to_camera is not None:
                return self._refine_calibrated(obs, rows, started)
            if not self._warned_no_extrinsics:
                LOG.warning('guidance.multiview_mode is calibrated but the observations have '
                            'no world_to_camera: using the consistency loss instead')
                self._warned_no_extrinsics = True
        n = rows.n
        x_start = rows.repeat(self.encode(rows.get(obs.init_rotmats), rows.get(obs.init_betas)))
        betas_rows = rows.repeat(rows.get(obs.init_betas))
        # Rest joints depend on shape only: computed once unless shape is diffused.
        rest = (self.joints_body.rest(betas_rows) if self.joints_body is not None
                and not self.denoiser.config.use_shape else None)
        kp = self._keypoint_setup(obs, rows) if guide.keypoints else None
        group, num_groups = rows.view_groups(obs.view_group) if guide.multiview else (None, 0)
        prev_row = rows.prev_rows(obs.frame_prev) if guide.temporal else None

        translation = rows.repeat(rows.get(obs.init_cam_t)) if obs.init_cam_t is not None \
            else torch.zeros(n, 3, device=self.device, dtype=self.dtype)
        camera = CameraTranslationAdam(translation, lr=guide.camera_lr)
        stopper = EarlyStopper(n, cfg.early_stopping if kp is not None else 'none',
                               cfg.early_stop_tol, device=self.device)

        grid = timestep_grid(cfg.tau, cfg.ddim_step)
        target = self._temporal_target(obs, rows)
        if self._can_fuse(kp):
            temporal = {'prev_row': prev_row}
            if target is not None:
                temporal.update(target=target[0], weight=target[1])
            return self._refine_fused(obs, rows, x_start, rows.repeat(rows.get(obs.cond)), rest,
                                      kp, translation, betas_rows, grid, started, temporal)

        # Prepared here, not before the fused branch: the fused loop folds the features
        # itself, and the backend's preparation (a 3 x C x 1024 product) would be wasted.
        cond = self.backend.prepare(rows.repeat(rows.get(obs.cond)))

        def gradient(x_t, t, eps):
            return self._guidance_gradient(x_t, t, eps, betas_rows, rest, kp, camera, stopper,
                                           group, num_groups, prev_row, target)

        x0, kp_loss, step = self._sample(x_start, cond, grid, gradient, camera, stopper)
        x0, translation = stopper.finalize(x0, camera.translation)
        return self._result(obs, rows, x0, translation, x_start, betas_rows, kp,
                            stopper.stop_step, kp_loss, started, step, len(grid))

    def _sample(self, x_start, cond, grid, gradient, camera, stopper):
        """
        Run the outer loop of Algorithm 1: inversion, then guided DDIM, ``S_max`` times.

        :param x_start: [N, D] start states (row ``b * S + s``).
        :param cond: prepared conditioning of the backend.
        :param grid: timestep grid.
        :param gradient: ``(x_t, t, eps) -> (grad [N, D], stop mask or None, loss or None)``.
        :param camera: translation Adam state (stepped inside ``gradient``).
        :param stopper: early-stopping state.
        :return: ``(x0 [N, D] of the last guided step, keypoint loss [N], guided steps)``.
        """
        cfg = self.config.sampler
        n, dim = x_start.shape
        noise_rows = None
        if cfg.num_samples > 1:
            gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
            noise = torch.randn(n, dim, generator=gen, device=self.device, dtype=self.dtype)
            noise_rows = (torch.arange(n, device=self.device) % cfg.num_samples) > 0
            x_noised = self.schedule.q_sample(x_start, grid[-1], noise)

        x_t, x0 = x_start, x_start
        kp_loss = torch.full((n,), float('nan'), device=self.device, dtype=self.dtype)
        step = 0
        for outer in range(self._outer_iters):
            for t, t_next in inversion_pairs(grid):
                eps = self._eps(x_t, t, cond)
                x_t = self.schedule.ddim_move(self.schedule.predict_x0(x_t, t, eps), eps, t_next)
            if outer == 0 and noise_rows is not None:
                # Extra samples: a stochastic encoding of the start instead of the inversion.
                x_t = torch.where(noise_rows[:, None], x_noised, x_t)
            for t, t_next in sampling_pairs(grid):
                eps = self._eps(x_t, t, cond)
                grad, mask, loss = gradient(x_t, t, eps)
                if loss is not None:
                    kp_loss = loss
                eps = eps + self.schedule.sqrt_one_minus_alphas_cumprod[t] * grad
                x0 = self.schedule.predict_x0(x_t, t, eps)
                if mask is not None:
                    stopper.record(mask, x0, camera.translation, step)
                x_t = self.schedule.ddim_move(x0, eps, t_next)
                step += 1
        return x0, kp_loss, step

    def _refine_calibrated(self, obs: Observations, rows: '_Rows',
                           started: float) -> RefinementResult:
        """
        Calibrated multi-view Algorithm 1: one state per person (see guidance/calibrated.py).

        Rows are ``b * S + s``; group states ``g * S + s``. The state lives in the anchor
        view's camera frame and is conditioned on the anchor's features.
        """
        cfg, guide = self.config.sampler, self.config.guidance
        s = cfg.num_samples
        kp = self._keypoint_setup(obs, rows)
        conf_b = kp['conf'][::s]
        groups = calibrated.build_groups(obs.view_group, obs.world_to_camera, conf_b)
        if groups.split_rows:
            LOG.warning('%d row(s) without valid camera extrinsics refined as single views',
                        groups.split_rows)
        g = groups.num_groups
        anchor = groups.anchor_row
        sample = torch.arange(s, device=self.device)
        row_state = (rows.repeat(groups.row_group) * s + sample.repeat(rows.b))
        init_rot, init_t = rows.get(obs.init_rotmats), rows.get(obs.init_cam_t)
        betas_b = rows.get(obs.init_betas)
        rest_pelvis_b = self.rest_pelvis(betas_b)
        if guide.calibrated_init == 'average':
            start_rot, start_t = calibrated.average_start(init_rot, init_t, rest_pelvis_b,
                                                          groups)
        else:
            start_rot, start_t = init_rot[anchor], init_t[anchor]
        rep = lambda tensor: tensor.repeat_interleave(s, dim=0)  # noqa: E731
        betas_g = rep(betas_b[anchor])
        x_start = rep(self.encode(start_rot, betas_b[anchor]))
        rest = (self.joints_body.rest(betas_g) if self.joints_body is not None
                and not self.denoiser.config.use_shape else None)
        rel_rot, rel_t = rows.repeat(groups.rel_rot), rows.repeat(groups.rel_t)
        prev_state = None
        if guide.temporal:
            prev_state = self._group_prev(obs, groups, s)
        target = self._temporal_target(obs, rows)
        if target is not None:
            anchor_rows = rep(anchor) * s + sample.repeat(g)
            target = (target[0][anchor_rows], target[1][anchor_rows])
        grid = timestep_grid(cfg.tau, cfg.ddim_step)
        if self._can_fuse(kp, calibrated=True):
            # Each state's loss divisor: its view count (calibrated_loss 'mean', as
            # multiview_keypoint_loss counts views) or 1 ('sum').
            views = (calibrated.views_per_state(row_state, kp['conf'], g * s).clamp_min(1)
                     if guide.calibrated_loss == 'mean'
                     else torch.ones(g * s, device=self.device, dtype=self.dtype))
            fused_kp = {key: kp[key] for key in ('target', 'conf', 'focal', 'center', 'size')}
            fused_kp.update(row_state=row_state, rel_rot=rel_rot, rel_t=rel_t, views=views)
            temporal = {'prev_row': prev_state}
            if target is not None:
                temporal.update(target=target[0], weight=target[1])
            state, step = self._run_fused_loop(
                ('calibrated', kp['layout'], cfg.early_stopping), kp['layout'], x_start,
                rep(rows.get(obs.cond)[anchor]), rest, fused_kp, rep(start_t), grid,
                temporal)
            stopped = state.stopped[:, None]
            x0 = torch.where(stopped, state.cached_x0, state.x0)
            translation = torch.where(stopped, state.cached_trans, state.trans)
            stop_step = state.stop_step
            row_loss = state.row_loss if step else \
                torch.full((rows.n,), float('nan'), device=self.device, dtype=self.dtype)
        else:
            x0, translation, stop_step, row_loss, step = self._sample_calibrated(
                x_start, rep(rows.get(obs.cond)[anchor]), betas_g, rest, kp, row_state,
                rel_rot, rel_t, rep(start_t), prev_state, target, grid, rows.n)
        num_views = calibrated.views_per_state(groups.row_group, conf_b, g).long()
        has_any = num_views > 0
        refined = (torch.isfinite(x0).all(dim=-1) & torch.isfinite(translation).all(dim=-1)
                   & rep(has_any))
        if not bool(refined.all()):
            LOG.warning('%d of %d group sample(s) returned their initial estimate (no '
                        'confident keypoint in any view or a non-finite result)',
                        int((~refined).sum()), g * s)
        x0 = torch.where(refined[:, None], x0, x_start)
        translation = torch.where(refined[:, None], translation, rep(start_t))
        rot_g, betas_out = self.decode(x0, betas_g)
        rest_pelvis_g = self.rest_pelvis(betas_out)
        # Every row gets its group's body expressed in its own camera.
        row_rot, row_t = calibrated.to_view(rot_g[row_state], translation[row_state],
                                            rest_pelvis_g[row_state], rel_rot, rel_t)
        row_betas = betas_out[row_state]
        row_x0 = self.encode(row_rot, row_betas)
        to_world = rep(groups.anchor_to_world).to(self.dtype)
        world_rot, world_t = calibrated.to_view(rot_g, translation, rest_pelvis_g,
                                                to_world[:, :3, :3], to_world[:, :3, 3])
        b = rows.b
        group_result = calibrated.GroupResult(
            row_group=groups.row_group, anchor_row=anchor, calibrated=groups.calibrated,
            world_rotmats=world_rot.reshape(g, s, 24, 3, 3), world_t=world_t.reshape(g, s, 3),
            world_pelvis=(world_t + rest_pelvis_g).reshape(g, s, 3), num_views=num_views)
        denoiser_calls = 2 * (len(grid) - 1) * self._outer_iters
        return RefinementResult(
            rotmats=row_rot.reshape(b, s, 24, 3, 3), betas=row_betas.reshape(b, s, 10),
            cam_t=row_t.reshape(b, s, 3), x0=row_x0.reshape(b, s, -1),
            refined=refined[row_state].reshape(b, s),
            stop_step=stop_step[row_state].reshape(b, s),
            keypoint_loss=row_loss.reshape(b, s),
            info={'elapsed_s': time.perf_counter() - started, 'guided_steps': step,
                  'denoiser_calls': denoiser_calls, 'rows': rows.n, 'groups': g,
                  'multiview_mode': 'calibrated', 'weights': self.describe_weights()},
            groups=group_result)

    def _sample_calibrated(self, x_start, cond, betas_g, rest, kp, row_state, rel_rot, rel_t,
                           start_t, prev_state, target, grid, num_rows):
        """
        Run the general (eager) loop of calibrated multi-view guidance (M states, R rows).

        :return: ``(x0 [M, D], translation [M, 3], stop_step [M], row loss [R] of the last
            guided step (NaN without one), guided steps)``.
        """
        cfg, guide = self.config.sampler, self.config.guidance
        cond = self.backend.prepare(cond)
        camera = CameraTranslationAdam(start_t, lr=guide.camera_lr)
        stopper = EarlyStopper(x_start.shape[0], cfg.early_stopping, cfg.early_stop_tol,
                               device=self.device)
        row_loss_box = [None]

        def gradient(x_t, t, eps):
            mask = None
            with torch.enable_grad():
                x_leaf = x_t.detach().requires_grad_(True)
                x0 = self.schedule.predict_x0(x_leaf, t, eps.detach())
                rotmats, betas = self.decode(x0, betas_g)
                joints = self._keypoints_3d(rotmats, betas, rest, kp['layout'])
                trans = camera.translation.detach().requires_grad_(guide.optimize_camera)
                loss, row_loss = calibrated.multiview_keypoint_loss(
                    joints, trans, row_state, rel_rot, rel_t, kp['target'], kp['conf'],
                    kp['focal'], kp['center'], kp['size'], guide.gmof_sigma_px,
                    view_mean=guide.calibrated_loss == 'mean')
                if stopper.active:
                    mask = stopper.converged(loss)
                    loss = torch.where(mask, torch.zeros_like(loss), loss)
                    row_loss = torch.where(mask[row_state], torch.zeros_like(row_loss),
                                           row_loss)
                if guide.optimize_camera:
                    grad_cam, = torch.autograd.grad(loss.sum(), trans, retain_graph=True)
                    camera.step(grad_cam)
                total = guide.rho_keypoints * loss.sum()
                pose_6d = x0[:, :POSE_DIM]
                if prev_state is not None:
                    total = total + guide.rho_temporal * temporal_smoothness_loss(
                        pose_6d, prev_state).sum()
                if target is not None:
                    total = total + guide.rho_temporal * temporal_target_loss(
                        pose_6d, *target).sum()
                grad, = torch.autograd.grad(total, x_leaf)
            row_loss_box[0] = row_loss.detach()
            return grad * guide.grad_scale, mask, loss.detach()

        x0, _, step = self._sample(x_start, cond, grid, gradient, camera, stopper)
        x0, translation = stopper.finalize(x0, camera.translation)
        row_loss = row_loss_box[0] if row_loss_box[0] is not None else \
            torch.full((num_rows,), float('nan'), device=self.device, dtype=self.dtype)
        return x0, translation, stopper.stop_step, row_loss, step

    def rest_pelvis(self, betas: torch.Tensor) -> torch.Tensor:
        """
        [N, 3] rest pelvis of shaped bodies.

        The joints-only kinematics has the joint regressor folded into its shape basis, so
        it skips shaping the 6890 vertices that the full model regresses from (same joints).
        """
        if self.joints_body is not None:
            return self.joints_body.rest(betas).joints[:, 0]
        return self.body.rest_joints(betas)[:, 0]

    def _group_prev(self, obs: Observations, groups, s: int) -> torch.Tensor:
        """[G * S] previous-frame state of each group state (-1: none), via the anchors."""
        g = groups.num_groups
        if obs.frame_prev is None:
            prev = torch.arange(g, device=self.device) - 1
        else:
            prev_row = obs.frame_prev.to(self.device).long()[groups.anchor_row]
            prev = torch.where(prev_row >= 0, groups.row_group[prev_row.clamp_min(0)],
                               torch.full_like(prev_row, -1))
        prev = prev.repeat_interleave(s)
        sample = torch.arange(s, device=self.device).repeat(g)
        return torch.where(prev >= 0, prev * s + sample, torch.full_like(prev, -1))

    def _temporal_target(self, obs: Observations, rows: '_Rows'):
        """``(target [N, 144], weight [N])`` of frozen temporal targets, or None."""
        if obs.temporal_target_6d is None:
            return None
        weight = obs.temporal_target_weight
        if weight is None:
            weight = torch.ones(obs.batch_size)
        return (rows.repeat(rows.get(obs.temporal_target_6d)), rows.repeat(rows.get(weight)))

    def _can_fuse(self, kp, calibrated: bool = False) -> bool:
        """
        Whether the compiled keypoint loop applies to this configuration.

        It covers keypoint guidance and calibrated multi-view guidance (``calibrated``:
        the call is :meth:`_refine_calibrated`'s), both with the temporal terms (L_temp
        along the frame chains, frozen targets); not the paper's multi-view consistency
        loss, nor a diffused shape.
        """
        guide = self.config.guidance
        return (self.config.engine.compile and kp is not None
                and (calibrated or not guide.multiview)
                and not self.denoiser.config.use_shape)

    def _run_fused_loop(self, key, layout: str, x_start, cond, rest, kp, translation, grid,
                        temporal):
        """
        Run Algorithm 1's outer loop on the fused loop stored under ``key`` (built once).

        :param key: key of the loop in ``self._fused_loops``.
        :param layout: keypoint layout.
        :param x_start: [N, D] start states; ``cond``: [N, C] their features.
        :param rest: rest state of the states' shapes.
        :param kp: keypoint tensors (see :meth:`FusedKeypointLoop.guided_sweep`); with the
            multi-view entries its R rows may differ from N.
        :param translation: [N, 3] start translations.
        :param grid: timestep grid.
        :param temporal: temporal terms or None.
        :return: ``(final loop state, guided steps)``.
        """
        cfg = self.config.sampler
        loop = self._fused_loops.get(key)
        if loop is None:
            loop = FusedKeypointLoop(self.schedule, self._folded(), self.joints_body, layout,
                                     self.config.guidance, cfg.early_stopping,
                                     cfg.early_stop_tol, compile=True,
                                     steps_per_call=self.config.engine.steps_per_call,
                                     invert_steps_per_call=self.config.engine
                                     .invert_steps_per_call,
                                     cpp_wrapper=self.config.engine.cpp_wrapper,
                                     cuda_graphs=self.device.type == 'cuda')
            self._fused_loops[key] = loop
        inversion, sampling = list(inversion_pairs(grid)), list(sampling_pairs(grid))
        prep = loop.folded.prepare(cond)
        num_rows = kp['target'].shape[0]
        state = initial_state(x_start, translation, num_rows)
        # Guards are checked (and graphs compiled) on the first outer iteration of the first
        # call with a signature; later iterations and calls (a stream's frames) run the same
        # graphs with inputs of the same shapes, so their guard evaluation (~0.2 ms per call
        # here) is skipped, except the guards that tell compiled variants apart. The
        # signature holds every size the graphs depend on (states, observation rows, terms).
        signature = (tuple(x_start.shape), num_rows, str(x_start.dtype), str(x_start.device),
                     tuple(sorted(name for name, value in (temporal or {}).items()
                                  if value is not None)))
        checked = signature in loop.checked_signatures
        for outer in range(self._outer_iters):
            with torch.compiler.set_stance(skip_guard_eval_unsafe=checked or outer > 0):
                x_t = loop.invert_sweep(state.x_t, inversion, prep)
                if outer == 0 and cfg.num_samples > 1:
                    gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
                    noise = torch.randn(x_t.shape, generator=gen, device=self.device,
                                        dtype=self.dtype)
                    noise_rows = (torch.arange(x_t.shape[0], device=self.device)
                                  % cfg.num_samples) > 0
                    x_t = torch.where(noise_rows[:, None],
                                      self.schedule.q_sample(x_start, grid[-1], noise), x_t)
                state = loop.guided_sweep(state._replace(x_t=x_t), sampling, prep, rest, kp,
                                          temporal)
        loop.checked_signatures.add(signature)
        return state, int(state.step)

    def _refine_fused(self, obs, rows, x_start, cond, rest, kp, translation, betas_rows,
                      grid, started, temporal=None) -> RefinementResult:
        """
        Algorithm 1 with the fused, compiled keypoint steps (same results ~1e-6).

        :param temporal: ``prev_row`` [N] and/or ``target`` [N, 144] with ``weight`` [N]
            (see :meth:`FusedKeypointLoop.guided_sweep`), or None.
        """
        state, step = self._run_fused_loop((kp['layout'], self.config.sampler.early_stopping),
                                           kp['layout'], x_start, cond, rest, kp, translation,
                                           grid, temporal)
        stopped = state.stopped[:, None]
        x0 = torch.where(stopped, state.cached_x0, state.x0)
        translation = torch.where(stopped, state.cached_trans, state.trans)
        return self._result(obs, rows, x0, translation, x_start, betas_rows, kp,
                            state.stop_step, state.loss, started, step, len(grid))

    def _folded(self) -> FoldedDenoiser:
        """Return the folded denoiser the fused loop runs (the backend's if it has one)."""
        folded = getattr(self.backend, 'folded', None)
        return folded if folded is not None else FoldedDenoiser(self.denoiser).to(self.device)

    def reprojection_error_px(self, rotmats: torch.Tensor, betas: torch.Tensor,
                              cam_t: torch.Tensor, obs: Observations) -> torch.Tensor:
        """
        Mean pixel distance between projected body keypoints and confident observations.

        :param rotmats: [B, 24, 3, 3] SMPL rotations.
        :param betas: [B, 10] shape.
        :param cam_t: [B, 3] body-to-camera translation.
        :param obs: observations with keypoints and intrinsics.
        :return: [B] error in pixels (NaN where no keypoint is confident).
        """
        kp = obs.sanitized_keypoints().to(self.device, self.dtype)
        if obs.keypoint_layout in UNGUIDED_KEYPOINTS:
            kp[:, UNGUIDED_KEYPOINTS[obs.keypoint_layout], 2] = 0.0
        joints = self.body.keypoints(self.body(rotmats.to(self.device, self.dtype),
                                               betas.to(self.device, self.dtype)),
                                     obs.keypoint_layout)
        proj = perspective_project(joints, cam_t.to(self.device, self.dtype),
                                   obs.focal_px.to(self.device, self.dtype),
                                   obs.center_px.to(self.device, self.dtype))
        valid = kp[..., 2] > 0
        dist = (proj - kp[..., :2]).norm(dim=-1)
        total = torch.where(valid, dist, torch.zeros_like(dist)).sum(-1)
        return total / valid.sum(-1).to(dist.dtype)

    def _eps(self, x_t: torch.Tensor, t: int, prepared) -> torch.Tensor:
        return self.backend.eps(x_t, t, prepared)

    def _keypoints_3d(self, rotmats: torch.Tensor, betas: torch.Tensor, rest,
                      layout: str) -> torch.Tensor:
        """[N, K, 3] body keypoints of a layout, through the configured body path."""
        if self.joints_body is None:
            return self.body.keypoints(self.body(rotmats, betas), layout)
        if rest is None:
            rest = self.joints_body.rest(betas)
        return keypoints_from_joints45(self.joints_body(rotmats, rest), layout)

    def _guidance_gradient(self, x_t, t, eps, betas_rows, rest, kp, camera, stopper, group,
                           num_groups, prev_row, target=None):
        """
        Gradient of the weighted guidance losses w.r.t. x_t, eps held constant.

        Also takes this step's Adam step on the camera translation (gradient of the
        unweighted keypoint loss at the pre-step translation) and applies early stopping.

        :return: ``(grad [N, D], stop mask [N] or None, keypoint loss [N] or None)``.
        """
        guide = self.config.guidance
        if kp is None and not guide.multiview and not guide.temporal and target is None:
            return torch.zeros_like(x_t), None, None
        mask, kp_loss, trans, kp_grad = None, None, None, None
        # One backward pass for both gradients where bitwise agreement with the reference
        # is not asked for: d(rho L_kp + ...)/d(trans) = rho dL_kp/d(trans).
        single_pass = not self.exact and guide.rho_keypoints > 0
        with torch.enable_grad():
            x_leaf = x_t.detach().requires_grad_(True)
            x0 = self.schedule.predict_x0(x_leaf, t, eps.detach())
            pose_6d = x0[:, :POSE_DIM]
            total = x0.new_zeros(())
            if kp is not None and rest is not None and self.config.engine.compile:
                kp_loss, mask = self._fused_keypoint_step(x_t, t, eps, rest, kp, camera,
                                                          stopper)
                total = total + guide.rho_keypoints * kp_loss.sum()
                kp_grad = self._fused_grad
            elif kp is not None:
                rotmats, betas = self.decode(x0, betas_rows)
                joints = self._keypoints_3d(rotmats, betas, rest, kp['layout'])
                trans = camera.translation.detach().requires_grad_(guide.optimize_camera)
                kp_loss = keypoint_reprojection_loss(
                    joints, trans, kp['target'], kp['conf'], kp['focal'], kp['center'],
                    kp['size'], guide.gmof_sigma_px)
                if stopper.active:
                    mask = stopper.converged(kp_loss)
                    kp_loss = torch.where(mask, torch.zeros_like(kp_loss), kp_loss)
                if guide.optimize_camera and not single_pass:
                    grad_cam, = torch.autograd.grad(kp_loss.sum(), trans, retain_graph=True)
                    camera.step(grad_cam)
                total = total + guide.rho_keypoints * kp_loss.sum()
            if guide.multiview:
                total = total + guide.rho_multiview * multiview_consistency_loss(
                    pose_6d.reshape(-1, 24, 6)[:, 1:], group, num_groups,
                    guide.multiview_weight).sum()
            if guide.temporal:
                total = total + guide.rho_temporal * temporal_smoothness_loss(
                    pose_6d, prev_row).sum()
            if target is not None:
                total = total + guide.rho_temporal * temporal_target_loss(
                    pose_6d, *target).sum()
            if kp_grad is not None:
                # Keypoint gradient came fused; add the other losses' (if any) by autograd.
                grad = guide.rho_keypoints * kp_grad
                if total.requires_grad:
                    grad = grad + torch.autograd.grad(total, x_leaf)[0]
            elif single_pass and kp is not None and guide.optimize_camera:
                grad, grad_trans = torch.autograd.grad(total, (x_leaf, trans))
                camera.step(grad_trans / guide.rho_keypoints)
            else:
                grad, = torch.autograd.grad(total, x_leaf)
        loss = None if kp_loss is None else kp_loss.detach()
        return grad * guide.grad_scale, mask, loss

    def _fused_keypoint_step(self, x_t, t, eps, rest, kp, camera, stopper):
        """
        Keypoint loss and gradients from the fused function; camera step; stopping.

        Sets ``self._fused_grad`` ([N, D] dL_kp/dx_t with stopped rows zeroed).

        :return: ``(loss [N] detached, with stopped rows zeroed; stop mask or None)``.
        """
        fused = self._kp_gradients.get(kp['layout'])
        if fused is None:
            fused = KeypointGradient(self.schedule, self.joints_body, kp['layout'],
                                     self.config.guidance.gmof_sigma_px, compile=True)
            self._kp_gradients[kp['layout']] = fused
        loss, grad_x, grad_trans = fused(x_t, eps, t, rest, camera.translation, kp)
        mask = None
        if stopper.active:
            mask = stopper.converged(loss)
            keep = (~mask).to(grad_x.dtype)[:, None]
            grad_x, grad_trans = grad_x * keep, grad_trans * keep
            loss = torch.where(mask, torch.zeros_like(loss), loss)
        if self.config.guidance.optimize_camera:
            camera.step(grad_trans)
        self._fused_grad = grad_x
        return loss.detach(), mask

    def _keypoint_setup(self, obs: Observations, rows: '_Rows') -> Dict[str, Any]:
        kp = rows.get(obs.sanitized_keypoints())
        conf = kp[..., 2].clone()
        if obs.keypoint_layout in UNGUIDED_KEYPOINTS:
            conf[:, UNGUIDED_KEYPOINTS[obs.keypoint_layout]] = 0.0
        if not self.config.guidance.use_hips:
            conf[:, list(HIP_KEYPOINTS[obs.keypoint_layout])] = 0.0
        return {
            'layout': obs.keypoint_layout,
            'target': rows.repeat(kp[..., :2]),
            'conf': rows.repeat(conf),
            'has_any': rows.repeat(conf.gt(0).any(dim=-1)),
            'focal': rows.repeat(rows.get(obs.focal_px)),
            'center': rows.repeat(rows.get(obs.center_px)),
            'size': rows.repeat(rows.get(obs.image_size)),
        }

    def _result(self, obs, rows, x0, translation, x_start, betas_rows, kp, stop_step, kp_loss,
                started, steps, grid_len) -> RefinementResult:
        guide = self.config.guidance
        refined = torch.isfinite(x0).all(dim=-1) & torch.isfinite(translation).all(dim=-1)
        if kp is not None and not (guide.multiview or guide.temporal):
            # Keypoints are the only evidence: without one, keep the regression estimate.
            refined &= kp['has_any']
        init_translation = rows.repeat(rows.get(obs.init_cam_t)) if obs.init_cam_t is not None \
            else torch.zeros_like(translation)
        if not bool(refined.all()):
            LOG.warning('%d of %d sample(s) returned their initial estimate (no confident '
                        'keypoint or a non-finite result)', int((~refined).sum()), rows.n)
        x0 = torch.where(refined[:, None], x0, x_start)
        translation = torch.where(refined[:, None], translation, init_translation)
        rotmats, betas = self.decode(x0, betas_rows)
        b, s = obs.batch_size, self.config.sampler.num_samples
        denoiser_calls = 2 * (grid_len - 1) * self._outer_iters
        return RefinementResult(
            rotmats=rotmats.reshape(b, s, 24, 3, 3), betas=betas.reshape(b, s, 10),
            cam_t=translation.reshape(b, s, 3), x0=x0.reshape(b, s, -1),
            refined=refined.reshape(b, s), stop_step=stop_step.reshape(b, s),
            keypoint_loss=kp_loss.reshape(b, s),
            info={'elapsed_s': time.perf_counter() - started, 'guided_steps': steps,
                  'denoiser_calls': denoiser_calls, 'rows': rows.n,
                  'weights': self.describe_weights()})

    def _betas_stats(self):
        if not self.denoiser.config.use_shape:
            return None, None
        path = self.config.model.betas_stats
        if path is None:
            if self.weights_info['kind'] == 'checkpoint':
                raise ValueError('model.betas_stats is required for a checkpoint that '
                                 'diffuses SMPL shape (npz with betas_min and betas_max [10])')
            LOG.info('shape branch without model.betas_stats: scaling betas from [-%g, %g]',
                     DEFAULT_BETAS_RANGE, DEFAULT_BETAS_RANGE)
            low = -DEFAULT_BETAS_RANGE * torch.ones(10)
            return low.to(self.device, self.dtype), (-low).to(self.device, self.dtype)
        with np.load(path, allow_pickle=False) as stats:
            try:
                low, high = stats['betas_min'], stats['betas_max']
            except KeyError as err:
                raise ValueError(f'{path}: missing {err} (need betas_min and betas_max)') from None
        if low.shape != (10,) or high.shape != (10,) or not (high > low).all():
            raise ValueError(f'{path}: betas_min/betas_max must be [10] with max > min')
        as_tensor = lambda a: torch.as_tensor(a).to(self.device, self.dtype)  # noqa: E731
        return as_tensor(low), as_tensor(high)


class _Rows:
    """Move per-input tensors to the engine and expand them to B x S rows."""

    def __init__(self, obs: Observations, num_samples: int, device, dtype):
        self.b = obs.batch_size
        self.s = num_samples
        self.n = self.b * num_samples
        self.device, self.dtype = device, dtype

    def get(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device, self.dtype)

    def repeat(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.repeat_interleave(self.s, dim=0)

    def view_groups(self, view_group: Optional[torch.Tensor]):
        if view_group is None:
            group = torch.zeros(self.b, dtype=torch.long, device=self.device)
        else:
            group = torch.unique(view_group.to(self.device), return_inverse=True)[1]
        num_groups = int(group.max()) + 1
        sample = torch.arange(self.s, device=self.device).repeat(self.b)
        return self.repeat(group) * self.s + sample, num_groups * self.s

    def prev_rows(self, frame_prev: Optional[torch.Tensor]) -> torch.Tensor:
        if frame_prev is None:
            frame_prev = torch.arange(self.b, device=self.device) - 1
        prev = self.repeat(frame_prev.to(self.device).long())
        sample = torch.arange(self.s, device=self.device).repeat(self.b)
        return torch.where(prev >= 0, prev * self.s + sample, torch.full_like(prev, -1))


def _make_denoiser(config: RefinerConfig):
    model_cfg = config.model
    if model_cfg.checkpoint:
        denoiser, meta = load_denoiser(model_cfg.checkpoint)
        return denoiser, {'kind': 'checkpoint', 'path': model_cfg.checkpoint,
                          'format': meta.get('checkpoint_format', '?'), 'meta': meta}
    # A private RNG stream: building the network must not reseed the caller's.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(model_cfg.random_seed)
        denoiser = Denoiser(DenoiserConfig(
            cond_dim=model_cfg.cond_dim, use_shape=model_cfg.use_shape,
            shape_cond_dim=model_cfg.shape_cond_dim))
    LOG.warning('no denoiser checkpoint configured: using RANDOM weights (plumbing check)')
    return denoiser, {'kind': 'random', 'seed': model_cfg.random_seed,
                      'cond_dim': model_cfg.cond_dim}
