"""The start from 3D landmarks: the bone-direction fit and the ``landmarks3d`` estimate."""

import math

import numpy as np
import pytest
import torch

from scorehmr_ros.body.layouts import COCO17_JOINT_NAMES, SMPL_JOINT_NAMES, SMPL_PARENTS
from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.body.rotations import axis_angle_to_matrix
from scorehmr_ros.perception.initial_estimate import (
    body_keypoints, initial_estimate, reprojection_error_px)
from scorehmr_ros.perception.landmark_fit import fit_landmarks
from scorehmr_ros.scene import camera_facing_orientation

FOCAL_PX, HW = 1000.0, (480, 640)
CENTER = np.array([320.0, 240.0])
K = {name: i for i, name in enumerate(COCO17_JOINT_NAMES)}
S = {name: i for i, name in enumerate(SMPL_JOINT_NAMES)}
LIMB_BONES = [('left_shoulder', 'left_elbow'), ('left_elbow', 'left_wrist'),
              ('right_shoulder', 'right_elbow'), ('right_elbow', 'right_wrist'),
              ('left_hip', 'left_knee'), ('left_knee', 'left_ankle'),
              ('right_hip', 'right_knee'), ('right_knee', 'right_ankle')]


@pytest.fixture(scope='module')
def body():
    return BodyModel.from_config(None, dtype=torch.float64)


@pytest.fixture(scope='module')
def rest_kp(body):
    return body_keypoints(body, np.tile(np.eye(3), (1, 24, 1, 1)), np.zeros((1, 10)))[0]


def _aa(*vec):
    return axis_angle_to_matrix(torch.tensor(vec, dtype=torch.float64)).numpy()


def _known_poses():
    """[3, 24, 3, 3]: bent elbows and knees about their hinges, twisted upper limbs."""
    poses = np.tile(np.eye(3), (3, 24, 1, 1))
    yaws = torch.tensor([0.3, -1.2, 2.5], dtype=torch.float64)
    poses[:, 0] = camera_facing_orientation(yaws).numpy() @ _aa(0.2, 0.0, 0.1)
    for i, s in enumerate((1.0, 0.6, 1.4)):
        poses[i, S['spine2']] = _aa(0.15 * s, 0.0, 0.0)
        poses[i, S['left_shoulder']] = _aa(0.5 * s, 0.0, -0.6)      # twist about the arm
        poses[i, S['left_elbow']] = _aa(0.0, -1.2 * s, 0.0)         # flexion
        poses[i, S['right_shoulder']] = _aa(-0.3, 0.4 * s, 0.5)
        poses[i, S['right_elbow']] = _aa(0.0, 0.9 * s, 0.0)
        poses[i, S['left_hip']] = _aa(-0.7 * s, 0.2, 0.1)
        poses[i, S['left_knee']] = _aa(1.1 * s, 0.0, 0.0)
        poses[i, S['right_hip']] = _aa(-0.3, -0.3 * s, 0.0)
        poses[i, S['right_knee']] = _aa(0.9 * s, 0.0, 0.0)
    return poses


def _global(rotmats):
    glob = np.array(rotmats)
    for j in range(1, 24):
        glob[:, j] = glob[:, SMPL_PARENTS[j]] @ rotmats[:, j]
    return glob


def _angle_deg(u, v):
    cos = (u * v).sum(-1) / np.linalg.norm(u, axis=-1) / np.linalg.norm(v, axis=-1)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _rot_angle_deg(a, b):
    rel = np.swapaxes(a, -1, -2) @ b
    return np.degrees(np.arccos(np.clip((np.trace(rel, axis1=-2, axis2=-1) - 1) / 2, -1, 1)))


def test_fit_recovers_a_known_pose_from_exact_landmarks(body, rest_kp):
    truth = _known_poses()
    joints = body_keypoints(body, truth, np.zeros((3, 10)))
    landmarks = np.concatenate([joints, np.ones((3, 17, 1))], axis=-1)
    rotmats, found = fit_landmarks(rest_kp, landmarks)
    assert found.all()
    assert np.allclose(np.swapaxes(rotmats, -1, -2) @ rotmats, np.eye(3), atol=1e-9)
    fitted = body_keypoints(body, rotmats, np.zeros((3, 10)))
    for a, b in LIMB_BONES:
        err = _angle_deg(joints[:, K[b]] - joints[:, K[a]], fitted[:, K[b]] - fitted[:, K[a]])
        assert err.max() < 1.0, (a, b, err)
    # The hinges fix the twist: upper-limb and hinge global rotations, not only directions.
    glob_true, glob_fit = _global(truth), _global(rotmats)
    for name in ('left_shoulder', 'left_elbow', 'right_shoulder', 'right_elbow',
                 'left_hip', 'left_knee', 'right_hip', 'right_knee'):
        err = _rot_angle_deg(glob_true[:, S[name]], glob_fit[:, S[name]])
        assert err.max() < 1.0, (name, err)
    # Root from the torso: within the spine's bend.
    assert _rot_angle_deg(truth[:, 0], rotmats[:, 0]).max() < 15.0


