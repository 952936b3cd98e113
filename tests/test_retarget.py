"""Retargeting BVH to SMPL: bone directions, knee/elbow hinges, proper rotations, root path."""

import functools

import numpy as np
import pytest
from test_bvh import mocap_file, TINY
import torch

from scorehmr_ros.body.kinematics import JointsOnlyBody
from scorehmr_ros.body.layouts import SMPL_JOINT_NAMES, SMPL_PARENTS
from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.body.rotations import matrix_to_axis_angle
from scorehmr_ros.mocap.bvh import BvhError, forward_kinematics, parse_bvh, read_bvh
from scorehmr_ros.mocap.retarget import (
    bone_agreement, detect_skeleton, detect_units, HINGE_AXES, resample, retarget)

FILES = ('bvhtools_test.bvh', 'bvhtools_test3.bvh')
STRIDE = 7   # every 7th frame keeps the tests fast and still covers the whole clips
SMPL = {name: i for i, name in enumerate(SMPL_JOINT_NAMES)}


@functools.lru_cache(maxsize=None)
def body_and_rest():
    torch.set_num_threads(1)
    joints_body = JointsOnlyBody(BodyModel.from_config(None, dtype=torch.float64))
    return joints_body, joints_body.rest(torch.zeros(1, 10, dtype=torch.float64))


@functools.lru_cache(maxsize=None)
def retargeted(name):
    bvh = read_bvh(mocap_file(name))
    _, rest = body_and_rest()
    return bvh, retarget(bvh, rest_joints=rest.joints[0].numpy())


def posed_joints(rotmats):
    """[F, 24, 3] SMPL joints of the synthetic body (body frame, pelvis at the rest pelvis)."""
    joints_body, rest = body_and_rest()
    rot = torch.from_numpy(np.ascontiguousarray(rotmats))
    state = type(rest)(*(t.expand(rot.shape[0], *t.shape[1:]) for t in rest))
    with torch.no_grad():
        return joints_body(rot, state)[:, :24].numpy()


@pytest.mark.parametrize('name', FILES)
def test_bone_directions_match_the_bvh(name):
    bvh, motion = retargeted(name)
    frames = np.arange(0, bvh.num_frames, STRIDE)
    table = bone_agreement(bvh, motion, posed_joints(motion.rotmats[frames]), frames)
    posed = [row for row in table if row.kind in ('chain', 'lateral')]
    # Every limb and spine bone plus the hip and shoulder lines are compared.
    assert len(posed) == (20 if name == FILES[0] else 13)
    worst = min(posed, key=lambda row: row.mean_cos)
    assert worst.mean_cos > 0.97, f'worst bone {worst}'
    assert min(row.min_cos for row in posed) > 0.9, table
    # Side bones of the pelvis and chest are rigid: their angle is a constant set by the two
    # skeletons' proportions (SMPL's hips sit lower under the pelvis than the BVH's).
    for row in table:
        if row.kind == 'branch':
            assert row.mean_cos - row.min_cos < 0.1 and row.mean_cos > 0.5, row


@pytest.mark.parametrize('name', FILES)
def test_results_are_proper_rotations(name):
    _, motion = retargeted(name)
    rot = motion.rotmats
    assert rot.shape == (motion.num_frames, 24, 3, 3) and np.isfinite(rot).all()
    np.testing.assert_allclose(rot @ np.swapaxes(rot, -1, -2), np.broadcast_to(
        np.eye(3), rot.shape), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-9)
    for hand in ('left_hand', 'right_hand'):
        eye = np.broadcast_to(np.eye(3), (len(rot), 3, 3))
        np.testing.assert_array_equal(rot[:, SMPL[hand]], eye)
    for missing in motion.missing:
        np.testing.assert_allclose(rot[:, SMPL[missing]], np.broadcast_to(
            np.eye(3), (len(rot), 3, 3)), atol=1e-9)


# The Rigify clip never bends its knees by 45 deg (90 % of its frames stay under 11 deg).
HINGE_CASES = [(FILES[0], joint) for joint in HINGE_AXES] + [
    (FILES[1], 'left_elbow'), (FILES[1], 'right_elbow')]


