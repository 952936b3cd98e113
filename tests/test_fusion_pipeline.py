"""FusionPipeline (no ROS): calibrated association + tracking + refinement vs ground truth."""

import dataclasses
import logging
from typing import Optional

import numpy as np
import pytest
import torch

from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.body.rotations import axis_angle_to_matrix
from scorehmr_ros.config import RefinerConfig
from scorehmr_ros.diffusion.denoiser import Denoiser, DenoiserConfig
from scorehmr_ros.fusion.calibration import (
    CalibrationSet, camera_pose, CameraCalibration, invert_transform, make_transform,
    matrix_to_quaternion_xyzw, quaternion_xyzw_to_matrix)
from scorehmr_ros.fusion.extrinsics import ExtrinsicsSource
from scorehmr_ros.fusion.online import OnlineConfig, OnlineTemporalRefiner
from scorehmr_ros.fusion.pipeline import CameraView, FUSION_COUNTERS, FusionPipeline
from scorehmr_ros.fusion.tracking import TrackerConfig
from scorehmr_ros.refiner import Refiner
from scorehmr_ros.synthetic_stream import make_stream, WORLD_FRAME

COND = 16
CAMERAS = ('cam0', 'cam1', 'cam2')


@dataclasses.dataclass
class Det:
    """The attributes of ``scorehmr_ros.ros.convert.Person`` the pipeline reads."""

    track_id: int
    keypoints: np.ndarray
    layout: str
    init_rotmats: np.ndarray
    init_betas: np.ndarray
    init_cam_t: np.ndarray
    features: Optional[np.ndarray] = None


@pytest.fixture(scope='module')
def body():
    return BodyModel.from_config(None)


@pytest.fixture(scope='module')
def stream(body):
    return make_stream(body, cameras=CAMERAS, num_people=2, num_frames=4, seed=3,
                       image_hw=(480, 640), focal_px=600.0, keypoint_noise_px=1.0)


def make_refiner(body):
    cfg = RefinerConfig().replace(
        sampler={'tau': 20, 'ddim_step': 5, 'outer_iters': 3, 'early_stopping': 'none'},
        guidance={'keypoints': True})
    torch.manual_seed(0)
    return Refiner(cfg, denoiser=Denoiser(DenoiserConfig(cond_dim=COND, hidden_dim=32)),
                   body=body)


def calibration_of(frame, cameras=CAMERAS, missing=()):
    cams = {v.camera: CameraCalibration(v.camera, v.frame_id, v.world_to_camera)
            for v in frame.views if v.camera in cameras and v.camera not in missing}
    return CalibrationSet(WORLD_FRAME, cams, {m: 'test: removed' for m in missing})


def views_of(frame, people=None, low_conf_camera=None, ids=True):
    out = []
    for view in frame.views:
        dets = []
        for p in range(len(view.track_ids)) if people is None else people:
            kp = view.keypoints[p].copy()
            if view.camera == low_conf_camera:
                kp[:, 2] = 0.05
            dets.append(Det(
                track_id=int(view.track_ids[p]) if ids else -1, keypoints=kp, layout='body25',
                init_rotmats=axis_angle_to_matrix(
                    torch.from_numpy(view.init_pose_aa[p]).reshape(24, 3)).numpy(),
                init_betas=view.init_betas[p], init_cam_t=view.init_cam_t[p]))
        out.append(CameraView(view.camera, view.k, view.image.shape[:2], dets, frame.stamp_ns))
    return out


def mpjpe_world_mm(bodies, frame):
    """Error of each fused body against the nearest true person (camera 0 = world)."""
    gt = frame.views[0].gt_joints
    errs = []
    for fused in bodies:
        dists = [np.linalg.norm(fused.joints - g, axis=-1).mean() for g in gt]
        errs.append(1000 * min(dists))
    return errs


def init_error_mm(frame, person):
    """Mean over views of the regression estimate's absolute joint error, mm."""
    return float(np.mean([1000 * np.linalg.norm(v.init_joints[person] - v.gt_joints[person],
                                                axis=-1).mean() for v in frame.views]))