def test_fit_is_finite_with_missing_landmarks(body, rest_kp):
    truth = _known_poses()
    joints = body_keypoints(body, truth, np.zeros((3, 10)))
    landmarks = np.concatenate([joints, np.ones((3, 17, 1))], axis=-1)
    landmarks[0, [K['left_wrist'], K['right_knee']], 3] = 0.0
    landmarks[1, [K['left_hip'], K['nose'], K['left_ear']], 3] = 0.0
    landmarks[1, K['right_elbow'], :3] = np.nan
    landmarks[2, :, 3] = 0.0                       # nobody seen in 3D
    fallback = camera_facing_orientation(torch.zeros(3, dtype=torch.float64)).numpy()
    rotmats, found = fit_landmarks(rest_kp, landmarks, fallback_root=fallback)
    assert np.isfinite(rotmats).all()
    assert found.tolist() == [True, True, False]
    assert np.allclose(rotmats[2, 0], fallback[2]) and np.allclose(rotmats[2, 1:], np.eye(3))
    # Bones with both ends seen are still matched.
    fitted = body_keypoints(body, rotmats, np.zeros((3, 10)))
    a, b = K['left_shoulder'], K['left_elbow']
    assert _angle_deg(joints[0, b] - joints[0, a], fitted[0, b] - fitted[0, a]) < 1.0
    # A missing wrist leaves the forearm on the upper arm (local identity).
    assert np.allclose(rotmats[0, S['left_elbow']], np.eye(3))
    with pytest.raises(ValueError, match=r'\[P, 17, 4\]'):
        fit_landmarks(rest_kp, landmarks[..., :3])


def test_landmarks3d_start_reprojects_and_auto_takes_it(body):
    truth = _known_poses()
    joints = body_keypoints(body, truth, np.zeros((3, 10)))
    cam_t = np.array([[0.1, 0.2, 4.0], [-0.3, 0.0, 5.0], [0.2, -0.1, 3.5]])
    cam = joints + cam_t[:, None]
    kp = np.concatenate([FOCAL_PX * cam[..., :2] / cam[..., 2:] + CENTER,
                         np.ones((3, 17, 1))], axis=-1)
    # MediaPipe-like: hip-centred, with 2 cm of noise.
    rng = np.random.default_rng(0)
    landmarks = joints - joints[:, [K['left_hip'], K['right_hip']]].mean(1, keepdims=True)
    landmarks = np.concatenate([landmarks + rng.normal(0, 0.02, landmarks.shape),
                                np.ones((3, 17, 1))], axis=-1)
    est = initial_estimate(body, kp, HW, FOCAL_PX, method='landmarks3d', landmarks=landmarks)
    err = reprojection_error_px(body, est.rotmats, est.betas, est.cam_t, kp, FOCAL_PX, CENTER)
    rest = initial_estimate(body, kp, HW, FOCAL_PX, method='rest')
    rest_err = reprojection_error_px(body, rest.rotmats, rest.betas, rest.cam_t, kp,
                                     FOCAL_PX, CENTER)
    assert (err < 0.5 * rest_err).all() and err.max() < 15.0, (err, rest_err)
    assert np.allclose(est.cam_t, cam_t, atol=0.4)
    auto = initial_estimate(body, kp, HW, FOCAL_PX, landmarks=landmarks)
    assert np.allclose(auto.rotmats, est.rotmats) and np.allclose(auto.cam_t, est.cam_t)
    # Without landmarks auto (bare body) is the rest pose; landmarks3d refuses.
    assert np.allclose(initial_estimate(body, kp, HW, FOCAL_PX).rotmats, rest.rotmats)
    with pytest.raises(ValueError, match='landmarks3d needs landmarks'):
        initial_estimate(body, kp, HW, FOCAL_PX, method='landmarks3d')
    with pytest.raises(ValueError, match='landmarks must be'):
        initial_estimate(body, kp, HW, FOCAL_PX, landmarks=landmarks[:2])
    assert math.isfinite(float(err.mean()))


def test_synthetic_landmarks_are_hip_centred_truth_plus_noise(body):
    from scorehmr_ros.evaluation.initial_starts import synthetic_landmarks

    truth = _known_poses()
    joints = body_keypoints(body, truth, np.zeros((3, 10)))
    exact = synthetic_landmarks(body, truth, np.zeros((3, 10)), 0.0)
    centred = joints - joints[:, [K['left_hip'], K['right_hip']]].mean(1, keepdims=True)
    assert np.allclose(exact[..., :3], centred) and (exact[..., 3] == 1).all()
    flat = synthetic_landmarks(body, truth, np.zeros((3, 10)), 0.0, depth_scale=0.5)
    assert np.allclose(flat[..., 2], 0.5 * centred[..., 2])
    noisy = synthetic_landmarks(body, truth, np.zeros((3, 10)), 0.01, depth_noise_m=0.1)
    err = noisy[..., :3] - centred
    assert 0.005 < err[..., 0].std() < 0.02 and 0.07 < err[..., 2].std() < 0.14
    with pytest.raises(ValueError, match='noise must be >= 0'):
        synthetic_landmarks(body, truth, np.zeros((3, 10)), -0.1)
