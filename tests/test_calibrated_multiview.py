"""Calibrated multi-view refinement: properties derived from the geometry and the loss."""

import dataclasses
import logging

import pytest
import torch

from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.body.rotations import axis_angle_to_matrix
from scorehmr_ros.config import load_config, RefinerConfig
from scorehmr_ros.diffusion.denoiser import Denoiser, DenoiserConfig
from scorehmr_ros.guidance import calibrated
from scorehmr_ros.guidance.losses import keypoint_reprojection_loss
from scorehmr_ros.observations import ObservationError
from scorehmr_ros.refiner import Refiner
from scorehmr_ros.synthetic_stream import frame_observations, make_stream

COND = 16
CAMERAS = ('cam0', 'cam1', 'cam2')


@pytest.fixture(scope='module')
def body():
    return BodyModel.from_config(None)


@pytest.fixture(scope='module')
def frame(body):
    return make_stream(body, cameras=CAMERAS, num_people=2, num_frames=1, image_hw=(480, 640),
                       focal_px=600.0, keypoint_noise_px=1.0)[0]


def make_refiner(body, outer_iters=2, **guidance):
    guide = {'multiview': True, 'multiview_mode': 'calibrated'}
    guide.update(guidance)
    cfg = RefinerConfig().replace(
        sampler={'tau': 20, 'ddim_step': 5, 'outer_iters': outer_iters,
                 'early_stopping': 'none'}, guidance=guide)
    torch.manual_seed(0)
    return Refiner(cfg, denoiser=Denoiser(DenoiserConfig(cond_dim=COND, hidden_dim=32)),
                   body=body)


def rows(obs, idx):
    return dataclasses.replace(obs, **{
        name: value[idx] for name, value in vars(obs).items()
        if isinstance(value, torch.Tensor)})


def test_true_body_reprojects_onto_every_view(body, frame):
    # Noise-free keypoints of the true body: the group loss of the truth is ~0 in all views.
    clean = make_stream(body, cameras=CAMERAS, num_people=2, num_frames=1,
                        image_hw=(480, 640), focal_px=600.0, keypoint_noise_px=0.0)[0]
    obs = frame_observations(clean, COND)
    groups = calibrated.build_groups(obs.view_group, obs.world_to_camera,
                                     obs.keypoints_2d[..., 2])
    anchor_views = [int(a) % 3 for a in groups.anchor_row]
    gt_rot = torch.stack([axis_angle_to_matrix(torch.from_numpy(
        clean.views[v].gt_pose_aa[p]).reshape(24, 3)) for p, v in enumerate(anchor_views)])
    gt_t = torch.stack([torch.from_numpy(clean.views[v].gt_cam_t[p])
                        for p, v in enumerate(anchor_views)])
    joints = body.keypoints(body(gt_rot.float(), obs.init_betas[groups.anchor_row]), 'body25')
    _, row_loss = calibrated.multiview_keypoint_loss(
        joints, gt_t.float(), groups.row_group, groups.rel_rot, groups.rel_t,
        obs.keypoints_2d[..., :2], obs.keypoints_2d[..., 2], obs.focal_px, obs.center_px,
        obs.image_size, 100.0)
    assert row_loss.max() < 1e-4
    # The same body with a 5 cm error in the anchor frame is wrong in every view.
    _, off = calibrated.multiview_keypoint_loss(
        joints, gt_t.float() + torch.tensor([0.05, 0.0, 0.0]), groups.row_group,
        groups.rel_rot, groups.rel_t, obs.keypoints_2d[..., :2], obs.keypoints_2d[..., 2],
        obs.focal_px, obs.center_px, obs.image_size, 100.0)
    assert (off > 100 * row_loss.max() + 1.0).all()