def test_per_frame_fuses_calibrated_views_in_the_world_frame(body, stream):
    pipe = FusionPipeline(make_refiner(body), CAMERAS, temporal='per_frame')
    errs, init_errs, ids_seen = [], [], set()
    for frame in stream:
        result = pipe.process(views_of(frame), calibration_of(frame))
        assert result.uncalibrated == []
        assert len(result.bodies) == 2
        for fused in result.bodies:
            assert fused.cameras == CAMERAS and fused.window_frames == 1
            assert fused.joints.shape == (24, 3) and np.isfinite(fused.joints).all()
        ids_seen.update(b.track_id for b in result.bodies)
        errs += mpjpe_world_mm(result.bodies, frame)
        init_errs += [init_error_mm(frame, p) for p in range(2)]
    # Absolute (not root-aligned) error in the world frame; the starts are 0.3 m off in
    # depth per view, the prior has random weights: the calibrated views do the work.
    assert np.mean(errs) < 100 and np.mean(errs) < 0.35 * np.mean(init_errs), (errs, init_errs)
    assert ids_seen == {1, 2}  # stable ids over the frames
    assert pipe.counters['fused_bodies'] == 8
    assert pipe.counters['persons_multi_view'] == 8
    assert pipe.counters['tracks_created'] == 2
    report = pipe.track_report()
    assert [r['id'] for r in report] == ['1', '2'] and report[0]['views'] == '3'


def test_online_mode_keeps_a_window_per_track(body, stream):
    pipe = FusionPipeline(make_refiner(body), CAMERAS, temporal='online', temporal_window=3)
    windows, errs = [], []
    for frame in stream:
        result = pipe.process(views_of(frame), calibration_of(frame))
        assert len(result.bodies) == 2
        windows.append(sorted(b.window_frames for b in result.bodies))
        errs += mpjpe_world_mm(result.bodies, frame)
    assert np.mean(errs) < 100, errs
    assert windows == [[1, 1], [2, 2], [3, 3], [3, 3]]
    pipe.record_latency(1, 0.25)
    assert pipe.track_report()[0]['latency_p50_s'] == '0.2500'


def test_online_frozen_mode_with_one_warm_iteration(body, stream):
    # The node's temporal_mode / temporal_warm_iters reach OnlineConfig: frozen mode keeps
    # one row per track and frame (the window counts the frozen history), and a warm frame
    # runs one outer iteration, not the cold S_max.
    pipe = FusionPipeline(make_refiner(body), CAMERAS, temporal='online', temporal_window=3,
                          temporal_mode='frozen', warm_outer_iters=1)
    assert (pipe.online.config.mode, pipe.online.config.warm_outer_iters) == ('frozen', 1)
    errs = []
    for frame in stream:
        result = pipe.process(views_of(frame), calibration_of(frame))
        assert len(result.bodies) == 2
        errs += mpjpe_world_mm(result.bodies, frame)
    assert np.mean(errs) < 120, errs
    with pytest.raises(ValueError, match='online.mode'):
        FusionPipeline(make_refiner(body), CAMERAS, temporal='online', temporal_mode='batch')


def test_warm_up_leaves_no_trace(body, stream):
    # A warm-up on synthetic frames (the node's warmup_frames) builds the graphs, then the
    # pipeline forgets it: a warmed-up pipeline answers a real stream exactly as a fresh one
    # (same track ids, same bodies, same counters).
    from scorehmr_ros.fusion.warmup import warm_up, warm_up_refiner

    fresh = FusionPipeline(make_refiner(body), CAMERAS, temporal='online', temporal_window=3)
    warmed = FusionPipeline(make_refiner(body), CAMERAS, temporal='online', temporal_window=3)
    assert warm_up(warmed, 4) > 0
    assert warmed.tracks == {} and warmed.online.track_ids == []
    assert all(v == 0 for v in warmed.counters.values())
    for frame in stream:
        a = fresh.process(views_of(frame), calibration_of(frame)).bodies
        b = warmed.process(views_of(frame), calibration_of(frame)).bodies
        assert [x.track_id for x in a] == [x.track_id for x in b]
        for x, y in zip(a, b):
            np.testing.assert_allclose(x.joints, y.joints, atol=1e-6)
    assert fresh.counters == warmed.counters
    with pytest.raises(ValueError, match='frames must be >= 1'):
        warm_up(warmed, 0)
    # The per-camera path's warm-up: one single-view refinement.
    assert warm_up_refiner(make_refiner(body), 1) > 0


def test_node_settings_check_the_online_parameters():
    pytest.importorskip('rcl_interfaces', reason='ROS 2 message packages not importable')
    from scorehmr_ros.ros.params import NodeSettings

    settings = NodeSettings(temporal_mode='frozen', temporal_warm_iters=1)
    assert (settings.temporal_mode, settings.temporal_warm_iters) == ('frozen', 1)
    with pytest.raises(ValueError, match='temporal_mode must be one of'):
        NodeSettings(temporal_mode='batch')
    with pytest.raises(ValueError, match='temporal_warm_iters must be >= 1'):
        NodeSettings(temporal_warm_iters=0)


