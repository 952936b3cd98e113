"""
A synthetic multi-camera recording with ground truth, as plain arrays (no ROS needed).

People stand in front of camera 0 (whose optical frame is the world frame here); the
other cameras orbit the people's centre about the vertical (optical y) axis. Per frame and
camera, the upstream front end's output is generated like :mod:`scorehmr_ros.scene`
does for one camera: keypoints (BODY_25 by default, or another layout such as the shipped
prior's COCO-17) projected from the true body with pixel noise and dropped keypoints, and a
regression estimate that is the truth perturbed in pose and translation. Features are
zeros of the denoiser's size (none where the denoiser builds them from the keypoints).
The ROS test publishes these frames as ``sensor_msgs/Image`` + ``CameraInfo`` +
``PersonDetectionArray`` messages.

Each view also carries its camera's extrinsics (``world_to_camera``, world frame
:data:`WORLD_FRAME`, which coincides with camera 0's optical frame) and the true pose in
its frame, so calibrated fusion and temporal smoothing can be measured against ground
truth. ``pose_motion_rad > 0`` makes the body joints swing smoothly over time (drawn
from a separate random stream, so the default output is unchanged).
``pose_source='heldout'`` instead plays, per person, a random contiguous stretch of the
held-out motion capture shipped with the package (:mod:`scorehmr_ros.mocap.heldout`: real
human motion the shipped prior was not trained on) at its real speed; the global
orientation and the walk of the pelvis stay those of the default.
"""

import dataclasses
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.body.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from scorehmr_ros.guidance.camera import perspective_project
from scorehmr_ros.mocap.heldout import load_heldout_poses, sample_body_sequences
from scorehmr_ros.observations import Observations
from scorehmr_ros.scene import _random_poses, POSE_SOURCES

#: Name of the common frame of the stream's extrinsics (camera 0's optical frame).
WORLD_FRAME = 'world'


@dataclasses.dataclass
class CameraFrame:
    """
    What one camera delivers at one frame, with ground truth.

    :param camera: camera name.
    :param frame_id: optical frame of the camera.
    :param k: [3, 3] intrinsics, pixels.
    :param image: [H, W] uint8 mono image (content irrelevant to the upstream front end).
    :param track_ids: [P] person ids.
    :param keypoints: [P, K, 3] ``(x_px, y_px, confidence)`` in ``keypoint_layout``.
    :param init_pose_aa: [P, 72] regression estimate, axis-angle, camera frame.
    :param init_betas: [P, 10] shape of the estimate.
    :param init_cam_t: [P, 3] body-to-camera translation of the estimate, metres.
    :param gt_joints: [P, 24, 3] true SMPL joints in this camera's frame, metres.
    :param init_joints: [P, 24, 3] joints of the regression estimate, same frame.
    :param world_to_camera: [4, 4] extrinsics: ``p_cam = R p_world + t``.
    :param gt_pose_aa: [P, 72] true pose, axis-angle, root in this camera's frame.
    :param gt_cam_t: [P, 3] true body-to-camera translation, metres.
    :param keypoint_layout: layout of ``keypoints`` (a name of
        :data:`scorehmr_ros.body.layouts.LAYOUTS`).
    :param body_model: name of the body model of the ground truth.
    """

    camera: str
    frame_id: str
    k: np.ndarray
    image: np.ndarray
    track_ids: np.ndarray
    keypoints: np.ndarray
    init_pose_aa: np.ndarray
    init_betas: np.ndarray
    init_cam_t: np.ndarray
    gt_joints: np.ndarray
    init_joints: np.ndarray
    world_to_camera: Optional[np.ndarray] = None
    gt_pose_aa: Optional[np.ndarray] = None
    gt_cam_t: Optional[np.ndarray] = None
    keypoint_layout: str = 'body25'
    body_model: str = 'synthetic'


@dataclasses.dataclass
class Frame:
    """
    One synchronised instant: every camera's view of it.

    :param stamp_ns: capture time, int nanoseconds.
    :param views: one :class:`CameraFrame` per camera.
    """

    stamp_ns: int
    views: List[CameraFrame]