def test_same_camera_twice_equals_single_view(body, frame):
    obs = frame_observations(frame, COND, views=[0], people=[0])
    twice = frame_observations(frame, COND, views=[0, 0], people=[0])
    joints = body.keypoints(body(obs.init_rotmats, obs.init_betas), 'body25')
    single = keypoint_reprojection_loss(joints, obs.init_cam_t, obs.keypoints_2d[..., :2],
                                        obs.keypoints_2d[..., 2], obs.focal_px, obs.center_px,
                                        obs.image_size)
    groups = calibrated.build_groups(twice.view_group, twice.world_to_camera,
                                     twice.keypoints_2d[..., 2])
    args = (joints, obs.init_cam_t, groups.row_group, groups.rel_rot, groups.rel_t,
            twice.keypoints_2d[..., :2], twice.keypoints_2d[..., 2], twice.focal_px,
            twice.center_px, twice.image_size, 100.0)
    summed, _ = calibrated.multiview_keypoint_loss(*args, view_mean=False)
    mean, _ = calibrated.multiview_keypoint_loss(*args, view_mean=True)
    assert torch.allclose(summed, 2 * single, rtol=1e-6)
    assert torch.allclose(mean, single, rtol=1e-6)
    # End to end: with the mean, a duplicated view refines exactly like the single view.
    refiner = make_refiner(body)
    one = refiner.refine(obs)
    two = refiner.refine(twice)
    assert torch.allclose(two.rotmats[0], one.rotmats[0], atol=1e-5)
    assert torch.allclose(two.rotmats[1], one.rotmats[0], atol=1e-5)
    assert torch.allclose(two.cam_t[0], one.cam_t[0], atol=1e-6)


def test_rigid_motion_of_the_world_changes_nothing_in_the_cameras(body, frame):
    obs = frame_observations(frame, COND)
    motion = torch.eye(4, dtype=torch.float64)
    motion[:3, :3] = axis_angle_to_matrix(torch.tensor([0.3, -1.1, 0.4], dtype=torch.float64))
    motion[:3, 3] = torch.tensor([2.0, -0.5, 7.0], dtype=torch.float64)
    moved = dataclasses.replace(obs, world_to_camera=(
        obs.world_to_camera.double() @ torch.linalg.inv(motion)).float())
    refiner = make_refiner(body)
    a, b = refiner.refine(obs), refiner.refine(moved)
    assert torch.allclose(a.rotmats, b.rotmats, atol=1e-4)
    assert torch.allclose(a.cam_t, b.cam_t, atol=1e-4)
    # World outputs move with the world: pelvis_new = M pelvis_old.
    pel_a, pel_b = a.groups.world_pelvis[:, 0].double(), b.groups.world_pelvis[:, 0].double()
    assert torch.allclose(pel_b, pel_a @ motion[:3, :3].T + motion[:3, 3], atol=1e-4)
    root_b = b.groups.world_rotmats[:, 0, 0].double()
    assert torch.allclose(root_b, motion[:3, :3] @ a.groups.world_rotmats[:, 0, 0].double(),
                          atol=1e-4)


def test_every_view_of_a_group_gets_the_same_body(body, frame):
    obs = frame_observations(frame, COND)
    result = make_refiner(body).refine(obs)
    groups = result.groups
    assert groups.row_group.tolist() == [0, 0, 0, 1, 1, 1]
    assert groups.calibrated.all() and groups.num_views.tolist() == [3, 3]
    w2c = obs.world_to_camera.double()
    rest = body.rest_joints(result.betas[:, 0])[:, 0].double()
    for row in range(obs.batch_size):
        g = int(groups.row_group[row])
        # The row's root in its camera equals the world root seen from that camera ...
        assert torch.allclose(result.rotmats[row, 0, 0].double(),
                              w2c[row, :3, :3] @ groups.world_rotmats[g, 0, 0].double(),
                              atol=1e-4)
        # ... and so does its pelvis; body joints are shared by all views.
        pelvis_cam = w2c[row, :3, :3] @ groups.world_pelvis[g, 0].double() + w2c[row, :3, 3]
        assert torch.allclose(rest[row] + result.cam_t[row, 0].double(), pelvis_cam, atol=1e-4)
        assert torch.allclose(result.rotmats[row, 0, 1:], result.rotmats[3 * g, 0, 1:],
                              atol=1e-6)


