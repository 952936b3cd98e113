"""
The embedded default in the demos: keypoint layouts of the generated data, and part 1.

Part 2 (the node on the synthetic bag) is checked end to end in tests/test_bag_replay.py.
"""

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from scorehmr_ros import bag_io
from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.body.rotations import axis_angle_to_matrix
from scorehmr_ros.config import RefinerConfig
from scorehmr_ros.demo import embedded_default, run_demo
from scorehmr_ros.guidance.camera import perspective_project
from scorehmr_ros.mocap.bvh import read_bvh
from scorehmr_ros.mocap.dataset import MocapSetSpec
from scorehmr_ros.mocap.heldout import (
    HELDOUT_FILE, heldout_poses, load_heldout_poses, sample_body_sequences)
from scorehmr_ros.scene import make_scene, SceneSpec
from scorehmr_ros.synthetic_stream import frame_observations, make_stream

FAST = {'sampler': {'tau': 6, 'ddim_step': 2, 'outer_iters': 1}}
MOCAP_DIR = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'mocap'
CLIPS = ('bvhtools_test.bvh', 'bvhtools_test3.bvh')


def test_scene_keypoints_follow_the_layout():
    body = BodyModel.from_config(None)
    spec = SceneSpec(num_people=2, cond_dim=8, keypoint_layout='coco17', dropout=0.0)
    scene = make_scene(body, spec, seed=1)
    obs = scene.obs
    assert obs.keypoint_layout == 'coco17' and obs.keypoints_2d.shape == (2, 17, 3)
    with torch.no_grad():
        kp3d = body.keypoints(body(scene.gt_rotmats, scene.gt_betas), 'coco17')
    expected = perspective_project(kp3d, scene.gt_cam_t, obs.focal_px, obs.center_px)
    # The observed keypoints are the true COCO-17 ones plus 2 px noise (not BODY_25's).
    err = (obs.keypoints_2d[..., :2] - expected).abs()
    assert float(err.max()) < 6 * spec.keypoint_noise_px
    default = make_scene(body, SceneSpec(num_people=2, cond_dim=8), seed=1).obs
    assert default.keypoint_layout == 'body25' and default.keypoints_2d.shape == (2, 25, 3)


def test_stream_and_bag_carry_the_layout_and_no_features(tmp_path):
    body = BodyModel.from_config(None)
    frames = make_stream(body, ('cam0', 'cam1'), num_people=2, num_frames=1,
                         keypoint_layout='coco17')
    view = frames[0].views[0]
    assert view.keypoints.shape == (2, 17, 3) and view.keypoint_layout == 'coco17'
    assert view.body_model == body.name
    obs = frame_observations(frames[0], cond_dim=4)
    assert obs.keypoint_layout == 'coco17' and obs.keypoints_2d.shape == (4, 17, 3)
    records = bag_io.write_synthetic_bag(tmp_path / 'bag', frames=frames, features_dim=0)
    people = [p for r in bag_io.read_bag(tmp_path / 'bag') if r.msgtype == bag_io.DETECTIONS
              for p in r.message.people]
    assert len(records) > 0 and len(people) == 4  # 2 people x 2 cameras
    assert all(p.keypoint_layout == 'coco17' and len(p.keypoint_confidence) == 17
               and len(p.features) == 0 for p in people)
    body25 = make_stream(body, ('cam0',), num_people=1, num_frames=1)[0].views[0]
    assert body25.keypoint_layout == 'body25' and body25.keypoints.shape == (1, 25, 3)


def test_demo_part1_runs_the_embedded_default_and_says_so(tmp_path):
    config = embedded_default(RefinerConfig().replace(**FAST))
    assert config.model.checkpoint == 'builtin:mocap_prior_coco17'
    out = io.StringIO()
    assert run_demo(config, num_people=1, seed=0, output_dir=str(tmp_path), out=out) == 0
    text = out.getvalue()
    assert 'keypoints  : coco17' in text and 'builtin:mocap_prior_coco17' in text, text
    assert 'poses      : held-out motion capture' in text, text
    assert "not the paper's accuracy" in text and 'model-100.pt' in text, text
    saved = np.load(tmp_path / 'scene.npz')
    assert saved['keypoints_2d'].shape == (1, 17, 3)


def test_demo_part1_keeps_the_users_checkpoint_choice(tmp_path):
    # model.checkpoint: '' (set by the user) keeps random weights and the paper's BODY_25.
    config = embedded_default(RefinerConfig().replace(model={'checkpoint': ''}, **FAST))
    out = io.StringIO()
    assert run_demo(config, num_people=1, seed=0, output_dir=str(tmp_path), out=out) == 0
    text = out.getvalue()
    assert 'keypoints  : body25' in text and 'RANDOM denoiser weights' in text, text
    assert 'random denoiser weights test the plumbing only' in text, text


