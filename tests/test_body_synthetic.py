"""Tests of the synthetic SMPL-format body in scorehmr_ros.body.synthetic."""

import time

import numpy as np
import pytest

from scorehmr_ros.body.layouts import SMPL_JOINT_NAMES, SMPL_PARENTS, SMPLX_VERTEX_JOINT_IDS
from scorehmr_ros.body.smpl_file import load_smpl_arrays
from scorehmr_ros.body.synthetic import (
    make_synthetic_smpl, REST_JOINTS, synthetic_smpl_path, SYNTHETIC_SOURCE)

J = {name: i for i, name in enumerate(SMPL_JOINT_NAMES)}


@pytest.fixture(scope='module')
def body():
    return make_synthetic_smpl()


def kp(body, name):
    return body.v_template[SMPLX_VERTEX_JOINT_IDS[name]]


def test_sizes_and_flags(body):
    assert body.v_template.shape == (6890, 3)
    assert body.shapedirs.shape == (6890, 3, 10)
    assert body.posedirs.shape == (6890, 3, 207)
    assert body.J_regressor.shape == (24, 6890)
    assert body.weights.shape == (6890, 24)
    assert body.kintree_table.tolist() == [SMPL_PARENTS, list(range(24))]
    assert body.f.ndim == 2 and body.f.shape[1] == 3
    assert body.is_synthetic
    assert body.source == SYNTHETIC_SOURCE
    assert body.J_regressor_extra is None


def test_faces_form_closed_oriented_surfaces(body):
    faces = body.f
    assert faces.min() == 0 and faces.max() == 6889
    assert len(np.unique(faces)) == 6890          # every vertex is on the surface
    # Closed and consistently oriented: each directed edge occurs exactly once and its
    # reverse exactly once.
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    directed = {tuple(e) for e in edges.tolist()}
    assert len(directed) == len(edges)
    assert all((b, a) in directed for a, b in directed)
    # Outward orientation: positive total signed volume, roughly a human's (~0.07 m^3).
    v = body.v_template
    volume = np.einsum('ij,ij->', v[faces[:, 0]],
                       np.cross(v[faces[:, 1]], v[faces[:, 2]])) / 6.0
    assert 0.04 < volume < 0.15


def test_j_regressor_reproduces_rest_joints(body):
    reg = body.J_regressor
    assert reg.min() >= 0.0
    np.testing.assert_allclose(reg.sum(axis=1), 1.0, atol=1e-12)
    joints = reg @ body.v_template
    assert np.abs(joints - REST_JOINTS).max() < 0.01
    # Each joint is regressed from vertices around it, not from far-away ones.
    for j in range(24):
        used = body.v_template[reg[j] > 0]
        assert np.linalg.norm(used - REST_JOINTS[j], axis=1).max() < 0.2, SMPL_JOINT_NAMES[j]


def test_skinning_weights(body):
    w = body.weights
    assert w.min() >= 0.0
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    # Every joint drives some vertices on its own.
    assert (w.max(axis=0) > 0.5).all()
    # Blending: vertices near the left elbow mix upper arm (shoulder) and forearm (elbow).
    near = np.linalg.norm(body.v_template - REST_JOINTS[J['left_elbow']], axis=1) < 0.05
    assert (w[near][:, J['left_shoulder']] > 0.1).any()
    assert (w[near][:, J['left_elbow']] > 0.1).any()
    # Vertices far down the left forearm never follow the right side.
    left = body.v_template[:, 0] > 0.3
    right_joints = [j for j, n in enumerate(SMPL_JOINT_NAMES) if n.startswith('right_')]
    assert w[left][:, right_joints].max() == 0.0


def test_rest_pose_conventions(body):
    v = body.v_template
    height = v[:, 1].max() - v[:, 1].min()
    assert 1.5 < height < 1.9
    assert 0.45 < v[:, 1].max() < 0.6             # head top
    assert -1.25 < v[:, 1].min() < -1.1           # soles
    np.testing.assert_allclose(REST_JOINTS[0], [0.0, -0.22, 0.03], atol=0.02)
    # T-pose: wrists at shoulder height, far out on x; left on +x.
    for side, sign in (('left', 1.0), ('right', -1.0)):
        wrist = REST_JOINTS[J[side + '_wrist']]
        assert sign * wrist[0] > 0.5
        assert abs(wrist[1] - REST_JOINTS[J[side + '_shoulder']][1]) < 0.05
    arm_span = v[:, 0].max() - v[:, 0].min()
    assert 1.4 < arm_span < 1.9
    # Parents are above their children along the legs, below along the spine.
    for child, parent in (('left_knee', 'left_hip'), ('left_ankle', 'left_knee')):
        assert REST_JOINTS[J[child]][1] < REST_JOINTS[J[parent]][1]
    for child, parent in (('spine1', 'pelvis'), ('neck', 'spine3'), ('head', 'neck')):
        assert REST_JOINTS[J[child]][1] > REST_JOINTS[J[parent]][1]