def test_calibrated_views_fix_depth_better_than_one_view(body):
    # Depth is what one view cannot see: a 0.3 m std depth error of the start, true
    # extrinsics; compare the pelvis error in camera 0 after refinement.
    frames = make_stream(body, cameras=CAMERAS, num_people=3, num_frames=1, seed=3,
                         image_hw=(480, 640), focal_px=600.0, keypoint_noise_px=1.0)
    obs = frame_observations(frames[0], COND)
    gt_t = torch.from_numpy(frames[0].views[0].gt_cam_t).float()
    single = make_refiner(body, outer_iters=4, multiview=False).refine(
        rows(obs, [0, 3, 6]))
    fused = make_refiner(body, outer_iters=4).refine(obs)
    err_single = (single.cam_t[:, 0] - gt_t).norm(dim=-1).mean()
    err_fused = (fused.cam_t[[0, 3, 6], 0] - gt_t).norm(dim=-1).mean()
    err_start = (obs.init_cam_t[[0, 3, 6]] - gt_t).norm(dim=-1).mean()
    assert err_fused < 0.5 * err_single, (err_start, err_single, err_fused)


def test_view_without_confident_keypoints_changes_nothing(body, frame):
    obs = frame_observations(frame, COND, views=[0, 1], people=[0])
    refiner = make_refiner(body, calibrated_init='anchor')
    alone = refiner.refine(rows(obs, [0]))
    blind = dataclasses.replace(obs, keypoints_2d=obs.keypoints_2d.clone())
    blind.keypoints_2d[1, :, 2] = 0.0
    both = refiner.refine(blind)
    assert torch.equal(both.rotmats[0], alone.rotmats[0])
    assert torch.equal(both.cam_t[0], alone.cam_t[0])
    assert both.groups.num_views.tolist() == [1] and both.refined.all()
    # The blind view still gets the body, expressed in its camera.
    assert torch.isfinite(both.cam_t[1]).all()


def test_group_with_no_confident_keypoint_returns_its_start(body, frame, caplog):
    obs = frame_observations(frame, COND, people=[0])
    obs.keypoints_2d[:, :, 2] = 0.0
    with caplog.at_level(logging.WARNING):
        result = make_refiner(body, calibrated_init='anchor').refine(obs)
    assert not result.refined.any()
    anchor = int(result.groups.anchor_row[0])
    assert torch.allclose(result.rotmats[anchor, 0], obs.init_rotmats[anchor], atol=1e-5)
    assert torch.equal(result.cam_t[anchor, 0], obs.init_cam_t[anchor])


def test_missing_extrinsics_split_the_view_off(body, frame, caplog):
    obs = frame_observations(frame, COND, people=[0])
    obs.world_to_camera[2] = float('nan')
    with caplog.at_level(logging.WARNING):
        result = make_refiner(body).refine(obs)
    assert result.groups.row_group.tolist() == [0, 0, 1]
    assert result.groups.calibrated.tolist() == [True, False]
    assert torch.isnan(result.groups.world_t[1]).all()
    assert torch.isfinite(result.rotmats).all() and result.refined.all()
    assert any('without valid camera extrinsics' in r.getMessage() for r in caplog.records)


def test_no_extrinsics_falls_back_to_consistency_with_one_log_line(body, frame, caplog):
    obs = dataclasses.replace(frame_observations(frame, COND), world_to_camera=None)
    refiner = make_refiner(body, outer_iters=1)
    with caplog.at_level(logging.WARNING):
        first = refiner.refine(obs)
        refiner.refine(obs)
    lines = [r for r in caplog.records if 'using the consistency loss' in r.getMessage()]
    assert len(lines) == 1 and first.groups is None
    consistency = make_refiner(body, outer_iters=1, multiview_mode='consistency').refine(obs)
    assert torch.equal(first.x0, consistency.x0)


def test_bad_extrinsics_and_config_are_rejected(body, frame):
    obs = frame_observations(frame, COND, people=[0])
    obs.world_to_camera[1, :3, :3] *= 2.0
    with pytest.raises(ObservationError, match='world_to_camera: each finite row'):
        make_refiner(body).refine(obs)
    with pytest.raises(ValueError, match='needs guidance.keypoints'):
        RefinerConfig().replace(guidance={'multiview': True, 'multiview_mode': 'calibrated',
                                          'keypoints': False})
    with pytest.raises(ValueError, match='multiview_mode must be one of'):
        RefinerConfig().replace(guidance={'multiview_mode': 'triangulated'})


def test_shipped_config_is_the_multiview_setting():
    cfg = load_config('config/multiview_calibrated.yaml')
    assert (cfg.sampler.tau, cfg.sampler.ddim_step) == (100, 10)
    assert cfg.guidance.multiview and cfg.guidance.multiview_mode == 'calibrated'
    assert RefinerConfig().guidance.multiview_mode == 'consistency'