def make_stream(body: BodyModel, cameras: Sequence[str] = ('cam0', 'cam1', 'cam2'),
                num_people: int = 2, num_frames: int = 5, seed: int = 0,
                image_hw: Tuple[int, int] = (48, 64), focal_px: float = 60.0,
                fps: float = 10.0, start_ns: int = 1_700_000_000_000_000_000,
                camera_yaw_deg: float = 35.0, keypoint_noise_px: float = 0.3,
                perturb_std_rad: float = 0.12, perturb_trans_m: Tuple[float, float] = (0.05, 0.3),
                pose_motion_rad: float = 0.0, motion_hz: float = 0.5,
                keypoint_layout: str = 'body25', pose_source: str = 'random') -> List[Frame]:
    """
    Generate frames of people walking slowly, seen by several cameras.

    :param body: body model of the ground truth.
    :param cameras: camera names (camera ``i`` sits at yaw ``(i+1)//2 * +-camera_yaw_deg``).
    :param num_people: P.
    :param num_frames: frames.
    :param seed: RNG seed (same seed, same stream).
    :param image_hw: ``(height, width)``, pixels.
    :param focal_px: focal length, pixels.
    :param fps: frame rate of the stamps.
    :param start_ns: stamp of the first frame.
    :param camera_yaw_deg: orbit angle step between cameras.
    :param keypoint_noise_px: keypoint pixel noise.
    :param perturb_std_rad: pose error of the estimate per joint.
    :param perturb_trans_m: ``(xy, z)`` translation error of the estimate, metres.
    :param pose_motion_rad: amplitude of a smooth sinusoidal swing of every body joint
        (0: a fixed pose, the default).
    :param motion_hz: frequency of that swing.
    :param keypoint_layout: layout of the generated keypoints (``body25``, ``coco17``, ...).
    :param pose_source: body poses (joints 1..23): ``'random'`` (a random pose, fixed or
        swinging with ``pose_motion_rad``) or ``'heldout'`` (held-out motion capture, a
        contiguous stretch per person; ``pose_motion_rad`` must then be 0).
    :return: the frames.
    :raises ValueError: on an unknown ``pose_source`` or motion on top of held-out poses.
    """
    if pose_source not in POSE_SOURCES:
        raise ValueError(f'pose_source must be one of {", ".join(POSE_SOURCES)}, got '
                         f'{pose_source!r}')
    if pose_source == 'heldout' and pose_motion_rad > 0:
        raise ValueError('pose_motion_rad must be 0 with held-out poses (they move already)')
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    height, width = image_hw
    k = np.array([[focal_px, 0.0, width / 2.0], [0.0, focal_px, height / 2.0], [0, 0, 1]])
    rotmats = _random_poses(num_people, 0.25, randn)
    betas = 0.8 * randn(num_people, 10)
    dtype = next(body.buffers()).dtype
    with torch.no_grad():
        rest_pelvis = body.rest_joints(betas.to(dtype))[:, 0].double()
    lateral = torch.linspace(-0.7, 0.7, num_people, dtype=torch.float64) * (num_people > 1)
    pelvis_w = torch.stack((lateral, 0.3 + 0.05 * randn(num_people),
                            4.5 + 0.5 * randn(num_people)), dim=1)
    velocity = 0.3 * torch.stack((randn(num_people), torch.zeros(num_people),
                                  randn(num_people)), dim=1)
    centre = pelvis_w.mean(dim=0)
    if pose_source == 'heldout':
        # A separate stream as for the swing; [F, P, 23, 3, 3] real motion at ``fps``.
        body_motion = sample_body_sequences(
            load_heldout_poses(), num_people, num_frames, fps,
            torch.Generator().manual_seed(seed + 2))
    if pose_motion_rad > 0:
        # A separate stream: the default (static-pose) output must not change.
        motion_gen = torch.Generator().manual_seed(seed + 1)
        axes = torch.nn.functional.normalize(
            torch.randn(num_people, 23, 3, generator=motion_gen, dtype=torch.float64), dim=-1)
        phases = 2 * math.pi * torch.rand(num_people, 23, 1, generator=motion_gen,
                                          dtype=torch.float64)
    poses = []
    for index in range(len(cameras)):
        yaw = math.radians(camera_yaw_deg) * ((index + 1) // 2) * (1 if index % 2 else -1)
        rot = axis_angle_to_matrix(torch.tensor([0.0, yaw, 0.0], dtype=torch.float64))
        poses.append((rot, centre - rot @ centre))
    frames = []
    for frame in range(num_frames):
        time_s = frame / fps
        pose_t = rotmats
        if pose_motion_rad > 0:
            swing = pose_motion_rad * torch.sin(2 * math.pi * motion_hz * time_s + phases)
            pose_t = rotmats.clone()
            pose_t[:, 1:] = rotmats[:, 1:] @ axis_angle_to_matrix(axes * swing)
        elif pose_source == 'heldout':
            pose_t = rotmats.clone()
            pose_t[:, 1:] = body_motion[frame]
        views = []
        for cam_index, name in enumerate(cameras):
            rot, trans = poses[cam_index]
            pelvis_c = (pelvis_w + velocity * time_s) @ rot.T + trans
            rot_c = pose_t.clone()
            rot_c[:, 0] = rot @ pose_t[:, 0]
            cam_t = pelvis_c - rest_pelvis
            with torch.no_grad():
                out = body(rot_c.to(dtype), betas.to(dtype))
                kp3d = body.keypoints(out, keypoint_layout).double() + cam_t[:, None]
            focal = torch.full((num_people, 2), focal_px, dtype=torch.float64)
            center = torch.tensor([[width / 2.0, height / 2.0]],
                                  dtype=torch.float64).repeat(num_people, 1)
            kp2d = perspective_project(kp3d - cam_t[:, None], cam_t, focal, center)
            kp2d = kp2d + keypoint_noise_px * randn(*kp2d.shape)
            conf = 0.7 + 0.3 * torch.rand(kp2d.shape[:2], generator=gen, dtype=torch.float64)
            noise = axis_angle_to_matrix(perturb_std_rad * randn(num_people, 24, 3))
            init_rot = rot_c @ noise
            xy, z = perturb_trans_m
            init_t = cam_t + torch.stack((xy * randn(num_people), xy * randn(num_people),
                                          z * randn(num_people)), dim=1)
            with torch.no_grad():
                gt_joints = out.joints45[:, :24].double() + cam_t[:, None]
                init_joints = body(init_rot.to(dtype), betas.to(dtype)).joints45[:, :24] \
                    .double() + init_t[:, None]
            image = np.full((height, width), 32 + 40 * cam_index, dtype=np.uint8)
            views.append(CameraFrame(
                camera=name, frame_id=f'{name}_optical', k=k.copy(), image=image,
                track_ids=np.arange(1, num_people + 1),
                keypoints=torch.cat((kp2d, conf[..., None]), -1).numpy(),
                init_pose_aa=matrix_to_axis_angle(init_rot).reshape(num_people, 72).numpy(),
                init_betas=betas.numpy().copy(), init_cam_t=init_t.numpy(),
                gt_joints=gt_joints.numpy(), init_joints=init_joints.numpy(),
                world_to_camera=_transform(rot, trans),
                gt_pose_aa=matrix_to_axis_angle(rot_c).reshape(num_people, 72).numpy(),
                gt_cam_t=cam_t.numpy().copy(), keypoint_layout=keypoint_layout,
                body_model=body.name))
        frames.append(Frame(stamp_ns=start_ns + int(round(time_s * 1e9)), views=views))
    return frames


def _transform(rot: torch.Tensor, trans: torch.Tensor) -> np.ndarray:
    """[4, 4] float64 homogeneous transform of [3, 3] ``rot`` and [3] ``trans``."""
    out = np.eye(4)
    out[:3, :3] = rot.numpy()
    out[:3, 3] = trans.numpy()
    return out


def frame_observations(frame: Frame, cond_dim: int, views: Optional[Sequence[int]] = None,
                       people: Optional[Sequence[int]] = None,
                       dtype: torch.dtype = torch.float32) -> Observations:
    """
    Refiner inputs of one synchronised frame: one row per (person, view).

    Rows are person-major (all views of person 0, then person 1, ...); ``view_group`` is
    the person, ``world_to_camera`` the row's camera extrinsics, features are zeros.

    :param frame: a frame of :func:`make_stream`.
    :param cond_dim: feature size C of the denoiser.
    :param views: indices of the cameras to use (default all).
    :param people: indices of the people to use (default all).
    :param dtype: floating dtype.
    :return: observations with B = people x views rows.
    """
    views = list(range(len(frame.views))) if views is None else list(views)
    people = list(range(len(frame.views[0].track_ids))) if people is None else list(people)
    cols = {key: [] for key in ('rot', 'betas', 't', 'kp', 'f', 'c', 'hw', 'group', 'w2c')}
    for person in people:
        for view in views:
            cam = frame.views[view]
            height, width = cam.image.shape[:2]
            cols['rot'].append(axis_angle_to_matrix(
                torch.from_numpy(cam.init_pose_aa[person]).reshape(24, 3)))
            cols['betas'].append(torch.from_numpy(cam.init_betas[person]))
            cols['t'].append(torch.from_numpy(cam.init_cam_t[person]))
            cols['kp'].append(torch.from_numpy(cam.keypoints[person]))
            cols['f'].append(torch.tensor([cam.k[0, 0], cam.k[1, 1]]))
            cols['c'].append(torch.tensor([cam.k[0, 2], cam.k[1, 2]]))
            cols['hw'].append(torch.tensor([float(height), float(width)]))
            cols['group'].append(person)
            cols['w2c'].append(torch.from_numpy(cam.world_to_camera))
    stack = lambda key: torch.stack(cols[key]).to(dtype)  # noqa: E731
    rows = len(cols['group'])
    return Observations(
        init_rotmats=stack('rot'), init_betas=stack('betas'),
        cond=torch.zeros(rows, cond_dim, dtype=dtype), init_cam_t=stack('t'),
        keypoints_2d=stack('kp'), keypoint_layout=frame.views[views[0]].keypoint_layout,
        focal_px=stack('f'),
        center_px=stack('c'), image_size=stack('hw'),
        view_group=torch.tensor(cols['group'], dtype=torch.long), world_to_camera=stack('w2c'))
