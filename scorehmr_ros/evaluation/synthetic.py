"""
Generated evaluation data with ground truth: people seen by several cameras over time.

For tests and for trying ``scorehmr eval`` without a benchmark. Each person has a
smoothly moving SMPL pose; each view is a camera turned about the vertical axis; every
row gets noisy BODY_25 keypoints and a start that is the truth perturbed in pose and
translation (independently per row, as a per-frame regressor would be). The body is
whatever model is passed (the synthetic SMPL-format body by default), so numbers from
this data are not SMPL benchmark numbers.
"""

import math

import torch

from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.body.rotations import axis_angle_to_matrix
from scorehmr_ros.evaluation.dataset import EvalData
from scorehmr_ros.guidance.camera import perspective_project
from scorehmr_ros.observations import Observations
from scorehmr_ros.perception.keypoint_features import keypoint_features
from scorehmr_ros.scene import camera_facing_orientation


def make_eval_data(body: BodyModel, num_people: int = 2, num_views: int = 1,
                   num_frames: int = 1, seed: int = 0, pose_std_rad: float = 0.25,
                   perturb_std_rad: float = 0.12, perturb_trans_m=(0.05, 0.3),
                   keypoint_noise_px: float = 2.0, image_hw=(720, 1280),
                   focal_px: float = 1000.0, fps: float = 30.0) -> EvalData:
    """
    Generate evaluation rows (person x view x frame) with SMPL-24 ground truth.

    :param body: body model used for truth and keypoints.
    :param num_people: sequences (one person each).
    :param num_views: cameras per person (turned 0.5 rad apart about the vertical).
    :param num_frames: frames per sequence.
    :param seed: RNG seed.
    :param pose_std_rad: spread of the true joint rotations.
    :param perturb_std_rad: pose error of the start, per joint.
    :param perturb_trans_m: ``(xy, z)`` translation error of the start, metres.
    :param keypoint_noise_px: keypoint pixel noise.
    :param image_hw: image ``(height, width)``.
    :param focal_px: focal length, pixels.
    :param fps: frame rate of the sequences.
    :return: the data; ``cond`` holds the keypoint features (:func:`keypoint_features`).
    """
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    dtype = next(body.buffers()).dtype
    rows = []
    base = pose_std_rad * randn(num_people, 23, 3)
    swing = 0.3 * pose_std_rad * randn(num_people, 23, 3)
    phase = 2 * math.pi * torch.rand(num_people, 23, 3, generator=gen, dtype=torch.float64)
    yaw0 = 0.6 * torch.tanh(randn(num_people))
    betas = 0.8 * randn(num_people, 10)
    depth = 3.5 + 2.0 * torch.rand(num_people, generator=gen, dtype=torch.float64)
    for p in range(num_people):
        for f in range(num_frames):
            body_aa = base[p] + swing[p] * torch.sin(2 * math.pi * f / 30.0 + phase[p])
            for v in range(num_views):
                cam_yaw = torch.tensor(0.5 * v, dtype=torch.float64)
                turn = axis_angle_to_matrix(torch.stack(
                    (torch.zeros(()), cam_yaw, torch.zeros(()))).double())
                root = turn @ camera_facing_orientation(yaw0[p:p + 1])[0]
                trans0 = torch.tensor([0.0, 0.3, float(depth[p])], dtype=torch.float64)
                # The camera turns about the person's pelvis: same distance in every view.
                trans = trans0 + 0.01 * f * torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
                rotmats = torch.cat((root[None], axis_angle_to_matrix(body_aa)), dim=0)
                rows.append((p, f, v, rotmats, trans))
    n = len(rows)
    gt_rot = torch.stack([r[3] for r in rows])
    gt_t = torch.stack([r[4] for r in rows])
    gt_betas = betas[[r[0] for r in rows]]
    out = body(gt_rot.to(dtype), gt_betas.to(dtype))
    kp3d = body.keypoints(out, 'body25').double()
    height, width = image_hw
    focal = torch.full((n, 2), focal_px, dtype=torch.float64)
    center = torch.tensor([[width / 2.0, height / 2.0]], dtype=torch.float64).repeat(n, 1)
    kp2d = perspective_project(kp3d, gt_t, focal, center) + keypoint_noise_px * randn(n, 25, 2)
    conf = 0.7 + 0.3 * torch.rand(n, 25, generator=gen, dtype=torch.float64)
    init_rot = gt_rot @ axis_angle_to_matrix(perturb_std_rad * randn(n, 24, 3))
    xy, z = perturb_trans_m
    init_t = gt_t + torch.stack((xy * randn(n), xy * randn(n), z * randn(n)), dim=1)
    f32 = torch.float32
    keypoints = torch.cat((kp2d, conf[..., None]), -1).to(f32)
    obs = Observations(
        init_rotmats=init_rot.to(f32), init_betas=gt_betas.to(f32),
        cond=keypoint_features(keypoints), init_cam_t=init_t.to(f32),
        keypoints_2d=keypoints, keypoint_layout='body25',
        focal_px=focal.to(f32), center_px=center.to(f32),
        image_size=torch.tensor([[float(height), float(width)]]).repeat(n, 1))
    gt_joints = out.joints45[:, :24].double() + gt_t[:, None]
    return EvalData(
        path='<generated>', gt_joints=gt_joints.to(f32), joint_set='smpl24', obs=obs,
        sequence_id=torch.tensor([r[0] for r in rows]),
        frame_index=torch.tensor([r[1] for r in rows]),
        view_id=torch.tensor([r[2] for r in rows]), gt_rotmats=gt_rot.to(f32),
        gt_betas=gt_betas.to(f32), fps=fps)
