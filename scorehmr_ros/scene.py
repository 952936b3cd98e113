"""
Generated scenes with ground truth: several people seen by one pinhole camera.

Used by the demo, the tests and the benchmarks. Each person has a ground-truth SMPL pose,
shape and placement; the camera sees their projected keypoints with pixel noise and
dropped keypoints; a "regression estimate" is the ground truth perturbed in pose and
translation, which is what ScoreHMR starts from.

Body poses (joints 1..23) come from ``SceneSpec.pose_source``: ``'random'`` draws
independent per-joint rotations (not human motion), ``'heldout'`` draws frames of the
held-out motion capture shipped with the package (:mod:`scorehmr_ros.mocap.heldout`:
plausible human poses the shipped prior was not trained on). The global orientation
(upright, facing the camera) and the placement are drawn the same way for both.
"""

import dataclasses
import math
from typing import Optional

import torch

from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.body.rotations import axis_angle_to_matrix
from scorehmr_ros.guidance.camera import perspective_project
from scorehmr_ros.mocap.heldout import load_heldout_poses, sample_body_poses
from scorehmr_ros.observations import Observations

#: Values of ``SceneSpec.pose_source``.
POSE_SOURCES = ('random', 'heldout')


@dataclasses.dataclass
class Scene:
    """
    A generated scene (B people).

    :param obs: what the refiner gets (perturbed start, keypoints, intrinsics, features).
    :param gt_rotmats: [B, 24, 3, 3] true rotations (global orientation in the camera).
    :param gt_betas: [B, 10] true shape.
    :param gt_cam_t: [B, 3] true body-to-camera translation, metres.
    :param gt_joints: [B, 24, 3] true SMPL joints in the camera frame, metres.
    """

    obs: Observations
    gt_rotmats: torch.Tensor
    gt_betas: torch.Tensor
    gt_cam_t: torch.Tensor
    gt_joints: torch.Tensor


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    """
    How to generate a scene.

    :param num_people: B.
    :param image_hw: image ``(height, width)`` in pixels.
    :param focal_px: focal length in pixels.
    :param pose_std_rad: spread of the true body-joint rotations.
    :param perturb_std_rad: pose error of the regression estimate per joint.
    :param perturb_trans_m: ``(xy, z)`` translation error of the estimate, metres.
    :param keypoint_noise_px: pixel noise of the observed keypoints.
    :param dropout: probability that a keypoint is missing (confidence 0).
    :param cond_dim: size of the (random, standard-normal) conditioning features.
    :param keypoint_layout: layout of the observed keypoints (``body25``, the paper's, or
        ``coco17``, what the shipped prior is conditioned on); see
        :mod:`scorehmr_ros.body.layouts`.
    :param pose_source: true body poses: ``'random'`` (per-joint rotations with
        ``pose_std_rad``) or ``'heldout'`` (held-out motion-capture frames).
    """

    num_people: int = 3
    image_hw: tuple = (720, 1280)
    focal_px: float = 1000.0
    pose_std_rad: float = 0.25
    perturb_std_rad: float = 0.12
    perturb_trans_m: tuple = (0.05, 0.3)
    keypoint_noise_px: float = 2.0
    dropout: float = 0.1
    cond_dim: int = 3072
    keypoint_layout: str = 'body25'
    pose_source: str = 'random'

    def __post_init__(self):
        if self.pose_source not in POSE_SOURCES:
            raise ValueError(f'SceneSpec.pose_source must be one of {", ".join(POSE_SOURCES)}, '
                             f'got {self.pose_source!r}')