def test_shipped_heldout_poses_load_and_are_plausible():
    poses = load_heldout_poses()
    assert HELDOUT_FILE.stat().st_size < 200_000 and 100 <= len(poses) <= 1000
    assert (HELDOUT_FILE.parent / 'LICENSE.bvhtools').read_text().startswith('MIT License')
    aa = poses.body_pose_aa
    assert aa.shape == (len(poses), 23, 3) and np.isfinite(aa).all()
    angles = np.linalg.norm(aa, axis=-1)
    # Human joints, not noise: under 180 deg everywhere, the hands (22, 23) never moved.
    assert angles.max() < np.pi and (angles[:, 21:] == 0).all()
    assert poses.clips == CLIPS and [n for _, n in poses.runs()] == [
        int((poses.clip_id == c).sum()) for c in range(2)]
    with np.load(HELDOUT_FILE) as data:
        assert 'MIT' in str(data['licence']) and 'anny' in str(data['body'])


def test_heldout_poses_are_the_frames_the_prior_did_not_train_on():
    paths = [MOCAP_DIR / name for name in CLIPS]
    if not all(p.is_file() for p in paths):
        pytest.skip(f'{MOCAP_DIR} is absent (the shared mocap data lives in <repo>/../shared)')
    if importlib.util.find_spec('anny') is None:
        pytest.skip('anny is not installed (the shipped poses are retargeted to its body)')
    body = BodyModel.from_config('anny', dtype=torch.float64)
    fresh = heldout_poses([str(p) for p in paths], MocapSetSpec(), body=body)
    shipped = load_heldout_poses()
    np.testing.assert_array_equal(fresh['clip_id'], shipped.clip_id)
    np.testing.assert_array_equal(fresh['frame_index'], shipped.frame_index)
    # float16 storage: about 1e-3 rad at the largest angles.
    np.testing.assert_allclose(fresh['body_pose_aa'].astype(np.float64),
                               shipped.body_pose_aa, atol=2e-3)
    # Independently of split_frames: the last 20 % of each clip at 15 fps, one frame in 2;
    # the training part (before a 15-frame gap) ends before the first of them.
    for clip, path in enumerate(paths):
        bvh = read_bvh(str(path))
        count = int(np.floor((bvh.num_frames - 1) / bvh.fps * 15.0 + 1e-9)) + 1
        n_eval = int(np.ceil(0.2 * count))
        expected = np.arange(count - n_eval, count, 2)
        np.testing.assert_array_equal(shipped.frame_index[shipped.clip_id == clip], expected)


def test_heldout_scene_and_stream_use_the_shipped_poses():
    body = BodyModel.from_config(None)
    poses = load_heldout_poses()
    table = axis_angle_to_matrix(torch.from_numpy(poses.body_pose_aa)).float()
    spec = SceneSpec(num_people=3, cond_dim=4, keypoint_layout='coco17', pose_source='heldout')
    scene = make_scene(body, spec, seed=2)
    for person in range(3):
        # Each person's body joints are one shipped frame (the root is drawn as before).
        dist = (table - scene.gt_rotmats[person, 1:]).abs().flatten(1).max(dim=1).values
        assert float(dist.min()) < 1e-5
    random = make_scene(body, SceneSpec(num_people=3, cond_dim=4), seed=2)
    dist = (table[:, None] - random.gt_rotmats[None, :, 1:]).abs().flatten(2).amax(-1)
    assert float(dist.min()) > 1e-2
    with pytest.raises(ValueError, match='pose_source'):
        SceneSpec(pose_source='mocap')

    # The stream: smooth real motion, the same file's frames at the stream's rate.
    fps = 10.0
    frames = make_stream(body, ('cam0',), num_people=2, num_frames=4, fps=fps, seed=1,
                         keypoint_layout='coco17', pose_source='heldout')
    aa = np.stack([f.views[0].gt_pose_aa.reshape(2, 24, 3)[:, 1:] for f in frames])
    seq = sample_body_sequences(poses, 2, 4, fps, torch.Generator().manual_seed(1 + 2))
    np.testing.assert_allclose(axis_angle_to_matrix(torch.from_numpy(aa)).numpy(), seq.numpy(),
                               atol=1e-6)
    assert not np.allclose(aa[0], aa[-1], atol=1e-2)       # it moves ...
    step = np.abs(np.diff(seq.numpy(), axis=0)).max()
    assert step < 0.5                                       # ... smoothly at 10 fps
    with pytest.raises(ValueError, match='pose_motion_rad'):
        make_stream(body, ('cam0',), num_frames=2, pose_source='heldout', pose_motion_rad=0.1)
