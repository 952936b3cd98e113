"""
The embedded default in the demos: keypoint layouts of the generated data, and part 1.

Part 2 (the node on the synthetic bag) is checked end to end in tests/test_bag_replay.py.
"""

import io

import numpy as np
import torch

from scorehmr_ros import bag_io
from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.config import RefinerConfig
from scorehmr_ros.demo import embedded_default, run_demo
from scorehmr_ros.guidance.camera import perspective_project
from scorehmr_ros.scene import make_scene, SceneSpec
from scorehmr_ros.synthetic_stream import frame_observations, make_stream

FAST = {'sampler': {'tau': 6, 'ddim_step': 2, 'outer_iters': 1}}


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