def test_camera_without_extrinsics_is_left_to_the_per_camera_path(body, stream, caplog):
    pipe = FusionPipeline(make_refiner(body), CAMERAS)
    with caplog.at_level(logging.WARNING):
        for frame in stream[:2]:
            result = pipe.process(views_of(frame), calibration_of(frame, missing=('cam2',)))
            assert result.uncalibrated == ['cam2']
            assert all(b.cameras == ('cam0', 'cam1') for b in result.bodies)
    assert pipe.counters['views_uncalibrated'] == 2
    # Said once, not per set.
    assert sum('cam2 has no usable extrinsics' in r.message for r in caplog.records) == 1
    result = pipe.process(views_of(stream[2]), None)
    assert result.bodies == [] and result.uncalibrated == list(CAMERAS)


def test_all_low_confidence_view_drops_out(body, stream):
    pipe = FusionPipeline(make_refiner(body), CAMERAS)
    result = pipe.process(views_of(stream[0], low_conf_camera='cam1'), calibration_of(stream[0]))
    assert pipe.counters['views_low_confidence'] == 1
    assert pipe.counters['detections_low_confidence'] == 2
    assert len(result.bodies) == 2
    assert all(b.cameras == ('cam0', 'cam2') for b in result.bodies)


def test_gap_and_upstream_id_swap_are_counted(body, stream):
    pipe = FusionPipeline(make_refiner(body), CAMERAS, temporal='online', max_gap_s=0.15)
    pipe.process(views_of(stream[0]), calibration_of(stream[0]))
    # Upstream ids exchanged between the two people: geometry keeps the tracks, the
    # upstream ids moved, which is counted (no crash).
    swapped = views_of(stream[1])
    for view in swapped:
        for det in view.people:
            det.track_id = 3 - det.track_id
    result = pipe.process(swapped, calibration_of(stream[1]))
    assert len(result.bodies) == 2
    assert pipe.counters['id_swaps'] >= 1
    # Frame 3 after frame 1: a 0.2 s gap > max_gap_s restarts the windows.
    result = pipe.process(views_of(stream[3]), calibration_of(stream[3]))
    assert pipe.counters['track_gaps'] == 2
    assert all(b.restarted and b.window_frames == 1 for b in result.bodies)
    assert set(pipe.counters) == set(FUSION_COUNTERS)


def test_bad_arguments_are_named(body):
    refiner = make_refiner(body)
    with pytest.raises(ValueError, match='temporal must be'):
        FusionPipeline(refiner, CAMERAS, temporal='offline')
    with pytest.raises(ValueError, match='temporal_window'):
        FusionPipeline(refiner, CAMERAS, temporal_window=0)
    pipe = FusionPipeline(refiner, CAMERAS)
    with pytest.raises(ValueError, match="camera 'cam9'"):
        pipe.process([CameraView('cam9', np.eye(3), (48, 64), [], 0)], None)


def test_extrinsics_source_yaml_tf_static_and_stale(stream):
    views = stream[0].views
    poses = {v.camera: camera_pose(v.world_to_camera) for v in views}
    yaml_cal = CalibrationSet(WORLD_FRAME, {'cam0': CameraCalibration(
        'cam0', 'cam0_optical', views[0].world_to_camera)})
    source = ExtrinsicsSource(WORLD_FRAME, yaml_cal, use_tf=True, max_age_s=0.5,
                              ignore_child=lambda child: child.startswith('body_'))
    frames = {v.camera: v.frame_id for v in views}
    # cam1 static, cam2 on /tf at t = 10 s; one malformed and one ignored edge.
    assert source.add_transforms([(WORLD_FRAME, 'cam1_optical', *poses['cam1'], 0.0)],
                                 static=True) == 0
    bad = [(WORLD_FRAME, 'cam2_optical', poses['cam2'][0], (0.0, 0.0, 0.0, 2.0), 10.0),
           (WORLD_FRAME, 'body_1', (0.0, 0.0, 1.0), (0.0, 0.0, 0.0, 1.0), 10.0)]
    assert source.add_transforms(bad, static=False) == 1
    assert source.num_edges == 1
    source.add_transforms([(WORLD_FRAME, 'cam2_optical', *poses['cam2'], 10.0)], static=False)
    fresh = source.calibration(frames, now_s=10.2)
    assert sorted(fresh.cameras) == list(CAMERAS) and not fresh.missing
    for view in views:
        np.testing.assert_allclose(fresh.cameras[view.camera].world_to_camera,
                                   view.world_to_camera, atol=1e-9)
    stale = source.calibration(frames, now_s=11.0)
    assert sorted(stale.cameras) == ['cam0', 'cam1'] and 'stale' in stale.missing['cam2']
    no_tf = ExtrinsicsSource(WORLD_FRAME, yaml_cal).calibration(frames, 0.0)
    assert no_tf.missing == {'cam1': 'not in calibration_file', 'cam2': 'not in calibration_file'}
    with pytest.raises(ValueError, match="world_frame is 'world' but fixed_frame is 'map'"):
        ExtrinsicsSource('map', yaml_cal)