@pytest.mark.parametrize('name,joint', HINGE_CASES)
def test_knees_and_elbows_bend_about_smpl_flexion_axis(name, joint):
    bvh, motion = retargeted(name)
    parent = SMPL_JOINT_NAMES[SMPL_PARENTS[SMPL[joint]]]
    kin = forward_kinematics(bvh)
    rel = np.swapaxes(kin.global_rotations[:, bvh.index(motion.mapping[parent])], -1, -2) \
        @ kin.global_rotations[:, bvh.index(motion.mapping[joint])]
    bvh_angle = np.linalg.norm(matrix_to_axis_angle(torch.from_numpy(rel)).numpy(), axis=1)
    bent = bvh_angle > np.deg2rad(45.0)
    assert bent.sum() > 200
    smpl_aa = matrix_to_axis_angle(torch.from_numpy(motion.rotmats[bent, SMPL[joint]])).numpy()
    axis = np.asarray(HINGE_AXES[joint])
    # Signed: a BVH flexion is an SMPL flexion (shin back, forearm forward), not a sideways
    # bend nor a hyperextension.
    cos = smpl_aa @ axis / np.linalg.norm(smpl_aa, axis=1)
    deviation_deg = np.rad2deg(np.arccos(np.clip(cos, -1.0, 1.0)))
    assert np.percentile(deviation_deg, 90) < 30.0, (joint, np.percentile(deviation_deg, 90))
    assert deviation_deg.mean() < 15.0
    # The SMPL bend is as large as the BVH's.
    np.testing.assert_allclose(np.median(np.linalg.norm(smpl_aa, axis=1)),
                               np.median(bvh_angle[bent]), rtol=0.15)


@pytest.mark.parametrize('name', FILES)
def test_body_is_upright_and_feet_point_forward(name):
    _, motion = retargeted(name)
    frames = np.arange(0, motion.num_frames, STRIDE)
    root = motion.rotmats[frames, 0]
    # World is Y-up: the pelvis's up axis (SMPL +y) points up.
    assert np.median(root[:, 1, 1]) > 0.8
    joints = posed_joints(motion.rotmats[frames])
    forward = root[:, :, 2]                       # SMPL +z: the way the body faces
    for knee, ankle, foot in (('left_knee', 'left_ankle', 'left_foot'),
                              ('right_knee', 'right_ankle', 'right_foot')):
        toes = joints[:, SMPL[foot]] - joints[:, SMPL[ankle]]
        toes[:, 1] = 0.0
        toes /= np.linalg.norm(toes, axis=1, keepdims=True)
        flat_forward = forward.copy()
        flat_forward[:, 1] = 0.0
        flat_forward /= np.linalg.norm(flat_forward, axis=1, keepdims=True)
        # Left/right swapped or a mirrored world would turn the feet backwards.
        assert np.median((toes * flat_forward).sum(1)) > 0.7


def test_root_translation_follows_the_bvh_root_in_metres():
    bvh, motion = retargeted(FILES[0])
    assert motion.metres_per_unit == 0.01
    np.testing.assert_allclose(motion.pelvis_m, bvh.motion[:, :3] * 0.01)
    # SMPL's transl = pelvis - J_0 puts the posed body's pelvis on the BVH root.
    _, rest = body_and_rest()
    transl = motion.pelvis_m[::STRIDE] - rest.joints[0, 0].numpy()
    pelvis = posed_joints(motion.rotmats[::STRIDE])[:, 0] + transl
    np.testing.assert_allclose(pelvis, bvh.motion[::STRIDE, :3] * 0.01, atol=1e-9)
    travelled = np.linalg.norm(np.diff(motion.pelvis_m[:, [0, 2]], axis=0), axis=1).sum()
    assert travelled > 10.0   # the actor walks around: metres, not centimetres


def test_skeleton_and_unit_detection():
    bvh3, motion3 = retargeted(FILES[1])
    assert detect_skeleton(bvh3) == 'rigify' and detect_units(bvh3) == 'm'
    assert set(motion3.missing) == {'spine2', 'left_foot', 'right_foot', 'left_wrist',
                                    'right_wrist', 'left_hand', 'right_hand'}
    bvh1, _ = retargeted(FILES[0])
    assert detect_skeleton(bvh1) == 'smpl_named' and detect_units(bvh1) == 'cm'
    with pytest.raises(BvhError, match='unknown skeleton'):
        detect_skeleton(parse_bvh(TINY, source='tiny.bvh'))


def test_resample_picks_frames_or_interpolates():
    _, motion = retargeted(FILES[0])
    half = resample(motion, motion.fps / 2)
    np.testing.assert_allclose(half.rotmats[:50], motion.rotmats[:100:2])
    assert half.fps == pytest.approx(motion.fps / 2)
    odd = resample(motion, 12.0)
    # Frame k sits at k / 12 s: 2.5 source frames apart, between its two neighbours.
    assert odd.num_frames == int((motion.num_frames - 1) / motion.fps * 12.0 + 1e-9) + 1
    mid = odd.pelvis_m[1]
    np.testing.assert_allclose(mid, 0.5 * (motion.pelvis_m[2] + motion.pelvis_m[3]),
                               atol=1e-4)
    np.testing.assert_allclose(np.linalg.det(odd.rotmats), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match='fps'):
        resample(motion, 1000.0)
