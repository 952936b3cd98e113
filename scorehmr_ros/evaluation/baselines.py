"""
Prior-free fitting: the same observations and budget as ScoreHMR, without the denoiser.

Adam on the 6D pose and the camera translation, one gradient evaluation per guided
step of the refiner it is compared with (``outer_iters x tau / ddim_step``), on the
same weighted guidance losses (keypoint reprojection, and the multi-view and temporal
terms when the configuration enables them) plus an L2 regulariser pulling the 6D pose
towards its start. What remains between this and ScoreHMR is the learned prior.
"""

import dataclasses
from typing import Optional

import torch

from scorehmr_ros.body.kinematics import JointsOnlyBody, keypoints_from_joints45
from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.body.rotations import matrix_to_rot6d, rot6d_to_matrix
from scorehmr_ros.config import RefinerConfig
from scorehmr_ros.diffusion.denoiser import POSE_DIM
from scorehmr_ros.diffusion.schedule import timestep_grid
from scorehmr_ros.guidance.losses import (
    keypoint_reprojection_loss, multiview_consistency_loss, temporal_smoothness_loss)
from scorehmr_ros.observations import Observations
from scorehmr_ros.refiner import HIP_KEYPOINTS, UNGUIDED_KEYPOINTS


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
    """
    Settings of prior-free fitting.

    :param lr: Adam learning rate of the 6D pose and the translation (the refiner's
        camera learning rate, 0.01).
    :param pose_reg: weight of ``||x - x_start||^2`` relative to the keypoint loss (a
        0.1 rad change of every joint then costs about as much as 1 px on every keypoint).
    :param steps: gradient evaluations; ``None`` matches the refiner's guided steps.
    """

    lr: float = 0.01
    pose_reg: float = 100.0
    steps: Optional[int] = None


def guided_step_budget(config: RefinerConfig) -> int:
    """
    Return the number of guided steps (gradient evaluations) of a refiner configuration.

    :param config: the refiner's configuration.
    :return: ``outer_iters * (len(grid) - 1)``.
    """
    grid = timestep_grid(config.sampler.tau, config.sampler.ddim_step)
    return config.sampler.outer_iters * (len(grid) - 1)


def fit_without_prior(obs: Observations, body: BodyModel, config: RefinerConfig,
                      baseline: BaselineConfig = BaselineConfig(),
                      joints_body: Optional[JointsOnlyBody] = None):
    """
    Fit SMPL pose and translation to the observations with no learned prior.

    :param obs: observations (``view_group`` / ``frame_prev`` used when the config's
        multi-view / temporal guidance is on).
    :param body: body model.
    :param config: the refiner configuration whose losses, weights and budget are used.
    :param baseline: fitting settings.
    :param joints_body: joints-only kinematics of ``body`` (the refiner's with
        ``engine.body: joints``): the same keypoints without skinning the mesh.
    :return: ``(rotmats [B, 24, 3, 3], cam_t [B, 3], loss [B])`` (loss of the last step).
    """
    guide = config.guidance
    dtype = next(body.buffers()).dtype
    device = next(body.buffers()).device
    b = obs.batch_size
    kp = obs.sanitized_keypoints().to(device, dtype)
    conf = kp[..., 2].clone()
    if obs.keypoint_layout in UNGUIDED_KEYPOINTS:
        conf[:, UNGUIDED_KEYPOINTS[obs.keypoint_layout]] = 0.0
    if not guide.use_hips:
        conf[:, list(HIP_KEYPOINTS[obs.keypoint_layout])] = 0.0
    focal, center, size = (v.to(device, dtype)
                           for v in (obs.focal_px, obs.center_px, obs.image_size))
    betas = obs.init_betas.to(device, dtype)
    x_start = matrix_to_rot6d(obs.init_rotmats.to(device, dtype)).reshape(b, POSE_DIM)
    x = x_start.clone().requires_grad_(True)
    trans = obs.init_cam_t.to(device, dtype).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x, trans], lr=baseline.lr)
    group = num_groups = prev_row = None
    if guide.multiview:
        view_group = obs.view_group if obs.view_group is not None else torch.zeros(b)
        group = torch.unique(view_group.to(device), return_inverse=True)[1]
        num_groups = int(group.max()) + 1
    if guide.temporal:
        prev_row = (obs.frame_prev.to(device) if obs.frame_prev is not None
                    else torch.arange(b, device=device) - 1)
    steps = baseline.steps if baseline.steps is not None else guided_step_budget(config)
    loss_rows = torch.zeros(b, device=device, dtype=dtype)
    rest = joints_body.rest(betas) if joints_body is not None else None
    with torch.enable_grad():
        for _ in range(steps):
            rotmats = rot6d_to_matrix(x.reshape(b, 24, 6))
            if joints_body is not None:
                joints = keypoints_from_joints45(joints_body(rotmats, rest),
                                                 obs.keypoint_layout)
            else:
                joints = body.keypoints(body(rotmats, betas), obs.keypoint_layout)
            kp_loss = keypoint_reprojection_loss(joints, trans, kp[..., :2], conf, focal, center,
                                                 size, guide.gmof_sigma_px)
            loss_rows = (guide.rho_keypoints * kp_loss + guide.rho_keypoints * baseline.pose_reg
                         * ((x - x_start) ** 2).sum(dim=-1))
            if guide.multiview:
                loss_rows = loss_rows + guide.rho_multiview * multiview_consistency_loss(
                    x.reshape(b, 24, 6)[:, 1:], group, num_groups, guide.multiview_weight)
            if guide.temporal:
                loss_rows = loss_rows + guide.rho_temporal * temporal_smoothness_loss(
                    x, prev_row)
            optimizer.zero_grad(set_to_none=True)
            loss_rows.sum().backward()
            optimizer.step()
    with torch.no_grad():
        rotmats = rot6d_to_matrix(x.detach().reshape(b, 24, 6))
    return rotmats, trans.detach(), loss_rows.detach()