def make_scene(body: BodyModel, spec: SceneSpec = SceneSpec(), seed: int = 0,
               dtype: torch.dtype = torch.float32) -> Scene:
    """
    Generate a multi-person scene with keypoints in ``spec.keypoint_layout``.

    :param body: body model used for ground truth and keypoints.
    :param spec: scene parameters.
    :param seed: RNG seed (same seed, same scene).
    :param dtype: floating dtype of the tensors.
    :return: the scene.
    """
    gen = torch.Generator().manual_seed(seed)
    b = spec.num_people

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    gt_rotmats = _random_poses(b, spec.pose_std_rad, randn, pose_source=spec.pose_source,
                               gen=gen)
    gt_betas = 0.8 * randn(b, 10)
    # People side by side, 3.5-6 m in front of the camera.
    depth = 3.5 + 2.5 * torch.rand(b, generator=gen, dtype=torch.float64)
    lateral = torch.linspace(-1.0, 1.0, b, dtype=torch.float64) * (0.4 * (b > 1)) * depth
    gt_cam_t = torch.stack((lateral, 0.3 + 0.1 * randn(b), depth), dim=1)

    height, width = spec.image_hw
    focal = torch.full((b, 2), spec.focal_px, dtype=torch.float64)
    center = torch.tensor([[width / 2.0, height / 2.0]], dtype=torch.float64).repeat(b, 1)
    # Evaluate in the body's own dtype: Module.to() would convert the caller's model.
    body_dtype = next(body.buffers()).dtype
    out = body(gt_rotmats.to(body_dtype), gt_betas.to(body_dtype))
    kp3d = body.keypoints(out, spec.keypoint_layout).double()
    kp2d = perspective_project(kp3d, gt_cam_t, focal, center)
    # Held-out scenes draw the keypoint noise from a stream of its own, so one seed gives
    # the same people and the same starts whatever the layout (priors conditioned on
    # different layouts then refine the same scene); 'random' keeps its historic stream.
    kp_gen = torch.Generator().manual_seed(seed + 1) if spec.pose_source == 'heldout' else gen
    kp2d = kp2d + spec.keypoint_noise_px * torch.randn(*kp2d.shape, generator=kp_gen,
                                                       dtype=torch.float64)
    conf = 0.7 + 0.3 * torch.rand(kp2d.shape[:2], generator=kp_gen, dtype=torch.float64)
    conf = torch.where(torch.rand(conf.shape, generator=kp_gen, dtype=torch.float64)
                       < spec.dropout, torch.zeros_like(conf), conf)
    gt_joints = out.joints45[:, :24].double() + gt_cam_t[:, None]

    noise_rot = axis_angle_to_matrix(spec.perturb_std_rad * randn(b, 24, 3))
    init_rotmats = gt_rotmats @ noise_rot
    xy_err, z_err = spec.perturb_trans_m
    init_cam_t = gt_cam_t + torch.stack(
        (xy_err * randn(b), xy_err * randn(b), z_err * randn(b)), dim=1)
    obs = Observations(
        init_rotmats=init_rotmats.to(dtype), init_betas=gt_betas.to(dtype),
        cond=randn(b, spec.cond_dim).to(dtype), init_cam_t=init_cam_t.to(dtype),
        keypoints_2d=torch.cat((kp2d, conf[..., None]), -1).to(dtype),
        keypoint_layout=spec.keypoint_layout, focal_px=focal.to(dtype),
        center_px=center.to(dtype),
        image_size=torch.tensor([[float(height), float(width)]]).repeat(b, 1).to(dtype))
    return Scene(obs=obs, gt_rotmats=gt_rotmats.to(dtype), gt_betas=gt_betas.to(dtype),
                 gt_cam_t=gt_cam_t.to(dtype), gt_joints=gt_joints.to(dtype))


def camera_facing_orientation(yaw_rad: torch.Tensor) -> torch.Tensor:
    """
    Global orientation of an upright SMPL body facing a camera (x right, y down, z ahead).

    SMPL's rest body is y-up and faces +z; a half turn about x makes it upright in the
    camera frame and facing the camera; ``yaw`` then turns it about the vertical.

    :param yaw_rad: [B] rotation about the body's vertical axis, radians.
    :return: [B, 3, 3] rotation matrices.
    """
    flip = axis_angle_to_matrix(torch.tensor([math.pi, 0.0, 0.0], dtype=yaw_rad.dtype))
    yaw = axis_angle_to_matrix(torch.stack(
        (torch.zeros_like(yaw_rad), yaw_rad, torch.zeros_like(yaw_rad)), dim=-1))
    return flip @ yaw


def _random_poses(b: int, std: float, randn, max_yaw: float = 0.6,
                  pose_source: str = 'random', gen: Optional[torch.Generator] = None
                  ) -> torch.Tensor:
    """
    Upright, camera-facing bodies with random or held-out motion-capture joint rotations.

    :param b: B.
    :param std: per-joint axis-angle spread of ``'random'`` poses, radians.
    :param randn: standard-normal float64 sampler of the caller's stream.
    :param max_yaw: largest turn away from the camera, radians.
    :param pose_source: ``'random'`` or ``'heldout'``.
    :param gen: the caller's generator (``'heldout'`` draws the frames with it).
    :return: [B, 24, 3, 3] rotations, global orientation first.
    """
    if pose_source == 'heldout':
        body = sample_body_poses(load_heldout_poses(), b, gen)
    else:
        body = axis_angle_to_matrix(std * randn(b, 23, 3))
    root = camera_facing_orientation(max_yaw * torch.tanh(randn(b)))
    return torch.cat((root[:, None], body), dim=1)
