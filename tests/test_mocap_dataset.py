"""Virtual-camera datasets from BVH: schema, reprojection, camera-frame pose, time split."""

import functools

import numpy as np
import pytest
from test_bvh import mocap_file
import torch

from scorehmr_ros.body.kinematics import JointsOnlyBody
from scorehmr_ros.body.layouts import get_layout
from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.cli import main
from scorehmr_ros.mocap.dataset import make_mocap_set, MocapSetSpec

FILES = ('bvhtools_test.bvh', 'bvhtools_test3.bvh')
SPEC = MocapSetSpec(views=2, max_frames=300, gap_s=0.5, layout='body25')

TRAIN_KEYS = {
    'pose_rotmat': (24, 3, 3), 'betas': (10,), 'cam_t': (3,), 'keypoints_2d': (25, 3),
    'focal_px': (2,), 'center_px': (2,), 'image_size': (2,), 'joints_3d': (24, 3),
    'sequence_id': (), 'frame_index': (), 'view_id': ()}
EVAL_KEYS = {
    'gt_joints_3d': (24, 3), 'gt_rotmats': (24, 3, 3), 'gt_betas': (10,),
    'init_rotmats': (24, 3, 3), 'init_betas': (10,), 'init_cam_t': (3,),
    'keypoints_2d': (25, 3), 'focal_px': (2,), 'center_px': (2,), 'image_size': (2,),
    'sequence_id': (), 'frame_index': (), 'view_id': (), 'world_to_camera': (4, 4)}
SCALARS = {'keypoint_layout', 'fps', 'source', 'licence'}


@functools.lru_cache(maxsize=None)
def generated():
    torch.set_num_threads(1)
    paths = [str(mocap_file(name)) for name in FILES]
    return make_mocap_set(paths, SPEC, seed=3, licence='MIT (test)')


def test_schema_shapes_dtypes_and_finiteness():
    result = generated()
    for arrays, keys, extra in ((result.train, TRAIN_KEYS, set()),
                                (result.eval, EVAL_KEYS, {'joint_set'})):
        assert set(arrays) == set(keys) | SCALARS | extra
        n = len(arrays['sequence_id'])
        assert n > 100
        for key, shape in keys.items():
            assert arrays[key].shape == (n,) + shape, key
            kind = np.int64 if key in ('sequence_id', 'frame_index', 'view_id') else np.float32
            assert arrays[key].dtype == kind, key
            assert np.isfinite(arrays[key]).all(), key
        assert arrays['keypoint_layout'].shape == () and str(arrays['keypoint_layout']) == \
            'body25'
        assert arrays['fps'].dtype == np.float32 and float(arrays['fps']) == 15.0
        assert str(arrays['licence']) == 'MIT (test)' and 'bvhtools_test3' in str(
            arrays['source'])
    assert str(result.eval['joint_set']) == 'smpl24'
    rot = result.train['pose_rotmat'].astype(np.float64)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-5)


@pytest.mark.parametrize('split', ['train', 'eval'])
def test_projected_joints_match_keypoints_within_noise(split):
    arrays = getattr(generated(), split)
    joints = arrays['joints_3d' if split == 'train' else 'gt_joints_3d'].astype(np.float64)
    layout = get_layout('body25')
    # BODY_25 entries that are SMPL joints (the others are vertex keypoints).
    pairs = [(k, i) for k, i in enumerate(layout.indices) if i < 24]
    kp = arrays['keypoints_2d'][:, [k for k, _ in pairs]].astype(np.float64)
    pts = joints[:, [i for _, i in pairs]]
    pixels = arrays['focal_px'][:, None] * pts[..., :2] / pts[..., 2:3] \
        + arrays['center_px'][:, None]
    seen = kp[..., 2] > 0
    error = np.linalg.norm(pixels - kp[..., :2], axis=-1)[seen]
    assert 0.5 < np.sqrt(np.mean(error ** 2) / 2) < 5.0     # sigma drawn from 2..5 px
    assert error.max() < 6 * 5.0 * 1.5
    assert 0.05 < 1 - seen.mean() < 0.15                     # 10 % dropped
    conf = kp[..., 2][seen]
    assert conf.min() > 0.3 and conf.max() <= 1.0
    height, width = arrays['image_size'][0]
    assert (kp[..., 0] > 0).all() and (kp[..., 0] < width).all()
    assert (kp[..., 1] > 0).all() and (kp[..., 1] < height).all()