def test_calibrated_online_default_beats_per_frame_where_the_papers_rho_does_not(body):
    # Issue 6 follow-up: with several calibrated views the window's pull toward past frames
    # (the paper's rho_temporal 30) costs more than it smooths; the online default for
    # such tracks (rho_temporal_multiview) is 3 (benchmarks/bench_online_rho.py). The
    # engine of the benchmark (fast path, full-size random-weight denoiser, tau 50): the
    # effect does not show with the tiny test denoiser of the other tests.
    cfg = RefinerConfig().replace(
        engine={'backend': 'folded', 'body': 'joints', 'threads': 1},
        sampler={'tau': 50, 'ddim_step': 10, 'outer_iters': 10})
    torch.manual_seed(0)
    refiner = Refiner(cfg, body=body)
    frames = make_stream(body, cameras=CAMERAS, num_people=1, num_frames=8, seed=1,
                         image_hw=(480, 640), focal_px=600.0, keypoint_noise_px=2.0,
                         pose_motion_rad=0.3, motion_hz=0.5)
    assert OnlineConfig().rho_temporal_multiview == 3.0
    pipes = {'per-frame': FusionPipeline(refiner, CAMERAS, temporal='per_frame'),
             'online': FusionPipeline(refiner, CAMERAS, temporal='online'),
             'online rho 30': FusionPipeline(refiner, CAMERAS, temporal='online')}
    paper = pipes['online rho 30']
    paper.online = OnlineTemporalRefiner(paper.refiner, OnlineConfig(rho_temporal_multiview=30.0))
    err = {}
    for name, pipe in pipes.items():
        pred = []
        for frame in frames:
            bodies = pipe.process(views_of(frame), calibration_of(frame)).bodies
            assert len(bodies) == 1
            pred.append(bodies[0].joints)
        pred = np.stack(pred)
        gt = np.stack([f.views[0].gt_joints[0] for f in frames])      # camera 0 = world
        aligned = 1000 * np.linalg.norm((pred - pred[:, :1]) - (gt - gt[:, :1]), axis=-1)
        err[name] = (float(aligned.mean()),
                     float(1000 * np.linalg.norm(pred[:, 0] - gt[:, 0], axis=-1).mean()))
    # Measured (MPJPE, root error mm): per-frame 20.7, 15.3; online 18.6, 13.6;
    # online rho 30 27.3, 23.2.
    assert err['online'][0] < err['per-frame'][0] and err['online'][1] < err['per-frame'][1], err
    assert err['online rho 30'][0] > 1.15 * err['per-frame'][0], err
    assert err['online rho 30'][1] > 1.15 * err['per-frame'][1], err


def coco17_detection(view, person):
    """The person's detection in a COCO-17 view (same people as the BODY_25 stream)."""
    return Det(track_id=int(view.track_ids[person]), keypoints=view.keypoints[person].copy(),
               layout='coco17',
               init_rotmats=axis_angle_to_matrix(
                   torch.from_numpy(view.init_pose_aa[person]).reshape(24, 3)).numpy(),
               init_betas=view.init_betas[person], init_cam_t=view.init_cam_t[person])


