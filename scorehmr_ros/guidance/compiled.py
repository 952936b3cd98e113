"""
The keypoint guidance gradient as one pure function, optionally compiled.

On the fast path the per-step cost is dominated by the many small operations of
6D -> rotations -> forward kinematics -> projection -> robust loss and their backward
pass. Written as a pure function of tensors (timestep coefficients are tensors too, so
one compiled graph serves every step), ``torch.func.grad_and_value`` gives the loss,
its gradient w.r.t. the state and w.r.t. the camera translation in one call, and
``torch.compile`` fuses it into a few kernels. Rows are independent in this loss, so
early stopping is applied afterwards by zeroing the stopped rows' gradients, which is
exactly what zeroing their loss does.
"""

import copy
from typing import Dict, Tuple

import torch

from scorehmr_ros.body.kinematics import JointsOnlyBody, keypoints_from_joints45, RestState
from scorehmr_ros.diffusion.denoiser import POSE_DIM
from scorehmr_ros.diffusion.schedule import CosineSchedule
from scorehmr_ros.guidance.losses import geman_mcclure


class KeypointGradient:
    """
    ``(L_kp [N], dL/dx_t [N, D], dL/dtrans [N, 3])`` for one guided step.

    :param schedule: the noise schedule (for the one-step estimate).
    :param body: joints-only body kinematics.
    :param layout: keypoint layout of the observations.
    :param sigma_px: Geman-McClure scale.
    :param compile: fuse with ``torch.compile`` (first call per batch size compiles).
    """

    def __init__(self, schedule: CosineSchedule, body: JointsOnlyBody, layout: str,
                 sigma_px: float, compile: bool = False):
        self.schedule = schedule
        # Broadcast multiply-adds instead of 3x3 matmuls: the compiler fuses them.
        self.body = copy.copy(body)
        self.body.elementwise = compile
        self.layout = layout
        self.sigma_px = float(sigma_px)

        def objective(x_t, trans, eps, c_x, c_e, rest_joints, rest_bones, rest_vertices,
                      target, conf, focal, center, size):
            x0 = c_x * x_t - c_e * eps
            rotmats = _rot6d_to_matrix(x0[:, :POSE_DIM].reshape(-1, 24, 6))
            joints = self.body(rotmats, RestState(rest_joints, rest_bones, rest_vertices))
            cam = keypoints_from_joints45(joints, self.layout) + trans[:, None, :]
            loss = _robust_reprojection(cam, target, conf, focal, center, size, self.sigma_px)
            return loss.sum(), loss

        fn = torch.func.grad_and_value(objective, argnums=(0, 1), has_aux=True)
        self._fn = torch.compile(fn, dynamic=False) if compile else fn

    def __call__(self, x_t: torch.Tensor, eps: torch.Tensor, t: int, rest: RestState,
                 translation: torch.Tensor, kp: Dict[str, torch.Tensor]
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Evaluate at one guided step.

        :param x_t: [N, D] state.
        :param eps: [N, D] noise prediction (held constant).
        :param t: timestep.
        :param rest: rest state of the rows' shapes.
        :param translation: [N, 3] camera translation.
        :param kp: keypoint tensors of the refiner (target, conf, focal, center, size).
        :return: loss [N], gradient w.r.t. x_t [N, D], gradient w.r.t. translation [N, 3].
        """
        c_x = self.schedule.sqrt_recip_alphas_cumprod[t].to(x_t.dtype)
        c_e = self.schedule.sqrt_recipm1_alphas_cumprod[t].to(x_t.dtype)
        (grad_x, grad_trans), (_, loss) = self._fn(
            x_t.detach(), translation.detach(), eps.detach(), c_x, c_e, rest.joints,
            rest.bones, rest.vertices, kp['target'], kp['conf'], kp['focal'], kp['center'],
            kp['size'])
        return loss, grad_x, grad_trans


class MultiViewKeypointGradient:
    """
    Calibrated multi-view keypoint loss of M group states over N view rows, and gradients.

    The pure-function form of
    :func:`~scorehmr_ros.guidance.calibrated.multiview_keypoint_loss` on the joints-only
    body: each state's keypoints plus its anchor-camera translation are moved into every
    view row's camera (``rel_rot``, ``rel_t``) and projected with that row's intrinsics.
    A state's loss depends on its own variables only, so zeroing a stopped state's
    gradients is exactly what zeroing its loss does (as for :class:`KeypointGradient`).
    ``self._fn(...)`` returns ``((dL/dx_t [M, D], dL/dtrans [M, 3]), (L, (loss per
    state [M], loss per row [N])))``.

    :param body: joints-only body kinematics.
    :param layout: keypoint layout of the observations.
    :param sigma_px: Geman-McClure scale.
    :param elementwise: broadcast multiply-adds for the 3x3 products (for a compiler).
    """

    def __init__(self, body: JointsOnlyBody, layout: str, sigma_px: float,
                 elementwise: bool = False):
        self.body = copy.copy(body)
        self.body.elementwise = elementwise
        self.layout = layout
        self.sigma_px = float(sigma_px)

        def objective(x_t, trans, eps, c_x, c_e, rest_joints, rest_bones, rest_vertices,
                      row_state, rel_rot, rel_t, views, target, conf, focal, center, size):
            x0 = c_x * x_t - c_e * eps
            rotmats = _rot6d_to_matrix(x0[:, :POSE_DIM].reshape(-1, 24, 6))
            joints = self.body(rotmats, RestState(rest_joints, rest_bones, rest_vertices))
            # [N, K, 3] each row's state in the anchor camera, then in the row's camera.
            anchor = (keypoints_from_joints45(joints, self.layout)
                      + trans[:, None, :]).index_select(0, row_state)
            cam = (rel_rot[:, None, :, :] * anchor[:, :, None, :]).sum(-1) + rel_t[:, None, :]
            row_loss = _robust_reprojection(cam, target, conf, focal, center, size,
                                            self.sigma_px)
            state_loss = row_loss.new_zeros(x_t.shape[0]).index_add(
                0, row_state, row_loss) / views
            return state_loss.sum(), (state_loss, row_loss)

        self._fn = torch.func.grad_and_value(objective, argnums=(0, 1), has_aux=True)


def _robust_reprojection(cam, target, conf, focal, center, size, sigma_px):
    """
    Robust reprojection loss per row of keypoints given in each row's camera frame.

    :param cam: [N, K, 3] keypoints in the camera frame, metres.
    :param target: [N, K, 2] observed keypoints, pixels; ``conf``: [N, K] confidences.
    :param focal: [N, 2] focal lengths; ``center``: [N, 2] principal points, pixels.
    :param size: [N, 2] image ``(height, width)``, pixels.
    :param sigma_px: Geman-McClure scale.
    :return: [N] loss per row (the sum of ``losses.keypoint_reprojection_loss``).
    """
    proj = cam[..., :2] / cam[..., 2:3] * focal[:, None] + center[:, None]
    weight = (1000.0 / size.max(dim=-1).values) ** 2
    robust = geman_mcclure(proj - target, sigma_px)
    return (weight[:, None, None] * conf[..., None] ** 2 * robust).sum(dim=(1, 2))


def _rot6d_to_matrix(rot6d: torch.Tensor) -> torch.Tensor:
    """[..., 6] -> [..., 3, 3] by Gram-Schmidt, in elementwise form (same math as rotations)."""
    a1, a2 = rot6d[..., 0:3], rot6d[..., 3:6]
    b1 = a1 / a1.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    u2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = u2 / u2.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-1)