def test_pose_and_cam_t_reproduce_the_camera_frame_joints():
    arrays = generated().train
    body = JointsOnlyBody(BodyModel.from_config(None, dtype=torch.float64))
    rows = np.arange(0, len(arrays['cam_t']), 37)
    rot = torch.from_numpy(arrays['pose_rotmat'][rows].astype(np.float64))
    rest = body.rest(torch.from_numpy(arrays['betas'][rows].astype(np.float64)))
    with torch.no_grad():
        joints = body(rot, rest)[:, :24].numpy()
    np.testing.assert_allclose(joints + arrays['cam_t'][rows, None], arrays['joints_3d'][rows],
                               atol=2e-4)
    assert (arrays['joints_3d'][..., 2] > 1.5).all()


def test_views_of_one_frame_agree_in_the_world():
    arrays = generated().eval
    world_to_camera = arrays['world_to_camera'].astype(np.float64)
    cam_to_world = np.linalg.inv(world_to_camera)
    joints = arrays['gt_joints_3d'].astype(np.float64)
    world = joints @ np.swapaxes(cam_to_world[:, :3, :3], -1, -2) + cam_to_world[:, None, :3, 3]
    keys = arrays['sequence_id'] * 100000 + arrays['frame_index']
    for key in np.unique(keys)[::25]:
        rows = np.nonzero(keys == key)[0]
        assert len(rows) == SPEC.views and len(set(arrays['view_id'][rows])) == SPEC.views
        np.testing.assert_allclose(world[rows], np.broadcast_to(world[rows[0]],
                                                                world[rows].shape), atol=1e-4)
    # The views are different cameras.
    assert not np.allclose(world_to_camera[0], world_to_camera[1])


def test_split_by_time_with_a_gap_and_a_perturbed_start():
    result = generated()
    gap = int(round(SPEC.gap_s * SPEC.fps))
    for sequence in (0, 1):
        train = result.train['frame_index'][result.train['sequence_id'] == sequence]
        held = result.eval['frame_index'][result.eval['sequence_id'] == sequence]
        assert held.min() >= train.max() + 1 + gap
        total = held.max() + 1
        assert len(np.unique(held)) == int(np.ceil(0.2 * total))
    evaluation = result.eval
    rel = np.swapaxes(evaluation['gt_rotmats'], -1, -2) @ evaluation['init_rotmats']
    angle = np.arccos(np.clip((np.trace(rel, axis1=-2, axis2=-1) - 1) / 2, -1, 1))
    # Per-joint axis-angle noise of 0.15 rad (root 0.1): mean angle sigma * sqrt(8 / pi).
    assert np.mean(angle[:, 1:]) == pytest.approx(0.15 * np.sqrt(8 / np.pi), rel=0.1)
    assert np.mean(angle[:, 0]) == pytest.approx(0.10 * np.sqrt(8 / np.pi), rel=0.15)
    # The true cam_t is the camera-frame pelvis minus the rest pelvis (the root turns
    # about it); the start's error is larger in depth.
    rest_pelvis = BodyModel.from_config(None, dtype=torch.float64).rest_joints(
        torch.zeros(1, 10, dtype=torch.float64))[0, 0].numpy()
    error = evaluation['init_cam_t'] - (evaluation['gt_joints_3d'][:, 0] - rest_pelvis)
    np.testing.assert_allclose(error.std(axis=0), [0.05, 0.05, 0.2], rtol=0.15)


def test_cli_writes_both_files_and_is_deterministic(tmp_path):
    bvh = str(mocap_file(FILES[1]))
    args = ['make-mocap-set', bvh, '--views', '2', '--max-frames', '120', '--seed', '5']
    assert main(args + ['--out', str(tmp_path / 'a')]) == 0
    assert main(args + ['--out', str(tmp_path / 'b')]) == 0
    for name in ('train.npz', 'eval.npz'):
        with np.load(tmp_path / 'a' / name) as first, np.load(tmp_path / 'b' / name) as second:
            assert first.files == second.files
            for key in first.files:
                np.testing.assert_array_equal(first[key], second[key])
    with np.load(tmp_path / 'a' / 'train.npz') as data:
        assert 'MIT' in str(data['licence'])   # from LICENSE.bvhtools beside the files
        assert str(data['keypoint_layout']) == 'coco17'


def test_cli_reports_a_bad_file(tmp_path):
    bad = tmp_path / 'bad.bvh'
    bad.write_text('HIERARCHY\nROOT x\n{\nOFFSET 0 0\n}\nMOTION\nFrames: 1\nFrame Time: 1\n')
    assert main(['make-mocap-set', str(bad), '--out', str(tmp_path / 'out')]) == 2
    assert not (tmp_path / 'out' / 'train.npz').exists()