def test_detections_in_the_minority_layout_are_dropped_and_counted(body, stream):
    # The same scene seen by a detector with COCO-17 keypoints (another upstream node
    # on one camera, say): one refine call takes one layout, the set's most common.
    coco = make_stream(body, cameras=CAMERAS, num_people=2, num_frames=1, seed=3,
                       image_hw=(480, 640), focal_px=600.0, keypoint_noise_px=1.0,
                       keypoint_layout='coco17')[0]
    frame = stream[0]
    # Same people (to float rounding: the two streams are generated at different times
    # of the session, and torch's CPU kernels may pick another reduction order).
    np.testing.assert_allclose(coco.views[2].gt_joints, frame.views[2].gt_joints, atol=1e-6)
    pipe = FusionPipeline(make_refiner(body), CAMERAS)
    views = views_of(frame)
    views[2].people[0] = coco17_detection(coco.views[2], 0)
    result = pipe.process(views, calibration_of(frame))
    assert pipe.counters['layout_mismatch'] == 1
    cameras = {b.track_id: b.cameras for b in result.bodies}
    assert sorted(cameras.values()) == [('cam0', 'cam1'), CAMERAS], cameras
    assert np.mean(mpjpe_world_mm(result.bodies, frame)) < 100
    # A whole camera in the other layout: it contributes nothing, both people still fused
    # from the other two.
    views = views_of(stream[1])
    views[1].people = [coco17_detection(coco.views[1], p) for p in range(2)]
    result = pipe.process(views, calibration_of(stream[1]))
    assert pipe.counters['layout_mismatch'] == 3
    assert [b.cameras for b in result.bodies] == [('cam0', 'cam2')] * 2
    assert pipe.counters['fused_bodies'] == 4


def test_persons_without_a_box_or_centre_are_untrackable(body, stream):
    # Association uses keypoints from confidence 0.3, the tracker here only from 0.9:
    # persons of confidence-0.5 keypoints are associated but have no box and no 3D
    # centre to track. They are counted and not published (no id to publish them under).
    pipe = FusionPipeline(make_refiner(body), CAMERAS, tracker=TrackerConfig(min_conf=0.9))
    views = views_of(stream[0])
    for view in views:
        for det in view.people:
            det.keypoints[:, 2] = 0.5
    result = pipe.process(views, calibration_of(stream[0]))
    assert result.bodies == [] and result.uncalibrated == []
    assert pipe.counters['untrackable_persons'] == 2
    assert pipe.counters['persons_multi_view'] == 2 and pipe.counters['fused_sets'] == 1
    assert pipe.counters['tracks_created'] == 0 and pipe.track_report() == []
    # Confident keypoints in the next set: tracked and fused as usual.
    views = views_of(stream[1])
    for view in views:
        for det in view.people:
            det.keypoints[:, 2] = 0.95
    result = pipe.process(views, calibration_of(stream[1]))
    assert sorted(b.track_id for b in result.bodies) == [1, 2]
    assert pipe.counters['untrackable_persons'] == 2


def test_malformed_tf_edges_are_counted_and_never_stored(stream):
    views = stream[0].views
    poses = {v.camera: camera_pose(v.world_to_camera) for v in views}
    frames = {v.camera: v.frame_id for v in views}
    source = ExtrinsicsSource(WORLD_FRAME, use_tf=True, max_age_s=0.5)
    good = [(WORLD_FRAME, v.frame_id, *poses[v.camera], 10.0) for v in views]
    assert source.add_transforms(good, static=False) == 0
    trans, quat = poses['cam1']
    nan3, inf = np.array([np.nan, 0.0, 0.0]), np.inf
    bad = [
        (WORLD_FRAME, 'cam1_optical', nan3, quat, 10.1),                  # NaN translation
        (WORLD_FRAME, 'cam1_optical', trans, (0.0, 0.0, inf, 1.0), 10.1),  # inf rotation
        (WORLD_FRAME, 'cam1_optical', trans, (0.0, 0.0, 0.0, 0.0), 10.1),  # zero quaternion
        (WORLD_FRAME, 'cam1_optical', trans, 1.01 * quat, 10.1),           # not unit norm
        (WORLD_FRAME, 'cam1_optical', trans[:2], quat, 10.1),              # 2 translations
        (WORLD_FRAME, 'cam1_optical', trans, quat[:3], 10.1),              # 3 rotations
        (WORLD_FRAME, 'cam1_optical', ('a', 'b', 'c'), quat, 10.1),        # not numbers
        (WORLD_FRAME, 'cam1_optical', trans, quat, np.nan),                # NaN stamp
        (WORLD_FRAME, 'cam1_optical', trans, quat, None),                  # no stamp
        ('', 'cam1_optical', trans, quat, 10.1),                           # no parent
        (WORLD_FRAME, '', trans, quat, 10.1),                              # no child
        ('cam1_optical', 'cam1_optical', trans, quat, 10.1),               # a loop
    ]
    assert source.add_transforms(bad, static=False) == len(bad)
    assert source.num_edges == 3
    # None replaced the good edges: every camera still exact, and still stamped 10.0 (a
    # NaN stamp stored would never go stale).
    fresh = source.calibration(frames, now_s=10.4)
    assert sorted(fresh.cameras) == list(CAMERAS)
    for view in views:
        np.testing.assert_allclose(fresh.cameras[view.camera].world_to_camera,
                                   view.world_to_camera, atol=1e-9)
    assert sorted(source.calibration(frames, now_s=10.6).missing) == list(CAMERAS)
    # Within the unit-norm tolerance is not malformed: the rotation is normalised.
    assert source.add_transforms([(WORLD_FRAME, 'cam1_optical', trans, (1 + 5e-4) * quat,
                                   10.5)], static=True) == 0
    np.testing.assert_allclose(source.calibration(frames, 10.6).cameras['cam1']
                               .world_to_camera, views[1].world_to_camera, atol=1e-9)