def test_face_keypoints(body):
    head, neck = REST_JOINTS[J['head']], REST_JOINTS[J['neck']]
    nose = kp(body, 'nose')
    assert nose[2] > head[2] + 0.05               # on the front of the face (+z)
    assert nose[1] > neck[1]
    assert abs(nose[0]) < 0.01
    for side, sign in (('left', 1.0), ('right', -1.0)):
        eye, ear = kp(body, side + '_eye'), kp(body, side + '_ear')
        assert sign * eye[0] > 0.015 and sign * ear[0] > sign * eye[0]
        assert eye[1] > nose[1] and eye[2] > ear[2] + 0.05
        assert ear[1] > neck[1]


def test_foot_keypoints(body):
    for side, sign in (('left', 1.0), ('right', -1.0)):
        heel, big, small = (kp(body, f'{side}_{n}') for n in ('heel', 'big_toe', 'small_toe'))
        ankle = REST_JOINTS[J[side + '_ankle']]
        assert heel[2] < ankle[2] < small[2] < big[2]     # heel behind, toes in front
        assert heel[1] < ankle[1] - 0.05 and big[1] < ankle[1] - 0.04
        assert sign * big[0] < sign * small[0]            # big toe is medial
        for point in (heel, big, small):
            assert sign * point[0] > 0.04


def test_fingertip_keypoints(body):
    for side, sign in (('left', 1.0), ('right', -1.0)):
        wrist = REST_JOINTS[J[side + '_wrist']]
        tips = {n: kp(body, f'{side}_{n}') for n in ('thumb', 'index', 'middle', 'ring',
                                                     'pinky')}
        for name, tip in tips.items():
            assert sign * tip[0] > sign * wrist[0] + 0.1, name
        assert sign * tips['middle'][0] >= sign * tips['pinky'][0]
        # Palms face down in SMPL's T-pose: thumb forward (+z), pinky at the back.
        assert tips['thumb'][2] > tips['index'][2] > tips['middle'][2] > \
            tips['ring'][2] > tips['pinky'][2]


def test_shape_directions_are_smooth_and_keep_joints_sensible(body):
    dirs = body.shapedirs
    edges = np.concatenate([body.f[:, [0, 1]], body.f[:, [1, 2]]])
    for k in range(10):
        d = dirs[:, :, k]
        assert np.abs(d).max() > 0.003, k                       # does something
        assert np.abs(d).max() < 0.1, k                          # ... in metres per unit
        jump = np.linalg.norm(d[edges[:, 0]] - d[edges[:, 1]], axis=1)
        assert jump.max() < 0.02, k                              # smooth along edges
    for k in range(10):
        for beta in (-3.0, 3.0):
            shaped = body.v_template + beta * dirs[:, :, k]
            joints = body.J_regressor @ shaped
            assert np.abs(joints - REST_JOINTS).max() < 0.25
            assert joints[J['head'], 1] > joints[J['neck'], 1] > joints[J['pelvis'], 1] > \
                joints[J['left_knee'], 1] > joints[J['left_ankle'], 1]
            assert joints[J['left_wrist'], 0] > 0.4 > -0.4 > joints[J['right_wrist'], 0]
    height_change = dirs[:, 1, 0].max() - dirs[:, 1, 0].min()
    assert height_change > 0.03                                  # beta 0 changes height


def test_posedirs_are_zero(body):
    assert not body.posedirs.any()


def test_deterministic_seeded_and_fast():
    a = make_synthetic_smpl(0)                       # cached
    start = time.perf_counter()
    b = make_synthetic_smpl.__wrapped__(0)           # generated afresh
    # The target is well under 2 s (about 0.4 s here); the bound leaves room for a
    # loaded CI machine.
    assert time.perf_counter() - start < 4.0
    c = make_synthetic_smpl.__wrapped__(1)
    for name in ('v_template', 'shapedirs', 'J_regressor', 'weights', 'f'):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.v_template, c.v_template)
    assert not np.array_equal(a.shapedirs[:, :, 9], c.shapedirs[:, :, 9])
    np.testing.assert_array_equal(a.shapedirs[:, :, :9], c.shapedirs[:, :, :9])


def test_cached_and_read_only():
    a = make_synthetic_smpl()
    assert make_synthetic_smpl() is a
    with pytest.raises(ValueError):
        a.v_template[0, 0] = 1.0


def test_synthetic_smpl_path(tmp_path, body):
    path = synthetic_smpl_path(tmp_path)
    assert path.parent == tmp_path and path.suffix == '.npz'
    mtime = path.stat().st_mtime_ns
    assert synthetic_smpl_path(tmp_path) == path
    assert path.stat().st_mtime_ns == mtime      # reused, not rewritten
    loaded = load_smpl_arrays(path)
    assert loaded.is_synthetic
    np.testing.assert_array_equal(loaded.v_template, body.v_template)


def test_synthetic_smpl_path_rewrites_corrupt_cache(tmp_path):
    path = synthetic_smpl_path(tmp_path)
    path.write_bytes(b'not a zip')
    assert synthetic_smpl_path(tmp_path) == path
    assert load_smpl_arrays(path).is_synthetic