def test_stale_tf_chain_goes_per_camera_until_a_fresh_transform(body, stream, caplog):
    # cam0 from the calibration file; cam1 and cam2 hang (static) under a rig frame whose
    # pose comes on /tf: their chains are as old as the rig's transform.
    views = stream[0].views
    frames = {v.camera: v.frame_id for v in views}
    yaml_cal = CalibrationSet(WORLD_FRAME, {'cam0': CameraCalibration(
        'cam0', 'cam0_optical', views[0].world_to_camera)})
    world_from_rig = make_transform(quaternion_xyzw_to_matrix(
        (0.0, 0.0, np.sin(0.3), np.cos(0.3))), (0.5, -0.2, 1.0))
    rig_pose = (world_from_rig[:3, 3], matrix_to_quaternion_xyzw(world_from_rig[:3, :3]))
    rig_edges = []
    for view in views[1:]:
        rig_from_camera = invert_transform(world_from_rig) @ invert_transform(
            view.world_to_camera)
        rig_edges.append(('rig', view.frame_id, rig_from_camera[:3, 3],
                          matrix_to_quaternion_xyzw(rig_from_camera[:3, :3]), 0.0))
    source = ExtrinsicsSource(WORLD_FRAME, yaml_cal, use_tf=True, max_age_s=0.5)
    assert source.add_transforms(rig_edges, static=True) == 0
    assert source.add_transforms([(WORLD_FRAME, 'rig', *rig_pose, 10.0)], static=False) == 0
    pipe = FusionPipeline(make_refiner(body), CAMERAS)
    fresh = source.calibration(frames, now_s=10.4)
    for view in views:
        np.testing.assert_allclose(fresh.cameras[view.camera].world_to_camera,
                                   view.world_to_camera, atol=1e-9)
    result = pipe.process(views_of(stream[0]), fresh)
    assert [b.cameras for b in result.bodies] == [CAMERAS] * 2
    errs = mpjpe_world_mm(result.bodies, stream[0])
    # The rig's transform is 0.6 s, then 0.7 s old: cam1 and cam2 go to the per-camera
    # path (counted), cam0 alone is fused, and the warning is given once per camera.
    with caplog.at_level(logging.WARNING):
        for frame, now_s in zip(stream[1:3], (10.6, 10.7)):
            stale = source.calibration(frames, now_s=now_s)
            assert sorted(stale.missing) == ['cam1', 'cam2']
            assert 'stale' in stale.missing['cam1'], stale.missing
            result = pipe.process(views_of(frame), stale)
            assert result.uncalibrated == ['cam1', 'cam2']
            assert [b.cameras for b in result.bodies] == [('cam0',)] * 2
    assert pipe.counters['views_uncalibrated'] == 4
    warnings = [r.getMessage() for r in caplog.records if 'no usable extrinsics' in r.getMessage()]
    assert len(warnings) == 2 and all('stale' in w for w in warnings), warnings
    # A fresh rig transform: all three cameras fused again, same tracks.
    source.add_transforms([(WORLD_FRAME, 'rig', *rig_pose, 10.75)], static=False)
    result = pipe.process(views_of(stream[3]), source.calibration(frames, now_s=10.8))
    assert [b.cameras for b in result.bodies] == [CAMERAS] * 2
    assert sorted(b.track_id for b in result.bodies) == [1, 2]
    errs += mpjpe_world_mm(result.bodies, stream[3])
    assert np.mean(errs) < 100, errs
